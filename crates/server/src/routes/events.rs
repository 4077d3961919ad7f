//! `/v1/events`: the change events, in the order the database numbered them.

use actix_web::{get, web};
use registry_domain::events::EventLog as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_events);
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events numbered above this (the last `seq` you have; 0 for all).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// One change to a prompt, its versions or its labels.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    /// Its number: increasing, per database.
    pub seq: i64,
    pub id: Uuid,
    /// `prompt.created`, `prompt.updated`, `prompt.deleted`, `version.created`,
    /// `label.moved` or `label.removed`.
    #[serde(rename = "type")]
    #[schema(example = "label.moved")]
    pub kind: &'static str,
    #[schema(example = "support/triage")]
    pub prompt: String,
    /// `version.created`: `{version, labels}`; `label.moved`: `{label, from, to}`;
    /// `label.removed`: `{label, from}`; prompt events: `{}`.
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventResponse>,
    /// Pass as `after` for the next page (the last `seq` here, or `after` when empty).
    pub next_after: i64,
}

/// The change events after `after`, oldest first: each written in the same
/// transaction as its change, so none is missing and none describes a
/// change that did not commit.
#[utoipa::path(
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "A bad `after` or `limit`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/events")]
async fn list_events(
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<web::Json<EventPage>, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::parameter("after", "must be 0 or more"));
    }
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=1000) => u32::try_from(n).unwrap_or(100),
        Some(n) => {
            return Err(ApiError::parameter(
                "limit",
                format!("must be between 1 and 1000, got {n}"),
            ));
        }
    };
    let events = state.events.after(after, limit).await?;
    Ok(web::Json(EventPage {
        next_after: events.last().map_or(after, |e| e.seq),
        items: events
            .into_iter()
            .map(|e| EventResponse {
                seq: e.seq,
                id: e.id,
                kind: e.kind.as_str(),
                prompt: e.prompt.to_string(),
                data: e.data,
                at: e.at,
            })
            .collect(),
    }))
}
