//! RFC 9457 problem details: the stable error codes of the API and the
//! mapping of every error (domain, extractor, routing) onto them.

// A new error variant must get a deliberate status, not fall into a catch-all.
#![warn(clippy::wildcard_enum_match_arm)]

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use registry_domain::auth::ports::KeyError;
use registry_domain::auth::service::AuthError;
use registry_domain::page::{CursorError, LimitError};
use registry_domain::prompt::error::{RenderError, RenderFailure};
use registry_domain::prompt::{FieldError, PromptError};
use registry_domain::run::ListingError;
use registry_domain::run::ports::RunError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every error the API can answer with. The snake_case name is part of the
/// contract: clients may match on it, so a code is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not valid JSON.
    MalformedJson,
    /// A body in another encoding (OTLP protobuf, gzip) that cannot be read.
    MalformedBody,
    /// A query or path parameter cannot be parsed.
    InvalidParameter,
    /// A `cursor` that this endpoint did not issue, or that points nowhere.
    InvalidCursor,
    /// Well-formed input that breaks a rule; `errors` says which.
    ValidationFailed,
    /// A render request's values do not fit the version's variables.
    InvalidVariables,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    /// The request conflicts with the resource's state (nothing to roll back to).
    Conflict,
    /// A compare-and-set found the resource changed (`If-Match`, `expected_version`).
    PreconditionFailed,
    /// Moving a protected label would break callers; `errors` lists why.
    BreakingChange,
    PayloadTooLarge,
    UnsupportedMediaType,
    NotAcceptable,
    ServiceUnavailable,
    Timeout,
    Internal,
}

impl ErrorCode {
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::MalformedBody | Self::InvalidParameter | Self::InvalidCursor => {
                StatusCode::BAD_REQUEST
            }
            Self::ValidationFailed | Self::InvalidVariables => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists | Self::Conflict | Self::BreakingChange => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MalformedBody => "malformed_body",
            Self::InvalidParameter => "invalid_parameter",
            Self::InvalidCursor => "invalid_cursor",
            Self::ValidationFailed => "validation_failed",
            Self::InvalidVariables => "invalid_variables",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::BreakingChange => "breaking_change",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotAcceptable => "not_acceptable",
            Self::ServiceUnavailable => "service_unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal_error",
        }
    }

    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON body",
            Self::MalformedBody => "Malformed body",
            Self::InvalidParameter => "Invalid parameter",
            Self::InvalidCursor => "Invalid cursor",
            Self::ValidationFailed => "Validation failed",
            Self::InvalidVariables => "Invalid variables",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::AlreadyExists => "Already exists",
            Self::Conflict => "Conflict",
            Self::PreconditionFailed => "Precondition failed",
            Self::BreakingChange => "Breaking change",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::NotAcceptable => "Not acceptable",
            Self::ServiceUnavailable => "Service unavailable",
            Self::Timeout => "Request timed out",
            Self::Internal => "Internal server error",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [Self; 20] = [
        Self::MalformedJson,
        Self::MalformedBody,
        Self::InvalidParameter,
        Self::InvalidCursor,
        Self::ValidationFailed,
        Self::InvalidVariables,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::AlreadyExists,
        Self::Conflict,
        Self::PreconditionFailed,
        Self::BreakingChange,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::NotAcceptable,
        Self::ServiceUnavailable,
        Self::Timeout,
        Self::Internal,
    ];
}

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:prompt-registry:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable snake_case error code.
    pub code: String,
    /// For validation problems: each offending field and what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// The cause of a 5xx, logged in full and never shown to the client.
    pub source: Option<anyhow::Error>,
    /// Seconds after which a client may try again (503s).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            source: None,
            retry_after: None,
        }
    }

    #[must_use]
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{one}"),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            code: ErrorCode::ValidationFailed,
            detail,
            errors,
            source: None,
            retry_after: None,
        }
    }

    pub fn parameter(name: &str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::new(ErrorCode::InvalidParameter, format!("{name}: {message}"));
        e.errors.push(FieldError::new(name, message.to_string()));
        e
    }

    /// A 503 for a dependency that cannot be reached now: the client is
    /// told what and when to try again, the log gets the whole cause chain.
    #[must_use]
    pub fn unavailable(what: &str, source: anyhow::Error) -> Self {
        Self {
            code: ErrorCode::ServiceUnavailable,
            detail: format!("{what} is unavailable; retry shortly"),
            errors: Vec::new(),
            source: Some(source),
            retry_after: Some(1),
        }
    }

    /// A run error for a route whose path names the prompt: an unknown prompt
    /// is then a 404 (the resource in the URL does not exist), not a 422.
    #[must_use]
    pub fn prompt_in_path(err: RunError) -> Self {
        if let RunError::UnknownPrompt(name) = err {
            return PromptError::NotFound(name).into();
        }
        err.into()
    }

    #[must_use]
    pub fn internal(source: anyhow::Error) -> Self {
        Self {
            code: ErrorCode::Internal,
            // For security reasons the cause stays in the log.
            detail: "the server failed to handle this request; it has been logged".into(),
            errors: Vec::new(),
            source: Some(source),
            retry_after: None,
        }
    }

    #[must_use]
    pub fn body(&self) -> Problem {
        Problem {
            kind: format!("urn:prompt-registry:problem:{}", self.code.name()),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.name().to_owned(),
            errors: self
                .errors
                .iter()
                .map(|e| ProblemField {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(source) = &self.source {
            // `{:#}` prints the whole cause chain on one line: the operator
            // sees why (e.g. "connection refused"), not only "database error".
            let error = format!("{source:#}");
            if self.code == ErrorCode::ServiceUnavailable {
                tracing::warn!(%error, code = self.code.name(), "dependency unavailable");
            } else {
                tracing::error!(%error, code = self.code.name(), "request failed");
            }
        }
        let mut response = HttpResponse::build(self.code.status());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        if self.code == ErrorCode::Unauthorized {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        // Serialised here, with its final newline, so every problem body
        // ends like every other JSON body.
        let mut json = serde_json::to_vec(&self.body()).unwrap_or_default();
        json.push(b'\n');
        response.body(json)
    }
}

/// A 405 problem with the `Allow` header, for a path that exists with other methods.
#[must_use]
pub fn method_not_allowed(method: &actix_web::http::Method, path: &str, allowed: &[&str]) -> HttpResponse {
    let allow = allowed.join(", ");
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {path}; use {allow}"),
    )
    .error_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

impl From<PromptError> for ApiError {
    fn from(err: PromptError) -> Self {
        match err {
            PromptError::Duplicate(_) => Self::new(ErrorCode::AlreadyExists, err.to_string()),
            PromptError::Invalid(errors) => Self::validation(errors),
            PromptError::Unavailable(source) => Self::unavailable("the database", source),
            PromptError::NotFound(_)
            | PromptError::VersionNotFound { .. }
            | PromptError::LabelNotFound { .. } => Self::new(ErrorCode::NotFound, err.to_string()),
            PromptError::LabelMoved { .. } => Self::new(ErrorCode::PreconditionFailed, err.to_string()),
            PromptError::NothingToRollBack(_) => Self::new(ErrorCode::Conflict, err.to_string()),
            PromptError::Breaking { ref reasons, .. } => {
                let mut e = Self::new(ErrorCode::BreakingChange, err.to_string());
                e.errors = reasons
                    .iter()
                    .map(|r| FieldError::new("allow_breaking", r.clone()))
                    .collect();
                e
            }
            PromptError::HasDependents { ref dependents, .. } => {
                let mut e = Self::new(ErrorCode::Conflict, err.to_string());
                e.errors = dependents
                    .iter()
                    .map(|d| FieldError::new("force", format!("included by {d}")))
                    .collect();
                e
            }
            PromptError::Protected(label) | PromptError::AdminOnly(label) => {
                let mut e = Self::new(ErrorCode::Forbidden, err.to_string());
                e.errors.push(FieldError::new("label", label.to_string()));
                e
            }
            PromptError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<RenderFailure> for ApiError {
    fn from(err: RenderFailure) -> Self {
        match err {
            RenderFailure::Lookup(e) => e.into(),
            RenderFailure::TooLarge { .. } => {
                let mut e = Self::new(ErrorCode::PayloadTooLarge, err.to_string());
                e.errors.push(FieldError::new("variables", err.to_string()));
                e
            }
            RenderFailure::Invalid(errors) => {
                let detail = errors.to_string();
                let fields = errors
                    .0
                    .into_iter()
                    .map(|e| {
                        let name = match &e {
                            RenderError::Undeclared(n) => n.clone(),
                            RenderError::Missing { name, .. } | RenderError::WrongType { name, .. } => {
                                name.clone()
                            }
                        };
                        FieldError::new(format!("variables.{name}"), e.to_string())
                    })
                    .collect();
                Self {
                    code: ErrorCode::InvalidVariables,
                    detail,
                    errors: fields,
                    source: None,
                    retry_after: None,
                }
            }
        }
    }
}

impl From<RunError> for ApiError {
    fn from(err: RunError) -> Self {
        match err {
            RunError::UnknownPrompt(_) => Self::validation(vec![FieldError::new("prompt", err.to_string())]),
            RunError::UnknownVersion { .. }
            | RunError::NoActiveVersion(_)
            | RunError::SplitNeedsVersion { .. } => {
                Self::validation(vec![FieldError::new("version", err.to_string())])
            }
            RunError::UnknownLabel { .. } => {
                Self::validation(vec![FieldError::new("label", err.to_string())])
            }
            RunError::Conflict(_) => Self::new(ErrorCode::AlreadyExists, err.to_string()),
            RunError::NotFound(_) => Self::new(ErrorCode::NotFound, err.to_string()),
            RunError::InvalidItems(errors) => Self::validation(errors),
            RunError::Unavailable(source) => Self::unavailable("the database", source),
            RunError::QueueFull => {
                let mut e = Self::new(ErrorCode::ServiceUnavailable, err.to_string());
                e.retry_after = Some(1);
                e
            }
            RunError::QueueUnavailable(source) => {
                tracing::warn!(error = %format!("{source:#}"), "the run queue is unavailable");
                let mut e = Self::new(
                    ErrorCode::ServiceUnavailable,
                    "the run queue is unavailable; retry shortly",
                );
                e.retry_after = Some(1);
                e
            }
            RunError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound(_) => Self::new(ErrorCode::NotFound, e.to_string()),
            KeyError::Unavailable(source) => Self::unavailable("the database", source),
            KeyError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<registry_domain::webhook::WebhookError> for ApiError {
    fn from(e: registry_domain::webhook::WebhookError) -> Self {
        use registry_domain::webhook::WebhookError as E;
        match e {
            E::InvalidUrl(_) | E::InternalTarget { .. } => {
                Self::validation(vec![FieldError::new("url", e.to_string())])
            }
            E::NotFound(_) | E::DeliveryNotFound(..) => Self::new(ErrorCode::NotFound, e.to_string()),
            E::Unavailable(source) => Self::unavailable("the database", source),
            E::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<registry_domain::audit::AuditError> for ApiError {
    fn from(e: registry_domain::audit::AuditError) -> Self {
        match e {
            registry_domain::audit::AuditError::Unavailable(source) => {
                Self::unavailable("the database", source)
            }
            registry_domain::audit::AuditError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<registry_domain::events::EventError> for ApiError {
    fn from(e: registry_domain::events::EventError) -> Self {
        match e {
            registry_domain::events::EventError::Unavailable(source) => {
                Self::unavailable("the database", source)
            }
            registry_domain::events::EventError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid | AuthError::Revoked => Self::new(ErrorCode::Unauthorized, err.to_string()),
            AuthError::Unavailable(source) => Self::unavailable("the key store (database)", source),
            AuthError::Unknown(source) => Self::internal(source),
        }
    }
}

impl From<ListingError> for ApiError {
    fn from(err: ListingError) -> Self {
        match err {
            ListingError::VersionWithoutPrompt => {
                Self::parameter("version", "filtering by version needs `prompt`")
            }
            ListingError::CursorOfAnotherOrder => {
                let mut e = Self::parameter("cursor", err);
                e.code = ErrorCode::InvalidCursor;
                e
            }
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(err: LimitError) -> Self {
        Self::parameter("limit", err)
    }
}

impl From<CursorError> for ApiError {
    fn from(err: CursorError) -> Self {
        let mut e = Self::parameter("cursor", err);
        e.code = ErrorCode::InvalidCursor;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_an_error_status() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn an_internal_error_hides_its_cause() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2"));
        let body = serde_json::to_string(&e.body()).expect("serialises");
        assert!(!body.contains("hunter2"));
        assert!(body.contains("internal_error"));
    }
}

/// Extractor failures, answered like every other error.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::{HttpRequest, HttpResponse, ResponseError};

    use super::{ApiError, ErrorCode};

    #[must_use]
    pub fn json_error(err: &JsonPayloadError) -> ApiError {
        match err {
            JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is {length} bytes; the limit is {limit}"),
            ),
            JsonPayloadError::Overflow { limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body exceeds the limit of {limit} bytes"),
            ),
            JsonPayloadError::ContentType => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be sent with Content-Type: application/json",
            ),
            JsonPayloadError::Deserialize(e) if crate::body::is_duplicate_key(e) => ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON for this API: {e}"),
            ),
            JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(
                ErrorCode::ValidationFailed,
                format!("the body does not fit the schema: {e}"),
            ),
            JsonPayloadError::Deserialize(e) => ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            ),
            JsonPayloadError::Payload(e) => {
                ApiError::new(ErrorCode::MalformedJson, format!("cannot read the body: {e}"))
            }
            JsonPayloadError::Serialize(e) => {
                ApiError::internal(anyhow::anyhow!("cannot serialise JSON: {e}"))
            }
            // The enum is non-exhaustive: a variant added later is a body we could not read.
            other => ApiError::new(ErrorCode::MalformedJson, format!("cannot read the body: {other}")),
        }
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "actix-web's error handler signature"
    )]
    pub fn json_handler(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        to_actix(json_error(&err))
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "actix-web's error handler signature"
    )]
    pub fn query_handler(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let detail = match &err {
            QueryPayloadError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        to_actix(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invalid query string: {detail}"),
        ))
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "actix-web's error handler signature"
    )]
    pub fn path_handler(err: PathError, _req: &HttpRequest) -> actix_web::Error {
        to_actix(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invalid path parameter: {err}"),
        ))
    }

    fn to_actix(err: ApiError) -> actix_web::Error {
        let response: HttpResponse = err.error_response();
        actix_web::error::InternalError::from_response(err, response).into()
    }
}
