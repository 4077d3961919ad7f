//! Templates, their `{{placeholder}}` syntax, declared variables, and rendering.
//!
//! The rules here are what keep a version from silently rendering something
//! other than what its author meant: every placeholder must be declared, every
//! value must have its declared type, and a value for a variable the version
//! does not declare is an error rather than being ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{RenderError, RenderErrors, RenderFailure};
use super::model::{FieldError, ValidationErrors};
use crate::text::{NUL_MESSAGE, has_nul, json_has_nul};

/// Longest variable name accepted, in bytes.
const MAX_VARIABLE_NAME: usize = 64;
/// Most variables one version may declare.
const MAX_VARIABLES: usize = 256;
/// Most messages a chat template may hold.
const MAX_MESSAGES: usize = 1_000;

/// Bounds on a template and on what rendering it may produce.
///
/// Without them a small request can make a large answer: a template that
/// repeats `{{name}}` many times, rendered with a long value, multiplies the
/// value's size by the number of placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// Most placeholder occurrences in one template (all messages together).
    pub max_placeholders: usize,
    /// Most bytes one render may produce (all messages' contents together).
    pub max_output_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            max_placeholders: 1_000,
            max_output_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    Text,
    Chat,
}

impl TemplateKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Chat => "chat",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "chat" => Some(Self::Chat),
            _ => None,
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a chat template or of a rendered chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// The roles a chat message may have: those the major model APIs accept.
pub const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// A version's body: plain text, or a list of chat messages. Only built by
/// [`Template::parse`] (every placeholder well formed, every role known) or,
/// for storage adapters, [`Template::restore`].
///
/// ```
/// use registry_domain::prompt::{Template, TemplateKind};
///
/// let t = Template::parse(None, &serde_json::json!("Hello {{name}}!")).expect("valid");
/// assert_eq!(t.kind(), TemplateKind::Text);
/// assert_eq!(t.placeholder_count(), 1);
/// assert!(Template::parse(None, &serde_json::json!("Hello {{ full name }}")).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Body);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl Template {
    /// Rebuilds a template as it was stored, trusting that it was checked by
    /// [`Template::parse`] when it was created: rules added since then do not
    /// make a stored version unreadable. Only its shape is checked.
    ///
    /// # Errors
    /// A value that is not a template of `kind` at all.
    pub fn restore(kind: TemplateKind, value: &Value) -> Result<Self, ValidationErrors> {
        Self::shape(kind, value).map_err(ValidationErrors::from)
    }

    fn shape(kind: TemplateKind, value: &Value) -> Result<Self, Vec<FieldError>> {
        match (kind, value) {
            (TemplateKind::Text, Value::String(s)) => Ok(Self(Body::Text(s.clone()))),
            (TemplateKind::Chat, Value::Array(items)) => Ok(Self(Body::Chat(parse_messages(items)?))),
            (TemplateKind::Text, _) => Err(vec![FieldError::new(
                "template",
                "a text template must be a string",
            )]),
            (TemplateKind::Chat, _) => Err(vec![FieldError::new(
                "template",
                "a chat template must be an array of {role, content} messages",
            )]),
        }
    }

    /// The text of a text template.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match &self.0 {
            Body::Text(s) => Some(s),
            Body::Chat(_) => None,
        }
    }

    /// The messages of a chat template.
    #[must_use]
    pub fn messages(&self) -> Option<&[ChatMessage]> {
        match &self.0 {
            Body::Text(_) => None,
            Body::Chat(m) => Some(m),
        }
    }

    /// Reads a template from its JSON form: a string for `text`, an array of
    /// `{role, content}` for `chat`. Without an explicit kind, the JSON's shape
    /// decides.
    ///
    /// # Errors
    /// Every problem found, each naming the field it is about.
    pub fn parse(kind: Option<TemplateKind>, value: &Value) -> Result<Self, ValidationErrors> {
        let kind = kind.unwrap_or(if value.is_array() {
            TemplateKind::Chat
        } else {
            TemplateKind::Text
        });
        let template = Self::shape(kind, value)?;
        let mut errors = Vec::new();
        if template.is_blank() {
            errors.push(FieldError::new("template", "must not be empty"));
        }
        for (field, text) in template.texts() {
            if has_nul(text) {
                errors.push(FieldError::new(field, NUL_MESSAGE));
            } else if let Err(e) = placeholders(text) {
                errors.push(FieldError::new(field, e));
            } else {
                for reference in include_refs(text) {
                    if let Err(e) = super::compose::IncludeRef::parse(reference) {
                        errors.push(FieldError::new(field.clone(), e));
                    }
                }
            }
        }
        for (i, m) in template.messages().unwrap_or_default().iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                errors.push(FieldError::new(
                    format!("template[{i}].role"),
                    format!("must be one of {}", ROLES.join(", ")),
                ));
            }
        }
        if errors.is_empty() {
            Ok(template)
        } else {
            Err(errors.into())
        }
    }

    #[must_use]
    pub fn kind(&self) -> TemplateKind {
        match &self.0 {
            Body::Text(_) => TemplateKind::Text,
            Body::Chat(_) => TemplateKind::Chat,
        }
    }

    /// The JSON form, as [`Template::parse`] reads it.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match &self.0 {
            Body::Text(s) => Value::String(s.clone()),
            Body::Chat(messages) => Value::Array(
                messages
                    .iter()
                    .map(|m| serde_json::json!({ "role": m.role, "content": m.content }))
                    .collect(),
            ),
        }
    }

    /// Every placeholder name used anywhere in the template.
    #[must_use]
    pub fn placeholders(&self) -> BTreeSet<String> {
        self.texts()
            .flat_map(|(_, text)| placeholders(text).unwrap_or_default())
            .map(str::to_owned)
            .collect()
    }

    /// How many placeholder occurrences the template holds, all messages together.
    #[must_use]
    pub fn placeholder_count(&self) -> usize {
        self.texts()
            .map(|(_, text)| scan(text).map_or(0, |found| found.iter().filter(|p| !p.include).count()))
            .sum()
    }

    /// Every include of the template (`{{> shared/safety@3}}`), with the field
    /// it is in and its reference (`shared/safety@3`), in order.
    #[must_use]
    pub fn includes(&self) -> Vec<(String, &str)> {
        self.texts()
            .flat_map(|(field, text)| include_refs(text).into_iter().map(move |r| (field.clone(), r)))
            .collect()
    }

    /// A text template, for composition.
    pub(crate) fn from_text(text: String) -> Self {
        Self(Body::Text(text))
    }

    /// A chat template, for composition.
    pub(crate) fn from_messages(messages: Vec<ChatMessage>) -> Self {
        Self(Body::Chat(messages))
    }

    /// Checks the template against `limits` (the placeholder count).
    ///
    /// # Errors
    /// A [`FieldError`] on `template` naming the limit.
    pub fn check_limits(&self, limits: &RenderLimits) -> Result<(), FieldError> {
        let count = self.placeholder_count();
        if count > limits.max_placeholders {
            return Err(FieldError::new(
                "template",
                format!(
                    "holds {count} placeholders; the limit is {} (render.max_placeholders)",
                    limits.max_placeholders
                ),
            ));
        }
        Ok(())
    }

    fn is_blank(&self) -> bool {
        match &self.0 {
            Body::Text(s) => s.trim().is_empty(),
            Body::Chat(messages) => messages.is_empty(),
        }
    }

    /// The template's text parts, each with the field path that names it.
    fn texts(&self) -> Box<dyn Iterator<Item = (String, &str)> + '_> {
        match &self.0 {
            Body::Text(s) => Box::new(std::iter::once(("template".to_owned(), s.as_str()))),
            Body::Chat(messages) => Box::new(
                messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("template[{i}].content"), m.content.as_str())),
            ),
        }
    }

    /// The size in bytes rendering with `values` produces, counted without
    /// producing it (saturating: an overflow reads as "too large").
    fn rendered_len(&self, values: &BTreeMap<&str, String>) -> usize {
        self.texts()
            .map(|(_, text)| substituted_len(text, values))
            .fold(0, usize::saturating_add)
    }

    /// Renders with values already checked by [`Variables::resolve`].
    fn render_with(&self, values: &BTreeMap<&str, String>) -> Rendered {
        let fill = |text: &str| substitute(text, values);
        match &self.0 {
            Body::Text(s) => Rendered::Text(fill(s)),
            Body::Chat(messages) => Rendered::Chat(
                messages
                    .iter()
                    .map(|m| ChatMessage {
                        role: m.role.clone(),
                        content: fill(&m.content),
                    })
                    .collect(),
            ),
        }
    }
}

fn parse_messages(items: &[Value]) -> Result<Vec<ChatMessage>, Vec<FieldError>> {
    if items.len() > MAX_MESSAGES {
        return Err(vec![FieldError::new(
            "template",
            format!("at most {MAX_MESSAGES} messages are allowed"),
        )]);
    }
    let mut errors = Vec::new();
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            errors.push(FieldError::new(
                format!("template[{i}]"),
                "must be an object {role, content}",
            ));
            continue;
        };
        if let Some(extra) = obj.keys().find(|k| *k != "role" && *k != "content") {
            errors.push(FieldError::new(format!("template[{i}].{extra}"), "unknown field"));
        }
        let role = obj.get("role").and_then(Value::as_str);
        let content = obj.get("content").and_then(Value::as_str);
        match role {
            Some(r) if !r.trim().is_empty() && r.len() <= 64 => {}
            _ => errors.push(FieldError::new(
                format!("template[{i}].role"),
                "must be a non-empty string of at most 64 bytes",
            )),
        }
        if content.is_none() {
            errors.push(FieldError::new(
                format!("template[{i}].content"),
                "must be a string",
            ));
        }
        if let (Some(role), Some(content)) = (role, content) {
            messages.push(ChatMessage {
                role: role.to_owned(),
                content: content.to_owned(),
            });
        }
    }
    if errors.is_empty() {
        Ok(messages)
    } else {
        Err(errors)
    }
}

/// One `{{ name }}` occurrence, or one `{{> prompt@version}}` include: the
/// byte range it covers and the name (or the include's reference) inside.
struct Placeholder<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    include: bool,
}

/// Scans `text` for placeholders and includes. Every `{{` must open a
/// well-formed placeholder or an include: a stray one is an error, because a
/// typo such as `{{ user name }}` would otherwise be sent to a model verbatim.
fn scan(text: &str) -> Result<Vec<Placeholder<'_>>, String> {
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(offset) = text[rest..].find("{{") {
        let start = rest + offset;
        let inner_start = start + 2;
        let Some(close) = text[inner_start..].find("}}") else {
            return Err(format!("unclosed placeholder at byte {start}"));
        };
        let inner = &text[inner_start..inner_start + close];
        let end = inner_start + close + 2;
        if let Some(reference) = inner.trim_start_matches(' ').strip_prefix('>') {
            let reference = reference.trim_matches(' ');
            if reference.is_empty() {
                return Err(format!(
                    "empty include at byte {start}: write `{{{{> prompt@version}}}}` or `{{{{> prompt@label}}}}`"
                ));
            }
            found.push(Placeholder {
                start,
                end,
                name: reference,
                include: true,
            });
            rest = end;
            continue;
        }
        let name = inner.trim_matches(' ');
        if !is_identifier(name) {
            return Err(format!(
                "malformed placeholder `{{{{{inner}}}}}` at byte {start}: a name is a letter or `_` followed by letters, digits or `_`"
            ));
        }
        found.push(Placeholder {
            start,
            end,
            name,
            include: false,
        });
        rest = end;
    }
    Ok(found)
}

/// The include references of `text` (`shared/safety@3`), in order.
pub(crate) fn include_refs(text: &str) -> Vec<&str> {
    scan(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.include)
        .map(|p| p.name)
        .collect()
}

/// The reference of the one include `text` consists of (surrounding spaces
/// aside), if that is all it holds.
pub(crate) fn sole_include(text: &str) -> Option<&str> {
    match scan(text).ok()?.as_slice() {
        [only]
            if only.include && text[..only.start].trim().is_empty() && text[only.end..].trim().is_empty() =>
        {
            Some(only.name)
        }
        _ => None,
    }
}

/// `text` with each include replaced by what `with` gives for its reference.
///
/// # Errors
/// The first error `with` returns.
pub(crate) fn replace_includes<E>(
    text: &str,
    mut with: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let Ok(found) = scan(text) else {
        return Ok(text.to_owned());
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for p in found.into_iter().filter(|p| p.include) {
        out.push_str(&text[copied..p.start]);
        out.push_str(&with(p.name)?);
        copied = p.end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    Ok(scan(text)?
        .into_iter()
        .filter(|p| !p.include)
        .map(|p| p.name)
        .collect())
}

fn substituted_len(text: &str, values: &BTreeMap<&str, String>) -> usize {
    let Ok(found) = scan(text) else {
        return text.len();
    };
    found.iter().filter(|p| !p.include).fold(text.len(), |len, p| {
        len.saturating_sub(p.end - p.start)
            .saturating_add(values.get(p.name).map_or(0, String::len))
    })
}

fn substitute(text: &str, values: &BTreeMap<&str, String>) -> String {
    // Templates were validated when the version was created, so scanning
    // cannot fail here; if it somehow did, the text is returned unchanged.
    let Ok(found) = scan(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for p in found.into_iter().filter(|p| !p.include) {
        out.push_str(&text[copied..p.start]);
        out.push_str(values.get(p.name).map_or("", String::as_str));
        copied = p.end;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_VARIABLE_NAME
}

/// The JSON type a variable's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    String,
    Number,
    Boolean,
    /// Any JSON value; rendered as compact JSON unless it is a string.
    Json,
}

impl VariableType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Json => "json",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::Json => true,
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How one variable is declared.
///
/// - `type`: `string`, `number`, `boolean` or `json`; absent means any value.
/// - `required`: whether a render must give a value. A variable without a
///   default is required unless it says `required: false`; a variable with a
///   `default` is optional (the default fills in), so `required: true` with a
///   default is refused as a contradiction.
/// - `default`: the value used when a render gives none; it must have `type`.
/// - `description`: free text for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawSpec")]
pub struct VariableSpec {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<VariableType>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The include that declared it (`shared/safety@3`), for a variable a
    /// composed version took from an included prompt.
    #[serde(rename = "from", skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `required: true` was sent together with a default (refused by
    /// [`Variables::new`], kept readable by [`Variables::restore`]).
    #[serde(skip)]
    contradicts: bool,
}

/// A spec as sent: `required` may be absent, and then follows from `default`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(rename = "type", default)]
    ty: Option<VariableType>,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

impl From<RawSpec> for VariableSpec {
    fn from(raw: RawSpec) -> Self {
        let has_default = raw.default.is_some();
        Self {
            ty: raw.ty,
            required: raw.required.unwrap_or(!has_default) && !has_default,
            contradicts: raw.required == Some(true) && has_default,
            default: raw.default,
            description: raw.description,
            origin: raw.from,
        }
    }
}

impl VariableSpec {
    /// A spec as declared: `required` absent means "required unless it has
    /// a default". [`Variables::new`] refuses `Some(true)` with a default.
    #[must_use]
    pub fn new(
        ty: Option<VariableType>,
        required: Option<bool>,
        default: Option<Value>,
        description: Option<String>,
    ) -> Self {
        Self::from(RawSpec {
            ty,
            required,
            default,
            description,
            from: None,
        })
    }
}

/// A version's declared variables, keyed by name. Only built by
/// [`Variables::new`], so every name is valid and every default has its type
/// (or, for storage adapters, by [`Variables::restore`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables(BTreeMap<String, VariableSpec>);

impl Variables {
    /// Rebuilds variables as they were stored, trusting the checks made when
    /// the version was created: rules added since do not make it unreadable.
    #[must_use]
    pub fn restore(specs: BTreeMap<String, VariableSpec>) -> Self {
        Self(specs)
    }

    /// # Errors
    /// Every invalid name, every default that does not have its declared
    /// type, and every variable both required and defaulted.
    pub fn new(specs: BTreeMap<String, VariableSpec>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        if specs.len() > MAX_VARIABLES {
            errors.push(FieldError::new(
                "variables",
                format!("at most {MAX_VARIABLES} variables may be declared"),
            ));
        }
        for (name, spec) in &specs {
            if !is_identifier(name) {
                errors.push(FieldError::new(
                    format!("variables.{name}"),
                    "a variable name is a letter or `_` followed by letters, digits or `_` (at most 64)",
                ));
            }
            if spec.description.as_deref().is_some_and(has_nul) {
                errors.push(FieldError::new(
                    format!("variables.{name}.description"),
                    NUL_MESSAGE,
                ));
            }
            if spec.default.as_ref().is_some_and(json_has_nul) {
                errors.push(FieldError::new(format!("variables.{name}.default"), NUL_MESSAGE));
            }
            if spec.contradicts {
                errors.push(FieldError::new(
                    format!("variables.{name}.required"),
                    "a variable with a default is optional: drop `required: true` or the default",
                ));
            }
            if let (Some(ty), Some(default)) = (spec.ty, &spec.default)
                && !ty.accepts(default)
            {
                errors.push(FieldError::new(
                    format!("variables.{name}.default"),
                    format!("must be a {}, got {}", ty.name(), json_type_name(default)),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self(specs))
        } else {
            Err(errors.into())
        }
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&VariableSpec> {
        self.0.get(name)
    }

    #[must_use]
    pub fn as_map(&self) -> &BTreeMap<String, VariableSpec> {
        &self.0
    }

    /// The JSON form stored with a version and returned to clients.
    #[must_use]
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    /// Checks `values` against the declarations and turns each into the text
    /// it renders as. Defaults fill what is missing.
    ///
    /// # Errors
    /// Every missing, mistyped or undeclared variable, at once.
    pub fn resolve<'a>(
        &'a self,
        values: &'a serde_json::Map<String, Value>,
    ) -> Result<BTreeMap<&'a str, String>, RenderErrors> {
        let mut errors = Vec::new();
        for name in values.keys() {
            if !self.0.contains_key(name) {
                errors.push(RenderError::Undeclared(name.clone()));
            }
        }
        let mut resolved = BTreeMap::new();
        for (name, spec) in &self.0 {
            let value = values
                .get(name)
                .filter(|v| !v.is_null())
                .or(spec.default.as_ref());
            match value {
                Some(v) => match spec.ty {
                    Some(ty) if !ty.accepts(v) => errors.push(RenderError::WrongType {
                        name: name.clone(),
                        expected: ty.name(),
                        got: json_type_name(v),
                        from: spec.origin.clone(),
                    }),
                    _ => {
                        resolved.insert(name.as_str(), value_text(v));
                    }
                },
                None if spec.required => errors.push(RenderError::Missing {
                    name: name.clone(),
                    from: spec.origin.clone(),
                }),
                None => {
                    resolved.insert(name.as_str(), String::new());
                }
            }
        }
        if errors.is_empty() {
            Ok(resolved)
        } else {
            Err(RenderErrors(errors))
        }
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The result of rendering a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Checks that every placeholder of `template` is declared in `variables`.
///
/// # Errors
/// One error naming each undeclared placeholder.
pub fn check_declared(template: &Template, variables: &Variables) -> Result<(), ValidationErrors> {
    let errors: Vec<_> = template
        .placeholders()
        .into_iter()
        .filter(|name| variables.get(name).is_none())
        .map(|name| {
            FieldError::new(
                "template",
                format!("placeholder `{{{{{name}}}}}` is not declared in `variables`"),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.into())
    }
}

/// Renders `template` with `values`, checked against `variables`, producing
/// at most `limits.max_output_bytes`. The size is counted before anything is
/// allocated, so an oversized render costs no more than a small one.
///
/// # Errors
/// [`RenderFailure::Invalid`] naming every missing, mistyped or undeclared
/// variable; [`RenderFailure::TooLarge`] when the result would exceed the limit.
pub fn render(
    template: &Template,
    variables: &Variables,
    values: &serde_json::Map<String, Value>,
    limits: &RenderLimits,
) -> Result<Rendered, RenderFailure> {
    let resolved = variables.resolve(values)?;
    let size = template.rendered_len(&resolved);
    if size > limits.max_output_bytes {
        return Err(RenderFailure::TooLarge {
            size,
            limit: limits.max_output_bytes,
        });
    }
    Ok(template.render_with(&resolved))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(v: Value) -> Variables {
        let specs: BTreeMap<String, VariableSpec> = serde_json::from_value(v).expect("valid specs");
        Variables::new(specs).expect("valid variables")
    }

    fn values(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("values must be an object"),
        }
    }

    #[test]
    fn placeholders_allow_inner_spaces() {
        let t = Template::parse(None, &json!("Hi {{name}}, {{ city }} and {{  name }}")).expect("valid");
        assert_eq!(
            t.placeholders().into_iter().collect::<Vec<_>>(),
            vec!["city", "name"]
        );
    }

    #[test]
    fn malformed_and_unclosed_placeholders_are_rejected() {
        for bad in ["{{ user name }}", "{{}}", "{{1x}}", "hello {{ name", "{{na-me}}"] {
            let err = Template::parse(None, &json!(bad)).expect_err(bad);
            assert_eq!(err[0].field, "template", "{bad}");
        }
    }

    #[test]
    fn an_empty_template_is_rejected() {
        assert!(Template::parse(None, &json!("   ")).is_err());
        assert!(Template::parse(Some(TemplateKind::Chat), &json!([])).is_err());
    }

    #[test]
    fn the_kind_must_match_the_json_shape() {
        assert!(Template::parse(Some(TemplateKind::Text), &json!([])).is_err());
        assert!(Template::parse(Some(TemplateKind::Chat), &json!("x")).is_err());
        assert!(Template::parse(None, &json!(42)).is_err());
    }

    #[test]
    fn chat_messages_are_checked_one_by_one() {
        let err = Template::parse(
            None,
            &json!([{"role": "system", "content": "ok"}, {"role": "", "content": 3}, "x", {"role": "user", "content": "{{ bad name }}", "x": 1}]),
        )
        .expect_err("invalid messages");
        let fields: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "template[1].role",
                "template[1].content",
                "template[2]",
                "template[3].x"
            ]
        );
    }

    #[test]
    fn an_undeclared_placeholder_is_named() {
        let t = Template::parse(None, &json!("{{a}} {{b}}")).expect("valid");
        let err = check_declared(&t, &vars(json!({"a": {}}))).expect_err("b is undeclared");
        assert_eq!(err.len(), 1);
        assert!(err[0].message.contains("`{{b}}`"), "{}", err[0].message);
    }

    #[test]
    fn declared_but_unused_variables_are_fine() {
        let t = Template::parse(None, &json!("{{a}}")).expect("valid");
        assert!(check_declared(&t, &vars(json!({"a": {}, "unused": {}}))).is_ok());
    }

    #[test]
    fn a_default_of_the_wrong_type_is_rejected() {
        let specs = serde_json::from_value(json!({"n": {"type": "number", "default": "x"}})).expect("specs");
        let err = Variables::new(specs).expect_err("wrong default type");
        assert_eq!(err[0].field, "variables.n.default");
    }

    #[test]
    fn bad_variable_names_are_rejected() {
        let specs = serde_json::from_value(json!({"1x": {}, "ok": {}})).expect("specs");
        let err = Variables::new(specs).expect_err("bad name");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, "variables.1x");
    }

    #[test]
    fn rendering_fills_values_and_defaults() {
        let t = Template::parse(
            None,
            &json!("{{greeting}}, {{ name }}! n={{n}} b={{b}} j={{j}} o={{o}}"),
        )
        .expect("valid");
        let v = vars(json!({
            "greeting": {"default": "Hello"},
            "name": {"type": "string"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "j": {"type": "json"},
            "o": {"required": false}
        }));
        let out = render(
            &t,
            &v,
            &values(json!({"name": "Ada", "n": 2.5, "b": true, "j": {"k": [1]}})),
            &RenderLimits::default(),
        )
        .expect("renders");
        assert_eq!(
            out,
            Rendered::Text("Hello, Ada! n=2.5 b=true j={\"k\":[1]} o=".into())
        );
    }

    #[test]
    fn rendering_reports_every_missing_mistyped_and_undeclared_variable() {
        let t = Template::parse(None, &json!("{{a}} {{b}}")).expect("valid");
        let v = vars(json!({"a": {"type": "number"}, "b": {}}));
        let err = render(
            &t,
            &v,
            &values(json!({"a": "seven", "zz": 1})),
            &RenderLimits::default(),
        )
        .expect_err("invalid values");
        let RenderFailure::Invalid(err) = err else {
            panic!("expected variable errors, got {err:?}");
        };
        assert_eq!(
            err.0,
            vec![
                RenderError::Undeclared("zz".into()),
                RenderError::WrongType {
                    name: "a".into(),
                    expected: "number",
                    got: "string",
                    from: None,
                },
                RenderError::Missing {
                    name: "b".into(),
                    from: None
                },
            ]
        );
    }

    #[test]
    fn chat_templates_render_each_message() {
        let t = Template::parse(
            None,
            &json!([{"role": "system", "content": "You are {{persona}}."}, {"role": "user", "content": "{{q}}"}]),
        )
        .expect("valid");
        let v = vars(json!({"persona": {"default": "terse"}, "q": {}}));
        let out = render(&t, &v, &values(json!({"q": "why?"})), &RenderLimits::default()).expect("renders");
        assert_eq!(
            out,
            Rendered::Chat(vec![
                ChatMessage {
                    role: "system".into(),
                    content: "You are terse.".into()
                },
                ChatMessage {
                    role: "user".into(),
                    content: "why?".into()
                },
            ])
        );
    }

    #[test]
    fn substituted_values_are_not_scanned_again() {
        let t = Template::parse(None, &json!("{{a}}")).expect("valid");
        let v = vars(json!({"a": {}}));
        let out = render(&t, &v, &values(json!({"a": "{{a}}"})), &RenderLimits::default()).expect("renders");
        assert_eq!(out, Rendered::Text("{{a}}".into()));
    }

    #[test]
    fn a_template_round_trips_through_json() {
        let json = json!([{"role": "user", "content": "{{q}}"}]);
        let t = Template::parse(None, &json).expect("valid");
        assert_eq!(t.to_json(), json);
        assert_eq!(t.kind(), TemplateKind::Chat);
    }

    #[test]
    fn a_template_with_more_placeholders_than_the_limit_is_refused() {
        let limits = RenderLimits {
            max_placeholders: 3,
            ..RenderLimits::default()
        };
        let three = Template::parse(None, &json!("{{a}}{{a}} {{b}}")).expect("valid");
        assert_eq!(three.placeholder_count(), 3);
        assert!(three.check_limits(&limits).is_ok());
        let chat = Template::parse(
            None,
            &json!([{"role": "user", "content": "{{a}}{{a}}"}, {"role": "user", "content": "{{a}}{{a}}"}]),
        )
        .expect("valid");
        let err = chat.check_limits(&limits).expect_err("four placeholders");
        assert_eq!(err.field, "template");
        assert!(err.message.contains("render.max_placeholders"), "{}", err.message);
    }

    #[test]
    fn a_render_larger_than_the_limit_fails_before_it_is_built() {
        let limits = RenderLimits {
            max_output_bytes: 1_000,
            ..RenderLimits::default()
        };
        let t = Template::parse(None, &json!("x{{a}}{{a}}")).expect("valid");
        let v = vars(json!({"a": {}}));
        let fits = render(&t, &v, &values(json!({"a": "y".repeat(499)})), &limits).expect("999 bytes");
        assert_eq!(fits, Rendered::Text(format!("x{}", "y".repeat(998))));
        let err = render(&t, &v, &values(json!({"a": "y".repeat(500)})), &limits).expect_err("1001 bytes");
        assert!(
            matches!(
                err,
                RenderFailure::TooLarge {
                    size: 1_001,
                    limit: 1_000
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn nul_is_refused_in_template_texts_roles_and_variable_specs() {
        let err = Template::parse(None, &json!("a\u{0}b")).expect_err("NUL in text");
        assert_eq!(err[0].field, "template");
        let err = Template::parse(None, &json!([{"role": "us\u{0}er", "content": "hi\u{0}"}]))
            .expect_err("NUL in chat");
        let fields: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["template[0].content", "template[0].role"]);
        let specs = serde_json::from_value(json!({"a": {"default": "x\u{0}", "description": "\u{0}"}}))
            .expect("specs");
        let err = Variables::new(specs).expect_err("NUL in spec");
        let fields: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["variables.a.description", "variables.a.default"]);
    }

    #[test]
    fn chat_roles_come_from_the_documented_set_but_stored_ones_stay_readable() {
        let bot = json!([{"role": "bot", "content": "hi"}]);
        let err = Template::parse(None, &bot).expect_err("unknown role");
        assert_eq!(err[0].field, "template[0].role");
        assert!(err[0].message.contains("assistant"), "{}", err[0].message);
        let stored = Template::restore(TemplateKind::Chat, &bot).expect("stored before the rule");
        assert_eq!(stored.messages().map(<[ChatMessage]>::len), Some(1));
        for role in ROLES {
            assert!(
                Template::parse(None, &json!([{"role": role, "content": "x"}])).is_ok(),
                "{role}"
            );
        }
    }

    #[test]
    fn a_default_makes_a_variable_optional_and_required_with_a_default_is_refused() {
        let specs: BTreeMap<String, VariableSpec> =
            serde_json::from_value(json!({"city": {"default": "Paris"}, "q": {}})).expect("specs");
        assert!(!specs["city"].required);
        assert!(specs["q"].required);
        assert!(Variables::new(specs).is_ok());
        let both: BTreeMap<String, VariableSpec> =
            serde_json::from_value(json!({"city": {"required": true, "default": "Paris"}})).expect("specs");
        let err = Variables::new(both.clone()).expect_err("a contradiction");
        assert_eq!(err[0].field, "variables.city.required");
        // Stored by 1.0.0 that way, it still reads, and the default fills in.
        let restored = Variables::restore(both);
        let out = render(
            &Template::parse(None, &json!("{{city}}")).expect("valid"),
            &restored,
            &values(json!({})),
            &RenderLimits::default(),
        )
        .expect("renders");
        assert_eq!(out, Rendered::Text("Paris".into()));
    }
}
