//! `/v1/audit`: every change made through the API, newest first. Admin only.

use actix_web::{get, web};
use registry_domain::audit::{Action, AuditFilter, AuditLog as _};
use registry_domain::page::Cursor as _;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use super::dto::labels::{AuditEventResponse, AuditPage};
use super::params;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_audit);
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// A key id, or an actor's name.
    actor: Option<String>,
    /// `prompt.created`, `prompt.updated`, `prompt.deleted`, `version.created`,
    /// `label.moved`, `label.removed`, `label.rolled_back`, `label.protected`,
    /// `label.unprotected`, `key.created` or `key.revoked`.
    action: Option<String>,
    /// Exactly this target, or every target starting with it when it ends
    /// with `*` (`prompt:greeting*`).
    target: Option<String>,
    /// From this time (RFC 3339), inclusive.
    from: Option<String>,
    /// Before this time (RFC 3339).
    to: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The audit log: who changed what, when, in which request. Reads are not recorded.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = AuditPage),
        (status = 400, description = "A bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/audit")]
async fn list_audit(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<AuditPage>, ApiError> {
    let query = query.into_inner();
    let action = query
        .action
        .as_deref()
        .map(|a| {
            Action::parse(a).ok_or_else(|| ApiError::parameter("action", format!("`{a}` is not an action")))
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: params::text("actor", query.actor)?,
        action,
        target: params::text("target", query.target)?,
        from: params::timestamp("from", query.from.as_deref())?,
        to: params::timestamp("to", query.to.as_deref())?,
    };
    let page = params::page(query.limit, query.cursor.as_deref(), params::MAX_LIMIT)?;
    let page = state.audit.list(&filter, &page).await?;
    Ok(web::Json(AuditPage {
        next_cursor: page.next.map(|c| c.encode()),
        items: page.items.iter().map(AuditEventResponse::from).collect(),
    }))
}
