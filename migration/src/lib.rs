//! Prompt Registry's schema, as an append-only list of migrations.
//!
//! One set of migrations serves PostgreSQL and SQLite: the schema builder
//! speaks both, and backend-specific SQL appears only where it cannot.
//! Never edit a migration once it is on main; add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_prompts;
mod m20261126_000002_add_prompt_version_counter;
mod m20261127_000003_create_prompt_runs;
mod m20261127_000004_create_api_keys;
mod m20261129_000005_run_latency_micros;
mod m20261130_000006_labels_and_audit;
mod m20261201_000007_composition;
mod m20261202_000008_events;
mod m20261203_000009_webhooks;
mod m20261204_000010_run_trace_link;
mod m20261205_000011_partition_runs;
mod m20261206_000012_console_sessions;
mod m20261207_000013_run_stats_rollups;

/// The monthly partitions of `prompt_runs` on PostgreSQL, which the server
/// keeps ahead of time (see migration 11).
pub mod partitions {
    pub use super::m20261205_000011_partition_runs::{
        MONTHS_AHEAD, create_partition_sql, next_month, partition_name,
    };
}

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_prompts::Migration),
            Box::new(m20261126_000002_add_prompt_version_counter::Migration),
            Box::new(m20261127_000003_create_prompt_runs::Migration),
            Box::new(m20261127_000004_create_api_keys::Migration),
            Box::new(m20261129_000005_run_latency_micros::Migration),
            Box::new(m20261130_000006_labels_and_audit::Migration),
            Box::new(m20261201_000007_composition::Migration),
            Box::new(m20261202_000008_events::Migration),
            Box::new(m20261203_000009_webhooks::Migration),
            Box::new(m20261204_000010_run_trace_link::Migration),
            Box::new(m20261205_000011_partition_runs::Migration),
            Box::new(m20261206_000012_console_sessions::Migration),
            Box::new(m20261207_000013_run_stats_rollups::Migration),
        ]
    }
}
