//! Stats of closed buckets, computed once and kept.
//!
//! A stats request by hour or day from the start of a bucket reads the
//! figures of the buckets that closed more than [`SETTLE`] ago from
//! `run_stats_rollups` (computing and keeping them the first time) and
//! computes only the rest from the runs. The figures kept are those the
//! stats query gives, so the answer is the same either way.
//!
//! A closed bucket's runs change only when a run is logged late into it
//! (its `created_at` is when it was accepted, and the asynchronous queue
//! holds runs through a database outage) or expired runs are deleted. Each
//! such change, in its own transaction, raises `run_stats_epoch` and drops
//! the markers of the buckets it may touch. Figures are kept only under a
//! lock on that counter and only if it has not moved since before they were
//! read from the runs: so a change either is in the figures, or stops them
//! being kept, or comes after and drops them.

use std::time::Duration;

use registry_domain::prompt::PromptName;
use registry_domain::run::Run;
use registry_domain::run::ports::RunError;
use registry_domain::run::stats::{Bucket, StatsQuery, VersionStats};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, TransactionTrait};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Db;

/// How long after it ends a bucket's figures may be kept.
pub(crate) const SETTLE: Duration = Duration::from_secs(600);
/// A run accepted this long before it is stored counts as late: it may
/// belong to a bucket whose figures are kept. Less than [`SETTLE`], so clocks
/// of replicas may differ by the difference.
pub(crate) const LATE: Duration = Duration::from_secs(300);
/// Longer ranges are computed from the runs each time.
const MAX_BUCKETS: usize = 24 * 100;

fn kind(bucket: Bucket) -> Option<&'static str> {
    match bucket {
        Bucket::Hour => Some("hour"),
        Bucket::Day => Some("day"),
        Bucket::None => None,
    }
}

fn step(bucket: Bucket) -> time::Duration {
    match bucket {
        Bucket::Day => time::Duration::DAY,
        _ => time::Duration::HOUR,
    }
}

/// The prompts of the late runs among `runs`.
pub(crate) fn late_prompts(runs: &[Run], now: OffsetDateTime) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = runs
        .iter()
        .filter(|r| r.created_at < now - LATE)
        .map(|r| r.prompt_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

const BUMP: &str = "UPDATE run_stats_epoch SET epoch = epoch + 1 WHERE id = 1";

/// Within a transaction that stores late runs: forget the kept figures of
/// their prompts.
pub(crate) async fn forget_prompts<C: ConnectionTrait>(conn: &C, prompts: &[Uuid]) -> Result<(), DbErr> {
    if prompts.is_empty() {
        return Ok(());
    }
    conn.execute_unprepared(BUMP).await?;
    let q = Query::delete()
        .from_table(Alias::new("run_stats_sealed"))
        .and_where(Expr::col(Alias::new("prompt_id")).is_in(prompts.iter().copied()))
        .to_owned();
    conn.execute(&q).await?;
    Ok(())
}

/// After expired runs were deleted: forget the kept figures of every
/// bucket that began before `cutoff`.
pub(crate) async fn forget_before(db: &Db, cutoff: OffsetDateTime) -> Result<(), DbErr> {
    let q = Query::delete()
        .from_table(Alias::new("run_stats_sealed"))
        .and_where(Expr::col(Alias::new("bucket_start")).lt(db.time(cutoff)))
        .to_owned();
    db.write(|| async {
        let txn = db.conn().begin().await?;
        txn.execute_unprepared(BUMP).await?;
        txn.execute(&q).await?;
        txn.commit().await
    })
    .await
}

#[derive(Debug, FromQueryResult)]
struct Epoch {
    epoch: i64,
}

/// Which kept figures a request can use: the prompt, the bucket kind and
/// grouping, and the closed buckets' starts.
#[derive(Debug)]
pub(crate) struct Plan {
    prompt_id: Uuid,
    kind: &'static str,
    by_label: bool,
    starts: Vec<OffsetDateTime>,
    /// Where the closed buckets end and the live part begins.
    pub(crate) sealed_end: OffsetDateTime,
}

impl Plan {
    /// The plan for `query`, or `None` when it must be computed from the
    /// runs alone: no bucket, a filter, an end, a start inside a bucket, no
    /// closed bucket in range, or a range too long.
    pub(crate) fn of(query: &StatsQuery, prompt_id: Uuid, now: OffsetDateTime) -> Option<Self> {
        let kind = kind(query.bucket)?;
        if query.version.is_some() || query.label.is_some() || query.to.is_some() {
            return None;
        }
        let from = query.from?;
        if query.bucket.start(from) != Some(from) {
            return None;
        }
        let sealed_end = query.bucket.start(now - SETTLE)?;
        let mut starts = Vec::new();
        let mut t = from;
        while t < sealed_end {
            starts.push(t);
            t += step(query.bucket);
            if starts.len() > MAX_BUCKETS {
                return None;
            }
        }
        (!starts.is_empty()).then_some(Self {
            prompt_id,
            kind,
            by_label: query.by_label,
            starts,
            sealed_end,
        })
    }

    fn range(&self) -> (OffsetDateTime, OffsetDateTime) {
        (self.starts[0], self.sealed_end)
    }

    /// The plan without its first `k` buckets.
    pub(crate) fn skipping(&self, k: usize) -> Self {
        Self {
            prompt_id: self.prompt_id,
            kind: self.kind,
            by_label: self.by_label,
            starts: self.starts[k..].to_vec(),
            sealed_end: self.sealed_end,
        }
    }

    pub(crate) fn start(&self, k: usize) -> OffsetDateTime {
        self.starts.get(k).copied().unwrap_or(self.sealed_end)
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }
}

#[derive(Debug, FromQueryResult)]
struct Sealed {
    bucket_start: OffsetDateTime,
}

/// The rows of `plan`'s closed buckets, in either table.
fn in_range(plan: &Plan, db: &Db) -> [Expr; 5] {
    let (from, end) = plan.range();
    [
        Expr::col(Alias::new("prompt_id")).eq(plan.prompt_id),
        Expr::col(Alias::new("kind")).eq(plan.kind),
        Expr::col(Alias::new("by_label")).eq(plan.by_label),
        Expr::col(Alias::new("bucket_start")).gte(db.time(from)),
        Expr::col(Alias::new("bucket_start")).lt(db.time(end)),
    ]
}

fn select_in_range(table: &str, plan: &Plan, db: &Db) -> sea_orm::sea_query::SelectStatement {
    let mut q = Query::select().from(Alias::new(table)).to_owned();
    for cond in in_range(plan, db) {
        q.and_where(cond);
    }
    q
}

/// How many of `plan`'s buckets, from the first, have their figures kept,
/// and those figures. Buckets close one after the other, so the ones not
/// kept yet are usually the newest.
pub(crate) async fn read(db: &Db, plan: &Plan) -> Result<(usize, Vec<VersionStats>), RunError> {
    use crate::runs::db_error;
    let q = select_in_range("run_stats_sealed", plan, db)
        .column(Alias::new("bucket_start"))
        .order_by(Alias::new("bucket_start"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    let mut kept = 0;
    for (row, start) in db
        .conn()
        .query_all(&q)
        .await
        .map_err(db_error)?
        .iter()
        .zip(&plan.starts)
    {
        if Sealed::from_query_result(row, "").map_err(db_error)?.bucket_start != *start {
            break;
        }
        kept += 1;
    }
    if kept == 0 {
        return Ok((0, Vec::new()));
    }
    let mut q = select_in_range("run_stats_rollups", plan, db);
    q.and_where(Expr::col(Alias::new("bucket_start")).lt(db.time(plan.start(kept))));
    let q = q
        .column(Alias::new("version"))
        .column(Alias::new("label"))
        .expr_as(Expr::col(Alias::new("bucket_start")), Alias::new("bucket"))
        .columns(
            [
                "count",
                "error_count",
                "p50",
                "p95",
                "p99",
                "latency_max",
                "prompt_tokens",
                "completion_tokens",
                "cost_total",
            ]
            .map(Alias::new),
        )
        .to_owned();
    let rows = db.conn().query_all(&q).await.map_err(db_error)?;
    // The same rows as the stats query's, read back the same way.
    let found = crate::schema::decode::<crate::runs::StatsRow, _>(&rows, db_error)?;
    Ok((kept, found))
}

/// The counter as it is now, read before the figures to keep are computed.
pub(crate) async fn epoch(db: &Db) -> Result<i64, DbErr> {
    let row = db
        .conn()
        .query_one_raw(Statement::from_string(
            db.backend(),
            "SELECT epoch FROM run_stats_epoch WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("run_stats_epoch".into()))?;
    Ok(Epoch::from_query_result(&row, "")?.epoch)
}

/// Keeps `rows`, the figures of the closed buckets of `plan` computed from
/// the runs after the counter read `seen`, unless the counter has moved
/// since. Returns whether they were kept.
pub(crate) async fn keep(db: &Db, plan: &Plan, rows: &[VersionStats], seen: i64) -> Result<bool, DbErr> {
    let lock = match db.backend() {
        DbBackend::Postgres => "SELECT epoch FROM run_stats_epoch WHERE id = 1 FOR UPDATE",
        // The database's one writer is held for the whole transaction.
        _ => "SELECT epoch FROM run_stats_epoch WHERE id = 1",
    };
    db.write(|| async {
        let txn = db.conn().begin().await?;
        let row = txn
            .query_one_raw(Statement::from_string(db.backend(), lock))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("run_stats_epoch".into()))?;
        if Epoch::from_query_result(&row, "")?.epoch != seen {
            txn.rollback().await?;
            return Ok(false);
        }
        for table in ["run_stats_rollups", "run_stats_sealed"] {
            let mut delete = Query::delete().from_table(Alias::new(table)).to_owned();
            for cond in in_range(plan, db) {
                delete.and_where(cond);
            }
            txn.execute(&delete).await?;
        }
        for chunk in rows.chunks(500) {
            let mut q = Query::insert()
                .into_table(Alias::new("run_stats_rollups"))
                .columns(
                    [
                        "prompt_id",
                        "kind",
                        "by_label",
                        "bucket_start",
                        "version",
                        "label",
                        "count",
                        "error_count",
                        "p50",
                        "p95",
                        "p99",
                        "latency_max",
                        "prompt_tokens",
                        "completion_tokens",
                        "cost_total",
                    ]
                    .map(Alias::new),
                )
                .to_owned();
            for s in chunk {
                let Some(bucket) = s.bucket else { continue };
                let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                q.values_panic([
                    plan.prompt_id.into(),
                    plan.kind.into(),
                    plan.by_label.into(),
                    db.time(bucket).into(),
                    s.version.as_i32().into(),
                    s.label.map(|l| l.as_str().to_owned()).into(),
                    signed(s.count).into(),
                    signed(s.error_count).into(),
                    s.latency_p50.into(),
                    s.latency_p95.into(),
                    s.latency_p99.into(),
                    s.latency_max.into(),
                    signed(s.prompt_tokens).into(),
                    signed(s.completion_tokens).into(),
                    s.cost_total.nanos().into(),
                ]);
            }
            if !chunk.is_empty() {
                txn.execute(&q).await?;
            }
        }
        for chunk in plan.starts.chunks(500) {
            let mut q = Query::insert()
                .into_table(Alias::new("run_stats_sealed"))
                .columns(["prompt_id", "kind", "by_label", "bucket_start"].map(Alias::new))
                .to_owned();
            for start in chunk {
                q.values_panic([
                    plan.prompt_id.into(),
                    plan.kind.into(),
                    plan.by_label.into(),
                    db.time(*start).into(),
                ]);
            }
            txn.execute(&q).await?;
        }
        txn.commit().await?;
        Ok(true)
    })
    .await
}

/// The id of the prompt named `name`, if there is one.
pub(crate) async fn prompt_id(db: &Db, name: &PromptName) -> Result<Option<Uuid>, DbErr> {
    let q = Query::select()
        .column(Alias::new("id"))
        .from(Alias::new("prompts"))
        .and_where(Expr::col(Alias::new("name")).eq(name.as_str()))
        .to_owned();
    match db.conn().query_one(&q).await? {
        Some(row) => Ok(Some(row.try_get::<Uuid>("", "id")?)),
        None => Ok(None),
    }
}
