//! Parsing path and query parameters into domain types.

use registry_domain::page::{Cursor, Limit, PageRequest};
use registry_domain::prompt::{PromptName, VersionNumber};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::problem::ApiError;

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
