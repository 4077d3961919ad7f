//! The port through which runs are stored and read.

use async_trait::async_trait;
use uuid::Uuid;

use super::model::{Run, RunCursor, RunFilter, RunSort};
use super::stats::{StatsQuery, VersionStats};
use crate::page::{Page, PageRequest};
use crate::prompt::{FieldError, PromptName, VersionNumber};

/// What can go wrong with runs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no prompt named `{0}`")]
    UnknownPrompt(PromptName),
    #[error("prompt `{name}` has no version {version}")]
    UnknownVersion {
        name: PromptName,
        version: VersionNumber,
    },
    #[error("prompt `{0}` has no active version; name the version")]
    NoActiveVersion(PromptName),
    #[error("prompt `{name}` has no label `{label}`")]
    UnknownLabel {
        name: PromptName,
        label: crate::prompt::LabelName,
    },
    /// A split label serves several versions: which one ran is the client's to say.
    #[error("label `{label}` of prompt `{name}` is a split; name the version that was served")]
    SplitNeedsVersion {
        name: PromptName,
        label: crate::prompt::LabelName,
    },
    #[error("run {0} already exists with different content")]
    Conflict(Uuid),
    #[error("no run with id {0}")]
    NotFound(Uuid),
    /// Items of a batch that cannot be logged, each named by its index.
    #[error("{} run(s) of the batch are invalid", .0.len())]
    InvalidItems(Vec<FieldError>),
    /// The asynchronous path cannot take more runs now: retry shortly.
    #[error("the run queue is full; retry shortly")]
    QueueFull,
    /// The asynchronous path's durable queue cannot be reached: retry shortly.
    #[error("the run queue is unavailable; retry shortly")]
    QueueUnavailable(#[source] anyhow::Error),
    /// The storage cannot be reached now; the same call may succeed later.
    /// Writers keep what they hold and try again; requests answer 503.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A failure that trying again will not mend (a row the storage refuses,
    /// a bug): the caller must not retry the same input forever.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Whether an insert stored the run or found it already there.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    Created(Run),
    /// A run with that id was already stored; this is it, unchanged.
    Existing(Run),
}

/// Durable storage of runs.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RunRepository: Send + Sync + 'static {
    /// Stores `run`, committed before this returns.
    ///
    /// # Errors
    /// MUST return `Ok(Logged::Existing(stored))`, changing nothing, when a
    /// run with that id exists; storage failures as [`RunError::Unknown`].
    async fn insert(&self, run: &Run) -> Result<Logged, RunError>;

    /// Stores every run in one transaction: all or none. Runs whose id is
    /// already stored are left unchanged.
    ///
    /// # Errors
    /// MUST return [`RunError::Unavailable`] when the storage cannot be
    /// reached (a retry may succeed), and [`RunError::Unknown`] when it
    /// refuses the runs (a retry of the same runs will not); in both cases
    /// nothing was stored.
    async fn insert_batch(&self, runs: &[Run]) -> Result<Vec<Uuid>, RunError>;

    /// # Errors
    /// MUST return [`RunError::NotFound`] when no run has that id.
    async fn find(&self, id: Uuid) -> Result<Run, RunError>;

    /// Runs matching `filter` in `sort` order, ties broken by id.
    ///
    /// # Errors
    /// Storage failures only.
    async fn list(
        &self,
        filter: &RunFilter,
        sort: RunSort,
        page: &PageRequest<RunCursor>,
    ) -> Result<Page<Run, RunCursor>, RunError>;

    /// Aggregates of the prompt's runs per version (and per bucket).
    ///
    /// # Errors
    /// Storage failures only; an unknown prompt gives no rows.
    async fn stats(&self, prompt: &PromptName, query: &StatsQuery) -> Result<Vec<VersionStats>, RunError>;
}

/// Removing old runs, in steps that hold no lock for long.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RunRetention: Send + Sync + 'static {
    /// Makes storage ready for the runs of `now` and the coming months
    /// (PostgreSQL: their partitions). Doing it again changes nothing.
    ///
    /// # Errors
    /// Storage failures.
    async fn prepare(&self, now: time::OffsetDateTime) -> Result<(), RunError>;

    /// Drops whole partitions whose runs were all created before `cutoff`;
    /// returns how many. Storage without partitions drops none.
    ///
    /// # Errors
    /// Storage failures.
    async fn drop_expired(&self, cutoff: time::OffsetDateTime) -> Result<u64, RunError>;

    /// Deletes at most `limit` runs created before `cutoff`, oldest first, in
    /// one short transaction; returns how many.
    ///
    /// # Errors
    /// Storage failures.
    async fn delete_expired(&self, cutoff: time::OffsetDateTime, limit: u32) -> Result<u64, RunError>;
}

/// Why a sink did not take runs; it then took none of them.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// It holds as many runs as it may: retry shortly.
    #[error("the run queue is full")]
    Full,
    /// Where it keeps runs cannot be reached (a durable queue's server).
    #[error("the run queue is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// Where runs accepted for later storage go: the asynchronous path. An
/// implementation stores them in the background (a bounded queue and a
/// writer in this process, a durable stream shared by replicas…).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RunSink: Send + Sync + 'static {
    /// Takes runs, already tied to their versions, for storage. What it
    /// promises once this returns `Ok` is the implementation's to document
    /// (in memory until written, or durably appended).
    ///
    /// # Errors
    /// MUST return [`SinkError::Full`] when it cannot take them now and
    /// [`SinkError::Unavailable`] when it cannot reach its store; in both
    /// cases it has taken none of them.
    async fn submit(&self, runs: Vec<Run>) -> Result<(), SinkError>;
}

/// A sink that takes nothing: a service without an asynchronous path.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

#[async_trait]
impl RunSink for NoSink {
    async fn submit(&self, _runs: Vec<Run>) -> Result<(), SinkError> {
        Err(SinkError::Full)
    }
}
