//! Authentication and authorisation of every request, deny by default.
//!
//! Which scope a request needs follows from its method and path alone, so a
//! route added later is protected without anyone remembering to: anything
//! not on the public list needs a key; `/v1/api-keys`, `/v1/audit` and `/v1/webhooks` need
//! `admin`; other reads (and `POST /v1/prompts:resolve`, a batch of reads)
//! need `read`, and other writes `write`; `/mcp` only reads prompts, so it
//! needs `read` whatever the method. Rules that depend on the data (a
//! protected label needs `release`) are the domain's.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _, web};
use registry_domain::auth::Scope;
use registry_domain::auth::service::Principal;

use crate::problem::{ApiError, ErrorCode};
use crate::state::AppState;

/// Paths that answer without a key.
const PUBLIC: [&str; 5] = ["/", "/health", "/ready", "/openapi.json", "/docs"];

/// The scope a request needs, or `None` for a public path.
#[must_use]
pub fn required_scope(method: &Method, path: &str, metrics_public: bool) -> Option<Scope> {
    // The console signs browsers in with sessions, checked by its own gate
    // ([`crate::ui::gate`]) with the same scopes.
    if PUBLIC.contains(&path)
        || path.starts_with("/docs/")
        || (path == "/metrics" && metrics_public)
        || crate::ui::is_console(path)
    {
        return None;
    }
    if path == "/metrics"
        || path == "/v1/api-keys"
        || path.starts_with("/v1/api-keys/")
        || path == "/v1/audit"
        || path.starts_with("/v1/audit/")
        || path == "/v1/webhooks"
        || path.starts_with("/v1/webhooks/")
    {
        return Some(Scope::Admin);
    }
    // MCP only reads prompts, whatever the method (POST carries JSON-RPC,
    // DELETE ends the caller's own session).
    if path == crate::startup::MCP_PATH {
        return Some(Scope::Read);
    }
    // Resolving many prompts at once is a read, sent as a POST for its body.
    if *method == Method::GET || *method == Method::HEAD || path == "/v1/prompts:resolve" {
        Some(Scope::Read)
    } else {
        Some(Scope::Write)
    }
}

const X_API_KEY: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("x-api-key");

/// The key a request carries: `Authorization: Bearer <key>` or `X-API-Key`.
/// Looked up by constant header names: a name given as a string is parsed
/// and lowercased on every call.
fn presented(req: &ServiceRequest) -> Option<&str> {
    let headers = req.headers();
    let bearer = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    bearer
        .or_else(|| {
            headers
                .get(X_API_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// Admits a request whose key holds the scope its route needs.
///
/// # Errors
/// A missing application state, or what the inner service returns. Refusals
/// (401 without a valid key, 403 without the scope, 500 when keys cannot be
/// checked) are problem responses, not errors.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::internal(anyhow::anyhow!("no application state")).into());
    };
    let Some(needed) = required_scope(req.method(), req.path(), state.metrics_public) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let refuse =
        |req: ServiceRequest, e: ApiError| Ok(req.into_response(e.error_response()).map_into_right_body());
    let Some(key) = presented(&req) else {
        return refuse(
            req,
            ApiError::new(
                ErrorCode::Unauthorized,
                "send an API key: Authorization: Bearer <key>",
            ),
        );
    };
    let principal = match state.auth.authenticate(key).await {
        Ok(p) => p,
        Err(e) => return refuse(req, e.into()),
    };
    if !principal.allows(needed) {
        let e = ApiError::new(
            ErrorCode::Forbidden,
            format!("this key lacks the `{needed}` scope"),
        );
        return refuse(req, e);
    }
    if let Principal::Key(k) = &principal {
        tracing::Span::current().record("key_id", tracing::field::display(k.id));
    }
    req.extensions_mut().insert(principal);
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_need_nothing_and_everything_else_needs_a_scope() {
        for path in ["/health", "/ready", "/openapi.json", "/docs", "/docs/index.html"] {
            assert_eq!(required_scope(&Method::GET, path, false), None, "{path}");
        }
        assert_eq!(required_scope(&Method::GET, "/metrics", true), None);
        assert_eq!(
            required_scope(&Method::GET, "/metrics", false),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/prompts", false),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/runs", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/prompts/x", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/api-keys", false),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/audit", false),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/anything-new", false),
            Some(Scope::Read)
        );
        assert_eq!(required_scope(&Method::GET, "/healthz", false), Some(Scope::Read));
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
            assert_eq!(
                required_scope(&method, "/mcp", false),
                Some(Scope::Read),
                "{method}"
            );
        }
        assert_eq!(required_scope(&Method::POST, "/mcp/x", false), Some(Scope::Write));
    }
}
