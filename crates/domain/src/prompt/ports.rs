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
use super::label::{Expected, Label, LabelChange, LabelName, LabelTarget, Resolution};
use super::model::{
    NewPrompt, NewVersion, Prompt, PromptFilter, PromptName, PromptPatch, PromptVersion, VersionCursor,
    VersionSelector,
};
use crate::audit::{Action, Context};
use crate::page::{Page, PageRequest, TimeCursor};

/// A change of one label: where it is to point (`None` removes it), what
/// it must be found at first, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMove {
    pub label: LabelName,
    pub target: Option<LabelTarget>,
    pub expected: Expected,
    pub reason: Option<String>,
    /// How the audit log names the change (`label.moved`, `label.rolled_back`…).
    pub action: Action,
    /// Move a protected label even when [`crate::prompt::diff::breaking_between`]
    /// finds the move breaks callers; the reasons are recorded with it.
    pub allow_breaking: bool,
}

/// A version that includes another prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependent {
    pub prompt: PromptName,
    pub version: super::model::VersionNumber,
    /// The version of the included prompt it was built from.
    pub includes_version: super::model::VersionNumber,
    pub via_label: Option<LabelName>,
}

/// Which labels are protected from the moment they are first set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPolicy {
    pub protected_by_default: Vec<LabelName>,
}

impl Default for LabelPolicy {
    fn default() -> Self {
        Self {
            protected_by_default: vec![LabelName::PRODUCTION],
        }
    }
}

impl LabelPolicy {
    /// Whether a label set for the first time on a prompt starts protected.
    #[must_use]
    pub fn protects(&self, label: LabelName) -> bool {
        self.protected_by_default.contains(&label)
    }

    /// Whether `ctx` may change `current` (the label as stored, if it exists).
    ///
    /// # Errors
    /// [`PromptError::Protected`] for a protected label and a caller
    /// without `release`.
    pub fn authorize(ctx: &Context, label: LabelName, current: Option<&Label>) -> Result<(), PromptError> {
        if current.is_some_and(|l| l.protected) && !ctx.may_release() {
            return Err(PromptError::Protected(label));
        }
        Ok(())
    }
}

/// Durable storage of prompts and versions.
///
/// Implementations translate storage facts into [`PromptError`]s: they never
/// leak a driver error other than as [`PromptError::Unknown`].
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PromptRepository: Send + Sync + 'static {
    /// Every method that changes something takes the caller's [`Context`]
    /// and appends the change's audit event in the same transaction: the
    /// change and its record are committed together or not at all.
    ///
    /// # Errors
    /// MUST return [`PromptError::Duplicate`] if a prompt with that name exists.
    async fn create_prompt(&self, new: &NewPrompt, ctx: &Context) -> Result<Prompt, PromptError>;

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
    async fn update_prompt(
        &self,
        name: &PromptName,
        patch: &PromptPatch,
        ctx: &Context,
    ) -> Result<Prompt, PromptError>;

    /// Deletes the prompt and, with it, all its versions and labels (their
    /// history stays).
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name, and
    /// [`PromptError::HasDependents`] (deleting nothing) when other prompts'
    /// versions include it, unless `force`.
    async fn delete_prompt(&self, name: &PromptName, force: bool, ctx: &Context) -> Result<(), PromptError>;

    /// The versions of other prompts that include this one, by prompt and version.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn dependents(&self, name: &PromptName) -> Result<Vec<Dependent>, PromptError>;

    /// Stores the next version of the prompt: number = highest + 1, even under
    /// concurrent calls, with its includes. Every label in `new.labels()` is
    /// pointed at it in the same transaction, each change with its history
    /// entry and through the same checks as [`PromptRepository::move_label`]
    /// (with `new.allow_breaking()`); a refusal stores nothing.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name, and
    /// [`PromptError::Protected`] or [`PromptError::Breaking`] (storing
    /// nothing) when one of the labels may not move to it.
    async fn create_version(
        &self,
        name: &PromptName,
        new: &NewVersion,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<PromptVersion, PromptError>;

    /// Versions of the prompt, newest first.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn list_versions(
        &self,
        name: &PromptName,
        page: &PageRequest<VersionCursor>,
    ) -> Result<Page<PromptVersion, VersionCursor>, PromptError>;

    /// What `selector` points at: one version, or every arm of a split label.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name, and
    /// [`PromptError::VersionNotFound`] if it has no such version or label
    /// (a removed label included).
    async fn resolve(&self, name: &PromptName, selector: VersionSelector) -> Result<Resolution, PromptError>;

    /// The prompt's labels that point somewhere, by name.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn list_labels(&self, name: &PromptName) -> Result<Vec<Label>, PromptError>;

    /// The labels that point somewhere of many prompts at once, by prompt
    /// id and then by name; a prompt without any is absent.
    ///
    /// # Errors
    /// Storage failures.
    async fn labels_of(
        &self,
        prompt_ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashMap<uuid::Uuid, Vec<Label>>, PromptError>;

    /// One label as stored, removed or not; `None` if it was never set.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn find_label(&self, name: &PromptName, label: LabelName) -> Result<Option<Label>, PromptError>;

    /// Applies `change` atomically with its history entry and audit event:
    /// under a lock on the prompt, checks [`LabelPolicy::authorize`], then
    /// `change.expected`, then that every target version exists, then, for a
    /// protected label moving to other versions, the breaking-change gate
    /// ([`crate::prompt::diff::breaking_between`] from the versions it serves
    /// now, read in the same transaction).
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] for no such prompt;
    /// [`PromptError::Protected`]; [`PromptError::LabelMoved`] when the
    /// expectation fails; [`PromptError::LabelNotFound`] when removing a label
    /// that points nowhere; [`PromptError::Invalid`] naming a target version
    /// that does not exist; [`PromptError::Breaking`] when the gate finds
    /// reasons and `change.allow_breaking` is not set. Nothing is changed in
    /// each case.
    async fn move_label(
        &self,
        name: &PromptName,
        change: &LabelMove,
        policy: &LabelPolicy,
        ctx: &Context,
    ) -> Result<Label, PromptError>;

    /// Sets whether the label is protected, with its audit event.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] for no such prompt and
    /// [`PromptError::LabelNotFound`] for a label never set.
    async fn protect_label(
        &self,
        name: &PromptName,
        label: LabelName,
        protected: bool,
        ctx: &Context,
    ) -> Result<Label, PromptError>;

    /// The label's changes, newest first.
    ///
    /// # Errors
    /// MUST return [`PromptError::NotFound`] if no prompt has that name.
    async fn label_history(
        &self,
        name: &PromptName,
        label: LabelName,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<LabelChange, TimeCursor>, PromptError>;
}

/// What a cached entry answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub name: PromptName,
    pub selector: VersionSelector,
}

/// A resolution as a cache answered it.
#[derive(Debug, Clone)]
pub struct Cached {
    pub resolution: Resolution,
    /// Set when the entry was served past its time to live because the
    /// source of truth could not be reached (stale-if-error): how long ago it
    /// was loaded. Never set for an entry a write has superseded.
    pub stale_age: Option<Duration>,
}

impl Cached {
    /// A fresh answer.
    #[must_use]
    pub fn fresh(resolution: Resolution) -> Self {
        Self {
            resolution,
            stale_age: None,
        }
    }
}

/// The version chosen to serve a request.
#[derive(Debug, Clone)]
pub struct Served {
    pub version: Arc<PromptVersion>,
    /// The label it was served under, when the selector named one.
    pub label: Option<LabelName>,
    /// Whether the label is a split (so another subject may get another version).
    pub split: bool,
    /// As [`Cached::stale_age`].
    pub stale_age: Option<Duration>,
}

/// Loads a resolution from the source of truth when the cache cannot answer.
pub type Load<'a> = Pin<Box<dyn Future<Output = Result<Resolution, PromptError>> + Send + 'a>>;

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
/// - `peek` answers only what `lookup` would answer fresh at that moment,
///   without loading or waiting; `None` sends the caller to `lookup`.
#[async_trait]
pub trait VersionCache: Send + Sync + 'static {
    /// An entry this cache can answer at once, without allocating or
    /// waiting: the hot path's fast lane. `None` (the default) when it has
    /// none ready, or cannot tell without asking its store.
    fn peek(&self, _name: &PromptName, _selector: VersionSelector) -> Option<Resolution> {
        None
    }

    /// # Errors
    /// Whatever `load` fails with.
    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Resolution, PromptError>;

    /// As [`VersionCache::get_or_load`], saying whether the answer is stale.
    ///
    /// # Errors
    /// Whatever `load` fails with, unless a stale entry may answer instead.
    async fn lookup(&self, key: &CacheKey, load: Load<'_>) -> Result<Cached, PromptError> {
        self.get_or_load(key, load).await.map(Cached::fresh)
    }

    /// Forgets every entry of the prompt (its labels, latest and numbered versions).
    async fn invalidate(&self, name: &PromptName);
}

/// A cache that holds nothing: every read goes to the repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

#[async_trait]
impl VersionCache for NoCache {
    async fn get_or_load(&self, _key: &CacheKey, load: Load<'_>) -> Result<Resolution, PromptError> {
        load.await
    }

    async fn invalidate(&self, _name: &PromptName) {}
}
