//! What every handler can reach: the services, chosen once at startup.

use std::sync::Arc;

use registry_domain::auth::AuthService;
use registry_domain::prompt::{PromptService, RenderLimits};
use registry_domain::run::RunService;
use registry_persistence::{Db, SeaOrmApiKeyRepository, SeaOrmPromptRepository, SeaOrmRunRepository};

use crate::cache::AppCache;
use crate::metrics::Metrics;
use crate::run_writer::RunQueue;

/// The cache in front of version reads.
pub type Cache = AppCache;

pub type Prompts = PromptService<SeaOrmPromptRepository, Cache>;
pub type Auth = AuthService<SeaOrmApiKeyRepository>;
pub type Runs = RunService<SeaOrmRunRepository, SeaOrmPromptRepository, Cache>;

#[derive(Debug, Clone)]
pub struct AppState {
    pub prompts: Prompts,
    pub runs: Runs,
    pub run_queue: RunQueue,
    pub cache: Arc<AppCache>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    /// Serialized version bodies by version id and active flag. A version's
    /// content never changes, so its JSON is computed once per state of the
    /// flag; the hot path then only copies bytes.
    pub bodies: moka::future::Cache<(uuid::Uuid, bool), actix_web::web::Bytes>,
    /// Whether `/metrics` answers without a key.
    pub metrics_public: bool,
    pub db: Db,
    /// Most runs accepted by one batch request.
    pub max_batch: usize,
}

impl AppState {
    /// The services over `db`, with runs written in the background through `run_queue`.
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        cache: Arc<AppCache>,
        auth: Arc<Auth>,
        metrics_public: bool,
        run_repo: Arc<SeaOrmRunRepository>,
        run_queue: RunQueue,
        max_batch: usize,
        render: RenderLimits,
    ) -> Self {
        let repo = Arc::new(SeaOrmPromptRepository::new(db.clone()));
        let prompts = PromptService::new(repo, Arc::clone(&cache)).with_limits(render);
        Self {
            runs: RunService::new(run_repo, prompts.clone()),
            prompts,
            run_queue,
            cache,
            auth,
            metrics: Arc::new(Metrics::default()),
            bodies: moka::future::Cache::new(10_000),
            metrics_public,
            db,
            max_batch,
        }
    }
}
