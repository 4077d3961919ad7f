//! `/v1/prompts/{name}/versions` and `/render`: immutable versions, fetched
//! by number, `latest` or label (with a subject for split labels),
//! activation (the `production` alias) and rendering.

use actix_web::http::header::{self, EntityTag, LOCATION};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use registry_domain::page::Cursor as _;
use registry_domain::prompt::ports::Served;
use registry_domain::prompt::{
    FieldError, LabelName, PromptName, VersionCursor, VersionNumber, VersionSelector,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::versions::{
    CreateVersionRequest, DiffResponse, RenderRequest, RenderResponse, VersionPage, VersionRequest,
    VersionResponse,
};
use super::params::{self, Caller, NameInPath, SelectorInPath, VersionInPath};
use super::prompts;
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get_version)
        .service(create_version)
        .service(list_versions)
        .service(activate_version)
        .service(render)
        .service(diff);
}

/// Adds the next version. Label `production` moves to it unless `activate`
/// is `false`, and so does every label in `labels`, each recorded in its
/// history. A protected label among them needs the `release` scope (403,
/// and nothing is created).
#[utoipa::path(
    tag = "versions",
    params(NameInPath),
    request_body = CreateVersionRequest,
    responses(
        (status = 201, description = "Created", body = VersionResponse,
            headers(("Location" = String, description = "The version's URL"))),
        (status = 403, description = "A label to set is protected", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Moving a protected label to it breaks callers (see `allow_breaking`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid template or variables, e.g. an undeclared placeholder", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/versions")]
async fn create_version(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    Caller(ctx): Caller,
    body: Body<CreateVersionRequest>,
) -> Result<HttpResponse, ApiError> {
    let version = match body.into_inner().try_into_domain()? {
        VersionRequest::New(new) => state.prompts.create_version(&name, *new, &ctx).await?,
        VersionRequest::Rebase {
            commit_message,
            activate,
            labels,
            allow_breaking,
        } => {
            state
                .prompts
                .rebase_includes(&name, commit_message, activate, labels, allow_breaking, &ctx)
                .await?
        }
    };
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
const MOVING: header::HeaderValue = header::HeaderValue::from_static("private, no-cache");
/// A numbered version never changes.
const IMMUTABLE: header::HeaderValue =
    header::HeaderValue::from_static("private, max-age=31536000, immutable");
const JSON: header::HeaderValue = header::HeaderValue::from_static("application/json");
const PRODUCTION: header::HeaderValue = header::HeaderValue::from_static("production");

/// Marks a version served past its cache TTL because the database was
/// unreachable (stale-if-error); `Age` then says how old the copy is.
pub const STALE: header::HeaderName = header::HeaderName::from_static("x-stale");

/// The version served, and whether it came from a split label.
pub const SERVED_VERSION: header::HeaderName = header::HeaderName::from_static("x-prompt-version");
pub const SERVED_LABEL: header::HeaderName = header::HeaderName::from_static("x-prompt-label");
pub const SERVED_SPLIT: header::HeaderName = header::HeaderName::from_static("x-prompt-split");
/// The subject a split label is resolved for, when not in the query.
pub const SUBJECT: header::HeaderName = header::HeaderName::from_static("x-prompt-subject");

/// Says what was served: the stale-if-error marker when it was served
/// stale, and the version (`number`, its header value), label and split
/// flag. Constant values are static: no copy per request.
fn describe(response: &mut actix_web::HttpResponseBuilder, served: &Served, number: header::HeaderValue) {
    if let Some(age) = served.stale_age {
        response
            .insert_header((STALE, header::HeaderValue::from_static("stale-if-error")))
            .insert_header((header::AGE, age.as_secs()));
    }
    response.insert_header((SERVED_VERSION, number));
    if let Some(label) = served.label {
        let split = header::HeaderValue::from_static(if served.split { "true" } else { "false" });
        // The active version's label, most fetches' answer, without a copy.
        if label == LabelName::PRODUCTION {
            response.insert_header((SERVED_LABEL, PRODUCTION));
        } else {
            response.insert_header((SERVED_LABEL, label.as_str()));
        }
        response.insert_header((SERVED_SPLIT, split));
    }
}

/// A subject from the query or the `X-Prompt-Subject` header: 1–256
/// characters without control characters.
fn subject(from_query: Option<String>, req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let raw = from_query.or_else(|| {
        req.headers()
            .get(SUBJECT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(s) = &raw {
        params::check_subject(s).map_err(|e| ApiError::parameter("subject", e))?;
    }
    Ok(raw)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubjectQuery {
    /// Who the prompt is for (a user or session id): a split label serves
    /// the same subject the same version on every replica, every time.
    /// Also accepted as the `X-Prompt-Subject` header. Without one, a split
    /// picks at random per request.
    subject: Option<String>,
}

async fn version(
    state: &AppState,
    req: &HttpRequest,
    name: &PromptName,
    selector: VersionSelector,
    subject: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let served = state.prompts.serve(name, selector, subject).await?;
    let version = &served.version;
    let cache_control = if matches!(selector, VersionSelector::Number(_)) {
        IMMUTABLE
    } else {
        MOVING
    };
    // A version's content never changes; only whether it is active does. Its
    // id and that flag name exactly one body: a strong validator. Both are
    // computed once.
    let rendered = state
        .bodies
        .get_or_render((version.id, version.is_active), || {
            let flag = if version.is_active { "a" } else { "i" };
            let etag = EntityTag::new_strong(format!("{}-{flag}", version.id.simple())).to_string();
            // With its final newline, so no middleware copies it again.
            let mut json = serde_json::to_vec(&VersionResponse::from(version.as_ref()))?;
            json.push(b'\n');
            anyhow::Ok(crate::state::Rendered {
                body: actix_web::web::Bytes::from(json),
                etag: header::HeaderValue::from_str(&etag)?,
                version: header::HeaderValue::from(version.version.get()),
            })
        })
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot serialise a version: {e}")))?;
    let tag = rendered.etag.as_bytes();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',')
                    .any(|t| t.trim().trim_start_matches("W/").as_bytes() == tag)
        });
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, rendered.etag.clone()))
        .insert_header((header::CACHE_CONTROL, cache_control));
    describe(&mut response, &served, rendered.version);
    if fresh {
        return Ok(response.finish());
    }
    let body = rendered.body;
    Ok(response.insert_header((header::CONTENT_TYPE, JSON)).body(body))
}

/// One version: by number, `latest` (the highest number), `active` (the
/// label `production`), or any label. A split label serves the arm the
/// subject falls in; `X-Prompt-Version`, `X-Prompt-Label` and
/// `X-Prompt-Split` say what was served. A removed label is a 404 at once.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, SelectorInPath, SubjectQuery),
    responses(
        (status = 200, description = "The version", body = VersionResponse, headers(
            ("ETag" = String), ("Cache-Control" = String),
            ("X-Prompt-Version" = u32, description = "The version served"),
            ("X-Prompt-Label" = String, description = "The label it was served under, for a label selector"),
            ("X-Prompt-Split" = bool, description = "Whether that label is a weighted split"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        (status = 400, description = "Not a version number, `latest`, `active` or a label; or a bad subject", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt, version or label", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/versions/{selector}")]
async fn get_version(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
    SelectorInPath(selector): SelectorInPath,
    query: web::Query<SubjectQuery>,
) -> Result<HttpResponse, ApiError> {
    let subject = subject(query.into_inner().subject, &req)?;
    version(&state, &req, &name, selector, subject.as_deref()).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllowBreaking {
    /// Move a protected label even when the change breaks callers (recorded).
    allow_breaking: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The old side: a version number, `latest`, `active` or a label.
    from: String,
    /// The new side: a version number, `latest`, `active` or a label.
    to: String,
}

/// What changed between two versions: the template as a unified diff (per
/// message for chat), the variable schema, and the config as an RFC 6902
/// JSON Patch; `breaking` with the reasons when callers of the old version
/// may fail with the new one.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, DiffQuery),
    responses(
        (status = 200, description = "The diff", body = DiffResponse),
        (status = 400, description = "A side that is not a version, `latest`, `active` or a label", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt, version or label", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A side that is a split label", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/diff")]
async fn diff(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    query: web::Query<DiffQuery>,
) -> Result<web::Json<DiffResponse>, ApiError> {
    let side =
        |field: &str, raw: &str| VersionSelector::parse(raw).map_err(|e| ApiError::parameter(field, e));
    let (from, to) = (side("from", &query.from)?, side("to", &query.to)?);
    let diff = state.prompts.diff(&name, from, to).await?;
    Ok(web::Json(DiffResponse::from(&diff)))
}

/// Points label `production` at a version (the alias kept from before
/// labels; `PUT /labels/production` is the same move). Activating an older
/// version is a rollback. Recorded in the label's history.
#[utoipa::path(
    tag = "versions",
    params(NameInPath, VersionInPath, AllowBreaking),
    responses(
        (status = 200, description = "The now active version", body = VersionResponse),
        (status = 409, description = "`production` is protected and the change breaks callers", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Not a version number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`production` is protected and the key lacks `release`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/versions/{version}/activate")]
async fn activate_version(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    VersionInPath(number): VersionInPath,
    Caller(ctx): Caller,
    query: web::Query<AllowBreaking>,
) -> Result<web::Json<VersionResponse>, ApiError> {
    let allow = query.allow_breaking.unwrap_or(false);
    let version = state.prompts.activate_version(&name, number, allow, &ctx).await?;
    Ok(web::Json(VersionResponse::from(&version)))
}

/// Renders a version (`version`, else `label`, else `production`) with
/// values for its variables; a split label renders `subject`'s arm. Missing
/// required values, values of the wrong type and undeclared names are all
/// reported at once.
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
    let mut errors = Vec::new();
    let number = body.version.and_then(|n| {
        VersionNumber::new(n)
            .map_err(|e| errors.push(FieldError::new("version", e.to_string())))
            .ok()
    });
    let label = body.label.as_deref().and_then(|l| {
        LabelName::new(l)
            .map_err(|e| errors.push(FieldError::new("label", e.to_string())))
            .ok()
    });
    if body.version.is_some() && body.label.is_some() {
        errors.push(FieldError::new("label", "give `version` or `label`, not both"));
    }
    if let Some(Err(e)) = body.subject.as_deref().map(params::check_subject) {
        errors.push(FieldError::new("subject", e));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let selector = match (number, label) {
        (Some(n), _) => VersionSelector::Number(n),
        (None, Some(l)) => VersionSelector::Label(l),
        (None, None) => VersionSelector::ACTIVE,
    };
    let (served, rendered) = state
        .prompts
        .render(
            &name,
            selector,
            body.subject.as_deref(),
            &body.variables.unwrap_or_default(),
        )
        .await?;
    let mut response = HttpResponse::Ok();
    describe(
        &mut response,
        &served,
        header::HeaderValue::from(served.version.version.get()),
    );
    Ok(response.json(RenderResponse::new(&served.version, rendered)))
}
