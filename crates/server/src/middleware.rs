//! Request ids and panic containment.

use std::panic::AssertUnwindSafe;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _};
use futures::FutureExt as _;

use crate::problem::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request: the client's `X-Request-Id` when it is a sane token,
/// a new UUID otherwise. Echoed in the response and recorded on the request span.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Gives the request its [`RequestId`] and echoes it in the response.
///
/// # Errors
/// Only what the inner service returns.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}

/// The longest a request may take.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub std::time::Duration);

/// Answers 504 when a request takes longer than its limit; the work is
/// dropped (a database transaction in flight is rolled back).
///
/// # Errors
/// What the inner service returns, or the 504 problem.
pub async fn timeout(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let limit = req
        .app_data::<RequestTimeout>()
        .map_or(std::time::Duration::from_secs(30), |t| t.0);
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(result) => result.map(ServiceResponse::map_into_left_body),
        Err(_) => {
            let error = ApiError::new(
                crate::problem::ErrorCode::Timeout,
                format!("the request took longer than {} s", limit.as_secs()),
            );
            let stand_in = actix_web::test::TestRequest::default().to_http_request();
            Ok(ServiceResponse::new(stand_in, error.error_response()).map_into_right_body())
        }
    }
}

/// Turns a panic in a handler into a logged 500 problem; the worker carries on.
///
/// # Errors
/// What the inner service returns; a panic becomes a response, not an error.
pub async fn catch_panic(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The request cannot be kept aside (actix needs it unshared while
    // routing), so a panic is answered on a stand-in request; the request id
    // and span middlewares outside this one still see the real one.
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(result) => result.map(ServiceResponse::map_into_left_body),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a handler panicked".to_owned());
            let error = ApiError::internal(anyhow::anyhow!("panic in a handler: {message}"));
            let response = error.error_response();
            let stand_in = actix_web::test::TestRequest::default().to_http_request();
            Ok(ServiceResponse::new(stand_in, response).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    #[actix_web::test]
    async fn a_request_over_its_time_limit_answers_504() {
        let app = test::init_service(
            App::new()
                .app_data(RequestTimeout(std::time::Duration::from_millis(50)))
                .wrap(from_fn(timeout))
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
        let slow = test::call_service(&app, test::TestRequest::get().uri("/slow").to_request()).await;
        assert_eq!(slow.status(), 504);
        let quick = test::call_service(&app, test::TestRequest::get().uri("/quick").to_request()).await;
        assert_eq!(quick.status(), 200);
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(catch_panic))
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
        let boom = test::call_service(&app, test::TestRequest::get().uri("/boom").to_request()).await;
        assert_eq!(boom.status(), 500);
        assert_eq!(
            boom.headers()
                .get("content-type")
                .map(actix_web::http::header::HeaderValue::as_bytes),
            Some(crate::problem::PROBLEM_JSON.as_bytes())
        );
        let body = test::read_body(boom).await;
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
