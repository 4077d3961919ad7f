//! Where keys are kept.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{ApiKey, KeyHash};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no API key with id {0}")]
    NotFound(Uuid),
    /// The storage cannot be reached now; the same call may succeed later.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// Stores a new key with its `key.created` audit event, in one transaction.
    ///
    /// # Errors
    /// Storage failures.
    async fn insert(&self, key: &ApiKey, hash: &KeyHash, ctx: &crate::audit::Context)
    -> Result<(), KeyError>;
    /// The key with this public prefix and its stored hash.
    ///
    /// # Errors
    /// Storage failures.
    async fn find_by_prefix(&self, prefix: &str) -> Result<Option<(ApiKey, KeyHash)>, KeyError>;
    /// Every key, oldest first, revoked ones included.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(&self) -> Result<Vec<ApiKey>, KeyError>;
    /// Marks the key revoked (again is fine), with its `key.revoked` audit
    /// event in the same transaction.
    ///
    /// # Errors
    /// MUST return [`KeyError::NotFound`] when no key has this id.
    async fn revoke(&self, id: Uuid, at: OffsetDateTime, ctx: &crate::audit::Context)
    -> Result<(), KeyError>;
    /// Records a use.
    ///
    /// # Errors
    /// Storage failures.
    async fn touch(&self, id: Uuid, at: OffsetDateTime) -> Result<(), KeyError>;
    /// How many keys are not revoked.
    ///
    /// # Errors
    /// Storage failures.
    async fn count_active(&self) -> Result<u64, KeyError>;
}
