//! Prompts and their versions.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Prompts {
    Table,
    Id,
    Name,
    Description,
    Tags,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PromptVersions {
    Table,
    Id,
    PromptId,
    Version,
    Kind,
    Template,
    Variables,
    Config,
    IsActive,
    CommitMessage,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Prompts::Table)
                    .col(ColumnDef::new(Prompts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Prompts::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Prompts::Description).text().null())
                    .col(ColumnDef::new(Prompts::Tags).json_binary().not_null())
                    .col(
                        ColumnDef::new(Prompts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Prompts::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_prompts_name")
                    .table(Prompts::Table)
                    .col(Prompts::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Serves the listing order and its keyset cursor.
        manager
            .create_index(
                Index::create()
                    .name("ix_prompts_created_at_id")
                    .table(Prompts::Table)
                    .col(Prompts::CreatedAt)
                    .col(Prompts::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PromptVersions::Table)
                    .col(ColumnDef::new(PromptVersions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(PromptVersions::PromptId).uuid().not_null())
                    .col(ColumnDef::new(PromptVersions::Version).integer().not_null())
                    .col(ColumnDef::new(PromptVersions::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(PromptVersions::Template).json_binary().not_null())
                    .col(ColumnDef::new(PromptVersions::Variables).json_binary().not_null())
                    .col(ColumnDef::new(PromptVersions::Config).json_binary().not_null())
                    .col(
                        ColumnDef::new(PromptVersions::IsActive)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(PromptVersions::CommitMessage).text().null())
                    .col(
                        ColumnDef::new(PromptVersions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_prompt_versions_prompt")
                            .from(PromptVersions::Table, PromptVersions::PromptId)
                            .to(Prompts::Table, Prompts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One number per prompt; also serves "latest" (highest number) and
        // the newest-first listing.
        manager
            .create_index(
                Index::create()
                    .name("ux_prompt_versions_prompt_version")
                    .table(PromptVersions::Table)
                    .col(PromptVersions::PromptId)
                    .col(PromptVersions::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Two active versions of one prompt are impossible in the database
        // itself, whatever the application does; also serves "active".
        manager
            .create_index(
                Index::create()
                    .name("ux_prompt_versions_active")
                    .table(PromptVersions::Table)
                    .col(PromptVersions::PromptId)
                    .unique()
                    .and_where(Expr::col(PromptVersions::IsActive).eq(true))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PromptVersions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Prompts::Table).to_owned())
            .await
    }
}
