//! What every handler can reach: the services, chosen once at startup by
//! the composition root ([`crate::startup::compose`]).

use std::sync::Arc;

use registry_domain::auth::AuthService;
use registry_domain::prompt::PromptService;
use registry_domain::run::RunService;
use registry_persistence::{
    Db, SeaOrmApiKeyRepository, SeaOrmAuditLog, SeaOrmEventLog, SeaOrmPromptRepository, SeaOrmRunRepository,
};

use crate::metrics::Metrics;
use crate::run_writer::RunQueue;

/// The cache in front of version reads.
pub type Cache = registry_cache::Cache;

pub type Prompts = PromptService<SeaOrmPromptRepository, Cache>;
pub type Auth = AuthService<SeaOrmApiKeyRepository>;
pub type Sessions =
    registry_domain::auth::session::SessionService<registry_persistence::SeaOrmSessionRepository>;
pub type Runs = RunService<SeaOrmRunRepository, SeaOrmPromptRepository, Cache, RunQueue>;

/// A version's answer, computed once per (version, active flag): its JSON
/// and its strong validator.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: actix_web::web::Bytes,
    /// The `ETag` header's value, quoted.
    pub etag: actix_web::http::header::HeaderValue,
    /// The `X-Prompt-Version` header's value.
    pub version: actix_web::http::header::HeaderValue,
}

/// Rendered version answers by version id and active flag. A plain map
/// behind a read-write lock: a hit is one hash lookup under a shared lock,
/// with none of a general cache's bookkeeping, on the hottest path there
/// is. A version's answer never changes, so when the map is full it is
/// simply emptied, and answers are rendered again as they are asked for.
#[derive(Debug)]
pub struct Bodies {
    map: std::sync::RwLock<std::collections::HashMap<(uuid::Uuid, bool), Rendered>>,
    capacity: usize,
}

impl Bodies {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            map: std::sync::RwLock::default(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`, rendered by `render` the first time.
    ///
    /// # Errors
    /// What `render` returns.
    pub fn get_or_render(
        &self,
        key: (uuid::Uuid, bool),
        render: impl FnOnce() -> anyhow::Result<Rendered>,
    ) -> anyhow::Result<Rendered> {
        if let Some(found) = self.map.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let rendered = render()?;
        if let Ok(mut map) = self.map.write() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key, rendered.clone());
        }
        Ok(rendered)
    }
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub prompts: Prompts,
    pub runs: Runs,
    /// The asynchronous path's queue, for its depth and counters in `/metrics`.
    pub run_queue: RunQueue,
    pub cache: Arc<Cache>,
    pub auth: Arc<Auth>,
    /// The web console's sign-ins.
    pub sessions: Arc<Sessions>,
    pub console: crate::ui::ConsoleSettings,
    pub metrics: Arc<Metrics>,
    /// Serialized version bodies by version id and active flag. A version's
    /// content never changes, so its JSON is computed once per state of the
    /// flag; the hot path then only copies bytes.
    pub bodies: Arc<Bodies>,
    /// Whether `/metrics` answers without a key.
    pub metrics_public: bool,
    /// The audit log, for reading (changes write it themselves).
    pub audit: Arc<SeaOrmAuditLog>,
    /// The change-event outbox, for reading.
    pub events: Arc<SeaOrmEventLog>,
    /// The events as they commit, for the stream, webhooks and MCP.
    pub hub: Arc<crate::hub::EventHub>,
    /// Webhook endpoints and their deliveries.
    pub webhooks: Arc<registry_persistence::SeaOrmWebhookRepository>,
    /// How webhook attempts are made (for test pings from handlers).
    pub delivery: Arc<crate::webhooks::DeliveryConfig>,
    /// The MCP transport and its sessions, shared by every worker.
    pub mcp: crate::mcp::McpService,
    /// How often an idle event stream gets a heartbeat.
    pub heartbeat: std::time::Duration,
    pub db: Db,
    /// Most runs accepted by one batch request.
    pub max_batch: usize,
    /// Where the CPU work of logging runs is done, off the HTTP workers.
    pub ingest: crate::ingest::Ingest,
}
