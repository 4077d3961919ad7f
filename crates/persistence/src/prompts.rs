//! The prompt repository on SeaORM.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use registry_domain::audit::{self, Action, AuditEvent, Context};
use registry_domain::events::{ChangeEvent, EventKind};
use registry_domain::page::{Page, PageRequest, TimeCursor};
use registry_domain::prompt::diff;
use registry_domain::prompt::ports::{Dependent, LabelMove, LabelPolicy, PromptRepository};
use registry_domain::prompt::{
    Description, FieldError, Include, Label, LabelChange, LabelName, LabelTarget, NewPrompt, NewVersion,
    Prompt, PromptError, PromptFilter, PromptName, PromptPatch, PromptVersion, Resolution, Source, Tags,
    Template, TemplateKind, VariableSpec, Variables, VersionCursor, VersionNumber, VersionSelector,
};
use sea_orm::sea_query::{
    Alias, Cond, Expr, ExprTrait, JoinType, LikeExpr, LockType, OnConflict, Order, Query, SelectStatement,
    SimpleExpr,
};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, FromQueryResult, TransactionTrait};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{HISTORY_COLUMNS, HistoryRow, append, history_insert, target_columns, target_of};
use crate::db::{Db, is_unique_violation};
use crate::events;
use crate::schema::{
    ColumnAlias, LabelHistory, PromptLabels, PromptVersions, Prompts, StoredRow, TableAlias, VersionIncludes,
    decode, decode_one, get, p, pl, v,
};

/// Prompts and versions stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmPromptRepository {
    db: Db,
}

impl SeaOrmPromptRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A prompt as [`prompt_select`] reads it.
#[derive(Debug, FromQueryResult)]
struct PromptRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    tags: Value,
    latest_version: i32,
    active_version: Option<i32>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl StoredRow for PromptRow {
    type Domain = Prompt;

    fn into_domain(self) -> anyhow::Result<Prompt> {
        let tags: Vec<String> =
            serde_json::from_value(self.tags).context("stored tags are not a list of strings")?;
        Ok(Prompt {
            id: self.id,
            name: PromptName::new(&self.name)
                .with_context(|| format!("stored prompt name {:?}", self.name))?,
            description: self
                .description
                .as_deref()
                .map(Description::new)
                .transpose()
                .map_err(|e| anyhow!("{e}"))?,
            tags: Tags::new(tags).map_err(|e| anyhow!("stored tags: {e:?}"))?,
            active_version: self.active_version.map(number).transpose()?,
            latest_version: (self.latest_version > 0)
                .then(|| number(self.latest_version))
                .transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn number(n: i32) -> anyhow::Result<VersionNumber> {
    VersionNumber::new(i64::from(n)).with_context(|| format!("stored version number {n}"))
}

/// A version as [`version_select`] reads it.
#[derive(Debug, FromQueryResult)]
struct VersionRow {
    id: Uuid,
    prompt_id: Uuid,
    prompt_name: String,
    version: i32,
    kind: String,
    template: Value,
    variables: Value,
    config: Value,
    is_active: bool,
    commit_message: Option<String>,
    created_at: OffsetDateTime,
    includes: Option<Value>,
    source: Option<Value>,
}

/// The stored form of a version's includes: `[{"prompt", "version", "via_label"?}]`.
fn includes_json(includes: &[Include]) -> Option<Value> {
    (!includes.is_empty()).then(|| {
        Value::Array(
            includes
                .iter()
                .map(|i| {
                    let mut o = json!({"prompt": i.prompt.as_str(), "version": i.version.get()});
                    if let (Some(label), Value::Object(map)) = (i.via_label, &mut o) {
                        map.insert("via_label".into(), label.as_str().into());
                    }
                    o
                })
                .collect(),
        )
    })
}

fn includes_of(stored: Option<Value>) -> anyhow::Result<Vec<Include>> {
    let Some(Value::Array(items)) = stored else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|item| {
            let text = |k: &str| item.get(k).and_then(Value::as_str);
            Ok(Include {
                prompt: PromptName::new(text("prompt").unwrap_or_default())
                    .context("stored include prompt")?,
                version: number(
                    item.get("version")
                        .and_then(Value::as_i64)
                        .and_then(|n| i32::try_from(n).ok())
                        .unwrap_or_default(),
                )?,
                via_label: text("via_label")
                    .map(LabelName::new)
                    .transpose()
                    .context("stored include label")?,
            })
        })
        .collect()
}

/// The stored form of what a composed version was authored as.
fn source_json(source: Option<&Source>) -> Option<Value> {
    source.map(|s| {
        json!({
            "kind": s.template.kind().as_str(),
            "template": s.template.to_json(),
            "variables": s.variables.to_json(),
        })
    })
}

fn source_of(stored: Option<Value>) -> anyhow::Result<Option<Source>> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let kind = stored
        .get("kind")
        .and_then(Value::as_str)
        .and_then(TemplateKind::parse)
        .context("stored source kind")?;
    let specs: std::collections::BTreeMap<String, VariableSpec> =
        serde_json::from_value(stored.get("variables").cloned().unwrap_or_default())
            .context("stored source variables")?;
    Ok(Some(Source {
        template: Template::restore(kind, stored.get("template").unwrap_or(&Value::Null))
            .map_err(|e| anyhow!("stored source template: {e:?}"))?,
        variables: Variables::restore(specs),
    }))
}

/// A label as stored.
#[derive(Debug, FromQueryResult)]
struct LabelRow {
    name: String,
    version: Option<i32>,
    split: Option<Value>,
    protected: bool,
    revision: i32,
    updated_at: OffsetDateTime,
}

impl StoredRow for LabelRow {
    type Domain = Label;

    fn into_domain(self) -> anyhow::Result<Label> {
        Ok(Label {
            name: LabelName::new(&self.name).with_context(|| format!("stored label {:?}", self.name))?,
            target: target_of(self.version, self.split)?,
            protected: self.protected,
            revision: u32::try_from(self.revision).context("stored revision")?,
            updated_at: self.updated_at,
        })
    }
}

const LABEL_COLUMNS: [PromptLabels; 6] = [
    PromptLabels::Name,
    PromptLabels::Version,
    PromptLabels::Split,
    PromptLabels::Protected,
    PromptLabels::Revision,
    PromptLabels::UpdatedAt,
];

impl StoredRow for VersionRow {
    type Domain = PromptVersion;

    fn into_domain(self) -> anyhow::Result<PromptVersion> {
        let kind = TemplateKind::parse(&self.kind)
            .with_context(|| format!("stored template kind {:?}", self.kind))?;
        let specs: std::collections::BTreeMap<String, VariableSpec> =
            serde_json::from_value(self.variables).context("stored variables")?;
        let config = match self.config {
            Value::Object(map) => map,
            other => anyhow::bail!("stored config is not an object: {other}"),
        };
        Ok(PromptVersion {
            id: self.id,
            prompt_id: self.prompt_id,
            prompt_name: PromptName::new(&self.prompt_name).context("stored prompt name")?,
            version: number(self.version)?,
            template: Template::parse(Some(kind), &self.template)
                .map_err(|e| anyhow!("stored template: {e:?}"))?,
            variables: Variables::new(specs).map_err(|e| anyhow!("stored variables: {e:?}"))?,
            config,
            is_active: self.is_active,
            commit_message: self.commit_message,
            created_at: self.created_at,
            includes: includes_of(self.includes)?,
            source: source_of(self.source)?,
        })
    }
}

fn db_error(err: DbErr) -> PromptError {
    crate::db::classify(err, PromptError::Unavailable, PromptError::Unknown)
}

/// The stored columns of a prompt, as selected and inserted.
const PROMPT_COLUMNS: [Prompts; 7] = [
    Prompts::Id,
    Prompts::Name,
    Prompts::Description,
    Prompts::Tags,
    Prompts::LatestVersion,
    Prompts::CreatedAt,
    Prompts::UpdatedAt,
];

/// `SELECT p.*, pl.version AS active_version FROM prompts p LEFT JOIN prompt_labels pl …`
/// (the `production` label, when it points at one version).
fn prompt_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(PROMPT_COLUMNS.map(p))
        .expr_as(Expr::col(pl(PromptLabels::Version)), ColumnAlias::ActiveVersion)
        .from_as(Prompts::Table, TableAlias::P)
        .join_as(
            JoinType::LeftJoin,
            PromptLabels::Table,
            TableAlias::Pl,
            Cond::all()
                .add(Expr::col(pl(PromptLabels::PromptId)).equals(p(Prompts::Id)))
                .add(Expr::col(pl(PromptLabels::Name)).eq(LabelName::PRODUCTION.as_str())),
        );
    q
}

/// The stored columns of a version, as selected and inserted.
const VERSION_COLUMNS: [PromptVersions; 11] = [
    PromptVersions::Id,
    PromptVersions::PromptId,
    PromptVersions::Version,
    PromptVersions::Kind,
    PromptVersions::Template,
    PromptVersions::Variables,
    PromptVersions::Config,
    PromptVersions::CommitMessage,
    PromptVersions::CreatedAt,
    PromptVersions::Includes,
    PromptVersions::Source,
];

/// `SELECT v.*, p.name AS prompt_name, pl.version IS NOT NULL AS is_active
/// FROM prompt_versions v JOIN prompts p … LEFT JOIN prompt_labels pl …`
fn version_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(VERSION_COLUMNS.map(v))
        .expr_as(Expr::col(p(Prompts::Name)), ColumnAlias::PromptName)
        .expr_as(
            Expr::col(pl(PromptLabels::Version)).is_not_null(),
            ColumnAlias::IsActive,
        )
        .from_as(PromptVersions::Table, TableAlias::V)
        .join_as(
            JoinType::InnerJoin,
            Prompts::Table,
            TableAlias::P,
            Expr::col(p(Prompts::Id)).equals(v(PromptVersions::PromptId)),
        )
        .join_as(
            JoinType::LeftJoin,
            PromptLabels::Table,
            TableAlias::Pl,
            Cond::all()
                .add(Expr::col(pl(PromptLabels::PromptId)).equals(v(PromptVersions::PromptId)))
                .add(Expr::col(pl(PromptLabels::Name)).eq(LabelName::PRODUCTION.as_str()))
                .add(Expr::col(pl(PromptLabels::Version)).equals(v(PromptVersions::Version))),
        );
    q
}

/// `SELECT id FROM prompts WHERE name = ?`.
pub(crate) fn prompt_id_of(name: &PromptName) -> SelectStatement {
    Query::select()
        .column(Prompts::Id)
        .from(Prompts::Table)
        .and_where(Expr::col(Prompts::Name).eq(name.as_str()))
        .to_owned()
}

/// `col = (SELECT id FROM prompts WHERE name = ?)`: a scalar subquery rather
/// than a join, so that PostgreSQL knows the prompt id when it plans and can
/// walk the `(prompt_id, …)` indexes in order (see docs/runs.md).
pub(crate) fn of_prompt<C: sea_orm::sea_query::IntoColumnRef>(col: C, name: &PromptName) -> SimpleExpr {
    Expr::col(col).eq(SimpleExpr::SubQuery(None, Box::new(prompt_id_of(name).into())))
}

/// What a write transaction decided: done, or refused for a domain reason
/// (rolled back, nothing changed).
type Decided<T> = Result<T, PromptError>;

/// How many times a label move on PostgreSQL reads and tries its
/// compare-and-set before it runs as a transaction instead.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// A label change decided on, see `plan_label`.
struct LabelPlan {
    /// The label as the change leaves it.
    written: Label,
    /// The label's row as read (`None`: the change creates it).
    current: Option<Label>,
    entry: LabelChange,
    audit: AuditEvent,
    event: ChangeEvent,
}

/// What a label move depends on, see `read_for_move`.
struct MoveRead {
    prompt_id: Uuid,
    current: Option<Label>,
    found: Vec<i32>,
    endpoints: Vec<(Uuid, String, Option<String>)>,
}

/// The versions of `target` that are not among `found`, as field errors.
fn missing_versions(target: &LabelTarget, found: &[i32]) -> Vec<FieldError> {
    target
        .versions()
        .map(VersionNumber::as_i32)
        .enumerate()
        .filter(|(_, n)| !found.contains(n))
        .map(|(i, n)| {
            let field = match target {
                LabelTarget::Version(_) => "version".to_owned(),
                LabelTarget::Split(_) => format!("split[{i}].version"),
            };
            FieldError::new(field, format!("the prompt has no version {n}"))
        })
        .collect()
}

fn tag_condition(backend: DbBackend, tag: &str) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            "p.tags @> $1",
            [Value::Array(vec![Value::String(tag.to_owned())])],
        ),
        // SQLite stores JSON as text; json_each walks the array.
        _ => Expr::cust_with_values(
            "EXISTS (SELECT 1 FROM json_each(p.tags) WHERE json_each.value = ?)",
            [tag.to_owned()],
        ),
    }
}

impl SeaOrmPromptRepository {
    async fn prompt_exists(&self, name: &PromptName) -> Result<bool, PromptError> {
        let q = Query::select()
            .expr(Expr::val(1))
            .from(Prompts::Table)
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .to_owned();
        Ok(self.db.conn().query_one(&q).await.map_err(db_error)?.is_some())
    }

    async fn not_found(&self, name: &PromptName, selector: VersionSelector) -> PromptError {
        match self.prompt_exists(name).await {
            Ok(true) => PromptError::VersionNotFound {
                name: name.clone(),
                selector,
            },
            Ok(false) => PromptError::NotFound(name.clone()),
            Err(e) => e,
        }
    }

    /// Bumps the prompt row at the start of a write transaction: the update
    /// locks the row (PostgreSQL) or takes the write lock (SQLite), so every
    /// version change of one prompt is serialised. Returns the prompt's id and
    /// its new latest number, or `None` when there is no such prompt.
    async fn lock_prompt<C: ConnectionTrait>(
        conn: &C,
        name: &PromptName,
        bump_counter: bool,
        now: sea_orm::Value,
    ) -> Result<Option<(Uuid, i32)>, DbErr> {
        let mut q = Query::update();
        q.table(Prompts::Table).value(Prompts::UpdatedAt, now);
        if bump_counter {
            q.value(Prompts::LatestVersion, Expr::col(Prompts::LatestVersion).add(1));
        }
        q.and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .returning(Query::returning().columns([Prompts::Id, Prompts::LatestVersion]));
        let Some(row) = conn.query_one(&q).await? else {
            return Ok(None);
        };
        Ok(Some((
            get(&row, Prompts::Id)?,
            get(&row, Prompts::LatestVersion)?,
        )))
    }

    async fn read_label<C: ConnectionTrait>(
        conn: &C,
        prompt_id: Uuid,
        label: LabelName,
    ) -> Result<Option<Label>, DbErr> {
        let q = Query::select()
            .columns(LABEL_COLUMNS)
            .from(PromptLabels::Table)
            .and_where(Expr::col(PromptLabels::PromptId).eq(prompt_id))
            .and_where(Expr::col(PromptLabels::Name).eq(label.as_str()))
            .to_owned();
        match conn.query_one(&q).await? {
            Some(row) => LabelRow::from_query_result(&row, "")?
                .into_domain()
                .map(Some)
                .map_err(|e| DbErr::Custom(format!("{e:#}"))),
            None => Ok(None),
        }
    }

    /// The versions that `target` serves, of the prompt `prompt` selects (a
    /// condition on `v.prompt_id`), read through `conn` (inside a write
    /// transaction, a version created in it is found).
    async fn load_versions<C: ConnectionTrait>(
        conn: &C,
        prompt: SimpleExpr,
        target: &LabelTarget,
    ) -> Result<Vec<PromptVersion>, DbErr> {
        let numbers: Vec<i32> = target.versions().map(VersionNumber::as_i32).collect();
        let q = version_select()
            .and_where(prompt)
            .and_where(Expr::col(v(PromptVersions::Version)).is_in(numbers))
            .to_owned();
        let mut versions = Vec::new();
        for row in conn.query_all(&q).await? {
            let version = VersionRow::from_query_result(&row, "")?
                .into_domain()
                .map_err(|e| DbErr::Custom(format!("{e:#}")))?;
            versions.push(version);
        }
        Ok(versions)
    }

    /// Which of the versions `target` serves `prompt_id` has.
    async fn found_versions<C: ConnectionTrait>(
        conn: &C,
        prompt_id: Uuid,
        target: &LabelTarget,
    ) -> Result<Vec<i32>, DbErr> {
        let wanted: Vec<i32> = target.versions().map(VersionNumber::as_i32).collect();
        let q = Query::select()
            .column(PromptVersions::Version)
            .from(PromptVersions::Table)
            .and_where(Expr::col(PromptVersions::PromptId).eq(prompt_id))
            .and_where(Expr::col(PromptVersions::Version).is_in(wanted))
            .to_owned();
        let mut found = Vec::new();
        for row in conn.query_all(&q).await? {
            found.push(get::<i32>(&row, PromptVersions::Version)?);
        }
        Ok(found)
    }

    /// Points `label` at `to` (or nowhere) after the checks, with its
    /// history entry and audit event, inside `txn`.
    #[allow(clippy::too_many_arguments)]
    async fn write_label(
        &self,
        txn: &DatabaseTransaction,
        name: &PromptName,
        prompt_id: Uuid,
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
        now: OffsetDateTime,
    ) -> Result<Decided<Label>, DbErr> {
        let current = Self::read_label(txn, prompt_id, change.label).await?;
        let found = match &change.target {
            Some(target) => Self::found_versions(txn, prompt_id, target).await?,
            None => Vec::new(),
        };
        let plan =
            match Self::plan_label(txn, name, prompt_id, current, &found, change, policy, ctx, now).await? {
                Ok(plan) => plan,
                Err(refused) => return Ok(Err(refused)),
            };
        // The label's row is written with its records, in one statement on
        // PostgreSQL (see `events::append_with`).
        let also = vec![
            self.label_row(prompt_id, &plan, false),
            history_insert(&self.db, prompt_id, &plan.entry, None).into(),
            crate::audit::insert(&self.db, &plan.audit, None).into(),
        ];
        events::append_with(txn, &self.db, &plan.event, also).await?;
        Ok(Ok(plan.written))
    }

    /// A label move on PostgreSQL in two round trips and no transaction:
    /// one read of all it depends on, then one statement that writes it
    /// with its records if the label is still as read (compare-and-set on
    /// its revision and protection, under the prompt's row lock; see
    /// `events::append_if`). A move that lost the race to another reads
    /// again; after a few such losses it runs as a transaction, which
    /// waits for the prompt's lock instead.
    async fn move_label_at_once(
        &self,
        name: &PromptName,
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<Option<Decided<Label>>, DbErr> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let now = registry_domain::time::now_utc();
            let Some(read) = self.read_for_move(name, change).await? else {
                return Ok(None);
            };
            let conn = self.db.conn();
            let plan = match Self::plan_label(
                conn,
                name,
                read.prompt_id,
                read.current,
                &read.found,
                change,
                policy,
                ctx,
                now,
            )
            .await?
            {
                Ok(plan) => plan,
                Err(refused) => return Ok(Some(Err(refused))),
            };
            let endpoints = crate::webhooks::subscribed(read.endpoints, &plan.event);
            let lock = Query::select()
                .column(Prompts::Id)
                .from(Prompts::Table)
                .and_where(Expr::col(Prompts::Id).eq(read.prompt_id))
                .lock(LockType::Update)
                .to_owned();
            let touch = Query::update()
                .table(Prompts::Table)
                .value(Prompts::UpdatedAt, self.db.time(now))
                .and_where(
                    Expr::col(Prompts::Id).in_subquery(
                        Query::select()
                            .expr(Expr::val(read.prompt_id))
                            .from(Alias::new(events::GUARD))
                            .to_owned(),
                    ),
                )
                .to_owned();
            let also = vec![
                touch.into(),
                history_insert(&self.db, read.prompt_id, &plan.entry, Some(events::GUARD)).into(),
                crate::audit::insert(&self.db, &plan.audit, Some(events::GUARD)).into(),
            ];
            let guard = self.label_row(read.prompt_id, &plan, true);
            match events::append_if(conn, &self.db, &plan.event, lock, guard, also, &endpoints).await {
                Ok(true) => return Ok(Some(Ok(plan.written))),
                // Moved (or its prompt deleted, or an endpoint) since it
                // was read: read again.
                Ok(false) => {}
                Err(e)
                    if matches!(
                        e.sql_err(),
                        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        self.db
            .write(|| self.try_move_label(name, change, policy, ctx))
            .await
    }

    /// What a label move depends on, in one query: the prompt's id, the
    /// label's row, which of the target's versions exist, and the enabled
    /// webhook endpoints. `None` when there is no such prompt.
    async fn read_for_move(&self, name: &PromptName, change: &LabelMove) -> Result<Option<MoveRead>, DbErr> {
        let l = |c| (TableAlias::L, c);
        let wanted: Vec<i32> = change
            .target
            .iter()
            .flat_map(LabelTarget::versions)
            .map(VersionNumber::as_i32)
            .collect();
        let found = Query::select()
            .expr(Expr::cust("json_agg(version)"))
            .from(PromptVersions::Table)
            .and_where(Expr::col(PromptVersions::PromptId).equals(p(Prompts::Id)))
            .and_where(Expr::col(PromptVersions::Version).is_in(wanted))
            .to_owned();
        let endpoints = Query::select()
            .expr(Expr::cust(
                "json_agg(json_build_array(id, event_types, prompt_prefix))",
            ))
            .from_subquery(crate::webhooks::enabled_endpoints(), Alias::new("e"))
            .to_owned();
        let q = Query::select()
            .expr_as(Expr::col(p(Prompts::Id)), Alias::new("prompt_id"))
            .columns(LABEL_COLUMNS.map(l))
            .expr_as(
                SimpleExpr::SubQuery(None, Box::new(found.into())),
                Alias::new("found"),
            )
            .expr_as(
                SimpleExpr::SubQuery(None, Box::new(endpoints.into())),
                Alias::new("endpoints"),
            )
            .from_as(Prompts::Table, TableAlias::P)
            .join_as(
                JoinType::LeftJoin,
                PromptLabels::Table,
                TableAlias::L,
                Cond::all()
                    .add(Expr::col(l(PromptLabels::PromptId)).equals(p(Prompts::Id)))
                    .add(Expr::col(l(PromptLabels::Name)).eq(change.label.as_str())),
            )
            .and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()))
            .to_owned();
        let Some(row) = self.db.conn().query_one(&q).await? else {
            return Ok(None);
        };
        let has_label: Option<String> = row.try_get("", "name")?;
        let current = match has_label {
            Some(_) => Some(
                LabelRow::from_query_result(&row, "")?
                    .into_domain()
                    .map_err(|e| DbErr::Custom(format!("{e:#}")))?,
            ),
            None => None,
        };
        let json = |column: &str| -> Result<Value, DbErr> {
            Ok(row.try_get::<Option<Value>>("", column)?.unwrap_or(Value::Null))
        };
        let found = serde_json::from_value::<Option<Vec<i32>>>(json("found")?)
            .map_err(|e| DbErr::Custom(format!("the versions found: {e}")))?
            .unwrap_or_default();
        let endpoints =
            serde_json::from_value::<Option<Vec<(Uuid, String, Option<String>)>>>(json("endpoints")?)
                .map_err(|e| DbErr::Custom(format!("the webhook endpoints: {e}")))?
                .unwrap_or_default();
        Ok(Some(MoveRead {
            prompt_id: row.try_get("", "prompt_id")?,
            current,
            found,
            endpoints,
        }))
    }

    /// The checks of a label change, given the label's row as read
    /// (`current`) and which of the target's versions exist (`found`): the
    /// caller's right to move it, the expected revision, the versions, and
    /// for a protected label whether the change breaks callers (the two
    /// sides' versions read through `conn`). What to write if they pass.
    #[allow(clippy::too_many_arguments)]
    async fn plan_label<C: ConnectionTrait>(
        conn: &C,
        name: &PromptName,
        prompt_id: Uuid,
        current: Option<Label>,
        found: &[i32],
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
        now: OffsetDateTime,
    ) -> Result<Decided<LabelPlan>, DbErr> {
        let label = change.label;
        if let Err(e) = LabelPolicy::authorize(ctx, label, current.as_ref()) {
            return Ok(Err(e));
        }
        if !change.expected.holds(current.as_ref()) {
            return Ok(Err(PromptError::LabelMoved {
                label,
                current: current.as_ref().and_then(|l| l.target.clone()),
                revision: current.as_ref().map_or(0, |l| l.revision),
            }));
        }
        let from = current.as_ref().and_then(|l| l.target.clone());
        match &change.target {
            None if from.is_none() => {
                return Ok(Err(PromptError::LabelNotFound {
                    name: name.clone(),
                    label,
                }));
            }
            None => {}
            Some(target) => {
                let missing = missing_versions(target, found);
                if !missing.is_empty() {
                    return Ok(Err(PromptError::Invalid(missing)));
                }
            }
        }
        let overrides = match (&current, &change.target, &from) {
            (Some(current), Some(to), Some(from)) if current.protected && to != from => {
                let prompt = || Expr::col(v(PromptVersions::PromptId)).eq(prompt_id);
                let reasons = diff::breaking_between(
                    &Self::load_versions(conn, prompt(), from).await?,
                    &Self::load_versions(conn, prompt(), to).await?,
                );
                if !reasons.is_empty() && !change.allow_breaking {
                    return Ok(Err(PromptError::Breaking { label, reasons }));
                }
                reasons
            }
            _ => Vec::new(),
        };
        let written = match &current {
            Some(current) => Label {
                name: label,
                target: change.target.clone(),
                protected: current.protected,
                revision: current.revision + 1,
                updated_at: now,
            },
            None => Label {
                name: label,
                target: change.target.clone(),
                protected: policy.protects(label),
                revision: 1,
                updated_at: now,
            },
        };
        let entry = LabelChange {
            id: Uuid::now_v7(),
            label,
            from: from.clone(),
            to: change.target.clone(),
            actor: ctx.actor.clone(),
            reason: change.reason.clone(),
            request_id: ctx.request_id.clone(),
            at: now,
            overrides: overrides.clone(),
        };
        let audit = AuditEvent::new(
            ctx,
            change.action,
            audit::label_target(name, label),
            from.as_ref().map(LabelTarget::to_json),
            change.target.as_ref().map(|t| {
                let mut after = t.to_json();
                if let Value::Object(map) = &mut after {
                    if let Some(reason) = &change.reason {
                        map.insert("reason".into(), reason.clone().into());
                    }
                    if !overrides.is_empty() {
                        map.insert("allowed_breaking".into(), overrides.clone().into());
                    }
                }
                after
            }),
        );
        let event = ChangeEvent::label_changed(name, label, from.as_ref(), change.target.as_ref());
        Ok(Ok(LabelPlan {
            written,
            current,
            entry,
            audit,
            event,
        }))
    }

    /// The write of the label's own row: an update, or an insert for a new
    /// label. As a compare-and-set (`cas`, for `events::append_if`) it
    /// returns a row only if the label is still as read: the same revision
    /// and protection, or still absent; and a new row takes its prompt id
    /// from the locked prompt row.
    fn label_row(&self, prompt_id: Uuid, plan: &LabelPlan, cas: bool) -> events::Also {
        let (version, split) = target_columns(plan.written.target.as_ref());
        let now = self.db.time(plan.written.updated_at);
        if let Some(current) = &plan.current {
            let mut q = Query::update();
            q.table(PromptLabels::Table)
                .value(PromptLabels::Version, version)
                .value(PromptLabels::Split, split)
                .value(PromptLabels::Revision, Expr::col(PromptLabels::Revision).add(1))
                .value(PromptLabels::UpdatedAt, now)
                .and_where(Expr::col(PromptLabels::PromptId).eq(prompt_id))
                .and_where(Expr::col(PromptLabels::Name).eq(plan.written.name.as_str()));
            if cas {
                let revision = i32::try_from(current.revision).unwrap_or(i32::MAX);
                q.and_where(Expr::col(PromptLabels::Revision).eq(revision))
                    .and_where(Expr::col(PromptLabels::Protected).eq(current.protected))
                    .and_where(
                        Expr::col(PromptLabels::PromptId).in_subquery(
                            Query::select()
                                .column(Prompts::Id)
                                .from(Alias::new(events::LOCKED))
                                .to_owned(),
                        ),
                    )
                    .returning_col(PromptLabels::Revision);
            }
            return q.into();
        }
        let prompt: Expr = if cas {
            Expr::col((Alias::new(events::LOCKED), Prompts::Id))
        } else {
            prompt_id.into()
        };
        let mut q = events::insert_row(
            PromptLabels::Table,
            [
                PromptLabels::Name,
                PromptLabels::Version,
                PromptLabels::Split,
                PromptLabels::Protected,
                PromptLabels::Revision,
                PromptLabels::UpdatedAt,
                PromptLabels::PromptId,
            ],
            [
                plan.written.name.as_str().into(),
                version.into(),
                split.into(),
                plan.written.protected.into(),
                1.into(),
                now.into(),
                prompt,
            ],
            cas.then_some(events::LOCKED),
        );
        if cas {
            q.on_conflict(
                OnConflict::columns([PromptLabels::PromptId, PromptLabels::Name])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(PromptLabels::Revision);
        }
        q.into()
    }

    async fn try_create_version(
        &self,
        name: &PromptName,
        new: &NewVersion,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<Option<Decided<PromptVersion>>, DbErr> {
        let now = registry_domain::time::now_utc();
        let txn = self.db.conn().begin().await?;
        let Some((prompt_id, number)) = Self::lock_prompt(&txn, name, true, self.db.time(now)).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let id = Uuid::now_v7();
        let template = new.template().to_json();
        let variables = new.variables().to_json();
        let config = Value::Object(new.config().clone());
        let q = Query::insert()
            .into_table(PromptVersions::Table)
            .columns(VERSION_COLUMNS)
            .values_panic([
                id.into(),
                prompt_id.into(),
                number.into(),
                new.template().kind().as_str().into(),
                template.into(),
                variables.into(),
                config.into(),
                new.commit_message().map(str::to_owned).into(),
                self.db.time(now).into(),
                includes_json(new.includes()).into(),
                source_json(new.source()).into(),
            ])
            .to_owned();
        txn.execute(&q).await?;
        let version = VersionNumber::new(i64::from(number)).map_err(|e| DbErr::Custom(e.to_string()))?;
        Self::index_includes(&txn, prompt_id, version, new.includes()).await?;
        let labels = new.labels();
        for label in &labels {
            let change = LabelMove {
                label: *label,
                target: Some(LabelTarget::Version(version)),
                expected: registry_domain::prompt::Expected::Anything,
                reason: new.commit_message().map(str::to_owned),
                action: Action::LabelMoved,
                allow_breaking: new.allow_breaking(),
            };
            if let Err(refused) = self
                .write_label(&txn, name, prompt_id, &change, policy, ctx, now)
                .await?
            {
                txn.rollback().await?;
                return Ok(Some(Err(refused)));
            }
        }
        let event = AuditEvent::new(
            ctx,
            Action::VersionCreated,
            format!("{}@{version}", audit::prompt_target(name)),
            None,
            Some(json!({
                "version": version.get(),
                "labels": labels.iter().map(LabelName::as_str).collect::<Vec<_>>(),
                "includes": includes_json(new.includes()),
            })),
        );
        append(&txn, &self.db, &event).await?;
        events::append(
            &txn,
            &self.db,
            &ChangeEvent::version_created(name, version, &labels),
        )
        .await?;
        txn.commit().await?;
        Ok(Some(Ok(PromptVersion {
            id,
            prompt_id,
            prompt_name: name.clone(),
            version,
            template: new.template().clone(),
            variables: new.variables().clone(),
            config: new.config().clone(),
            is_active: labels.contains(&LabelName::PRODUCTION),
            commit_message: new.commit_message().map(str::to_owned),
            created_at: now,
            includes: new.includes().to_vec(),
            source: new.source().cloned(),
        })))
    }

    /// Records which versions `version` of `prompt_id` includes, for the
    /// dependents of a shared prompt.
    async fn index_includes<C: ConnectionTrait>(
        conn: &C,
        prompt_id: Uuid,
        version: VersionNumber,
        includes: &[Include],
    ) -> Result<(), DbErr> {
        for include in includes {
            let Some(row) = conn.query_one(&prompt_id_of(&include.prompt)).await? else {
                continue;
            };
            let included: Uuid = get(&row, Prompts::Id)?;
            let q = Query::insert()
                .into_table(VersionIncludes::Table)
                .columns([
                    VersionIncludes::PromptId,
                    VersionIncludes::Version,
                    VersionIncludes::IncludedPromptId,
                    VersionIncludes::IncludedVersion,
                    VersionIncludes::ViaLabel,
                ])
                .values_panic([
                    prompt_id.into(),
                    version.as_i32().into(),
                    included.into(),
                    include.version.as_i32().into(),
                    include.via_label.map(|l| l.as_str().to_owned()).into(),
                ])
                .on_conflict(
                    sea_orm::sea_query::OnConflict::columns([
                        VersionIncludes::PromptId,
                        VersionIncludes::Version,
                        VersionIncludes::IncludedPromptId,
                        VersionIncludes::IncludedVersion,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .to_owned();
            conn.execute(&q).await?;
        }
        Ok(())
    }

    /// Up to `limit` versions of other prompts that include `prompt_id`.
    async fn dependents_of<C: ConnectionTrait>(
        conn: &C,
        prompt_id: SimpleExpr,
        limit: Option<u64>,
    ) -> Result<Vec<(String, i32, i32, Option<String>)>, DbErr> {
        let mut q = Query::select();
        q.expr_as(Expr::col(p(Prompts::Name)), ColumnAlias::PromptName)
            .column((VersionIncludes::Table, VersionIncludes::Version))
            .column((VersionIncludes::Table, VersionIncludes::IncludedVersion))
            .column((VersionIncludes::Table, VersionIncludes::ViaLabel))
            .from(VersionIncludes::Table)
            .join_as(
                JoinType::InnerJoin,
                Prompts::Table,
                TableAlias::P,
                Expr::col(p(Prompts::Id)).equals((VersionIncludes::Table, VersionIncludes::PromptId)),
            )
            .and_where(
                Expr::col((VersionIncludes::Table, VersionIncludes::IncludedPromptId)).eq(prompt_id.clone()),
            )
            .and_where(Expr::col((VersionIncludes::Table, VersionIncludes::PromptId)).ne(prompt_id))
            .order_by(p(Prompts::Name), Order::Asc)
            .order_by((VersionIncludes::Table, VersionIncludes::Version), Order::Asc);
        if let Some(limit) = limit {
            q.limit(limit);
        }
        let mut found = Vec::new();
        for row in conn.query_all(&q).await? {
            found.push((
                get(&row, ColumnAlias::PromptName)?,
                get(&row, VersionIncludes::Version)?,
                get(&row, VersionIncludes::IncludedVersion)?,
                get(&row, VersionIncludes::ViaLabel)?,
            ));
        }
        Ok(found)
    }

    async fn try_move_label(
        &self,
        name: &PromptName,
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<Option<Decided<Label>>, DbErr> {
        let now = registry_domain::time::now_utc();
        let txn = self.db.conn().begin().await?;
        let Some((prompt_id, _)) = Self::lock_prompt(&txn, name, false, self.db.time(now)).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let decided = self
            .write_label(&txn, name, prompt_id, change, policy, ctx, now)
            .await?;
        if decided.is_ok() {
            txn.commit().await?;
        } else {
            txn.rollback().await?;
        }
        Ok(Some(decided))
    }

    async fn try_protect_label(
        &self,
        name: &PromptName,
        label: LabelName,
        protected: bool,
        ctx: &Context,
    ) -> Result<Option<Option<Label>>, DbErr> {
        let now = registry_domain::time::now_utc();
        let txn = self.db.conn().begin().await?;
        let Some((prompt_id, _)) = Self::lock_prompt(&txn, name, false, self.db.time(now)).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let Some(mut current) = Self::read_label(&txn, prompt_id, label).await? else {
            txn.rollback().await?;
            return Ok(Some(None));
        };
        let q = Query::update()
            .table(PromptLabels::Table)
            .value(PromptLabels::Protected, protected)
            .and_where(Expr::col(PromptLabels::PromptId).eq(prompt_id))
            .and_where(Expr::col(PromptLabels::Name).eq(label.as_str()))
            .to_owned();
        txn.execute(&q).await?;
        let action = if protected {
            Action::LabelProtected
        } else {
            Action::LabelUnprotected
        };
        let event = AuditEvent::new(
            ctx,
            action,
            audit::label_target(name, label),
            Some(json!({"protected": current.protected})),
            Some(json!({"protected": protected})),
        );
        append(&txn, &self.db, &event).await?;
        txn.commit().await?;
        current.protected = protected;
        Ok(Some(Some(current)))
    }

    /// The version a plain label points at, in one query: the hot path
    /// when the cache is off or cold. `None` when the label is a split, or
    /// it or its prompt does not exist; [`Self::resolve_label`] tells those
    /// apart.
    async fn plain_label_version(
        &self,
        name: &PromptName,
        label: LabelName,
    ) -> Result<Option<PromptVersion>, DbErr> {
        let l = |c| (TableAlias::L, c);
        let q = version_select()
            .join_as(
                JoinType::InnerJoin,
                PromptLabels::Table,
                TableAlias::L,
                Cond::all()
                    .add(Expr::col(l(PromptLabels::PromptId)).equals(v(PromptVersions::PromptId)))
                    .add(Expr::col(l(PromptLabels::Name)).eq(label.as_str()))
                    .add(Expr::col(l(PromptLabels::Version)).equals(v(PromptVersions::Version))),
            )
            .and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()))
            .to_owned();
        let Some(row) = self.db.conn().query_one(&q).await? else {
            return Ok(None);
        };
        let version = VersionRow::from_query_result(&row, "")?
            .into_domain()
            .map_err(|e| DbErr::Custom(format!("{e:#}")))?;
        Ok(Some(version))
    }

    async fn resolve_label(&self, name: &PromptName, label: LabelName) -> Result<Resolution, PromptError> {
        if let Some(version) = self.plain_label_version(name, label).await.map_err(db_error)? {
            return Ok(Resolution::Version(Arc::new(version)));
        }
        let selector = VersionSelector::Label(label);
        let q = Query::select()
            .columns(LABEL_COLUMNS)
            .from(PromptLabels::Table)
            .and_where(of_prompt(PromptLabels::PromptId, name))
            .and_where(Expr::col(PromptLabels::Name).eq(label.as_str()))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let target = match row {
            Some(row) => decode_one::<LabelRow, _>(&row, db_error)?.target,
            None => None,
        };
        let Some(target) = target else {
            return Err(self.not_found(name, selector).await);
        };
        let versions = Self::load_versions(
            self.db.conn(),
            of_prompt(v(PromptVersions::PromptId), name),
            &target,
        )
        .await
        .map_err(db_error)?;
        let find = |n: VersionNumber| {
            versions
                .iter()
                .find(|v| v.version == n)
                .cloned()
                .map(Arc::new)
                .ok_or_else(|| PromptError::Unknown(anyhow!("label `{label}` points at missing version {n}")))
        };
        match &target {
            LabelTarget::Version(n) => find(*n).map(Resolution::Version),
            LabelTarget::Split(split) => split
                .arms()
                .iter()
                .map(|a| find(a.version).map(|v| (a.weight, v)))
                .collect::<Result<Vec<_>, _>>()
                .map(|arms| Resolution::Split(arms.into())),
        }
    }
}

#[async_trait]
impl PromptRepository for SeaOrmPromptRepository {
    async fn create_prompt(&self, new: &NewPrompt, ctx: &Context) -> Result<Prompt, PromptError> {
        let now = registry_domain::time::now_utc();
        let id = Uuid::now_v7();
        let tags = Value::from(new.tags.as_slice().to_vec());
        let description = new.description.as_ref().map(|d| d.as_str().to_owned());
        let q = Query::insert()
            .into_table(Prompts::Table)
            .columns(PROMPT_COLUMNS)
            .values_panic([
                id.into(),
                new.name.as_str().into(),
                description.clone().into(),
                tags.clone().into(),
                0.into(),
                self.db.time(now).into(),
                self.db.time(now).into(),
            ])
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::PromptCreated,
            audit::prompt_target(&new.name),
            None,
            Some(json!({"description": description, "tags": tags})),
        );
        self.db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                txn.execute(&q).await?;
                append(&txn, &self.db, &event).await?;
                events::append(
                    &txn,
                    &self.db,
                    &ChangeEvent::prompt(EventKind::PromptCreated, &new.name),
                )
                .await?;
                txn.commit().await
            })
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    PromptError::Duplicate(new.name.clone())
                } else {
                    db_error(e)
                }
            })?;
        Ok(Prompt {
            id,
            name: new.name.clone(),
            description: new.description.clone(),
            tags: new.tags.clone(),
            active_version: None,
            latest_version: None,
            created_at: now,
            updated_at: now,
        })
    }

    async fn list_prompts(
        &self,
        filter: &PromptFilter,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<Prompt, TimeCursor>, PromptError> {
        let mut q = prompt_select();
        if let Some(after) = filter.created_after {
            q.and_where(Expr::col(p(Prompts::CreatedAt)).gt(self.db.time(after)));
        }
        if let Some(before) = filter.created_before {
            q.and_where(Expr::col(p(Prompts::CreatedAt)).lt(self.db.time(before)));
        }
        if let Some(prefix) = &filter.name_prefix {
            q.and_where(
                Expr::col(p(Prompts::Name)).like(LikeExpr::new(crate::db::like_prefix(prefix)).escape('\\')),
            );
        }
        if let Some(tag) = &filter.tag {
            q.and_where(tag_condition(self.db.backend(), tag));
        }
        if let Some(c) = page.after {
            let at = self.db.time(c.created_at);
            q.and_where(
                Expr::tuple([Expr::col(p(Prompts::CreatedAt)), Expr::col(p(Prompts::Id))])
                    .gt(Expr::tuple([Expr::val(at), Expr::val(c.id)])),
            );
        }
        q.order_by(p(Prompts::CreatedAt), Order::Asc)
            .order_by(p(Prompts::Id), Order::Asc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let prompts = decode::<PromptRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(prompts, page.limit, |p| TimeCursor {
            created_at: p.created_at,
            id: p.id,
        }))
    }

    async fn find_prompt(&self, name: &PromptName) -> Result<Prompt, PromptError> {
        let q = prompt_select()
            .and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or_else(|| PromptError::NotFound(name.clone()))?;
        decode_one::<PromptRow, _>(&row, db_error)
    }

    async fn update_prompt(
        &self,
        name: &PromptName,
        patch: &PromptPatch,
        ctx: &Context,
    ) -> Result<Prompt, PromptError> {
        let mut q = Query::update();
        q.table(Prompts::Table)
            .value(Prompts::UpdatedAt, self.db.time(registry_domain::time::now_utc()))
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()));
        let mut after = serde_json::Map::new();
        if let Some(description) = &patch.description {
            let description = description.as_ref().map(|d| d.as_str().to_owned());
            after.insert("description".into(), description.clone().into());
            q.value(Prompts::Description, description);
        }
        if let Some(tags) = &patch.tags {
            let tags = Value::from(tags.as_slice().to_vec());
            after.insert("tags".into(), tags.clone());
            q.value(Prompts::Tags, tags);
        }
        let event = AuditEvent::new(
            ctx,
            Action::PromptUpdated,
            audit::prompt_target(name),
            None,
            Some(Value::Object(after)),
        );
        let updated = self
            .db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                if txn.execute(&q).await?.rows_affected() == 0 {
                    txn.rollback().await?;
                    return Ok(false);
                }
                append(&txn, &self.db, &event).await?;
                events::append(
                    &txn,
                    &self.db,
                    &ChangeEvent::prompt(EventKind::PromptUpdated, name),
                )
                .await?;
                txn.commit().await?;
                Ok(true)
            })
            .await
            .map_err(db_error)?;
        if !updated {
            return Err(PromptError::NotFound(name.clone()));
        }
        self.find_prompt(name).await
    }

    async fn delete_prompt(&self, name: &PromptName, force: bool, ctx: &Context) -> Result<(), PromptError> {
        let q = Query::delete()
            .from_table(Prompts::Table)
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::PromptDeleted,
            audit::prompt_target(name),
            Some(json!({"name": name.as_str(), "force": force})),
            None,
        );
        let id = prompt_id_of(name);
        // Ok(None): no such prompt; Ok(Some(list)): refused for its dependents.
        let outcome = self
            .db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                if !force {
                    let dependents = Self::dependents_of(
                        &txn,
                        SimpleExpr::SubQuery(None, Box::new(id.clone().into())),
                        Some(5),
                    )
                    .await?;
                    if !dependents.is_empty() {
                        txn.rollback().await?;
                        return Ok(Some(dependents));
                    }
                }
                if txn.execute(&q).await?.rows_affected() == 0 {
                    txn.rollback().await?;
                    return Ok(None);
                }
                append(&txn, &self.db, &event).await?;
                events::append(
                    &txn,
                    &self.db,
                    &ChangeEvent::prompt(EventKind::PromptDeleted, name),
                )
                .await?;
                txn.commit().await?;
                Ok(Some(Vec::new()))
            })
            .await
            .map_err(db_error)?;
        match outcome {
            None => Err(PromptError::NotFound(name.clone())),
            Some(dependents) if dependents.is_empty() => Ok(()),
            Some(dependents) => Err(PromptError::HasDependents {
                name: name.clone(),
                dependents: dependents.iter().map(|(p, v, _, _)| format!("{p}@{v}")).collect(),
            }),
        }
    }

    async fn dependents(&self, name: &PromptName) -> Result<Vec<Dependent>, PromptError> {
        let id = prompt_id_of(name);
        let rows = Self::dependents_of(
            self.db.conn(),
            SimpleExpr::SubQuery(None, Box::new(id.into())),
            None,
        )
        .await
        .map_err(db_error)?;
        if rows.is_empty() && !self.prompt_exists(name).await? {
            return Err(PromptError::NotFound(name.clone()));
        }
        rows.into_iter()
            .map(|(prompt, version, included, via)| {
                Ok(Dependent {
                    prompt: PromptName::new(&prompt).context("stored prompt name")?,
                    version: number(version)?,
                    includes_version: number(included)?,
                    via_label: via
                        .as_deref()
                        .map(LabelName::new)
                        .transpose()
                        .context("stored label")?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(PromptError::Unknown)
    }

    async fn create_version(
        &self,
        name: &PromptName,
        new: &NewVersion,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<PromptVersion, PromptError> {
        self.db
            .write(|| self.try_create_version(name, new, policy, ctx))
            .await
            .map_err(db_error)?
            .ok_or_else(|| PromptError::NotFound(name.clone()))?
    }

    async fn list_versions(
        &self,
        name: &PromptName,
        page: &PageRequest<VersionCursor>,
    ) -> Result<Page<PromptVersion, VersionCursor>, PromptError> {
        let mut q = version_select();
        q.and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()));
        if let Some(VersionCursor(after)) = page.after {
            q.and_where(Expr::col(v(PromptVersions::Version)).lt(after.as_i32()));
        }
        q.order_by(v(PromptVersions::Version), Order::Desc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        if rows.is_empty() && !self.prompt_exists(name).await? {
            return Err(PromptError::NotFound(name.clone()));
        }
        let versions = decode::<VersionRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(versions, page.limit, |v| {
            VersionCursor(v.version)
        }))
    }

    async fn resolve(&self, name: &PromptName, selector: VersionSelector) -> Result<Resolution, PromptError> {
        let mut q = version_select();
        q.and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()));
        match selector {
            VersionSelector::Label(label) => return self.resolve_label(name, label).await,
            VersionSelector::Latest => {
                q.and_where(Expr::col(v(PromptVersions::Version)).equals(p(Prompts::LatestVersion)))
            }
            VersionSelector::Number(n) => q.and_where(Expr::col(v(PromptVersions::Version)).eq(n.as_i32())),
        };
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        match row {
            Some(row) => {
                decode_one::<VersionRow, _>(&row, db_error).map(|v| Resolution::Version(Arc::new(v)))
            }
            None => Err(self.not_found(name, selector).await),
        }
    }

    async fn list_labels(&self, name: &PromptName) -> Result<Vec<Label>, PromptError> {
        let q = Query::select()
            .columns(LABEL_COLUMNS)
            .from(PromptLabels::Table)
            .and_where(of_prompt(PromptLabels::PromptId, name))
            .and_where(
                Expr::col(PromptLabels::Version)
                    .is_not_null()
                    .or(Expr::col(PromptLabels::Split).is_not_null()),
            )
            .order_by(PromptLabels::Name, Order::Asc)
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        if rows.is_empty() && !self.prompt_exists(name).await? {
            return Err(PromptError::NotFound(name.clone()));
        }
        decode::<LabelRow, _>(&rows, db_error)
    }

    async fn labels_of(&self, prompt_ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<Label>>, PromptError> {
        let q = Query::select()
            .column(PromptLabels::PromptId)
            .columns(LABEL_COLUMNS)
            .from(PromptLabels::Table)
            .and_where(Expr::col(PromptLabels::PromptId).is_in(prompt_ids.iter().copied()))
            .and_where(
                Expr::col(PromptLabels::Version)
                    .is_not_null()
                    .or(Expr::col(PromptLabels::Split).is_not_null()),
            )
            .order_by(PromptLabels::PromptId, Order::Asc)
            .order_by(PromptLabels::Name, Order::Asc)
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let mut found: HashMap<Uuid, Vec<Label>> = HashMap::new();
        for row in &rows {
            let prompt: Uuid = get(row, PromptLabels::PromptId).map_err(db_error)?;
            found
                .entry(prompt)
                .or_default()
                .push(decode_one::<LabelRow, _>(row, db_error)?);
        }
        Ok(found)
    }

    async fn find_label(&self, name: &PromptName, label: LabelName) -> Result<Option<Label>, PromptError> {
        let q = Query::select()
            .columns(LABEL_COLUMNS)
            .from(PromptLabels::Table)
            .and_where(of_prompt(PromptLabels::PromptId, name))
            .and_where(Expr::col(PromptLabels::Name).eq(label.as_str()))
            .to_owned();
        match self.db.conn().query_one(&q).await.map_err(db_error)? {
            Some(row) => decode_one::<LabelRow, _>(&row, db_error).map(Some),
            None if self.prompt_exists(name).await? => Ok(None),
            None => Err(PromptError::NotFound(name.clone())),
        }
    }

    async fn move_label(
        &self,
        name: &PromptName,
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        let moved = if self.db.backend() == DbBackend::Postgres {
            self.move_label_at_once(name, change, policy, ctx).await
        } else {
            self.db
                .write(|| self.try_move_label(name, change, policy, ctx))
                .await
        };
        moved
            .map_err(db_error)?
            .ok_or_else(|| PromptError::NotFound(name.clone()))?
    }

    async fn protect_label(
        &self,
        name: &PromptName,
        label: LabelName,
        protected: bool,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        self.db
            .write(|| self.try_protect_label(name, label, protected, ctx))
            .await
            .map_err(db_error)?
            .ok_or_else(|| PromptError::NotFound(name.clone()))?
            .ok_or_else(|| PromptError::LabelNotFound {
                name: name.clone(),
                label,
            })
    }

    async fn label_history(
        &self,
        name: &PromptName,
        label: LabelName,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<LabelChange, TimeCursor>, PromptError> {
        let mut q = Query::select();
        q.columns(HISTORY_COLUMNS)
            .from(LabelHistory::Table)
            .and_where(of_prompt(LabelHistory::PromptId, name))
            .and_where(Expr::col(LabelHistory::Label).eq(label.as_str()));
        if let Some(c) = page.after {
            q.and_where(
                Expr::tuple([Expr::col(LabelHistory::CreatedAt), Expr::col(LabelHistory::Id)]).lt(
                    Expr::tuple([Expr::val(self.db.time(c.created_at)), Expr::val(c.id)]),
                ),
            );
        }
        q.order_by(LabelHistory::CreatedAt, Order::Desc)
            .order_by(LabelHistory::Id, Order::Desc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        if rows.is_empty() && !self.prompt_exists(name).await? {
            return Err(PromptError::NotFound(name.clone()));
        }
        let changes = decode::<HistoryRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(changes, page.limit, |c| TimeCursor {
            created_at: c.at,
            id: c.id,
        }))
    }
}
