//! Prompt Registry's HTTP shell: configuration, wiring, routes, and the one
//! place where domain errors become HTTP answers.
//!
//! Handlers parse input into domain types, call one service method and map
//! the result. No rule about prompts lives here.

pub mod auth;
pub mod body;
pub mod cli;
pub mod hub;
pub mod ingest;
pub mod mcp;
pub mod metrics;
pub mod middleware;
pub mod problem;
pub mod routes;
pub mod run_stream;
pub mod run_writer;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod ui;
pub mod webhooks;
