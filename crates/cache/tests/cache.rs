//! The cache contract, in process and through a real Redis (`TEST_REDIS_URL`).

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use registry_cache::{RedisSettings, TieredCache};
use registry_domain::prompt::ports::{CacheKey, VersionCache};
use registry_domain::prompt::{
    PromptError, PromptName, PromptVersion, Resolution, Template, Variables, VersionNumber, VersionSelector,
};
use registry_persistence::testing::OwnRedis;
use tokio::sync::Notify;

fn name(s: &str) -> PromptName {
    PromptName::new(s).expect("valid name")
}

fn version(n: u32) -> Resolution {
    Resolution::Version(std::sync::Arc::new(PromptVersion {
        id: uuid::Uuid::now_v7(),
        prompt_id: uuid::Uuid::nil(),
        prompt_name: name("p"),
        version: VersionNumber::new(i64::from(n)).expect("valid"),
        template: Template::parse(None, &serde_json::json!("t")).expect("valid"),
        variables: Variables::default(),
        config: serde_json::Map::new(),
        is_active: true,
        commit_message: None,
        created_at: registry_domain::time::now_utc(),
        includes: Vec::new(),
        source: None,
    }))
}

/// The number of the version a resolution holds.
fn number(r: &Resolution) -> u32 {
    match r {
        Resolution::Version(v) => v.version.get(),
        Resolution::Split(arms) => arms.first().map_or(0, |(_, v)| v.version.get()),
    }
}

fn active(prompt: &str) -> CacheKey {
    CacheKey {
        name: name(prompt),
        selector: VersionSelector::ACTIVE,
    }
}

fn redis_settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        timeout: Duration::from_millis(200),
        pool_size: 4,
        circuit_failures: 3,
        circuit_probe: Duration::from_millis(100),
        // The per-read check: the lease mode has tests of its own below.
        lease: None,
    }
}

#[derive(Clone)]
enum Store {
    InProcess,
    Redis(String),
}

impl Store {
    /// The Redis at `TEST_REDIS_URL`; tests that need it are compiled as
    /// ignored without it (see `build.rs`).
    fn redis() -> Self {
        match std::env::var("TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Self::Redis(url),
            _ => panic!("TEST_REDIS_URL is not set: this Redis test cannot run"),
        }
    }

    /// A cache with a key prefix of its own, so parallel tests never meet.
    fn cache(&self, prefix: &str) -> TieredCache {
        self.cache_with_ttl(prefix, Duration::from_secs(60))
    }

    fn cache_with_ttl(&self, prefix: &str, ttl: Duration) -> TieredCache {
        match self {
            Self::InProcess => TieredCache::in_process(1_000, ttl),
            Self::Redis(url) => {
                TieredCache::with_redis(&redis_settings(url, prefix), 1_000, ttl).expect("valid Redis URL")
            }
        }
    }
}

fn prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

async fn lookup(cache: &TieredCache, key: &CacheKey, loads: &AtomicU32, n: u32) -> Result<u32, PromptError> {
    let load = Box::pin(async move {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(version(n))
    });
    cache.get_or_load(key, load).await.map(|v| number(&v))
}

async fn concurrent_misses_on_one_key_load_once(store: Store) {
    let cache = store.cache(&prefix());
    let loads = AtomicU32::new(0);
    let key = active("hot");
    let answers = futures::future::join_all((0..64).map(|_| lookup(&cache, &key, &loads, 1))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(1))));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one load for 64 concurrent misses"
    );
    let c = cache.counters();
    assert_eq!((c.misses, c.hits), (1, 63));
}

async fn an_invalidation_makes_the_next_lookup_load_again(store: Store) {
    let cache = store.cache(&prefix());
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&cache, &active("p"), &loads, 1).await.ok(), Some(1));
    assert_eq!(
        lookup(&cache, &active("p"), &loads, 9).await.ok(),
        Some(1),
        "served from the cache"
    );
    cache.invalidate(&name("p")).await;
    assert_eq!(lookup(&cache, &active("p"), &loads, 2).await.ok(), Some(2));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

async fn a_load_in_flight_during_an_invalidation_is_never_served_after_it(store: Store) {
    let cache = Arc::new(store.cache(&prefix()));
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = {
        let (cache, started, release) = (Arc::clone(&cache), Arc::clone(&started), Arc::clone(&release));
        tokio::spawn(async move {
            let load = Box::pin(async move {
                started.notify_one();
                release.notified().await;
                Ok(version(1))
            });
            cache.get_or_load(&active("p"), load).await.map(|v| number(&v))
        })
    };
    started.notified().await;
    // The write commits (version 2) and invalidates while the old load is in flight.
    cache.invalidate(&name("p")).await;
    release.notify_one();
    assert_eq!(
        slow.await.expect("task").ok(),
        Some(1),
        "the old reader gets what it loaded"
    );
    let loads = AtomicU32::new(0);
    assert_eq!(
        lookup(&cache, &active("p"), &loads, 2).await.ok(),
        Some(2),
        "later readers never see it"
    );
}

async fn a_failed_load_is_not_cached(store: Store) {
    let cache = store.cache(&prefix());
    let missing = || {
        Box::pin(async {
            Err(PromptError::VersionNotFound {
                name: name("p"),
                selector: VersionSelector::ACTIVE,
            })
        })
    };
    assert!(cache.get_or_load(&active("p"), missing()).await.is_err());
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&cache, &active("p"), &loads, 1).await.ok(), Some(1));
}

async fn stale_lookup(
    cache: &TieredCache,
    key: &CacheKey,
    outcome: Result<u32, ()>,
) -> (Result<u32, String>, bool) {
    let load = Box::pin(async move {
        outcome
            .map(version)
            .map_err(|()| PromptError::Unavailable(anyhow::anyhow!("connection refused")))
    });
    match cache.lookup(key, load).await {
        Ok(c) => (Ok(number(&c.resolution)), c.stale_age.is_some()),
        Err(e) => (Err(e.to_string()), false),
    }
}

async fn an_expired_entry_is_served_stale_while_the_database_is_down_but_never_after_a_write(store: Store) {
    let cache = store
        .cache_with_ttl(&prefix(), Duration::from_millis(50))
        .with_stale_if_error(Duration::from_secs(60));
    let key = active("p");
    assert_eq!(stale_lookup(&cache, &key, Ok(1)).await, (Ok(1), false));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        stale_lookup(&cache, &key, Err(())).await,
        (Ok(1), true),
        "past its TTL, the database down: the last good answer, marked stale"
    );
    assert_eq!(cache.counters().stale_served, 1);
    // A write supersedes it: never served again, even with the database down.
    cache.invalidate(&name("p")).await;
    let (answer, _) = stale_lookup(&cache, &key, Err(())).await;
    assert!(answer.is_err(), "{answer:?}");
    // Another kind of failure is not an outage: no stale answer either.
    let other = active("q");
    assert_eq!(stale_lookup(&cache, &other, Ok(3)).await, (Ok(3), false));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let load = Box::pin(async { Err(PromptError::Unknown(anyhow::anyhow!("corrupt row"))) });
    assert!(cache.lookup(&other, load).await.is_err());
}

async fn without_stale_if_error_an_outage_is_an_error(store: Store) {
    let cache = store.cache_with_ttl(&prefix(), Duration::from_millis(50));
    let key = active("p");
    assert_eq!(stale_lookup(&cache, &key, Ok(1)).await, (Ok(1), false));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (answer, _) = stale_lookup(&cache, &key, Err(())).await;
    assert!(answer.is_err(), "{answer:?}");
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Store::InProcess).await; } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
               async fn $name() { super::$name(super::Store::redis()).await; } )*
        }
    };
}

store_tests!(
    concurrent_misses_on_one_key_load_once,
    an_invalidation_makes_the_next_lookup_load_again,
    a_load_in_flight_during_an_invalidation_is_never_served_after_it,
    a_failed_load_is_not_cached,
    an_expired_entry_is_served_stale_while_the_database_is_down_but_never_after_a_write,
    without_stale_if_error_an_outage_is_an_error,
);

// One thread, so every lookup after the first meets the thread's own copy
// of the entry in front of the shared cache.
#[tokio::test(flavor = "current_thread")]
async fn an_entry_past_its_ttl_is_loaded_again_on_the_same_thread() {
    let cache = Store::InProcess.cache_with_ttl(&prefix(), Duration::from_millis(100));
    let loads = AtomicU32::new(0);
    let key = active("p");
    assert_eq!(lookup(&cache, &key, &loads, 1).await.ok(), Some(1));
    assert_eq!(
        lookup(&cache, &key, &loads, 2).await.ok(),
        Some(1),
        "within its TTL"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        lookup(&cache, &key, &loads, 3).await.ok(),
        Some(3),
        "past its TTL"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// `peek` answers what `lookup` would, without a load: nothing before the
/// first load, nothing after an invalidation or past the TTL, and never
/// another cache's entry.
#[tokio::test(flavor = "current_thread")]
async fn peek_answers_only_a_current_entry_of_its_own_cache() {
    let cache = Store::InProcess.cache_with_ttl(&prefix(), Duration::from_millis(200));
    let other = Store::InProcess.cache(&prefix());
    let loads = AtomicU32::new(0);
    let (p, selector) = (name("p"), VersionSelector::ACTIVE);
    let peek = |c: &TieredCache| c.peek(&p, selector).map(|r| number(&r));
    assert_eq!(peek(&cache), None, "nothing loaded yet");
    assert_eq!(lookup(&cache, &active("p"), &loads, 1).await.ok(), Some(1));
    let hits = cache.counters().hits;
    assert_eq!(peek(&cache), Some(1));
    assert_eq!(cache.counters().hits, hits + 1, "a peek that answers is a hit");
    assert_eq!(peek(&other), None, "another cache's entry");
    assert_eq!(
        cache.peek(&p, VersionSelector::Latest).map(|r| number(&r)),
        None,
        "another selector"
    );
    cache.invalidate(&p).await;
    assert_eq!(peek(&cache), None, "after an invalidation");
    assert_eq!(lookup(&cache, &active("p"), &loads, 2).await.ok(), Some(2));
    assert_eq!(peek(&cache), Some(2));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(peek(&cache), None, "past its TTL");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn two_caches_on_one_thread_never_answer_with_each_others_entries() {
    let (a, b) = (
        Store::InProcess.cache(&prefix()),
        Store::InProcess.cache(&prefix()),
    );
    let loads = AtomicU32::new(0);
    let key = active("p");
    assert_eq!(lookup(&a, &key, &loads, 1).await.ok(), Some(1));
    assert_eq!(lookup(&b, &key, &loads, 2).await.ok(), Some(2));
    assert_eq!(lookup(&a, &key, &loads, 3).await.ok(), Some(1));
    assert_eq!(lookup(&b, &key, &loads, 4).await.ok(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn replicas_sharing_redis_see_each_others_invalidations() {
    let Store::Redis(url) = Store::redis() else {
        unreachable!("Store::redis is Redis");
    };
    let shared = prefix();
    let (a, b) = (
        Store::Redis(url.clone()).cache(&shared),
        Store::Redis(url).cache(&shared),
    );
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&b, &active("p"), &loads, 1).await.ok(), Some(1));
    assert_eq!(lookup(&b, &active("p"), &loads, 9).await.ok(), Some(1));
    assert!(
        b.peek(&name("p"), VersionSelector::ACTIVE).is_none(),
        "the per-read check asks Redis: no answer without it"
    );
    a.invalidate(&name("p")).await;
    assert_eq!(
        lookup(&b, &active("p"), &loads, 2).await.ok(),
        Some(2),
        "b reloads after a's write"
    );
    assert_eq!(a.counters().redis_errors + b.counters().redis_errors, 0);
}

/// A write through a replica under a lease also moves the prompt's
/// generation in Redis: a replica reading without a lease (its own lease
/// lapsed, or the per-read check configured) sees it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn a_write_under_a_lease_reaches_replicas_that_check_per_read() {
    let Store::Redis(url) = Store::redis() else {
        unreachable!("Store::redis is Redis");
    };
    let shared = prefix();
    let leased = RedisSettings {
        lease: Some(registry_cache::LeaseSettings {
            period: Duration::from_secs(2),
            ack_timeout: Duration::from_millis(500),
        }),
        ..redis_settings(&url, &shared)
    };
    let writer = TieredCache::with_redis(&leased, 1_000, Duration::from_secs(60)).expect("url");
    writer.start(Duration::from_secs(2)).await;
    assert_eq!(writer.lease_valid(), Some(true), "the writer holds a lease");
    let reader = Store::Redis(url).cache(&shared);
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&reader, &active("p"), &loads, 1).await.ok(), Some(1));
    assert_eq!(
        lookup(&reader, &active("p"), &loads, 9).await.ok(),
        Some(1),
        "cached"
    );
    writer.invalidate(&name("p")).await;
    assert_eq!(
        lookup(&reader, &active("p"), &loads, 2).await.ok(),
        Some(2),
        "the reader loads again after the leased write"
    );
    assert_eq!(writer.counters().redis_errors + reader.counters().redis_errors, 0);
}

/// A Redis of the test's own on a free port, and a cache that uses it.
async fn own_redis_cache() -> (OwnRedis, TieredCache) {
    let _ = Store::redis();
    let port = OwnRedis::free_port();
    let redis = OwnRedis::start(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let cache =
        TieredCache::with_redis(&redis_settings(&url, "t:"), 1_000, Duration::from_secs(60)).expect("url");
    (redis, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn the_cache_fails_open_while_redis_is_down_and_uses_it_again_when_it_returns() {
    let (redis, cache) = own_redis_cache().await;
    let port = redis.port;
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&cache, &active("p"), &loads, 1).await.ok(), Some(1));
    assert_eq!(cache.counters().redis_errors, 0);

    redis.stop();
    // Every lookup still answers, from the database, and the failure is counted.
    assert_eq!(lookup(&cache, &active("p"), &loads, 2).await.ok(), Some(2));
    assert_eq!(lookup(&cache, &active("p"), &loads, 3).await.ok(), Some(3));
    assert!(cache.ping().await.is_err());
    assert!(cache.counters().redis_errors >= 2);

    let _redis = OwnRedis::start(port).await;
    let mut recovered = false;
    for _ in 0..50 {
        if cache.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the pool reconnects once Redis is back");
    let errors = cache.counters().redis_errors;
    assert_eq!(
        lookup(&cache, &active("p"), &loads, 4).await.ok(),
        Some(4),
        "a fresh Redis starts a new generation"
    );
    assert_eq!(
        lookup(&cache, &active("p"), &loads, 5).await.ok(),
        Some(4),
        "and caches again"
    );
    assert_eq!(cache.counters().redis_errors, errors);
}

/// Sends a signal to a process (`STOP` freezes it, `CONT` resumes it).
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn a_frozen_redis_opens_the_circuit_and_a_resumed_one_closes_it() {
    let (redis, cache) = own_redis_cache().await;
    let loads = AtomicU32::new(0);
    assert_eq!(lookup(&cache, &active("p"), &loads, 1).await.ok(), Some(1));

    // Frozen, as by SIGSTOP: connections stay open, nothing answers.
    signal(&redis.child, "STOP");
    for n in 1..=100 {
        assert!(
            lookup(&cache, &active("p"), &loads, n).await.is_ok(),
            "every lookup answers"
        );
    }
    let frozen = cache.counters();
    assert!(
        frozen.redis_errors <= 4,
        "after 3 timeouts in a row the circuit opens and Redis is no longer waited for: {frozen:?}"
    );
    assert!(frozen.redis_skipped >= 95, "{frozen:?}");
    assert!(cache.ping().await.is_err(), "readiness sees the open circuit");

    signal(&redis.child, "CONT");
    let mut closed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cache.ping().await.is_ok() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the background probe closes the circuit once Redis answers"
    );
    let before = cache.counters();
    // No write happened: the generation in Redis is unchanged, so the entry
    // cached before the freeze answers again.
    assert_eq!(lookup(&cache, &active("p"), &loads, 7).await.ok(), Some(1));
    let after = cache.counters();
    assert_eq!(after.redis_skipped, before.redis_skipped, "Redis is asked again");
    assert_eq!(after.hits, before.hits + 1, "and the cache answers");
}
