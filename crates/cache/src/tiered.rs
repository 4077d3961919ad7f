//! Version bodies in this process, keyed by generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use registry_domain::prompt::ports::{CacheKey, Cached, Load, VersionCache};
use registry_domain::prompt::{PromptError, PromptName, Resolution, VersionSelector};

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
    /// Lookups that skipped Redis because its circuit was open.
    pub redis_skipped: u64,
    /// Entries served past their TTL because the database was unreachable.
    pub stale_served: u64,
}

/// (served under the lease, generation, key): the two tiers' generations
/// never meet.
type Key = (bool, u64, CacheKey);

/// Entries one worker thread keeps, at most, in front of the shared cache.
const FRONT_CAPACITY: usize = 4096;

/// A [`FRONT`] entry's key: the cache it belongs to and its [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FrontKey {
    cache: u64,
    leased: bool,
    generation: u64,
    name: PromptName,
    selector: VersionSelector,
}

/// A [`FrontKey`] with the name borrowed, to look one up without building
/// it. Its fields hash in the same order as `FrontKey`'s (both derived).
#[derive(Hash)]
struct FrontRef<'a> {
    cache: u64,
    leased: bool,
    generation: u64,
    name: &'a PromptName,
    selector: VersionSelector,
}

impl hashbrown::Equivalent<FrontKey> for FrontRef<'_> {
    fn equivalent(&self, key: &FrontKey) -> bool {
        self.cache == key.cache
            && self.leased == key.leased
            && self.generation == key.generation
            && self.selector == key.selector
            && *self.name == key.name
    }
}

thread_local! {
    /// A copy of the entries this thread served lately, by cache and key,
    /// with when each was loaded: a hit here costs one hash and no atomic,
    /// lock or allocation, where the shared cache records every read for its
    /// eviction policy (about a tenth of the cached fetch). Keys carry the
    /// generation, so an entry a write superseded is never found here
    /// either; and an entry past its TTL is not served. Cleared when full.
    static FRONT: std::cell::RefCell<hashbrown::HashMap<FrontKey, (Resolution, Instant)>> =
        std::cell::RefCell::new(hashbrown::HashMap::new());
}

/// Tells each cache's entries in [`FRONT`] apart.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct TieredCache {
    /// This cache among those of the process, in [`FRONT`].
    id: u64,
    /// Each entry with when it was loaded.
    entries: moka::future::Cache<Key, (Resolution, Instant)>,
    /// The last good load of each key, kept `ttl + stale_if_error` for
    /// answering while the database is unreachable. Keyed like `entries`, by
    /// generation: an entry a write has superseded is never found here.
    last_good: Option<moka::future::Cache<Key, (Resolution, Instant)>>,
    ttl: Duration,
    generations: Arc<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
    redis_errors: AtomicU64,
    stale_served: AtomicU64,
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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            last_good: None,
            ttl,
            generations: Arc::new(generations),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Serve an entry up to `max_age` past its TTL while the database is
    /// unreachable (stale-if-error), as long as no write has superseded it.
    /// `Duration::ZERO` keeps it off.
    #[must_use]
    pub fn with_stale_if_error(mut self, max_age: Duration) -> Self {
        self.last_good = (!max_age.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(self.entries.policy().max_capacity().unwrap_or(10_000))
                .time_to_live(self.ttl.saturating_add(max_age))
                .build()
        });
        self
    }

    #[must_use]
    pub fn counters(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
            redis_skipped: self
                .generations
                .breaker()
                .map_or(0, |b| b.skipped.load(Ordering::Relaxed)),
            stale_served: self.stale_served.load(Ordering::Relaxed),
        }
    }

    /// Whether this cache uses Redis.
    #[must_use]
    pub fn uses_redis(&self) -> bool {
        matches!(*self.generations, Generations::Redis { .. })
    }

    /// Starts holding a lease (in the lease mode), waiting up to `wait` for
    /// the first one; until then reads check Redis.
    pub async fn start(&self, wait: Duration) {
        if let Some(lease) = self.generations.lease() {
            lease.start(wait).await;
        }
    }

    /// In the lease mode, whether reads are served under a valid lease now.
    #[must_use]
    pub fn lease_valid(&self) -> Option<bool> {
        self.generations.lease().map(|l| l.is_valid())
    }

    /// Whether the shared store answers (always, in process).
    ///
    /// # Errors
    /// Why Redis does not answer.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.generations.ping().await
    }

    /// Records that Redis failed `what`: counted every time, logged at most
    /// once per interval, so an outage does not flood the log.
    pub fn degraded(&self, what: &str, err: &anyhow::Error) {
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
        PromptError::Invalid(errors) => PromptError::Invalid(errors.clone()),
        PromptError::LabelNotFound { name, label } => PromptError::LabelNotFound {
            name: name.clone(),
            label: *label,
        },
        PromptError::LabelMoved {
            label,
            current,
            revision,
        } => PromptError::LabelMoved {
            label: *label,
            current: current.clone(),
            revision: *revision,
        },
        PromptError::Protected(l) => PromptError::Protected(*l),
        PromptError::AdminOnly(l) => PromptError::AdminOnly(*l),
        PromptError::NothingToRollBack(l) => PromptError::NothingToRollBack(*l),
        PromptError::Breaking { label, reasons } => PromptError::Breaking {
            label: *label,
            reasons: reasons.clone(),
        },
        PromptError::HasDependents { name, dependents } => PromptError::HasDependents {
            name: name.clone(),
            dependents: dependents.clone(),
        },
        PromptError::Unavailable(e) => PromptError::Unavailable(anyhow::anyhow!("{e:#}")),
        PromptError::Unknown(e) => PromptError::Unknown(anyhow::anyhow!("{e:#}")),
    }
}

#[async_trait]
impl VersionCache for TieredCache {
    async fn get_or_load(&self, key: &CacheKey, load: Load<'_>) -> Result<Resolution, PromptError> {
        self.lookup(key, load).await.map(|c| c.resolution)
    }

    fn peek(&self, name: &PromptName, selector: VersionSelector) -> Option<Resolution> {
        let (leased, generation) = self.generation_now()?;
        let resolution = self.front(&FrontRef {
            cache: self.id,
            leased,
            generation,
            name,
            selector,
        })?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(resolution)
    }

    async fn lookup(&self, key: &CacheKey, load: Load<'_>) -> Result<Cached, PromptError> {
        if let Some((leased, generation)) = self.generation_now() {
            return self.lookup_at((leased, generation, key.clone()), load).await;
        }
        let generation = match self.generations.current(&key.name).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                // The Redis circuit is open: the database answers.
                self.misses.fetch_add(1, Ordering::Relaxed);
                return load.await.map(Cached::fresh);
            }
            Err(e) => {
                self.degraded("cache lookup", &e);
                self.misses.fetch_add(1, Ordering::Relaxed);
                return load.await.map(Cached::fresh);
            }
        };
        self.lookup_at((false, generation, key.clone()), load).await
    }

    async fn invalidate(&self, name: &PromptName) {
        let Some(lease) = self.generations.lease() else {
            return self.bump(name).await;
        };
        // The invalidation moves the prompt's generation in Redis too.
        if let Err(e) = lease.invalidate(name.as_str()).await {
            // Nobody can be told: every other replica's lease ends within a
            // period, unless it renews it, which it can only do with Redis
            // answering, and then it also receives the next invalidation.
            // Replicas reading without a lease need the generation moved:
            // that is retried in the background until Redis answers.
            self.degraded("cache invalidation", &e);
            tokio::join!(self.bump(name), tokio::time::sleep(lease.full_wait()));
        }
    }
}

impl TieredCache {
    /// The generation to key entries by, when it is known without asking
    /// Redis: this process's counter, or the lease's while it is valid. The
    /// flag says whether it is the lease's.
    fn generation_now(&self) -> Option<(bool, u64)> {
        match &*self.generations {
            Generations::Local(g) => Some((false, g.load(Ordering::Acquire))),
            Generations::Redis { lease, .. } => Some((true, lease.as_ref()?.generation()?)),
        }
    }

    /// This thread's copy of an entry, unless it is past its TTL.
    fn front(&self, key: &FrontRef<'_>) -> Option<Resolution> {
        FRONT.with_borrow(|front| {
            front
                .get(key)
                .filter(|(_, loaded_at)| loaded_at.elapsed() < self.ttl)
                .map(|(resolution, _)| resolution.clone())
        })
    }

    async fn lookup_at(&self, entry_key: Key, load: Load<'_>) -> Result<Cached, PromptError> {
        let (leased, generation, ref key) = entry_key;
        let front_ref = FrontRef {
            cache: self.id,
            leased,
            generation,
            name: &key.name,
            selector: key.selector,
        };
        if let Some(resolution) = self.front(&front_ref) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Cached::fresh(resolution));
        }
        let entry_key = &entry_key;
        let loaded = AtomicBool::new(false);
        let result = self
            .entries
            .try_get_with(entry_key.clone(), async {
                loaded.store(true, Ordering::Relaxed);
                let resolution = load.await?;
                let now = Instant::now();
                if let Some(last_good) = &self.last_good {
                    last_good
                        .insert(entry_key.clone(), (resolution.clone(), now))
                        .await;
                }
                Ok((resolution, now))
            })
            .await;
        let counter = if loaded.load(Ordering::Relaxed) {
            &self.misses
        } else {
            &self.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((resolution, loaded_at)) => {
                FRONT.with_borrow_mut(|front| {
                    if front.len() >= FRONT_CAPACITY {
                        front.clear();
                    }
                    let front_key = FrontKey {
                        cache: self.id,
                        leased,
                        generation,
                        name: key.name.clone(),
                        selector: key.selector,
                    };
                    front.insert(front_key, (resolution.clone(), loaded_at));
                });
                Ok(Cached::fresh(resolution))
            }
            Err(e) => {
                if matches!(*e, PromptError::Unavailable(_))
                    && let Some(last_good) = &self.last_good
                    && let Some((resolution, loaded_at)) = last_good.get(entry_key).await
                {
                    // Same generation: no write has happened since this was
                    // loaded, so it is still the current answer.
                    self.stale_served.fetch_add(1, Ordering::Relaxed);
                    return Ok(Cached {
                        resolution,
                        stale_age: Some(loaded_at.elapsed()),
                    });
                }
                Err(unshare(&e))
            }
        }
    }

    /// Moves the prompt's generation in Redis (or this process), retrying
    /// in the background when Redis does not answer.
    async fn bump(&self, name: &PromptName) {
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
