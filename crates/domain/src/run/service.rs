//! The run service: resolves the version a run belongs to, and logs and
//! reads runs.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{NewRun, Run, RunCursor, RunListing};
use super::ports::{Logged, NoSink, RunError, RunRepository, RunSink, SinkError};
use super::stats::{StatsQuery, VersionStats};
use crate::page::Page;
use crate::prompt::ports::{PromptRepository, VersionCache};
use crate::prompt::{
    FieldError, LabelName, PromptError, PromptName, PromptService, PromptVersion, Resolution, VersionSelector,
};

/// The result of logging a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLogged {
    pub runs: Vec<Run>,
    /// Ids of runs that were already stored and left unchanged.
    pub existing: Vec<uuid::Uuid>,
}

/// What became of the spans of one trace export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// LLM calls handed to the sink as runs.
    pub accepted: usize,
    /// Spans that are not LLM calls, accepted and ignored.
    pub ignored: usize,
    /// LLM calls that cannot become runs, each with its span and the reason.
    pub rejected: Vec<String>,
}

/// Run use cases over the run repository, the prompt service (to tie a run to
/// its version) and, for the asynchronous path, a [`RunSink`].
#[derive(Debug)]
pub struct RunService<R, P, C, S = NoSink> {
    runs: Arc<R>,
    prompts: PromptService<P, C>,
    sink: Arc<S>,
}

impl<R, P, C, S> Clone for RunService<R, P, C, S> {
    fn clone(&self) -> Self {
        Self {
            runs: Arc::clone(&self.runs),
            prompts: self.prompts.clone(),
            sink: Arc::clone(&self.sink),
        }
    }
}

impl<R: RunRepository, P: PromptRepository, C: VersionCache> RunService<R, P, C> {
    /// A service without an asynchronous path ([`RunService::log_async`]
    /// answers [`RunError::QueueFull`]); see [`RunService::with_sink`].
    pub fn new(runs: Arc<R>, prompts: PromptService<P, C>) -> Self {
        Self {
            runs,
            prompts,
            sink: Arc::new(NoSink),
        }
    }
}

impl<R: RunRepository, P: PromptRepository, C: VersionCache, S: RunSink> RunService<R, P, C, S> {
    /// The same service, with runs logged asynchronously going to `sink`.
    pub fn with_sink<T: RunSink>(self, sink: Arc<T>) -> RunService<R, P, C, T> {
        RunService {
            runs: self.runs,
            prompts: self.prompts,
            sink,
        }
    }

    /// Validates a run, ties it to its version now, and hands it to the sink
    /// to be stored in the background. Returns its id.
    ///
    /// # Errors
    /// As [`RunService::resolve`]; [`RunError::QueueFull`] when the sink
    /// cannot take it now.
    pub async fn log_async(&self, new: NewRun) -> Result<uuid::Uuid, RunError> {
        let run = self.resolve(new).await?;
        let id = run.id;
        self.submit(vec![run]).await?;
        Ok(id)
    }

    /// Validates a batch as [`RunService::log_batch`] does, and hands every
    /// run to the sink at once. Returns their ids.
    ///
    /// # Errors
    /// As [`RunService::log_batch`]; [`RunError::QueueFull`] or
    /// [`RunError::QueueUnavailable`] when the sink does not take them.
    pub async fn log_batch_async(&self, items: Vec<NewRun>) -> Result<Vec<uuid::Uuid>, RunError> {
        check_unique(&items)?;
        let runs = self.resolve_batch(items).await?;
        let ids = runs.iter().map(|r| r.id).collect();
        self.submit(runs).await?;
        Ok(ids)
    }

    async fn submit(&self, runs: Vec<Run>) -> Result<(), RunError> {
        if runs.is_empty() {
            return Ok(());
        }
        self.sink.submit(runs).await.map_err(|e| match e {
            SinkError::Full => RunError::QueueFull,
            SinkError::Unavailable(e) => RunError::QueueUnavailable(e),
        })
    }

    /// Turns the LLM calls among `spans` into runs, each tied to its version
    /// now, and hands them to the sink; other spans are counted as ignored.
    /// A span that cannot become a run (no prompt named, an unknown prompt
    /// or version, an invalid field) is rejected with its reason while the
    /// rest go on. Run ids come from the span ids, so an exporter's retry
    /// stores nothing twice.
    ///
    /// # Errors
    /// [`RunError::QueueFull`] or [`RunError::QueueUnavailable`] when the
    /// sink does not take the runs (then it took none); storage failures
    /// while resolving versions.
    pub async fn ingest(&self, spans: &[super::span::Span]) -> Result<Ingested, RunError> {
        use super::span::SpanRun;
        type Key = (
            PromptName,
            Option<crate::prompt::VersionNumber>,
            Option<LabelName>,
        );
        let mut versions: HashMap<Key, Result<Arc<PromptVersion>, String>> = HashMap::new();
        let mut report = Ingested::default();
        let mut runs = Vec::new();
        for span in spans {
            let new = match span.to_run() {
                SpanRun::NotLlm => {
                    report.ignored += 1;
                    continue;
                }
                SpanRun::Rejected(reason) => {
                    report.rejected.push(span_reason(span, &reason));
                    continue;
                }
                SpanRun::Run(new) => *new,
            };
            let key = (new.prompt.clone(), new.version, new.fields.label);
            let version = match versions.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = match self.version_of(&new).await {
                        Ok(v) => Ok(v),
                        Err(e @ (RunError::Unknown(_) | RunError::Unavailable(_))) => return Err(e),
                        Err(e) => Err(e.to_string()),
                    };
                    versions.insert(key, v.clone());
                    v
                }
            };
            match version {
                Ok(v) => runs.push(attach(new, &v)),
                Err(reason) => report.rejected.push(span_reason(span, &reason)),
            }
        }
        report.accepted = runs.len();
        self.submit(runs).await?;
        Ok(report)
    }

    #[must_use]
    pub fn repository(&self) -> &Arc<R> {
        &self.runs
    }

    async fn version_of(&self, new: &NewRun) -> Result<Arc<PromptVersion>, RunError> {
        // A named version wins; otherwise the label the client fetched by,
        // otherwise production.
        let selector = match (new.version, new.fields.label) {
            (Some(n), _) => VersionSelector::Number(n),
            (None, Some(label)) => VersionSelector::Label(label),
            (None, None) => VersionSelector::ACTIVE,
        };
        let cached = self
            .prompts
            .resolve(&new.prompt, selector)
            .await
            .map_err(|e| match e {
                PromptError::NotFound(name) => RunError::UnknownPrompt(name),
                PromptError::VersionNotFound {
                    name,
                    selector: VersionSelector::Number(version),
                } => RunError::UnknownVersion { name, version },
                PromptError::VersionNotFound {
                    name,
                    selector: VersionSelector::Label(label),
                } if new.fields.label.is_some() => RunError::UnknownLabel { name, label },
                PromptError::VersionNotFound { name, .. } => RunError::NoActiveVersion(name),
                PromptError::Duplicate(_)
                | PromptError::Invalid(_)
                | PromptError::LabelNotFound { .. }
                | PromptError::LabelMoved { .. }
                | PromptError::Protected(_)
                | PromptError::AdminOnly(_)
                | PromptError::Breaking { .. }
                | PromptError::HasDependents { .. }
                | PromptError::NothingToRollBack(_) => {
                    RunError::Unknown(anyhow::anyhow!("unexpected error on read: {e}"))
                }
                PromptError::Unavailable(e) => RunError::Unavailable(e),
                PromptError::Unknown(e) => RunError::Unknown(e),
            })?;
        match &cached.resolution {
            Resolution::Version(v) => Ok(Arc::clone(v)),
            Resolution::Split(_) => Err(RunError::SplitNeedsVersion {
                name: new.prompt.clone(),
                label: selector.label().unwrap_or(LabelName::PRODUCTION),
            }),
        }
    }

    /// Ties a new run to the version it ran: the one named, or the one
    /// active now. The run gets its server timestamp here.
    ///
    /// # Errors
    /// An unknown prompt or version, or no active version.
    pub async fn resolve(&self, new: NewRun) -> Result<Run, RunError> {
        let version = self.version_of(&new).await?;
        Ok(attach(new, &version))
    }

    /// Logs one run, committed before this returns. Sending the same id again
    /// returns the stored run; the same id with other content is a conflict.
    ///
    /// # Errors
    /// See [`RunService::resolve`]; [`RunError::Conflict`].
    #[tracing::instrument(skip_all, fields(run_id = %new.id), err(level = "debug"))]
    pub async fn log(&self, new: NewRun) -> Result<Logged, RunError> {
        let version_given = new.version.is_some();
        let run = self.resolve(new).await?;
        match self.runs.insert(&run).await? {
            Logged::Existing(stored) if !same_run(&stored, &run, version_given) => {
                Err(RunError::Conflict(run.id))
            }
            logged => Ok(logged),
        }
    }

    /// Resolves every run of a batch, naming each that fails by its index.
    ///
    /// # Errors
    /// [`RunError::InvalidItems`] naming every run that cannot be resolved.
    pub async fn resolve_batch(&self, items: Vec<NewRun>) -> Result<Vec<Run>, RunError> {
        let mut versions: HashMap<(PromptName, Option<crate::prompt::VersionNumber>), Arc<PromptVersion>> =
            HashMap::new();
        let mut errors = Vec::new();
        let mut runs = Vec::with_capacity(items.len());
        for (i, new) in items.into_iter().enumerate() {
            let key = (new.prompt.clone(), new.version);
            let version = match versions.get(&key) {
                Some(v) => Arc::clone(v),
                None => match self.version_of(&new).await {
                    Ok(v) => {
                        versions.insert(key, Arc::clone(&v));
                        v
                    }
                    Err(e @ (RunError::Unknown(_) | RunError::Unavailable(_))) => return Err(e),
                    Err(e) => {
                        errors.push(FieldError::new(format!("runs[{i}]"), e.to_string()));
                        continue;
                    }
                },
            };
            runs.push(attach(new, &version));
        }
        if errors.is_empty() {
            Ok(runs)
        } else {
            Err(RunError::InvalidItems(errors))
        }
    }

    /// Logs a batch in one transaction: all runs or none.
    ///
    /// # Errors
    /// [`RunError::InvalidItems`] naming each bad run; storage failures.
    #[tracing::instrument(skip_all, fields(runs = items.len()), err(level = "debug"))]
    pub async fn log_batch(&self, items: Vec<NewRun>) -> Result<BatchLogged, RunError> {
        check_unique(&items)?;
        let runs = self.resolve_batch(items).await?;
        let existing = self.runs.insert_batch(&runs).await?;
        Ok(BatchLogged { runs, existing })
    }

    /// # Errors
    /// [`RunError::NotFound`].
    pub async fn get(&self, id: uuid::Uuid) -> Result<Run, RunError> {
        self.runs.find(id).await
    }

    /// # Errors
    /// Storage failures.
    pub async fn list(&self, listing: RunListing) -> Result<Page<Run, RunCursor>, RunError> {
        self.runs
            .list(listing.filter(), listing.sort(), listing.page())
            .await
    }

    /// Lists the runs of the prompt the listing names.
    ///
    /// # Errors
    /// [`RunError::UnknownPrompt`] when there is no such prompt.
    pub async fn list_for_prompt(&self, listing: RunListing) -> Result<Page<Run, RunCursor>, RunError> {
        if let Some(prompt) = &listing.filter().prompt {
            self.ensure_prompt(prompt).await?;
        }
        self.list(listing).await
    }

    /// Per-version (and per-bucket) figures of a prompt's runs.
    ///
    /// # Errors
    /// [`RunError::UnknownPrompt`] when there is no such prompt.
    pub async fn stats(&self, prompt: &PromptName, query: StatsQuery) -> Result<Vec<VersionStats>, RunError> {
        self.ensure_prompt(prompt).await?;
        self.runs.stats(prompt, &query).await
    }

    async fn ensure_prompt(&self, prompt: &PromptName) -> Result<(), RunError> {
        match self.prompts.get_prompt(prompt).await {
            Ok(_) => Ok(()),
            Err(PromptError::NotFound(name)) => Err(RunError::UnknownPrompt(name)),
            Err(PromptError::Unavailable(e)) => Err(RunError::Unavailable(e)),
            Err(e) => Err(RunError::Unknown(anyhow::Error::new(e))),
        }
    }
}

/// A batch names each run once.
fn check_unique(items: &[NewRun]) -> Result<(), RunError> {
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<_> = items
        .iter()
        .enumerate()
        .filter(|(_, r)| !seen.insert(r.id))
        .map(|(i, r)| {
            FieldError::new(
                format!("runs[{i}].id"),
                format!("{} appears more than once in the batch", r.id),
            )
        })
        .collect();
    if duplicates.is_empty() {
        Ok(())
    } else {
        Err(RunError::InvalidItems(duplicates))
    }
}

fn span_reason(span: &super::span::Span, reason: &str) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "span {}/{} ({}): {reason}",
        hex(&span.trace_id),
        hex(&span.span_id),
        span.name
    )
}

fn attach(new: NewRun, version: &PromptVersion) -> Run {
    Run {
        id: new.id,
        prompt_id: version.prompt_id,
        prompt_name: version.prompt_name.clone(),
        version_id: version.id,
        version: version.version,
        fields: new.fields,
        created_at: crate::time::now_utc(),
    }
}

/// Whether a retried run carries what the stored one does. The version is
/// compared only when the client named it: "the active one" may have moved
/// between the first attempt and the retry.
fn same_run(stored: &Run, retried: &Run, version_given: bool) -> bool {
    stored.prompt_id == retried.prompt_id
        && (!version_given || stored.version == retried.version)
        && stored.fields == retried.fields
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::model::{NewRunBuilder, RunFields};
    use super::super::ports::MockRunRepository;
    use super::*;
    use crate::prompt::ports::{MockPromptRepository, NoCache};
    use crate::prompt::{Template, Variables, VersionNumber};

    fn version(n: u32) -> PromptVersion {
        PromptVersion {
            id: uuid::Uuid::now_v7(),
            prompt_id: uuid::Uuid::nil(),
            prompt_name: PromptName::new("p").expect("valid"),
            version: VersionNumber::new(i64::from(n)).expect("valid"),
            template: Template::parse(None, &json!("x")).expect("valid"),
            variables: Variables::default(),
            config: serde_json::Map::new(),
            is_active: true,
            commit_message: None,
            created_at: crate::time::now_utc(),
            includes: Vec::new(),
            source: None,
        }
    }

    fn new_run(id: uuid::Uuid, latency: f64, version: Option<i64>) -> NewRun {
        NewRunBuilder {
            id: Some(id),
            prompt: "p".into(),
            version,
            status: "success".into(),
            latency_ms: latency,
            ..Default::default()
        }
        .build()
        .expect("valid")
    }

    fn service(
        runs: MockRunRepository,
        prompts: MockPromptRepository,
    ) -> RunService<MockRunRepository, MockPromptRepository, NoCache> {
        RunService::new(
            Arc::new(runs),
            PromptService::new(Arc::new(prompts), Arc::new(NoCache)),
        )
    }

    fn stored_from(run: &Run, fields: RunFields) -> Run {
        Run {
            fields,
            ..run.clone()
        }
    }

    #[tokio::test]
    async fn an_async_run_is_resolved_then_handed_to_the_sink_and_a_full_sink_is_reported() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .returning(|_, _| Ok(crate::prompt::Resolution::Version(Arc::new(version(4)))));
        let mut sink = super::super::ports::MockRunSink::new();
        let mut seq = mockall::Sequence::new();
        sink.expect_submit()
            .withf(|runs| runs.len() == 1 && runs[0].version.get() == 4)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        sink.expect_submit()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(SinkError::Full));
        sink.expect_submit()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(SinkError::Unavailable(anyhow::anyhow!("redis down"))));
        let svc = service(MockRunRepository::new(), prompts).with_sink(Arc::new(sink));
        let id = uuid::Uuid::now_v7();
        assert_eq!(svc.log_async(new_run(id, 5.0, None)).await.ok(), Some(id));
        assert!(matches!(
            svc.log_async(new_run(uuid::Uuid::now_v7(), 5.0, None)).await,
            Err(RunError::QueueFull)
        ));
        assert!(matches!(
            svc.log_async(new_run(uuid::Uuid::now_v7(), 5.0, None)).await,
            Err(RunError::QueueUnavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_run_without_a_version_is_tied_to_the_active_one() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .withf(|_, s| *s == VersionSelector::ACTIVE)
            .returning(|_, _| Ok(crate::prompt::Resolution::Version(Arc::new(version(3)))));
        let mut runs = MockRunRepository::new();
        runs.expect_insert().returning(|r| Ok(Logged::Created(r.clone())));
        let logged = service(runs, prompts)
            .log(new_run(uuid::Uuid::now_v7(), 5.0, None))
            .await
            .expect("logged");
        let Logged::Created(run) = logged else {
            panic!("expected a new run")
        };
        assert_eq!(run.version.get(), 3);
    }

    #[tokio::test]
    async fn a_retry_with_the_same_content_returns_the_stored_run() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .returning(|_, _| Ok(crate::prompt::Resolution::Version(Arc::new(version(1)))));
        let mut runs = MockRunRepository::new();
        runs.expect_insert()
            .returning(|r| Ok(Logged::Existing(r.clone())));
        let logged = service(runs, prompts)
            .log(new_run(uuid::Uuid::now_v7(), 5.0, Some(1)))
            .await
            .expect("idempotent");
        assert!(matches!(logged, Logged::Existing(_)));
    }

    #[tokio::test]
    async fn the_same_id_with_other_content_is_a_conflict() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .returning(|_, _| Ok(crate::prompt::Resolution::Version(Arc::new(version(1)))));
        let mut runs = MockRunRepository::new();
        runs.expect_insert().returning(|r| {
            let mut fields = r.fields.clone();
            fields.latency = crate::run::Latency::from_micros(fields.latency.micros() + 1).expect("in range");
            Ok(Logged::Existing(stored_from(r, fields)))
        });
        let err = service(runs, prompts)
            .log(new_run(uuid::Uuid::now_v7(), 5.0, Some(1)))
            .await
            .expect_err("conflict");
        assert!(matches!(err, RunError::Conflict(_)));
    }

    #[tokio::test]
    async fn unknown_prompts_and_versions_are_named() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .returning(|name, selector| match selector {
                VersionSelector::Number(_) => Err(PromptError::VersionNotFound {
                    name: name.clone(),
                    selector,
                }),
                _ => Err(PromptError::NotFound(name.clone())),
            });
        let mut runs = MockRunRepository::new();
        runs.expect_insert().never();
        runs.expect_insert_batch().never();
        let svc = service(runs, prompts);
        let err = svc
            .log(new_run(uuid::Uuid::now_v7(), 1.0, Some(9)))
            .await
            .expect_err("unknown version");
        assert!(matches!(err, RunError::UnknownVersion { .. }));
        let err = svc
            .log_batch(vec![
                new_run(uuid::Uuid::now_v7(), 1.0, None),
                new_run(uuid::Uuid::now_v7(), 1.0, Some(2)),
            ])
            .await
            .expect_err("bad items");
        let RunError::InvalidItems(items) = err else {
            panic!("expected invalid items")
        };
        assert_eq!(
            items.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["runs[0]", "runs[1]"]
        );
    }

    #[tokio::test]
    async fn a_batch_resolves_each_version_once_and_rejects_repeated_ids() {
        let mut prompts = MockPromptRepository::new();
        prompts
            .expect_resolve()
            .times(1)
            .returning(|_, _| Ok(crate::prompt::Resolution::Version(Arc::new(version(2)))));
        let mut runs = MockRunRepository::new();
        runs.expect_insert_batch().times(1).returning(|_| Ok(Vec::new()));
        let svc = service(runs, prompts);
        let batch: Vec<_> = (0..10u8)
            .map(|i| new_run(uuid::Uuid::now_v7(), f64::from(i), Some(2)))
            .collect();
        let logged = svc.log_batch(batch).await.expect("logged");
        assert_eq!(logged.runs.len(), 10);
        let id = uuid::Uuid::now_v7();
        let err = svc
            .log_batch(vec![new_run(id, 1.0, Some(2)), new_run(id, 1.0, Some(2))])
            .await
            .expect_err("repeat");
        assert!(matches!(err, RunError::InvalidItems(ref e) if e[0].field == "runs[1].id"));
    }

    #[tokio::test]
    async fn a_run_by_a_split_label_must_name_its_version_and_keeps_its_label() {
        let mut prompts = MockPromptRepository::new();
        prompts.expect_resolve().returning(|_, selector| match selector {
            VersionSelector::Number(_) => Ok(crate::prompt::Resolution::Version(Arc::new(version(8)))),
            _ => Ok(crate::prompt::Resolution::Split(
                vec![(90, Arc::new(version(7))), (10, Arc::new(version(8)))].into(),
            )),
        });
        let mut runs = MockRunRepository::new();
        runs.expect_insert().returning(|r| Ok(Logged::Created(r.clone())));
        let svc = service(runs, prompts);
        let by_label = |version: Option<i64>| {
            NewRunBuilder {
                prompt: "greeting".into(),
                version,
                label: Some("production".into()),
                status: "success".into(),
                ..NewRunBuilder::default()
            }
            .build()
            .expect("valid")
        };
        let err = svc.log(by_label(None)).await.expect_err("which arm?");
        assert!(matches!(err, RunError::SplitNeedsVersion { .. }), "{err:?}");
        let Logged::Created(run) = svc.log(by_label(Some(8))).await.expect("logged") else {
            panic!("not created");
        };
        assert_eq!(run.version.get(), 8);
        assert_eq!(run.fields.label, Some(crate::prompt::LabelName::PRODUCTION));
    }
}
