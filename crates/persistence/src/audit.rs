//! The audit log and label history on SeaORM: appended inside the
//! transactions of the changes they record, read back newest first.

use anyhow::Context as _;
use async_trait::async_trait;
use registry_domain::audit::{Action, Actor, AuditError, AuditEvent, AuditFilter, AuditLog};
use registry_domain::page::{Page, PageRequest, TimeCursor};
use registry_domain::prompt::{LabelChange, LabelName, LabelTarget, Split, VersionNumber};
use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, LikeExpr, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Db;
use crate::schema::{AuditEvents, LabelHistory, StoredRow, decode};

/// Appends `event` through `conn` (a transaction, so it commits with its change).
pub(crate) async fn append<C: ConnectionTrait>(conn: &C, db: &Db, event: &AuditEvent) -> Result<(), DbErr> {
    conn.execute(&insert(db, event, None)).await.map(drop)
}

/// The statement that appends `event`, for [`crate::events::append_with`].
pub(crate) fn insert(db: &Db, event: &AuditEvent, guard: Option<&str>) -> InsertStatement {
    crate::events::insert_row(
        AuditEvents::Table,
        [
            AuditEvents::Id,
            AuditEvents::CreatedAt,
            AuditEvents::ActorId,
            AuditEvents::ActorName,
            AuditEvents::Action,
            AuditEvents::Target,
            AuditEvents::Before,
            AuditEvents::After,
            AuditEvents::RequestId,
        ],
        [
            event.id.into(),
            db.time(event.at).into(),
            event.actor.key_id.into(),
            event.actor.name.as_str().into(),
            event.action.as_str().into(),
            event.target.as_str().into(),
            event.before.clone().into(),
            event.after.clone().into(),
            event.request_id.clone().into(),
        ],
        guard,
    )
}

/// A target as two nullable columns: `(version, split)`.
pub(crate) fn target_columns(target: Option<&LabelTarget>) -> (Option<i32>, Option<Value>) {
    match target {
        None => (None, None),
        Some(LabelTarget::Version(v)) => (Some(v.as_i32()), None),
        Some(LabelTarget::Split(s)) => (None, Some(s.to_json())),
    }
}

/// The target two nullable columns hold.
pub(crate) fn target_of(version: Option<i32>, split: Option<Value>) -> anyhow::Result<Option<LabelTarget>> {
    match (version, split) {
        (Some(v), _) => Ok(Some(LabelTarget::Version(
            VersionNumber::new(i64::from(v)).with_context(|| format!("stored version {v}"))?,
        ))),
        (None, Some(s)) => Ok(Some(LabelTarget::Split(
            Split::from_json(&s).map_err(|e| anyhow::anyhow!("stored split: {e}"))?,
        ))),
        (None, None) => Ok(None),
    }
}

/// The statement that appends one entry to a label's history.
pub(crate) fn history_insert(
    db: &Db,
    prompt_id: Uuid,
    change: &LabelChange,
    guard: Option<&str>,
) -> InsertStatement {
    let (from_version, from_split) = target_columns(change.from.as_ref());
    let (to_version, to_split) = target_columns(change.to.as_ref());
    crate::events::insert_row(
        LabelHistory::Table,
        [
            LabelHistory::Id,
            LabelHistory::PromptId,
            LabelHistory::Label,
            LabelHistory::FromVersion,
            LabelHistory::FromSplit,
            LabelHistory::ToVersion,
            LabelHistory::ToSplit,
            LabelHistory::ActorId,
            LabelHistory::ActorName,
            LabelHistory::Reason,
            LabelHistory::RequestId,
            LabelHistory::CreatedAt,
            LabelHistory::Overrides,
        ],
        [
            change.id.into(),
            prompt_id.into(),
            change.label.as_str().into(),
            from_version.into(),
            from_split.into(),
            to_version.into(),
            to_split.into(),
            change.actor.key_id.into(),
            change.actor.name.as_str().into(),
            change.reason.clone().into(),
            change.request_id.clone().into(),
            db.time(change.at).into(),
            (!change.overrides.is_empty())
                .then(|| Value::from(change.overrides.clone()))
                .into(),
        ],
        guard,
    )
}

/// A history entry as stored.
#[derive(Debug, FromQueryResult)]
pub(crate) struct HistoryRow {
    id: Uuid,
    label: String,
    from_version: Option<i32>,
    from_split: Option<Value>,
    to_version: Option<i32>,
    to_split: Option<Value>,
    actor_id: Option<Uuid>,
    actor_name: String,
    reason: Option<String>,
    request_id: Option<String>,
    created_at: OffsetDateTime,
    overrides: Option<Value>,
}

impl StoredRow for HistoryRow {
    type Domain = LabelChange;

    fn into_domain(self) -> anyhow::Result<LabelChange> {
        Ok(LabelChange {
            id: self.id,
            label: LabelName::new(&self.label).with_context(|| format!("stored label {:?}", self.label))?,
            from: target_of(self.from_version, self.from_split)?,
            to: target_of(self.to_version, self.to_split)?,
            actor: Actor {
                key_id: self.actor_id,
                name: self.actor_name,
            },
            reason: self.reason,
            request_id: self.request_id,
            at: self.created_at,
            overrides: self
                .overrides
                .map(serde_json::from_value)
                .transpose()
                .context("stored overrides")?
                .unwrap_or_default(),
        })
    }
}

/// The columns [`HistoryRow`] reads.
pub(crate) const HISTORY_COLUMNS: [LabelHistory; 12] = [
    LabelHistory::Id,
    LabelHistory::Label,
    LabelHistory::FromVersion,
    LabelHistory::FromSplit,
    LabelHistory::ToVersion,
    LabelHistory::ToSplit,
    LabelHistory::ActorId,
    LabelHistory::ActorName,
    LabelHistory::Reason,
    LabelHistory::RequestId,
    LabelHistory::CreatedAt,
    LabelHistory::Overrides,
];

#[derive(Debug, FromQueryResult)]
struct EventRow {
    id: Uuid,
    created_at: OffsetDateTime,
    actor_id: Option<Uuid>,
    actor_name: String,
    action: String,
    target: String,
    before: Option<Value>,
    after: Option<Value>,
    request_id: Option<String>,
}

impl StoredRow for EventRow {
    type Domain = AuditEvent;

    fn into_domain(self) -> anyhow::Result<AuditEvent> {
        Ok(AuditEvent {
            id: self.id,
            at: self.created_at,
            actor: Actor {
                key_id: self.actor_id,
                name: self.actor_name,
            },
            action: Action::parse(&self.action)
                .with_context(|| format!("stored action {:?}", self.action))?,
            target: self.target,
            before: self.before,
            after: self.after,
            request_id: self.request_id,
        })
    }
}

/// The audit log, read with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmAuditLog {
    db: Db,
}

impl SeaOrmAuditLog {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn db_error(err: DbErr) -> AuditError {
    crate::db::classify(err, AuditError::Unavailable, AuditError::Unknown)
}

#[async_trait]
impl AuditLog for SeaOrmAuditLog {
    async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<AuditEvent, TimeCursor>, AuditError> {
        let mut q = Query::select();
        q.columns([
            AuditEvents::Id,
            AuditEvents::CreatedAt,
            AuditEvents::ActorId,
            AuditEvents::ActorName,
            AuditEvents::Action,
            AuditEvents::Target,
            AuditEvents::Before,
            AuditEvents::After,
            AuditEvents::RequestId,
        ])
        .from(AuditEvents::Table);
        if let Some(actor) = &filter.actor {
            match Uuid::parse_str(actor) {
                Ok(id) => q.and_where(Expr::col(AuditEvents::ActorId).eq(id)),
                Err(_) => q.and_where(Expr::col(AuditEvents::ActorName).eq(actor.as_str())),
            };
        }
        if let Some(action) = filter.action {
            q.and_where(Expr::col(AuditEvents::Action).eq(action.as_str()));
        }
        if let Some(target) = &filter.target {
            match target.strip_suffix('*') {
                Some(prefix) => q.and_where(
                    Expr::col(AuditEvents::Target)
                        .like(LikeExpr::new(crate::db::like_prefix(prefix)).escape('\\')),
                ),
                None => q.and_where(Expr::col(AuditEvents::Target).eq(target.as_str())),
            };
        }
        if let Some(from) = filter.from {
            q.and_where(Expr::col(AuditEvents::CreatedAt).gte(self.db.time(from)));
        }
        if let Some(to) = filter.to {
            q.and_where(Expr::col(AuditEvents::CreatedAt).lt(self.db.time(to)));
        }
        if let Some(c) = page.after {
            q.and_where(
                Expr::tuple([Expr::col(AuditEvents::CreatedAt), Expr::col(AuditEvents::Id)]).lt(Expr::tuple(
                    [Expr::val(self.db.time(c.created_at)), Expr::val(c.id)],
                )),
            );
        }
        q.order_by(AuditEvents::CreatedAt, Order::Desc)
            .order_by(AuditEvents::Id, Order::Desc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let events = decode::<EventRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(events, page.limit, |e| TimeCursor {
            created_at: e.at,
            id: e.id,
        }))
    }
}
