//! The change-event outbox on SeaORM: appended inside the transactions of
//! the changes, read back in sequence order.

use anyhow::Context as _;
use async_trait::async_trait;
use registry_domain::events::{ChangeEvent, EventError, EventKind, EventLog};
use registry_domain::prompt::PromptName;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
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
    if db.backend() == sea_orm::DbBackend::Postgres {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [ORDER_LOCK.into()],
        ))
        .await?;
    }
    let q = Query::insert()
        .into_table(Events::Table)
        .columns([
            Events::Id,
            Events::Kind,
            Events::Prompt,
            Events::Data,
            Events::CreatedAt,
        ])
        .values_panic([
            event.id.into(),
            event.kind.as_str().into(),
            event.prompt.as_str().into(),
            event.data.clone().into(),
            db.time(event.at).into(),
        ])
        .returning_col(Events::Seq)
        .to_owned();
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| DbErr::Custom("the event insert returned no sequence number".into()))?;
    let seq: i64 = crate::schema::get(&row, Events::Seq)?;
    // The endpoints' deliveries commit (or not) with the event.
    crate::webhooks::fan_out(conn, db, event, seq).await
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
