//! Parsing path and query parameters into domain types.

use std::borrow::Cow;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures::future::{Ready, ready};
use registry_domain::audit::{Actor, Context};
use registry_domain::auth::service::Principal;
use registry_domain::page::{Cursor, Limit, PageRequest};
use registry_domain::prompt::{LabelName, PromptName, VersionNumber, VersionSelector};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};

use crate::problem::ApiError;

/// The prompt named by the path's `{name}` segment, validated. Handlers take
/// it as an argument and document it with `params(NameInPath)`.
#[derive(Debug)]
pub struct NameInPath(pub PromptName);

/// The version number in the path's `{version}` segment, validated.
#[derive(Debug)]
pub struct VersionInPath(pub VersionNumber);

/// The `{selector}` segment: a version number, `latest`, `active`, or a label.
#[derive(Debug)]
pub struct SelectorInPath(pub VersionSelector);

/// The `{label}` segment, validated.
#[derive(Debug)]
pub struct LabelInPath(pub LabelName);

/// Who is calling, for the audit log and the rules that depend on scopes:
/// built from the key the auth layer admitted and the request id.
#[derive(Debug)]
pub struct Caller(pub Context);

thread_local! {
    /// Decodes every percent-escape, as `web::Path` does.
    static DECODE: actix_router::Quoter = actix_router::Quoter::new(b"", b"");
}

/// The path segment `key`, percent-decoded as `web::Path` decodes it (so
/// `support%2Ftriage` is `support/triage`); empty when the route has none.
/// Read straight from the match, without a deserializer: this runs on
/// every fetch.
fn segment<'a>(req: &'a HttpRequest, key: &str) -> Cow<'a, str> {
    let raw = req.match_info().query(key);
    DECODE
        .with(|q| q.requote(raw.as_bytes()))
        .map_or(Cow::Borrowed(raw), |bytes| {
            Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
        })
}

impl FromRequest for NameInPath {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let name = prompt_name(&segment(req, "name"));
        ready(name.map(Self).map_err(Into::into))
    }
}

impl FromRequest for VersionInPath {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let number = version_number(&segment(req, "version"));
        ready(number.map(Self).map_err(Into::into))
    }
}

impl FromRequest for SelectorInPath {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let selector =
            VersionSelector::parse(&segment(req, "selector")).map_err(|e| ApiError::parameter("selector", e));
        ready(selector.map(Self).map_err(Into::into))
    }
}

impl FromRequest for LabelInPath {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let label = LabelName::new(&segment(req, "label")).map_err(|e| ApiError::parameter("label", e));
        ready(label.map(Self).map_err(Into::into))
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Every route that changes something is behind the auth layer.
        let context = caller(req).map(Self).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("a change reached a handler without a caller")).into()
        });
        ready(context)
    }
}

/// The caller of a request as the auth layer (or the console's gate)
/// admitted it, with the request's id; `None` for a public request.
#[must_use]
pub fn caller(req: &HttpRequest) -> Option<Context> {
    let extensions = req.extensions();
    let principal = extensions.get::<Principal>()?;
    Some(Context {
        actor: match principal {
            Principal::Bootstrap => Actor::admin_key(),
            Principal::Key(k) => Actor {
                key_id: Some(k.id),
                name: k.name.as_str().to_owned(),
            },
        },
        scopes: principal.scopes(),
        request_id: extensions
            .get::<crate::middleware::RequestId>()
            .map(|r| r.as_str().to_owned()),
    })
}

impl utoipa::IntoParams for SelectorInPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("selector")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some(
                    "A version number (`3`), `latest`, `active` (the label `production`), or a label name (`staging`)",
                ))
                .schema(Some(String::schema()))
                .build(),
        ]
    }
}

impl utoipa::IntoParams for LabelInPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("label")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some(
                    "A label: `[a-z][a-z0-9._-]{0,62}`; `latest` and `active` are reserved",
                ))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .pattern(Some("^[a-z][a-z0-9._-]{0,62}$")),
                ))
                .build(),
        ]
    }
}

impl utoipa::IntoParams for NameInPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("name")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some(
                    "The prompt's name; percent-encode `/` as `%2F` (`support%2Ftriage`)",
                ))
                .schema(Some(String::schema()))
                .build(),
        ]
    }
}

impl utoipa::IntoParams for VersionInPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("version")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some("The version number, from 1"))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(i32::MAX)),
                ))
                .build(),
        ]
    }
}

use utoipa::PartialSchema as _;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A prompt name from the path. Slashes arrive percent-decoded.
///
/// # Errors
/// An invalid name.
pub fn prompt_name(raw: &str) -> Result<PromptName, ApiError> {
    PromptName::new(raw).map_err(|e| ApiError::parameter("name", e))
}

/// A version number from the path.
///
/// # Errors
/// Anything but a whole number from 1 up.
pub fn version_number(raw: &str) -> Result<VersionNumber, ApiError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|n| VersionNumber::new(n).ok())
        .ok_or_else(|| ApiError::parameter("version", format!("`{raw}` is not a version number (1, 2, 3…)")))
}

/// An RFC 3339 timestamp from the query string.
///
/// # Errors
/// A value that is not RFC 3339.
pub fn timestamp(name: &str, raw: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|s| {
        OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|_| ApiError::parameter(name, format!("`{s}` is not an RFC 3339 timestamp")))
    })
    .transpose()
}

/// A free-text query parameter; U+0000 is refused (no stored text holds it,
/// and PostgreSQL cannot compare against it).
///
/// # Errors
/// A value containing U+0000.
pub fn text(name: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(s) if registry_domain::text::has_nul(&s) => {
            Err(ApiError::parameter(name, registry_domain::text::NUL_MESSAGE))
        }
        other => Ok(other),
    }
}

const MAX_SUBJECT: usize = 256;

/// Checks a split label's subject (who a prompt is for): 1–256 characters
/// without control characters.
///
/// # Errors
/// What is wrong with it.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT || subject.chars().any(char::is_control) {
        return Err(format!(
            "a subject is 1 to {MAX_SUBJECT} characters, without control characters"
        ));
    }
    Ok(())
}

/// A page request from `limit` and `cursor`.
///
/// # Errors
/// A limit out of range or a cursor this endpoint did not issue.
pub fn page<C: Cursor>(
    limit: Option<i64>,
    cursor: Option<&str>,
    max: u32,
) -> Result<PageRequest<C>, ApiError> {
    Ok(PageRequest {
        limit: Limit::new(limit.unwrap_or(DEFAULT_LIMIT), max)?,
        after: cursor.map(C::decode).transpose()?,
    })
}
