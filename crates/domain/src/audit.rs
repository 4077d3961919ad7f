//! Who changed what: the actor and request behind every change, and the
//! append-only audit log they are recorded in.
//!
//! Every change through the API carries a [`Context`]. The repositories write
//! the change's [`AuditEvent`] in the same transaction as the change itself,
//! so one never exists without the other. Reads are not audited.

use std::fmt;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{Scope, Scopes};
use crate::page::{Page, PageRequest, TimeCursor};

/// Who made a change: a key (its id and name), or the configured admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub key_id: Option<Uuid>,
    pub name: String,
}

impl Actor {
    /// The admin key from the configuration, which has no id.
    #[must_use]
    pub fn admin_key() -> Self {
        Self {
            key_id: None,
            name: "admin key (configuration)".into(),
        }
    }
}

/// The caller of a change: who, what they may do, and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub actor: Actor,
    pub scopes: Scopes,
    pub request_id: Option<String>,
}

impl Context {
    /// A caller holding every scope, for embedding services and tests.
    #[must_use]
    pub fn system(name: &str) -> Self {
        Self {
            actor: Actor {
                key_id: None,
                name: name.to_owned(),
            },
            scopes: Scopes::admin(),
            request_id: None,
        }
    }

    /// Whether the caller may move, remove or roll back a protected label.
    #[must_use]
    pub fn may_release(&self) -> bool {
        self.scopes.allow(Scope::Release)
    }

    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.scopes.allow(Scope::Admin)
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    PromptCreated,
    PromptUpdated,
    PromptDeleted,
    VersionCreated,
    LabelMoved,
    LabelRemoved,
    LabelRolledBack,
    LabelProtected,
    LabelUnprotected,
    KeyCreated,
    KeyRevoked,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
}

impl Action {
    pub const ALL: [Self; 14] = [
        Self::PromptCreated,
        Self::PromptUpdated,
        Self::PromptDeleted,
        Self::VersionCreated,
        Self::LabelMoved,
        Self::LabelRemoved,
        Self::LabelRolledBack,
        Self::LabelProtected,
        Self::LabelUnprotected,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::WebhookCreated,
        Self::WebhookUpdated,
        Self::WebhookDeleted,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PromptCreated => "prompt.created",
            Self::PromptUpdated => "prompt.updated",
            Self::PromptDeleted => "prompt.deleted",
            Self::VersionCreated => "version.created",
            Self::LabelMoved => "label.moved",
            Self::LabelRemoved => "label.removed",
            Self::LabelRolledBack => "label.rolled_back",
            Self::LabelProtected => "label.protected",
            Self::LabelUnprotected => "label.unprotected",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookUpdated => "webhook.updated",
            Self::WebhookDeleted => "webhook.deleted",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub actor: Actor,
    pub action: Action,
    /// What changed: `prompt:<name>`, `prompt:<name>@<version>`,
    /// `prompt:<name>#<label>`, `key:<id>`.
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

impl AuditEvent {
    #[must_use]
    pub fn new(
        ctx: &Context,
        action: Action,
        target: String,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Self {
        let at = crate::time::now_utc();
        Self {
            id: Uuid::now_v7(),
            at,
            actor: ctx.actor.clone(),
            action,
            target,
            before,
            after,
            request_id: ctx.request_id.clone(),
        }
    }
}

/// The target naming a prompt.
#[must_use]
pub fn prompt_target(name: &crate::prompt::PromptName) -> String {
    format!("prompt:{name}")
}

/// The target naming one of a prompt's labels.
#[must_use]
pub fn label_target(name: &crate::prompt::PromptName, label: crate::prompt::LabelName) -> String {
    format!("prompt:{name}#{label}")
}

/// Narrows an audit listing. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A key id, or an actor's name.
    pub actor: Option<String>,
    pub action: Option<Action>,
    /// Exactly this target, or every target starting with it when it ends
    /// with `*` (`prompt:greeting*` is the prompt and its versions and labels).
    pub target: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Reading the audit log; it is written by the other repositories, inside
/// the transactions of the changes it records.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Events matching `filter`, newest first.
    ///
    /// # Errors
    /// Only storage failures.
    async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<AuditEvent, TimeCursor>, AuditError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("label.deleted"), None);
    }

    #[test]
    fn only_release_and_admin_keys_may_release() {
        let ctx = |s: &str| Context {
            actor: Actor::admin_key(),
            scopes: Scopes::parse(&[s.to_owned()]).expect("valid"),
            request_id: None,
        };
        assert!(!ctx("write").may_release());
        assert!(ctx("release").may_release());
        assert!(ctx("admin").may_release());
        assert!(!ctx("release").is_admin());
    }
}
