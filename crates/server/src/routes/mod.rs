//! HTTP routes, grouped per resource. Each module exposes `configure`.

pub mod audit;
pub mod dto;
pub mod events;
pub mod health;
pub mod keys;
pub mod labels;
pub mod params;
pub mod prompts;
pub mod resolve;
pub mod runs;
pub mod traces;
pub mod versions;
pub mod webhooks;

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
        (name = "versions", description = "Immutable, numbered versions of a prompt, fetched by number, `latest` or label, and rendering"),
        (name = "labels", description = "Named pointers to versions or weighted splits: compare-and-set moves, protection, history and rollback"),
        (name = "runs", description = "Logged executions of prompt versions, and their statistics"),
        (name = "api-keys", description = "API keys (admin scope)"),
        (name = "audit", description = "Every change made through the API (admin scope)"),
        (name = "traces", description = "OpenTelemetry trace exports (OTLP/HTTP, protobuf or JSON): LLM calls become runs"),
        (name = "events", description = "Change events, numbered in commit order by the database, as pages or a live stream"),
        (name = "webhooks", description = "Endpoints that receive the change events, signed (Standard Webhooks), with their deliveries (admin scope)"),
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

/// Completes the document once the handlers' paths are in it.
#[must_use]
pub fn finish_document(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    utoipa::Modify::modify(&CommonResponses, &mut api);
    api
}

/// Documents what every operation can answer besides its own responses, so
/// the document stays true when a handler is added: 401/403 where a key is
/// needed, 400/413/415/422 where there is a body, 400 where there are
/// parameters; and gives prompt names their pattern.
#[derive(Debug)]
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

        let problem = |description: &str| -> RefOr<utoipa::openapi::Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        let name_schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-z0-9][a-z0-9._/-]*$"))
            .min_length(Some(1))
            .max_length(Some(128))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let secured = op
                    .security
                    .as_ref()
                    .is_none_or(|reqs| reqs.iter().any(|r| *r != SecurityRequirement::default()));
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description));
                };
                if secured {
                    add("401", "No key, or an unknown or revoked key");
                    add("403", "The key lacks the scope this operation needs");
                }
                if op.request_body.is_some() {
                    add("400", "The body is not valid JSON");
                    add("413", "The body is larger than the configured limit");
                    add("415", "The body is not sent as application/json");
                    add("422", "The body does not fit the schema or breaks a rule");
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add("400", "A path or query parameter is invalid");
                }
                for param in op.parameters.iter_mut().flatten() {
                    if let RefOr::T(p) = param
                        && p.name == "name"
                        && p.parameter_in == ParameterIn::Path
                    {
                        p.schema = Some(RefOr::T(name_schema.clone().into()));
                    }
                }
            }
        }
    }
}
