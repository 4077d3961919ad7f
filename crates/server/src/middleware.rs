//! The layer around every handler: request ids, time limits and panic
//! containment, response headers and JSON line endings, metrics.

use std::panic::AssertUnwindSafe;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _};
use futures::FutureExt as _;

use crate::problem::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request: the client's `X-Request-Id` when it is a sane token,
/// a new UUID otherwise. Echoed in the response and recorded on the request
/// span. Held as the header value it is echoed as, so it is made once.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets in (see `acceptable`).
        self.0.to_str().unwrap_or_default()
    }
}

/// A request id of this process: a random half drawn once at start and a
/// counter, shaped as a version-4 UUID. Unique without asking the operating
/// system for randomness on every request (a `getrandom` call each, about
/// 4 % of the cached fetch's CPU); written straight into its header value.
/// Each thread counts through blocks of ids of its own, so the workers do
/// not share a counter that every request would write.
fn new_request_id() -> HeaderValue {
    const BLOCK: u64 = 1 << 20;
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static BLOCKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        /// The next id of this thread's block, and the block's end.
        static COUNTER: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNTER.with(|counter| {
        let (mut next, mut end) = counter.get();
        if next == end {
            next = BLOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * BLOCK;
            end = next + BLOCK;
        }
        counter.set((next + 1, end));
        next
    });
    let bits = (u128::from(process) << 64) | u128::from(count);
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Builder::from_random_bytes(bits.to_be_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
}

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The one layer of our own around every request, inside the request span:
/// gives the request its [`RequestId`] (echoed in the response), bounds its
/// time, contains a panic in a handler so the worker carries on, and on the
/// way out marks the response `nosniff`, ends a JSON body with a newline,
/// records the request in the metrics and wakes the event hub after a write.
///
/// One layer rather than one per concern: every layer costs the hot path a
/// boxed future and a poll per request (see docs/performance.md).
///
/// A request that panics or runs over its [`RequestTimeout`] has been
/// consumed by the layers inside, and actix-web builds a response only from a
/// request; so those two are answered as an error that actix-web turns into
/// the response itself: a problem+json 500 or 504 that still carries the
/// request id. The work in flight is dropped (a transaction is rolled back).
///
/// # Errors
/// What the inner service returns, or the 500/504 problem.
pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(acceptable))
        .cloned()
        .unwrap_or_else(new_request_id);
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("request_id", id.to_str().unwrap_or_default());
    }
    let header = id.clone();
    req.extensions_mut().insert(RequestId(id));
    let limit = req
        .app_data::<RequestTimeout>()
        .map_or(std::time::Duration::from_secs(30), |t| t.0);
    let state = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .cloned();
    let method = crate::metrics::method_label(req.method());
    // MCP's POSTs are JSON-RPC reads of prompts, not changes.
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.path() != crate::startup::MCP_PATH;
    let outcome = bounded(started + limit, AssertUnwindSafe(next.call(req)).catch_unwind()).await;
    let error = match outcome {
        Ok(Ok(result)) => {
            let mut res = result?;
            let headers = res.headers_mut();
            headers.insert(REQUEST_ID, header);
            headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
            if let Some(state) = &state {
                state.metrics.observe_response(&res, method, started);
                if write && res.status().is_success() {
                    state.hub.wake();
                }
            }
            return Ok(with_newline(res));
        }
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a handler panicked".to_owned());
            if let Some(s) = &state {
                s.metrics.count_panic();
            }
            let id = header.to_str().unwrap_or_default();
            ApiError::internal(anyhow::anyhow!("panic in a handler (request {id}): {message}"))
        }
        Err(_) => {
            if let Some(s) = &state {
                s.metrics.count_timeout();
            }
            let id = header.to_str().unwrap_or_default();
            tracing::warn!(request_id = id, limit_s = limit.as_secs(), "request timed out");
            ApiError::new(
                crate::problem::ErrorCode::Timeout,
                format!("the request took longer than {} s", limit.as_secs()),
            )
        }
    };
    let mut response = error.error_response();
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, header);
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    Err(actix_web::error::InternalError::from_response(error, response).into())
}

/// `work`, or `Err(())` once `deadline` has passed without it finishing.
///
/// Like `tokio::time::timeout`, except that the timer is armed only if the
/// first poll leaves the work pending: a request answered at once (a cached
/// fetch) never registers, fires or cancels a timer. The deadline still
/// counts from when the request arrived.
async fn bounded<F: Future>(deadline: std::time::Instant, work: F) -> Result<F::Output, ()> {
    let mut work = std::pin::pin!(work);
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(done) = work.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(done));
        }
        timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())))
            .as_mut()
            .poll(cx)
            .map(Err)
    })
    .await
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// Ends every JSON body with a newline, so `curl` output does not run into
/// the shell prompt. Bodies that already end with one (the cached version
/// bodies of the hot path) are passed through without a copy.
fn with_newline<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B, actix_web::web::Bytes>> {
    let is_json = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/json") || v.starts_with(b"application/problem+json")
        });
    if !is_json {
        return res.map_into_left_body();
    }
    res.map_body(|_, body| match body.try_into_bytes() {
        Ok(bytes) if bytes.last() == Some(&b'\n') => EitherBody::right(bytes),
        Ok(bytes) => {
            let mut line = Vec::with_capacity(bytes.len() + 1);
            line.extend_from_slice(&bytes);
            line.push(b'\n');
            EitherBody::right(actix_web::web::Bytes::from(line))
        }
        Err(body) => EitherBody::left(body),
    })
}

/// The longest a request may take.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub std::time::Duration);

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    #[actix_web::test]
    async fn request_ids_are_distinct_version_4_uuids() {
        let id = || new_request_id().to_str().map(str::to_owned).unwrap_or_default();
        let mut ids: std::collections::HashSet<String> = (0..1000).map(|_| id()).collect();
        // Threads count in blocks of their own.
        let others: Vec<String> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|_| s.spawn(|| (0..1000).map(|_| id()).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(others.len(), 3000);
        ids.extend(others);
        assert_eq!(ids.len(), 4000);
        assert!(
            ids.iter()
                .all(|id| uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4))
        );
    }

    #[actix_web::test]
    async fn a_request_over_its_time_limit_answers_504() {
        let app = test::init_service(
            App::new()
                .app_data(RequestTimeout(std::time::Duration::from_millis(50)))
                .wrap(from_fn(envelope))
                .route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        HttpResponse::Ok().finish()
                    }),
                )
                .route("/quick", web::get().to(|| async { HttpResponse::Ok().finish() })),
        )
        .await;
        let slow = test::try_call_service(&app, test::TestRequest::get().uri("/slow").to_request())
            .await
            .map(|r| r.status())
            .unwrap_or_else(|e| e.error_response().status());
        assert_eq!(slow, 504);
        let quick = test::call_service(&app, test::TestRequest::get().uri("/quick").to_request()).await;
        assert_eq!(quick.status(), 200);
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(envelope))
                .route(
                    "/boom",
                    web::get().to(|| async {
                        if true {
                            panic!("handler exploded");
                        }
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/fine",
                    web::get().to(|| async { HttpResponse::Ok().body("fine") }),
                ),
        )
        .await;
        let boom = test::try_call_service(
            &app,
            test::TestRequest::get()
                .uri("/boom")
                .insert_header((REQUEST_ID, "boom-1"))
                .to_request(),
        )
        .await
        .err()
        .map(|e| e.error_response())
        .expect("a panic is answered as an error response");
        assert_eq!(boom.status(), 500);
        assert_eq!(
            boom.headers()
                .get("content-type")
                .map(actix_web::http::header::HeaderValue::as_bytes),
            Some(crate::problem::PROBLEM_JSON.as_bytes())
        );
        assert_eq!(
            boom.headers().get(REQUEST_ID).map(HeaderValue::as_bytes),
            Some(&b"boom-1"[..]),
            "the request id survives the panic"
        );
        let body = actix_web::body::to_bytes(boom.into_body())
            .await
            .unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&body).contains("exploded"),
            "the panic message stays in the log"
        );
        for _ in 0..3 {
            let fine = test::call_service(&app, test::TestRequest::get().uri("/fine").to_request()).await;
            assert_eq!(fine.status(), 200);
        }
    }
}
