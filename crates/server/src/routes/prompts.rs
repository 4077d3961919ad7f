//! `/v1/prompts`: create, list, read, update and delete prompts.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use registry_domain::page::{Cursor as _, TimeCursor};
use registry_domain::prompt::{PromptFilter, PromptName, Tags};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::prompts::{
    CreatePromptRequest, DependentResponse, PromptPage, PromptResponse, UpdatePromptRequest,
};
use super::params::{self, Caller, NameInPath};
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_prompt)
        .service(list_prompts)
        .service(get_prompt)
        .service(update_prompt)
        .service(delete_prompt)
        .service(dependents);
}

/// The versions of other prompts that include this one, with the version of
/// this one each was built from: what a change to a shared part affects.
#[utoipa::path(
    tag = "prompts",
    params(NameInPath),
    responses(
        (status = 200, description = "Every including version", body = Vec<DependentResponse>),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}/dependents")]
async fn dependents(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
) -> Result<web::Json<Vec<DependentResponse>>, ApiError> {
    let found = state.prompts.dependents(&name).await?;
    Ok(web::Json(found.iter().map(Into::into).collect()))
}

/// The path of a prompt, with `/` in its name percent-encoded.
#[must_use]
pub fn location(name: &PromptName) -> String {
    format!("/v1/prompts/{}", name.as_str().replace('/', "%2F"))
}

/// Registers a prompt. Its versions are added with `POST /v1/prompts/{name}/versions`.
#[utoipa::path(
    tag = "prompts",
    request_body = CreatePromptRequest,
    responses(
        (status = 201, description = "Created", body = PromptResponse,
            headers(("Location" = String, description = "The prompt's URL"))),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, description or tags", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts")]
async fn create_prompt(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    body: Body<CreatePromptRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().try_into_domain()?;
    let prompt = state.prompts.create_prompt(new, &ctx).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, location(&prompt.name)))
        .json(PromptResponse::from(prompt)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPromptsQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only prompts created after this RFC 3339 time.
    created_after: Option<String>,
    /// Only prompts created before this RFC 3339 time.
    created_before: Option<String>,
    /// Only names starting with this text.
    q: Option<String>,
    /// Only prompts carrying exactly this tag.
    tag: Option<String>,
}

/// Lists prompts in creation order (oldest first), a page at a time.
#[utoipa::path(
    tag = "prompts",
    params(ListPromptsQuery),
    responses(
        (status = 200, description = "A page of prompts", body = PromptPage),
        (status = 400, description = "A bad limit, cursor or time", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts")]
async fn list_prompts(
    state: web::Data<AppState>,
    query: web::Query<ListPromptsQuery>,
) -> Result<web::Json<PromptPage>, ApiError> {
    let query = query.into_inner();
    let page = params::page::<TimeCursor>(query.limit, query.cursor.as_deref(), params::MAX_LIMIT)?;
    if let Some(tag) = &query.tag {
        Tags::check(tag).map_err(|e| ApiError::parameter("tag", e))?;
    }
    let filter = PromptFilter {
        created_after: params::timestamp("created_after", query.created_after.as_deref())?,
        created_before: params::timestamp("created_before", query.created_before.as_deref())?,
        name_prefix: params::text("q", query.q)?.filter(|q| !q.is_empty()),
        tag: query.tag,
    };
    let page = state.prompts.list_prompts(filter, page).await?;
    Ok(web::Json(PromptPage {
        next_cursor: page.next.map(|c| c.encode()),
        items: page.items.into_iter().map(Into::into).collect(),
    }))
}

/// Reads a prompt, with the numbers of its active and latest versions.
#[utoipa::path(
    tag = "prompts",
    params(NameInPath),
    responses(
        (status = 200, description = "The prompt", body = PromptResponse),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/prompts/{name}")]
async fn get_prompt(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
) -> Result<web::Json<PromptResponse>, ApiError> {
    Ok(web::Json(state.prompts.get_prompt(&name).await?.into()))
}

/// Changes a prompt's description or tags. Versions never change.
#[utoipa::path(
    tag = "prompts",
    params(NameInPath),
    request_body = UpdatePromptRequest,
    responses(
        (status = 200, description = "The updated prompt", body = PromptResponse),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid description or tags", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/prompts/{name}")]
async fn update_prompt(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    Caller(ctx): Caller,
    body: Body<UpdatePromptRequest>,
) -> Result<web::Json<PromptResponse>, ApiError> {
    let patch = body.into_inner().try_into_domain()?;
    Ok(web::Json(
        state.prompts.update_prompt(&name, patch, &ctx).await?.into(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even when other prompts' versions include this one (they keep
    /// the text they were built with).
    force: Option<bool>,
}

/// Deletes a prompt and all its versions and labels. A prompt that other
/// prompts' versions include is kept (409, naming a few of them) unless
/// `force=true`.
#[utoipa::path(
    tag = "prompts",
    params(NameInPath, DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such prompt", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Other prompts include it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/prompts/{name}")]
async fn delete_prompt(
    state: web::Data<AppState>,
    NameInPath(name): NameInPath,
    Caller(ctx): Caller,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    state
        .prompts
        .delete_prompt(&name, query.force.unwrap_or(false), &ctx)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
