//! Coherence by invalidation with leases: serving from this process's cache
//! without asking Redis on every read, and still never serving a version a
//! write has replaced once that write has returned.
//!
//! Every replica holds a *lease*, a key in Redis with a short TTL that it
//! renews well before expiry, and a subscription on which it receives
//! invalidations. It answers from its cache only while both hold: the lease
//! is valid by its own monotonic clock (counted from before the renewal was
//! sent, shortened by a margin for clock-rate drift) and the subscription is
//! up. Otherwise reads take the per-read generation check, as in the `check`
//! mode: correct, one round trip slower.
//!
//! A write, once committed, moves this replica to a new generation,
//! publishes the invalidation and, in the same Lua script, reads which other
//! replicas hold a lease. It then waits until each of them has acknowledged
//! (a replica acknowledges after it has moved to a new generation itself),
//! at most `ack_timeout`. A replica that has not answered by then has its
//! lease revoked (deleted, in one script that also reads its remaining TTL),
//! and the write waits out that TTL: by then the replica's own clock has
//! ended its lease too, and it cannot renew it, since renewals only extend a
//! lease that still exists (`SET … XX`). A replica that finds its lease gone
//! drops its cache (a new generation) before it takes a new one. So a stuck,
//! paused or partitioned replica costs a write at most
//! `ack_timeout + lease + drift`, and nobody correctness.
//!
//! The argument in full, with its assumptions, is in docs/architecture.md.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_redis::redis;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

/// How leases are held and invalidations awaited.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// A lease's TTL in Redis; renewed every third of it.
    pub period: Duration,
    /// How long a write waits for acknowledgements before revoking the
    /// leases of replicas that have not answered.
    pub ack_timeout: Duration,
}

/// The bound on clock-rate drift between a replica and Redis, as a fraction
/// of an interval: 1 %, far above what quartz clocks and NTP-disciplined
/// kernels do (tens of parts per million).
const DRIFT_DIVISOR: u32 = 100;

/// Subtracted from a replica's lease and added to a write's wait, beyond
/// the drift: scheduling delays between reading the clock and acting on it.
const MARGIN: Duration = Duration::from_millis(20);

/// Renews, probes, reconnects: how often the background task wakes.
const RENEWALS_PER_PERIOD: u32 = 3;

/// Moves the prompt's generation on (KEYS[2], for replicas reading without
/// a lease), publishes an invalidation and returns the other replicas
/// holding a lease, dropping from the set those whose lease has gone: one
/// round trip for all of a write's work in Redis.
const PUBLISH: &str = r"
redis.call('INCR', KEYS[2])
local live = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    if id ~= ARGV[4] then table.insert(live, id) end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return live
";

/// Revokes the leases named in ARGV[2..] and returns the longest TTL any of
/// them had left, in milliseconds.
const REVOKE: &str = r"
local longest = 0
for i = 2, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local ttl = redis.call('PTTL', key)
  if ttl > longest then longest = ttl end
  redis.call('DEL', key)
  redis.call('SREM', KEYS[1], ARGV[i])
end
return longest
";

/// A write waiting for acknowledgements.
#[derive(Debug, Default)]
struct Waiter {
    acked: HashSet<String>,
    notify: Arc<Notify>,
}

/// This replica's lease, subscription and generation.
#[derive(Debug)]
pub(crate) struct Lease {
    id: String,
    prefix: String,
    settings: LeaseSettings,
    client: redis::Client,
    pool: deadpool_redis::Pool,
    timeout: Duration,
    origin: Instant,
    /// Nanoseconds since `origin` until which the lease is valid; 0: none.
    valid_until: AtomicU64,
    subscribed: AtomicBool,
    /// Moves on every invalidation received and every time the cache must
    /// be dropped; part of every cache key served under the lease.
    generation: AtomicU64,
    sequence: AtomicU64,
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// The last self-addressed ping sent and the last one received back.
    ping_sent: AtomicU64,
    ping_seen: AtomicU64,
    /// Wakes the subscriber to reconnect.
    reconnect: Notify,
    /// Wakes the renewer when a subscription is in place, so the first
    /// lease is taken at once.
    resubscribed: Notify,
}

thread_local! {
    /// The connections invalidations and acknowledgements are sent on, by
    /// lease id: one multiplexed connection per thread kept open. Not one
    /// from the pool, which is pinged before it is lent (one more round
    /// trip on the path every write waits for); and not one shared by the
    /// threads, whose answers would be read on the thread that opened it
    /// and handed over to the writer's (two more thread switches).
    static PUBLISHERS: std::cell::RefCell<Vec<(String, MultiplexedConnection)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Lease {
    pub(crate) fn new(
        url: &str,
        prefix: &str,
        pool: deadpool_redis::Pool,
        timeout: Duration,
        settings: LeaseSettings,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("invalid Redis URL")?;
        Ok(Self {
            id: format!("{:032x}", crate::generation::rand_u128()),
            prefix: prefix.to_owned(),
            settings,
            client,
            pool,
            timeout,
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            ping_sent: AtomicU64::new(0),
            ping_seen: AtomicU64::new(0),
            reconnect: Notify::new(),
            resubscribed: Notify::new(),
        })
    }

    /// Runs `command` on this thread's publishing connection; once more on
    /// a new connection when it fails (Redis restarted since, say). Both
    /// kinds of command it sends may safely be sent twice: an invalidation
    /// only moves generations on, an acknowledgement names its write.
    async fn publish<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> anyhow::Result<T> {
        let mut last = None;
        for _ in 0..2 {
            let held =
                PUBLISHERS.with_borrow(|p| p.iter().find(|(id, _)| *id == self.id).map(|(_, c)| c.clone()));
            let mut conn = match held {
                Some(conn) => conn,
                None => {
                    let conn = self
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .context("no Redis connection")?;
                    PUBLISHERS.with_borrow_mut(|p| {
                        p.retain(|(id, _)| *id != self.id);
                        p.push((self.id.clone(), conn.clone()));
                    });
                    conn
                }
            };
            match command.query_async::<T>(&mut conn).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    PUBLISHERS.with_borrow_mut(|p| p.retain(|(id, _)| *id != self.id));
                    last = Some(e);
                }
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("Redis failed"), anyhow::Error::new))
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn holders_key(&self) -> String {
        format!("{}leases", self.prefix)
    }

    fn lease_prefix(&self) -> String {
        format!("{}lease:", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    fn ack_channel(&self, id: &str) -> String {
        format!("{}ack:{id}", self.prefix)
    }

    /// The generation to key entries by, while this replica may serve from
    /// its cache; `None` while it may not (no valid lease, or no
    /// subscription). Nothing here waits: the check and the generation are
    /// read at one instant.
    pub(crate) fn generation(&self) -> Option<u64> {
        if self.subscribed.load(Ordering::Acquire) && self.now() < self.valid_until.load(Ordering::Acquire) {
            Some(self.generation.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// Whether reads are served under the lease now.
    pub(crate) fn is_valid(&self) -> bool {
        self.generation().is_some()
    }

    /// Drops every entry served under the lease.
    fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts the subscriber and the renewer, and waits up to `wait` for
    /// the first lease.
    pub(crate) async fn start(self: &Arc<Self>, wait: Duration) {
        tokio::spawn(Arc::clone(self).subscribe_forever());
        tokio::spawn(Arc::clone(self).renew_forever());
        let deadline = Instant::now() + wait;
        while !self.is_valid() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Keeps a subscription to the invalidations and to this replica's
    /// acknowledgements, reconnecting (after dropping the cache) whenever
    /// it breaks.
    async fn subscribe_forever(self: Arc<Self>) {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.subscribe_once().await {
                Ok(()) => wait = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cache invalidations: subscription lost; reads check Redis until it is back");
                }
            }
            self.subscribed.store(false, Ordering::Release);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe_once(&self) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        let mut pubsub = tokio::time::timeout(self.timeout * 10, self.client.get_async_pubsub())
            .await
            .context("Redis did not answer in time")?
            .context("no Redis subscription")?;
        let channel = self.channel();
        let acks = self.ack_channel(&self.id);
        pubsub.subscribe(&channel).await.context("SUBSCRIBE failed")?;
        pubsub.subscribe(&acks).await.context("SUBSCRIBE failed")?;
        // Invalidations sent while there was no subscription were missed:
        // drop what was cached before serving under the lease again.
        self.flush();
        self.ping_seen
            .store(self.ping_sent.load(Ordering::Acquire), Ordering::Release);
        self.subscribed.store(true, Ordering::Release);
        self.resubscribed.notify_one();
        tracing::debug!("cache invalidations: subscribed");
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        anyhow::bail!("the subscription was closed");
                    };
                    let payload: String = message.get_payload().unwrap_or_default();
                    if message.get_channel_name() == channel {
                        self.invalidated(&payload).await;
                    } else {
                        self.acknowledged(&payload);
                    }
                }
                () = self.reconnect.notified() => {
                    anyhow::bail!("the subscription stopped delivering");
                }
            }
        }
    }

    /// An invalidation from `writer`: a new generation, then the answer.
    async fn invalidated(&self, payload: &str) {
        let mut parts = payload.splitn(3, ' ');
        let (Some(writer), Some(sequence)) = (parts.next(), parts.next()) else {
            return;
        };
        self.flush();
        if writer == self.id {
            return;
        }
        let mut ack = redis::cmd("PUBLISH");
        ack.arg(self.ack_channel(writer))
            .arg(format!("{sequence} {}", self.id));
        let ack = async { self.publish::<()>(&ack).await.context("PUBLISH failed") };
        if let Err(e) = tokio::time::timeout(self.timeout * 10, ack)
            .await
            .context("Redis did not answer in time")
            .and_then(|r| r)
        {
            // The writer revokes the lease and waits it out instead.
            tracing::warn!(error = %format!("{e:#}"), "cache invalidations: could not acknowledge");
        }
    }

    /// An acknowledgement of one of this replica's writes, or its own ping.
    fn acknowledged(&self, payload: &str) {
        let Some((sequence, from)) = payload.split_once(' ') else {
            return;
        };
        if sequence == "ping" {
            if let Ok(n) = from.parse() {
                self.ping_seen.fetch_max(n, Ordering::AcqRel);
            }
            return;
        }
        let Ok(sequence) = sequence.parse::<u64>() else {
            return;
        };
        if let Ok(mut waiters) = self.waiters.lock()
            && let Some(waiter) = waiters.get_mut(&sequence)
        {
            waiter.acked.insert(from.to_owned());
            waiter.notify.notify_one();
        }
    }

    /// Renews the lease every third of its period; takes a new one (after
    /// dropping the cache) when it was revoked or lost; checks that the
    /// subscription still delivers.
    async fn renew_forever(self: Arc<Self>) {
        let every = self.settings.period / RENEWALS_PER_PERIOD;
        loop {
            if self.subscribed.load(Ordering::Acquire) {
                let sent = self.ping_sent.load(Ordering::Acquire);
                if sent > self.ping_seen.load(Ordering::Acquire) {
                    // The last ping never came back: the subscription is
                    // silently dead. Stop serving from it and reconnect.
                    self.subscribed.store(false, Ordering::Release);
                    self.reconnect.notify_one();
                } else if let Err(e) = self.renew().await {
                    tracing::warn!(error = %format!("{e:#}"), "cache lease: could not renew; reads check Redis once it lapses");
                }
            }
            // A new subscription wakes it early: the lease follows at once.
            let _ = tokio::time::timeout(every, self.resubscribed.notified()).await;
        }
    }

    async fn renew(&self) -> anyhow::Result<()> {
        let period_ms = u64::try_from(self.settings.period.as_millis()).unwrap_or(u64::MAX);
        let key = format!("{}{}", self.lease_prefix(), self.id);
        let start = self.now();
        let attempt = async {
            let mut conn = self.pool.get().await.context("no Redis connection")?;
            let held = self.valid_until.load(Ordering::Acquire) != 0;
            let ping = self.ping_sent.fetch_add(1, Ordering::AcqRel) + 1;
            let mut pipe = redis::pipe();
            if held {
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(period_ms)
                    .arg("XX");
            } else {
                pipe.cmd("SET").arg(&key).arg(1).arg("PX").arg(period_ms);
            }
            pipe.cmd("SADD")
                .arg(self.holders_key())
                .arg(&self.id)
                .ignore()
                .cmd("PUBLISH")
                .arg(self.ack_channel(&self.id))
                .arg(format!("ping {ping}"))
                .ignore();
            let (set,): (Option<String>,) = pipe
                .query_async(&mut conn)
                .await
                .context("lease renewal failed")?;
            anyhow::Ok((held, set.is_some()))
        };
        let (held, renewed) = tokio::time::timeout(self.timeout * 10, attempt)
            .await
            .context("Redis did not answer in time")??;
        if !renewed {
            // Revoked by a write this replica did not acknowledge, or lost
            // with a Redis restart: what it cached may be stale.
            self.valid_until.store(0, Ordering::Release);
            self.flush();
            tracing::info!("cache lease: revoked or lost; taking a new one");
            return Box::pin(self.renew()).await;
        }
        if !held {
            // A new lease: what was cached before it is not covered by it.
            self.flush();
        }
        let period = u64::try_from(self.settings.period.as_nanos()).unwrap_or(u64::MAX);
        let margin = u64::try_from(MARGIN.as_nanos()).unwrap_or(0);
        let until = (start + period - period / u64::from(DRIFT_DIVISOR)).saturating_sub(margin);
        self.valid_until.store(until, Ordering::Release);
        Ok(())
    }

    /// After a committed write to `name`: this replica moves to a new
    /// generation, so does the prompt's generation in Redis, then every
    /// other lease holder moves on too, or its lease ends.
    ///
    /// # Errors
    /// Redis could not be reached to publish; the caller waits a lease out.
    pub(crate) async fn invalidate(&self, name: &str) -> anyhow::Result<()> {
        self.flush();
        let sequence = self.sequence.fetch_add(1, Ordering::AcqRel);
        let notify = Arc::new(Notify::new());
        self.waiters
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(
                sequence,
                Waiter {
                    acked: HashSet::new(),
                    notify: Arc::clone(&notify),
                },
            );
        let result = self.reach_all(name, sequence, &notify).await;
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&sequence);
        }
        result
    }

    async fn reach_all(&self, name: &str, sequence: u64, notify: &Notify) -> anyhow::Result<()> {
        let mut publish = redis::cmd("EVAL");
        publish
            .arg(PUBLISH)
            .arg(2)
            .arg(self.holders_key())
            .arg(crate::generation::Generations::key(&self.prefix, name))
            .arg(self.lease_prefix())
            .arg(self.channel())
            .arg(format!("{} {sequence} {name}", self.id))
            .arg(&self.id);
        let publish = async {
            self.publish::<Vec<String>>(&publish)
                .await
                .context("publishing the invalidation failed")
        };
        let holders = tokio::time::timeout(self.timeout * 10, publish)
            .await
            .context("Redis did not answer in time")??;
        let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
        let missing = loop {
            let notified = notify.notified();
            let missing = self.missing(sequence, &holders);
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break missing;
            }
        };
        // Those that did not answer lose their lease; wait it out.
        let revoke = async {
            let mut conn = self.pool.get().await.context("no Redis connection")?;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(REVOKE)
                .arg(1)
                .arg(self.holders_key())
                .arg(self.lease_prefix());
            for id in &missing {
                cmd.arg(id);
            }
            cmd.query_async::<i64>(&mut conn)
                .await
                .context("revoking leases failed")
        };
        let left_ms = match tokio::time::timeout(self.timeout * 10, revoke).await {
            Ok(Ok(ms)) => u64::try_from(ms).unwrap_or(0),
            // Not known to be revoked: a lease may still be renewed, and
            // only its holder's clock ends it. The caller waits a period.
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("Redis did not answer in time"),
        };
        tracing::warn!(
            replicas = missing.len(),
            "cache invalidation: replicas did not acknowledge; their leases were revoked"
        );
        let deadline = tokio::time::Instant::now() + stretched(Duration::from_millis(left_ms));
        loop {
            let notified = notify.notified();
            if self.missing(sequence, &missing).is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    fn missing(&self, sequence: u64, holders: &[String]) -> Vec<String> {
        let Ok(waiters) = self.waiters.lock() else {
            return holders.to_vec();
        };
        let acked = waiters.get(&sequence).map(|w| &w.acked);
        holders
            .iter()
            .filter(|h| !acked.is_some_and(|a| a.contains(*h)))
            .cloned()
            .collect()
    }

    /// The longest a write waits when it cannot tell who holds a lease:
    /// one period, with the drift and margin.
    pub(crate) fn full_wait(&self) -> Duration {
        stretched(self.settings.period)
    }
}

/// How long a writer waits for a lease with `left` to run by Redis's clock
/// to have ended by its holder's: stretched by the drift bound and margin.
fn stretched(left: Duration) -> Duration {
    left + left / DRIFT_DIVISOR + MARGIN
}
