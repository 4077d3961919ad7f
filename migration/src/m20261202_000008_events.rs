//! The change-event outbox: one row per change to a prompt, its versions or
//! labels, written in the change's transaction, numbered by the database.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Events {
    Table,
    Seq,
    Id,
    Kind,
    Prompt,
    Data,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite numbers only an INTEGER PRIMARY KEY itself.
        let mut seq = ColumnDef::new(Events::Seq);
        match manager.get_database_backend() {
            DbBackend::Sqlite => seq.integer(),
            _ => seq.big_integer(),
        };
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(seq.not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Events::Id).uuid().not_null().unique_key())
                    .col(ColumnDef::new(Events::Kind).string_len(40).not_null())
                    .col(ColumnDef::new(Events::Prompt).string_len(128).not_null())
                    .col(ColumnDef::new(Events::Data).json_binary().not_null())
                    .col(
                        ColumnDef::new(Events::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
