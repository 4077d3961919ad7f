//! The figures of closed stats buckets, kept so that charts over many runs
//! need not read every run on every request.
//!
//! `run_stats_sealed` names each bucket whose figures are kept (a bucket
//! with no runs too); `run_stats_rollups` holds its rows, exactly as the
//! stats query computes them. `run_stats_epoch` is one counter that
//! every change to the runs of a closed bucket (a run logged late, expired
//! runs deleted) raises, so that figures computed before such a change are
//! never kept after it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum RunStatsEpoch {
    Table,
    Id,
    Epoch,
}

#[derive(DeriveIden, Clone, Copy)]
enum RunStatsSealed {
    Table,
    PromptId,
    Kind,
    ByLabel,
    BucketStart,
}

#[derive(DeriveIden, Clone, Copy)]
enum RunStatsRollups {
    Table,
    PromptId,
    Kind,
    ByLabel,
    BucketStart,
    Version,
    Label,
    Count,
    ErrorCount,
    P50,
    P95,
    P99,
    LatencyMax,
    PromptTokens,
    CompletionTokens,
    CostTotal,
}

#[derive(DeriveIden, Clone, Copy)]
enum Prompts {
    Table,
    Id,
}

fn to_prompts<T: IntoIden + Copy + 'static>(table: T, col: T) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, col)
        .to(Prompts::Table, Prompts::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunStatsEpoch::Table)
                    .col(
                        ColumnDef::new(RunStatsEpoch::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RunStatsEpoch::Epoch).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RunStatsEpoch::Table)
                    .columns([RunStatsEpoch::Id, RunStatsEpoch::Epoch])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RunStatsSealed::Table)
                    .col(ColumnDef::new(RunStatsSealed::PromptId).uuid().not_null())
                    .col(ColumnDef::new(RunStatsSealed::Kind).string_len(8).not_null())
                    .col(ColumnDef::new(RunStatsSealed::ByLabel).boolean().not_null())
                    .col(
                        ColumnDef::new(RunStatsSealed::BucketStart)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RunStatsSealed::PromptId)
                            .col(RunStatsSealed::Kind)
                            .col(RunStatsSealed::ByLabel)
                            .col(RunStatsSealed::BucketStart),
                    )
                    .foreign_key(&mut to_prompts(RunStatsSealed::Table, RunStatsSealed::PromptId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RunStatsRollups::Table)
                    .col(ColumnDef::new(RunStatsRollups::PromptId).uuid().not_null())
                    .col(ColumnDef::new(RunStatsRollups::Kind).string_len(8).not_null())
                    .col(ColumnDef::new(RunStatsRollups::ByLabel).boolean().not_null())
                    .col(
                        ColumnDef::new(RunStatsRollups::BucketStart)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RunStatsRollups::Version).integer().not_null())
                    .col(ColumnDef::new(RunStatsRollups::Label).string_len(64))
                    .col(ColumnDef::new(RunStatsRollups::Count).big_integer().not_null())
                    .col(
                        ColumnDef::new(RunStatsRollups::ErrorCount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RunStatsRollups::P50).double().not_null())
                    .col(ColumnDef::new(RunStatsRollups::P95).double().not_null())
                    .col(ColumnDef::new(RunStatsRollups::P99).double().not_null())
                    .col(ColumnDef::new(RunStatsRollups::LatencyMax).double().not_null())
                    .col(
                        ColumnDef::new(RunStatsRollups::PromptTokens)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RunStatsRollups::CompletionTokens)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RunStatsRollups::CostTotal)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(&mut to_prompts(RunStatsRollups::Table, RunStatsRollups::PromptId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_run_stats_rollups_bucket")
                    .table(RunStatsRollups::Table)
                    .col(RunStatsRollups::PromptId)
                    .col(RunStatsRollups::Kind)
                    .col(RunStatsRollups::ByLabel)
                    .col(RunStatsRollups::BucketStart)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RunStatsRollups::Table.into_iden(),
            RunStatsSealed::Table.into_iden(),
            RunStatsEpoch::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
