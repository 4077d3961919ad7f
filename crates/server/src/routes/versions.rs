//! `/v1/prompts/{name}/versions` and `/render`: immutable versions,
//! activation (rollback) and rendering.

use actix_web::http::header::{self, EntityTag, LOCATION};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use registry_domain::page::Cursor as _;
use registry_domain::prompt::ports::Cached;
use registry_domain::prompt::{PromptName, VersionCursor, VersionNumber, VersionSelector};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::versions::{
    CreateVersionRequest, RenderRequest, RenderResponse, VersionPage, VersionResponse,
};
use super::params::{self, NameInPath, VersionInPath};
use super::prompts;
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    // Literal segments first: `latest` and `active` must not be read as numbers.
    cfg.service(get_active)
        .service(get_latest)
        .service(get_version)
        .service(create_version)
        .service(list_versions)
        .service(activate_version)
        .service(render);
}

/// Adds the next version. It becomes the active one unless `activate` is `false`.
#[utoipa::path(
    tag = "versions",
    params(NameInPath),
    request_body = CreateVersionRequest,
    responses(
        (status = 201, description = "Created", body = VersionResponse,
            headers(("Location" = String, description = "The version's URL"))),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid template or variables, e.g. an undeclared placeholder", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/versions")]
async fn create_version(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    body: Body<CreateVersionRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().try_into_domain()?;
    let version = state.prompts.create_version(&name, new).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            LOCATION,
            format!("{}/versions/{}", prompts::location(&name), version.version),
        ))
        .json(VersionResponse::from(&version)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListVersionsQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists a prompt's versions, newest first.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, ListVersionsQuery),
    responses(
        (status = 200, description = "A page of versions", body = VersionPage),
        (status = 400, description = "A bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/versions")]
async fn list_versions(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    query: web::Query<ListVersionsQuery>,
) -> Result<web::Json<VersionPage>, ApiError> {
    let page = params::page::<VersionCursor>(query.limit, query.cursor.as_deref(), params::MAX_LIMIT)?;
    let page = state.prompts.list_versions(&name, page).await?;
    Ok(web::Json(VersionPage {
        next_cursor: page.next.map(|c| c.encode()),
        items: page.items.iter().map(Into::into).collect(),
    }))
}

/// `active` and `latest` move: clients may keep a copy but must revalidate
/// it (cheaply, with `If-None-Match`).
const MOVING: &str = "private, no-cache";
/// A numbered version never changes.
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// Marks a version served past its cache TTL because the database was
/// unreachable (stale-if-error); `Age` then says how old the copy is.
pub const STALE: header::HeaderName = header::HeaderName::from_static("x-stale");

/// Adds the stale-if-error marker when `cached` was served stale.
fn mark_stale(response: &mut actix_web::HttpResponseBuilder, cached: &Cached) {
    if let Some(age) = cached.stale_age {
        response
            .insert_header((STALE, "stale-if-error"))
            .insert_header((header::AGE, age.as_secs()));
    }
}

async fn version(
    state: &AppState,
    req: &HttpRequest,
    name: &PromptName,
    selector: VersionSelector,
) -> Result<HttpResponse, ApiError> {
    let cached = state.prompts.fetch_version(name, selector).await?;
    let version = &cached.version;
    let cache_control = if matches!(selector, VersionSelector::Number(_)) {
        IMMUTABLE
    } else {
        MOVING
    };
    // A version's content never changes; only whether it is active does. Its
    // id and that flag name exactly one body: a strong validator.
    let flag = if version.is_active { "a" } else { "i" };
    let etag = EntityTag::new_strong(format!("{}-{flag}", version.id.simple()));
    let tag = etag.to_string();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim().trim_start_matches("W/") == tag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control));
    mark_stale(&mut response, &cached);
    if fresh {
        return Ok(response.finish());
    }
    let body = state
        .bodies
        .try_get_with((version.id, version.is_active), async {
            // With its final newline, so no middleware copies it again.
            serde_json::to_vec(&VersionResponse::from(version.as_ref())).map(|mut json| {
                json.push(b'\n');
                actix_web::web::Bytes::from(json)
            })
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot serialise a version: {e}")))?;
    Ok(response.content_type(header::ContentType::json()).body(body))
}

/// The newest version, active or not.
#[utoipa::path(
    tag = "versions",
    params(NameInPath),
    responses(
        (status = 200, description = "The latest version", body = VersionResponse, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        (status = 404, description = "No such prompt, or no versions yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/versions/latest")]
async fn get_latest(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
) -> Result<HttpResponse, ApiError> {
    version(&state, &req, &name, VersionSelector::Latest).await
}

/// The active version: what applications should use.
#[utoipa::path(
    tag = "versions",
    params(NameInPath),
    responses(
        (status = 200, description = "The active version", body = VersionResponse, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        (status = 404, description = "No such prompt, or no active version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/versions/active")]
async fn get_active(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
) -> Result<HttpResponse, ApiError> {
    version(&state, &req, &name, VersionSelector::Active).await
}

/// One version by number.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, VersionInPath),
    responses(
        (status = 200, description = "The version", body = VersionResponse, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        (status = 400, description = "Not a version number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/versions/{version}")]
async fn get_version(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
    VersionInPath(number): VersionInPath,
) -> Result<HttpResponse, ApiError> {
    version(&state, &req, &name, VersionSelector::Number(number)).await
}

/// Makes a version the active one, deactivating the previous one atomically.
/// Activating an older version is a rollback.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, VersionInPath),
    responses(
        (status = 200, description = "The now active version", body = VersionResponse),
        (status = 400, description = "Not a version number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/versions/{version}/activate")]
async fn activate_version(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    VersionInPath(number): VersionInPath,
) -> Result<web::Json<VersionResponse>, ApiError> {
    let version = state.prompts.activate_version(&name, number).await?;
    Ok(web::Json(VersionResponse::from(&version)))
}

/// Renders a version (the active one unless `version` is given) with values
/// for its variables. Missing required values, values of the wrong type and
/// undeclared names are all reported at once.
#[utoipa::path(
    tag = "versions",
    params(NameInPath),
    request_body = RenderRequest,
    responses(
        (status = 200, description = "The rendered text or messages", body = RenderResponse),
        (status = 404, description = "No such prompt or version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing, mistyped or undeclared variables", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/render")]
async fn render(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    body: Body<RenderRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let selector = match body.version {
        None => VersionSelector::Active,
        Some(n) => VersionSelector::Number(VersionNumber::new(n).map_err(|e| {
            ApiError::validation(vec![registry_domain::prompt::FieldError::new(
                "version",
                e.to_string(),
            )])
        })?),
    };
    let (cached, rendered) = state
        .prompts
        .render(&name, selector, &body.variables.unwrap_or_default())
        .await?;
    let mut response = HttpResponse::Ok();
    mark_stale(&mut response, &cached);
    Ok(response.json(RenderResponse::new(&cached.version, rendered)))
}
