//! Change events: one per change to a prompt, its versions or its labels,
//! written to an outbox in the same transaction as the change, so an event
//! is never published for a change that did not commit, nor a change
//! committed without its event. Each event gets a sequence number from the
//! database; readers page through them in that order.
//!
//! The JSON shape of `data` is part of the API (see docs/events.md):
//! - `prompt.created`, `prompt.updated`, `prompt.deleted`: `{}`
//! - `version.created`: `{"version": 3, "labels": ["production"]}`
//! - `label.moved`: `{"label": "production", "from": {"version": 2} | null, "to": {"version": 3} | {"split": […]}}`
//! - `label.removed`: `{"label": "canary", "from": {…}}`

use std::fmt;

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::prompt::{LabelName, LabelTarget, PromptName, VersionNumber};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    PromptCreated,
    PromptUpdated,
    PromptDeleted,
    VersionCreated,
    LabelMoved,
    LabelRemoved,
}

impl EventKind {
    pub const ALL: [Self; 6] = [
        Self::PromptCreated,
        Self::PromptUpdated,
        Self::PromptDeleted,
        Self::VersionCreated,
        Self::LabelMoved,
        Self::LabelRemoved,
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
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, as written to the outbox (`seq` is 0 until the database
/// assigns it).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub seq: i64,
    pub id: Uuid,
    pub kind: EventKind,
    pub prompt: PromptName,
    pub data: Value,
    pub at: OffsetDateTime,
}

impl ChangeEvent {
    fn new(kind: EventKind, prompt: &PromptName, data: Value) -> Self {
        Self {
            seq: 0,
            id: Uuid::now_v7(),
            kind,
            prompt: prompt.clone(),
            data,
            at: crate::time::now_utc(),
        }
    }

    #[must_use]
    pub fn prompt(kind: EventKind, prompt: &PromptName) -> Self {
        Self::new(kind, prompt, json!({}))
    }

    #[must_use]
    pub fn version_created(prompt: &PromptName, version: VersionNumber, labels: &[LabelName]) -> Self {
        Self::new(
            EventKind::VersionCreated,
            prompt,
            json!({"version": version.get(), "labels": labels.iter().map(LabelName::as_str).collect::<Vec<_>>()}),
        )
    }

    /// A label moved (or was created: `from` is `None`), or, without `to`, removed.
    #[must_use]
    pub fn label_changed(
        prompt: &PromptName,
        label: LabelName,
        from: Option<&LabelTarget>,
        to: Option<&LabelTarget>,
    ) -> Self {
        let from = from.map_or(Value::Null, LabelTarget::to_json);
        match to {
            Some(to) => Self::new(
                EventKind::LabelMoved,
                prompt,
                json!({"label": label.as_str(), "from": from, "to": to.to_json()}),
            ),
            None => Self::new(
                EventKind::LabelRemoved,
                prompt,
                json!({"label": label.as_str(), "from": from}),
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Reading the outbox; it is written by the repositories, inside the
/// transactions of the changes.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The highest sequence number written so far (0 when there is none).
    ///
    /// # Errors
    /// Only storage failures.
    async fn last_seq(&self) -> Result<i64, EventError>;

    /// Events with a sequence number above `after`, in order, at most `limit`.
    ///
    /// # Errors
    /// Only storage failures.
    async fn after(&self, after: i64, limit: u32) -> Result<Vec<ChangeEvent>, EventError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn label_events_carry_where_it_was_and_where_it_is() {
        let p = PromptName::new("p").expect("valid");
        let v = |n| LabelTarget::Version(VersionNumber::new(n).expect("valid"));
        let moved = ChangeEvent::label_changed(&p, LabelName::PRODUCTION, Some(&v(1)), Some(&v(2)));
        assert_eq!(moved.kind, EventKind::LabelMoved);
        assert_eq!(
            moved.data,
            json!({"label": "production", "from": {"version": 1}, "to": {"version": 2}})
        );
        let removed = ChangeEvent::label_changed(&p, LabelName::PRODUCTION, Some(&v(2)), None);
        assert_eq!(removed.kind, EventKind::LabelRemoved);
        assert_eq!(
            removed.data,
            json!({"label": "production", "from": {"version": 2}})
        );
    }
}
