//! `/v1/events`: the change events, in the order the database numbered them.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use registry_domain::events::{ChangeEvent, EventKind, EventLog as _};
use registry_persistence::SeaOrmEventLog;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(stream_events).service(list_events);
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

impl From<ChangeEvent> for EventResponse {
    fn from(e: ChangeEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            kind: e.kind.as_str(),
            prompt: e.prompt.to_string(),
            data: e.data,
            at: e.at,
        }
    }
}

/// What an event's `data` holds, by its `type` (the documented shape; the
/// server writes it in `registry_domain::events`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "the document's shape of `data`, never built")]
#[serde(untagged)]
pub enum EventData {
    /// `prompt.created`, `prompt.updated`, `prompt.deleted`.
    Prompt(PromptEventData),
    VersionCreated(VersionCreatedData),
    LabelMoved(LabelMovedData),
    LabelRemoved(LabelRemovedData),
}

/// `prompt.*`: nothing more than the event's `prompt`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptEventData {}

/// `version.created`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionCreatedData {
    #[schema(minimum = 1)]
    pub version: i64,
    /// The labels the new version was pointed at.
    pub labels: Vec<String>,
}

/// Where a label points: one version, or a weighted split.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "the document's shape, never built")]
#[serde(untagged)]
pub enum EventTarget {
    Version(VersionTarget),
    Split(SplitTarget),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionTarget {
    #[schema(minimum = 1)]
    pub version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    pub split: Vec<SplitArmData>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArmData {
    #[schema(minimum = 1)]
    pub version: i64,
    #[schema(minimum = 1, maximum = 100)]
    pub weight: i64,
}

/// `label.moved`: `from` is null when the label was created.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelMovedData {
    pub label: String,
    #[schema(nullable)]
    pub from: Option<EventTarget>,
    pub to: EventTarget,
}

/// `label.removed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRemovedData {
    pub label: String,
    pub from: EventTarget,
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
    #[schema(value_type = EventData)]
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
        items: events.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only these prompts, comma-separated (exact names).
    #[param(example = "support/triage,greeting")]
    prompts: Option<String>,
    /// Only events about these labels, comma-separated (`label.moved`,
    /// `label.removed`, and `version.created` with the label).
    #[param(example = "production")]
    labels: Option<String>,
    /// Only these event types, comma-separated.
    #[param(example = "label.moved,label.removed")]
    types: Option<String>,
    /// Start after this sequence number (as `Last-Event-ID` does; the
    /// header wins). Absent: only events from now on.
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// Which events a stream sends.
#[derive(Debug, Default)]
struct StreamFilter {
    prompts: Option<HashSet<String>>,
    labels: Option<HashSet<String>>,
    types: Option<HashSet<EventKind>>,
}

fn list(raw: Option<&str>) -> Option<Vec<&str>> {
    raw.map(|r| r.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
}

impl StreamFilter {
    fn parse(q: &StreamQuery) -> Result<Self, ApiError> {
        let types = match list(q.types.as_deref()) {
            None => None,
            Some(names) => Some(
                names
                    .into_iter()
                    .map(|n| {
                        EventKind::parse(n).ok_or_else(|| {
                            ApiError::parameter(
                                "types",
                                format!(
                                    "unknown event type `{n}`; one of {}",
                                    EventKind::ALL.map(EventKind::as_str).join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let set = |raw: Option<&str>| list(raw).map(|v| v.into_iter().map(str::to_owned).collect());
        Ok(Self {
            prompts: set(q.prompts.as_deref()),
            labels: set(q.labels.as_deref()),
            types,
        })
    }

    fn wants(&self, e: &ChangeEvent) -> bool {
        if self.types.as_ref().is_some_and(|t| !t.contains(&e.kind)) {
            return false;
        }
        if self
            .prompts
            .as_ref()
            .is_some_and(|p| !p.contains(e.prompt.as_str()))
        {
            return false;
        }
        let Some(labels) = &self.labels else {
            return true;
        };
        match e.kind {
            EventKind::LabelMoved | EventKind::LabelRemoved => {
                e.data["label"].as_str().is_some_and(|l| labels.contains(l))
            }
            EventKind::VersionCreated => e.data["labels"]
                .as_array()
                .is_some_and(|ls| ls.iter().any(|l| l.as_str().is_some_and(|l| labels.contains(l)))),
            _ => false,
        }
    }
}

/// What one stream holds between two chunks.
struct Stream {
    log: Arc<SeaOrmEventLog>,
    rx: broadcast::Receiver<Arc<ChangeEvent>>,
    filter: StreamFilter,
    /// The last sequence number seen (sent or filtered out).
    last: i64,
    /// Events read from the outbox, not yet sent.
    backlog: VecDeque<ChangeEvent>,
    /// The outbox may hold events after `last` that the broadcast will not
    /// bring (at the start, and after falling behind it).
    replay: bool,
    heartbeat: tokio::time::Interval,
    opened: bool,
}

/// Most events read from the outbox per read while catching up.
const REPLAY_BATCH: u32 = 500;

fn sse(e: &ChangeEvent) -> web::Bytes {
    let kind = e.kind.as_str();
    let data = serde_json::to_string(&EventResponse::from(e.clone())).unwrap_or_default();
    web::Bytes::from(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", e.seq))
}

impl Stream {
    /// The next chunk, or `None` to end the stream (the client reconnects
    /// with `Last-Event-ID` and misses nothing).
    async fn next(&mut self) -> Option<web::Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(web::Bytes::from_static(b"retry: 2000\n: change events\n\n"));
        }
        loop {
            while let Some(e) = self.backlog.pop_front() {
                if e.seq <= self.last {
                    continue;
                }
                self.last = e.seq;
                if self.filter.wants(&e) {
                    return Some(sse(&e));
                }
            }
            if self.replay {
                match self.log.after(self.last, REPLAY_BATCH).await {
                    Ok(events) => {
                        self.replay = events.len() == REPLAY_BATCH as usize;
                        self.backlog.extend(events);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an event stream could not read the outbox; closing it");
                        return None;
                    }
                }
            }
            tokio::select! {
                received = self.rx.recv() => match received {
                    Ok(e) => self.backlog.push_back((*e).clone()),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.replay = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => return Some(web::Bytes::from_static(b": heartbeat\n\n")),
            }
        }
    }
}

/// The change events as they commit, as Server-Sent Events: `id:` is the
/// sequence number, `event:` the type, `data:` the event as
/// `GET /v1/events` gives it. Reconnect with `Last-Event-ID` (or `after`)
/// to resume without a gap; a comment line is sent every heartbeat
/// interval (15 s by default) so idle connections stay open.
#[utoipa::path(
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The last `id:` received: resume after it"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad filter, `after` or `Last-Event-ID`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/events/stream")]
async fn stream_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = StreamFilter::parse(&query)?;
    let header_id = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::parameter("Last-Event-ID", "must be a sequence number (0 or more)")
                })?,
        ),
    };
    if query.after.is_some_and(|a| a < 0) {
        return Err(ApiError::parameter("after", "must be 0 or more"));
    }
    // Subscribe before reading the outbox, so nothing committed in between is lost.
    let rx = state.hub.subscribe();
    let start = header_id.or(query.after);
    let mut heartbeat = tokio::time::interval(state.heartbeat);
    heartbeat.reset();
    let stream = Stream {
        log: Arc::clone(&state.events),
        rx,
        filter,
        last: start.unwrap_or_else(|| state.hub.last_seq()),
        backlog: VecDeque::new(),
        replay: true,
        heartbeat,
        opened: false,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        s.next()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), s))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(state.hub.until_closing(body)))
}
