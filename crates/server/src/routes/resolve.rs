//! `POST /v1/prompts:resolve`: many prompts in one call, each from the cache,
//! so an application loads every prompt it uses at startup with one request.

use actix_web::{post, web};
use futures::future::join_all;
use registry_domain::prompt::{FieldError, LabelName, PromptName, VersionNumber, VersionSelector};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::versions::VersionResponse;
use crate::body::Body;
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(resolve);
}

/// Most items one call may resolve.
pub const MAX_ITEMS: usize = 100;

/// One prompt to resolve: by `label` (default `production`) or `version`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveItem {
    #[schema(example = "support/triage")]
    pub name: String,
    /// A label; `production` when neither this nor `version` is given.
    pub label: Option<String>,
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// For a split label: who the prompt is for.
    pub subject: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// 1 to 100 items.
    pub items: Vec<ResolveItem>,
}

/// One item's answer: the version, or the problem it met. The other items
/// are answered either way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResolvedItem {
    pub name: String,
    /// The status this item would have had on its own: 200, or the problem's.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionResponse>,
    /// The label it was served under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether that label is a split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResolveResponse {
    /// In the order asked.
    pub items: Vec<ResolvedItem>,
}

/// What item `i` asks for, or every problem with how it is written.
fn selector(i: usize, item: &ResolveItem) -> Result<(PromptName, VersionSelector), Vec<FieldError>> {
    let mut errors = Vec::new();
    let field = |f: &str| format!("items[{i}].{f}");
    let name = PromptName::new(&item.name)
        .map_err(|e| errors.push(FieldError::new(field("name"), e.to_string())))
        .ok();
    let selector = match (item.version, item.label.as_deref()) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                field("label"),
                "give `version` or `label`, not both",
            ));
            None
        }
        (Some(n), None) => VersionNumber::new(n)
            .map(VersionSelector::Number)
            .map_err(|e| errors.push(FieldError::new(field("version"), e.to_string())))
            .ok(),
        (None, Some(l)) => LabelName::new(l)
            .map(VersionSelector::Label)
            .map_err(|e| errors.push(FieldError::new(field("label"), e.to_string())))
            .ok(),
        (None, None) => Some(VersionSelector::ACTIVE),
    };
    if let Some(Err(e)) = item.subject.as_deref().map(super::params::check_subject) {
        errors.push(FieldError::new(field("subject"), e));
    }
    match (name, selector) {
        (Some(name), Some(selector)) if errors.is_empty() => Ok((name, selector)),
        _ => Err(errors),
    }
}

async fn one(
    state: &AppState,
    item: ResolveItem,
    name: PromptName,
    selector: VersionSelector,
) -> ResolvedItem {
    let answer = state
        .prompts
        .serve(&name, selector, item.subject.as_deref())
        .await
        .map_err(ApiError::from);
    match answer {
        Ok(served) => ResolvedItem {
            name: item.name,
            status: 200,
            version: Some(VersionResponse::from(served.version.as_ref())),
            label: served.label.map(|l| l.to_string()),
            split: served.label.map(|_| served.split),
            error: None,
        },
        Err(e) => ResolvedItem {
            name: item.name,
            status: e.code.status().as_u16(),
            version: None,
            label: None,
            split: None,
            error: Some(e.body()),
        },
    }
}

/// Resolves up to 100 prompts in one call, each by label (default
/// `production`, with `subject` for a split) or version, from the cache.
/// A request with a malformed item (a bad name, label, version or subject)
/// is refused whole with a 422 naming `items[i].…`; an item whose prompt,
/// label or version does not exist carries its own problem, and the others
/// are answered. Needs the `read` scope, like a fetch.
#[utoipa::path(
    tag = "versions",
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Every item, in order, each with its version or its problem", body = ResolveResponse),
        (status = 422, description = "No items, more than 100, or a malformed item", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/prompts:resolve")]
async fn resolve(
    state: web::Data<AppState>,
    body: Body<ResolveRequest>,
) -> Result<web::Json<ResolveResponse>, ApiError> {
    let items = body.into_inner().items;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("send 1 to {MAX_ITEMS} items, not {}", items.len()),
        ));
    }
    let mut errors = Vec::new();
    let mut asked = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match selector(i, &item) {
            Ok((name, selector)) => asked.push((item, name, selector)),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let state = state.get_ref();
    let answers = join_all(
        asked
            .into_iter()
            .map(|(item, name, selector)| one(state, item, name, selector)),
    )
    .await;
    Ok(web::Json(ResolveResponse { items: answers }))
}
