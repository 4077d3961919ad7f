//! Caches for the domain's `VersionCache` port.
//!
//! Both implementations keep version bodies in this process (moka, bounded,
//! with single flight on misses, and a per-thread copy of recent hits in
//! front of it) under a key that includes a *generation*.
//! Invalidating a prompt moves to a new generation, so entries loaded before
//! the invalidation are never answered again — even one whose load was still
//! in flight when the write committed. They differ in where the generation
//! lives:
//!
//! - [`TieredCache::in_process`]: one counter in this process. Coherent for a
//!   single replica; other replicas see a change when their entries expire.
//! - [`TieredCache::with_redis`], lease mode (the default): one counter in
//!   this process, served from only while this replica holds a lease in
//!   Redis and its subscription to invalidations is up; a write returns once
//!   every other lease holder has moved to a new generation or lost its
//!   lease (see the `lease` module). No round trip per read.
//! - [`TieredCache::with_redis`], check mode, and the lease mode while its
//!   lease or subscription is down: one counter per prompt in Redis, read on
//!   every lookup (one round trip) and incremented on every write. Every
//!   replica sharing the Redis sees a change as soon as the write has
//!   returned. When Redis is down or slow the cache fails open: lookups go
//!   to the database, a rate-limited warning is logged, and the failure is
//!   counted.

//!
//! [`Cache`] is the one type a deployment holds: the mode it was started in
//! ([`CacheMode`]: off, in process, or Redis), behind the same port.

mod choice;
mod generation;
mod lease;
mod tiered;

pub use choice::{Cache, CacheConfig, CacheHealth, CacheMode};
pub use generation::RedisSettings;
pub use lease::LeaseSettings;
pub use tiered::{CacheCounters, TieredCache};
