//! Layered, typed configuration: defaults, then `config/{APP_ENV}.toml`, then
//! `APP__SECTION__KEY` environment variables, then the conventional
//! `DATABASE_URL`, `HOST` and `PORT` where the `APP__` form is not set.

use std::fmt;

use anyhow::Context as _;
use config::{Config, Environment, File};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Dev,
    Prod,
}

impl AppEnv {
    fn from_env() -> anyhow::Result<Self> {
        match std::env::var("APP_ENV").as_deref() {
            Err(_) | Ok("" | "dev") => Ok(Self::Dev),
            Ok("prod") => Ok(Self::Prod),
            Ok(other) => anyhow::bail!("APP_ENV must be `dev` or `prod`, not `{other}`"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub env: AppEnv,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub runs: RunSettings,
    pub cache: CacheSettings,
    pub redis: RedisConfig,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub render: RenderSettings,
    pub labels: LabelSettings,
    pub events: EventSettings,
    pub webhooks: WebhookSettings,
}

/// The change-event stream.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct EventSettings {
    /// How often the outbox is read for changes made through other replicas
    /// (changes made through this one are pushed at once).
    pub poll_ms: u64,
    /// How often an idle stream gets a comment line, so proxies keep it open.
    pub heartbeat_secs: u64,
}

/// Webhook delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// Run the dispatcher in this process (every replica may).
    pub dispatch: bool,
    /// Accept endpoints on loopback, private and link-local addresses.
    /// Unset: yes in dev, no in prod.
    pub allow_private_targets: Option<bool>,
    /// The longest one delivery attempt may take.
    pub timeout_ms: u64,
    /// Most attempts in flight at once per endpoint, per replica.
    pub concurrency: usize,
    /// The first retry's delay; each next one doubles (with jitter), up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A delivery still failing this long after its event is given up.
    pub give_up_after_secs: u64,
    /// An endpoint whose deliveries have all failed for this long is disabled.
    pub disable_after_secs: u64,
    /// How long a replica holds a claimed delivery before another may take it.
    pub lease_ms: u64,
    /// How often the dispatcher looks for due deliveries when nothing wakes it.
    pub poll_ms: u64,
    /// Most bytes of an endpoint's answer that are read (and kept).
    pub max_response_bytes: usize,
}

/// Labels.
#[derive(Debug, Clone, Deserialize)]
pub struct LabelSettings {
    /// Labels protected from the moment they are first set on a prompt
    /// (moving them then needs the `release` scope). Default `["production"]`;
    /// as an environment variable, comma-separated.
    pub protected_by_default: Vec<String>,
}

/// Bounds on templates and renders, so that a small request cannot make a
/// large answer.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct RenderSettings {
    /// Most placeholder occurrences one template may hold.
    pub max_placeholders: usize,
    /// Most bytes one render may produce; more is a 413 naming the limit.
    pub max_output_bytes: usize,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// An admin key accepted as configured (only its hash is kept in memory).
    pub admin_key: Option<Secret>,
    /// Whether `/metrics` answers without a key.
    pub metrics_public: bool,
    /// How long a console session lasts after signing in.
    pub session_hours: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// No cache: every read goes to the database.
    Off,
    /// Versions cached in this process; coherent for one replica.
    Memory,
    /// Versions cached in this process, invalidated through Redis: coherent
    /// across replicas sharing the Redis.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    /// Unset: `redis` when `redis.url` is set, else `memory`.
    pub mode: Option<CacheMode>,
    /// Most versions kept in this process.
    pub capacity: u64,
    /// How long an entry is served before it is read again from the database.
    pub ttl_secs: u64,
    /// While the database is unreachable, an entry past its TTL that no
    /// write has superseded is still served (marked stale) up to this age;
    /// verified API keys are accepted for as long. 0 turns it off.
    pub stale_if_error_secs: u64,
}

#[derive(Clone, Deserialize)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Prefix of every key, so deployments can share a Redis.
    pub prefix: String,
    /// How long a lookup waits for Redis before answering from the database.
    pub timeout_ms: u64,
    pub pool_size: usize,
    /// Failed lookups in a row after which Redis is skipped (circuit open)
    /// and probed in the background instead.
    pub circuit_failures: u32,
    /// How often an open circuit probes Redis.
    pub circuit_probe_ms: u64,
    /// How replicas keep their caches coherent: `lease` (serve from this
    /// process under a lease, invalidated through Redis) or `check` (read the
    /// prompt's generation in Redis on every lookup).
    pub coherence: Coherence,
    /// A replica's lease in Redis; renewed every third of it.
    pub lease_ms: u64,
    /// How long a write waits for other replicas to acknowledge before it
    /// revokes their leases and waits them out.
    pub ack_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coherence {
    Lease,
    Check,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("coherence", &self.coherence)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunSettings {
    /// Runs the background writer holds before `Prefer: respond-async` gets 503.
    pub queue_capacity: usize,
    /// Most runs the background writer inserts in one transaction.
    pub writer_batch_size: usize,
    /// Batches the background writer stores at the same time; also the most
    /// synchronous batch inserts (`POST /v1/runs/batch`) running at once.
    pub writer_concurrency: usize,
    /// Most runs accepted by `POST /v1/runs/batch`.
    pub max_batch: usize,
    /// Keep runs answered 202 in a Redis stream until stored (unset: when
    /// `redis.url` is set). Without it they wait in this process's memory.
    pub durable: Option<bool>,
    /// Most entries (one per request) the Redis stream holds before 503.
    pub stream_capacity: usize,
    /// How long an entry read by a writer may stay unacknowledged before
    /// another replica's writer claims it (its writer is presumed dead).
    pub claim_after_ms: u64,
    /// Longest an append to the stream may take before the request gets 503.
    pub stream_timeout_ms: u64,
    /// The ingestion thread's nice value (0 to 19, Linux): higher gives the
    /// fetch path more of the CPU when both are busy.
    pub ingest_nice: i32,
    /// Runs older than this many days are removed in the background; 0 keeps
    /// them forever.
    pub retention_days: u32,
    /// How often the background job prepares the coming months' partitions
    /// and removes expired runs.
    pub maintenance_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Largest JSON body accepted, in bytes.
    pub json_limit: usize,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Longest a request may take before it is answered 504.
    pub request_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests get to finish.
    pub shutdown_timeout_secs: u64,
}

impl ServerSettings {
    /// How many HTTP workers run: `workers`, or one per core when it is 0.
    #[must_use]
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

#[derive(Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://user:password@host/db`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    /// How long a request waits for a database connection before it is
    /// answered 503: short, so an outage is a fast answer, not a hung one.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations at startup. Unset: yes in dev, no in prod.
    pub migrate: Option<bool>,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for logs.
#[must_use]
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `prompt_registry=debug,info`;
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// Log as JSON lines; unset: JSON in prod, human-readable in dev.
    pub json: Option<bool>,
}

impl Settings {
    /// Reads the configuration for `APP_ENV` from `config/` in the current
    /// directory and from the environment.
    ///
    /// # Errors
    /// An unreadable file, or a value of the wrong type.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(std::path::Path::new("config"))
    }

    /// As [`Settings::load`], with the configuration files in `dir`.
    ///
    /// # Errors
    /// An unreadable file, or a value of the wrong type.
    pub fn load_from(dir: &std::path::Path) -> anyhow::Result<Self> {
        let env = AppEnv::from_env()?;
        let file = dir.join(env.as_str());
        let conventional =
            |name: &str, app: &str| std::env::var(name).ok().filter(|_| std::env::var(app).is_err());
        let settings: Self = Config::builder()
            .set_default("env", env.as_str())?
            .set_default("server.host", "127.0.0.1")?
            .set_default("server.port", 8080)?
            .set_default("server.json_limit", 1_048_576)?
            .set_default("server.workers", 0)?
            .set_default("server.request_timeout_secs", 30)?
            .set_default("server.shutdown_timeout_secs", 30)?
            .set_default("database.url", "sqlite://data/prompt-registry.db")?
            .set_default("database.max_connections", 16)?
            .set_default("database.connect_timeout_ms", 5_000)?
            .set_default("database.acquire_timeout_ms", 1_000)?
            .set_default("runs.queue_capacity", 10_000)?
            .set_default("runs.writer_batch_size", 2_000)?
            .set_default("runs.writer_concurrency", 2)?
            .set_default("runs.max_batch", 1_000)?
            .set_default("runs.stream_capacity", 100_000)?
            .set_default("runs.claim_after_ms", 30_000)?
            .set_default("runs.stream_timeout_ms", 1_000)?
            .set_default("runs.retention_days", 0)?
            .set_default("runs.ingest_nice", 19)?
            .set_default("runs.maintenance_interval_secs", 3_600)?
            .set_default("cache.capacity", 100_000)?
            .set_default("cache.ttl_secs", 60)?
            .set_default("cache.stale_if_error_secs", 300)?
            .set_default("render.max_placeholders", 1_000)?
            .set_default("render.max_output_bytes", 4 * 1024 * 1024)?
            .set_default("redis.circuit_failures", 3)?
            .set_default("redis.circuit_probe_ms", 500)?
            .set_default("redis.prefix", "prompt-registry:")?
            .set_default("redis.timeout_ms", 50)?
            .set_default("redis.pool_size", 16)?
            .set_default("redis.coherence", "lease")?
            .set_default("redis.lease_ms", 2000)?
            .set_default("redis.ack_timeout_ms", 100)?
            .set_default("auth.metrics_public", true)?
            .set_default("auth.session_hours", 12)?
            .set_default("log.level", "info")?
            .set_default("labels.protected_by_default", vec!["production"])?
            .set_default("events.poll_ms", 250)?
            .set_default("events.heartbeat_secs", 15)?
            .set_default("webhooks.dispatch", true)?
            .set_default("webhooks.timeout_ms", 10_000)?
            .set_default("webhooks.concurrency", 4)?
            .set_default("webhooks.retry_base_ms", 5_000)?
            .set_default("webhooks.retry_max_ms", 3_600_000)?
            .set_default("webhooks.give_up_after_secs", 3 * 86_400)?
            .set_default("webhooks.disable_after_secs", 86_400)?
            .set_default("webhooks.lease_ms", 30_000)?
            .set_default("webhooks.poll_ms", 1_000)?
            .set_default("webhooks.max_response_bytes", 4_096)?
            .add_source(File::from(file).required(false))
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("labels.protected_by_default"),
            )
            .set_override_option("database.url", conventional("DATABASE_URL", "APP__DATABASE__URL"))?
            .set_override_option("server.host", conventional("HOST", "APP__SERVER__HOST"))?
            .set_override_option("redis.url", conventional("REDIS_URL", "APP__REDIS__URL"))?
            .set_override_option("server.port", conventional("PORT", "APP__SERVER__PORT"))?
            .set_override("env", env.as_str())?
            .build()
            .context("cannot read the configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "database.url must start with sqlite:, postgres:// or postgresql://, got `{}`",
                redact_url(url)
            );
        }
        if self.runs.queue_capacity == 0 || self.runs.writer_batch_size == 0 || self.runs.max_batch == 0 {
            anyhow::bail!(
                "runs.queue_capacity, runs.writer_batch_size and runs.max_batch must be at least 1"
            );
        }
        if self.runs.durable == Some(true) && self.redis.url.is_none() {
            anyhow::bail!("runs.durable needs redis.url (or REDIS_URL): the runs are kept in a Redis stream");
        }
        if self.runs.writer_concurrency == 0
            || self.runs.stream_capacity == 0
            || self.runs.claim_after_ms == 0
            || self.runs.stream_timeout_ms == 0
        {
            anyhow::bail!(
                "runs.stream_capacity, runs.claim_after_ms and runs.stream_timeout_ms must be at least 1"
            );
        }
        if self.cache_mode() == CacheMode::Redis && self.redis.url.is_none() {
            anyhow::bail!("cache.mode is redis but no redis.url (or REDIS_URL) is set");
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://"))
        {
            anyhow::bail!("redis.url must start with redis://, got `{}`", redact_url(url));
        }
        if !(1..=720).contains(&self.auth.session_hours) {
            anyhow::bail!("auth.session_hours must be between 1 and 720");
        }
        if let Some(key) = &self.auth.admin_key
            && key.expose().len() < 32
        {
            anyhow::bail!("auth.admin_key must be at least 32 characters");
        }
        if self.server.request_timeout_secs == 0 {
            anyhow::bail!("server.request_timeout_secs must be at least 1");
        }
        if self.server.json_limit == 0 {
            anyhow::bail!("server.json_limit must be at least 1 byte");
        }
        if self.render.max_placeholders == 0 || self.render.max_output_bytes == 0 {
            anyhow::bail!("render.max_placeholders and render.max_output_bytes must be at least 1");
        }
        let w = &self.webhooks;
        if self.events.poll_ms == 0 || self.events.heartbeat_secs == 0 {
            anyhow::bail!("events.poll_ms and events.heartbeat_secs must be at least 1");
        }
        if w.timeout_ms == 0
            || w.concurrency == 0
            || w.retry_base_ms == 0
            || w.lease_ms <= w.timeout_ms
            || w.poll_ms == 0
        {
            anyhow::bail!(
                "webhooks: timeout_ms, concurrency, retry_base_ms and poll_ms must be at least 1, and lease_ms longer than timeout_ms"
            );
        }
        if self.redis.circuit_failures == 0 {
            anyhow::bail!("redis.circuit_failures must be at least 1");
        }
        if self.redis.lease_ms < 300
            || self.redis.ack_timeout_ms == 0
            || self.redis.ack_timeout_ms >= self.redis.lease_ms
        {
            anyhow::bail!(
                "redis.lease_ms must be at least 300, and redis.ack_timeout_ms at least 1 and shorter than it"
            );
        }
        self.label_policy()?;
        Ok(())
    }

    /// Whether webhook endpoints may be on private addresses.
    #[must_use]
    pub fn allow_private_targets(&self) -> bool {
        self.webhooks
            .allow_private_targets
            .unwrap_or(self.env == AppEnv::Dev)
    }

    /// Which labels are protected when first set.
    ///
    /// # Errors
    /// A name in `labels.protected_by_default` that is not a label.
    pub fn label_policy(&self) -> anyhow::Result<registry_domain::prompt::ports::LabelPolicy> {
        let protected_by_default = self
            .labels
            .protected_by_default
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                registry_domain::prompt::LabelName::new(l.trim())
                    .map_err(|e| anyhow::anyhow!("labels.protected_by_default: `{l}`: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(registry_domain::prompt::ports::LabelPolicy { protected_by_default })
    }

    /// Whether pending migrations are applied at startup.
    #[must_use]
    pub fn migrate_on_start(&self) -> bool {
        self.database.migrate.unwrap_or(self.env == AppEnv::Dev)
    }

    /// The render limits the domain enforces.
    #[must_use]
    pub fn render_limits(&self) -> registry_domain::prompt::RenderLimits {
        registry_domain::prompt::RenderLimits {
            max_placeholders: self.render.max_placeholders,
            max_output_bytes: self.render.max_output_bytes,
        }
    }

    /// How long past its TTL an entry (or a verified key) may serve while
    /// the database is unreachable.
    #[must_use]
    pub fn stale_if_error(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cache.stale_if_error_secs)
    }

    /// Whether runs answered 202 are kept in the Redis stream until stored.
    #[must_use]
    pub fn durable_runs(&self) -> bool {
        self.runs.durable.unwrap_or(self.redis.url.is_some())
    }

    /// The cache to run with.
    #[must_use]
    pub fn cache_mode(&self) -> CacheMode {
        self.cache.mode.unwrap_or(if self.redis.url.is_some() {
            CacheMode::Redis
        } else {
            CacheMode::Memory
        })
    }

    /// Whether logs are JSON lines.
    #[must_use]
    pub fn json_logs(&self) -> bool {
        self.log.json.unwrap_or(self.env == AppEnv::Prod)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
