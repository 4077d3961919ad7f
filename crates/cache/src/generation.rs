//! Where generations come from: this process, or Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::redis::{self, AsyncCommands as _};
use registry_domain::prompt::PromptName;

fn rand_u128() -> u128 {
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
}

#[derive(Debug)]
pub(crate) enum Generations {
    Local(AtomicU64),
    Redis {
        pool: deadpool_redis::Pool,
        prefix: String,
        timeout: Duration,
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
        Ok(Self::Redis {
            pool,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
        })
    }

    fn key(prefix: &str, name: &PromptName) -> String {
        format!("{prefix}gen:{name}")
    }

    /// The prompt's current generation, as one opaque number.
    ///
    /// In Redis it combines the prompt's counter with the store's *epoch*, a
    /// random value set once per Redis lifetime: when Redis restarts empty,
    /// counters start again from zero, but the epoch changes, so entries
    /// cached before the restart (when a write may have failed to reach Redis)
    /// are never answered again.
    pub(crate) async fn current(&self, name: &PromptName) -> anyhow::Result<u64> {
        match self {
            Self::Local(g) => Ok(g.load(Ordering::Acquire)),
            Self::Redis {
                pool,
                prefix,
                timeout,
            } => {
                let epoch_key = format!("{prefix}epoch");
                let key = Self::key(prefix, name);
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
                    anyhow::Ok(token(&epoch, counter.unwrap_or(0)))
                };
                tokio::time::timeout(*timeout, read)
                    .await
                    .context("Redis did not answer in time")?
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
            } => {
                let key = Self::key(prefix, name);
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
            Self::Redis { pool, timeout, .. } => {
                let ping = async {
                    let mut conn = pool.get().await.context("no Redis connection")?;
                    let _: String = redis::cmd("PING")
                        .query_async(&mut conn)
                        .await
                        .context("Redis PING failed")?;
                    anyhow::Ok(())
                };
                tokio::time::timeout(*timeout * 10, ping)
                    .await
                    .context("Redis did not answer in time")?
            }
        }
    }
}
