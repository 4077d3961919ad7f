//! Liveness and readiness.

use std::time::Duration;

use actix_web::{get, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::problem::{ApiError, ErrorCode, Problem};
use crate::state::AppState;

/// How long `/ready` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health).service(ready);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process is up. Does no I/O.
#[utoipa::path(tag = "operations", security(()), responses((status = 200, description = "Alive", body = Status)))]
#[get("/health")]
async fn health() -> web::Json<Status> {
    web::Json(Status { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    #[schema(example = "ok")]
    pub database: &'static str,
    /// `off`, `in_process`, `ok` (Redis answers) or `degraded` (Redis does not
    /// answer; reads go to the database and the service stays up).
    #[schema(example = "ok")]
    pub cache: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: Checks,
}

/// Readiness: the database answers within a short timeout. A Redis that does
/// not answer is reported as `degraded` without failing readiness: the cache
/// fails open.
#[utoipa::path(
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "A dependency is down; `detail` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> Result<web::Json<Readiness>, ApiError> {
    let (database, cache) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, state.db.ping()),
        tokio::time::timeout(READY_TIMEOUT, state.cache.health())
    );
    let cache = cache.map_or("degraded", |h| h.as_str());
    match database {
        Ok(Ok(())) => Ok(web::Json(Readiness {
            status: "ready",
            checks: Checks {
                database: "ok",
                cache,
            },
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "readiness: database failed");
            Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "database: not answering",
            ))
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("database: no answer within {} ms", READY_TIMEOUT.as_millis()),
        )),
    }
}
