//! Where generations come from: this process, or Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::redis::{self, AsyncCommands as _};
use registry_domain::prompt::PromptName;

/// 128 random bits, from the standard library's per-process random keys.
pub(crate) fn rand_u128() -> u128 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let half = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    (u128::from(half()) << 64) | u128::from(half())
}

/// Folds an epoch and a counter into one cache-key component.
fn token(epoch: &str, counter: u64) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    // `DefaultHasher::new` uses fixed keys: the same inputs give the same token.
    let mut h = std::hash::DefaultHasher::new();
    epoch.hash(&mut h);
    counter.hash(&mut h);
    h.finish()
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub prefix: String,
    /// How long a lookup waits for Redis before answering from the database.
    pub timeout: Duration,
    pub pool_size: usize,
    /// Failed lookups in a row after which Redis is skipped and probed in
    /// the background instead.
    pub circuit_failures: u32,
    /// How often an open circuit probes Redis.
    pub circuit_probe: Duration,
    /// Serve from this process under a lease, invalidated through Redis
    /// (`Some`), or check the generation in Redis on every read (`None`).
    pub lease: Option<crate::lease::LeaseSettings>,
}

/// A circuit breaker in front of Redis.
///
/// A Redis that answers nothing (paused, partitioned) costs every lookup
/// its whole timeout. After `threshold` failures in a row the circuit opens:
/// lookups skip Redis at once and read the database (correct, only slower),
/// while one background task probes Redis every `probe` and closes the
/// circuit when it answers.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: AtomicU32,
    open: AtomicBool,
    threshold: u32,
    probe: Duration,
    /// Lookups answered without asking Redis because the circuit was open.
    pub(crate) skipped: AtomicU64,
}

impl Breaker {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; true when this one opened the circuit.
    fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        failures >= self.threshold
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

#[derive(Debug)]
pub(crate) enum Generations {
    Local(AtomicU64),
    Redis {
        pool: deadpool_redis::Pool,
        prefix: String,
        timeout: Duration,
        breaker: Arc<Breaker>,
        lease: Option<Arc<crate::lease::Lease>>,
    },
}

impl Generations {
    pub(crate) fn redis(settings: &RedisSettings) -> anyhow::Result<Self> {
        let mut config = deadpool_redis::Config::from_url(settings.url.clone());
        config.pool = Some(deadpool_redis::PoolConfig {
            max_size: settings.pool_size.max(1),
            timeouts: deadpool_redis::Timeouts {
                wait: Some(settings.timeout),
                create: Some(settings.timeout),
                recycle: Some(settings.timeout),
            },
            ..deadpool_redis::PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .context("invalid Redis URL")?;
        let lease = settings
            .lease
            .map(|l| {
                crate::lease::Lease::new(&settings.url, &settings.prefix, pool.clone(), settings.timeout, l)
                    .map(Arc::new)
            })
            .transpose()?;
        Ok(Self::Redis {
            lease,
            pool,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            breaker: Arc::new(Breaker {
                failures: AtomicU32::new(0),
                open: AtomicBool::new(false),
                threshold: settings.circuit_failures.max(1),
                probe: settings.circuit_probe,
                skipped: AtomicU64::new(0),
            }),
        })
    }

    /// The circuit breaker, when there is Redis to break from.
    pub(crate) fn breaker(&self) -> Option<&Breaker> {
        match self {
            Self::Local(_) => None,
            Self::Redis { breaker, .. } => Some(breaker),
        }
    }

    /// This replica's lease, in the lease mode.
    pub(crate) fn lease(&self) -> Option<&Arc<crate::lease::Lease>> {
        match self {
            Self::Redis { lease, .. } => lease.as_ref(),
            Self::Local(_) => None,
        }
    }

    /// Probes Redis in the background until it answers, then closes the circuit.
    fn probe_until_closed(pool: deadpool_redis::Pool, timeout: Duration, breaker: Arc<Breaker>) {
        tokio::spawn(async move {
            tracing::warn!("Redis keeps failing: circuit open, lookups read the database until it answers");
            loop {
                tokio::time::sleep(breaker.probe).await;
                if ping(&pool, timeout * 10).await.is_ok() {
                    breaker.succeeded();
                    breaker.open.store(false, Ordering::Release);
                    tracing::info!("Redis answers again: circuit closed");
                    return;
                }
            }
        });
    }

    pub(crate) fn key(prefix: &str, name: &str) -> String {
        format!("{prefix}gen:{name}")
    }

    /// The prompt's current generation, as one opaque number.
    ///
    /// In Redis it combines the prompt's counter with the store's *epoch*, a
    /// random value set once per Redis lifetime: when Redis restarts empty,
    /// counters start again from zero, but the epoch changes, so entries
    /// cached before the restart (when a write may have failed to reach Redis)
    /// are never answered again.
    ///
    /// `None` while the circuit is open: Redis is not asked, and the caller
    /// reads the database.
    pub(crate) async fn current(&self, name: &PromptName) -> anyhow::Result<Option<u64>> {
        match self {
            Self::Local(g) => Ok(Some(g.load(Ordering::Acquire))),
            Self::Redis { breaker, .. } if breaker.is_open() => {
                breaker.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Self::Redis {
                pool,
                prefix,
                timeout,
                breaker,
                ..
            } => {
                let epoch_key = format!("{prefix}epoch");
                let key = Self::key(prefix, name.as_str());
                let read = async {
                    let mut conn = pool.get().await.context("no Redis connection")?;
                    let (epoch, counter): (Option<String>, Option<u64>) = redis::cmd("MGET")
                        .arg(&epoch_key)
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .context("Redis MGET failed")?;
                    let epoch = match epoch {
                        Some(e) => e,
                        None => {
                            let mine = format!("{:032x}", rand_u128());
                            // SET NX GET: the epoch another replica set first wins.
                            let theirs: Option<String> = redis::cmd("SET")
                                .arg(&epoch_key)
                                .arg(&mine)
                                .arg("NX")
                                .arg("GET")
                                .query_async(&mut conn)
                                .await
                                .context("Redis SET failed")?;
                            theirs.unwrap_or(mine)
                        }
                    };
                    anyhow::Ok(Some(token(&epoch, counter.unwrap_or(0))))
                };
                let result = tokio::time::timeout(*timeout, read)
                    .await
                    .context("Redis did not answer in time")
                    .and_then(|r| r);
                match &result {
                    Ok(_) => breaker.succeeded(),
                    Err(_) if breaker.failed() => {
                        Self::probe_until_closed(pool.clone(), *timeout, Arc::clone(breaker));
                    }
                    Err(_) => {}
                }
                result
            }
        }
    }

    /// Moves the prompt to a new generation.
    pub(crate) async fn bump(&self, name: &PromptName) -> anyhow::Result<()> {
        match self {
            Self::Local(g) => {
                g.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Self::Redis {
                pool,
                prefix,
                timeout,
                ..
            } => {
                let key = Self::key(prefix, name.as_str());
                let write = async {
                    let mut conn = pool.get().await.context("no Redis connection")?;
                    let _: u64 = conn.incr(&key, 1).await.context("Redis INCR failed")?;
                    anyhow::Ok(())
                };
                // A write is rarer than a read and matters more: give it longer.
                tokio::time::timeout(*timeout * 10, write)
                    .await
                    .context("Redis did not answer in time")?
            }
        }
    }

    /// Whether Redis answers (always true in process).
    pub(crate) async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Self::Local(_) => Ok(()),
            Self::Redis { breaker, .. } if breaker.is_open() => {
                anyhow::bail!("the Redis circuit is open: Redis did not answer the last lookups")
            }
            Self::Redis { pool, timeout, .. } => ping(pool, *timeout * 10).await,
        }
    }
}

async fn ping(pool: &deadpool_redis::Pool, timeout: Duration) -> anyhow::Result<()> {
    let ping = async {
        let mut conn = pool.get().await.context("no Redis connection")?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .context("Redis PING failed")?;
        anyhow::Ok(())
    };
    tokio::time::timeout(timeout, ping)
        .await
        .context("Redis did not answer in time")?
}
