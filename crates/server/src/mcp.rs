//! The registry's prompts over the Model Context Protocol, at `/mcp`.
//!
//! What it owns: the MCP view of prompts (`prompts/list`, `prompts/get`,
//! `notifications/prompts/list_changed`) and the bridge that hands actix-web
//! requests to rmcp's Streamable HTTP transport. What it must not touch: the
//! rules of rendering. `prompts/get` renders through [`PromptService::render`],
//! the call `POST /v1/prompts/{name}/render` makes, so a prompt renders the
//! same here and over REST; this module only turns MCP's string arguments
//! into the declared JSON types and the result into MCP messages.
//!
//! Conventions (docs/mcp.md says the same to users):
//! - Each prompt's arguments are the variables declared by the version its
//!   `production` label serves (else its latest version), plus two optional
//!   selectors, `_label` and `_version`. A variable named `_label` or
//!   `_version` therefore cannot be set over MCP.
//! - A string argument stays a string for a `string` (or untyped) variable;
//!   for `number`, `boolean` and `json` it is parsed as JSON.
//! - MCP knows only the roles `user` and `assistant`: `assistant` messages
//!   stay `assistant`, every other role (`system`, `developer`, `user`,
//!   `tool`) becomes `user`, text unchanged, in template order. A host puts
//!   prompt messages into the conversation as they are, and instructions sent
//!   as the first user message are the nearest thing MCP has to a system
//!   message.
//! - A split label is resolved for the MCP session id as its subject, so one
//!   session keeps seeing one arm; without a session the arm is random.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use http_body_util::{BodyDataStream, Full};
use registry_domain::events::ChangeEvent;
use registry_domain::page::{Cursor as _, Limit, PageRequest, TimeCursor};
use registry_domain::prompt::error::{RenderError, RenderFailure};
use registry_domain::prompt::{
    LabelName, PromptError, PromptFilter, PromptName, PromptVersion, Rendered, VariableSpec, VariableType,
    VersionNumber, VersionSelector,
};
use rmcp::model::{
    ClientJsonRpcMessage, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    ListPromptsResult, PaginatedRequestParams, Prompt, PromptArgument, PromptMessage, ProtocolVersion, Role,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::hub::EventHub;
use crate::state::{AppState, Prompts};

/// The argument that renders a label (or `latest`) instead of `production`.
pub const LABEL_ARGUMENT: &str = "_label";
/// The argument that renders a version by number instead of `production`.
pub const VERSION_ARGUMENT: &str = "_version";

/// Prompts per `prompts/list` page.
const PAGE: u32 = 50;
/// How long a burst of changes is gathered into one notification.
const COALESCE: Duration = Duration::from_millis(200);
/// How often an idle forwarder checks that its session still exists.
const PEER_CHECK: Duration = Duration::from_secs(15);
/// The header rmcp carries the session in.
const SESSION_HEADER: &str = "mcp-session-id";

/// The MCP server of one session: the registry's prompts, read through the
/// domain service, and the change events that say the list changed.
#[derive(Debug, Clone)]
pub struct PromptServer {
    prompts: Prompts,
    hub: Arc<EventHub>,
}

impl PromptServer {
    #[must_use]
    pub fn new(prompts: Prompts, hub: Arc<EventHub>) -> Self {
        Self { prompts, hub }
    }

    /// The version whose variables a prompt lists as arguments: what
    /// `production` serves (for this subject), else the latest; `None` for a
    /// prompt without versions (or deleted meanwhile).
    async fn listed_version(
        &self,
        name: &PromptName,
        subject: Option<&str>,
    ) -> Result<Option<Arc<PromptVersion>>, PromptError> {
        match self.prompts.serve(name, VersionSelector::ACTIVE, subject).await {
            Ok(served) => return Ok(Some(served.version)),
            Err(PromptError::VersionNotFound { .. } | PromptError::LabelNotFound { .. }) => {}
            Err(PromptError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        match self.prompts.serve(name, VersionSelector::Latest, None).await {
            Ok(served) => Ok(Some(served.version)),
            Err(
                PromptError::NotFound(_)
                | PromptError::VersionNotFound { .. }
                | PromptError::LabelNotFound { .. },
            ) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn describe(
        &self,
        prompt: registry_domain::prompt::Prompt,
        subject: Option<&str>,
    ) -> Result<Prompt, McpError> {
        let version = self
            .listed_version(&prompt.name, subject)
            .await
            .map_err(|e| lookup_error(&e))?;
        let mut arguments: Vec<PromptArgument> = version
            .iter()
            .flat_map(|v| v.variables.as_map())
            .filter(|(name, _)| name.as_str() != LABEL_ARGUMENT && name.as_str() != VERSION_ARGUMENT)
            .map(|(name, spec)| argument(name, spec))
            .collect();
        arguments.push(
            PromptArgument::new(LABEL_ARGUMENT)
                .with_description(
                    "Optional: render the version this label serves (or `latest`) instead of `production`. \
                     Not together with `_version`.",
                )
                .with_required(false),
        );
        arguments.push(
            PromptArgument::new(VERSION_ARGUMENT)
                .with_description(
                    "Optional: render this version number instead of what `production` serves. \
                     Not together with `_label`.",
                )
                .with_required(false),
        );
        Ok(Prompt::new(
            prompt.name.as_str(),
            prompt.description.as_ref().map(|d| d.as_str().to_owned()),
            Some(arguments),
        ))
    }
}

/// A declared variable as an MCP argument.
fn argument(name: &str, spec: &VariableSpec) -> PromptArgument {
    let hint = match spec.ty {
        Some(VariableType::Number) => Some("A number, written as JSON (e.g. 3 or 2.5)."),
        Some(VariableType::Boolean) => Some("A boolean: true or false."),
        Some(VariableType::Json) => Some("Any JSON value, written as JSON."),
        Some(VariableType::String) | None => None,
    };
    let description = spec.description.clone().or_else(|| hint.map(str::to_owned));
    let argument = PromptArgument::new(name).with_required(spec.required);
    match description {
        Some(d) => argument.with_description(d),
        None => argument,
    }
}

/// The session a request or notification belongs to, if any.
fn session_id(extensions: &rmcp::model::Extensions) -> Option<String> {
    extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get(SESSION_HEADER))
        .and_then(|v| v.to_str().ok())
        .filter(|s| crate::routes::params::check_subject(s).is_ok())
        .map(str::to_owned)
}

/// A storage or lookup failure as a JSON-RPC error: what the caller can fix
/// is invalid params; the rest is logged in full and answered generically.
fn lookup_error(e: &PromptError) -> McpError {
    match e {
        PromptError::NotFound(_)
        | PromptError::VersionNotFound { .. }
        | PromptError::LabelNotFound { .. }
        | PromptError::Invalid(_) => McpError::invalid_params(e.to_string(), None),
        PromptError::Unavailable(_) => {
            tracing::warn!(error = ?e, "MCP request failed: the database is unavailable");
            McpError::internal_error("the database is unavailable; try again shortly", None)
        }
        PromptError::Unknown(_)
        | PromptError::Duplicate(_)
        | PromptError::LabelMoved { .. }
        | PromptError::Protected(_)
        | PromptError::AdminOnly(_)
        | PromptError::Breaking { .. }
        | PromptError::HasDependents { .. }
        | PromptError::NothingToRollBack(_) => {
            tracing::error!(error = ?e, "MCP request failed");
            McpError::internal_error(
                "the server failed to handle this request; it has been logged",
                None,
            )
        }
    }
}

/// Every problem with a request's arguments, as one invalid-params error.
fn invalid_arguments(problems: &[String]) -> McpError {
    McpError::invalid_params(
        format!("{} argument error(s): {}", problems.len(), problems.join("; ")),
        Some(Value::Array(
            problems.iter().cloned().map(Value::String).collect(),
        )),
    )
}

/// Which version `_label` or `_version` selects; `production` without them.
fn selector(label: Option<&Value>, version: Option<&Value>, problems: &mut Vec<String>) -> VersionSelector {
    match (label, version) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "give `{LABEL_ARGUMENT}` or `{VERSION_ARGUMENT}`, not both"
            ));
            VersionSelector::ACTIVE
        }
        (None, Some(raw)) => {
            let number = match raw {
                Value::String(s) => s.trim().parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
            };
            match number.and_then(|n| VersionNumber::new(n).ok()) {
                Some(n) => VersionSelector::Number(n),
                None => {
                    problems.push(format!(
                        "`{VERSION_ARGUMENT}` must be a version number (1, 2, 3…), got {raw}"
                    ));
                    VersionSelector::ACTIVE
                }
            }
        }
        (Some(raw), None) => {
            let parsed = match raw.as_str() {
                Some("latest") => Ok(VersionSelector::Latest),
                Some("active") => Ok(VersionSelector::ACTIVE),
                Some(s) => LabelName::new(s)
                    .map(VersionSelector::Label)
                    .map_err(|e| e.to_string()),
                None => Err("not a string".to_owned()),
            };
            parsed.unwrap_or_else(|e| {
                problems.push(format!("`{LABEL_ARGUMENT}` must be a label or `latest`: {e}"));
                VersionSelector::ACTIVE
            })
        }
        (None, None) => VersionSelector::ACTIVE,
    }
}

/// One MCP argument as the JSON value the variable is declared to take.
/// MCP sends strings: a `string` (or untyped, or undeclared) variable keeps
/// the string, the other types parse it as JSON. A client that sends real
/// JSON values has them used as they are.
fn convert(name: &str, spec: Option<&VariableSpec>, raw: Value) -> Result<Value, String> {
    let Value::String(text) = raw else {
        return Ok(raw);
    };
    let ty = spec.and_then(|s| s.ty);
    match ty {
        None | Some(VariableType::String) => Ok(Value::String(text)),
        Some(t @ (VariableType::Number | VariableType::Boolean | VariableType::Json)) => {
            serde_json::from_str(&text).map_err(|_| {
                let what = match t {
                    VariableType::Number => "a number",
                    VariableType::Boolean => "a boolean (true or false)",
                    VariableType::Json | VariableType::String => "a JSON value",
                };
                format!("argument `{name}` must be {what} written as JSON, got `{text}`")
            })
        }
    }
}

/// The rendered prompt as MCP messages (see the module header for roles).
fn messages(rendered: Rendered) -> Vec<PromptMessage> {
    match rendered {
        Rendered::Text(text) => vec![PromptMessage::new_text(Role::User, text)],
        Rendered::Chat(chat) => chat
            .into_iter()
            .map(|m| {
                let role = if m.role == "assistant" {
                    Role::Assistant
                } else {
                    Role::User
                };
                PromptMessage::new_text(role, m.content)
            })
            .collect(),
    }
}

impl ServerHandler for PromptServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_prompts()
                .enable_prompts_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("prompt-registry", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "The prompts of this Prompt Registry. Each renders what its `production` label serves; \
             `_label` or `_version` select another version.",
        )
    }

    /// Only revisions with an `initialize` handshake: list_changed goes to
    /// the session the handshake opens.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let after = request
            .and_then(|r| r.cursor)
            .map(|c| TimeCursor::decode(&c))
            .transpose()
            .map_err(|e| McpError::invalid_params(format!("cursor: {e}"), None))?;
        let limit =
            Limit::new(i64::from(PAGE), PAGE).map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let page = self
            .prompts
            .list_prompts(PromptFilter::default(), PageRequest { limit, after })
            .await
            .map_err(|e| lookup_error(&e))?;
        let subject = session_id(&context.extensions);
        let prompts = futures::future::try_join_all(
            page.items
                .into_iter()
                .map(|p| self.describe(p, subject.as_deref())),
        )
        .await?;
        let mut result = ListPromptsResult::with_all_items(prompts);
        result.next_cursor = page.next.map(|c| c.encode());
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let name = PromptName::new(&request.name).map_err(|e| {
            McpError::invalid_params(format!("`{}` is not a prompt name: {e}", request.name), None)
        })?;
        let mut arguments = request.arguments.unwrap_or_default();
        let label = arguments.remove(LABEL_ARGUMENT);
        let version = arguments.remove(VERSION_ARGUMENT);
        let mut problems = Vec::new();
        let selector = selector(label.as_ref(), version.as_ref(), &mut problems);
        if !problems.is_empty() {
            return Err(invalid_arguments(&problems));
        }
        let subject = session_id(&context.extensions);
        // Which version (and, for a split, which arm) renders, to know the
        // declared types; the render below is pinned to it by number.
        let served = self
            .prompts
            .serve(&name, selector, subject.as_deref())
            .await
            .map_err(|e| lookup_error(&e))?;
        let declared = served.version.variables.clone();
        let mut values = Map::new();
        let mut unparsed = Vec::new();
        for (key, raw) in arguments {
            match convert(&key, declared.get(&key), raw) {
                Ok(value) => {
                    values.insert(key, value);
                }
                Err(problem) => {
                    problems.push(problem);
                    unparsed.push(key);
                }
            }
        }
        let pinned = VersionSelector::Number(served.version.version);
        let rendered = match self.prompts.render(&name, pinned, None, &values).await {
            Ok((_, rendered)) if problems.is_empty() => rendered,
            Ok(_) => return Err(invalid_arguments(&problems)),
            Err(RenderFailure::Invalid(errors)) => {
                // A value that did not parse was left out: it is not also missing.
                problems.extend(
                    errors
                        .0
                        .iter()
                        .filter(
                            |e| !matches!(e, RenderError::Missing { name, .. } if unparsed.contains(name)),
                        )
                        .map(ToString::to_string),
                );
                return Err(invalid_arguments(&problems));
            }
            Err(e @ RenderFailure::TooLarge { .. }) => {
                return Err(McpError::invalid_params(e.to_string(), None));
            }
            Err(RenderFailure::Lookup(e)) => return Err(lookup_error(&e)),
        };
        let via = match served.label {
            Some(l) if served.split => format!(" (label `{l}`, a split; this session's arm)"),
            Some(l) => format!(" (label `{l}`)"),
            None if matches!(selector, VersionSelector::Latest) => " (latest)".to_owned(),
            None => " (by number)".to_owned(),
        };
        let description = format!("Prompt `{name}`, version {}{via}", served.version.version);
        Ok(GetPromptResult::new(messages(rendered))
            .with_description(description)
            .into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let events = self.hub.subscribe();
        tokio::spawn(forward_changes(context.peer, events));
    }
}

/// Tells one session's client that the prompt list changed, once per burst
/// of change events, until the session is gone.
async fn forward_changes(peer: Peer<RoleServer>, mut events: broadcast::Receiver<Arc<ChangeEvent>>) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut check = tokio::time::interval(PEER_CHECK);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                // A lag only means more changes: one notification covers them.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = check.tick() => {
                if peer.is_transport_closed() {
                    return;
                }
                continue;
            }
        }
        tokio::time::sleep(COALESCE).await;
        loop {
            match events.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if peer.notify_prompt_list_changed().await.is_err() {
            return;
        }
    }
}

/// rmcp's Streamable HTTP transport over [`PromptServer`]s, one per session,
/// shared by every worker (the sessions live in it).
#[derive(Clone)]
pub struct McpService(StreamableHttpService<PromptServer, LocalSessionManager>);

impl std::fmt::Debug for McpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpService").finish_non_exhaustive()
    }
}

impl McpService {
    /// Stateful sessions (`Mcp-Session-Id`), SSE keep-alives on.
    #[must_use]
    pub fn new(prompts: Prompts, hub: Arc<EventHub>) -> Self {
        let server = PromptServer::new(prompts, hub);
        // rmcp accepts only loopback `Host`s by default, against DNS
        // rebinding of a local server by a web page. Every request here
        // carries an API key in a header, which a rebinding page does not
        // have, and the registry is reached under hostnames it cannot know:
        // so any Host is accepted, and the key is the guard.
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(true)
            .with_sse_keep_alive(Some(Duration::from_secs(15)))
            .disable_allowed_hosts();
        Self(StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        ))
    }
}

/// Marks a response the MCP transport made, so the problem+json rewrite of
/// error responses leaves it as MCP clients expect it.
#[derive(Debug, Clone, Copy)]
pub struct TransportAnswer;

/// A JSON-RPC error answered before the transport (a body that is not JSON-RPC).
fn jsonrpc_error(id: &Value, code: i32, message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    }))
}

/// `GET`, `POST` and `DELETE /mcp`: the actix request handed to rmcp as an
/// `http::Request`, its answer streamed back (SSE included).
pub async fn serve(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    req.extensions_mut().insert(TransportAnswer);
    if req.method() == actix_web::http::Method::POST {
        // rmcp answers an unparsable body with a bare 415; a JSON-RPC client
        // expects a parse error or an invalid request.
        match serde_json::from_slice::<Value>(&body) {
            Err(e) => return jsonrpc_error(&Value::Null, -32700, &format!("Parse error: {e}")),
            Ok(value) => {
                let id = value.get("id").cloned().unwrap_or(Value::Null);
                if let Err(e) = serde_json::from_value::<ClientJsonRpcMessage>(value) {
                    return jsonrpc_error(&id, -32600, &format!("Invalid Request: {e}"));
                }
            }
        }
    }
    let request = match to_http_request(&req, body) {
        Ok(r) => r,
        Err(e) => return jsonrpc_error(&Value::Null, -32600, &format!("Invalid Request: {e}")),
    };
    let ending = req.method() == actix_web::http::Method::DELETE;
    let mut response = state.mcp.0.handle(request).await;
    // rmcp confirms an ended session with 202; the official clients expect
    // 200 or 204 and log every other answer as a failure.
    if ending && response.status() == http::StatusCode::ACCEPTED {
        *response.status_mut() = http::StatusCode::NO_CONTENT;
    }
    from_http_response(response, &state.hub)
}

fn to_http_request(
    req: &HttpRequest,
    body: web::Bytes,
) -> Result<http::Request<Full<bytes::Bytes>>, http::Error> {
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(req.method().as_str().as_bytes())?)
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    builder.body(Full::new(body))
}

/// rmcp's answer as an actix response; a session's event stream ends when
/// the process starts shutting down, as the change streams do.
fn from_http_response(
    response: http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>,
    hub: &EventHub,
) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        builder.append_header((name.as_str(), value.as_bytes()));
    }
    builder.streaming(hub.until_closing(BodyDataStream::new(body)))
}
