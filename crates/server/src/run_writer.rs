//! The background run writer behind `Prefer: respond-async`.
//!
//! What a 202 promises: the run was valid, its prompt and version were
//! resolved, and it sits in this process's bounded queue. The writer inserts
//! queued runs in multi-row batches and tells two kinds of failure apart:
//!
//! - **The database is unreachable** (refused connections, an exhausted pool,
//!   a server restarting): nothing is wrong with the runs. The writer keeps
//!   the batch and tries again with capped exponential backoff for as long as
//!   the outage lasts; meanwhile the queue fills and the API answers 503 when
//!   it is full, so nothing accepted is dropped and nothing more is accepted
//!   than can be held.
//! - **The database refuses the batch** (a constraint, a value it cannot
//!   store): trying again will not help, so the batch is split in halves until
//!   the refused runs are alone. Every other run is stored at once, with no
//!   sleep; each refused run is logged at error level with its id and the
//!   cause, and counted.
//!
//! On SIGTERM or SIGINT the queue is drained into the database before the
//! process exits, for at most the shutdown grace if the database is down.
//! What a 202 does not survive is the process being killed outright
//! (SIGKILL, power loss) before the queue is flushed: clients that cannot
//! lose a run use the synchronous path, which answers only after the run is
//! committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use registry_domain::run::Run;
use registry_domain::run::ports::{RunError, RunRepository, RunSink, SinkError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the writer batches and retries.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Runs the queue holds before the API answers 503.
    pub capacity: usize,
    /// Most runs in one INSERT transaction.
    pub batch_size: usize,
    /// Writers storing batches at the same time (the database can use more
    /// than one core while the next batch is taken).
    pub concurrency: usize,
    /// First wait after a failed attempt while the database is unreachable.
    pub retry_initial: Duration,
    /// Longest wait between two attempts while the database is unreachable.
    pub retry_max: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            batch_size: 2_000,
            concurrency: 2,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// What the writer has done since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Attempts that found the database unreachable (and were retried).
    pub retries: AtomicU64,
    /// Runs the database refused; logged with their ids, not stored.
    pub refused: AtomicU64,
    /// Runs still queued when the shutdown grace ran out with the database down.
    pub abandoned: AtomicU64,
}

/// The sending side, cloned into every worker: this process's bounded
/// queue, or (with Redis) the durable stream every replica's writer reads.
#[derive(Debug, Clone)]
pub struct RunQueue {
    inner: Inner,
    counters: Arc<WriterCounters>,
}

#[derive(Debug, Clone)]
enum Inner {
    Memory { tx: mpsc::Sender<Run>, capacity: usize },
    Stream(Arc<crate::run_stream::RunStream>),
}

#[async_trait::async_trait]
impl RunSink for RunQueue {
    /// In memory: queues the runs without waiting, all or none;
    /// [`SinkError::Full`] when they do not all fit or the writer has
    /// stopped. With Redis: appends them to the stream (one XADD), and
    /// returns once Redis has them.
    async fn submit(&self, runs: Vec<Run>) -> Result<(), SinkError> {
        match &self.inner {
            Inner::Memory { tx, .. } => {
                let permits = tx.try_reserve_many(runs.len()).map_err(|_| SinkError::Full)?;
                for (permit, run) in permits.zip(runs) {
                    permit.send(run);
                }
                Ok(())
            }
            Inner::Stream(stream) => stream.append(&runs).await,
        }
    }
}

impl RunQueue {
    /// Runs waiting to be written: in this process's queue, or (with Redis)
    /// the stream's entries as last counted, each holding one request's runs.
    #[must_use]
    pub fn depth(&self) -> usize {
        match &self.inner {
            Inner::Memory { tx, capacity } => capacity.saturating_sub(tx.capacity()),
            Inner::Stream(stream) => stream.backlog(),
        }
    }

    /// Whether `runs` more would be taken now (in memory: that many free
    /// places; with Redis: the stream below its capacity). A hint, to refuse
    /// work early: [`RunSink::submit`] decides.
    #[must_use]
    pub fn has_room(&self, runs: usize) -> bool {
        match &self.inner {
            Inner::Memory { tx, .. } => tx.capacity() >= runs,
            Inner::Stream(stream) => stream.has_room(),
        }
    }

    #[must_use]
    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// Whether accepted runs are kept in Redis until stored.
    #[must_use]
    pub fn is_durable(&self) -> bool {
        matches!(self.inner, Inner::Stream(_))
    }
}

/// The running writer; [`WriterTask::shutdown`] flushes and stops it.
#[derive(Debug)]
pub struct WriterTask {
    /// `Some(deadline)` once asked to stop: drain, and give up retrying then.
    stop: watch::Sender<Option<Instant>>,
    join: JoinHandle<()>,
}

impl WriterTask {
    /// Stops accepting runs, writes every queued run, and returns when done —
    /// or, if the database stays unreachable, once `grace` has passed (the
    /// runs still held are then logged as abandoned).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(Instant::now() + grace));
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the run writer failed while flushing");
        }
    }
}

/// Waits for every writer, logging one that panicked.
async fn join_all(writers: Vec<JoinHandle<()>>) {
    for writer in writers {
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "a run writer failed");
        }
    }
}

/// Starts the writers on the current runtime.
pub fn spawn<R: RunRepository>(repo: Arc<R>, config: WriterConfig) -> (RunQueue, WriterTask) {
    let capacity = config.capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    start(repo, config, Inner::Memory { tx, capacity }, move |writer| {
        writer.run(Arc::clone(&rx))
    })
}

/// Starts the writer of a durable stream on the current runtime: it stores
/// what any replica appended, and acknowledges entries only once stored.
pub fn spawn_durable<R: RunRepository>(
    repo: Arc<R>,
    config: WriterConfig,
    stream: Arc<crate::run_stream::RunStream>,
) -> (RunQueue, WriterTask) {
    let inner = Inner::Stream(Arc::clone(&stream));
    start(repo, config, inner, move |writer| {
        crate::run_stream::consume(Arc::clone(&stream), writer)
    })
}

/// `config.concurrency` writers, each running `work`, behind the queue
/// `inner` (durable when it is a stream).
fn start<R, F, Fut>(repo: Arc<R>, config: WriterConfig, inner: Inner, work: F) -> (RunQueue, WriterTask)
where
    R: RunRepository,
    F: Fn(Writer<R>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop, stopping) = watch::channel(None);
    let counters = Arc::new(WriterCounters::default());
    let writer = Writer {
        repo,
        durable: matches!(inner, Inner::Stream(_)),
        config,
        stopping,
        counters: Arc::clone(&counters),
    };
    let writers: Vec<_> = (0..config.concurrency.max(1))
        .map(|_| tokio::spawn(work(writer.clone())))
        .collect();
    let join = tokio::spawn(join_all(writers));
    (RunQueue { inner, counters }, WriterTask { stop, join })
}

pub(crate) struct Writer<R> {
    repo: Arc<R>,
    /// Whether unstored runs stay in a durable stream (then giving up at
    /// shutdown loses nothing).
    durable: bool,
    pub(crate) config: WriterConfig,
    pub(crate) stopping: watch::Receiver<Option<Instant>>,
    counters: Arc<WriterCounters>,
}

impl<R> Clone for Writer<R> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            durable: self.durable,
            config: self.config,
            stopping: self.stopping.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<R: RunRepository> Writer<R> {
    /// One of the writers sharing the queue: takes a batch (one writer waits
    /// on the queue at a time), stores it while another takes the next, and
    /// once asked to stop drains what is left with the others.
    async fn run(self, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Run>>>) {
        let batch_size = self.config.batch_size.max(1);
        let mut batch = Vec::with_capacity(batch_size);
        let mut stopping = self.stopping.clone();
        loop {
            let received = {
                let mut rx = rx.lock().await;
                if self.stopping() {
                    rx.close();
                }
                tokio::select! {
                    received = rx.recv_many(&mut batch, batch_size) => received,
                    // The guard `wait_for` returns must not live across an await.
                    () = async { drop(stopping.wait_for(Option::is_some).await) } => {
                        rx.close();
                        rx.recv_many(&mut batch, batch_size).await
                    }
                }
            };
            if received == 0 {
                break;
            }
            self.write(std::mem::take(&mut batch)).await;
        }
        if self.stopping() {
            tracing::info!("run writer drained its queue");
        }
    }

    /// Whether it has been asked to stop.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.borrow().is_some()
    }

    /// The shutdown deadline, once there is one and it has passed.
    fn out_of_time(&self) -> bool {
        self.stopping
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Stores `batch`, retrying while the database is unreachable and
    /// isolating the runs it refuses. Returns `false` when it gave up at
    /// shutdown with runs unstored (logged as abandoned), else `true`.
    pub(crate) async fn write(&self, batch: Vec<Run>) -> bool {
        // Chunks still to store, the next one last.
        let mut pending = vec![batch];
        let mut wait = self.config.retry_initial;
        let mut failures: u64 = 0;
        while let Some(chunk) = pending.pop() {
            match self.repo.insert_batch(&chunk).await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(failures, "the database is reachable again; stored the held runs");
                        failures = 0;
                    }
                    wait = self.config.retry_initial;
                }
                Err(RunError::Unavailable(e)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    let held = chunk.len() + pending.iter().map(Vec::len).sum::<usize>();
                    if self.out_of_time() {
                        self.abandon(&chunk, &pending, &e);
                        return false;
                    }
                    // The first failure, then about once a minute at the longest wait.
                    if failures == 1 || failures.is_multiple_of(12) {
                        tracing::warn!(held, error = %format!("{e:#}"), "the database is unreachable; holding accepted runs and retrying");
                    }
                    pending.push(chunk);
                    let mut stopping = self.stopping.clone();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopping.changed() => {}
                    }
                    wait = (wait * 2).min(self.config.retry_max);
                }
                Err(e) if chunk.len() == 1 => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    let run = &chunk[0];
                    tracing::error!(run_id = %run.id, prompt = %run.prompt_name, error = %format!("{e:#}"), "the database refused an accepted run; it is not stored");
                }
                Err(_) => {
                    // Refused as a whole: store the halves apart, at once.
                    let mut first = chunk;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }
        true
    }

    fn abandon(&self, chunk: &[Run], pending: &[Vec<Run>], cause: &anyhow::Error) {
        if self.durable {
            tracing::warn!(
                error = %format!("{cause:#}"),
                "shutting down with the database unreachable: the unstored runs stay in the stream for the next writer"
            );
            return;
        }
        let lost: Vec<String> = chunk
            .iter()
            .chain(pending.iter().flatten())
            .map(|r| r.id.to_string())
            .collect();
        self.counters
            .abandoned
            .fetch_add(lost.len() as u64, Ordering::Relaxed);
        tracing::error!(
            runs = lost.len(),
            run_ids = %lost.join(","),
            error = %format!("{cause:#}"),
            "shutting down with the database unreachable: these accepted runs are not stored"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Stores batches in memory; waits for a permit per batch when gated,
    /// answers "unavailable" to the first `unavailable_for` calls, and refuses
    /// every batch that holds one of `fail_ids` (or, with `fail_multi`, any
    /// batch of more than one run).
    #[derive(Default)]
    pub(crate) struct Stub {
        stored: Mutex<Vec<Uuid>>,
        gate: Option<Semaphore>,
        fail_multi: bool,
        fail_ids: Vec<Uuid>,
        unavailable_for: AtomicU64,
        calls: AtomicU64,
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
            self.calls.fetch_add(1, Ordering::Relaxed);
            let down = self
                .unavailable_for
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if down {
                return Err(RunError::Unavailable(anyhow::anyhow!("connection refused")));
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

    pub(crate) fn run() -> Run {
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
                latency: registry_domain::run::Latency::from_micros(1_000).expect("in range"),
                prompt_tokens: None,
                completion_tokens: None,
                cost: Cost::ZERO,
                metadata: serde_json::Map::new(),
                tags: Tags::default(),
                started_at: None,
                label: None,
                trace: None,
            },
            created_at: registry_domain::time::now_utc(),
        }
    }

    /// Retries in milliseconds, so outages of many attempts are quick to test.
    pub(crate) fn quick() -> WriterConfig {
        WriterConfig {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            ..WriterConfig::default()
        }
    }

    pub(crate) fn stored(repo: &Stub) -> Vec<Uuid> {
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
                concurrency: 1,
                ..quick()
            },
        );
        let first = run();
        queue.submit(vec![first.clone()]).await.expect("queued");
        // Let the writer take the first run and block on the gate.
        for _ in 0..100 {
            if queue.depth() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (second, third) = (run(), run());
        queue.submit(vec![second.clone()]).await.expect("queued");
        queue.submit(vec![third.clone()]).await.expect("queued");
        assert_eq!(queue.depth(), 2);
        assert!(matches!(queue.submit(vec![run()]).await, Err(SinkError::Full)));
        if let Some(gate) = &repo.gate {
            gate.add_permits(10);
        }
        task.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stored(&repo), vec![first.id, second.id, third.id]);
        assert!(
            matches!(queue.submit(vec![run()]).await, Err(SinkError::Full)),
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
                ..quick()
            },
        );
        let good: Vec<Run> = (0..3).map(|_| run()).collect();
        queue.submit(vec![good[0].clone()]).await.expect("queued");
        queue.submit(vec![bad.clone()]).await.expect("queued");
        queue.submit(vec![good[1].clone()]).await.expect("queued");
        queue.submit(vec![good[2].clone()]).await.expect("queued");
        task.shutdown(Duration::from_secs(5)).await;
        let mut got = stored(&repo);
        got.sort();
        let mut want: Vec<Uuid> = good.iter().map(|r| r.id).collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(queue.counters().refused.load(Ordering::Relaxed), 1);
        assert_eq!(
            queue.counters().retries.load(Ordering::Relaxed),
            0,
            "a refused run is not retried with sleeps"
        );
    }

    #[tokio::test]
    async fn runs_held_through_an_outage_longer_than_any_retry_budget_are_all_stored() {
        let repo = Arc::new(Stub {
            unavailable_for: AtomicU64::new(200),
            ..Stub::default()
        });
        let (queue, task) = spawn(
            Arc::clone(&repo),
            WriterConfig {
                capacity: 100,
                batch_size: 7,
                ..quick()
            },
        );
        let runs: Vec<Run> = (0..50).map(|_| run()).collect();
        for r in &runs {
            queue.submit(vec![r.clone()]).await.expect("queued");
        }
        // Wait for the outage to end on its own, then for the queue to empty.
        for _ in 0..5_000 {
            if stored(&repo).len() == runs.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.shutdown(Duration::from_secs(5)).await;
        let mut got = stored(&repo);
        got.sort();
        let mut want: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
        want.sort();
        assert_eq!(got, want, "two writers share the queue; each run is stored once");
        assert_eq!(queue.counters().retries.load(Ordering::Relaxed), 200);
        assert_eq!(queue.counters().refused.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_shutdown_during_an_endless_outage_gives_up_after_its_grace_and_counts_the_runs() {
        let repo = Arc::new(Stub {
            unavailable_for: AtomicU64::new(u64::MAX),
            ..Stub::default()
        });
        let (queue, task) = spawn(Arc::clone(&repo), quick());
        for _ in 0..3 {
            queue.submit(vec![run()]).await.expect("queued");
        }
        task.shutdown(Duration::from_millis(50)).await;
        assert!(stored(&repo).is_empty());
        assert_eq!(queue.counters().abandoned.load(Ordering::Relaxed), 3);
    }
}
