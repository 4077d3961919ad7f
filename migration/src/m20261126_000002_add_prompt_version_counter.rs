//! A per-prompt version counter.
//!
//! Numbering a new version as `max(version) + 1` races under concurrency: two
//! writers read the same maximum. Incrementing a counter on the prompt row
//! instead makes the first statement of the transaction a write that locks
//! that row (PostgreSQL) or takes the database's write lock (SQLite), so
//! concurrent creates on one prompt queue up and each gets the next number.

use sea_orm_migration::prelude::*;

use crate::m20261126_000001_create_prompts::Prompts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PromptsCounter {
    LatestVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Prompts::Table)
                    .add_column(
                        ColumnDef::new(PromptsCounter::LatestVersion)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        // Existing prompts keep numbering from where their versions are.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE prompts SET latest_version = COALESCE(\
                 (SELECT MAX(v.version) FROM prompt_versions v WHERE v.prompt_id = prompts.id), 0)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Prompts::Table)
                    .drop_column(PromptsCounter::LatestVersion)
                    .to_owned(),
            )
            .await
    }
}
