//! The change-event outbox on SeaORM: appended inside the transactions of
//! the changes, read back in sequence order.

use anyhow::Context as _;
use async_trait::async_trait;
use registry_domain::events::{ChangeEvent, EventError, EventKind, EventLog};
use registry_domain::prompt::PromptName;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, InsertStatement, IntoIden, IntoTableRef, Order, Query,
    UpdateStatement, WithClause,
};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Db;
use crate::schema::{Events, StoredRow, decode};

/// The PostgreSQL advisory lock that orders event writers (any constant
/// the application does not use for something else).
const ORDER_LOCK: i64 = 0x7072_5f65_7665_6e74; // "pr_event"

/// Appends `event` through `conn` (a transaction, so it commits with its change).
///
/// Sequence numbers follow commit order, so a reader that has seen event
/// `n` has seen every event below it: on PostgreSQL the writer first takes
/// a transaction-scoped advisory lock, held until its commit, before its
/// number is drawn; without it a transaction that drew 11 could commit
/// after one that drew 12, and a reader of "after 12" would skip 11. SQLite
/// runs one write transaction at a time, which gives the same order. The
/// lock is taken at the end of a change's transaction, so the changes
/// themselves still run concurrently.
pub(crate) async fn append<C: ConnectionTrait>(conn: &C, db: &Db, event: &ChangeEvent) -> Result<(), DbErr> {
    append_with(conn, db, event, Vec::new()).await
}

/// `INSERT INTO table (columns) VALUES (values)`; with a guard, `INSERT INTO
/// table (columns) SELECT values FROM guard`: the row is written only if the
/// CTE named `guard`, in the statement this one joins, yields a row.
pub(crate) fn insert_row<T, C, const N: usize>(
    table: T,
    columns: [C; N],
    values: [Expr; N],
    guard: Option<&str>,
) -> InsertStatement
where
    T: IntoTableRef,
    C: IntoIden,
{
    let mut q = Query::insert();
    q.into_table(table).columns(columns);
    match guard {
        None => {
            q.values_panic(values);
        }
        Some(guard) => {
            let select = Query::select().exprs(values).from(Alias::new(guard)).to_owned();
            // As many values as columns, by the array lengths.
            q.select_from(select).expect("one value per column");
        }
    }
    q
}

/// A write to run with a change event, see [`append_with`].
#[derive(Debug)]
pub(crate) enum Also {
    Insert(InsertStatement),
    Update(UpdateStatement),
}

impl From<InsertStatement> for Also {
    fn from(q: InsertStatement) -> Self {
        Self::Insert(q)
    }
}

impl From<UpdateStatement> for Also {
    fn from(q: UpdateStatement) -> Self {
        Self::Update(q)
    }
}

/// As [`append`], with the change's other writes (a label's row, its
/// history entry, the audit event): on PostgreSQL in the same statement as
/// the lock and the event, one round trip instead of one each. Each writes
/// a table none of the others touches, so running them as CTEs of one
/// statement changes nothing but the count of round trips.
pub(crate) async fn append_with<C: ConnectionTrait>(
    conn: &C,
    db: &Db,
    event: &ChangeEvent,
    also: Vec<Also>,
) -> Result<(), DbErr> {
    let columns = [
        Events::Id,
        Events::Kind,
        Events::Prompt,
        Events::Data,
        Events::CreatedAt,
    ];
    let values: [sea_orm::Value; 5] = [
        event.id.into(),
        event.kind.as_str().into(),
        event.prompt.as_str().into(),
        event.data.clone().into(),
        db.time(event.at),
    ];
    let row = if db.backend() == sea_orm::DbBackend::Postgres {
        // WITH also_0 AS (INSERT …), …, ordered AS MATERIALIZED (SELECT
        // pg_advisory_xact_lock(…)) INSERT INTO events … SELECT … FROM
        // ordered RETURNING seq: the number is drawn for the row that the
        // locked CTE yields, so after the lock.
        let mut with = WithClause::new();
        for (i, write) in also.into_iter().enumerate() {
            let mut cte = CommonTableExpression::new();
            match write {
                Also::Insert(q) => cte.query(q),
                Also::Update(q) => cte.query(q),
            };
            with.cte(cte.table_name(Alias::new(format!("also_{i}"))).to_owned());
        }
        with.cte(ordering_lock(None));
        let insert = Query::insert()
            .into_table(Events::Table)
            .columns(columns)
            .select_from(
                Query::select()
                    .exprs(values.map(Expr::val))
                    .from(Alias::new("ordered"))
                    .to_owned(),
            )
            .map_err(|e| DbErr::Custom(format!("the event insert: {e}")))?
            .returning_col(Events::Seq)
            .to_owned();
        conn.query_one(&with.query(insert)).await?
    } else {
        for write in &also {
            match write {
                Also::Insert(q) => conn.execute(q).await?,
                Also::Update(q) => conn.execute(q).await?,
            };
        }
        let q = Query::insert()
            .into_table(Events::Table)
            .columns(columns)
            .values_panic(values.map(Expr::val))
            .returning_col(Events::Seq)
            .to_owned();
        conn.query_one(&q).await?
    };
    let row = row.ok_or_else(|| DbErr::Custom("the event insert returned no sequence number".into()))?;
    let seq: i64 = crate::schema::get(&row, Events::Seq)?;
    // The endpoints' deliveries commit (or not) with the event.
    crate::webhooks::fan_out(conn, db, event, seq).await
}

/// The CTE `ordered`: the advisory lock that orders event writers, taken
/// once (or, with a guard, once per row the CTE `guard` yields), for the
/// event's insert to select from so its number is drawn after the lock.
fn ordering_lock(guard: Option<&str>) -> CommonTableExpression {
    let mut lock = Query::select();
    lock.expr_as(
        Expr::cust_with_values("pg_advisory_xact_lock($1)", [ORDER_LOCK]),
        Alias::new("locked"),
    );
    if let Some(guard) = guard {
        lock.from(Alias::new(guard));
    }
    CommonTableExpression::new()
        .query(lock)
        .table_name(Alias::new("ordered"))
        .materialized(true)
        .to_owned()
}

/// The name of the CTE that locks the row a guarded change serialises on,
/// see [`append_if`].
pub(crate) const LOCKED: &str = "prompt_lock";
/// The name of a guarded change's compare-and-set CTE, see [`append_if`].
pub(crate) const GUARD: &str = "guard";

/// As [`append_with`], as one statement outside any transaction, on
/// PostgreSQL: a change read, decided and written in two round trips.
///
/// In the statement, in this order:
/// - `lock`, named [`LOCKED`]: a `SELECT … FOR UPDATE` of the row the
///   change serialises on (the prompt's), so writers take their locks in the
///   same order as in a transaction;
/// - `guard`, named [`GUARD`]: the change's compare-and-set, a write that
///   returns a row only if what the caller read is still so;
/// - `also`, built to select from the guard (see [`insert_row`]), the
///   ordering lock, the event and its deliveries to `endpoints`: written
///   only if the guard returned a row.
///
/// A statement is a transaction of its own: all of it commits, or none.
/// `Ok(false)`: the guard returned nothing, and nothing was written.
///
/// # Errors
/// The statement's; a foreign-key violation when an endpoint was deleted
/// since it was read (read again and retry).
pub(crate) async fn append_if<C: ConnectionTrait>(
    conn: &C,
    db: &Db,
    event: &ChangeEvent,
    lock: sea_orm::sea_query::SelectStatement,
    guard: Also,
    also: Vec<Also>,
    endpoints: &[Uuid],
) -> Result<bool, DbErr> {
    let cte = |name: &str, write: Also| {
        let mut cte = CommonTableExpression::new();
        match write {
            Also::Insert(q) => cte.query(q),
            Also::Update(q) => cte.query(q),
        };
        cte.table_name(Alias::new(name)).to_owned()
    };
    let mut with = WithClause::new();
    with.cte(
        CommonTableExpression::new()
            .query(lock)
            .table_name(Alias::new(LOCKED))
            .materialized(true)
            .to_owned(),
    );
    with.cte(cte(GUARD, guard));
    for (i, write) in also.into_iter().enumerate() {
        with.cte(cte(&format!("also_{i}"), write));
    }
    with.cte(ordering_lock(Some(GUARD)));
    let row = insert_row(
        Events::Table,
        [
            Events::Id,
            Events::Kind,
            Events::Prompt,
            Events::Data,
            Events::CreatedAt,
        ],
        [
            event.id.into(),
            event.kind.as_str().into(),
            event.prompt.as_str().into(),
            event.data.clone().into(),
            db.time(event.at).into(),
        ],
        Some("ordered"),
    )
    .returning_col(Events::Seq)
    .to_owned();
    with.cte(cte("event", Also::Insert(row)));
    let seq = Expr::col((Alias::new("event"), Events::Seq));
    for (i, endpoint) in endpoints.iter().enumerate() {
        let delivery = crate::webhooks::delivery_insert(db, event, *endpoint, seq.clone(), Some("event"));
        with.cte(cte(&format!("delivery_{i}"), Also::Insert(delivery)));
    }
    let written = Query::select()
        .column(Events::Seq)
        .from(Alias::new("event"))
        .to_owned();
    Ok(conn.query_one(&with.query(written)).await?.is_some())
}

#[derive(Debug, FromQueryResult)]
struct EventRow {
    seq: i64,
    id: Uuid,
    kind: String,
    prompt: String,
    data: Value,
    created_at: OffsetDateTime,
}

impl StoredRow for EventRow {
    type Domain = ChangeEvent;

    fn into_domain(self) -> anyhow::Result<ChangeEvent> {
        Ok(ChangeEvent {
            seq: self.seq,
            id: self.id,
            kind: EventKind::parse(&self.kind)
                .with_context(|| format!("stored event kind {:?}", self.kind))?,
            prompt: PromptName::new(&self.prompt).context("stored prompt name")?,
            data: self.data,
            at: self.created_at,
        })
    }
}

/// The outbox, read with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmEventLog {
    db: Db,
}

impl SeaOrmEventLog {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn db_error(err: DbErr) -> EventError {
    crate::db::classify(err, EventError::Unavailable, EventError::Unknown)
}

#[async_trait]
impl EventLog for SeaOrmEventLog {
    async fn last_seq(&self) -> Result<i64, EventError> {
        let q = Query::select()
            .expr_as(Expr::col(Events::Seq).max(), "seq")
            .from(Events::Table)
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let seq: Option<i64> = match row {
            Some(row) => row.try_get("", "seq").map_err(db_error)?,
            None => None,
        };
        Ok(seq.unwrap_or(0))
    }

    async fn after(&self, after: i64, limit: u32) -> Result<Vec<ChangeEvent>, EventError> {
        let q = Query::select()
            .columns([
                Events::Seq,
                Events::Id,
                Events::Kind,
                Events::Prompt,
                Events::Data,
                Events::CreatedAt,
            ])
            .from(Events::Table)
            .and_where(Expr::col(Events::Seq).gt(after))
            .order_by(Events::Seq, Order::Asc)
            .limit(u64::from(limit))
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        decode::<EventRow, _>(&rows, db_error)
    }
}
