//! `/v1/prompts/{name}/labels`: named pointers to versions (or weighted
//! splits), moved with compare-and-set, protected, and kept with their
//! history.

use actix_web::http::header::{self, EntityTag};
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, put, web};
use registry_domain::page::Cursor as _;
use registry_domain::prompt::label::check_reason;
use registry_domain::prompt::{Expected, FieldError, Label, VersionNumber};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::labels::{
    LabelChangeResponse, LabelHistoryPage, LabelResponse, MoveLabelRequest, ProtectLabelRequest,
    RollbackRequest,
};
use super::params::{self, Caller, LabelInPath, NameInPath};
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_labels)
        .service(get_label)
        .service(move_label)
        .service(remove_label)
        .service(protect_label)
        .service(label_history)
        .service(rollback_label);
}

fn etag(label: &Label) -> EntityTag {
    EntityTag::new_strong(format!("r{}", label.revision))
}

/// The expectation a request carries: `If-Match: "r<revision>"` and/or
/// `expected_version`.
fn expected(req: &HttpRequest, expected_version: Option<i64>) -> Result<Expected, ApiError> {
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|s| s.strip_prefix('r'))
                .and_then(|r| r.parse::<u32>().ok())
                .ok_or_else(|| ApiError::parameter("If-Match", "expected a label ETag such as \"r3\""))
        })
        .transpose()?;
    match (if_match, expected_version) {
        (Some(_), Some(_)) => Err(ApiError::validation(vec![FieldError::new(
            "expected_version",
            "give `If-Match` or `expected_version`, not both",
        )])),
        (Some(r), None) => Ok(Expected::Revision(r)),
        (None, Some(v)) => VersionNumber::new(v)
            .map(Expected::Version)
            .map_err(|e| ApiError::validation(vec![FieldError::new("expected_version", e.to_string())])),
        (None, None) => Ok(Expected::Anything),
    }
}

fn labelled(status: actix_web::http::StatusCode, label: &Label) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, etag(label)))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(LabelResponse::from(label))
}

/// The prompt's labels that point somewhere, by name.
#[utoipa::path(
    tag = "labels",
    params(NameInPath),
    responses(
        (status = 200, description = "Every label", body = Vec<LabelResponse>),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/labels")]
async fn list_labels(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
) -> Result<web::Json<Vec<LabelResponse>>, ApiError> {
    let labels = state.prompts.list_labels(&name).await?;
    Ok(web::Json(labels.iter().map(Into::into).collect()))
}

/// One label, with its `ETag` for a compare-and-set move.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath),
    responses(
        (status = 200, description = "The label", body = LabelResponse, headers(("ETag" = String))),
        (status = 400, description = "A bad label name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or label", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/labels/{label}")]
async fn get_label(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
) -> Result<HttpResponse, ApiError> {
    let label = state.prompts.get_label(&name, label).await?;
    Ok(labelled(actix_web::http::StatusCode::OK, &label))
}

/// Moves a label (or creates it) to a version or a weighted split. With
/// `If-Match` (the label's `ETag`) or `expected_version`, the move happens
/// only if the label is still there: otherwise 412 and nothing changes. A
/// protected label needs the `release` scope. Recorded in its history and
/// the audit log; once this returns, no replica serves the old target.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath, ("If-Match" = Option<String>, Header, description = "The label's ETag (`\"r3\"`): move only if unchanged")),
    request_body = MoveLabelRequest,
    responses(
        (status = 200, description = "Moved", body = LabelResponse, headers(("ETag" = String))),
        (status = 201, description = "Created", body = LabelResponse, headers(("ETag" = String))),
        (status = 400, description = "A bad label name or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The label is protected and the key lacks `release`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The label is protected and the move breaks callers (see `allow_breaking`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The label moved since the ETag or expected version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No version or split, a bad split, or a version that does not exist", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/prompts/{name}/labels/{label}")]
async fn move_label(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
    Caller(ctx): Caller,
    body: Body<MoveLabelRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    let target = body.target().map_err(|e| errors.extend(e)).ok();
    let reason = check_reason(body.reason.clone()).map_err(|e| errors.push(e)).ok();
    let expected = expected(&req, body.expected_version)?;
    let (Some(target), Some(reason)) = (target, reason) else {
        return Err(ApiError::validation(errors));
    };
    let moved = state
        .prompts
        .move_label(
            &name,
            label,
            target,
            expected,
            reason,
            body.allow_breaking.unwrap_or(false),
            &ctx,
        )
        .await?;
    let status = if moved.revision == 1 {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(labelled(status, &moved))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Compare-and-set: remove only if the label points at exactly this version.
    #[param(minimum = 1)]
    expected_version: Option<i64>,
    /// Why, for the history.
    reason: Option<String>,
}

/// Removes a label: from the moment this returns it resolves nowhere (404),
/// never to its old version. A protected label stays protected.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath, RemoveQuery, ("If-Match" = Option<String>, Header, description = "The label's ETag: remove only if unchanged")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "A bad label name, If-Match, expected version or reason", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The label is protected and the key lacks `release`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or label", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The label moved since", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Both If-Match and expected_version", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/prompts/{name}/labels/{label}")]
async fn remove_label(
    state: web::Data<AppState>,
    req: HttpRequest,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
    Caller(ctx): Caller,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let reason = check_reason(params::text("reason", query.reason)?)
        .map_err(|e| ApiError::parameter("reason", e.message))?;
    let expected = expected(&req, query.expected_version)?;
    state
        .prompts
        .remove_label(&name, label, expected, reason, &ctx)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Protects a label or lifts its protection. Admin only.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath),
    request_body = ProtectLabelRequest,
    responses(
        (status = 200, description = "The label", body = LabelResponse, headers(("ETag" = String))),
        (status = 400, description = "A bad label name", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or label", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body without `protected`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/prompts/{name}/labels/{label}")]
async fn protect_label(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
    Caller(ctx): Caller,
    body: Body<ProtectLabelRequest>,
) -> Result<HttpResponse, ApiError> {
    let label = state
        .prompts
        .protect_label(&name, label, body.into_inner().protected, &ctx)
        .await?;
    Ok(labelled(actix_web::http::StatusCode::OK, &label))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Every change of the label, newest first: from, to, who, when, why, and
/// the request. Append-only.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath, HistoryQuery),
    responses(
        (status = 200, description = "A page of changes", body = LabelHistoryPage),
        (status = 400, description = "A bad label name, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/labels/{label}/history")]
async fn label_history(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<LabelHistoryPage>, ApiError> {
    let page = params::page(query.limit, query.cursor.as_deref(), params::MAX_LIMIT)?;
    let page = state.prompts.label_history(&name, label, page).await?;
    Ok(web::Json(LabelHistoryPage {
        next_cursor: page.next.map(|c| c.encode()),
        items: page.items.iter().map(LabelChangeResponse::from).collect(),
    }))
}

/// Moves the label back to where it was before its last change, in one
/// call (itself recorded). 409 when its last change created it; 412 if it
/// moves while this runs. The body may be left out.
#[utoipa::path(
    tag = "labels",
    params(NameInPath, LabelInPath),
    request_body(content = Option<RollbackRequest>),
    responses(
        (status = 200, description = "Rolled back", body = LabelResponse, headers(("ETag" = String))),
        (status = 400, description = "A bad label name, or a body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The label is protected and the key lacks `release`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt or label", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to roll back to, or going back breaks callers (see `allow_breaking`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The label moved meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape, or a reason too long", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts/{name}/labels/{label}/rollback")]
async fn rollback_label(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    LabelInPath(label): LabelInPath,
    Caller(ctx): Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: RollbackRequest = crate::body::optional(&body)?;
    let reason = check_reason(body.reason).map_err(|e| ApiError::validation(vec![e]))?;
    let allow = body.allow_breaking.unwrap_or(false);
    let label = state
        .prompts
        .rollback_label(&name, label, reason, allow, &ctx)
        .await?;
    Ok(labelled(actix_web::http::StatusCode::OK, &label))
}
