//! The domain of Prompt Registry: prompts, their immutable versions, and the
//! rules that govern them.
//!
//! This crate owns every rule about what a valid prompt, version or render is.
//! It performs no I/O: storage and caching are reached only through the ports in
//! [`prompt::ports`], which adapter crates implement. It must never depend on a
//! web framework, an ORM, a database driver or a cache client.

pub mod audit;
pub mod auth;
pub mod events;
pub mod page;
pub mod prompt;
pub mod run;
pub mod text;
pub mod time;
pub mod webhook;
