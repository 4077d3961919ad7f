//! Runs remember the trace and span they were part of (W3C ids in hex), so
//! a run ingested from OpenTelemetry links back to its trace.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum PromptRuns {
    Table,
    TraceId,
    SpanId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for (col, len) in [(PromptRuns::TraceId, 32), (PromptRuns::SpanId, 16)] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PromptRuns::Table)
                        .add_column(ColumnDef::new(col).string_len(len).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [PromptRuns::SpanId, PromptRuns::TraceId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PromptRuns::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
