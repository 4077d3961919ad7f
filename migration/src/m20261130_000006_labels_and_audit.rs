//! Labels with history, and the audit log.
//!
//! The one "active" flag per prompt becomes the label `production` in
//! `prompt_labels` (one row per prompt and label, so the database still
//! holds one target per label), every label change is appended to
//! `label_history`, every change through the API to `audit_events`, and a
//! run may record the label it was served under. Both logs are
//! append-only: a trigger refuses UPDATE and DELETE on them, on PostgreSQL
//! and SQLite alike. They refer to prompts by id without a foreign key, so
//! deleting a prompt leaves its history in place.
//!
//! `down` turns `production` back into the active flag (a split becomes its
//! heaviest arm, the only single version it can be) and drops the rest.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Prompts {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum PromptVersions {
    Table,
    PromptId,
    Version,
    IsActive,
}

#[derive(DeriveIden, Clone, Copy)]
enum PromptLabels {
    Table,
    PromptId,
    Name,
    Version,
    Split,
    Protected,
    Revision,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum LabelHistory {
    Table,
    Id,
    PromptId,
    Label,
    FromVersion,
    FromSplit,
    ToVersion,
    ToSplit,
    ActorId,
    ActorName,
    Reason,
    RequestId,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEvents {
    Table,
    Id,
    CreatedAt,
    ActorId,
    ActorName,
    Action,
    Target,
    Before,
    After,
    RequestId,
}

#[derive(DeriveIden, Clone, Copy)]
enum PromptRuns {
    Table,
    PromptId,
    Label,
    CreatedAt,
    Id,
}

const ACTIVE_INDEX: &str = "ux_prompt_versions_active";
const RUN_LABEL_INDEX: &str = "ix_prompt_runs_prompt_label";
const APPEND_ONLY: [&str; 2] = ["label_history", "audit_events"];

async fn create_labels(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(PromptLabels::Table)
                .col(ColumnDef::new(PromptLabels::PromptId).uuid().not_null())
                .col(ColumnDef::new(PromptLabels::Name).string_len(63).not_null())
                // One of `version` and `split` is set while the label points
                // somewhere; neither once it is removed (the row stays so a
                // protected label stays protected).
                .col(ColumnDef::new(PromptLabels::Version).integer().null())
                .col(ColumnDef::new(PromptLabels::Split).json_binary().null())
                .col(
                    ColumnDef::new(PromptLabels::Protected)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(
                    ColumnDef::new(PromptLabels::Revision)
                        .integer()
                        .not_null()
                        .default(1),
                )
                .col(
                    ColumnDef::new(PromptLabels::UpdatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(PromptLabels::PromptId)
                        .col(PromptLabels::Name),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_prompt_labels_prompt")
                        .from(PromptLabels::Table, PromptLabels::PromptId)
                        .to(Prompts::Table, Prompts::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                // A label can only point at a version of its own prompt.
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_prompt_labels_version")
                        .from(
                            PromptLabels::Table,
                            (PromptLabels::PromptId, PromptLabels::Version),
                        )
                        .to(
                            PromptVersions::Table,
                            (PromptVersions::PromptId, PromptVersions::Version),
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_table(
            Table::create()
                .table(LabelHistory::Table)
                .col(ColumnDef::new(LabelHistory::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(LabelHistory::PromptId).uuid().not_null())
                .col(ColumnDef::new(LabelHistory::Label).string_len(63).not_null())
                .col(ColumnDef::new(LabelHistory::FromVersion).integer().null())
                .col(ColumnDef::new(LabelHistory::FromSplit).json_binary().null())
                .col(ColumnDef::new(LabelHistory::ToVersion).integer().null())
                .col(ColumnDef::new(LabelHistory::ToSplit).json_binary().null())
                .col(ColumnDef::new(LabelHistory::ActorId).uuid().null())
                .col(ColumnDef::new(LabelHistory::ActorName).string_len(100).not_null())
                .col(ColumnDef::new(LabelHistory::Reason).text().null())
                .col(ColumnDef::new(LabelHistory::RequestId).string_len(100).null())
                .col(
                    ColumnDef::new(LabelHistory::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("ix_label_history_label")
                .table(LabelHistory::Table)
                .col(LabelHistory::PromptId)
                .col(LabelHistory::Label)
                .col(LabelHistory::CreatedAt)
                .col(LabelHistory::Id)
                .to_owned(),
        )
        .await
}

async fn create_audit(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(AuditEvents::Table)
                .col(ColumnDef::new(AuditEvents::Id).uuid().not_null().primary_key())
                .col(
                    ColumnDef::new(AuditEvents::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(AuditEvents::ActorId).uuid().null())
                .col(ColumnDef::new(AuditEvents::ActorName).string_len(100).not_null())
                .col(ColumnDef::new(AuditEvents::Action).string_len(40).not_null())
                .col(ColumnDef::new(AuditEvents::Target).string_len(300).not_null())
                .col(ColumnDef::new(AuditEvents::Before).json_binary().null())
                .col(ColumnDef::new(AuditEvents::After).json_binary().null())
                .col(ColumnDef::new(AuditEvents::RequestId).string_len(100).null())
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("ix_audit_events_created_at_id")
                .table(AuditEvents::Table)
                .col(AuditEvents::CreatedAt)
                .col(AuditEvents::Id)
                .to_owned(),
        )
        .await
}

/// Triggers that refuse to change or remove a row of the append-only logs.
async fn make_append_only(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Postgres => {
            conn.execute_unprepared(
                "CREATE FUNCTION refuse_append_only_change() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql",
            )
            .await?;
            for table in APPEND_ONLY {
                conn.execute_unprepared(&format!(
                    "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION refuse_append_only_change()"
                ))
                .await?;
            }
        }
        _ => {
            for table in APPEND_ONLY {
                for op in ["update", "delete"] {
                    conn.execute_unprepared(&format!(
                        "CREATE TRIGGER {table}_no_{op} BEFORE {op} ON {table} \
                         BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    ))
                    .await?;
                }
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_labels(manager).await?;
        create_audit(manager).await?;
        let conn = manager.get_connection();
        let now = match manager.get_database_backend() {
            DbBackend::Postgres => "CURRENT_TIMESTAMP",
            // SeaORM reads SQLite timestamps as RFC 3339 text.
            _ => "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')",
        };
        conn.execute_unprepared(&format!(
            "INSERT INTO prompt_labels (prompt_id, name, version, protected, revision, updated_at) \
             SELECT prompt_id, 'production', version, FALSE, 1, {now} FROM prompt_versions WHERE is_active"
        ))
        .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(ACTIVE_INDEX)
                    .table(PromptVersions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(PromptVersions::Table)
                    .drop_column(PromptVersions::IsActive)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(PromptRuns::Table)
                    .add_column(ColumnDef::new(PromptRuns::Label).string_len(63).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(RUN_LABEL_INDEX)
                    .table(PromptRuns::Table)
                    .col(PromptRuns::PromptId)
                    .col(PromptRuns::Label)
                    .col(PromptRuns::CreatedAt)
                    .col(PromptRuns::Id)
                    .to_owned(),
            )
            .await?;
        make_append_only(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(RUN_LABEL_INDEX)
                    .table(PromptRuns::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(PromptRuns::Table)
                    .drop_column(PromptRuns::Label)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(PromptVersions::Table)
                    .add_column(
                        ColumnDef::new(PromptVersions::IsActive)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "UPDATE prompt_versions SET is_active = TRUE WHERE EXISTS (SELECT 1 FROM prompt_labels l \
             WHERE l.prompt_id = prompt_versions.prompt_id AND l.name = 'production' \
             AND l.version = prompt_versions.version)",
        )
        .await?;
        // A split production label: its heaviest arm (the lower version on a tie).
        let heaviest = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "SELECT (a->>'version')::int FROM jsonb_array_elements(l.split) a \
                 ORDER BY (a->>'weight')::int DESC, (a->>'version')::int LIMIT 1"
            }
            _ => {
                "SELECT json_extract(a.value, '$.version') FROM json_each(l.split) a \
                 ORDER BY json_extract(a.value, '$.weight') DESC, json_extract(a.value, '$.version') LIMIT 1"
            }
        };
        conn.execute_unprepared(&format!(
            "UPDATE prompt_versions SET is_active = TRUE WHERE EXISTS (SELECT 1 FROM prompt_labels l \
             WHERE l.prompt_id = prompt_versions.prompt_id AND l.name = 'production' \
             AND l.split IS NOT NULL AND prompt_versions.version = ({heaviest}))"
        ))
        .await?;
        manager
            .create_index(
                Index::create()
                    .name(ACTIVE_INDEX)
                    .table(PromptVersions::Table)
                    .col(PromptVersions::PromptId)
                    .unique()
                    .and_where(Expr::col(PromptVersions::IsActive).eq(true))
                    .to_owned(),
            )
            .await?;
        for table in [
            AuditEvents::Table.to_string(),
            LabelHistory::Table.to_string(),
            PromptLabels::Table.to_string(),
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        if manager.get_database_backend() == DbBackend::Postgres {
            conn.execute_unprepared("DROP FUNCTION refuse_append_only_change()")
                .await?;
        }
        Ok(())
    }
}
