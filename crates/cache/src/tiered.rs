//! Version bodies in this process, keyed by generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use registry_domain::prompt::ports::{CacheKey, Load, VersionCache};
use registry_domain::prompt::{PromptError, PromptName, PromptVersion};

use crate::generation::{Generations, RedisSettings};

/// How long a failed invalidation is retried, once a second.
const RETRY_INVALIDATION_FOR_SECS: u32 = 60;

/// Seconds between two warnings about Redis.
const WARN_EVERY_SECS: u64 = 10;

/// Counts since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    /// Lookups and invalidations that could not reach Redis.
    pub redis_errors: u64,
}

#[derive(Debug)]
pub struct TieredCache {
    entries: moka::future::Cache<(u64, CacheKey), Arc<PromptVersion>>,
    generations: Arc<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
    redis_errors: AtomicU64,
    last_warning: AtomicU64,
}

impl TieredCache {
    /// A cache for one replica: invalidation is immediate in this process.
    #[must_use]
    pub fn in_process(capacity: u64, ttl: Duration) -> Self {
        Self::new(Generations::Local(AtomicU64::new(0)), capacity, ttl)
    }

    /// A cache coordinated through Redis: invalidation is immediate in every
    /// replica that shares the Redis. No connection is made until first use.
    ///
    /// # Errors
    /// A malformed Redis URL.
    pub fn with_redis(settings: &RedisSettings, capacity: u64, ttl: Duration) -> anyhow::Result<Self> {
        Ok(Self::new(Generations::redis(settings)?, capacity, ttl))
    }

    fn new(generations: Generations, capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            generations: Arc::new(generations),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
        }
    }

    #[must_use]
    pub fn counters(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
        }
    }

    /// Whether this cache uses Redis.
    #[must_use]
    pub fn uses_redis(&self) -> bool {
        matches!(*self.generations, Generations::Redis { .. })
    }

    /// Whether the shared store answers (always, in process).
    ///
    /// # Errors
    /// Why Redis does not answer.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.generations.ping().await
    }

    fn degraded(&self, what: &str, err: &anyhow::Error) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %format!("{err:#}"), "{what}: Redis is unavailable; serving from the database");
        }
    }
}

/// Rebuilds an error shared among single-flight waiters.
fn unshare(err: &PromptError) -> PromptError {
    match err {
        PromptError::Duplicate(n) => PromptError::Duplicate(n.clone()),
        PromptError::NotFound(n) => PromptError::NotFound(n.clone()),
        PromptError::VersionNotFound { name, selector } => PromptError::VersionNotFound {
            name: name.clone(),
            selector: *selector,
        },
        PromptError::Unknown(e) => PromptError::Unknown(anyhow::anyhow!("{e:#}")),
    }
}

#[async_trait]
impl VersionCache for TieredCache {
    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Arc<PromptVersion>, PromptError> {
        let generation = match self.generations.current(&key.name).await {
            Ok(g) => g,
            Err(e) => {
                self.degraded("cache lookup", &e);
                self.misses.fetch_add(1, Ordering::Relaxed);
                return load.await.map(Arc::new);
            }
        };
        let loaded = AtomicBool::new(false);
        let result = self
            .entries
            .try_get_with((generation, key.clone()), async {
                loaded.store(true, Ordering::Relaxed);
                load.await.map(Arc::new)
            })
            .await;
        let counter = if loaded.load(Ordering::Relaxed) {
            &self.misses
        } else {
            &self.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| unshare(&e))
    }

    async fn invalidate(&self, name: &PromptName) {
        if let Err(e) = self.generations.bump(name).await {
            self.degraded("cache invalidation", &e);
            // Other replicas keep their entries until this gets through (or
            // their entries expire): keep trying in the background.
            let (generations, name) = (Arc::clone(&self.generations), name.clone());
            tokio::spawn(async move {
                for attempt in 1..=RETRY_INVALIDATION_FOR_SECS {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if generations.bump(&name).await.is_ok() {
                        tracing::info!(prompt = %name, attempt, "a delayed cache invalidation reached Redis");
                        return;
                    }
                }
                tracing::error!(prompt = %name, "a cache invalidation never reached Redis; other replicas keep their entry until it expires");
            });
        }
    }
}
