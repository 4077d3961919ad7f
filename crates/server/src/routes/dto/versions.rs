//! Request and response bodies, and their conversion to and from domain types.

use std::collections::BTreeMap;

use registry_domain::prompt::{
    ChatMessage, Description, FieldError, NewPrompt, NewVersion, Prompt, PromptName, PromptPatch,
    PromptVersion, Rendered, Tags, Template, TemplateKind, VariableSpec, VariableType, Variables,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::ApiError;

/// Collects the errors of several independent checks.
fn collect<T>(errors: &mut Vec<FieldError>, result: Result<T, Vec<FieldError>>) -> Option<T> {
    result.map_err(|e| errors.extend(e)).ok()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromptRequest {
    /// 1–128 characters: `[a-z0-9]` first, then `[a-z0-9._/-]`.
    #[schema(example = "support/triage")]
    pub name: String,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    /// Up to 32 labels of 1–64 characters.
    pub tags: Option<Vec<String>>,
}

impl CreatePromptRequest {
    /// # Errors
    /// Every invalid field.
    pub fn try_into_domain(self) -> Result<NewPrompt, ApiError> {
        let mut errors = Vec::new();
        let name = PromptName::new(&self.name)
            .map_err(|e| errors.push(FieldError::new("name", e.to_string())))
            .ok();
        let description = self
            .description
            .as_deref()
            .map(Description::new)
            .transpose()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let tags = collect(&mut errors, Tags::new(self.tags.unwrap_or_default()));
        match (name, tags) {
            (Some(name), Some(tags)) if errors.is_empty() => Ok(NewPrompt {
                name,
                description,
                tags,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// Tells an absent field from an explicit `null`.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePromptRequest {
    /// A new description; `null` clears it; absent leaves it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// The new full list of tags; absent leaves them.
    pub tags: Option<Vec<String>>,
}

impl UpdatePromptRequest {
    /// # Errors
    /// Every invalid field.
    pub fn try_into_domain(self) -> Result<PromptPatch, ApiError> {
        let mut errors = Vec::new();
        let description = match self.description {
            None => None,
            Some(None) => Some(None),
            Some(Some(d)) => Description::new(&d).map(|d| Some(Some(d))).unwrap_or_else(|e| {
                errors.push(e);
                None
            }),
        };
        let tags = self
            .tags
            .map(Tags::new)
            .and_then(|r| collect(&mut errors, r.map(Some)).flatten());
        if errors.is_empty() {
            Ok(PromptPatch { description, tags })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptResponse {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The number of the active version, if any.
    pub active_version: Option<u32>,
    /// The number of the newest version, if any.
    pub latest_version: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Prompt> for PromptResponse {
    fn from(p: Prompt) -> Self {
        Self {
            id: p.id,
            name: p.name.to_string(),
            description: p.description.map(|d| d.as_str().to_owned()),
            tags: p.tags.as_slice().to_vec(),
            active_version: p.active_version.map(registry_domain::prompt::VersionNumber::get),
            latest_version: p.latest_version.map(registry_domain::prompt::VersionNumber::get),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptPage {
    pub items: Vec<PromptResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

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
    /// Defaults to `true`.
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
        Self {
            ty: b.ty.map(|t| match t {
                VarType::String => VariableType::String,
                VarType::Number => VariableType::Number,
                VarType::Boolean => VariableType::Boolean,
                VarType::Json => VariableType::Json,
            }),
            required: b.required.unwrap_or(true),
            default: b.default,
            description: b.description,
        }
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
    /// Make the new version the active one (default `true`).
    pub activate: Option<bool>,
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
        let (Some(template), Some(variables)) = (template, variables) else {
            return Err(ApiError::validation(errors));
        };
        NewVersion::new(
            template,
            variables,
            self.config.unwrap_or_default(),
            self.commit_message,
            self.activate.unwrap_or(true),
        )
        .map_err(ApiError::validation)
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
    /// The version to render; the active one when absent.
    #[schema(minimum = 1)]
    pub version: Option<i64>,
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
