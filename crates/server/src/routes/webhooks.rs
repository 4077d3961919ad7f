//! `/v1/webhooks` (admin): endpoints that receive the change events, their
//! deliveries, retries and test pings.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use registry_domain::events::EventKind;
use registry_domain::prompt::FieldError;
use registry_domain::webhook::{
    Attempt, Delivery, DeliveryStatus, EndpointUrl, NewWebhook, Subscription, Webhook, WebhookPatch,
    WebhookRepository as _,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::routes::dto::prompts::double_option;
use crate::routes::params::Caller;
use crate::state::AppState;
use crate::webhooks::{check_target, deliver, new_secret};

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(update_webhook)
        .service(delete_webhook)
        .service(list_deliveries)
        .service(retry_delivery)
        .service(test_webhook);
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: `http(s)://…`. In prod, hosts on loopback,
    /// private and link-local addresses are refused unless allowed.
    #[schema(example = "https://ci.example.com/hooks/prompt-registry")]
    pub url: String,
    pub description: Option<String>,
    /// The event types wanted; absent or empty for every type.
    #[schema(example = json!(["label.moved", "version.created"]))]
    pub events: Option<Vec<String>>,
    /// Only events of prompts whose name starts with this.
    #[schema(example = "support/")]
    pub prompt_prefix: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    pub url: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// The new full list of event types (empty for every type).
    pub events: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub prompt_prefix: Option<Option<String>>,
    /// `true` re-enables an endpoint the dispatcher disabled (and clears why).
    pub enabled: Option<bool>,
}

/// Why the dispatcher disabled an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledResponse {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: String,
}

/// An endpoint; its secret is shown only when it is created.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Empty: every type.
    pub events: Vec<&'static str>,
    pub prompt_prefix: Option<String>,
    pub enabled: bool,
    /// Set when the dispatcher disabled the endpoint after failing for a day.
    pub disabled: Option<DisabledResponse>,
    /// Since when every attempt has failed; null after a success.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Webhook> for WebhookResponse {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.as_str().to_owned(),
            description: w.description,
            events: w.subscription.kinds.iter().map(|k| k.as_str()).collect(),
            prompt_prefix: w.subscription.prompt_prefix,
            enabled: w.enabled,
            disabled: w.disabled.map(|d| DisabledResponse {
                at: d.at,
                reason: d.reason,
            }),
            failing_since: w.failing_since,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A created endpoint, with its signing secret: store it now, it is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// `whsec_…`: verify deliveries with it (Standard Webhooks).
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The endpoint's status code; null when it did not answer.
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    pub error: Option<String>,
}

impl From<Attempt> for AttemptResponse {
    fn from(a: Attempt) -> Self {
        Self {
            at: a.at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

/// One event for one endpoint, with every attempt at it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The event type; `webhook.ping` for a test.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's sequence number (null for a test).
    pub event_seq: Option<i64>,
    /// `pending`, `succeeded` or `failed` (given up).
    pub status: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    /// Oldest first.
    pub attempts: Vec<AttemptResponse>,
}

impl From<Delivery> for DeliveryResponse {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            kind: d.kind,
            event_seq: d.event_seq,
            status: d.status.as_str(),
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            attempts: d.attempts.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryResponse>,
    /// Pass as `before` for older deliveries; null at the end.
    pub next_before: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `succeeded` or `failed`.
    status: Option<String>,
    /// Only deliveries older than this one (a delivery id from `next_before`).
    before: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The result of a test ping: the delivery and its one attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct PingResponse {
    /// Whether the endpoint answered 2xx.
    pub delivered: bool,
    pub attempt: AttemptResponse,
    pub delivery_id: Uuid,
}

fn parse_id(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::parameter(name, format!("`{raw}` is not a UUID")))
}

fn parse_kinds(raw: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    for (i, k) in raw.into_iter().enumerate() {
        match EventKind::parse(&k) {
            Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => errors.push(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "unknown event type `{k}`; one of {}",
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                ),
            )),
        }
    }
    kinds
}

fn check_prefix(prefix: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let prefix = prefix?;
    if prefix.is_empty() || prefix.len() > 128 || prefix.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "prompt_prefix",
            "must be 1–128 characters without control characters",
        ));
        return None;
    }
    Some(prefix)
}

fn check_description(description: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let d = description?;
    if d.chars().count() > 1000 || d.contains('\0') {
        errors.push(FieldError::new(
            "description",
            "must be at most 1000 characters, without NUL",
        ));
        return None;
    }
    Some(d)
}

async fn parse_url(state: &AppState, raw: &str, errors: &mut Vec<FieldError>) -> Option<EndpointUrl> {
    let url = match EndpointUrl::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            errors.push(FieldError::new("url", e.to_string()));
            return None;
        }
    };
    if let Err(e) = check_target(&url, state.delivery.allow_private).await {
        errors.push(FieldError::new("url", e.to_string()));
        return None;
    }
    Some(url)
}

/// Registers an endpoint. The response carries its signing secret, shown only now.
#[utoipa::path(
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = CreatedWebhook),
        (status = 422, description = "A bad URL, event type or prefix", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks")]
async fn create_webhook(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    body: Body<CreateWebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    let url = parse_url(&state, &body.url, &mut errors).await;
    let kinds = parse_kinds(body.events.unwrap_or_default(), &mut errors);
    let prompt_prefix = check_prefix(body.prompt_prefix, &mut errors);
    let description = check_description(body.description, &mut errors);
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let new = NewWebhook {
        url,
        description,
        subscription: Subscription { kinds, prompt_prefix },
        enabled: body.enabled.unwrap_or(true),
    };
    let secret = new_secret();
    let hook = state.webhooks.create(&new, &secret, &ctx).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::LOCATION, format!("/v1/webhooks/{}", hook.id)))
        .json(CreatedWebhook {
            webhook: hook.into(),
            secret: secret.expose().to_owned(),
        }))
}

/// Every endpoint, oldest first; never their secrets.
#[utoipa::path(tag = "webhooks", responses((status = 200, description = "Every endpoint", body = WebhookList)))]
#[get("/webhooks")]
async fn list_webhooks(state: web::Data<AppState>) -> Result<web::Json<WebhookList>, ApiError> {
    let items = state.webhooks.list().await?.into_iter().map(Into::into).collect();
    Ok(web::Json(WebhookList { items }))
}

/// One endpoint, with whether (and why) the dispatcher disabled it.
#[utoipa::path(
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookResponse),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhooks/{id}")]
async fn get_webhook(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<WebhookResponse>, ApiError> {
    let id = parse_id("id", &id)?;
    Ok(web::Json(state.webhooks.get(id).await?.into()))
}

/// Changes an endpoint. Enabling one the dispatcher disabled clears the
/// record of why, and its pending deliveries resume.
#[utoipa::path(
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = UpdateWebhookRequest,
    responses(
        (status = 200, description = "The endpoint as changed", body = WebhookResponse),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad URL, event type or prefix", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/webhooks/{id}")]
async fn update_webhook(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    id: web::Path<String>,
    body: Body<UpdateWebhookRequest>,
) -> Result<web::Json<WebhookResponse>, ApiError> {
    let id = parse_id("id", &id)?;
    let body = body.into_inner();
    let mut errors = Vec::new();
    let url = match &body.url {
        Some(raw) => parse_url(&state, raw, &mut errors).await,
        None => None,
    };
    let kinds = body.events.map(|k| parse_kinds(k, &mut errors));
    let prompt_prefix = body.prompt_prefix.map(|p| check_prefix(p, &mut errors));
    let description = body.description.map(|d| check_description(d, &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let patch = WebhookPatch {
        url,
        description,
        kinds,
        prompt_prefix,
        enabled: body.enabled,
    };
    Ok(web::Json(state.webhooks.update(id, &patch, &ctx).await?.into()))
}

/// Removes an endpoint and its deliveries.
#[utoipa::path(
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/webhooks/{id}")]
async fn delete_webhook(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &id)?;
    state.webhooks.delete(id, &ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An endpoint's deliveries, newest first, each with its attempts (status
/// code, latency, error).
#[utoipa::path(
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, description = "A bad id, status, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhooks/{id}/deliveries")]
async fn list_deliveries(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<web::Json<DeliveryPage>, ApiError> {
    let id = parse_id("id", &id)?;
    let query = query.into_inner();
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::parameter("status", format!("`{s}` is not pending, succeeded or failed"))
        })?),
    };
    let before = query
        .before
        .as_deref()
        .map(|b| parse_id("before", b))
        .transpose()?;
    let limit = match query.limit {
        None => 20,
        Some(n @ 1..=100) => u32::try_from(n).unwrap_or(20),
        Some(n) => {
            return Err(ApiError::parameter(
                "limit",
                format!("must be between 1 and 100, got {n}"),
            ));
        }
    };
    let items = state.webhooks.deliveries(id, status, before, limit).await?;
    let next_before = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(web::Json(DeliveryPage {
        items: items.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

/// Makes a delivery due again now, whatever its state (a failed one is
/// attempted again; a succeeded one is sent once more).
#[utoipa::path(
    tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery" = Uuid, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "Queued for an attempt now", body = DeliveryResponse),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint or delivery", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks/{id}/deliveries/{delivery}/retry")]
async fn retry_delivery(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery) = path.into_inner();
    let (id, delivery) = (parse_id("id", &id)?, parse_id("delivery", &delivery)?);
    let d = state.webhooks.retry(id, delivery).await?;
    state.hub.wake();
    Ok(HttpResponse::Accepted().json(DeliveryResponse::from(d)))
}

/// Sends a signed `webhook.ping` to the endpoint now (even when it is
/// disabled) and answers with how it went.
#[utoipa::path(
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The attempt, delivered or not", body = PingResponse),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks/{id}/test")]
async fn test_webhook(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<PingResponse>, ApiError> {
    let id = parse_id("id", &id)?;
    let owner = Uuid::new_v4();
    let claim = state.webhooks.ping(id, owner, state.delivery.lease).await?;
    let attempt = deliver(&state.webhooks, owner, &claim, &state.delivery).await;
    Ok(web::Json(PingResponse {
        delivered: attempt.succeeded(),
        attempt: attempt.into(),
        delivery_id: claim.delivery_id,
    }))
}
