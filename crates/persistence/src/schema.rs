//! The stored shape the repositories rely on: every table and column as a
//! typed identifier, and the one way a row read back becomes a domain value.
//!
//! The enums name exactly what the migrations in `migration/` create (one
//! enum per table, `Table` for the table itself), so a misspelt or dropped
//! column is a compile error here rather than a failed query in production.
//! Queries reach a joined table through its alias with [`p`], [`v`], [`pl`]
//! and [`r`], each of which only accepts its own table's columns.
//!
//! This module owns no SQL of its own, and must not know the domain's rules:
//! a row type says how it becomes a domain value through [`StoredRow`].

use sea_orm::{DbErr, DeriveIden, FromQueryResult, Iden, QueryResult, TryGetable};

/// `prompts`, with the `latest_version` counter added by migration 2.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum Prompts {
    Table,
    Id,
    Name,
    Description,
    Tags,
    LatestVersion,
    CreatedAt,
    UpdatedAt,
}

/// `prompt_versions`.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum PromptVersions {
    Table,
    Id,
    PromptId,
    Version,
    Kind,
    Template,
    Variables,
    Config,
    CommitMessage,
    CreatedAt,
    /// Since migration 7: the versions it includes (JSON), and what it was
    /// authored as when it has includes.
    Includes,
    Source,
}

/// `version_includes`, since migration 7: one row per including version and
/// included version.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum VersionIncludes {
    Table,
    PromptId,
    Version,
    IncludedPromptId,
    IncludedVersion,
    ViaLabel,
}

/// `prompt_labels`, since migration 6: a label per row; `version` or
/// `split` set while it points somewhere.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum PromptLabels {
    Table,
    PromptId,
    Name,
    Version,
    Split,
    Protected,
    Revision,
    UpdatedAt,
}

/// `label_history`, append-only.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum LabelHistory {
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
    /// Since migration 7: breaking changes the move overrode.
    Overrides,
}

/// `events`, since migration 8: the change-event outbox.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum Events {
    Table,
    Seq,
    Id,
    Kind,
    Prompt,
    Data,
    CreatedAt,
}

/// `webhooks`, since migration 9; `event_types` is comma-separated, empty for all.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum Webhooks {
    Table,
    Id,
    Url,
    Description,
    EventTypes,
    PromptPrefix,
    Enabled,
    Secret,
    FailingSince,
    DisabledAt,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

/// `webhook_deliveries`: one event for one endpoint.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    EventSeq,
    EventType,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    CreatedAt,
    DeliveredAt,
}

/// `webhook_attempts`: every try at a delivery.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    AttemptedAt,
    StatusCode,
    LatencyMs,
    Error,
}

/// `audit_events`, append-only.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum AuditEvents {
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

/// `prompt_runs`, with `latency_us` in place of `latency_ms` since migration 5.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum PromptRuns {
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
    LatencyUs,
    PromptTokens,
    CompletionTokens,
    CostNanos,
    Metadata,
    Tags,
    StartedAt,
    CreatedAt,
    /// Since migration 6.
    Label,
    /// Since migration 10.
    TraceId,
    SpanId,
}

/// `api_keys`.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum ApiKeys {
    Table,
    Id,
    Name,
    Prefix,
    KeyHash,
    Scopes,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

/// `console_sessions` (since migration 12).
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum ConsoleSessions {
    Table,
    Id,
    TokenHash,
    KeyId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

/// The names tables go by in joins.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum TableAlias {
    /// `prompts`.
    P,
    /// `prompt_versions`.
    V,
    /// The `production` row of `prompt_labels`, joined to a prompt or a version.
    Pl,
    /// The row of `prompt_labels` being resolved, joined to its version.
    L,
    /// `prompt_runs`.
    R,
}

/// Names given to computed columns, which the row types read back.
#[derive(Debug, Clone, Copy, DeriveIden)]
pub(crate) enum ColumnAlias {
    /// `p.name`, selected with a version or a run.
    PromptName,
    /// `pl.version`, selected with a prompt.
    ActiveVersion,
    /// Whether `production` points at the version alone, selected with a version.
    IsActive,
    Count,
}

/// `p.<col>`.
pub(crate) fn p(col: Prompts) -> (TableAlias, Prompts) {
    (TableAlias::P, col)
}

/// `v.<col>`.
pub(crate) fn v(col: PromptVersions) -> (TableAlias, PromptVersions) {
    (TableAlias::V, col)
}

/// `pl.<col>`.
pub(crate) fn pl(col: PromptLabels) -> (TableAlias, PromptLabels) {
    (TableAlias::Pl, col)
}

/// `r.<col>`.
pub(crate) fn r(col: PromptRuns) -> (TableAlias, PromptRuns) {
    (TableAlias::R, col)
}

/// One value of a row, by the identifier it was selected or returned as.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, col: impl Iden + Copy) -> Result<T, DbErr> {
    row.try_get("", col.unquoted())
}

/// A row as a query returns it, and the domain value it stands for.
pub(crate) trait StoredRow: FromQueryResult {
    type Domain;

    /// # Errors
    /// A stored value the domain refuses: the row was written by something
    /// other than this crate, or a rule changed under it. Retrying will not
    /// mend it.
    fn into_domain(self) -> anyhow::Result<Self::Domain>;
}

/// Decodes one row. A row the driver cannot read becomes the repository's
/// error through its `db_error`; a value the domain refuses becomes its
/// `Unknown`.
pub(crate) fn decode_one<R, E>(row: &QueryResult, db_error: fn(DbErr) -> E) -> Result<R::Domain, E>
where
    R: StoredRow,
    E: From<anyhow::Error>,
{
    R::from_query_result(row, "")
        .map_err(db_error)?
        .into_domain()
        .map_err(E::from)
}

/// As [`decode_one`], for every row, in order; the first failure wins.
pub(crate) fn decode<R, E>(rows: &[QueryResult], db_error: fn(DbErr) -> E) -> Result<Vec<R::Domain>, E>
where
    R: StoredRow,
    E: From<anyhow::Error>,
{
    rows.iter().map(|row| decode_one::<R, E>(row, db_error)).collect()
}
