//! The run repository on SeaORM.

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use migration::partitions::{MONTHS_AHEAD, create_partition_sql, next_month};
use registry_domain::page::{Page, PageRequest};
use registry_domain::prompt::{LabelName, PromptName, Tags, VersionNumber};
use registry_domain::run::ports::{Logged, RunError, RunRepository, RunRetention};
use registry_domain::run::stats::{Bucket, StatsQuery, StatsSample, VersionStats, aggregate};
use registry_domain::run::{
    Cost, Latency, Run, RunCursor, RunFields, RunFilter, RunSort, RunStatus, SortField, span::TraceLink,
};
use sea_orm::sea_query::{Expr, ExprTrait, JoinType, OnConflict, Order, Query, SelectStatement, SimpleExpr};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value as SqlValue};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::db::Db;
use crate::nul;
use crate::schema::{ColumnAlias, PromptRuns, Prompts, StoredRow, TableAlias, decode, decode_one, get, p, r};

/// Rows per INSERT statement: 20 parameters a row stays well under the
/// parameter limits of both backends.
const ROWS_PER_STATEMENT: usize = 1_000;

/// The stored columns of a run, in the order [`row_values`] gives them.
const COLUMNS: [PromptRuns; 20] = [
    PromptRuns::Id,
    PromptRuns::PromptId,
    PromptRuns::VersionId,
    PromptRuns::Version,
    PromptRuns::Input,
    PromptRuns::Output,
    PromptRuns::Status,
    PromptRuns::Error,
    PromptRuns::Model,
    PromptRuns::LatencyUs,
    PromptRuns::PromptTokens,
    PromptRuns::CompletionTokens,
    PromptRuns::CostNanos,
    PromptRuns::Metadata,
    PromptRuns::Tags,
    PromptRuns::StartedAt,
    PromptRuns::CreatedAt,
    PromptRuns::Label,
    PromptRuns::TraceId,
    PromptRuns::SpanId,
];

/// Runs stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmRunRepository {
    db: Db,
}

impl SeaOrmRunRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

pub(crate) fn db_error(err: DbErr) -> RunError {
    crate::db::classify(err, RunError::Unavailable, RunError::Unknown)
}

/// A copy of `value` with U+0000 escaped (see [`crate::nul`]).
fn escaped(value: Value) -> Value {
    let mut value = value;
    nul::escape_json(&mut value);
    value
}

fn row_values(db: &Db, run: &Run) -> [SimpleExpr; 20] {
    let f = &run.fields;
    let opt_i32 = |v: Option<u32>| v.and_then(|n| i32::try_from(n).ok());
    [
        run.id.into(),
        run.prompt_id.into(),
        run.version_id.into(),
        run.version.as_i32().into(),
        escaped(Value::Object(f.input.clone())).into(),
        f.output.clone().map(escaped).into(),
        f.status.as_str().into(),
        f.error.as_deref().map(|e| nul::escape_str(e).into_owned()).into(),
        f.model.clone().into(),
        i64::try_from(f.latency.micros()).unwrap_or(i64::MAX).into(),
        opt_i32(f.prompt_tokens).into(),
        opt_i32(f.completion_tokens).into(),
        f.cost.nanos().into(),
        escaped(Value::Object(f.metadata.clone())).into(),
        Value::from(f.tags.as_slice().to_vec()).into(),
        db.opt_time(f.started_at).into(),
        db.time(run.created_at).into(),
        f.label.as_ref().map(|l| l.as_str().to_owned()).into(),
        f.trace.map(|t| t.trace_id()).into(),
        f.trace.map(|t| t.span_id()).into(),
    ]
}

fn insert_statement(db: &Db, runs: &[Run]) -> sea_orm::sea_query::InsertStatement {
    let mut q = Query::insert();
    q.into_table(PromptRuns::Table)
        .columns(COLUMNS)
        .on_conflict(OnConflict::column(PromptRuns::Id).do_nothing().to_owned())
        .returning_col(PromptRuns::Id);
    for run in runs {
        q.values_panic(row_values(db, run));
    }
    q
}

/// A run as [`run_select`] reads it: the [`COLUMNS`] and the prompt's name.
#[derive(Debug, FromQueryResult)]
struct RunRow {
    id: Uuid,
    prompt_id: Uuid,
    prompt_name: String,
    version_id: Uuid,
    version: i32,
    input: Value,
    output: Option<Value>,
    status: String,
    error: Option<String>,
    model: Option<String>,
    latency_us: i64,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    cost_nanos: i64,
    metadata: Value,
    tags: Value,
    started_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    label: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

/// A stored label name.
fn label(stored: Option<String>) -> anyhow::Result<Option<LabelName>> {
    stored
        .map(|l| LabelName::new(&l).with_context(|| format!("stored label {l:?}")))
        .transpose()
}

/// A stored JSON object, unescaped (see [`crate::nul`]).
fn object(mut v: Value, what: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    nul::unescape_json(&mut v);
    match v {
        Value::Object(m) => Ok(m),
        other => Err(anyhow!("stored {what} is not an object: {other}")),
    }
}

impl StoredRow for RunRow {
    type Domain = Run;

    fn into_domain(self) -> anyhow::Result<Run> {
        let tags: Vec<String> = serde_json::from_value(self.tags).context("stored tags")?;
        let unsigned = |n: i32| u32::try_from(n).with_context(|| format!("stored negative count {n}"));
        Ok(Run {
            id: self.id,
            prompt_id: self.prompt_id,
            prompt_name: PromptName::new(&self.prompt_name).context("stored prompt name")?,
            version_id: self.version_id,
            version: VersionNumber::new(i64::from(self.version)).context("stored version")?,
            fields: RunFields {
                input: object(self.input, "input")?,
                output: self.output.map(|mut v| {
                    nul::unescape_json(&mut v);
                    v
                }),
                status: RunStatus::parse(&self.status)
                    .with_context(|| format!("stored status {:?}", self.status))?,
                error: self.error.map(|e| nul::unescape_str(&e).into_owned()),
                model: self.model,
                latency: u64::try_from(self.latency_us)
                    .ok()
                    .and_then(|us| Latency::from_micros(us).ok())
                    .with_context(|| format!("stored latency {} µs", self.latency_us))?,
                prompt_tokens: self.prompt_tokens.map(unsigned).transpose()?,
                completion_tokens: self.completion_tokens.map(unsigned).transpose()?,
                cost: Cost::from_nanos(self.cost_nanos).map_err(|e| anyhow!("stored cost: {e}"))?,
                metadata: object(self.metadata, "metadata")?,
                tags: Tags::new(tags).map_err(|e| anyhow!("stored tags: {e:?}"))?,
                started_at: self.started_at,
                label: label(self.label)?,
                trace: match (self.trace_id, self.span_id) {
                    (Some(t), Some(s)) => {
                        Some(TraceLink::parse(&t, &s).with_context(|| format!("stored trace link {t}/{s}"))?)
                    }
                    _ => None,
                },
            },
            created_at: self.created_at,
        })
    }
}

/// One group of the PostgreSQL stats query, its fields named as the SQL
/// names them.
#[derive(Debug, FromQueryResult)]
pub(crate) struct StatsRow {
    version: i32,
    label: Option<String>,
    bucket: Option<OffsetDateTime>,
    count: i64,
    error_count: i64,
    p50: f64,
    p95: f64,
    p99: f64,
    latency_max: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_total: i64,
}

impl StoredRow for StatsRow {
    type Domain = VersionStats;

    fn into_domain(self) -> anyhow::Result<VersionStats> {
        let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(VersionStats {
            version: VersionNumber::new(i64::from(self.version)).context("stored version")?,
            label: label(self.label)?,
            bucket: self.bucket,
            count: unsigned(self.count),
            error_count: unsigned(self.error_count),
            latency_p50: self.p50,
            latency_p95: self.p95,
            latency_p99: self.p99,
            latency_max: self.latency_max,
            prompt_tokens: unsigned(self.prompt_tokens),
            completion_tokens: unsigned(self.completion_tokens),
            cost_total: Cost::from_nanos(self.cost_total).map_err(|e| anyhow!("stored cost total: {e}"))?,
        })
    }
}

/// A run as the in-process stats read it.
#[derive(Debug, FromQueryResult)]
struct SampleRow {
    version: i32,
    label: Option<String>,
    status: String,
    latency_us: i64,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    cost_nanos: i64,
    created_at: OffsetDateTime,
}

/// The columns [`SampleRow`] reads.
const SAMPLE_COLUMNS: [PromptRuns; 8] = [
    PromptRuns::Version,
    PromptRuns::Label,
    PromptRuns::Status,
    PromptRuns::LatencyUs,
    PromptRuns::PromptTokens,
    PromptRuns::CompletionTokens,
    PromptRuns::CostNanos,
    PromptRuns::CreatedAt,
];

impl StoredRow for SampleRow {
    type Domain = StatsSample;

    fn into_domain(self) -> anyhow::Result<StatsSample> {
        let unsigned = |n: Option<i32>| n.map_or(0, |n| u64::try_from(n).unwrap_or(0));
        Ok(StatsSample {
            version: VersionNumber::new(i64::from(self.version)).context("stored version")?,
            label: label(self.label)?,
            error: self.status == RunStatus::Error.as_str(),
            latency_us: u64::try_from(self.latency_us).unwrap_or(0),
            prompt_tokens: unsigned(self.prompt_tokens),
            completion_tokens: unsigned(self.completion_tokens),
            cost_nanos: self.cost_nanos,
            created_at: self.created_at,
        })
    }
}

/// `SELECT r.…, p.name AS prompt_name FROM prompt_runs r JOIN prompts p …`
fn run_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(COLUMNS.map(r))
        .expr_as(Expr::col(p(Prompts::Name)), ColumnAlias::PromptName)
        .from_as(PromptRuns::Table, TableAlias::R)
        .join_as(
            JoinType::InnerJoin,
            Prompts::Table,
            TableAlias::P,
            Expr::col(p(Prompts::Id)).equals(r(PromptRuns::PromptId)),
        );
    q
}

/// `r.prompt_id = (SELECT id FROM prompts WHERE name = ?)`.
fn of_prompt(prompt: &PromptName) -> SimpleExpr {
    crate::prompts::of_prompt(r(PromptRuns::PromptId), prompt)
}

/// PostgreSQL's fast path: one statement whose 20 parameters are arrays,
/// one element per run, unnested into rows. However many runs, the statement
/// text and its plan stay the same, and the server parses one message
/// instead of thousands of bound values.
const UNNEST_INSERT: &str = "INSERT INTO prompt_runs (id, prompt_id, version_id, version, input, output, \
     status, error, model, latency_us, prompt_tokens, completion_tokens, cost_nanos, metadata, tags, \
     started_at, created_at, label, trace_id, span_id) \
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int4[], $5::jsonb[], $6::jsonb[], \
     $7::text[], $8::text[], $9::text[], $10::int8[], $11::int4[], $12::int4[], $13::int8[], $14::jsonb[], \
     $15::jsonb[], $16::timestamptz[], $17::timestamptz[], $18::text[], $19::text[], $20::text[]) \
     ON CONFLICT (id) DO NOTHING RETURNING id";

/// The runs as the [`UNNEST_INSERT`] arrays, column by column.
#[derive(Debug, Default)]
struct Columns {
    id: Vec<Uuid>,
    prompt_id: Vec<Uuid>,
    version_id: Vec<Uuid>,
    version: Vec<i32>,
    input: Vec<Value>,
    output: Vec<Option<Value>>,
    status: Vec<&'static str>,
    error: Vec<Option<String>>,
    model: Vec<Option<String>>,
    latency_us: Vec<i64>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    cost_nanos: Vec<i64>,
    metadata: Vec<Value>,
    tags: Vec<Value>,
    started_at: Vec<Option<OffsetDateTime>>,
    created_at: Vec<OffsetDateTime>,
    label: Vec<Option<String>>,
    trace_id: Vec<Option<String>>,
    span_id: Vec<Option<String>>,
}

impl Columns {
    fn of(runs: &[Run]) -> Self {
        let mut c = Self::default();
        let opt_i32 = |v: Option<u32>| v.and_then(|n| i32::try_from(n).ok());
        let utc = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC);
        for run in runs {
            let f = &run.fields;
            c.id.push(run.id);
            c.prompt_id.push(run.prompt_id);
            c.version_id.push(run.version_id);
            c.version.push(run.version.as_i32());
            c.input.push(escaped(Value::Object(f.input.clone())));
            c.output.push(f.output.clone().map(escaped));
            c.status.push(f.status.as_str());
            c.error
                .push(f.error.as_deref().map(|e| nul::escape_str(e).into_owned()));
            c.model.push(f.model.clone());
            c.latency_us
                .push(i64::try_from(f.latency.micros()).unwrap_or(i64::MAX));
            c.prompt_tokens.push(opt_i32(f.prompt_tokens));
            c.completion_tokens.push(opt_i32(f.completion_tokens));
            c.cost_nanos.push(f.cost.nanos());
            c.metadata.push(escaped(Value::Object(f.metadata.clone())));
            c.tags.push(Value::from(f.tags.as_slice().to_vec()));
            c.started_at.push(f.started_at.map(utc));
            c.created_at.push(utc(run.created_at));
            c.label.push(f.label.as_ref().map(|l| l.as_str().to_owned()));
            c.trace_id.push(f.trace.map(|t| t.trace_id()));
            c.span_id.push(f.trace.map(|t| t.span_id()));
        }
        c
    }
}

fn sqlx_err(err: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(err)))
}

impl SeaOrmRunRepository {
    /// Every run in one statement on PostgreSQL (atomic by itself), else in
    /// multi-row INSERTs within one transaction.
    async fn insert_all(&self, runs: &[Run]) -> Result<Vec<Uuid>, DbErr> {
        if self.db.backend() == DbBackend::Postgres {
            return self.insert_unnest(runs).await;
        }
        use sea_orm::TransactionTrait;
        let txn = self.db.conn().begin().await?;
        let mut inserted = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(ROWS_PER_STATEMENT) {
            for row in txn.query_all(&insert_statement(&self.db, chunk)).await? {
                inserted.push(get::<Uuid>(&row, PromptRuns::Id)?);
            }
        }
        crate::rollups::forget_prompts(
            &txn,
            &crate::rollups::late_prompts(runs, registry_domain::time::now_utc()),
        )
        .await?;
        txn.commit().await?;
        Ok(inserted)
    }

    async fn insert_unnest(&self, runs: &[Run]) -> Result<Vec<Uuid>, DbErr> {
        use sea_orm::sqlx::Row as _;
        // Whatever stops a connection being had (refused, a handshake cut
        // short, the pool exhausted) means the database is unavailable, as
        // it does on every other path.
        let mut conn = self
            .db
            .conn()
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(e))))?;
        let late = crate::rollups::late_prompts(runs, registry_domain::time::now_utc());
        if !late.is_empty() {
            // Rare (runs held through an outage): the kept figures of their
            // prompts are forgotten in the same transaction.
            drop(conn);
            use sea_orm::TransactionTrait;
            let txn = self.db.conn().begin().await?;
            let mut inserted = Vec::with_capacity(runs.len());
            for chunk in runs.chunks(ROWS_PER_STATEMENT) {
                for row in txn.query_all(&insert_statement(&self.db, chunk)).await? {
                    inserted.push(get::<Uuid>(&row, PromptRuns::Id)?);
                }
            }
            crate::rollups::forget_prompts(&txn, &late).await?;
            txn.commit().await?;
            return Ok(inserted);
        }
        let c = Columns::of(runs);
        let rows = sea_orm::sqlx::query(UNNEST_INSERT)
            .bind(c.id)
            .bind(c.prompt_id)
            .bind(c.version_id)
            .bind(c.version)
            .bind(c.input)
            .bind(c.output)
            .bind(c.status)
            .bind(c.error)
            .bind(c.model)
            .bind(c.latency_us)
            .bind(c.prompt_tokens)
            .bind(c.completion_tokens)
            .bind(c.cost_nanos)
            .bind(c.metadata)
            .bind(c.tags)
            .bind(c.started_at)
            .bind(c.created_at)
            .bind(c.label)
            .bind(c.trace_id)
            .bind(c.span_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(sqlx_err)?;
        rows.iter()
            .map(|row| row.try_get::<Uuid, _>(0).map_err(sqlx_err))
            .collect()
    }

    /// Stats computed from the runs alone.
    async fn live_stats(
        &self,
        prompt: &PromptName,
        query: &StatsQuery,
    ) -> Result<Vec<VersionStats>, RunError> {
        match self.db.backend() {
            DbBackend::Postgres => self.stats_postgres(prompt, query).await,
            _ => self.stats_in_process(prompt, query).await,
        }
    }

    async fn stats_postgres(
        &self,
        prompt: &PromptName,
        query: &StatsQuery,
    ) -> Result<Vec<VersionStats>, RunError> {
        let bucket = match query.bucket {
            Bucket::Hour => "date_trunc('hour', r.created_at, 'UTC')",
            Bucket::Day => "date_trunc('day', r.created_at, 'UTC')",
            Bucket::None => "NULL::timestamptz",
        };
        let mut values: Vec<SqlValue> = vec![prompt.as_str().into()];
        let mut conditions = String::new();
        let mut push = |cond: &str, value: SqlValue, values: &mut Vec<SqlValue>| {
            values.push(value);
            conditions.push_str(&format!(" AND {cond} ${}", values.len()));
        };
        if let Some(from) = query.from {
            push(
                "r.created_at >=",
                from.to_offset(UtcOffset::UTC).into(),
                &mut values,
            );
        }
        if let Some(to) = query.to {
            push("r.created_at <", to.to_offset(UtcOffset::UTC).into(), &mut values);
        }
        if let Some(version) = query.version {
            push("r.version =", version.as_i32().into(), &mut values);
        }
        if let Some(label) = query.label {
            push("r.label =", label.as_str().into(), &mut values);
        }
        // Without the label grouping every row's label is NULL.
        let label = if query.by_label { "r.label" } else { "NULL::text" };
        let sql = format!(
            "SELECT r.version, {label} AS label, {bucket} AS bucket, count(*) AS count, \
             count(*) FILTER (WHERE r.status = 'error') AS error_count, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_us) / 1000 AS p50, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_us) / 1000 AS p95, \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY r.latency_us) / 1000 AS p99, \
             max(r.latency_us)::float8 / 1000 AS latency_max, \
             COALESCE(sum(r.prompt_tokens), 0)::bigint AS prompt_tokens, \
             COALESCE(sum(r.completion_tokens), 0)::bigint AS completion_tokens, \
             COALESCE(sum(r.cost_nanos), 0)::bigint AS cost_total \
             FROM prompt_runs r \
             WHERE r.prompt_id = (SELECT id FROM prompts WHERE name = $1){conditions} \
             GROUP BY r.version, 2, bucket ORDER BY r.version, 2 NULLS FIRST, bucket"
        );
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await
            .map_err(db_error)?;
        decode::<StatsRow, _>(&rows, db_error)
    }

    /// SQLite has no percentile aggregate: the matching rows are read and
    /// summed up by the domain's [`aggregate`], which shares the definitions.
    async fn stats_in_process(
        &self,
        prompt: &PromptName,
        query: &StatsQuery,
    ) -> Result<Vec<VersionStats>, RunError> {
        let mut q = Query::select();
        q.columns(SAMPLE_COLUMNS.map(r))
            .from_as(PromptRuns::Table, TableAlias::R)
            .and_where(of_prompt(prompt));
        if let Some(from) = query.from {
            q.and_where(Expr::col(r(PromptRuns::CreatedAt)).gte(self.db.time(from)));
        }
        if let Some(to) = query.to {
            q.and_where(Expr::col(r(PromptRuns::CreatedAt)).lt(self.db.time(to)));
        }
        if let Some(version) = query.version {
            q.and_where(Expr::col(r(PromptRuns::Version)).eq(version.as_i32()));
        }
        if let Some(label) = query.label {
            q.and_where(Expr::col(r(PromptRuns::Label)).eq(label.as_str()));
        }
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let samples = decode::<SampleRow, _>(&rows, db_error)?;
        aggregate(samples, query.bucket, query.by_label).map_err(RunError::Unknown)
    }
}

#[async_trait]
impl RunRepository for SeaOrmRunRepository {
    async fn insert(&self, run: &Run) -> Result<Logged, RunError> {
        let stmt = insert_statement(&self.db, std::slice::from_ref(run));
        let late = crate::rollups::late_prompts(std::slice::from_ref(run), registry_domain::time::now_utc());
        let inserted = self
            .db
            .write(|| async {
                if late.is_empty() {
                    return self.db.conn().query_all(&stmt).await;
                }
                use sea_orm::TransactionTrait;
                let txn = self.db.conn().begin().await?;
                let rows = txn.query_all(&stmt).await?;
                crate::rollups::forget_prompts(&txn, &late).await?;
                txn.commit().await?;
                Ok(rows)
            })
            .await
            .map_err(db_error)?;
        if inserted.is_empty() {
            Ok(Logged::Existing(self.find(run.id).await?))
        } else {
            Ok(Logged::Created(run.clone()))
        }
    }

    async fn insert_batch(&self, runs: &[Run]) -> Result<Vec<Uuid>, RunError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let inserted = self.db.write(|| self.insert_all(runs)).await.map_err(db_error)?;
        if inserted.len() == runs.len() {
            return Ok(Vec::new());
        }
        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        Ok(runs
            .iter()
            .map(|r| r.id)
            .filter(|id| !inserted.contains(id))
            .collect())
    }

    async fn find(&self, id: Uuid) -> Result<Run, RunError> {
        let q = run_select()
            .and_where(Expr::col(r(PromptRuns::Id)).eq(id))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or(RunError::NotFound(id))?;
        decode_one::<RunRow, _>(&row, db_error)
    }

    async fn list(
        &self,
        filter: &RunFilter,
        sort: RunSort,
        page: &PageRequest<RunCursor>,
    ) -> Result<Page<Run, RunCursor>, RunError> {
        let mut q = run_select();
        if let Some(prompt) = &filter.prompt {
            q.and_where(of_prompt(prompt));
        }
        if let Some(version) = filter.version {
            q.and_where(Expr::col(r(PromptRuns::Version)).eq(version.as_i32()));
        }
        if let Some(label) = filter.label {
            q.and_where(Expr::col(r(PromptRuns::Label)).eq(label.as_str()));
        }
        if let Some(status) = filter.status {
            q.and_where(Expr::col(r(PromptRuns::Status)).eq(status.as_str()));
        }
        if let Some(model) = &filter.model {
            q.and_where(Expr::col(r(PromptRuns::Model)).eq(model.as_str()));
        }
        if let Some(from) = filter.from {
            q.and_where(Expr::col(r(PromptRuns::CreatedAt)).gte(self.db.time(from)));
        }
        if let Some(to) = filter.to {
            q.and_where(Expr::col(r(PromptRuns::CreatedAt)).lt(self.db.time(to)));
        }
        let column = match sort.field {
            SortField::CreatedAt => r(PromptRuns::CreatedAt),
            SortField::LatencyMs => r(PromptRuns::LatencyUs),
            SortField::Cost => r(PromptRuns::CostNanos),
        };
        if let Some(after) = page.after {
            let key: SqlValue = match sort.field {
                // The domain refuses a cursor whose key no run can have.
                SortField::CreatedAt => self.db.time(
                    after
                        .time()
                        .ok_or_else(|| RunError::Unknown(anyhow!("cursor time out of range")))?,
                ),
                SortField::LatencyMs => after.key.into(),
                SortField::Cost => after.key.into(),
            };
            // A row-value comparison, not an OR of two conditions: PostgreSQL
            // turns it into an index bound and starts the scan at the cursor.
            let position = Expr::tuple([Expr::col(column), Expr::col(r(PromptRuns::Id))]);
            let cursor = Expr::tuple([Expr::val(key), Expr::val(after.id)]);
            q.and_where(if sort.descending {
                position.lt(cursor)
            } else {
                position.gt(cursor)
            });
        }
        let order = if sort.descending { Order::Desc } else { Order::Asc };
        q.order_by(column, order.clone())
            .order_by(r(PromptRuns::Id), order)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let runs = decode::<RunRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(runs, page.limit, |run| RunCursor {
            sort,
            key: sort.key(run),
            id: run.id,
        }))
    }

    async fn stats(&self, prompt: &PromptName, query: &StatsQuery) -> Result<Vec<VersionStats>, RunError> {
        let now = registry_domain::time::now_utc();
        let plan = match crate::rollups::prompt_id(&self.db, prompt)
            .await
            .map_err(db_error)?
        {
            Some(id) => crate::rollups::Plan::of(query, id, now),
            None => None,
        };
        let Some(plan) = plan else {
            return self.live_stats(prompt, query).await;
        };
        // The closed buckets from what is kept (those not kept yet are
        // computed and kept now), the open ones from the runs.
        let (kept, mut rows) = crate::rollups::read(&self.db, &plan).await?;
        if kept < plan.len() {
            let seen = crate::rollups::epoch(&self.db).await.map_err(db_error)?;
            let closed = StatsQuery {
                from: Some(plan.start(kept)),
                to: Some(plan.sealed_end),
                ..query.clone()
            };
            let computed = self.live_stats(prompt, &closed).await?;
            let rest = plan.skipping(kept);
            if let Err(e) = crate::rollups::keep(&self.db, &rest, &computed, seen).await {
                tracing::warn!(error = %e, "could not keep the figures of closed stats buckets");
            }
            rows.extend(computed);
        }
        let open = StatsQuery {
            from: Some(plan.sealed_end),
            ..query.clone()
        };
        rows.extend(self.live_stats(prompt, &open).await?);
        rows.sort_by(|a, b| {
            (a.version, a.label.map(|l| l.as_str().to_owned()), a.bucket).cmp(&(
                b.version,
                b.label.map(|l| l.as_str().to_owned()),
                b.bucket,
            ))
        });
        Ok(rows)
    }
}

/// A month's partition name, parsed back: `prompt_runs_p2026_11` is
/// `(2026, 11)`.
fn partition_month(name: &str) -> Option<(i32, u8)> {
    let (year, month) = name.strip_prefix("prompt_runs_p")?.split_once('_')?;
    Some((year.parse().ok()?, month.parse().ok()?))
}

/// The first instant of `month` of `year`, UTC.
fn month_start(year: i32, month: u8) -> Option<OffsetDateTime> {
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, 1).ok()?;
    Some(date.midnight().assume_utc())
}

impl SeaOrmRunRepository {
    async fn execute(&self, sql: &str, values: Vec<SqlValue>) -> Result<u64, RunError> {
        self.db
            .conn()
            .execute_raw(Statement::from_sql_and_values(self.db.backend(), sql, values))
            .await
            .map(|r| r.rows_affected())
            .map_err(db_error)
    }
}

#[async_trait]
impl RunRetention for SeaOrmRunRepository {
    /// On PostgreSQL, the partitions of `now`'s month and the
    /// [`MONTHS_AHEAD`] after it. Another replica creating the same one at the
    /// same moment is not an error.
    async fn prepare(&self, now: OffsetDateTime) -> Result<(), RunError> {
        if self.db.backend() != DbBackend::Postgres {
            return Ok(());
        }
        let now = now.to_offset(UtcOffset::UTC);
        let mut month = (now.year(), u8::from(now.month()));
        for _ in 0..=MONTHS_AHEAD {
            match self
                .execute(&create_partition_sql(month.0, month.1), Vec::new())
                .await
            {
                Ok(_) => {}
                // 42P07 duplicate_table, 23505 unique_violation: created
                // concurrently by another replica.
                Err(RunError::Unknown(e))
                    if e.chain().any(|c| {
                        let text = c.to_string();
                        text.contains("42P07") || text.contains("already exists") || text.contains("23505")
                    }) => {}
                Err(e) => return Err(e),
            }
            month = next_month(month.0, month.1);
        }
        Ok(())
    }

    /// On PostgreSQL, the monthly partitions whose whole id range lies before
    /// the cutoff's month and whose newest run is older than the cutoff.
    async fn drop_expired(&self, cutoff: OffsetDateTime) -> Result<u64, RunError> {
        if self.db.backend() != DbBackend::Postgres {
            return Ok(0);
        }
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'prompt_runs'",
            ))
            .await
            .map_err(db_error)?;
        let mut dropped = 0;
        for row in rows {
            let name: String = row.try_get("", "name").map_err(db_error)?;
            let Some((year, month)) = partition_month(&name) else {
                continue;
            };
            let (ny, nm) = next_month(year, month);
            if month_start(ny, nm).is_none_or(|end| end > cutoff) {
                continue;
            }
            // Ids say when a run was made, created_at when it was stored: a
            // run exported late keeps its partition until it expires too.
            let newest = self
                .db
                .conn()
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT max(created_at) AS newest FROM {name}"),
                ))
                .await
                .map_err(db_error)?
                .map(|r| r.try_get::<Option<OffsetDateTime>>("", "newest"))
                .transpose()
                .map_err(db_error)?
                .flatten();
            if newest.is_none_or(|t| t < cutoff) {
                self.execute(&format!("DROP TABLE IF EXISTS {name}"), Vec::new())
                    .await?;
                tracing::info!(partition = %name, "dropped a partition of expired runs");
                dropped += 1;
            }
        }
        if dropped > 0 {
            crate::rollups::forget_before(&self.db, cutoff)
                .await
                .map_err(db_error)?;
        }
        Ok(dropped)
    }

    async fn delete_expired(&self, cutoff: OffsetDateTime, limit: u32) -> Result<u64, RunError> {
        let sql = match self.db.backend() {
            DbBackend::Postgres => {
                "DELETE FROM prompt_runs WHERE id IN \
                 (SELECT id FROM prompt_runs WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
            }
            _ => {
                "DELETE FROM prompt_runs WHERE id IN \
                 (SELECT id FROM prompt_runs WHERE created_at < ? ORDER BY created_at LIMIT ?)"
            }
        };
        let deleted = self
            .execute(sql, vec![self.db.time(cutoff), i64::from(limit).into()])
            .await?;
        if deleted > 0 {
            crate::rollups::forget_before(&self.db, cutoff)
                .await
                .map_err(db_error)?;
        }
        Ok(deleted)
    }
}
