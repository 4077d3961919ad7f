//! The prompt service: the use cases, over the repository and cache ports.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::{PromptError, RenderFailure};
use super::model::{
    NewPrompt, NewVersion, Prompt, PromptFilter, PromptName, PromptPatch, PromptVersion, VersionCursor,
    VersionNumber, VersionSelector,
};
use super::ports::{CacheKey, Cached, PromptRepository, VersionCache};
use super::template::{RenderLimits, Rendered};
use crate::page::{Page, PageRequest, TimeCursor};

/// Prompt and version use cases. Cheap to clone: it holds its ports in `Arc`s.
#[derive(Debug)]
pub struct PromptService<R, C> {
    repo: Arc<R>,
    cache: Arc<C>,
    limits: RenderLimits,
}

impl<R, C> Clone for PromptService<R, C> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            cache: Arc::clone(&self.cache),
            limits: self.limits,
        }
    }
}

impl<R: PromptRepository, C: VersionCache> PromptService<R, C> {
    /// A service with the default [`RenderLimits`].
    pub fn new(repo: Arc<R>, cache: Arc<C>) -> Self {
        Self {
            repo,
            cache,
            limits: RenderLimits::default(),
        }
    }

    /// The same service with other limits on templates and renders.
    #[must_use]
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.limits = limits;
        self
    }

    #[must_use]
    pub fn limits(&self) -> &RenderLimits {
        &self.limits
    }

    /// # Errors
    /// [`PromptError::Duplicate`] if the name is taken.
    #[tracing::instrument(skip_all, fields(prompt = %new.name), err(level = "debug"))]
    pub async fn create_prompt(&self, new: NewPrompt) -> Result<Prompt, PromptError> {
        self.repo.create_prompt(&new).await
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
    pub async fn update_prompt(&self, name: &PromptName, patch: PromptPatch) -> Result<Prompt, PromptError> {
        self.repo.update_prompt(name, &patch).await
    }

    /// Deletes the prompt and its versions; cached entries are gone before
    /// this returns.
    ///
    /// # Errors
    /// [`PromptError::NotFound`].
    #[tracing::instrument(skip_all, fields(prompt = %name), err(level = "debug"))]
    pub async fn delete_prompt(&self, name: &PromptName) -> Result<(), PromptError> {
        let result = self.repo.delete_prompt(name).await;
        self.cache.invalidate(name).await;
        result
    }

    /// Creates the next version. Cached active and latest entries are gone
    /// before this returns, so no reader sees the previous one afterwards.
    ///
    /// # Errors
    /// [`PromptError::NotFound`]; [`PromptError::Invalid`] for a template
    /// with more placeholders than the limits allow.
    #[tracing::instrument(skip_all, fields(prompt = %name), err(level = "debug"))]
    pub async fn create_version(
        &self,
        name: &PromptName,
        new: NewVersion,
    ) -> Result<PromptVersion, PromptError> {
        new.template()
            .check_limits(&self.limits)
            .map_err(|e| PromptError::Invalid(vec![e]))?;
        let result = self.repo.create_version(name, &new).await;
        // Invalidate even on error: a failure after commit (a lost connection)
        // must not leave a stale pointer behind.
        self.cache.invalidate(name).await;
        result
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

    /// One version, from the cache when it holds it.
    ///
    /// # Errors
    /// [`PromptError::NotFound`] or [`PromptError::VersionNotFound`].
    pub async fn get_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<Arc<PromptVersion>, PromptError> {
        self.fetch_version(name, selector).await.map(|c| c.version)
    }

    /// As [`PromptService::get_version`], saying whether the cache served the
    /// version past its time to live because the database was unreachable.
    ///
    /// # Errors
    /// [`PromptError::NotFound`], [`PromptError::VersionNotFound`], or
    /// [`PromptError::Unavailable`] when nothing current is cached.
    pub async fn fetch_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<Cached, PromptError> {
        let key = CacheKey {
            name: name.clone(),
            selector,
        };
        let load = Box::pin(self.repo.find_version(name, selector));
        self.cache.lookup(&key, load).await
    }

    /// Makes `version` the active one (a rollback when it is older).
    ///
    /// # Errors
    /// [`PromptError::NotFound`] or [`PromptError::VersionNotFound`].
    #[tracing::instrument(skip_all, fields(prompt = %name, version = %version), err(level = "debug"))]
    pub async fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
    ) -> Result<PromptVersion, PromptError> {
        let result = self.repo.activate_version(name, version).await;
        self.cache.invalidate(name).await;
        result
    }

    /// Renders the selected version with `values`.
    ///
    /// # Errors
    /// A lookup failure, or every problem with the values.
    pub async fn render(
        &self,
        name: &PromptName,
        selector: VersionSelector,
        values: &Map<String, Value>,
    ) -> Result<(Cached, Rendered), RenderFailure> {
        let cached = self.fetch_version(name, selector).await?;
        let rendered = cached.version.render(values, &self.limits)?;
        Ok((cached, rendered))
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
        entries: Mutex<HashMap<CacheKey, Arc<PromptVersion>>>,
        invalidated: Mutex<Vec<PromptName>>,
    }

    #[async_trait]
    impl VersionCache for RecordingCache {
        async fn get_or_load(
            &self,
            key: &CacheKey,
            load: Load<'_>,
        ) -> Result<Arc<PromptVersion>, PromptError> {
            if let Some(hit) = self.entries.lock().ok().and_then(|e| e.get(key).cloned()) {
                return Ok(hit);
            }
            let loaded = Arc::new(load.await?);
            if let Ok(mut e) = self.entries.lock() {
                e.insert(key.clone(), Arc::clone(&loaded));
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
        repo.expect_find_version()
            .with(eq(name()), eq(VersionSelector::Latest))
            .times(1)
            .returning(|_, _| Ok(version(2)));
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
    async fn a_missing_version_is_not_cached() {
        let mut repo = MockPromptRepository::new();
        repo.expect_find_version().times(2).returning(|n, s| {
            Err(PromptError::VersionNotFound {
                name: n.clone(),
                selector: s,
            })
        });
        let (svc, _) = service(repo);
        for _ in 0..2 {
            let err = svc
                .get_version(&name(), VersionSelector::Active)
                .await
                .expect_err("no active version");
            assert!(matches!(err, PromptError::VersionNotFound { .. }));
        }
    }

    #[tokio::test]
    async fn creating_a_version_invalidates_the_prompt_so_the_next_read_reloads() {
        let mut repo = MockPromptRepository::new();
        let mut served = 0;
        repo.expect_find_version().times(2).returning(move |_, _| {
            served += 1;
            Ok(version(served))
        });
        repo.expect_create_version()
            .times(1)
            .returning(|_, _| Ok(version(2)));
        let (svc, cache) = service(repo);
        assert_eq!(
            svc.get_version(&name(), VersionSelector::Active)
                .await
                .expect("v1")
                .version
                .get(),
            1
        );
        let template = Template::parse(None, &json!("static")).expect("valid");
        let new = NewVersion::new(template, Variables::default(), Map::new(), None, true).expect("valid");
        svc.create_version(&name(), new).await.expect("created");
        assert_eq!(cache.invalidations(), vec![name()]);
        assert_eq!(
            svc.get_version(&name(), VersionSelector::Active)
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
        repo.expect_activate_version()
            .returning(|_, _| Err(PromptError::Unknown(anyhow::anyhow!("connection reset"))));
        let (svc, cache) = service(repo);
        let result = svc.activate_version(&name(), VersionNumber::FIRST).await;
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
        let err = svc.create_version(&name(), new).await.expect_err("too many");
        assert!(
            matches!(&err, PromptError::Invalid(e) if e[0].field == "template"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn deleting_a_prompt_invalidates_it() {
        let mut repo = MockPromptRepository::new();
        repo.expect_delete_prompt().times(1).returning(|_| Ok(()));
        let (svc, cache) = service(repo);
        svc.delete_prompt(&name()).await.expect("deleted");
        assert_eq!(cache.invalidations(), vec![name()]);
    }

    #[tokio::test]
    async fn rendering_uses_the_selected_version_and_reports_bad_values() {
        let mut repo = MockPromptRepository::new();
        repo.expect_find_version().returning(|_, _| Ok(version(1)));
        let (svc, _) = service(repo);
        let values = json!({"who": "Ada"}).as_object().cloned().unwrap_or_default();
        let (v, out) = svc
            .render(&name(), VersionSelector::Active, &values)
            .await
            .expect("renders");
        assert_eq!(v.version.version.get(), 1);
        assert_eq!(out, Rendered::Text("Hello Ada".into()));
        let bad = json!({"who": 5}).as_object().cloned().unwrap_or_default();
        let err = svc
            .render(&name(), VersionSelector::Active, &bad)
            .await
            .expect_err("wrong type");
        assert!(matches!(err, RenderFailure::Invalid(_)));
    }
}
