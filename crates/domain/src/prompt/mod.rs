//! Prompts and their immutable, numbered versions.

pub mod compose;
pub mod diff;
pub mod error;
pub mod label;
pub mod model;
pub mod ports;
pub mod service;
pub mod template;

pub use compose::{Include, IncludeRef, Source};
pub use error::PromptError;
pub use label::{
    Expected, Label, LabelChange, LabelName, LabelNameError, LabelTarget, Resolution, Split, SplitArm,
};
pub use model::*;
pub use service::PromptService;
pub use template::{
    ChatMessage, RenderLimits, Rendered, Template, TemplateKind, VariableSpec, VariableType, Variables,
};
