//! Runs: one row per logged execution of a prompt version.
//!
//! Cost is stored as whole nano-dollars in a BIGINT so that sums over
//! millions of rows are exact on both backends. Deleting a prompt deletes its
//! runs (through `prompt_id`); versions are never deleted on their own, so
//! `version_id` needs no foreign key of its own (and no index to serve one).
//!
//! Indexes serve the queries the API makes: the global newest-first listing,
//! a prompt's runs by time (also the stats range scan), by version and time,
//! and a prompt's runs by latency and by cost. See docs/runs.md.

use sea_orm_migration::prelude::*;

use crate::m20261126_000001_create_prompts::Prompts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum PromptRuns {
    Table,
    Id,
    PromptId,
    VersionId,
    Version,
    Input,
    Output,
    Status,
    Error,
    Model,
    LatencyMs,
    PromptTokens,
    CompletionTokens,
    CostNanos,
    Metadata,
    Tags,
    StartedAt,
    CreatedAt,
}

fn index(name: &str, cols: &[PromptRuns]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(PromptRuns::Table);
    for col in cols {
        idx.col(*col);
    }
    idx.clone()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PromptRuns as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(R::PromptId).uuid().not_null())
                    .col(ColumnDef::new(R::VersionId).uuid().not_null())
                    .col(ColumnDef::new(R::Version).integer().not_null())
                    .col(ColumnDef::new(R::Input).json_binary().not_null())
                    .col(ColumnDef::new(R::Output).json_binary().null())
                    .col(ColumnDef::new(R::Status).string_len(16).not_null())
                    .col(ColumnDef::new(R::Error).text().null())
                    .col(ColumnDef::new(R::Model).string_len(200).null())
                    .col(ColumnDef::new(R::LatencyMs).integer().not_null())
                    .col(ColumnDef::new(R::PromptTokens).integer().null())
                    .col(ColumnDef::new(R::CompletionTokens).integer().null())
                    .col(ColumnDef::new(R::CostNanos).big_integer().not_null().default(0))
                    .col(ColumnDef::new(R::Metadata).json_binary().not_null())
                    .col(ColumnDef::new(R::Tags).json_binary().not_null())
                    .col(ColumnDef::new(R::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(R::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_prompt_runs_prompt")
                            .from(R::Table, R::PromptId)
                            .to(Prompts::Table, Prompts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for idx in [
            index("ix_prompt_runs_created", &[R::CreatedAt, R::Id]),
            index(
                "ix_prompt_runs_prompt_created",
                &[R::PromptId, R::CreatedAt, R::Id],
            ),
            index(
                "ix_prompt_runs_prompt_version_created",
                &[R::PromptId, R::Version, R::CreatedAt, R::Id],
            ),
            index(
                "ix_prompt_runs_prompt_latency",
                &[R::PromptId, R::LatencyMs, R::Id],
            ),
            index("ix_prompt_runs_prompt_cost", &[R::PromptId, R::CostNanos, R::Id]),
        ] {
            manager.create_index(idx).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PromptRuns::Table).to_owned())
            .await
    }
}
