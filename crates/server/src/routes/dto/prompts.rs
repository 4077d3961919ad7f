//! Prompts: creation, changes, and how a prompt is shown.

use registry_domain::prompt::{Description, FieldError, NewPrompt, Prompt, PromptName, PromptPatch, Tags};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::collect;
use crate::problem::ApiError;

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
pub(crate) fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
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

/// A version of another prompt that includes this one.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependentResponse {
    #[schema(example = "support/triage")]
    pub prompt: String,
    /// The including version.
    pub version: u32,
    /// The version of this prompt it was built from.
    pub includes_version: u32,
    /// The label its include named, resolved to `includes_version` when it was created.
    pub via_label: Option<String>,
}

impl From<&registry_domain::prompt::ports::Dependent> for DependentResponse {
    fn from(d: &registry_domain::prompt::ports::Dependent) -> Self {
        Self {
            prompt: d.prompt.to_string(),
            version: d.version.get(),
            includes_version: d.includes_version.get(),
            via_label: d.via_label.map(|l| l.to_string()),
        }
    }
}
