//! The background run writer behind `Prefer: respond-async`.
//!
//! What a 202 promises: the run was valid, its prompt and version were
//! resolved, and it sits in this process's bounded queue. The writer inserts
//! queued runs in multi-row batches; a batch that fails is retried, then its
//! runs are inserted one by one, and any run that still cannot be stored is
//! logged at error level with its id. On SIGTERM or SIGINT the queue is
//! drained into the database before the process exits. What a 202 does not
//! survive is the process being killed outright (SIGKILL, power loss)
//! before the queue is flushed: clients that cannot lose a run use the
//! synchronous path, which answers only after the run is committed.

use std::sync::Arc;
use std::time::Duration;

use registry_domain::run::Run;
use registry_domain::run::ports::RunRepository;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How the writer batches and retries.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Runs the queue holds before the API answers 503.
    pub capacity: usize,
    /// Most runs in one INSERT transaction.
    pub batch_size: usize,
    /// Attempts for a failed batch before it is split into single runs.
    pub attempts: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            batch_size: 500,
            attempts: 3,
        }
    }
}

/// The sending side, cloned into every worker.
#[derive(Debug, Clone)]
pub struct RunQueue {
    tx: mpsc::Sender<Run>,
    capacity: usize,
}

/// The queue is full: the caller should answer 503 and let the client retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl RunQueue {
    /// Queues a run without waiting.
    ///
    /// # Errors
    /// [`QueueFull`] when the queue is full or the writer has stopped.
    pub fn try_enqueue(&self, run: Run) -> Result<(), QueueFull> {
        self.tx.try_send(run).map_err(|_| QueueFull)
    }

    /// Runs waiting to be written.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }
}

/// The running writer; [`WriterTask::shutdown`] flushes and stops it.
#[derive(Debug)]
pub struct WriterTask {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl WriterTask {
    /// Stops accepting runs, writes every queued run, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the run writer failed while flushing");
        }
    }
}

/// Starts the writer on the current runtime.
pub fn spawn<R: RunRepository>(repo: Arc<R>, config: WriterConfig) -> (RunQueue, WriterTask) {
    let capacity = config.capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let (stop, stopped) = oneshot::channel();
    let join = tokio::spawn(run(repo, rx, stopped, config));
    (RunQueue { tx, capacity }, WriterTask { stop, join })
}

async fn run<R: RunRepository>(
    repo: Arc<R>,
    mut rx: mpsc::Receiver<Run>,
    mut stopped: oneshot::Receiver<()>,
    config: WriterConfig,
) {
    let batch_size = config.batch_size.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        tokio::select! {
            received = rx.recv_many(&mut batch, batch_size) => {
                if received == 0 {
                    break;
                }
                write(repo.as_ref(), &mut batch, config.attempts).await;
            }
            _ = &mut stopped => {
                rx.close();
                let mut flushed = 0;
                while rx.recv_many(&mut batch, batch_size).await > 0 {
                    flushed += batch.len();
                    write(repo.as_ref(), &mut batch, config.attempts).await;
                }
                tracing::info!(flushed, "run writer drained its queue");
                break;
            }
        }
    }
}

async fn write<R: RunRepository>(repo: &R, batch: &mut Vec<Run>, attempts: u32) {
    for attempt in 1..=attempts.max(1) {
        match repo.insert_batch(batch).await {
            Ok(_) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, runs = batch.len(), error = %format!("{e:#}"), "a run batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
    // The batch as a whole keeps failing: store what can be stored, one by one,
    // and name every run that cannot.
    for run in batch.drain(..) {
        if let Err(e) = repo.insert_batch(std::slice::from_ref(&run)).await {
            tracing::error!(run_id = %run.id, prompt = %run.prompt_name, error = %format!("{e:#}"), "an accepted run could not be stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use registry_domain::page::{Page, PageRequest};
    use registry_domain::prompt::{PromptName, Tags, VersionNumber};
    use registry_domain::run::ports::{Logged, RunError};
    use registry_domain::run::stats::{StatsQuery, VersionStats};
    use registry_domain::run::{Cost, RunCursor, RunFields, RunFilter, RunSort, RunStatus};
    use tokio::sync::Semaphore;
    use uuid::Uuid;

    use super::*;

    /// Stores batches in memory; waits for a permit per batch when gated, and
    /// fails every batch of more than one run when `fail_multi` is set.
    #[derive(Default)]
    struct Stub {
        stored: Mutex<Vec<Uuid>>,
        gate: Option<Semaphore>,
        fail_multi: bool,
        fail_ids: Vec<Uuid>,
    }

    #[async_trait]
    impl RunRepository for Stub {
        async fn insert(&self, _run: &Run) -> Result<Logged, RunError> {
            unreachable!("the writer only inserts batches")
        }

        async fn insert_batch(&self, runs: &[Run]) -> Result<Vec<Uuid>, RunError> {
            if let Some(gate) = &self.gate {
                gate.acquire()
                    .await
                    .map_err(|e| RunError::Unknown(e.into()))?
                    .forget();
            }
            if (self.fail_multi && runs.len() > 1) || runs.iter().any(|r| self.fail_ids.contains(&r.id)) {
                return Err(RunError::Unknown(anyhow::anyhow!("batch refused")));
            }
            self.stored
                .lock()
                .map_err(|_| RunError::Unknown(anyhow::anyhow!("poisoned")))?
                .extend(runs.iter().map(|r| r.id));
            Ok(Vec::new())
        }

        async fn find(&self, id: Uuid) -> Result<Run, RunError> {
            Err(RunError::NotFound(id))
        }

        async fn list(
            &self,
            _: &RunFilter,
            _: RunSort,
            _: &PageRequest<RunCursor>,
        ) -> Result<Page<Run, RunCursor>, RunError> {
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }

        async fn stats(&self, _: &PromptName, _: &StatsQuery) -> Result<Vec<VersionStats>, RunError> {
            Ok(Vec::new())
        }
    }

    fn run() -> Run {
        Run {
            id: Uuid::now_v7(),
            prompt_id: Uuid::nil(),
            prompt_name: PromptName::new("p").expect("valid"),
            version_id: Uuid::nil(),
            version: VersionNumber::FIRST,
            fields: RunFields {
                input: serde_json::Map::new(),
                output: None,
                status: RunStatus::Success,
                error: None,
                model: None,
                latency_ms: 1,
                prompt_tokens: None,
                completion_tokens: None,
                cost: Cost::ZERO,
                metadata: serde_json::Map::new(),
                tags: Tags::default(),
                started_at: None,
            },
            created_at: registry_domain::time::now_utc(),
        }
    }

    fn stored(repo: &Stub) -> Vec<Uuid> {
        repo.stored.lock().map(|s| s.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_shutdown_writes_everything_accepted() {
        let repo = Arc::new(Stub {
            gate: Some(Semaphore::new(0)),
            ..Stub::default()
        });
        let (queue, task) = spawn(
            Arc::clone(&repo),
            WriterConfig {
                capacity: 2,
                batch_size: 1,
                attempts: 1,
            },
        );
        let first = run();
        queue.try_enqueue(first.clone()).expect("queued");
        // Let the writer take the first run and block on the gate.
        for _ in 0..100 {
            if queue.depth() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (second, third) = (run(), run());
        queue.try_enqueue(second.clone()).expect("queued");
        queue.try_enqueue(third.clone()).expect("queued");
        assert_eq!(queue.depth(), 2);
        assert_eq!(queue.try_enqueue(run()), Err(QueueFull));
        if let Some(gate) = &repo.gate {
            gate.add_permits(10);
        }
        task.shutdown().await;
        assert_eq!(stored(&repo), vec![first.id, second.id, third.id]);
        assert_eq!(
            queue.try_enqueue(run()),
            Err(QueueFull),
            "a stopped writer accepts nothing"
        );
    }

    #[tokio::test]
    async fn a_failing_batch_is_split_and_every_storable_run_is_stored() {
        let bad = run();
        let repo = Arc::new(Stub {
            fail_multi: true,
            fail_ids: vec![bad.id],
            ..Stub::default()
        });
        let (queue, task) = spawn(
            Arc::clone(&repo),
            WriterConfig {
                capacity: 10,
                batch_size: 10,
                attempts: 2,
            },
        );
        let good: Vec<Run> = (0..3).map(|_| run()).collect();
        queue.try_enqueue(good[0].clone()).expect("queued");
        queue.try_enqueue(bad.clone()).expect("queued");
        queue.try_enqueue(good[1].clone()).expect("queued");
        queue.try_enqueue(good[2].clone()).expect("queued");
        task.shutdown().await;
        let mut got = stored(&repo);
        got.sort();
        let mut want: Vec<Uuid> = good.iter().map(|r| r.id).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
