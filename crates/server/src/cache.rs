//! The cache chosen at startup, behind the domain's `VersionCache` port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use registry_cache::{CacheCounters, RedisSettings, TieredCache};
use registry_domain::prompt::ports::{CacheKey, Cached, Load, VersionCache};
use registry_domain::prompt::{PromptError, PromptName, PromptVersion};

use crate::settings::{CacheMode, Settings};

#[derive(Debug)]
pub enum AppCache {
    Off,
    /// Boxed: the cache is large and chosen once, the `Off` variant tiny.
    Tiered(Box<TieredCache>),
}

/// How the cache is doing, for `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHealth {
    Off,
    InProcess,
    RedisOk,
    /// Redis does not answer: reads go to the database.
    RedisDegraded,
}

impl CacheHealth {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::InProcess => "in_process",
            Self::RedisOk => "ok",
            Self::RedisDegraded => "degraded",
        }
    }
}

impl AppCache {
    /// # Errors
    /// A malformed Redis URL.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let ttl = Duration::from_secs(settings.cache.ttl_secs.max(1));
        let capacity = settings.cache.capacity.max(1);
        let stale = settings.stale_if_error();
        Ok(match settings.cache_mode() {
            CacheMode::Off => Self::Off,
            CacheMode::Memory => Self::Tiered(Box::new(
                TieredCache::in_process(capacity, ttl).with_stale_if_error(stale),
            )),
            CacheMode::Redis => {
                let redis = RedisSettings {
                    url: settings.redis.url.clone().unwrap_or_default(),
                    prefix: settings.redis.prefix.clone(),
                    timeout: Duration::from_millis(settings.redis.timeout_ms.max(1)),
                    pool_size: settings.redis.pool_size,
                    circuit_failures: settings.redis.circuit_failures,
                    circuit_probe: Duration::from_millis(settings.redis.circuit_probe_ms.max(1)),
                };
                Self::Tiered(Box::new(
                    TieredCache::with_redis(&redis, capacity, ttl)?.with_stale_if_error(stale),
                ))
            }
        })
    }

    #[must_use]
    pub fn counters(&self) -> CacheCounters {
        match self {
            Self::Off => CacheCounters::default(),
            Self::Tiered(c) => c.counters(),
        }
    }

    pub async fn health(&self) -> CacheHealth {
        match self {
            Self::Off => CacheHealth::Off,
            Self::Tiered(c) if !c.uses_redis() => CacheHealth::InProcess,
            Self::Tiered(c) => match c.ping().await {
                Ok(()) => CacheHealth::RedisOk,
                Err(e) => {
                    // Probes come every few seconds: log once per interval.
                    c.degraded("readiness probe", &e);
                    CacheHealth::RedisDegraded
                }
            },
        }
    }
}

#[async_trait]
impl VersionCache for AppCache {
    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Arc<PromptVersion>, PromptError> {
        match self {
            Self::Off => load.await.map(Arc::new),
            Self::Tiered(c) => c.get_or_load(key, load).await,
        }
    }

    async fn lookup(&self, key: &CacheKey, load: Load<'_>) -> Result<Cached, PromptError> {
        match self {
            Self::Off => load.await.map(|v| Cached::fresh(Arc::new(v))),
            Self::Tiered(c) => c.lookup(key, load).await,
        }
    }

    async fn invalidate(&self, name: &PromptName) {
        match self {
            Self::Off => {}
            Self::Tiered(c) => c.invalidate(name).await,
        }
    }
}
