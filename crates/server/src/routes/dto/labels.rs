//! Labels, their history, and the audit log.

use registry_domain::audit::AuditEvent;
use registry_domain::prompt::{FieldError, Label, LabelChange, LabelTarget, Split};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// One arm of a split.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmBody {
    #[schema(minimum = 1, example = 8)]
    pub version: i64,
    /// Whole percent, 1–100; the arms sum to 100.
    #[schema(minimum = 1, maximum = 100, example = 10)]
    pub weight: i64,
}

/// Where a label points: `version`, or `split`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<ArmBody>>,
}

impl From<&LabelTarget> for TargetBody {
    fn from(t: &LabelTarget) -> Self {
        match t {
            LabelTarget::Version(v) => Self {
                version: Some(v.get()),
                split: None,
            },
            LabelTarget::Split(s) => Self {
                version: None,
                split: Some(
                    s.arms()
                        .iter()
                        .map(|a| ArmBody {
                            version: i64::from(a.version.get()),
                            weight: i64::from(a.weight),
                        })
                        .collect(),
                ),
            },
        }
    }
}

/// Moves a label: give `version` or `split`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLabelRequest {
    /// The version the label is to point at.
    #[schema(minimum = 1, example = 7)]
    pub version: Option<i64>,
    /// A weighted split: `[{"version": 7, "weight": 90}, {"version": 8, "weight": 10}]`.
    pub split: Option<Vec<ArmBody>>,
    /// Why, for the history (at most 1,000 characters).
    pub reason: Option<String>,
    /// Compare-and-set: move only if the label points at exactly this
    /// version now (else 412). `If-Match` with the label's `ETag` does the
    /// same for any target.
    #[schema(minimum = 1)]
    pub expected_version: Option<i64>,
    /// Move a protected label even when the change from its current version
    /// breaks callers (the reasons are recorded in its history and the audit log).
    pub allow_breaking: Option<bool>,
}

impl MoveLabelRequest {
    /// # Errors
    /// Every invalid field.
    pub fn target(&self) -> Result<LabelTarget, Vec<FieldError>> {
        match (self.version, &self.split) {
            (Some(v), None) => registry_domain::prompt::VersionNumber::new(v)
                .map(LabelTarget::Version)
                .map_err(|e| vec![FieldError::new("version", e.to_string())]),
            (None, Some(arms)) => Split::new(arms.iter().map(|a| (a.version, a.weight)).collect(), "split")
                .map(LabelTarget::Split),
            (Some(_), Some(_)) => Err(vec![FieldError::new(
                "split",
                "give `version` or `split`, not both",
            )]),
            (None, None) => Err(vec![FieldError::new("version", "give `version` or `split`")]),
        }
    }
}

/// Rolls a label back; every field optional, and the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Why, for the history.
    pub reason: Option<String>,
    /// Roll back even when going back breaks callers of the current version.
    pub allow_breaking: Option<bool>,
}

/// Protects a label or lifts its protection (admin only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectLabelRequest {
    pub protected: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelResponse {
    #[schema(example = "production")]
    pub name: String,
    /// Where it points; absent for a removed label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetBody>,
    /// Moving, removing or rolling it back needs the `release` scope.
    pub protected: bool,
    /// Counts its changes; the `ETag` is `"r<revision>"`.
    pub revision: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Label> for LabelResponse {
    fn from(l: &Label) -> Self {
        Self {
            name: l.name.to_string(),
            target: l.target.as_ref().map(Into::into),
            protected: l.protected,
            revision: l.revision,
            updated_at: l.updated_at,
        }
    }
}

/// Who made a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorBody {
    /// The key's id; absent for the admin key from the configuration.
    pub key_id: Option<Uuid>,
    pub name: String,
}

/// One change of a label.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelChangeResponse {
    pub id: Uuid,
    pub label: String,
    /// Where it pointed before; absent when this change created it.
    pub from: Option<TargetBody>,
    /// Where it points after; absent when this change removed it.
    pub to: Option<TargetBody>,
    pub actor: ActorBody,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The breaking changes this move was allowed to make (`allow_breaking`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_breaking: Vec<String>,
}

impl From<&LabelChange> for LabelChangeResponse {
    fn from(c: &LabelChange) -> Self {
        Self {
            id: c.id,
            label: c.label.to_string(),
            from: c.from.as_ref().map(Into::into),
            to: c.to.as_ref().map(Into::into),
            actor: ActorBody {
                key_id: c.actor.key_id,
                name: c.actor.name.clone(),
            },
            reason: c.reason.clone(),
            request_id: c.request_id.clone(),
            at: c.at,
            allowed_breaking: c.overrides.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelHistoryPage {
    pub items: Vec<LabelChangeResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One recorded change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: ActorBody,
    /// `prompt.created`, `version.created`, `label.moved`, `key.revoked`, …
    #[schema(example = "label.moved")]
    pub action: String,
    /// `prompt:<name>`, `prompt:<name>@<version>`, `prompt:<name>#<label>`, `key:<id>`.
    #[schema(example = "prompt:greeting#production")]
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

impl From<&AuditEvent> for AuditEventResponse {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: ActorBody {
                key_id: e.actor.key_id,
                name: e.actor.name.clone(),
            },
            action: e.action.to_string(),
            target: e.target.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            request_id: e.request_id.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEventResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}
