//! API keys: who may call the API, and with which scopes.
//!
//! A key is `pr_<prefix>_<secret>`: the 8-hex-digit prefix is public and
//! finds the key's record; only the SHA-256 of the whole key is stored, and
//! it is compared in constant time. The secret is shown once, at creation.

pub mod model;
pub mod ports;
pub mod service;
pub mod session;

pub use model::*;
pub use service::AuthService;
