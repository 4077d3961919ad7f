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
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersionRequest {
    /// A string for `text`, an array of `{role, content}` for `chat`.
    /// Placeholders are `{{name}}`; each must be declared in `variables`.
    #[schema(value_type = TemplateBody)]
    pub template: Value,
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
}

impl CreateVersionRequest {
    /// # Errors
    /// Every invalid field, undeclared placeholders included.
    pub fn try_into_domain(self) -> Result<NewVersion, ApiError> {
        let mut errors = Vec::new();
        let template = collect(
            &mut errors,
            Template::parse(self.kind.map(Into::into), &self.template),
        );
        let specs = self
            .variables
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let variables = collect(&mut errors, Variables::new(specs));
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
        .map(|v| v.with_labels(labels))
        .map_err(|e| ApiError::validation(e.into_vec()))
    }
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
            variables: v
                .variables
                .as_map()
                .iter()
                .map(|(k, s)| (k.clone(), s.into()))
                .collect(),
            config: v.config.clone(),
            is_active: v.is_active,
            commit_message: v.commit_message.clone(),
            created_at: v.created_at,
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
