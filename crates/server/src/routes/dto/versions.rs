//! Versions: templates, variables, and rendering.

use std::collections::BTreeMap;

use registry_domain::prompt::{
    ChatMessage, FieldError, LabelName, NewVersion, PromptVersion, Rendered, Template, TemplateKind,
    VariableSpec, VariableType, Variables,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::collect;

/// Most labels one version creation may set.
const MAX_LABELS_PER_VERSION: usize = 20;
use crate::problem::ApiError;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Chat,
}

impl From<Kind> for TemplateKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Text => Self::Text,
            Kind::Chat => Self::Chat,
        }
    }
}

impl From<TemplateKind> for Kind {
    fn from(k: TemplateKind) -> Self {
        match k {
            TemplateKind::Text => Self::Text,
            TemplateKind::Chat => Self::Chat,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageBody {
    #[schema(example = "user")]
    pub role: String,
    #[schema(example = "Summarise: {{ text }}")]
    pub content: String,
}

impl From<ChatMessage> for ChatMessageBody {
    fn from(m: ChatMessage) -> Self {
        Self {
            role: m.role,
            content: m.content,
        }
    }
}

/// A text template, or the messages of a chat template.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TemplateBody {
    Text(String),
    Chat(Vec<ChatMessageBody>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    String,
    Number,
    Boolean,
    Json,
}

/// How a variable is declared.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableSpecBody {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<VarType>,
    /// Whether a render must give a value: `true` unless the variable has a
    /// `default` (a default makes it optional; `required: true` with a
    /// default is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Used when no value is given; must have the declared type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set by the server, on a composed version, for a variable that came
    /// from an include (`shared/safety@3`). Not accepted in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl From<VariableSpecBody> for VariableSpec {
    fn from(b: VariableSpecBody) -> Self {
        Self::new(
            b.ty.map(|t| match t {
                VarType::String => VariableType::String,
                VarType::Number => VariableType::Number,
                VarType::Boolean => VariableType::Boolean,
                VarType::Json => VariableType::Json,
            }),
            b.required,
            b.default,
            b.description,
        )
    }
}

impl From<&VariableSpec> for VariableSpecBody {
    fn from(s: &VariableSpec) -> Self {
        Self {
            ty: s.ty.map(|t| match t {
                VariableType::String => VarType::String,
                VariableType::Number => VarType::Number,
                VariableType::Boolean => VarType::Boolean,
                VariableType::Json => VarType::Json,
            }),
            required: Some(s.required),
            default: s.default.clone(),
            description: s.description.clone(),
            from: s.origin.clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersionRequest {
    /// A string for `text`, an array of `{role, content}` for `chat`.
    /// Placeholders are `{{name}}`; each must be declared in `variables`.
    /// `{{> other/prompt@3}}` or `{{> other/prompt@production}}` includes
    /// another prompt's version (see docs/authoring.md). Required unless
    /// `rebase_includes`.
    #[schema(value_type = Option<TemplateBody>)]
    pub template: Option<Value>,
    /// Defaults to the template's shape: `text` for a string, `chat` for an array.
    pub kind: Option<Kind>,
    pub variables: Option<BTreeMap<String, VariableSpecBody>>,
    /// Model parameters and anything else to keep with the version.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    #[schema(max_length = 2000)]
    pub commit_message: Option<String>,
    /// Point label `production` at the new version (default `true`).
    pub activate: Option<bool>,
    /// More labels to point at the new version (`["staging"]`).
    pub labels: Option<Vec<String>>,
    /// Instead of a template: a new version from the latest one as authored,
    /// its label-based includes resolved again (how a prompt picks up a new
    /// version of a shared part). Only `commit_message`, `activate`,
    /// `labels` and `allow_breaking` go with it.
    pub rebase_includes: Option<bool>,
    /// Move protected labels to it even when the change from their current
    /// version breaks callers (recorded in their history and the audit log).
    pub allow_breaking: Option<bool>,
}

/// What a request to create a version asks for.
#[derive(Debug)]
pub enum VersionRequest {
    New(Box<NewVersion>),
    Rebase {
        commit_message: Option<String>,
        activate: bool,
        labels: Vec<LabelName>,
        allow_breaking: bool,
    },
}

impl CreateVersionRequest {
    /// # Errors
    /// Every invalid field, undeclared placeholders included.
    pub fn try_into_domain(self) -> Result<VersionRequest, ApiError> {
        let mut errors = Vec::new();
        let mut labels = Vec::new();
        for (i, label) in self.labels.unwrap_or_default().iter().enumerate() {
            match LabelName::new(label) {
                Ok(l) => labels.push(l),
                Err(e) => errors.push(FieldError::new(format!("labels[{i}]"), e.to_string())),
            }
        }
        if labels.len() > MAX_LABELS_PER_VERSION {
            errors.push(FieldError::new(
                "labels",
                format!("at most {MAX_LABELS_PER_VERSION} labels at once"),
            ));
        }
        for (name, spec) in self.variables.iter().flatten() {
            if spec.from.is_some() {
                errors.push(FieldError::new(
                    format!("variables.{name}.from"),
                    "is set by the server for variables that come from includes",
                ));
            }
        }
        let allow_breaking = self.allow_breaking.unwrap_or(false);
        if self.rebase_includes == Some(true) {
            for (given, field) in [
                (self.template.is_some(), "template"),
                (self.kind.is_some(), "kind"),
                (self.variables.is_some(), "variables"),
                (self.config.is_some(), "config"),
            ] {
                if given {
                    errors.push(FieldError::new(
                        field,
                        "comes from the latest version when `rebase_includes` is true",
                    ));
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            return Ok(VersionRequest::Rebase {
                commit_message: self.commit_message,
                activate: self.activate.unwrap_or(true),
                labels,
                allow_breaking,
            });
        }
        let Some(template) = self.template else {
            errors.push(FieldError::new("template", "is required"));
            return Err(ApiError::validation(errors));
        };
        let template = collect(&mut errors, Template::parse(self.kind.map(Into::into), &template));
        let specs = self
            .variables
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let variables = collect(&mut errors, Variables::new(specs));
        let (Some(template), Some(variables)) = (template, variables) else {
            return Err(ApiError::validation(errors));
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        NewVersion::new(
            template,
            variables,
            self.config.unwrap_or_default(),
            self.commit_message,
            self.activate.unwrap_or(true),
        )
        .map(|v| VersionRequest::New(Box::new(v.with_labels(labels).allowing_breaking(allow_breaking))))
        .map_err(|e| ApiError::validation(e.into_vec()))
    }
}

/// A version another was composed from.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncludeBody {
    #[schema(example = "shared/safety")]
    pub prompt: String,
    pub version: u32,
    /// The label the include named, resolved to `version` when the including
    /// version was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_label: Option<String>,
}

/// A composed version as authored, before its includes were expanded.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceBody {
    pub kind: Kind,
    #[schema(value_type = TemplateBody)]
    pub template: Value,
    pub variables: BTreeMap<String, VariableSpecBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionResponse {
    pub id: Uuid,
    pub prompt_id: Uuid,
    pub prompt_name: String,
    pub version: u32,
    pub kind: Kind,
    #[schema(value_type = TemplateBody)]
    pub template: Value,
    pub variables: BTreeMap<String, VariableSpecBody>,
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    pub is_active: bool,
    pub commit_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The exact versions this one was composed from: `template` and
    /// `variables` above already hold them, expanded and merged.
    pub includes: Vec<IncludeBody>,
    /// What was authored, with its `{{> …}}` includes, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceBody>,
}

fn variables_body(variables: &Variables) -> BTreeMap<String, VariableSpecBody> {
    variables
        .as_map()
        .iter()
        .map(|(k, s)| (k.clone(), s.into()))
        .collect()
}

impl From<&PromptVersion> for VersionResponse {
    fn from(v: &PromptVersion) -> Self {
        Self {
            id: v.id,
            prompt_id: v.prompt_id,
            prompt_name: v.prompt_name.to_string(),
            version: v.version.get(),
            kind: v.template.kind().into(),
            template: v.template.to_json(),
            variables: variables_body(&v.variables),
            config: v.config.clone(),
            is_active: v.is_active,
            commit_message: v.commit_message.clone(),
            created_at: v.created_at,
            includes: v
                .includes
                .iter()
                .map(|i| IncludeBody {
                    prompt: i.prompt.to_string(),
                    version: i.version.get(),
                    via_label: i.via_label.map(|l| l.to_string()),
                })
                .collect(),
            source: v.source.as_ref().map(|s| SourceBody {
                kind: s.template.kind().into(),
                template: s.template.to_json(),
                variables: variables_body(&s.variables),
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionPage {
    pub items: Vec<VersionResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// The version to render; without it, `label`'s, else `production`'s.
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// The label whose version to render (not with `version`).
    pub label: Option<String>,
    /// For a split label: who the render is for, so they get their arm.
    pub subject: Option<String>,
    /// Values by variable name. Undeclared names are rejected.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenderResponse {
    pub version: u32,
    pub kind: Kind,
    /// The rendered text, for a `text` version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The rendered messages, for a `chat` version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessageBody>>,
}

impl RenderResponse {
    #[must_use]
    pub fn new(version: &PromptVersion, rendered: Rendered) -> Self {
        let (text, messages) = match rendered {
            Rendered::Text(t) => (Some(t), None),
            Rendered::Chat(m) => (None, Some(m.into_iter().map(Into::into).collect())),
        };
        Self {
            version: version.version.get(),
            kind: version.template.kind().into(),
            text,
            messages,
        }
    }
}

/// One added, removed or changed message of a chat template.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageChangeBody {
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub from_index: Option<usize>,
    pub to_index: Option<usize>,
    pub role: String,
    /// The old role, when a changed message's role changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_role: Option<String>,
    /// A unified diff of its content.
    pub diff: String,
}

/// One change to one variable's declaration.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariableChangeBody {
    pub name: String,
    /// `added`, `removed`, `type_changed`, `required_changed` or `default_changed`.
    pub change: &'static str,
    #[schema(value_type = Object)]
    pub from: Value,
    #[schema(value_type = Object)]
    pub to: Value,
}

/// What changed from one version to another.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffResponse {
    pub from: u32,
    pub to: u32,
    /// `[old, new]` when the kind changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind_changed: Option<[Kind; 2]>,
    /// A unified diff of a text template (or of both sides written out as
    /// text when the kind changed); absent for two chat templates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_diff: Option<String>,
    /// For two chat templates: the messages added, removed or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageChangeBody>>,
    pub variables: Vec<VariableChangeBody>,
    /// RFC 6902 JSON Patch from the old config to the new.
    #[schema(value_type = Vec<Object>)]
    pub config_patch: Value,
    /// Whether callers of the old version may fail with the new one.
    pub breaking: bool,
    pub breaking_reasons: Vec<String>,
}

impl From<&registry_domain::prompt::diff::VersionDiff> for DiffResponse {
    fn from(d: &registry_domain::prompt::diff::VersionDiff) -> Self {
        use registry_domain::prompt::diff::TemplateDiff;
        let (template_diff, messages) = match &d.template {
            TemplateDiff::Text { unified } => (Some(unified.clone()), None),
            TemplateDiff::Chat { messages } => (
                None,
                Some(
                    messages
                        .iter()
                        .map(|m| MessageChangeBody {
                            change: m.change.as_str(),
                            from_index: m.from_index,
                            to_index: m.to_index,
                            role: m.role.clone(),
                            from_role: m.from_role.clone(),
                            diff: m.diff.clone(),
                        })
                        .collect(),
                ),
            ),
        };
        Self {
            from: d.from.get(),
            to: d.to.get(),
            kind_changed: d.kind_changed.map(|(a, b)| [a.into(), b.into()]),
            template_diff,
            messages,
            variables: d
                .variables
                .iter()
                .map(|c| VariableChangeBody {
                    name: c.name.clone(),
                    change: c.change,
                    from: c.from.clone(),
                    to: c.to.clone(),
                })
                .collect(),
            config_patch: d.config.clone(),
            breaking: d.is_breaking(),
            breaking_reasons: d.breaking.clone(),
        }
    }
}
