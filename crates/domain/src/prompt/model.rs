//! The prompt aggregate's entities and the value types they are made of.
//!
//! Every value type here can only hold a valid value: constructors check, and
//! fields are private. Services therefore never validate again.

use std::fmt;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::template::{self, Template, Variables};

/// A problem with one field of a client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, e.g. `name`, `template[2].content`, `variables.city`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one piece of input, each naming its field, so a
/// client can fix them all at once.
///
/// ```
/// use registry_domain::prompt::{FieldError, ValidationErrors};
///
/// let errors = ValidationErrors::from(vec![
///     FieldError::new("name", "must not be empty"),
///     FieldError::new("tags[0]", "is too long"),
/// ]);
/// assert_eq!(errors.to_string(), "name: must not be empty; tags[0]: is too long");
/// let as_error: Box<dyn std::error::Error> = Box::new(errors);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// The same errors with each field put under `prefix` (`runs[3].` + `status`).
    #[must_use]
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|e| FieldError::new(format!("{prefix}{}", e.field), e.message))
                .collect(),
        )
    }

    #[must_use]
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }
}

impl std::ops::Deref for ValidationErrors {
    type Target = [FieldError];

    fn deref(&self) -> &[FieldError] {
        &self.0
    }
}

impl From<Vec<FieldError>> for ValidationErrors {
    fn from(errors: Vec<FieldError>) -> Self {
        Self(errors)
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(error: FieldError) -> Self {
        Self(vec![error])
    }
}

impl From<ValidationErrors> for Vec<FieldError> {
    fn from(errors: ValidationErrors) -> Self {
        errors.0
    }
}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Extend<FieldError> for ValidationErrors {
    fn extend<I: IntoIterator<Item = FieldError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

const MAX_NAME: usize = 128;

/// A prompt's unique name: 1–128 characters, starting with `[a-z0-9]`,
/// followed by `[a-z0-9._/-]`. Slashes allow namespaces such as `support/triage`.
///
/// ```
/// use registry_domain::prompt::PromptName;
///
/// let name = PromptName::new("support/triage").expect("valid");
/// assert_eq!(name.as_str(), "support/triage");
/// assert!(PromptName::new("Support Triage").is_err());
/// assert!(PromptName::new("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME} characters, got {0}")]
    TooLong(usize),
    #[error("must start with a lowercase letter or a digit")]
    BadStart,
    #[error("may contain only lowercase letters, digits, `.`, `_`, `/` and `-`; found {0:?}")]
    BadChar(char),
}

impl PromptName {
    /// # Errors
    /// Returns why `s` is not a valid prompt name.
    pub fn new(s: &str) -> Result<Self, PromptNameError> {
        let mut chars = s.chars();
        let first = chars.next().ok_or(PromptNameError::Empty)?;
        let len = s.chars().count();
        if len > MAX_NAME {
            return Err(PromptNameError::TooLong(len));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(PromptNameError::BadStart);
        }
        if let Some(bad) =
            chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._/-".contains(*c)))
        {
            return Err(PromptNameError::BadChar(bad));
        }
        Ok(Self(s.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PromptName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromptName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const MAX_DESCRIPTION: usize = 4_000;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 64;

/// A free-text description of at most 4,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// # Errors
    /// A [`FieldError`] on `description` when it is too long.
    pub fn new(s: &str) -> Result<Self, FieldError> {
        if s.chars().count() > MAX_DESCRIPTION {
            return Err(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if crate::text::has_nul(s) {
            return Err(FieldError::new("description", crate::text::NUL_MESSAGE));
        }
        Ok(Self(s.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A prompt's labels: at most 32, each 1–64 characters with no control
/// characters, without duplicates, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<String>);

impl Tags {
    /// # Errors
    /// A [`FieldError`] per invalid tag, or one for too many tags.
    pub fn new(tags: Vec<String>) -> Result<Self, ValidationErrors> {
        if tags.len() > MAX_TAGS {
            return Err(FieldError::new("tags", format!("at most {MAX_TAGS} tags are allowed")).into());
        }
        let mut errors = Vec::new();
        let mut kept: Vec<String> = Vec::with_capacity(tags.len());
        for (i, tag) in tags.into_iter().enumerate() {
            if let Err(message) = Self::check(&tag) {
                errors.push(FieldError::new(format!("tags[{i}]"), message));
            } else if !kept.contains(&tag) {
                kept.push(tag);
            }
        }
        if errors.is_empty() {
            Ok(Self(kept))
        } else {
            Err(errors.into())
        }
    }

    /// Checks one tag, as used in a filter.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn check(tag: &str) -> Result<(), String> {
        let len = tag.chars().count();
        if len == 0 || len > MAX_TAG {
            return Err(format!("a tag must be 1 to {MAX_TAG} characters"));
        }
        if tag.chars().any(char::is_control) {
            return Err("a tag must not contain control characters".into());
        }
        Ok(())
    }

    #[must_use]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A registered prompt, with the numbers of its active and latest versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: Uuid,
    pub name: PromptName,
    pub description: Option<Description>,
    pub tags: Tags,
    pub active_version: Option<VersionNumber>,
    pub latest_version: Option<VersionNumber>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What creating a prompt needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrompt {
    pub name: PromptName,
    pub description: Option<Description>,
    pub tags: Tags,
}

/// A change to a prompt's editable fields; `None` leaves a field as it is.
/// `description: Some(None)` clears the description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptPatch {
    pub description: Option<Option<Description>>,
    pub tags: Option<Tags>,
}

impl PromptPatch {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.description.is_none() && self.tags.is_none()
    }
}

/// Narrows a prompt listing. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptFilter {
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    /// Names starting with this text.
    pub name_prefix: Option<String>,
    /// Prompts carrying exactly this tag.
    pub tag: Option<String>,
}

/// A version number: 1, 2, 3… within one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionNumber(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a version number is a whole number from 1 to {}", i32::MAX)]
pub struct VersionNumberError;

impl VersionNumber {
    pub const FIRST: Self = Self(1);

    /// # Errors
    /// [`VersionNumberError`] when `n` is below 1 or does not fit a 32-bit column.
    pub fn new(n: i64) -> Result<Self, VersionNumberError> {
        match i32::try_from(n) {
            Ok(v) if v >= 1 => Ok(Self(v.unsigned_abs())),
            _ => Err(VersionNumberError),
        }
    }

    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }

    /// The value as stored in a signed 32-bit column; it always fits.
    #[must_use]
    pub fn as_i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(i32::MAX)
    }
}

impl fmt::Display for VersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which version of a prompt a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionSelector {
    /// Where a label points; `active` is the label `production`.
    Label(super::label::LabelName),
    /// The highest number.
    Latest,
    Number(VersionNumber),
}

impl VersionSelector {
    /// The version applications are served by default: label `production`.
    pub const ACTIVE: Self = Self::Label(super::label::LabelName::PRODUCTION);

    /// A selector as written in a path: a number, `latest`, `active`, or a label.
    ///
    /// # Errors
    /// Why `s` is none of them.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "active" => Ok(Self::ACTIVE),
            _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') => s
                .parse::<i64>()
                .ok()
                .and_then(|n| VersionNumber::new(n).ok())
                .map(Self::Number)
                .ok_or_else(|| VersionNumberError.to_string()),
            _ => super::label::LabelName::new(s)
                .map(Self::Label)
                .map_err(|e| format!("not a version number, `latest`, `active` or a label: {e}")),
        }
    }

    /// The label this selector names, if it names one.
    #[must_use]
    pub fn label(self) -> Option<super::label::LabelName> {
        match self {
            Self::Label(l) => Some(l),
            Self::Latest | Self::Number(_) => None,
        }
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) if *l == super::label::LabelName::PRODUCTION => {
                f.write_str("active version (label `production`)")
            }
            Self::Label(l) => write!(f, "version labelled `{l}`"),
            Self::Latest => f.write_str("latest version"),
            Self::Number(n) => write!(f, "version {n}"),
        }
    }
}

const MAX_COMMIT_MESSAGE: usize = 2_000;

/// What creating a version needs. Built only by [`NewVersion::new`], which
/// enforces that every placeholder is declared.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    template: Template,
    variables: Variables,
    config: Map<String, Value>,
    commit_message: Option<String>,
    activate: bool,
    labels: Vec<super::label::LabelName>,
    /// As authored, when the template includes other prompts.
    source: Option<super::compose::Source>,
    includes: Vec<super::compose::Include>,
    allow_breaking: bool,
}

impl NewVersion {
    /// # Errors
    /// Every problem at once: undeclared placeholders, a too long commit message.
    pub fn new(
        template: Template,
        variables: Variables,
        config: Map<String, Value>,
        commit_message: Option<String>,
        activate: bool,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = template::check_declared(&template, &variables)
            .err()
            .unwrap_or_default();
        if commit_message
            .as_deref()
            .is_some_and(|m| m.chars().count() > MAX_COMMIT_MESSAGE)
        {
            errors.push(FieldError::new(
                "commit_message",
                format!("must be at most {MAX_COMMIT_MESSAGE} characters"),
            ));
        }
        if commit_message.as_deref().is_some_and(crate::text::has_nul) {
            errors.push(FieldError::new("commit_message", crate::text::NUL_MESSAGE));
        }
        if config
            .iter()
            .any(|(k, v)| crate::text::has_nul(k) || crate::text::json_has_nul(v))
        {
            errors.push(FieldError::new("config", crate::text::NUL_MESSAGE));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            template,
            variables,
            config,
            commit_message,
            activate,
            labels: Vec::new(),
            source: None,
            includes: Vec::new(),
            allow_breaking: false,
        })
    }

    /// The same version with its includes expanded (`composed`); what was
    /// authored is kept as its source.
    #[must_use]
    pub(crate) fn composed(mut self, composed: super::compose::Composed) -> Self {
        if composed.includes.is_empty() {
            return self;
        }
        self.source = Some(super::compose::Source {
            template: std::mem::replace(&mut self.template, composed.template),
            variables: std::mem::replace(&mut self.variables, composed.variables),
        });
        self.includes = composed.includes;
        self
    }

    /// The same version, allowed to move protected labels to it even when the
    /// change from their current version is breaking.
    #[must_use]
    pub fn allowing_breaking(mut self, allow: bool) -> Self {
        self.allow_breaking = allow;
        self
    }

    #[must_use]
    pub fn allow_breaking(&self) -> bool {
        self.allow_breaking
    }

    /// The template as authored, when it includes other prompts.
    #[must_use]
    pub fn source(&self) -> Option<&super::compose::Source> {
        self.source.as_ref()
    }

    /// The versions its includes resolved to.
    #[must_use]
    pub fn includes(&self) -> &[super::compose::Include] {
        &self.includes
    }

    /// The same version, also setting `labels` when it is created.
    #[must_use]
    pub fn with_labels(mut self, labels: Vec<super::label::LabelName>) -> Self {
        for label in labels {
            if !self.labels.contains(&label) {
                self.labels.push(label);
            }
        }
        self
    }

    /// Every label the new version is to be pointed at: those asked for,
    /// and `production` when it is to be activated.
    #[must_use]
    pub fn labels(&self) -> Vec<super::label::LabelName> {
        let mut labels = self.labels.clone();
        if self.activate && !labels.contains(&super::label::LabelName::PRODUCTION) {
            labels.insert(0, super::label::LabelName::PRODUCTION);
        }
        labels
    }

    #[must_use]
    pub fn template(&self) -> &Template {
        &self.template
    }

    #[must_use]
    pub fn variables(&self) -> &Variables {
        &self.variables
    }

    #[must_use]
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    #[must_use]
    pub fn commit_message(&self) -> Option<&str> {
        self.commit_message.as_deref()
    }

    /// Whether the new version becomes the active one, i.e. label
    /// `production` (the default).
    #[must_use]
    pub fn activate(&self) -> bool {
        self.activate
    }
}

/// One immutable version of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptVersion {
    pub id: Uuid,
    pub prompt_id: Uuid,
    pub prompt_name: PromptName,
    pub version: VersionNumber,
    pub template: Template,
    pub variables: Variables,
    pub config: Map<String, Value>,
    /// Whether label `production` points at this version alone.
    pub is_active: bool,
    pub commit_message: Option<String>,
    pub created_at: OffsetDateTime,
    /// The versions it was composed from (empty without includes).
    pub includes: Vec<super::compose::Include>,
    /// What was authored, when it has includes: `template` and `variables`
    /// above are the expanded, merged result.
    pub source: Option<super::compose::Source>,
}

impl PromptVersion {
    /// Renders this version with the given values, within `limits`.
    ///
    /// # Errors
    /// Every missing, mistyped or undeclared variable, or a result larger
    /// than the limit.
    pub fn render(
        &self,
        values: &Map<String, Value>,
        limits: &template::RenderLimits,
    ) -> Result<template::Rendered, super::error::RenderFailure> {
        template::render(&self.template, &self.variables, values, limits)
    }
}

/// Position after a version in a newest-first listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCursor(pub VersionNumber);

impl crate::page::Cursor for VersionCursor {
    fn to_key(&self) -> String {
        format!("v1:{}", self.0)
    }

    fn from_key(key: &str) -> Result<Self, crate::page::CursorError> {
        let n = key
            .strip_prefix("v1:")
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or(crate::page::CursorError)?;
        VersionNumber::new(n)
            .map(Self)
            .map_err(|_| crate::page::CursorError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Cursor;

    #[test]
    fn valid_names_are_accepted() {
        for ok in ["a", "0", "support/triage-v2", "a.b_c-d/e", &"x".repeat(128)] {
            assert_eq!(PromptName::new(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn invalid_names_say_why() {
        assert_eq!(PromptName::new(""), Err(PromptNameError::Empty));
        assert_eq!(
            PromptName::new(&"x".repeat(129)),
            Err(PromptNameError::TooLong(129))
        );
        assert_eq!(PromptName::new("-a"), Err(PromptNameError::BadStart));
        assert_eq!(PromptName::new("/a"), Err(PromptNameError::BadStart));
        assert_eq!(PromptName::new("Abc"), Err(PromptNameError::BadStart));
        assert_eq!(PromptName::new("ab c"), Err(PromptNameError::BadChar(' ')));
        assert_eq!(PromptName::new("abC"), Err(PromptNameError::BadChar('C')));
        assert_eq!(PromptName::new("aé"), Err(PromptNameError::BadChar('é')));
    }

    #[test]
    fn tags_are_deduplicated_and_checked() {
        let tags = Tags::new(vec!["a".into(), "b".into(), "a".into()]).expect("valid");
        assert_eq!(tags.as_slice(), ["a", "b"]);
        let err = Tags::new(vec!["ok".into(), String::new(), "x\ny".into()]).expect_err("invalid");
        assert_eq!(
            err.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["tags[1]", "tags[2]"]
        );
        assert!(Tags::new(vec!["t".into(); 33]).is_err());
    }

    #[test]
    fn a_long_description_is_rejected() {
        assert!(Description::new(&"d".repeat(4_000)).is_ok());
        assert!(Description::new(&"d".repeat(4_001)).is_err());
    }

    #[test]
    fn version_numbers_start_at_one_and_fit_in_32_bits() {
        assert!(VersionNumber::new(0).is_err());
        assert!(VersionNumber::new(-3).is_err());
        assert!(VersionNumber::new(i64::from(i32::MAX) + 1).is_err());
        assert_eq!(VersionNumber::new(7).map(VersionNumber::get), Ok(7));
    }

    #[test]
    fn selectors_parse_numbers_aliases_and_labels() {
        assert_eq!(
            VersionSelector::parse("3"),
            Ok(VersionSelector::Number(VersionNumber::new(3).expect("valid")))
        );
        assert_eq!(VersionSelector::parse("latest"), Ok(VersionSelector::Latest));
        assert_eq!(VersionSelector::parse("active"), Ok(VersionSelector::ACTIVE));
        assert_eq!(
            VersionSelector::parse("staging").map(|s| s.label().map(|l| l.to_string())),
            Ok(Some("staging".to_owned()))
        );
        for bad in ["0", "-1", "3x", "99999999999", "Prod", "", "a b"] {
            assert!(VersionSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn activating_adds_production_to_the_labels_once() {
        let template = Template::parse(None, &serde_json::json!("x")).expect("valid");
        let staging = super::super::label::LabelName::new("staging").expect("valid");
        let new = NewVersion::new(template.clone(), Variables::default(), Map::new(), None, true)
            .expect("valid")
            .with_labels(vec![staging, staging, super::super::label::LabelName::PRODUCTION]);
        assert_eq!(
            new.labels(),
            [staging, super::super::label::LabelName::PRODUCTION]
        );
        let quiet = NewVersion::new(template, Variables::default(), Map::new(), None, false)
            .expect("valid")
            .with_labels(vec![staging]);
        assert_eq!(quiet.labels(), [staging]);
    }

    #[test]
    fn a_version_cursor_round_trips() {
        let c = VersionCursor(VersionNumber::new(42).expect("valid"));
        assert_eq!(VersionCursor::decode(&c.encode()), Ok(c));
        assert!(VersionCursor::decode("7631").is_err());
    }

    #[test]
    fn a_new_version_with_an_undeclared_placeholder_is_rejected() {
        let template = Template::parse(None, &serde_json::json!("{{x}}")).expect("valid");
        let err = NewVersion::new(template, Variables::default(), Map::new(), None, true)
            .expect_err("x undeclared");
        assert_eq!(err[0].field, "template");
    }
}
