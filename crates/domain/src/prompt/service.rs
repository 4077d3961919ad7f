//! The prompt service: the use cases, over the repository and cache ports.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::compose::{self, IncludeRef, Reachable};
use super::diff::{self, VersionDiff};
use super::error::{PromptError, RenderFailure};
use super::label::{Expected, Label, LabelChange, LabelName, LabelTarget, Resolution};
use super::model::FieldError;
use super::model::{
    NewPrompt, NewVersion, Prompt, PromptFilter, PromptName, PromptPatch, PromptVersion, VersionCursor,
    VersionNumber, VersionSelector,
};
use super::ports::{
    CacheKey, Cached, Dependent, LabelMove, LabelPolicy, PromptRepository, Served, VersionCache,
};
use super::template::{RenderLimits, Rendered};
use crate::audit::{Action, Context};
use crate::page::{Limit, Page, PageRequest, TimeCursor};

/// Prompt, version and label use cases. Cheap to clone: it holds its ports
/// in `Arc`s.
#[derive(Debug)]
pub struct PromptService<R, C> {
    repo: Arc<R>,
    cache: Arc<C>,
    limits: RenderLimits,
    policy: Arc<LabelPolicy>,
}

impl<R, C> Clone for PromptService<R, C> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            cache: Arc::clone(&self.cache),
            limits: self.limits,
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<R: PromptRepository, C: VersionCache> PromptService<R, C> {
    /// A service with the default [`RenderLimits`] and [`LabelPolicy`].
    pub fn new(repo: Arc<R>, cache: Arc<C>) -> Self {
        Self {
            repo,
            cache,
            limits: RenderLimits::default(),
            policy: Arc::new(LabelPolicy::default()),
        }
    }

    /// The same service with other limits on templates and renders.
    #[must_use]
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same service with other labels protected by default.
    #[must_use]
    pub fn with_label_policy(mut self, policy: LabelPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    #[must_use]
    pub fn limits(&self) -> &RenderLimits {
        &self.limits
    }

    /// # Errors
    /// [`PromptError::Duplicate`] if the name is taken.
    #[tracing::instrument(skip_all, fields(prompt = %new.name), err(level = "debug"))]
    pub async fn create_prompt(&self, new: NewPrompt, ctx: &Context) -> Result<Prompt, PromptError> {
        self.repo.create_prompt(&new, ctx).await
    }

    /// # Errors
    /// Only storage failures.
    pub async fn list_prompts(
        &self,
        filter: PromptFilter,
        page: PageRequest<TimeCursor>,
    ) -> Result<Page<Prompt, TimeCursor>, PromptError> {
        self.repo.list_prompts(&filter, &page).await
    }

    /// # Errors
    /// [`PromptError::NotFound`].
    pub async fn get_prompt(&self, name: &PromptName) -> Result<Prompt, PromptError> {
        self.repo.find_prompt(name).await
    }

    /// # Errors
    /// [`PromptError::NotFound`].
    #[tracing::instrument(skip_all, fields(prompt = %name), err(level = "debug"))]
    pub async fn update_prompt(
        &self,
        name: &PromptName,
        patch: PromptPatch,
        ctx: &Context,
    ) -> Result<Prompt, PromptError> {
        self.repo.update_prompt(name, &patch, ctx).await
    }

    /// Deletes the prompt, its versions and labels; cached entries are gone
    /// before this returns. A prompt other prompts include is kept unless
    /// `force` (their versions keep the text they were built with).
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::HasDependents`].
    #[tracing::instrument(skip_all, fields(prompt = %name), err(level = "debug"))]
    pub async fn delete_prompt(
        &self,
        name: &PromptName,
        force: bool,
        ctx: &Context,
    ) -> Result<(), PromptError> {
        let result = self.repo.delete_prompt(name, force, ctx).await;
        self.cache.invalidate(name).await;
        result
    }

    /// Creates the next version and points its labels at it. Its includes
    /// are resolved and expanded now (see [`compose`]). Cached entries of the
    /// prompt are gone before this returns, so no reader sees the previous
    /// target of a label afterwards.
    ///
    /// # Errors
    /// [`PromptError::NotFound`]; [`PromptError::Invalid`] for a template
    /// with more placeholders than the limits allow or includes that cannot
    /// be composed; [`PromptError::Protected`] when a label to set is
    /// protected and the caller may not release; [`PromptError::Breaking`]
    /// when moving a protected label to it breaks callers and the caller did
    /// not allow it.
    #[tracing::instrument(skip_all, fields(prompt = %name), err(level = "debug"))]
    pub async fn create_version(
        &self,
        name: &PromptName,
        new: NewVersion,
        ctx: &Context,
    ) -> Result<PromptVersion, PromptError> {
        let new = self.compose(name, new).await?;
        new.template()
            .check_limits(&self.limits)
            .map_err(|e| PromptError::Invalid(vec![e]))?;
        let result = self.repo.create_version(name, &new, &self.policy, ctx).await;
        // Invalidate even on error: a failure after commit (a lost connection)
        // must not leave a stale pointer behind.
        self.cache.invalidate(name).await;
        result
    }

    /// A new version of `name` from its latest version as authored, with its
    /// label-based includes resolved again: how a prompt picks up a new
    /// version of a shared part, deliberately.
    ///
    /// # Errors
    /// [`PromptError::Invalid`] when the latest version has no label-based
    /// includes; those of [`PromptService::create_version`].
    pub async fn rebase_includes(
        &self,
        name: &PromptName,
        commit_message: Option<String>,
        activate: bool,
        labels: Vec<LabelName>,
        allow_breaking: bool,
        ctx: &Context,
    ) -> Result<PromptVersion, PromptError> {
        let latest = self.load(name, VersionSelector::Latest).await?;
        let invalid =
            |message: String| PromptError::Invalid(vec![FieldError::new("rebase_includes", message)]);
        let Some(source) = &latest.source else {
            return Err(invalid(format!(
                "version {} includes no other prompt",
                latest.version
            )));
        };
        if latest.includes.iter().all(|i| i.via_label.is_none()) {
            return Err(invalid(format!(
                "version {} includes only pinned versions: nothing to re-resolve",
                latest.version
            )));
        }
        let new = NewVersion::new(
            source.template.clone(),
            source.variables.clone(),
            latest.config.clone(),
            commit_message,
            activate,
        )
        .map_err(|e| PromptError::Invalid(e.into_vec()))?
        .with_labels(labels)
        .allowing_breaking(allow_breaking);
        self.create_version(name, new, ctx).await
    }

    /// Resolves the template's includes and expands them.
    async fn compose(&self, name: &PromptName, new: NewVersion) -> Result<NewVersion, PromptError> {
        let refs = new.template().includes();
        if refs.is_empty() {
            return Ok(new);
        }
        let mut reachable = Reachable::default();
        let mut errors = Vec::new();
        let mut pending = Vec::new();
        for (field, raw) in refs {
            if reachable.direct.contains_key(raw) {
                continue;
            }
            let Ok(include) = IncludeRef::parse(raw) else {
                continue; // refused when the template was parsed
            };
            match self.repo.resolve(&include.prompt, include.selector).await {
                Ok(Resolution::Version(v)) => {
                    pending.push((Arc::clone(&v), 1));
                    reachable
                        .direct
                        .insert(raw.to_owned(), (v, include.selector.label()));
                }
                Ok(Resolution::Split(_)) => errors.push(FieldError::new(
                    field,
                    format!(
                        "include `{{{{> {raw}}}}}` names a split label, which has no single version: pin one"
                    ),
                )),
                Err(PromptError::NotFound(p)) => {
                    errors.push(FieldError::new(
                        field,
                        format!("include `{{{{> {raw}}}}}`: no prompt named `{p}`"),
                    ));
                }
                Err(e @ PromptError::VersionNotFound { .. }) => {
                    errors.push(FieldError::new(field, format!("include `{{{{> {raw}}}}}`: {e}")));
                }
                Err(e) => return Err(e),
            }
        }
        if !errors.is_empty() {
            return Err(PromptError::Invalid(errors));
        }
        // Every version reachable through the includes' own includes, as deep
        // as the depth limit allows, for the cycle and depth checks.
        while let Some((version, depth)) = pending.pop() {
            reachable.versions.insert(
                (version.prompt_name.clone(), version.version),
                Arc::clone(&version),
            );
            if depth > compose::MAX_DEPTH {
                continue;
            }
            for include in &version.includes {
                let key = (include.prompt.clone(), include.version);
                if reachable.versions.contains_key(&key) {
                    continue;
                }
                match self
                    .repo
                    .resolve(&include.prompt, VersionSelector::Number(include.version))
                    .await
                {
                    Ok(Resolution::Version(v)) => pending.push((v, depth + 1)),
                    // A prompt deleted with `force`: its text is already
                    // expanded into the version that included it.
                    Ok(Resolution::Split(_))
                    | Err(PromptError::NotFound(_) | PromptError::VersionNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let composed = compose::compose(name, new.template(), new.variables(), &reachable)
            .map_err(PromptError::Invalid)?;
        Ok(new.composed(composed))
    }

    /// One version, by number or `latest`, from the repository.
    async fn load(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<Arc<PromptVersion>, PromptError> {
        match self.repo.resolve(name, selector).await? {
            Resolution::Version(v) => Ok(v),
            Resolution::Split(arms) => arms
                .first()
                .map(|(_, v)| Arc::clone(v))
                .ok_or_else(|| PromptError::Unknown(anyhow::anyhow!("a split without arms"))),
        }
    }

    /// What changed from `from` to `to` (each a number, `latest` or a label
    /// pointing at one version).
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::VersionNotFound`], or
    /// [`PromptError::Invalid`] for a split label.
    pub async fn diff(
        &self,
        name: &PromptName,
        from: VersionSelector,
        to: VersionSelector,
    ) -> Result<VersionDiff, PromptError> {
        let mut sides = Vec::with_capacity(2);
        for (field, selector) in [("from", from), ("to", to)] {
            match self.resolve(name, selector).await?.resolution {
                Resolution::Version(v) => sides.push(v),
                Resolution::Split(_) => {
                    return Err(PromptError::Invalid(vec![FieldError::new(
                        field,
                        format!("{selector} is a split of several versions: name one of them"),
                    )]));
                }
            }
        }
        Ok(diff::diff(&sides[0], &sides[1]))
    }

    /// The versions of other prompts that include `name`.
    ///
    /// # Errors
    /// [`PromptError::NotFound`].
    pub async fn dependents(&self, name: &PromptName) -> Result<Vec<Dependent>, PromptError> {
        self.repo.dependents(name).await
    }

    /// # Errors
    /// [`PromptError::NotFound`].
    pub async fn list_versions(
        &self,
        name: &PromptName,
        page: PageRequest<VersionCursor>,
    ) -> Result<Page<PromptVersion, VersionCursor>, PromptError> {
        self.repo.list_versions(name, &page).await
    }

    /// What `selector` resolves to, from the cache when it holds it.
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::VersionNotFound`], or
    /// [`PromptError::Unavailable`] when nothing current is cached.
    pub async fn resolve(&self, name: &PromptName, selector: VersionSelector) -> Result<Cached, PromptError> {
        // A hit costs no key, no boxed load and no boxed lookup.
        if let Some(resolution) = self.cache.peek(name, selector) {
            return Ok(Cached::fresh(resolution));
        }
        let key = CacheKey {
            name: name.clone(),
            selector,
        };
        let load = Box::pin(self.repo.resolve(name, selector));
        self.cache.lookup(&key, load).await
    }

    /// The version to serve for `selector`: for a split label, the arm
    /// `subject` falls in (or a random one without a subject).
    ///
    /// # Errors
    /// As [`PromptService::resolve`].
    pub async fn serve(
        &self,
        name: &PromptName,
        selector: VersionSelector,
        subject: Option<&str>,
    ) -> Result<Served, PromptError> {
        let cached = self.resolve(name, selector).await?;
        let label = selector.label();
        Ok(Served {
            version: Arc::clone(cached.resolution.choose(name, label, subject)),
            label,
            split: cached.resolution.is_split(),
            stale_age: cached.stale_age,
        })
    }

    /// One version (for a split label, a random arm).
    ///
    /// # Errors
    /// As [`PromptService::resolve`].
    pub async fn get_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<Arc<PromptVersion>, PromptError> {
        self.serve(name, selector, None).await.map(|s| s.version)
    }

    /// Points `production` at `version` (a rollback when it is older): the
    /// alias `/activate` keeps from before labels.
    ///
    /// # Errors
    /// As [`PromptService::move_label`].
    #[tracing::instrument(skip_all, fields(prompt = %name, version = %version), err(level = "debug"))]
    pub async fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
        allow_breaking: bool,
        ctx: &Context,
    ) -> Result<PromptVersion, PromptError> {
        let change = LabelMove {
            label: LabelName::PRODUCTION,
            target: Some(LabelTarget::Version(version)),
            expected: Expected::Anything,
            reason: None,
            action: Action::LabelMoved,
            allow_breaking,
        };
        // The alias answers as it did before labels: no such version is a 404.
        self.change_label(name, &change, ctx).await.map_err(|e| match e {
            PromptError::Invalid(_) => PromptError::VersionNotFound {
                name: name.clone(),
                selector: VersionSelector::Number(version),
            },
            other => other,
        })?;
        self.repo
            .resolve(name, VersionSelector::Number(version))
            .await
            .map(|r| r.choose(name, None, None).as_ref().clone())
    }

    /// The labels of a page of prompts, in one read, by prompt id.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn labels_of(
        &self,
        prompts: &[Prompt],
    ) -> Result<std::collections::HashMap<uuid::Uuid, Vec<Label>>, PromptError> {
        let ids: Vec<uuid::Uuid> = prompts.iter().map(|p| p.id).collect();
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        self.repo.labels_of(&ids).await
    }

    /// # Errors
    /// [`PromptError::NotFound`].
    pub async fn list_labels(&self, name: &PromptName) -> Result<Vec<Label>, PromptError> {
        self.repo.list_labels(name).await
    }

    /// A label that points somewhere.
    ///
    /// # Errors
    /// [`PromptError::NotFound`] or [`PromptError::LabelNotFound`].
    pub async fn get_label(&self, name: &PromptName, label: LabelName) -> Result<Label, PromptError> {
        self.repo
            .find_label(name, label)
            .await?
            .filter(|l| l.target.is_some())
            .ok_or_else(|| PromptError::LabelNotFound {
                name: name.clone(),
                label,
            })
    }

    /// Moves (or creates) a label, if it is where `expected` says. Moving a
    /// protected label to versions that break callers needs `allow_breaking`
    /// (the reasons overridden are recorded with the move).
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::Protected`],
    /// [`PromptError::LabelMoved`], [`PromptError::Breaking`], or
    /// [`PromptError::Invalid`] for a version that does not exist.
    #[tracing::instrument(skip_all, fields(prompt = %name, label = %label), err(level = "debug"))]
    #[allow(clippy::too_many_arguments)]
    pub async fn move_label(
        &self,
        name: &PromptName,
        label: LabelName,
        target: LabelTarget,
        expected: Expected,
        reason: Option<String>,
        allow_breaking: bool,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        let change = LabelMove {
            label,
            target: Some(target),
            expected,
            reason,
            action: Action::LabelMoved,
            allow_breaking,
        };
        self.change_label(name, &change, ctx).await
    }

    /// Removes a label: from the moment this returns it resolves nowhere.
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::LabelNotFound`],
    /// [`PromptError::Protected`] or [`PromptError::LabelMoved`].
    #[tracing::instrument(skip_all, fields(prompt = %name, label = %label), err(level = "debug"))]
    pub async fn remove_label(
        &self,
        name: &PromptName,
        label: LabelName,
        expected: Expected,
        reason: Option<String>,
        ctx: &Context,
    ) -> Result<(), PromptError> {
        let change = LabelMove {
            label,
            target: None,
            expected,
            reason,
            action: Action::LabelRemoved,
            allow_breaking: false,
        };
        self.change_label(name, &change, ctx).await.map(drop)
    }

    /// Moves the label back to where it was before its last change (that
    /// change's `from`). The rollback is itself a change, so rolling back
    /// twice returns to where the label started. Compare-and-set against
    /// the revision read, so a move in between fails it rather than being
    /// undone blindly.
    ///
    /// # Errors
    /// [`PromptError::LabelNotFound`] for a label never set,
    /// [`PromptError::NothingToRollBack`] when its last change created it,
    /// and those of [`PromptService::move_label`].
    #[tracing::instrument(skip_all, fields(prompt = %name, label = %label), err(level = "debug"))]
    pub async fn rollback_label(
        &self,
        name: &PromptName,
        label: LabelName,
        reason: Option<String>,
        allow_breaking: bool,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        let current = self
            .repo
            .find_label(name, label)
            .await?
            .ok_or_else(|| PromptError::LabelNotFound {
                name: name.clone(),
                label,
            })?;
        // Refuse a caller who may not move it before looking for where to.
        LabelPolicy::authorize(ctx, label, Some(&current))?;
        let one = PageRequest {
            limit: Limit::new(1, 1).map_err(|e| PromptError::Unknown(e.into()))?,
            after: None,
        };
        let last = self.repo.label_history(name, label, &one).await?;
        let previous = last
            .items
            .into_iter()
            .next()
            .and_then(|c| c.from)
            .ok_or(PromptError::NothingToRollBack(label))?;
        let change = LabelMove {
            label,
            target: Some(previous),
            expected: Expected::Revision(current.revision),
            reason,
            action: Action::LabelRolledBack,
            allow_breaking,
        };
        self.change_label(name, &change, ctx).await
    }

    /// Protects a label, or lifts its protection. Admins only.
    ///
    /// # Errors
    /// [`PromptError::AdminOnly`], [`PromptError::NotFound`] or
    /// [`PromptError::LabelNotFound`].
    #[tracing::instrument(skip_all, fields(prompt = %name, label = %label), err(level = "debug"))]
    pub async fn protect_label(
        &self,
        name: &PromptName,
        label: LabelName,
        protected: bool,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        if !ctx.is_admin() {
            return Err(PromptError::AdminOnly(label));
        }
        self.repo.protect_label(name, label, protected, ctx).await
    }

    /// # Errors
    /// [`PromptError::NotFound`].
    pub async fn label_history(
        &self,
        name: &PromptName,
        label: LabelName,
        page: PageRequest<TimeCursor>,
    ) -> Result<Page<LabelChange, TimeCursor>, PromptError> {
        self.repo.label_history(name, label, &page).await
    }

    async fn change_label(
        &self,
        name: &PromptName,
        change: &LabelMove,
        ctx: &Context,
    ) -> Result<Label, PromptError> {
        let result = self.repo.move_label(name, change, &self.policy, ctx).await;
        self.cache.invalidate(name).await;
        result
    }

    /// Renders the selected version (for a split label, `subject`'s arm) with `values`.
    ///
    /// # Errors
    /// A lookup failure, or every problem with the values.
    pub async fn render(
        &self,
        name: &PromptName,
        selector: VersionSelector,
        subject: Option<&str>,
        values: &Map<String, Value>,
    ) -> Result<(Served, Rendered), RenderFailure> {
        let served = self.serve(name, selector, subject).await?;
        let rendered = served.version.render(values, &self.limits)?;
        Ok((served, rendered))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use mockall::predicate::eq;
    use serde_json::json;
    use uuid::Uuid;

    use super::super::ports::{Load, MockPromptRepository};
    use super::super::template::{Template, Variables};
    use super::*;

    /// An in-memory cache that records what the service asks of it.
    #[derive(Default)]
    struct RecordingCache {
        entries: Mutex<HashMap<CacheKey, super::super::label::Resolution>>,
        invalidated: Mutex<Vec<PromptName>>,
        /// Whether `peek` answers from `entries` (otherwise never).
        peeks: bool,
        lookups: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl VersionCache for RecordingCache {
        fn peek(
            &self,
            name: &PromptName,
            selector: VersionSelector,
        ) -> Option<super::super::label::Resolution> {
            let key = CacheKey {
                name: name.clone(),
                selector,
            };
            self.peeks
                .then(|| self.entries.lock().ok()?.get(&key).cloned())
                .flatten()
        }

        async fn get_or_load(
            &self,
            key: &CacheKey,
            load: Load<'_>,
        ) -> Result<super::super::label::Resolution, PromptError> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(hit) = self.entries.lock().ok().and_then(|e| e.get(key).cloned()) {
                return Ok(hit);
            }
            let loaded = load.await?;
            if let Ok(mut e) = self.entries.lock() {
                e.insert(key.clone(), loaded.clone());
            }
            Ok(loaded)
        }

        async fn invalidate(&self, name: &PromptName) {
            if let Ok(mut e) = self.entries.lock() {
                e.retain(|k, _| &k.name != name);
            }
            if let Ok(mut i) = self.invalidated.lock() {
                i.push(name.clone());
            }
        }
    }

    impl RecordingCache {
        fn invalidations(&self) -> Vec<PromptName> {
            self.invalidated.lock().map(|i| i.clone()).unwrap_or_default()
        }
    }

    fn name() -> PromptName {
        PromptName::new("greeting").expect("valid name")
    }

    fn one(n: u32) -> super::super::label::Resolution {
        super::super::label::Resolution::Version(Arc::new(version(n)))
    }

    fn ctx(scope: &str) -> Context {
        Context {
            actor: crate::audit::Actor::admin_key(),
            scopes: crate::auth::Scopes::parse(&[scope.to_owned()]).expect("valid"),
            request_id: None,
        }
    }

    fn version(n: u32) -> PromptVersion {
        let specs = serde_json::from_value(json!({"who": {"type": "string"}})).expect("specs");
        PromptVersion {
            id: Uuid::now_v7(),
            prompt_id: Uuid::now_v7(),
            prompt_name: name(),
            version: VersionNumber::new(i64::from(n)).expect("valid"),
            template: Template::parse(None, &json!("Hello {{who}}")).expect("valid"),
            variables: Variables::new(specs).expect("valid"),
            config: Map::new(),
            is_active: true,
            commit_message: None,
            created_at: crate::time::now_utc(),
            includes: Vec::new(),
            source: None,
        }
    }

    fn service(
        repo: MockPromptRepository,
    ) -> (
        PromptService<MockPromptRepository, RecordingCache>,
        Arc<RecordingCache>,
    ) {
        let cache = Arc::new(RecordingCache::default());
        (PromptService::new(Arc::new(repo), Arc::clone(&cache)), cache)
    }

    #[tokio::test]
    async fn a_second_read_is_answered_by_the_cache() {
        let mut repo = MockPromptRepository::new();
        repo.expect_resolve()
            .with(eq(name()), eq(VersionSelector::Latest))
            .times(1)
            .returning(|_, _| Ok(one(2)));
        let (svc, _) = service(repo);
        for _ in 0..3 {
            let got = svc
                .get_version(&name(), VersionSelector::Latest)
                .await
                .expect("version");
            assert_eq!(got.version.get(), 2);
        }
    }

    #[tokio::test]
    async fn a_hit_the_cache_can_peek_at_skips_the_lookup() {
        let mut repo = MockPromptRepository::new();
        repo.expect_resolve().times(1).returning(|_, _| Ok(one(3)));
        let cache = Arc::new(RecordingCache {
            peeks: true,
            ..RecordingCache::default()
        });
        let svc = PromptService::new(Arc::new(repo), Arc::clone(&cache));
        for _ in 0..3 {
            let got = svc
                .serve(&name(), VersionSelector::ACTIVE, None)
                .await
                .expect("served");
            assert_eq!(got.version.version.get(), 3);
            assert_eq!(got.stale_age, None);
        }
        assert_eq!(
            cache.lookups.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the first read looks up (and loads)"
        );
    }

    #[tokio::test]
    async fn a_missing_version_is_not_cached() {
        let mut repo = MockPromptRepository::new();
        repo.expect_resolve().times(2).returning(|n, s| {
            Err(PromptError::VersionNotFound {
                name: n.clone(),
                selector: s,
            })
        });
        let (svc, _) = service(repo);
        for _ in 0..2 {
            let err = svc
                .get_version(&name(), VersionSelector::ACTIVE)
                .await
                .expect_err("no active version");
            assert!(matches!(err, PromptError::VersionNotFound { .. }));
        }
    }

    #[tokio::test]
    async fn creating_a_version_invalidates_the_prompt_so_the_next_read_reloads() {
        let mut repo = MockPromptRepository::new();
        let mut served = 0;
        repo.expect_resolve().times(2).returning(move |_, _| {
            served += 1;
            Ok(one(served))
        });
        repo.expect_create_version()
            .times(1)
            .returning(|_, _, _, _| Ok(version(2)));
        let (svc, cache) = service(repo);
        assert_eq!(
            svc.get_version(&name(), VersionSelector::ACTIVE)
                .await
                .expect("v1")
                .version
                .get(),
            1
        );
        let template = Template::parse(None, &json!("static")).expect("valid");
        let new = NewVersion::new(template, Variables::default(), Map::new(), None, true).expect("valid");
        svc.create_version(&name(), new, &ctx("write"))
            .await
            .expect("created");
        assert_eq!(cache.invalidations(), vec![name()]);
        assert_eq!(
            svc.get_version(&name(), VersionSelector::ACTIVE)
                .await
                .expect("v2")
                .version
                .get(),
            2
        );
    }

    #[tokio::test]
    async fn activating_invalidates_even_when_the_repository_fails() {
        let mut repo = MockPromptRepository::new();
        repo.expect_move_label()
            .returning(|_, _, _, _| Err(PromptError::Unknown(anyhow::anyhow!("connection reset"))));
        let (svc, cache) = service(repo);
        let result = svc
            .activate_version(&name(), VersionNumber::FIRST, false, &ctx("write"))
            .await;
        assert!(matches!(result, Err(PromptError::Unknown(_))));
        assert_eq!(cache.invalidations(), vec![name()]);
    }

    #[tokio::test]
    async fn a_template_over_the_placeholder_limit_is_refused_before_storage() {
        let mut repo = MockPromptRepository::new();
        repo.expect_create_version().never();
        let (svc, _) = service(repo);
        let svc = svc.with_limits(RenderLimits {
            max_placeholders: 2,
            ..RenderLimits::default()
        });
        let template = Template::parse(None, &json!("{{who}} {{who}} {{who}}")).expect("valid");
        let variables =
            Variables::new(serde_json::from_value(json!({"who": {}})).expect("specs")).expect("valid");
        let new = NewVersion::new(template, variables, Map::new(), None, true).expect("valid");
        let err = svc
            .create_version(&name(), new, &ctx("write"))
            .await
            .expect_err("too many");
        assert!(
            matches!(&err, PromptError::Invalid(e) if e[0].field == "template"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn deleting_a_prompt_invalidates_it() {
        let mut repo = MockPromptRepository::new();
        repo.expect_delete_prompt().times(1).returning(|_, _, _| Ok(()));
        let (svc, cache) = service(repo);
        svc.delete_prompt(&name(), false, &ctx("write"))
            .await
            .expect("deleted");
        assert_eq!(cache.invalidations(), vec![name()]);
    }

    #[tokio::test]
    async fn rendering_uses_the_selected_version_and_reports_bad_values() {
        let mut repo = MockPromptRepository::new();
        repo.expect_resolve().returning(|_, _| Ok(one(1)));
        let (svc, _) = service(repo);
        let values = json!({"who": "Ada"}).as_object().cloned().unwrap_or_default();
        let (v, out) = svc
            .render(&name(), VersionSelector::ACTIVE, None, &values)
            .await
            .expect("renders");
        assert_eq!(v.version.version.get(), 1);
        assert_eq!(out, Rendered::Text("Hello Ada".into()));
        let bad = json!({"who": 5}).as_object().cloned().unwrap_or_default();
        let err = svc
            .render(&name(), VersionSelector::ACTIVE, None, &bad)
            .await
            .expect_err("wrong type");
        assert!(matches!(err, RenderFailure::Invalid(_)));
    }

    fn label(target: Option<u32>, protected: bool, revision: u32) -> Label {
        Label {
            name: LabelName::PRODUCTION,
            target: target.map(|n| LabelTarget::Version(VersionNumber::new(i64::from(n)).expect("valid"))),
            protected,
            revision,
            updated_at: crate::time::now_utc(),
        }
    }

    fn change(from: Option<u32>, to: Option<u32>) -> LabelChange {
        let target = |n: Option<u32>| {
            n.map(|n| LabelTarget::Version(VersionNumber::new(i64::from(n)).expect("valid")))
        };
        LabelChange {
            id: Uuid::now_v7(),
            label: LabelName::PRODUCTION,
            from: target(from),
            to: target(to),
            actor: crate::audit::Actor::admin_key(),
            reason: None,
            request_id: None,
            at: crate::time::now_utc(),
            overrides: Vec::new(),
        }
    }

    #[test]
    fn a_protected_label_needs_release_and_an_unprotected_one_does_not() {
        let protected = label(Some(1), true, 1);
        let open = label(Some(1), false, 1);
        assert!(matches!(
            LabelPolicy::authorize(&ctx("write"), LabelName::PRODUCTION, Some(&protected)),
            Err(PromptError::Protected(_))
        ));
        assert!(LabelPolicy::authorize(&ctx("release"), LabelName::PRODUCTION, Some(&protected)).is_ok());
        assert!(LabelPolicy::authorize(&ctx("admin"), LabelName::PRODUCTION, Some(&protected)).is_ok());
        assert!(LabelPolicy::authorize(&ctx("write"), LabelName::PRODUCTION, Some(&open)).is_ok());
        assert!(LabelPolicy::authorize(&ctx("write"), LabelName::PRODUCTION, None).is_ok());
        assert!(LabelPolicy::default().protects(LabelName::PRODUCTION));
    }

    #[tokio::test]
    async fn only_an_admin_may_protect_a_label() {
        let mut repo = MockPromptRepository::new();
        repo.expect_protect_label()
            .times(1)
            .returning(|_, _, p, _| Ok(label(Some(1), p, 1)));
        let (svc, _) = service(repo);
        for scope in ["write", "release"] {
            let err = svc
                .protect_label(&name(), LabelName::PRODUCTION, true, &ctx(scope))
                .await
                .expect_err("not an admin");
            assert!(matches!(err, PromptError::AdminOnly(_)), "{scope}");
        }
        let got = svc
            .protect_label(&name(), LabelName::PRODUCTION, true, &ctx("admin"))
            .await
            .expect("admin");
        assert!(got.protected);
    }

    #[tokio::test]
    async fn a_rollback_returns_to_the_last_changes_origin_compare_and_set_on_the_revision() {
        let mut repo = MockPromptRepository::new();
        repo.expect_find_label()
            .returning(|_, _| Ok(Some(label(Some(8), true, 5))));
        repo.expect_resolve().returning(|_, s| match s {
            VersionSelector::Number(n) => Ok(super::super::label::Resolution::Version(Arc::new(version(
                n.get(),
            )))),
            _ => Err(PromptError::Unknown(anyhow::anyhow!("only numbers here"))),
        });
        repo.expect_label_history()
            .withf(|_, _, page| page.limit.get() == 1)
            .returning(|_, _, _| {
                Ok(Page {
                    items: vec![change(Some(7), Some(8))],
                    next: None,
                })
            });
        repo.expect_move_label()
            .times(1)
            .withf(|_, change, _, _| {
                change.target == Some(LabelTarget::Version(VersionNumber::new(7).expect("valid")))
                    && change.expected == Expected::Revision(5)
                    && change.action == Action::LabelRolledBack
                    && !change.allow_breaking
            })
            .returning(|_, _, _, _| Ok(label(Some(7), true, 6)));
        let (svc, cache) = service(repo);
        let rolled = svc
            .rollback_label(
                &name(),
                LabelName::PRODUCTION,
                Some("bad answers".into()),
                false,
                &ctx("release"),
            )
            .await
            .expect("rolled back");
        assert_eq!(rolled.revision, 6);
        assert_eq!(cache.invalidations(), vec![name()]);
    }

    #[tokio::test]
    async fn a_label_created_by_its_last_change_has_nothing_to_roll_back_to() {
        let mut repo = MockPromptRepository::new();
        repo.expect_find_label()
            .returning(|_, _| Ok(Some(label(Some(1), false, 1))));
        repo.expect_label_history().returning(|_, _, _| {
            Ok(Page {
                items: vec![change(None, Some(1))],
                next: None,
            })
        });
        repo.expect_move_label().never();
        let (svc, _) = service(repo);
        let err = svc
            .rollback_label(&name(), LabelName::PRODUCTION, None, false, &ctx("admin"))
            .await
            .expect_err("nothing before");
        assert!(matches!(err, PromptError::NothingToRollBack(_)));
    }

    #[tokio::test]
    async fn a_removed_label_is_not_found() {
        let mut repo = MockPromptRepository::new();
        repo.expect_find_label()
            .returning(|_, _| Ok(Some(label(None, true, 3))));
        let (svc, _) = service(repo);
        let err = svc
            .get_label(&name(), LabelName::PRODUCTION)
            .await
            .expect_err("removed");
        assert!(matches!(err, PromptError::LabelNotFound { .. }));
    }

    #[tokio::test]
    async fn a_split_label_is_served_by_subject_and_says_so() {
        let mut repo = MockPromptRepository::new();
        repo.expect_resolve().returning(|_, _| {
            Ok(super::super::label::Resolution::Split(
                vec![(50, Arc::new(version(1))), (50, Arc::new(version(2)))].into(),
            ))
        });
        let (svc, _) = service(repo);
        let first = svc
            .serve(&name(), VersionSelector::ACTIVE, Some("user-1"))
            .await
            .expect("served");
        assert!(first.split);
        assert_eq!(first.label, Some(LabelName::PRODUCTION));
        for _ in 0..20 {
            let again = svc
                .serve(&name(), VersionSelector::ACTIVE, Some("user-1"))
                .await
                .expect("served");
            assert_eq!(again.version.version, first.version.version);
        }
    }
}
