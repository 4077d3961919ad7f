//! The change events of this database, as they commit, for everything in
//! this process that pushes them on: the event stream, the webhook
//! dispatcher and MCP sessions.
//!
//! One task per process tails the outbox and broadcasts each event once,
//! whatever the number of listeners. It reads when woken (a write through
//! this process just returned, see [`crate::middleware::envelope`]) and otherwise every
//! poll interval, which is how writes made through other replicas arrive.
//! Sequence numbers are taken in commit order (see the outbox adapter), so
//! reading "after the last one seen" misses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use registry_domain::events::{ChangeEvent, EventError, EventLog};
use tokio::sync::{Notify, broadcast, watch};

/// How many events a slow listener may fall behind before it is told it
/// lagged (it then reads the gap from the outbox).
const BUFFER: usize = 4096;
/// Most events read from the outbox at once.
const BATCH: u32 = 500;

/// The broadcast of committed change events.
#[derive(Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<ChangeEvent>>,
    wake: Notify,
    /// The last sequence number broadcast.
    last: AtomicI64,
    /// Set when the process starts shutting down: long-lived responses end.
    closing: watch::Sender<bool>,
}

impl EventHub {
    /// A hub whose broadcast starts after sequence number `last`.
    #[must_use]
    pub fn new(last: i64) -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            wake: Notify::new(),
            last: AtomicI64::new(last),
            closing: watch::channel(false).0,
        }
    }

    /// Ends every long-lived response (event streams, MCP sessions' streams)
    /// so a graceful shutdown does not wait for clients that never hang up.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// `stream`, ended when the process starts shutting down.
    pub fn until_closing<S: futures::Stream>(
        &self,
        stream: S,
    ) -> impl futures::Stream<Item = S::Item> + use<S> {
        let mut closing = self.closing.subscribe();
        let closed = async move {
            // Err: the hub is gone, which also means the end.
            let _ = closing.wait_for(|c| *c).await;
        };
        futures::StreamExt::take_until(stream, Box::pin(closed))
    }

    /// Events committed from now on. A receiver that falls more than
    /// [`BUFFER`] behind gets `Lagged` and should read the outbox from the
    /// last sequence number it saw.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.tx.subscribe()
    }

    /// The last sequence number broadcast.
    #[must_use]
    pub fn last_seq(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }

    /// Read the outbox now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Broadcasts what the outbox holds after the last event broadcast.
    ///
    /// # Errors
    /// A failed read; the next one starts from the same place.
    pub async fn catch_up(&self, log: &dyn EventLog) -> Result<usize, EventError> {
        let mut sent = 0;
        loop {
            let events = log.after(self.last_seq(), BATCH).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(sent);
            };
            let full = events.len() == BATCH as usize;
            sent += events.len();
            for event in events {
                // No listener is not an error: nobody is connected yet.
                let _ = self.tx.send(Arc::new(event));
            }
            self.last.store(last, Ordering::Release);
            if !full {
                return Ok(sent);
            }
        }
    }

    /// Tails the outbox until the process ends: on every wake-up, and every
    /// `poll` for writes made elsewhere.
    pub async fn run(self: Arc<Self>, log: Arc<dyn EventLog>, poll: Duration) {
        loop {
            if let Err(e) = self.catch_up(log.as_ref()).await {
                tracing::warn!(error = %e, "reading the change events failed; retrying");
            }
            let _ = tokio::time::timeout(poll, self.wake.notified()).await;
        }
    }
}
