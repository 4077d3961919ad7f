//! SeaORM adapter: Prompt Registry's repositories on PostgreSQL and SQLite.
//!
//! This crate owns the translation between rows and domain types, and between
//! storage facts (unique violations, missing rows, transient failures) and the
//! domain's errors. No `DbErr` leaves it except inside `Unknown`.

mod audit;
mod db;
mod events;
mod keys;
mod nul;
mod prompts;
mod rollups;
mod runs;
mod schema;
mod sessions;
#[cfg(feature = "testing")]
pub mod testing;
mod webhooks;

pub use audit::SeaOrmAuditLog;
pub use db::{Db, DbOptions, WARM_CONNECTIONS};
pub use events::SeaOrmEventLog;
pub use keys::SeaOrmApiKeyRepository;
pub use prompts::SeaOrmPromptRepository;
pub use runs::SeaOrmRunRepository;
pub use sessions::SeaOrmSessionRepository;
pub use webhooks::SeaOrmWebhookRepository;
