//! The ports through which the prompt service reaches storage and caches.
//!
//! Adapters implement these; the service is generic over them, and the
//! concrete types are chosen once, at startup.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::error::PromptError;
use super::model::{
    NewPrompt, NewVersion, Prompt, PromptFilter, PromptName, PromptPatch, PromptVersion, VersionCursor,
    VersionNumber, VersionSelector,
};
use crate::page::{Page, PageRequest, TimeCursor};

/// Durable storage of prompts and versions.
///
/// Implementations translate storage facts into [`PromptError`]s: they never
/// leak a driver error other than as [`PromptError::Unknown`].
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PromptRepository: Send + Sync + 'static {
    /// # Errors
    /// MUST return [`PromptError::Duplicate`] if a prompt with that name exists.
    async fn create_prompt(&self, new: &NewPrompt) -> Result<Prompt, PromptError>;

    /// Prompts matching `filter`, ordered by `(created_at, id)` ascending.
    ///
    /// # Errors
    /// Only [`PromptError::Unknown`].
    async fn list_prompts(
        &self,
        filter: &PromptFilter,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<Prompt, TimeCursor>, PromptError>;

    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn find_prompt(&self, name: &PromptName) -> Result<Prompt, PromptError>;

    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn update_prompt(&self, name: &PromptName, patch: &PromptPatch) -> Result<Prompt, PromptError>;

    /// Deletes the prompt and, with it, all its versions.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn delete_prompt(&self, name: &PromptName) -> Result<(), PromptError>;

    /// Stores the next version of the prompt: number = highest + 1, even under
    /// concurrent calls. When `new.activate()` is set, the new version becomes
    /// the only active one in the same transaction.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn create_version(&self, name: &PromptName, new: &NewVersion)
    -> Result<PromptVersion, PromptError>;

    /// Versions of the prompt, newest first.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn list_versions(
        &self,
        name: &PromptName,
        page: &PageRequest<VersionCursor>,
    ) -> Result<Page<PromptVersion, VersionCursor>, PromptError>;

    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name, and
    /// [`PromptError::VersionNotFound`] if it has no such version.
    async fn find_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<PromptVersion, PromptError>;

    /// Makes `version` the prompt's only active version, atomically.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name, and
    /// [`PromptError::VersionNotFound`] if it has no such version.
    async fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
    ) -> Result<PromptVersion, PromptError>;
}

/// What a cached entry answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub name: PromptName,
    pub selector: VersionSelector,
}

/// A version as a cache answered it.
#[derive(Debug, Clone)]
pub struct Cached {
    pub version: Arc<PromptVersion>,
    /// Set when the entry was served past its time to live because the
    /// source of truth could not be reached (stale-if-error): how long ago it
    /// was loaded. Never set for an entry a write has superseded.
    pub stale_age: Option<Duration>,
}

impl Cached {
    /// A fresh answer.
    #[must_use]
    pub fn fresh(version: Arc<PromptVersion>) -> Self {
        Self {
            version,
            stale_age: None,
        }
    }
}

/// Loads a version from the source of truth when the cache cannot answer.
pub type Load<'a> = Pin<Box<dyn Future<Output = Result<PromptVersion, PromptError>> + Send + 'a>>;

/// A cache of versions in front of the repository.
///
/// A cache is an optimisation, never a source of truth: an implementation
/// that cannot reach its store answers from `load` and carries on.
///
/// # Contract
/// - `get_or_load` MUST run `load` at most once for concurrent callers of the
///   same key (single flight) and MUST NOT cache a failed load.
/// - Once `invalidate` has returned, no `get_or_load` — in this process or, for
///   a shared cache, in any process using the same store — may answer with an
///   entry loaded before the call began.
/// - `lookup` follows the same rules, and MAY answer an entry past its time to
///   live (marked with `stale_age`) only when `load` failed with
///   [`PromptError::Unavailable`] and no invalidation has happened since the
///   entry was loaded.
#[async_trait]
pub trait VersionCache: Send + Sync + 'static {
    /// # Errors
    /// Whatever `load` fails with.
    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Arc<PromptVersion>, PromptError>;

    /// As [`VersionCache::get_or_load`], saying whether the answer is stale.
    ///
    /// # Errors
    /// Whatever `load` fails with, unless a stale entry may answer instead.
    async fn lookup(&self, key: &CacheKey, load: Load<'_>) -> Result<Cached, PromptError> {
        self.get_or_load(key, load).await.map(Cached::fresh)
    }

    /// Forgets every entry of the prompt (its active, latest and numbered versions).
    async fn invalidate(&self, name: &PromptName);
}

/// A cache that holds nothing: every read goes to the repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

#[async_trait]
impl VersionCache for NoCache {
    async fn get_or_load(&self, _key: &CacheKey, load: Load<'_>) -> Result<Arc<PromptVersion>, PromptError> {
        load.await.map(Arc::new)
    }

    async fn invalidate(&self, _name: &PromptName) {}
}
