//! What every handler can reach: the services, chosen once at startup.

use registry_domain::prompt::PromptService;
use registry_domain::prompt::ports::NoCache;
use registry_persistence::{Db, SeaOrmPromptRepository};

/// The cache in front of version reads.
pub type Cache = NoCache;

pub type Prompts = PromptService<SeaOrmPromptRepository, Cache>;

#[derive(Debug, Clone)]
pub struct AppState {
    pub prompts: Prompts,
    pub db: Db,
}

impl AppState {
    #[must_use]
    pub fn new(db: Db) -> Self {
        let repo = std::sync::Arc::new(SeaOrmPromptRepository::new(db.clone()));
        Self {
            prompts: PromptService::new(repo, std::sync::Arc::new(NoCache)),
            db,
        }
    }
}
