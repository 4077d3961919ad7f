//! API tests: the real server on port 0, over HTTP, on SQLite and (when
//! `TEST_DATABASE_URL` is set) on PostgreSQL, each test with its own database.

mod auth;
mod authoring;
mod coherence;
mod console;
mod durable;
mod errors;
mod faults;
mod health;
mod helpers;
mod labels;
mod mcp;
mod operations;
mod outage;
mod prompts;
mod proxy;
mod render_cases;
mod runs;
mod shutdown;
mod traces;
mod transactions;
mod versions;
mod webhooks;
