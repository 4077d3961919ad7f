//! Threads of their own for the CPU work of logging runs.
//!
//! Decoding an OTLP export or a batch of runs, tying each run to its version
//! and encoding the rows for the database take milliseconds of CPU per
//! request. Done on the HTTP workers, that work sits in front of the cached
//! fetches those workers also serve, and their tail latency grows with the
//! ingestion rate. Here it runs on separate threads with their own runtime:
//! the workers only read the body and hand it over, and the operating
//! system's scheduler, which favours threads that mostly wait (the fetch
//! path) over one that computes, keeps the fetch path responsive. On Linux
//! these threads also run at a lower priority (`runs.ingest_nice`): when the
//! CPU is short, ingestion gets what the fetch path leaves, and back-pressure
//! (503 with `Retry-After`) reaches the clients that log runs, never the ones
//! that fetch prompts. The background writers stay at the normal priority:
//! what was accepted is stored at the database's pace.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// Threads of the ingestion runtime: as many as this machine's two cores, so
/// ingestion uses both when the fetch path leaves them idle.
const THREADS: usize = 2;

/// Where ingestion work runs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    handle: Handle,
    /// Synchronous batch inserts in progress at most (see [`Ingest::inserts`]).
    inserts: Arc<Semaphore>,
}

impl Ingest {
    /// Starts the ingestion runtime, which lives as long as the process, its
    /// threads at the nice value `nice` (0 to 19; Linux only), letting at
    /// most `inserts` synchronous batch inserts run at once.
    ///
    /// # Errors
    /// The thread or its runtime cannot be started.
    pub fn start(nice: i32, inserts: usize) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("ingest".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(THREADS)
                .thread_name("ingest")
                .on_thread_start(move || lower_priority(nice))
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    // Never dropped: its tasks run until the process ends.
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        let handle = rx.recv()??;
        Ok(Self {
            handle,
            inserts: Arc::new(Semaphore::new(inserts.max(1))),
        })
    }

    /// The gate synchronous batch inserts pass through. Each one keeps a
    /// database backend computing; more of them at once than the background
    /// writer uses would only take the CPU the fetch path needs (the
    /// database usually shares the machine's cores), and store no more.
    #[must_use]
    pub fn inserts(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inserts)
    }

    /// Runs `work` on the ingestion thread and waits for its answer.
    ///
    /// # Errors
    /// The work's own error, or a 500 if it panicked.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        self.handle
            .spawn(work)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("ingestion work failed: {e}")))?
    }
}

/// Gives the calling thread the nice value `nice`, where the platform can.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0
        && let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
    {
        tracing::warn!(error = %e, nice, "could not lower the ingestion thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
