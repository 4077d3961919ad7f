//! `POST /v1/prompts:resolve`: many prompts in one call, each from the cache,
//! so an application loads every prompt it uses at startup with one request.

use actix_web::{post, web};
use futures::future::join_all;
use registry_domain::prompt::{LabelName, PromptName, VersionNumber, VersionSelector};
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
const MAX_SUBJECT: usize = 256;

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

fn selector(item: &ResolveItem) -> Result<(PromptName, VersionSelector), ApiError> {
    let name = PromptName::new(&item.name).map_err(|e| ApiError::parameter("name", e))?;
    let selector = match (item.version, item.label.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::parameter(
                "label",
                "give `version` or `label`, not both",
            ));
        }
        (Some(n), None) => {
            VersionSelector::Number(VersionNumber::new(n).map_err(|e| ApiError::parameter("version", e))?)
        }
        (None, Some(l)) => {
            VersionSelector::Label(LabelName::new(l).map_err(|e| ApiError::parameter("label", e))?)
        }
        (None, None) => VersionSelector::ACTIVE,
    };
    if item
        .subject
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.chars().count() > MAX_SUBJECT || s.chars().any(char::is_control))
    {
        return Err(ApiError::parameter(
            "subject",
            format!("a subject is 1 to {MAX_SUBJECT} characters, without control characters"),
        ));
    }
    Ok((name, selector))
}

async fn one(state: &AppState, item: ResolveItem) -> ResolvedItem {
    let answer = match selector(&item) {
        Ok((name, selector)) => state
            .prompts
            .serve(&name, selector, item.subject.as_deref())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
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
/// An item that fails (no such prompt, a bad label) carries its own problem;
/// the others are answered. Needs the `read` scope, like a fetch.
#[utoipa::path(
    tag = "versions",
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Every item, in order, each with its version or its problem", body = ResolveResponse),
        (status = 422, description = "No items, or more than 100", body = Problem, content_type = "application/problem+json"),
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
    let state = state.get_ref();
    let answers = join_all(items.into_iter().map(|item| one(state, item))).await;
    Ok(web::Json(ResolveResponse { items: answers }))
}
