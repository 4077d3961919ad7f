//! `/v1/runs` and `/v1/prompts/{name}/runs|stats`: logging runs and reading
//! them back.

use actix_web::http::header::{self, LOCATION};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use registry_domain::prompt::FieldError;
use registry_domain::run::ports::Logged;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::dto::runs::{
    AcceptedBatch, AcceptedRun, BatchRequest, BatchResponse, CreateRunRequest, ListRunsQuery, RunPage,
    RunResponse, StatsParams, StatsResponse,
};
use super::params::NameInPath;
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    // `/runs/batch` before `/runs/{id}`.
    cfg.service(create_run)
        .service(create_batch)
        .service(list_runs)
        .service(get_run)
        .service(list_prompt_runs)
        .service(prompt_stats);
}

fn prefers_async(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|p| {
                p.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
            })
        })
}

/// Logs a run. Synchronous by default: 201 once the run is committed (200
/// with the stored run when its `id` was already logged with the same
/// content, 409 when with other content). With `Prefer: respond-async` the
/// run is validated, tied to its version and queued: 202 with its id, written
/// in the background within moments, flushed on shutdown; 503 with
/// `Retry-After` when the queue is full.
#[utoipa::path(
    tag = "runs",
    request_body = CreateRunRequest,
    params(("Prefer" = Option<String>, Header, description = "`respond-async` to queue the run and answer 202")),
    responses(
        (status = 201, description = "Logged", body = RunResponse, headers(("Location" = String))),
        (status = 200, description = "Already logged with this id and content", body = RunResponse),
        (status = 202, description = "Accepted for background writing", body = AcceptedRun),
        (status = 409, description = "This id was logged with other content", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, unknown prompt or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The background queue is full; retry later", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/runs")]
async fn create_run(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Body<CreateRunRequest>,
) -> Result<HttpResponse, ApiError> {
    let asynchronous = prefers_async(&req);
    let runs = state.runs.clone();
    let body = body.into_inner();
    let outcome = state
        .ingest
        .run(async move {
            let new = body.try_into_domain("").map_err(ApiError::validation)?;
            if asynchronous {
                Ok(Err(runs.log_async(new).await?))
            } else {
                Ok(Ok(runs.log(new).await?))
            }
        })
        .await?;
    Ok(match outcome {
        Err(id) => HttpResponse::Accepted()
            .insert_header(("Preference-Applied", "respond-async"))
            .json(AcceptedRun { id }),
        Ok(Logged::Created(run)) => HttpResponse::Created()
            .insert_header((LOCATION, format!("/v1/runs/{}", run.id)))
            .json(RunResponse::from(run)),
        Ok(Logged::Existing(run)) => HttpResponse::Ok().json(RunResponse::from(run)),
    })
}

/// Logs up to 1,000 runs in one transaction: all of them or, if any is
/// invalid, none; every invalid run is named by its index (`runs[3].status`).
/// With `Prefer: respond-async` the runs are validated, tied to their
/// versions and queued together: 202 with their ids.
#[utoipa::path(
    tag = "runs",
    request_body = BatchRequest,
    params(("Prefer" = Option<String>, Header, description = "`respond-async` to queue the runs and answer 202")),
    responses(
        (status = 201, description = "Every run is stored", body = BatchResponse),
        (status = 202, description = "Every run is accepted for background writing", body = AcceptedBatch),
        (status = 503, description = "The background queue is full or unavailable; retry later", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid runs, each named by index; nothing was stored", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/runs/batch")]
async fn create_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    // Only scanned here; read into values on the ingestion thread.
    body: web::Json<Box<serde_json::value::RawValue>>,
) -> Result<HttpResponse, ApiError> {
    let (max_batch, asynchronous, runs) = (state.max_batch, prefers_async(&req), state.runs.clone());
    let inserts = state.ingest.inserts();
    let outcome = state
        .ingest
        .run(async move {
            let items = crate::body::from_slice::<BatchRequest>(body.get().as_bytes())?.runs;
            if items.is_empty() || items.len() > max_batch {
                return Err(ApiError::validation(vec![FieldError::new(
                    "runs",
                    format!("must hold 1 to {max_batch} runs, got {}", items.len()),
                )]));
            }
            let mut errors = Vec::new();
            let mut parsed = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let run = crate::body::into_object::<CreateRunRequest>(item)
                    .map_err(|e| vec![FieldError::new(format!("runs[{i}]"), e.detail)])
                    .and_then(|r| r.try_into_domain(&format!("runs[{i}].")));
                match run {
                    Ok(run) => parsed.push(run),
                    Err(e) => errors.extend(e),
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            if asynchronous {
                Ok(Err(runs.log_batch_async(parsed).await?))
            } else {
                let _permit = inserts
                    .acquire()
                    .await
                    .map_err(|e| ApiError::internal(e.into()))?;
                Ok(Ok(runs.log_batch(parsed).await?))
            }
        })
        .await?;
    Ok(match outcome {
        Err(ids) => HttpResponse::Accepted()
            .insert_header(("Preference-Applied", "respond-async"))
            .json(AcceptedBatch { ids }),
        Ok(logged) => HttpResponse::Created().json(BatchResponse {
            inserted: logged.runs.len() - logged.existing.len(),
            ids: logged.runs.iter().map(|r| r.id).collect(),
            existing: logged.existing,
        }),
    })
}

/// One run.
#[utoipa::path(
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunResponse),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/runs/{id}")]
async fn get_run(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // `/v1/runs/batch` is a sibling resource that only takes POST.
    if id.as_str() == "batch" {
        return Ok(crate::problem::method_not_allowed(
            &actix_web::http::Method::GET,
            "/v1/runs/batch",
            &["POST"],
        ));
    }
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::parameter("id", format!("`{id}` is not a UUID")))?;
    Ok(HttpResponse::Ok().json(RunResponse::from(state.runs.get(id).await?)))
}

/// Lists runs, newest first unless `sort` says otherwise. Keyset pagination:
/// runs logged while you page through never make a page skip or repeat a run.
#[utoipa::path(
    tag = "runs",
    params(ListRunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "A bad filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/runs")]
async fn list_runs(
    state: web::Data<AppState>,
    query: web::Query<ListRunsQuery>,
) -> Result<web::Json<RunPage>, ApiError> {
    let listing = query.into_inner().try_into_domain(None)?;
    Ok(web::Json(state.runs.list(listing).await?.into()))
}

/// Lists one prompt's runs; the same filters as `GET /v1/runs`.
#[utoipa::path(
    tag = "runs",
    params(NameInPath, ListRunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "A bad filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/runs")]
async fn list_prompt_runs(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    query: web::Query<ListRunsQuery>,
) -> Result<web::Json<RunPage>, ApiError> {
    let listing = query.into_inner().try_into_domain(Some(name))?;
    let page = state
        .runs
        .list_for_prompt(listing)
        .await
        .map_err(ApiError::prompt_in_path)?;
    Ok(web::Json(page.into()))
}

/// Per-version figures of a prompt's runs, optionally per hour or day:
/// counts, error rate, latency percentiles, tokens and cost.
#[utoipa::path(
    tag = "runs",
    params(NameInPath, StatsParams),
    responses(
        (status = 200, description = "The figures", body = StatsResponse),
        (status = 400, description = "A bad time, bucket or version", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/stats")]
async fn prompt_stats(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    query: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner().try_into_domain()?;
    let stats = state
        .runs
        .stats(&name, query)
        .await
        .map_err(ApiError::prompt_in_path)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(StatsResponse {
            prompt: name.to_string(),
            items: stats.into_iter().map(Into::into).collect(),
        }))
}
