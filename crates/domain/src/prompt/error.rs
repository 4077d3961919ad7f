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
    #[error("prompt `{name}` has no {selector}")]
    VersionNotFound {
        name: PromptName,
        selector: VersionSelector,
    },
    /// The prompt exists but has no such label (or it was removed).
    #[error("prompt `{name}` has no label `{label}`")]
    LabelNotFound {
        name: PromptName,
        label: super::label::LabelName,
    },
    /// A compare-and-set move found the label elsewhere: nothing changed.
    #[error("label `{label}` has moved since (it is at revision {revision}); nothing was changed")]
    LabelMoved {
        label: super::label::LabelName,
        current: Option<super::label::LabelTarget>,
        revision: u32,
    },
    /// The label is protected and the caller may not release.
    #[error(
        "label `{0}` is protected: moving, removing or rolling it back needs a key with the `release` or `admin` scope"
    )]
    Protected(super::label::LabelName),
    /// Only an admin may protect or unprotect a label.
    #[error("only a key with the `admin` scope may change whether label `{0}` is protected")]
    AdminOnly(super::label::LabelName),
    /// The move would take a protected label to a version that breaks callers.
    #[error("moving protected label `{label}` is a breaking change: {}; send `allow_breaking: true` to move it anyway", .reasons.join("; "))]
    Breaking {
        label: super::label::LabelName,
        reasons: Vec<String>,
    },
    /// Other prompts' versions include this one.
    #[error("prompt `{name}` is included by {}; delete with `force` to delete it anyway (their versions keep the text they were built with)", .dependents.join(", "))]
    HasDependents {
        name: PromptName,
        /// A few of the including versions, `prompt@version`.
        dependents: Vec<String>,
    },
    /// The label has no earlier target to go back to.
    #[error("label `{0}` has no earlier target to roll back to")]
    NothingToRollBack(super::label::LabelName),
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
    #[error("variable `{name}`{} is required and has no value or default", from_include(.from.as_deref()))]
    Missing { name: String, from: Option<String> },
    #[error("variable `{name}`{} must be a {expected}, got {got}", from_include(.from.as_deref()))]
    WrongType {
        name: String,
        expected: &'static str,
        got: &'static str,
        /// The include that declared it, for a composed version.
        from: Option<String>,
    },
    #[error("variable `{0}` is not declared by this version")]
    Undeclared(String),
}

fn from_include(origin: Option<&str>) -> String {
    origin
        .map(|o| format!(" (declared by include {o})"))
        .unwrap_or_default()
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
