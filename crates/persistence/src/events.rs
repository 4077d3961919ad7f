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

/// Appends `event` through `conn` (a transaction, so it commits with its change).
pub(crate) async fn append<C: ConnectionTrait>(conn: &C, db: &Db, event: &ChangeEvent) -> Result<(), DbErr> {
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
        .to_owned();
    conn.execute(&q).await.map(drop)
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
