//! The tracing subscriber, set up once per process, and the shape of the
//! one span each request gets.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: JSON lines when `json`, human-readable
/// otherwise. `RUST_LOG` wins over `default_filter`. A second call is a no-op.
pub fn init(default_filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// When the request arrived, for its latency.
#[derive(Debug, Clone, Copy)]
pub struct Started(pub Instant);

/// One span per request: method, route *pattern* (low cardinality), request
/// id, and once it ends its status and latency. Bodies, query strings and
/// headers (API keys among them) are never recorded.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // The route is known only once the request has been routed; it is
        // recorded at the end, the request id by the envelope inside this
        // span. Fields are formatted only when the span is on.
        let span = tracing::info_span!(
            "request",
            method = tracing::field::Empty,
            route = tracing::field::Empty,
            request_id = tracing::field::Empty,
            key_id = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        if !span.is_disabled() {
            request.extensions_mut().insert(Started(Instant::now()));
            span.record("method", tracing::field::display(request.method()));
        }
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, latency) = match outcome {
            Ok(res) => (
                res.status().as_u16(),
                res.request()
                    .extensions()
                    .get::<Started>()
                    .map(|s| s.0.elapsed().as_secs_f64() * 1000.0),
            ),
            Err(e) => (e.as_response_error().status_code().as_u16(), None),
        };
        if !span.is_disabled()
            && let Ok(res) = outcome
        {
            // Routed by now: the pattern is found without matching again.
            let route = res.request().match_pattern();
            span.record("route", route.as_deref().unwrap_or("unmatched"));
        }
        span.record("status", status);
        if let Some(ms) = latency {
            span.record("latency_ms", ms);
        }
        span.in_scope(|| match status {
            // Back-pressure (a full run queue), not a failure: the client retries.
            503 => tracing::info!(status, "request deferred"),
            500.. => tracing::error!(status, "request failed"),
            400..=499 => tracing::info!(status, "request refused"),
            _ => tracing::debug!(status, "request served"),
        });
    }
}
