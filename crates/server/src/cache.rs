//! The cache chosen at startup, behind the domain's `VersionCache` port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use registry_cache::{CacheCounters, RedisSettings, TieredCache};
use registry_domain::prompt::ports::{CacheKey, Load, VersionCache};
use registry_domain::prompt::{PromptError, PromptName, PromptVersion};

use crate::settings::{CacheMode, Settings};

#[derive(Debug)]
pub enum AppCache {
    Off,
    Tiered(TieredCache),
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
        Ok(match settings.cache_mode() {
            CacheMode::Off => Self::Off,
            CacheMode::Memory => Self::Tiered(TieredCache::in_process(capacity, ttl)),
            CacheMode::Redis => {
                let redis = RedisSettings {
                    url: settings.redis.url.clone().unwrap_or_default(),
                    prefix: settings.redis.prefix.clone(),
                    timeout: Duration::from_millis(settings.redis.timeout_ms.max(1)),
                    pool_size: settings.redis.pool_size,
                };
                Self::Tiered(TieredCache::with_redis(&redis, capacity, ttl)?)
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
                    tracing::warn!(error = %format!("{e:#}"), "readiness: Redis does not answer");
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

    async fn invalidate(&self, name: &PromptName) {
        match self {
            Self::Off => {}
            Self::Tiered(c) => c.invalidate(name).await,
        }
    }
}
