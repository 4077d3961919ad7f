//! Latencies in microseconds.
//!
//! Clients time calls with floating-point clocks (`120.5` ms) and
//! OpenTelemetry durations are nanoseconds: whole milliseconds lost what they
//! sent. `latency_us` (BIGINT) replaces `latency_ms` (INTEGER), existing rows
//! converted exactly; the latency index moves with it. `down` converts back,
//! rounding to the nearest millisecond.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum PromptRuns {
    Table,
    Id,
    PromptId,
    LatencyMs,
    LatencyUs,
}

const INDEX: &str = "ix_prompt_runs_prompt_latency";

fn latency_index(column: PromptRuns) -> IndexCreateStatement {
    Index::create()
        .name(INDEX)
        .table(PromptRuns::Table)
        .col(PromptRuns::PromptId)
        .col(column)
        .col(PromptRuns::Id)
        .to_owned()
}

/// Replaces column `from` by the column `to` defines (`to_iden`), filled by `fill`.
async fn swap(
    manager: &SchemaManager<'_>,
    from: PromptRuns,
    to: ColumnDef,
    to_iden: PromptRuns,
    fill: &str,
) -> Result<(), DbErr> {
    manager
        .drop_index(Index::drop().name(INDEX).table(PromptRuns::Table).to_owned())
        .await?;
    manager
        .alter_table(Table::alter().table(PromptRuns::Table).add_column(to).to_owned())
        .await?;
    manager.get_connection().execute_unprepared(fill).await?;
    manager
        .alter_table(
            Table::alter()
                .table(PromptRuns::Table)
                .drop_column(from)
                .to_owned(),
        )
        .await?;
    manager.create_index(latency_index(to_iden)).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(
            manager,
            PromptRuns::LatencyMs,
            ColumnDef::new(PromptRuns::LatencyUs)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            PromptRuns::LatencyUs,
            "UPDATE prompt_runs SET latency_us = CAST(latency_ms AS BIGINT) * 1000",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(
            manager,
            PromptRuns::LatencyUs,
            ColumnDef::new(PromptRuns::LatencyMs)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            PromptRuns::LatencyMs,
            "UPDATE prompt_runs SET latency_ms = CAST((latency_us + 500) / 1000 AS INTEGER)",
        )
        .await
    }
}
