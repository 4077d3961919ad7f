//! HTTP routes, grouped per resource. Each module exposes `configure`.

pub mod dto;
pub mod health;
pub mod keys;
pub mod params;
pub mod prompts;
pub mod runs;
pub mod versions;

use utoipa::OpenApi;

/// The OpenAPI document's fixed parts; paths and schemas are collected from
/// the handlers as they are registered.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Prompt Registry",
        description = "Register prompts, keep every change as an immutable numbered version, choose the active one, and render it.\n\nPrompt names may contain `/`: percent-encode it as `%2F` in paths, e.g. `/v1/prompts/support%2Ftriage`.\n\nErrors are `application/problem+json` (RFC 9457) with a stable `code`."
    ),
    tags(
        (name = "prompts", description = "Prompts: names, descriptions and tags"),
        (name = "versions", description = "Immutable, numbered versions of a prompt, activation and rendering"),
        (name = "runs", description = "Logged executions of prompt versions, and their statistics"),
        (name = "api-keys", description = "API keys (admin scope)"),
        (name = "operations", description = "Liveness and readiness"),
    ),
    components(schemas(crate::problem::Problem, crate::problem::ProblemField)),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = []))
)]
pub struct ApiDoc;

/// Declares how keys are sent, so Swagger UI's Authorize button works.
#[derive(Debug)]
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer pr_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}
