//! Webhooks on SeaORM: the endpoints, their deliveries (created with the
//! events, in the changes' transactions) and the attempts; and the claim
//! that gives each due delivery to one replica at a time.
//!
//! A claim sets a lease (owner and expiry) on due rows in one statement. On
//! PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so replicas
//! claiming at the same moment take different rows instead of waiting for
//! each other; SQLite runs one write statement at a time, which makes the
//! same statement atomic there. A replica that dies holding a lease loses
//! it when it expires, and the delivery is attempted again: at least once.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use registry_domain::audit::{Action, AuditEvent, Context};
use registry_domain::events::{ChangeEvent, EventKind};
use registry_domain::prompt::PromptName;
use registry_domain::webhook::{
    Attempt, Claim, Delivery, DeliveryStatus, Disabled, EndpointUrl, NewWebhook, Next, RetryPolicy,
    SigningSecret, Subscription, Webhook, WebhookError, WebhookPatch, WebhookRepository, payload,
    ping_payload,
};
use sea_orm::sea_query::{
    Alias, Condition, Expr, ExprTrait, LockBehavior, LockType, Order, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, TransactionTrait};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::append;
use crate::db::Db;
use crate::schema::{
    Events, StoredRow, WebhookAttempts, WebhookDeliveries, Webhooks, decode, decode_one, get,
};

fn db_error(err: DbErr) -> WebhookError {
    crate::db::classify(err, WebhookError::Unavailable, WebhookError::Unknown)
}

fn kinds_text(kinds: &[EventKind]) -> String {
    kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
}

fn parse_kinds(text: &str) -> anyhow::Result<Vec<EventKind>> {
    text.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| EventKind::parse(k).with_context(|| format!("stored event type {k:?}")))
        .collect()
}

#[derive(Debug, FromQueryResult)]
struct WebhookRow {
    id: Uuid,
    url: String,
    description: Option<String>,
    event_types: String,
    prompt_prefix: Option<String>,
    enabled: bool,
    failing_since: Option<OffsetDateTime>,
    disabled_at: Option<OffsetDateTime>,
    disabled_reason: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl StoredRow for WebhookRow {
    type Domain = Webhook;

    fn into_domain(self) -> anyhow::Result<Webhook> {
        Ok(Webhook {
            id: self.id,
            url: EndpointUrl::parse(&self.url).map_err(|e| anyhow!("stored webhook URL: {e}"))?,
            description: self.description,
            subscription: Subscription {
                kinds: parse_kinds(&self.event_types)?,
                prompt_prefix: self.prompt_prefix,
            },
            enabled: self.enabled,
            disabled: match (self.disabled_at, self.disabled_reason) {
                (Some(at), Some(reason)) => Some(Disabled { at, reason }),
                _ => None,
            },
            failing_since: self.failing_since,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const WEBHOOK_COLUMNS: [Webhooks; 11] = [
    Webhooks::Id,
    Webhooks::Url,
    Webhooks::Description,
    Webhooks::EventTypes,
    Webhooks::PromptPrefix,
    Webhooks::Enabled,
    Webhooks::FailingSince,
    Webhooks::DisabledAt,
    Webhooks::DisabledReason,
    Webhooks::CreatedAt,
    Webhooks::UpdatedAt,
];

fn select_webhooks() -> SelectStatement {
    Query::select()
        .columns(WEBHOOK_COLUMNS)
        .from(Webhooks::Table)
        .to_owned()
}

fn audit_shape(w: &Webhook) -> Value {
    json!({
        "url": w.url.as_str(),
        "description": w.description,
        "events": w.subscription.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "prompt_prefix": w.subscription.prompt_prefix,
        "enabled": w.enabled,
    })
}

/// The enabled endpoints, as [`subscribed`] reads them.
pub(crate) fn enabled_endpoints() -> SelectStatement {
    Query::select()
        .columns([Webhooks::Id, Webhooks::EventTypes, Webhooks::PromptPrefix])
        .from(Webhooks::Table)
        .and_where(Expr::col(Webhooks::Enabled).eq(true))
        .to_owned()
}

/// Which of `endpoints` (id, stored event types, prompt prefix: the
/// columns of [`enabled_endpoints`]) want `event`.
pub(crate) fn subscribed(
    endpoints: impl IntoIterator<Item = (Uuid, String, Option<String>)>,
    event: &ChangeEvent,
) -> Vec<Uuid> {
    endpoints
        .into_iter()
        .filter(|(_, types, prefix)| {
            Subscription {
                // An unreadable stored type list is treated as "every type":
                // delivering too much is visible, dropping silently is not.
                kinds: parse_kinds(types).unwrap_or_default(),
                prompt_prefix: prefix.clone(),
            }
            .wants(event.kind, &event.prompt)
        })
        .map(|(id, _, _)| id)
        .collect()
}

/// The pending delivery of `event` (numbered `seq`) to `endpoint`:
/// `INSERT … VALUES`, or with a guard `INSERT … SELECT … FROM guard`, see
/// [`crate::events::insert_row`].
pub(crate) fn delivery_insert(
    db: &Db,
    event: &ChangeEvent,
    endpoint: Uuid,
    seq: Expr,
    guard: Option<&str>,
) -> sea_orm::sea_query::InsertStatement {
    crate::events::insert_row(
        WebhookDeliveries::Table,
        [
            WebhookDeliveries::Id,
            WebhookDeliveries::WebhookId,
            WebhookDeliveries::EventSeq,
            WebhookDeliveries::EventType,
            WebhookDeliveries::Status,
            WebhookDeliveries::Attempts,
            WebhookDeliveries::NextAttemptAt,
            WebhookDeliveries::CreatedAt,
        ],
        [
            Uuid::now_v7().into(),
            endpoint.into(),
            seq,
            event.kind.as_str().into(),
            DeliveryStatus::Pending.as_str().into(),
            0i32.into(),
            db.time(event.at).into(),
            db.time(event.at).into(),
        ],
        guard,
    )
}

/// Creates the deliveries of `event` (numbered `seq`) for every enabled
/// endpoint that wants it, through `conn`: the transaction of the change.
pub(crate) async fn fan_out<C: ConnectionTrait>(
    conn: &C,
    db: &Db,
    event: &ChangeEvent,
    seq: i64,
) -> Result<(), DbErr> {
    let mut endpoints = Vec::new();
    for row in conn.query_all(&enabled_endpoints()).await? {
        endpoints.push((
            get(&row, Webhooks::Id)?,
            get(&row, Webhooks::EventTypes)?,
            get(&row, Webhooks::PromptPrefix)?,
        ));
    }
    for endpoint in subscribed(endpoints, event) {
        conn.execute(&delivery_insert(db, event, endpoint, seq.into(), None))
            .await?;
    }
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct DeliveryRow {
    id: Uuid,
    webhook_id: Uuid,
    event_seq: Option<i64>,
    event_type: String,
    status: String,
    next_attempt_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    delivered_at: Option<OffsetDateTime>,
}

impl StoredRow for DeliveryRow {
    type Domain = Delivery;

    fn into_domain(self) -> anyhow::Result<Delivery> {
        let status = DeliveryStatus::parse(&self.status)
            .with_context(|| format!("stored delivery status {:?}", self.status))?;
        Ok(Delivery {
            id: self.id,
            webhook_id: self.webhook_id,
            kind: self.event_type,
            event_seq: self.event_seq,
            status,
            next_attempt_at: self.next_attempt_at.filter(|_| status == DeliveryStatus::Pending),
            created_at: self.created_at,
            delivered_at: self.delivered_at,
            attempts: Vec::new(),
        })
    }
}

const DELIVERY_COLUMNS: [WebhookDeliveries; 8] = [
    WebhookDeliveries::Id,
    WebhookDeliveries::WebhookId,
    WebhookDeliveries::EventSeq,
    WebhookDeliveries::EventType,
    WebhookDeliveries::Status,
    WebhookDeliveries::NextAttemptAt,
    WebhookDeliveries::CreatedAt,
    WebhookDeliveries::DeliveredAt,
];

#[derive(Debug, FromQueryResult)]
struct AttemptRow {
    delivery_id: Uuid,
    attempted_at: OffsetDateTime,
    status_code: Option<i32>,
    latency_ms: i32,
    error: Option<String>,
}

/// What a claim reads: the delivery, its endpoint, and its event (none for a test).
#[derive(Debug, FromQueryResult)]
struct ClaimRow {
    id: Uuid,
    webhook_id: Uuid,
    attempts: i32,
    created_at: OffsetDateTime,
    payload: Option<String>,
    url: String,
    secret: String,
    event_seq: Option<i64>,
    event_id: Option<Uuid>,
    event_kind: Option<String>,
    event_prompt: Option<String>,
    event_data: Option<Value>,
    event_at: Option<OffsetDateTime>,
}

impl StoredRow for ClaimRow {
    type Domain = Claim;

    fn into_domain(self) -> anyhow::Result<Claim> {
        let body = match (self.payload, self.event_seq) {
            (Some(text), _) => serde_json::from_str(&text).context("stored test payload")?,
            (None, Some(seq)) => {
                let kind = self.event_kind.context("a delivery without its event")?;
                payload(&ChangeEvent {
                    seq,
                    id: self.event_id.context("event id")?,
                    kind: EventKind::parse(&kind).with_context(|| format!("stored event kind {kind:?}"))?,
                    prompt: PromptName::new(self.event_prompt.as_deref().unwrap_or_default())
                        .context("stored prompt name")?,
                    data: self.event_data.unwrap_or(Value::Null),
                    at: self.event_at.context("event time")?,
                })
            }
            (None, None) => anyhow::bail!("a delivery with neither an event nor a payload"),
        };
        Ok(Claim {
            delivery_id: self.id,
            webhook_id: self.webhook_id,
            url: EndpointUrl::parse(&self.url).map_err(|e| anyhow!("stored webhook URL: {e}"))?,
            secret: SigningSecret::new(self.secret).map_err(|e| anyhow!("{e}"))?,
            message_id: format!("msg_{}", self.id.simple()),
            body,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            created_at: self.created_at,
        })
    }
}

/// Webhooks stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmWebhookRepository {
    db: Db,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl SeaOrmWebhookRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self {
            db,
            changed: std::sync::Arc::default(),
        }
    }

    /// Raised after this process has created, changed or deleted an
    /// endpoint, or set a delivery due again: for the dispatcher to look at
    /// once rather than at its next poll.
    #[must_use]
    pub fn changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.changed)
    }

    /// Whether any endpoint is enabled: without one, no change queues a
    /// delivery.
    ///
    /// # Errors
    /// [`WebhookError::Unavailable`] when the store cannot be reached.
    pub async fn any_enabled(&self) -> Result<bool, WebhookError> {
        let q = Query::select()
            .column(Webhooks::Id)
            .from(Webhooks::Table)
            .and_where(Expr::col(Webhooks::Enabled).eq(true))
            .limit(1)
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        Ok(row.is_some())
    }

    async fn load_claims(&self, ids: &[Uuid]) -> Result<Vec<Claim>, WebhookError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (d, w, e) = (Alias::new("d"), Alias::new("w"), Alias::new("e"));
        let q = Query::select()
            .column((d.clone(), WebhookDeliveries::Id))
            .column((d.clone(), WebhookDeliveries::WebhookId))
            .column((d.clone(), WebhookDeliveries::Attempts))
            .column((d.clone(), WebhookDeliveries::CreatedAt))
            .column((d.clone(), WebhookDeliveries::Payload))
            .column((d.clone(), WebhookDeliveries::EventSeq))
            .column((w.clone(), Webhooks::Url))
            .column((w.clone(), Webhooks::Secret))
            .expr_as(Expr::col((e.clone(), Events::Id)), "event_id")
            .expr_as(Expr::col((e.clone(), Events::Kind)), "event_kind")
            .expr_as(Expr::col((e.clone(), Events::Prompt)), "event_prompt")
            .expr_as(Expr::col((e.clone(), Events::Data)), "event_data")
            .expr_as(Expr::col((e.clone(), Events::CreatedAt)), "event_at")
            .from_as(WebhookDeliveries::Table, d.clone())
            .join_as(
                sea_orm::sea_query::JoinType::InnerJoin,
                Webhooks::Table,
                w.clone(),
                Expr::col((w.clone(), Webhooks::Id)).equals((d.clone(), WebhookDeliveries::WebhookId)),
            )
            .join_as(
                sea_orm::sea_query::JoinType::LeftJoin,
                Events::Table,
                e.clone(),
                Expr::col((e.clone(), Events::Seq)).equals((d.clone(), WebhookDeliveries::EventSeq)),
            )
            .and_where(Expr::col((d.clone(), WebhookDeliveries::Id)).is_in(ids.iter().copied()))
            .order_by((d, WebhookDeliveries::CreatedAt), Order::Asc)
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        decode::<ClaimRow, _>(&rows, db_error)
    }

    /// A delivery that may be attempted `now`: pending, due, and not leased
    /// (or its lease has run out).
    fn is_due(&self, now: OffsetDateTime) -> Condition {
        let d = WebhookDeliveries::Table;
        let now = self.db.time(now);
        Condition::all()
            .add(Expr::col((d, WebhookDeliveries::Status)).eq(DeliveryStatus::Pending.as_str()))
            .add(Expr::col((d, WebhookDeliveries::NextAttemptAt)).lte(now.clone()))
            .add(
                Condition::any()
                    .add(Expr::col((d, WebhookDeliveries::LeaseUntil)).is_null())
                    .add(Expr::col((d, WebhookDeliveries::LeaseUntil)).lt(now)),
            )
    }

    /// Runs `change` on endpoint `id` and records `event` with it, in one
    /// transaction; `NotFound` when no row was changed (nothing is recorded).
    async fn change_one<S: sea_orm::StatementBuilder + Sync>(
        &self,
        id: Uuid,
        change: &S,
        event: &AuditEvent,
    ) -> Result<(), WebhookError> {
        let changed = self
            .db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                let n = txn.execute(change).await?.rows_affected();
                if n > 0 {
                    append(&txn, &self.db, event).await?;
                }
                txn.commit().await?;
                Ok(n)
            })
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Err(WebhookError::NotFound(id));
        }
        Ok(())
    }

    async fn exists(&self, id: Uuid) -> Result<(), WebhookError> {
        let q = Query::select()
            .expr(Expr::val(1))
            .from(Webhooks::Table)
            .and_where(Expr::col(Webhooks::Id).eq(id))
            .to_owned();
        match self.db.conn().query_one(&q).await.map_err(db_error)? {
            Some(_) => Ok(()),
            None => Err(WebhookError::NotFound(id)),
        }
    }

    async fn delivery(&self, id: Uuid, delivery: Uuid) -> Result<Delivery, WebhookError> {
        let q = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from(WebhookDeliveries::Table)
            .and_where(Expr::col(WebhookDeliveries::Id).eq(delivery))
            .and_where(Expr::col(WebhookDeliveries::WebhookId).eq(id))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or(WebhookError::DeliveryNotFound(id, delivery))?;
        let mut found = vec![decode_one::<DeliveryRow, _>(&row, db_error)?];
        self.attach_attempts(&mut found).await?;
        Ok(found.remove(0))
    }

    async fn attach_attempts(&self, deliveries: &mut [Delivery]) -> Result<(), WebhookError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let q = Query::select()
            .columns([
                WebhookAttempts::DeliveryId,
                WebhookAttempts::AttemptedAt,
                WebhookAttempts::StatusCode,
                WebhookAttempts::LatencyMs,
                WebhookAttempts::Error,
            ])
            .from(WebhookAttempts::Table)
            .and_where(Expr::col(WebhookAttempts::DeliveryId).is_in(deliveries.iter().map(|d| d.id)))
            .order_by(WebhookAttempts::Id, Order::Asc)
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        for row in rows {
            let a = AttemptRow::from_query_result(&row, "").map_err(db_error)?;
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == a.delivery_id) {
                d.attempts.push(Attempt {
                    at: a.attempted_at,
                    status_code: u16::try_from(a.status_code.unwrap_or(-1)).ok(),
                    latency_ms: u32::try_from(a.latency_ms).unwrap_or(0),
                    error: a.error,
                });
            }
        }
        Ok(())
    }
}

fn lease(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MINUTE)
}

fn row_uuid(row: &QueryResult) -> Result<Uuid, DbErr> {
    get(row, WebhookDeliveries::Id)
}

#[async_trait]
impl WebhookRepository for SeaOrmWebhookRepository {
    async fn create(
        &self,
        new: &NewWebhook,
        secret: &SigningSecret,
        ctx: &Context,
    ) -> Result<Webhook, WebhookError> {
        let now = registry_domain::time::now_utc();
        let hook = Webhook {
            id: Uuid::now_v7(),
            url: new.url.clone(),
            description: new.description.clone(),
            subscription: new.subscription.clone(),
            enabled: new.enabled,
            disabled: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let q = Query::insert()
            .into_table(Webhooks::Table)
            .columns([
                Webhooks::Id,
                Webhooks::Url,
                Webhooks::Description,
                Webhooks::EventTypes,
                Webhooks::PromptPrefix,
                Webhooks::Enabled,
                Webhooks::Secret,
                Webhooks::CreatedAt,
                Webhooks::UpdatedAt,
            ])
            .values_panic([
                hook.id.into(),
                hook.url.as_str().into(),
                hook.description.clone().into(),
                kinds_text(&hook.subscription.kinds).into(),
                hook.subscription.prompt_prefix.clone().into(),
                hook.enabled.into(),
                secret.expose().into(),
                self.db.time(now).into(),
                self.db.time(now).into(),
            ])
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::WebhookCreated,
            format!("webhook:{}", hook.id),
            None,
            Some(audit_shape(&hook)),
        );
        self.db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                txn.execute(&q).await?;
                append(&txn, &self.db, &event).await?;
                txn.commit().await
            })
            .await
            .map_err(db_error)?;
        self.changed.notify_one();
        Ok(hook)
    }

    async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        let q = select_webhooks()
            .order_by(Webhooks::CreatedAt, Order::Asc)
            .order_by(Webhooks::Id, Order::Asc)
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        decode::<WebhookRow, _>(&rows, db_error)
    }

    async fn get(&self, id: Uuid) -> Result<Webhook, WebhookError> {
        let q = select_webhooks()
            .and_where(Expr::col(Webhooks::Id).eq(id))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or(WebhookError::NotFound(id))?;
        decode_one::<WebhookRow, _>(&row, db_error)
    }

    async fn update(&self, id: Uuid, patch: &WebhookPatch, ctx: &Context) -> Result<Webhook, WebhookError> {
        let before = self.get(id).await?;
        let mut after = before.clone();
        if let Some(url) = &patch.url {
            after.url = url.clone();
        }
        if let Some(d) = &patch.description {
            after.description.clone_from(d);
        }
        if let Some(kinds) = &patch.kinds {
            after.subscription.kinds.clone_from(kinds);
        }
        if let Some(prefix) = &patch.prompt_prefix {
            after.subscription.prompt_prefix.clone_from(prefix);
        }
        let now = registry_domain::time::now_utc();
        if let Some(enabled) = patch.enabled {
            after.enabled = enabled;
            if enabled {
                after.disabled = None;
                after.failing_since = None;
            }
        }
        after.updated_at = now;
        let q = Query::update()
            .table(Webhooks::Table)
            .value(Webhooks::Url, after.url.as_str())
            .value(Webhooks::Description, after.description.clone())
            .value(Webhooks::EventTypes, kinds_text(&after.subscription.kinds))
            .value(Webhooks::PromptPrefix, after.subscription.prompt_prefix.clone())
            .value(Webhooks::Enabled, after.enabled)
            .value(Webhooks::FailingSince, self.db.opt_time(after.failing_since))
            .value(
                Webhooks::DisabledAt,
                self.db.opt_time(after.disabled.as_ref().map(|d| d.at)),
            )
            .value(
                Webhooks::DisabledReason,
                after.disabled.as_ref().map(|d| d.reason.clone()),
            )
            .value(Webhooks::UpdatedAt, self.db.time(now))
            .and_where(Expr::col(Webhooks::Id).eq(id))
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::WebhookUpdated,
            format!("webhook:{id}"),
            Some(audit_shape(&before)),
            Some(audit_shape(&after)),
        );
        self.change_one(id, &q, &event).await?;
        self.changed.notify_one();
        Ok(after)
    }

    async fn delete(&self, id: Uuid, ctx: &Context) -> Result<(), WebhookError> {
        let before = self.get(id).await?;
        let hook = Query::delete()
            .from_table(Webhooks::Table)
            .and_where(Expr::col(Webhooks::Id).eq(id))
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::WebhookDeleted,
            format!("webhook:{id}"),
            Some(audit_shape(&before)),
            None,
        );
        // Its deliveries and their attempts go with it (ON DELETE CASCADE).
        self.change_one(id, &hook, &event).await?;
        self.changed.notify_one();
        Ok(())
    }

    async fn deliveries(
        &self,
        id: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>, WebhookError> {
        self.exists(id).await?;
        let mut q = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from(WebhookDeliveries::Table)
            .and_where(Expr::col(WebhookDeliveries::WebhookId).eq(id))
            .order_by(WebhookDeliveries::Id, Order::Desc)
            .limit(u64::from(limit))
            .to_owned();
        if let Some(status) = status {
            q.and_where(Expr::col(WebhookDeliveries::Status).eq(status.as_str()));
        }
        if let Some(before) = before {
            q.and_where(Expr::col(WebhookDeliveries::Id).lt(before));
        }
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let mut found = decode::<DeliveryRow, _>(&rows, db_error)?;
        self.attach_attempts(&mut found).await?;
        Ok(found)
    }

    async fn retry(&self, id: Uuid, delivery: Uuid) -> Result<Delivery, WebhookError> {
        let now = registry_domain::time::now_utc();
        let q = Query::update()
            .table(WebhookDeliveries::Table)
            .value(WebhookDeliveries::Status, DeliveryStatus::Pending.as_str())
            .value(WebhookDeliveries::NextAttemptAt, self.db.time(now))
            .and_where(Expr::col(WebhookDeliveries::Id).eq(delivery))
            .and_where(Expr::col(WebhookDeliveries::WebhookId).eq(id))
            .to_owned();
        let n = self
            .db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?
            .rows_affected();
        if n == 0 {
            return Err(WebhookError::DeliveryNotFound(id, delivery));
        }
        self.changed.notify_one();
        self.delivery(id, delivery).await
    }

    async fn ping(&self, id: Uuid, owner: Uuid, lease_for: Duration) -> Result<Claim, WebhookError> {
        self.exists(id).await?;
        let now = registry_domain::time::now_utc();
        let delivery = Uuid::now_v7();
        let q = Query::insert()
            .into_table(WebhookDeliveries::Table)
            .columns([
                WebhookDeliveries::Id,
                WebhookDeliveries::WebhookId,
                WebhookDeliveries::EventType,
                WebhookDeliveries::Payload,
                WebhookDeliveries::Status,
                WebhookDeliveries::Attempts,
                WebhookDeliveries::NextAttemptAt,
                WebhookDeliveries::LeaseOwner,
                WebhookDeliveries::LeaseUntil,
                WebhookDeliveries::CreatedAt,
            ])
            .values_panic([
                delivery.into(),
                id.into(),
                registry_domain::webhook::PING.into(),
                ping_payload(id, now).to_string().into(),
                DeliveryStatus::Pending.as_str().into(),
                0i32.into(),
                self.db.time(now).into(),
                owner.into(),
                self.db.time(now + lease(lease_for)).into(),
                self.db.time(now).into(),
            ])
            .to_owned();
        self.db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        self.load_claims(&[delivery])
            .await?
            .pop()
            .ok_or(WebhookError::DeliveryNotFound(id, delivery))
    }

    async fn due(&self) -> Result<Vec<Uuid>, WebhookError> {
        let now = registry_domain::time::now_utc();
        let d = WebhookDeliveries::Table;
        let q = Query::select()
            .distinct()
            .column((d, WebhookDeliveries::WebhookId))
            .from(d)
            .inner_join(
                Webhooks::Table,
                Expr::col((Webhooks::Table, Webhooks::Id)).equals((d, WebhookDeliveries::WebhookId)),
            )
            .and_where(Expr::col((Webhooks::Table, Webhooks::Enabled)).eq(true))
            .cond_where(self.is_due(now))
            .to_owned();
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        rows.iter()
            .map(|r| get::<Uuid>(r, WebhookDeliveries::WebhookId))
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    async fn claim(
        &self,
        webhook: Uuid,
        owner: Uuid,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<Claim>, WebhookError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = registry_domain::time::now_utc();
        let mut due = Query::select()
            .column(WebhookDeliveries::Id)
            .from(WebhookDeliveries::Table)
            .and_where(Expr::col(WebhookDeliveries::WebhookId).eq(webhook))
            .cond_where(self.is_due(now))
            .order_by(WebhookDeliveries::NextAttemptAt, Order::Asc)
            .limit(u64::from(limit))
            .to_owned();
        if self.db.backend() == DbBackend::Postgres {
            due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let q = Query::update()
            .table(WebhookDeliveries::Table)
            .value(WebhookDeliveries::LeaseOwner, owner)
            .value(
                WebhookDeliveries::LeaseUntil,
                self.db.time(now + lease(lease_for)),
            )
            .and_where(Expr::col(WebhookDeliveries::Id).in_subquery(due))
            .returning_col(WebhookDeliveries::Id)
            .to_owned();
        let rows = self
            .db
            .write(|| async { self.db.conn().query_all(&q).await })
            .await
            .map_err(db_error)?;
        let ids = rows
            .iter()
            .map(row_uuid)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        self.load_claims(&ids).await
    }

    async fn record(
        &self,
        claim: &Claim,
        owner: Uuid,
        attempt: &Attempt,
        next: &Next,
        policy: &RetryPolicy,
    ) -> Result<(), WebhookError> {
        let attempt_row = Query::insert()
            .into_table(WebhookAttempts::Table)
            .columns([
                WebhookAttempts::Id,
                WebhookAttempts::DeliveryId,
                WebhookAttempts::AttemptedAt,
                WebhookAttempts::StatusCode,
                WebhookAttempts::LatencyMs,
                WebhookAttempts::Error,
            ])
            .values_panic([
                Uuid::now_v7().into(),
                claim.delivery_id.into(),
                self.db.time(attempt.at).into(),
                attempt.status_code.map(i32::from).into(),
                i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX).into(),
                attempt.error.clone().into(),
            ])
            .to_owned();
        let mut delivery = Query::update()
            .table(WebhookDeliveries::Table)
            .value(
                WebhookDeliveries::Attempts,
                Expr::col(WebhookDeliveries::Attempts).add(1),
            )
            .value(WebhookDeliveries::LeaseOwner, Option::<Uuid>::None)
            .value(WebhookDeliveries::LeaseUntil, self.db.opt_time(None))
            .and_where(Expr::col(WebhookDeliveries::Id).eq(claim.delivery_id))
            .and_where(Expr::col(WebhookDeliveries::LeaseOwner).eq(owner))
            .to_owned();
        match next {
            Next::Done => {
                delivery
                    .value(WebhookDeliveries::Status, DeliveryStatus::Succeeded.as_str())
                    .value(WebhookDeliveries::DeliveredAt, self.db.time(attempt.at));
            }
            Next::RetryAt(at) => {
                delivery.value(WebhookDeliveries::NextAttemptAt, self.db.time(*at));
            }
            Next::GiveUp => {
                delivery.value(WebhookDeliveries::Status, DeliveryStatus::Failed.as_str());
            }
        }
        let is_test = claim.is_ping();
        let success = matches!(next, Next::Done);
        let hook_id = claim.webhook_id;
        self.db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                txn.execute(&attempt_row).await?;
                let held = txn.execute(&delivery).await?.rows_affected() > 0;
                if held && !is_test {
                    streak(&txn, &self.db, hook_id, success, attempt, policy).await?;
                }
                txn.commit().await
            })
            .await
            .map_err(db_error)
    }
}

/// Updates an endpoint's failure streak after an attempt: a success ends
/// it; a failure starts it, and disables the endpoint once it has lasted
/// `disable_after`.
async fn streak<C: ConnectionTrait>(
    conn: &C,
    db: &Db,
    id: Uuid,
    success: bool,
    attempt: &Attempt,
    policy: &RetryPolicy,
) -> Result<(), DbErr> {
    if success {
        let q = Query::update()
            .table(Webhooks::Table)
            .value(Webhooks::FailingSince, db.opt_time(None))
            .and_where(Expr::col(Webhooks::Id).eq(id))
            .to_owned();
        return conn.execute(&q).await.map(drop);
    }
    let q = Query::select()
        .columns([Webhooks::FailingSince, Webhooks::Enabled])
        .from(Webhooks::Table)
        .and_where(Expr::col(Webhooks::Id).eq(id))
        .to_owned();
    let Some(row) = conn.query_one(&q).await? else {
        return Ok(());
    };
    let since: Option<OffsetDateTime> = get(&row, Webhooks::FailingSince)?;
    let enabled: bool = get(&row, Webhooks::Enabled)?;
    let since = since.unwrap_or(attempt.at);
    let mut q = Query::update()
        .table(Webhooks::Table)
        .value(Webhooks::FailingSince, db.time(since))
        .and_where(Expr::col(Webhooks::Id).eq(id))
        .to_owned();
    if enabled && policy.should_disable(since, attempt.at) {
        let reason = format!(
            "every delivery failed since {} (last: {})",
            registry_domain::time::rfc3339(since),
            attempt.error.as_deref().unwrap_or("no answer")
        );
        tracing::warn!(webhook = %id, %reason, "webhook endpoint disabled");
        q.value(Webhooks::Enabled, false)
            .value(Webhooks::DisabledAt, db.time(attempt.at))
            .value(Webhooks::DisabledReason, reason);
    }
    conn.execute(&q).await.map(drop)
}
