//! Runs: one logged execution of a prompt version, and what is learnt from
//! many of them.

pub mod cost;
pub mod model;
pub mod ports;
pub mod retention;
pub mod service;
pub mod span;
pub mod stats;

pub use cost::Cost;
pub use model::*;
pub use service::RunService;
