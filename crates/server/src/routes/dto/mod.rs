//! Request and response bodies, one module per resource, and their
//! conversion to and from domain types. Handlers only parse, call one service
//! method and map the answer; the shapes on the wire live here.

pub mod keys;
pub mod labels;
pub mod prompts;
pub mod runs;
pub mod versions;

use registry_domain::prompt::{FieldError, ValidationErrors};

/// Collects the errors of several independent checks.
pub(crate) fn collect<T>(errors: &mut Vec<FieldError>, result: Result<T, ValidationErrors>) -> Option<T> {
    result.map_err(|e| errors.extend(e)).ok()
}
