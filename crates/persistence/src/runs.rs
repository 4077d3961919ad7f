//! The run repository on SeaORM.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use registry_domain::page::{Page, PageRequest};
use registry_domain::prompt::{PromptName, Tags, VersionNumber};
use registry_domain::run::ports::{Logged, RunError, RunRepository};
use registry_domain::run::stats::{Bucket, StatsQuery, VersionStats, percentile_cont};
use registry_domain::run::{
    Cost, Latency, Run, RunCursor, RunFields, RunFilter, RunSort, RunStatus, SortField,
};
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, JoinType, OnConflict, Order, Query, SelectStatement, SimpleExpr,
};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, Statement, Value as SqlValue,
};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::db::Db;
use crate::nul;

/// Rows per INSERT statement: 17 parameters a row stays well under the
/// parameter limits of both backends.
const ROWS_PER_STATEMENT: usize = 1_000;

fn iden(s: &'static str) -> Alias {
    Alias::new(s)
}

fn r(col: &'static str) -> (Alias, Alias) {
    (iden("r"), iden(col))
}

const COLUMNS: [&str; 17] = [
    "id",
    "prompt_id",
    "version_id",
    "version",
    "input",
    "output",
    "status",
    "error",
    "model",
    "latency_us",
    "prompt_tokens",
    "completion_tokens",
    "cost_nanos",
    "metadata",
    "tags",
    "started_at",
    "created_at",
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

fn db_error(err: DbErr) -> RunError {
    crate::db::classify(err, RunError::Unavailable, RunError::Unknown)
}

/// A copy of `value` with U+0000 escaped (see [`crate::nul`]).
fn escaped(value: Value) -> Value {
    let mut value = value;
    nul::escape_json(&mut value);
    value
}

fn row_values(db: &Db, run: &Run) -> [SimpleExpr; 17] {
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
    ]
}

fn insert_statement(db: &Db, runs: &[Run]) -> sea_orm::sea_query::InsertStatement {
    let mut q = Query::insert();
    q.into_table(iden("prompt_runs"))
        .columns(COLUMNS.map(iden))
        .on_conflict(OnConflict::column(iden("id")).do_nothing().to_owned())
        .returning_col(iden("id"));
    for run in runs {
        q.values_panic(row_values(db, run));
    }
    q
}

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
}

/// A stored JSON object, unescaped (see [`crate::nul`]).
fn object(mut v: Value, what: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    nul::unescape_json(&mut v);
    match v {
        Value::Object(m) => Ok(m),
        other => Err(anyhow!("stored {what} is not an object: {other}")),
    }
}

impl RunRow {
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
            },
            created_at: self.created_at,
        })
    }
}

fn runs_from(rows: &[QueryResult]) -> Result<Vec<Run>, RunError> {
    rows.iter()
        .map(|row| {
            RunRow::from_query_result(row, "")
                .map_err(db_error)?
                .into_domain()
                .map_err(RunError::Unknown)
        })
        .collect()
}

fn run_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(COLUMNS.map(r))
        .expr_as(Expr::col((iden("p"), iden("name"))), iden("prompt_name"))
        .from_as(iden("prompt_runs"), iden("r"))
        .join_as(
            JoinType::InnerJoin,
            iden("prompts"),
            iden("p"),
            Expr::col((iden("p"), iden("id"))).equals(r("prompt_id")),
        );
    q
}

/// `r.prompt_id = (SELECT id FROM prompts WHERE name = ?)`: a scalar
/// subquery rather than a join, so that PostgreSQL knows the prompt id when it
/// plans and can walk the `(prompt_id, …)` indexes in order (see docs/runs.md).
fn of_prompt(prompt: &PromptName) -> SimpleExpr {
    let id = Query::select()
        .column(iden("id"))
        .from(iden("prompts"))
        .and_where(Expr::col(iden("name")).eq(prompt.as_str()))
        .to_owned();
    Expr::col(r("prompt_id")).eq(SimpleExpr::SubQuery(None, Box::new(id.into())))
}

impl SeaOrmRunRepository {
    async fn insert_all(&self, runs: &[Run]) -> Result<Vec<Uuid>, DbErr> {
        use sea_orm::TransactionTrait;
        let txn = self.db.conn().begin().await?;
        let mut inserted = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(ROWS_PER_STATEMENT) {
            for row in txn.query_all(&insert_statement(&self.db, chunk)).await? {
                inserted.push(row.try_get::<Uuid>("", "id")?);
            }
        }
        txn.commit().await?;
        Ok(inserted)
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
        let sql = format!(
            "SELECT r.version, {bucket} AS bucket, count(*) AS count, \
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
             GROUP BY r.version, bucket ORDER BY r.version, bucket"
        );
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| -> Result<VersionStats, DbErr> {
                let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok(VersionStats {
                    version: VersionNumber::new(i64::from(row.try_get::<i32>("", "version")?))
                        .map_err(|e| DbErr::Custom(e.to_string()))?,
                    bucket: row.try_get("", "bucket")?,
                    count: unsigned(row.try_get("", "count")?),
                    error_count: unsigned(row.try_get("", "error_count")?),
                    latency_p50: row.try_get("", "p50")?,
                    latency_p95: row.try_get("", "p95")?,
                    latency_p99: row.try_get("", "p99")?,
                    latency_max: row.try_get("", "latency_max")?,
                    prompt_tokens: unsigned(row.try_get("", "prompt_tokens")?),
                    completion_tokens: unsigned(row.try_get("", "completion_tokens")?),
                    cost_total: Cost::from_nanos(row.try_get("", "cost_total")?)
                        .map_err(|e| DbErr::Custom(e.to_string()))?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    /// SQLite has no percentile aggregate: the matching rows are read in
    /// latency order and aggregated here with the same definition.
    async fn stats_in_process(
        &self,
        prompt: &PromptName,
        query: &StatsQuery,
    ) -> Result<Vec<VersionStats>, RunError> {
        let mut q = Query::select();
        q.columns([
            r("version"),
            r("status"),
            r("latency_us"),
            r("prompt_tokens"),
            r("completion_tokens"),
            r("cost_nanos"),
            r("created_at"),
        ])
        .from_as(iden("prompt_runs"), iden("r"))
        .join_as(
            JoinType::InnerJoin,
            iden("prompts"),
            iden("p"),
            Expr::col((iden("p"), iden("id"))).equals(r("prompt_id")),
        )
        .and_where(Expr::col((iden("p"), iden("name"))).eq(prompt.as_str()))
        .order_by(r("latency_us"), Order::Asc);
        if let Some(from) = query.from {
            q.and_where(Expr::col(r("created_at")).gte(self.db.time(from)));
        }
        if let Some(to) = query.to {
            q.and_where(Expr::col(r("created_at")).lt(self.db.time(to)));
        }
        if let Some(version) = query.version {
            q.and_where(Expr::col(r("version")).eq(version.as_i32()));
        }
        #[derive(Default)]
        struct Acc {
            latencies: Vec<u64>,
            errors: u64,
            prompt_tokens: u64,
            completion_tokens: u64,
            cost: i64,
        }
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let mut groups: BTreeMap<(i32, Option<OffsetDateTime>), Acc> = BTreeMap::new();
        for row in &rows {
            let get = || -> Result<_, DbErr> {
                Ok((
                    row.try_get::<i32>("", "version")?,
                    row.try_get::<String>("", "status")?,
                    row.try_get::<i64>("", "latency_us")?,
                    row.try_get::<Option<i32>>("", "prompt_tokens")?,
                    row.try_get::<Option<i32>>("", "completion_tokens")?,
                    row.try_get::<i64>("", "cost_nanos")?,
                    row.try_get::<OffsetDateTime>("", "created_at")?,
                ))
            };
            let (version, status, latency, pt, ct, cost, created_at) = get().map_err(db_error)?;
            let acc = groups
                .entry((version, query.bucket.start(created_at)))
                .or_default();
            let unsigned = |n: i32| u64::try_from(n).unwrap_or(0);
            acc.latencies.push(u64::try_from(latency).unwrap_or(0));
            acc.errors += u64::from(status == RunStatus::Error.as_str());
            acc.prompt_tokens += pt.map_or(0, unsigned);
            acc.completion_tokens += ct.map_or(0, unsigned);
            acc.cost = acc
                .cost
                .checked_add(cost)
                .ok_or_else(|| RunError::Unknown(anyhow!("cost total overflows")))?;
        }
        groups
            .into_iter()
            .map(|((version, bucket), acc)| {
                Ok(VersionStats {
                    version: VersionNumber::new(i64::from(version))
                        .map_err(|e| RunError::Unknown(anyhow!("{e}")))?,
                    bucket,
                    count: acc.latencies.len() as u64,
                    error_count: acc.errors,
                    latency_p50: percentile_cont(&acc.latencies, 0.5) / 1000.0,
                    latency_p95: percentile_cont(&acc.latencies, 0.95) / 1000.0,
                    latency_p99: percentile_cont(&acc.latencies, 0.99) / 1000.0,
                    latency_max: percentile_cont(&acc.latencies, 1.0) / 1000.0,
                    prompt_tokens: acc.prompt_tokens,
                    completion_tokens: acc.completion_tokens,
                    cost_total: Cost::from_nanos(acc.cost).map_err(|e| RunError::Unknown(anyhow!("{e}")))?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl RunRepository for SeaOrmRunRepository {
    async fn insert(&self, run: &Run) -> Result<Logged, RunError> {
        let stmt = insert_statement(&self.db, std::slice::from_ref(run));
        let inserted = self
            .db
            .write(|| async { self.db.conn().query_all(&stmt).await })
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
        let q = run_select().and_where(Expr::col(r("id")).eq(id)).to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or(RunError::NotFound(id))?;
        Ok(runs_from(&[row])?.remove(0))
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
            q.and_where(Expr::col(r("version")).eq(version.as_i32()));
        }
        if let Some(status) = filter.status {
            q.and_where(Expr::col(r("status")).eq(status.as_str()));
        }
        if let Some(model) = &filter.model {
            q.and_where(Expr::col(r("model")).eq(model.as_str()));
        }
        if let Some(from) = filter.from {
            q.and_where(Expr::col(r("created_at")).gte(self.db.time(from)));
        }
        if let Some(to) = filter.to {
            q.and_where(Expr::col(r("created_at")).lt(self.db.time(to)));
        }
        let column = match sort.field {
            SortField::CreatedAt => r("created_at"),
            SortField::LatencyMs => r("latency_us"),
            SortField::Cost => r("cost_nanos"),
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
            let position = Expr::tuple([Expr::col(column.clone()), Expr::col(r("id"))]);
            let cursor = Expr::tuple([Expr::val(key), Expr::val(after.id)]);
            q.and_where(if sort.descending {
                position.lt(cursor)
            } else {
                position.gt(cursor)
            });
        }
        let order = if sort.descending { Order::Desc } else { Order::Asc };
        q.order_by(column, order.clone())
            .order_by(r("id"), order)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let runs = runs_from(&rows)?;
        Ok(Page::from_overfetch(runs, page.limit, |run| RunCursor {
            sort,
            key: sort.key(run),
            id: run.id,
        }))
    }

    async fn stats(&self, prompt: &PromptName, query: &StatsQuery) -> Result<Vec<VersionStats>, RunError> {
        match self.db.backend() {
            DbBackend::Postgres => self.stats_postgres(prompt, query).await,
            _ => self.stats_in_process(prompt, query).await,
        }
    }
}
