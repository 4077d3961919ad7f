//! `/v1/runs` and `/v1/prompts/{name}/runs|stats`: logging runs and reading
//! them back.

use actix_web::http::header::{self, LOCATION};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use registry_domain::page::Cursor as _;
use registry_domain::prompt::{FieldError, PromptError};
use registry_domain::run::ports::{Logged, RunError};
use registry_domain::run::stats::{Bucket, StatsQuery, VersionStats};
use registry_domain::run::{NewRun, NewRunBuilder, Run, RunCursor, RunFilter, RunSort, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::params;
use crate::body::Body;
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::state::AppState;

/// Largest page of runs.
const MAX_RUN_LIMIT: u32 = 1_000;

pub fn configure(cfg: &mut ServiceConfig) {
    // `/runs/batch` before `/runs/{id}`.
    cfg.service(create_run)
        .service(create_batch)
        .service(list_runs)
        .service(get_run)
        .service(list_prompt_runs)
        .service(prompt_stats);
}

/// A run as a client logs it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// Your id for the run: sending the same id again is a safe retry.
    pub id: Option<Uuid>,
    /// The prompt's name.
    #[schema(example = "support/triage")]
    pub prompt: String,
    /// The version run; the active one when absent.
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// The variables the prompt was rendered with.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Map<String, Value>>,
    /// The model's answer: text or any JSON.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// `success` or `error`.
    #[schema(example = "success")]
    pub status: String,
    /// Why the call failed, when `status` is `error` and the application
    /// knows (optional); absent when `status` is `success`.
    pub error: Option<String>,
    pub model: Option<String>,
    /// Milliseconds, fractions allowed (kept to the microsecond): `120.5`.
    #[schema(minimum = 0, maximum = 86_400_000, example = 120.5)]
    pub latency_ms: f64,
    #[schema(minimum = 0)]
    pub prompt_tokens: Option<i64>,
    #[schema(minimum = 0)]
    pub completion_tokens: Option<i64>,
    /// US dollars as a decimal string such as `"0.00042"` (a JSON number is
    /// accepted too); at most 9 digits after the point. Absent means 0.
    #[schema(value_type = Option<String>, example = "0.00042")]
    pub cost_usd: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// When the client started the call (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<String>,
}

impl CreateRunRequest {
    /// # Errors
    /// Every invalid field, each named with `prefix`.
    fn try_into_domain(self, prefix: &str) -> Result<NewRun, Vec<FieldError>> {
        let mut errors = Vec::new();
        let named = |field: &str| format!("{prefix}{field}");
        let cost_usd = match self.cost_usd {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                errors.push(FieldError::new(
                    named("cost_usd"),
                    "must be a decimal string such as \"0.00042\"",
                ));
                None
            }
        };
        let started_at = self.started_at.as_deref().and_then(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| {
                    errors.push(FieldError::new(
                        named("started_at"),
                        "must be an RFC 3339 timestamp",
                    ));
                })
                .ok()
        });
        let built = NewRunBuilder {
            id: self.id,
            prompt: self.prompt,
            version: self.version,
            input: self.input,
            output: self.output,
            status: self.status,
            error: self.error,
            model: self.model,
            latency_ms: self.latency_ms,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd,
            metadata: self.metadata,
            tags: self.tags,
            started_at,
        }
        .build();
        match built {
            Ok(run) if errors.is_empty() => Ok(run),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(
                    more.into_iter()
                        .map(|e| FieldError::new(named(&e.field), e.message)),
                );
                Err(errors)
            }
        }
    }
}

/// A stored run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    pub id: Uuid,
    pub prompt: String,
    pub prompt_id: Uuid,
    pub version: u32,
    pub version_id: Uuid,
    #[schema(value_type = Object)]
    pub input: Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(example = "success")]
    pub status: &'static str,
    pub error: Option<String>,
    pub model: Option<String>,
    /// Milliseconds, to the microsecond.
    pub latency_ms: f64,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Exact decimal dollars.
    #[schema(example = "0.00042")]
    pub cost_usd: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<Run> for RunResponse {
    fn from(r: Run) -> Self {
        let f = r.fields;
        Self {
            id: r.id,
            prompt: r.prompt_name.to_string(),
            prompt_id: r.prompt_id,
            version: r.version.get(),
            version_id: r.version_id,
            input: f.input,
            output: f.output,
            status: f.status.as_str(),
            error: f.error,
            model: f.model,
            latency_ms: f.latency.millis(),
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            cost_usd: f.cost.to_string(),
            metadata: f.metadata,
            tags: f.tags.as_slice().to_vec(),
            started_at: f.started_at,
            created_at: r.created_at,
        }
    }
}

/// The answer to an asynchronous log request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedRun {
    pub id: Uuid,
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
    let new = body
        .into_inner()
        .try_into_domain("")
        .map_err(ApiError::validation)?;
    if prefers_async(&req) {
        let run = state.runs.resolve(new).await?;
        let id = run.id;
        state.run_queue.try_enqueue(run).map_err(|_| {
            let mut e = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the run queue is full; retry shortly",
            );
            e.retry_after = Some(1);
            e
        })?;
        return Ok(HttpResponse::Accepted()
            .insert_header(("Preference-Applied", "respond-async"))
            .json(AcceptedRun { id }));
    }
    Ok(match state.runs.log(new).await? {
        Logged::Created(run) => HttpResponse::Created()
            .insert_header((LOCATION, format!("/v1/runs/{}", run.id)))
            .json(RunResponse::from(run)),
        Logged::Existing(run) => HttpResponse::Ok().json(RunResponse::from(run)),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to `runs.max_batch` runs (1,000 by default).
    #[schema(value_type = Vec<CreateRunRequest>)]
    pub runs: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Runs newly stored.
    pub inserted: usize,
    /// The id of every run of the batch, in order.
    pub ids: Vec<Uuid>,
    /// Ids that were already stored and were left unchanged.
    pub existing: Vec<Uuid>,
}

/// Logs up to 1,000 runs in one transaction: all of them or, if any is
/// invalid, none; every invalid run is named by its index (`runs[3].status`).
#[utoipa::path(
    tag = "runs",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "Every run is stored", body = BatchResponse),
        (status = 422, description = "Invalid runs, each named by index; nothing was stored", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/runs/batch")]
async fn create_batch(
    state: web::Data<AppState>,
    body: Body<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().runs;
    if items.is_empty() || items.len() > state.max_batch {
        return Err(ApiError::validation(vec![FieldError::new(
            "runs",
            format!("must hold 1 to {} runs, got {}", state.max_batch, items.len()),
        )]));
    }
    let mut errors = Vec::new();
    let mut runs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let parsed = crate::body::into_object::<CreateRunRequest>(item)
            .map_err(|e| vec![FieldError::new(format!("runs[{i}]"), e.detail)])
            .and_then(|r| r.try_into_domain(&format!("runs[{i}].")));
        match parsed {
            Ok(run) => runs.push(run),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let logged = state.runs.log_batch(runs).await?;
    Ok(HttpResponse::Created().json(BatchResponse {
        inserted: logged.runs.len() - logged.existing.len(),
        ids: logged.runs.iter().map(|r| r.id).collect(),
        existing: logged.existing,
    }))
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs of this prompt (required with `version`).
    prompt: Option<String>,
    /// Only runs of this version number.
    #[param(minimum = 1)]
    version: Option<i64>,
    /// `success` or `error`.
    status: Option<String>,
    model: Option<String>,
    /// Created at or after this RFC 3339 time.
    from: Option<String>,
    /// Created before this RFC 3339 time.
    to: Option<String>,
    /// `created_at` (default `-created_at`), `latency_ms` or `cost`; `-` for descending.
    sort: Option<String>,
    /// Page size, 1–1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (with the same `sort`).
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

struct Listing {
    filter: RunFilter,
    sort: RunSort,
    page: registry_domain::page::PageRequest<RunCursor>,
}

fn listing(q: ListRunsQuery, prompt_in_path: bool) -> Result<Listing, ApiError> {
    let sort = q.sort.as_deref().map_or(Ok(RunSort::default()), |s| {
        RunSort::parse(s).map_err(|e| ApiError::parameter("sort", e))
    })?;
    let page = params::page::<RunCursor>(q.limit, q.cursor.as_deref(), MAX_RUN_LIMIT)?;
    if page.after.is_some_and(|c| c.sort != sort) {
        let mut e = ApiError::parameter("cursor", "this cursor belongs to another sort order");
        e.code = ErrorCode::InvalidCursor;
        return Err(e);
    }
    if q.prompt.is_some() && prompt_in_path {
        return Err(ApiError::parameter(
            "prompt",
            "the prompt is already named in the path",
        ));
    }
    if q.version.is_some() && q.prompt.is_none() && !prompt_in_path {
        return Err(ApiError::parameter(
            "version",
            "filtering by version needs `prompt`",
        ));
    }
    let filter = RunFilter {
        prompt: q.prompt.as_deref().map(params::prompt_name).transpose()?,
        version: q
            .version
            .map(|n| params::version_number(&n.to_string()))
            .transpose()?,
        status: q
            .status
            .as_deref()
            .map(|s| {
                RunStatus::parse(s)
                    .ok_or_else(|| ApiError::parameter("status", "must be `success` or `error`"))
            })
            .transpose()?,
        model: params::text("model", q.model)?,
        from: params::timestamp("from", q.from.as_deref())?,
        to: params::timestamp("to", q.to.as_deref())?,
    };
    Ok(Listing { filter, sort, page })
}

fn run_page(page: registry_domain::page::Page<Run, RunCursor>) -> RunPage {
    RunPage {
        next_cursor: page.next.map(|c| c.encode()),
        items: page.items.into_iter().map(Into::into).collect(),
    }
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
    let Listing { filter, sort, page } = listing(query.into_inner(), false)?;
    Ok(web::Json(run_page(state.runs.list(filter, sort, page).await?)))
}

fn unknown_prompt_is_404(e: RunError) -> ApiError {
    match e {
        RunError::UnknownPrompt(name) => PromptError::NotFound(name).into(),
        other => other.into(),
    }
}

/// Lists one prompt's runs; the same filters as `GET /v1/runs`.
#[utoipa::path(
    tag = "runs",
    params(("name" = String, Path, description = "The prompt's name; percent-encode `/` as `%2F`"), ListRunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "A bad filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/runs")]
async fn list_prompt_runs(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<ListRunsQuery>,
) -> Result<web::Json<RunPage>, ApiError> {
    let name = params::prompt_name(&name)?;
    let Listing { filter, sort, page } = listing(query.into_inner(), true)?;
    let page = state
        .runs
        .list_for_prompt(name, filter, sort, page)
        .await
        .map_err(unknown_prompt_is_404)?;
    Ok(web::Json(run_page(page)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Runs created at or after this RFC 3339 time.
    from: Option<String>,
    /// Runs created before this RFC 3339 time.
    to: Option<String>,
    /// `hour`, `day` or `none` (default).
    bucket: Option<String>,
    /// Only this version.
    #[param(minimum = 1)]
    version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyStats {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostStats {
    /// Exact decimal dollars.
    #[schema(example = "1.234")]
    pub total: String,
    /// Per run, rounded to the nano-dollar.
    #[schema(example = "0.000412")]
    pub average: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionStatsResponse {
    pub version: u32,
    /// Start of the bucket (UTC); `null` when `bucket=none`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub bucket_start: Option<OffsetDateTime>,
    pub count: u64,
    pub error_count: u64,
    pub error_rate: f64,
    /// Milliseconds; percentiles are continuous (interpolated).
    pub latency_ms: LatencyStats,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: CostStats,
}

impl From<VersionStats> for VersionStatsResponse {
    fn from(s: VersionStats) -> Self {
        Self {
            version: s.version.get(),
            bucket_start: s.bucket,
            count: s.count,
            error_count: s.error_count,
            error_rate: s.error_rate(),
            latency_ms: LatencyStats {
                p50: s.latency_p50,
                p95: s.latency_p95,
                p99: s.latency_p99,
                max: s.latency_max,
            },
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            cost_usd: CostStats {
                total: s.cost_total.to_string(),
                average: s.cost_average().to_string(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub prompt: String,
    /// One entry per version (and per bucket), by version then bucket.
    pub items: Vec<VersionStatsResponse>,
}

/// Per-version figures of a prompt's runs, optionally per hour or day:
/// counts, error rate, latency percentiles, tokens and cost.
#[utoipa::path(
    tag = "runs",
    params(("name" = String, Path, description = "The prompt's name; percent-encode `/` as `%2F`"), StatsParams),
    responses(
        (status = 200, description = "The figures", body = StatsResponse),
        (status = 400, description = "A bad time, bucket or version", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/stats")]
async fn prompt_stats(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let name = params::prompt_name(&name)?;
    let q = query.into_inner();
    let bucket = match q.bucket.as_deref() {
        None | Some("none") => Bucket::None,
        Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(ApiError::parameter(
                "bucket",
                format!("`{other}` is not hour, day or none"),
            ));
        }
    };
    let query = StatsQuery {
        from: params::timestamp("from", q.from.as_deref())?,
        to: params::timestamp("to", q.to.as_deref())?,
        bucket,
        version: q
            .version
            .map(|n| params::version_number(&n.to_string()))
            .transpose()?,
    };
    let stats = state
        .runs
        .stats(&name, query)
        .await
        .map_err(unknown_prompt_is_404)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(StatsResponse {
            prompt: name.to_string(),
            items: stats.into_iter().map(Into::into).collect(),
        }))
}
