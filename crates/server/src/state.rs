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

/// Rendered version answers by version id and active flag, shared by the
/// workers, with a copy of the entries each worker thread has served in
/// front of it: a hit is one lookup in a map only that thread touches, so
/// the workers never write the same memory to read an answer (a lock taken
/// on every request, even a read lock, moves between the cores each time).
/// A version's answer never changes, so when a map is full it is simply
/// emptied, and answers are rendered again as they are asked for.
#[derive(Debug)]
pub struct Bodies {
    id: u64,
    map: std::sync::RwLock<std::collections::HashMap<(uuid::Uuid, bool), Rendered>>,
    capacity: usize,
}

static NEXT_BODIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's copies, by [`Bodies`] id (several when tests run
    /// servers side by side), version id and active flag.
    static NEAR: std::cell::RefCell<hashbrown::HashMap<(u64, uuid::Uuid, bool), Rendered>> =
        std::cell::RefCell::new(hashbrown::HashMap::new());
}

impl Bodies {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            id: NEXT_BODIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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
        let near = (self.id, key.0, key.1);
        if let Some(found) = NEAR.with_borrow(|m| m.get(&near).cloned()) {
            return Ok(found);
        }
        let shared = self.map.read().ok().and_then(|m| m.get(&key).cloned());
        let rendered = match shared {
            Some(found) => found,
            None => {
                let rendered = render()?;
                if let Ok(mut map) = self.map.write() {
                    if map.len() >= self.capacity {
                        map.clear();
                    }
                    map.insert(key, rendered.clone());
                }
                rendered
            }
        };
        NEAR.with_borrow_mut(|m| {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(near, rendered.clone());
        });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn rendered(text: &'static str) -> Rendered {
        Rendered {
            body: actix_web::web::Bytes::from_static(text.as_bytes()),
            etag: actix_web::http::header::HeaderValue::from_static("\"e\""),
            version: actix_web::http::header::HeaderValue::from_static("1"),
        }
    }

    #[test]
    fn an_answer_is_rendered_once_for_every_thread_until_the_maps_fill() {
        let bodies = Arc::new(Bodies::new(1));
        let renders = Arc::new(AtomicUsize::new(0));
        let ask = |bodies: &Bodies, id: uuid::Uuid| {
            bodies
                .get_or_render((id, true), || {
                    renders.fetch_add(1, Ordering::Relaxed);
                    Ok(rendered("first"))
                })
                .map(|r| r.body)
                .expect("rendered")
        };
        let (one, two) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert_eq!(ask(&bodies, one), "first");
        assert_eq!(ask(&bodies, one), "first");
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(ask(&bodies, one), "first"));
        });
        assert_eq!(
            renders.load(Ordering::Relaxed),
            1,
            "the other thread read the shared map"
        );
        // Another instance on the same thread renders its own.
        let other = Bodies::new(1);
        ask(&other, one);
        assert_eq!(renders.load(Ordering::Relaxed), 2);
        // Full (capacity 1): both maps are emptied for the new answer.
        ask(&bodies, two);
        ask(&bodies, one);
        assert_eq!(renders.load(Ordering::Relaxed), 4);
    }
}
