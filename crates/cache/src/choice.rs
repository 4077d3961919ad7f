//! The cache a deployment runs with, chosen once at startup: none, in
//! process, or coordinated through Redis.

use std::time::Duration;

use async_trait::async_trait;
use registry_domain::prompt::ports::{CacheKey, Cached, Load, VersionCache};
use registry_domain::prompt::{PromptError, PromptName, Resolution, VersionSelector};

use crate::generation::RedisSettings;
use crate::tiered::{CacheCounters, TieredCache};

/// Where versions are cached.
#[derive(Debug, Clone)]
pub enum CacheMode {
    /// No cache: every read goes to the database.
    Off,
    /// In this process; coherent for one replica.
    InProcess,
    /// In this process, invalidated through Redis: coherent across replicas.
    Redis(RedisSettings),
}

/// How to build the cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// Most versions kept in this process.
    pub capacity: u64,
    /// How long an entry is served before it is read again.
    pub ttl: Duration,
    /// How long past its TTL an entry no write superseded may be served while
    /// the database is unreachable (zero: never).
    pub stale_if_error: Duration,
}

/// The cache in front of version reads, in whichever mode was chosen.
#[derive(Debug)]
pub enum Cache {
    Off,
    /// Boxed: the cache is large and chosen once, the `Off` variant tiny.
    Tiered(Box<TieredCache>),
}

/// How the cache is doing, for readiness.
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

impl Cache {
    /// # Errors
    /// A malformed Redis URL.
    pub fn new(config: &CacheConfig) -> anyhow::Result<Self> {
        let (capacity, ttl) = (config.capacity.max(1), config.ttl.max(Duration::from_secs(1)));
        let tiered = match &config.mode {
            CacheMode::Off => return Ok(Self::Off),
            CacheMode::InProcess => TieredCache::in_process(capacity, ttl),
            CacheMode::Redis(redis) => TieredCache::with_redis(redis, capacity, ttl)?,
        };
        Ok(Self::Tiered(Box::new(
            tiered.with_stale_if_error(config.stale_if_error),
        )))
    }

    #[must_use]
    pub fn counters(&self) -> CacheCounters {
        match self {
            Self::Off => CacheCounters::default(),
            Self::Tiered(c) => c.counters(),
        }
    }

    /// Starts what runs in the background (the lease, in the lease mode),
    /// waiting up to `wait` for it to be in place.
    pub async fn start(&self, wait: Duration) {
        if let Self::Tiered(c) = self {
            c.start(wait).await;
        }
    }

    /// `degraded` also while reads cannot be served under the lease (none
    /// held, or no subscription): they are correct, one round trip slower.
    pub async fn health(&self) -> CacheHealth {
        match self {
            Self::Off => CacheHealth::Off,
            Self::Tiered(c) if !c.uses_redis() => CacheHealth::InProcess,
            Self::Tiered(c) if c.lease_valid() == Some(false) => CacheHealth::RedisDegraded,
            Self::Tiered(c) => match c.ping().await {
                Ok(()) => CacheHealth::RedisOk,
                Err(e) => {
                    // Probes come every few seconds: logged once per interval.
                    c.degraded("readiness probe", &e);
                    CacheHealth::RedisDegraded
                }
            },
        }
    }
}

#[async_trait]
impl VersionCache for Cache {
    fn peek(&self, name: &PromptName, selector: VersionSelector) -> Option<Resolution> {
        match self {
            Self::Off => None,
            Self::Tiered(c) => c.peek(name, selector),
        }
    }

    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Resolution, PromptError> {
        match self {
            Self::Off => load.await,
            Self::Tiered(c) => c.get_or_load(key, load).await,
        }
    }

    async fn lookup(&self, key: &CacheKey, load: Load<'_>) -> Result<Cached, PromptError> {
        match self {
            Self::Off => load.await.map(Cached::fresh),
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
