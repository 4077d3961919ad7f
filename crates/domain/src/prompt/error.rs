//! Errors of the prompt aggregate's operations.

use super::model::{PromptName, VersionSelector};

/// What can go wrong when storing or reading prompts and versions.
///
/// Validation of client input is not here: it fails earlier, when the domain
/// types are built, so nothing invalid ever reaches a repository.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Input that breaks a rule only the service can check (a configured limit).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<super::model::FieldError>),
    #[error("a prompt named `{0}` already exists")]
    Duplicate(PromptName),
    #[error("no prompt named `{0}`")]
    NotFound(PromptName),
    #[error("prompt `{name}` has no {selector} version")]
    VersionNotFound {
        name: PromptName,
        selector: VersionSelector,
    },
    /// The storage cannot be reached now (connection refused, pool exhausted):
    /// the same call may succeed later.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything the caller cannot act on: corrupt rows, bugs.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Why a set of variable values cannot render a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("variable `{0}` is required and has no value or default")]
    Missing(String),
    #[error("variable `{name}` must be a {expected}, got {got}")]
    WrongType {
        name: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("variable `{0}` is not declared by this version")]
    Undeclared(String),
}

/// Every reason a render request failed, so a client can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} variable error(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RenderErrors(pub Vec<RenderError>);

/// Failure of a render: the version could not be found, or the values are wrong.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    #[error(transparent)]
    Lookup(#[from] PromptError),
    #[error(transparent)]
    Invalid(#[from] RenderErrors),
    /// The rendered text would be larger than the configured limit.
    #[error("the rendered prompt would be {size} bytes; the limit is {limit} (render.max_output_bytes)")]
    TooLarge { size: usize, limit: usize },
}
