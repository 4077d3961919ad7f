//! The ports through which the prompt service reaches storage and caches.
//!
//! Adapters implement these; the service is generic over them, and the
//! concrete types are chosen once, at startup.

use std::sync::Arc;

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

/// A cache of versions in front of the repository.
///
/// A cache is an optimisation, never a source of truth: its methods cannot
/// fail, and an implementation that cannot reach its store answers `None` and
/// carries on. Implementations MUST make an entry invisible once
/// [`VersionCache::invalidate`] has returned for its prompt.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait VersionCache: Send + Sync + 'static {
    async fn get(&self, key: &CacheKey) -> Option<Arc<PromptVersion>>;
    async fn put(&self, key: CacheKey, version: Arc<PromptVersion>);
    /// Forgets every entry of the prompt.
    async fn invalidate(&self, name: &PromptName);
}

/// A cache that holds nothing: every read goes to the repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

#[async_trait]
impl VersionCache for NoCache {
    async fn get(&self, _key: &CacheKey) -> Option<Arc<PromptVersion>> {
        None
    }

    async fn put(&self, _key: CacheKey, _version: Arc<PromptVersion>) {}

    async fn invalidate(&self, _name: &PromptName) {}
}
