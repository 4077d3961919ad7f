//! Durable acceptance: runs answered 202 are kept in a Redis stream until a
//! writer has committed them.
//!
//! A request appends its runs as one entry (one `XADD`) before it answers
//! 202. Every replica runs a writer in one consumer group: it reads entries
//! (`XREADGROUP`), stores their runs with the background writer's retry and
//! isolation rules, and only then acknowledges and deletes them (`XACK`,
//! `XDEL`). An entry read by a replica that died before acknowledging it
//! stays pending; after `runs.claim_after_ms` another writer claims it
//! (`XAUTOCLAIM`) and stores it. Run ids are idempotency keys, so an entry
//! stored twice (a writer that died between its commit and its `XACK`)
//! leaves each run stored once.
//!
//! What this relies on: Redis keeps what it acknowledged an `XADD` for. A
//! Redis restart without persistence loses entries not yet stored, so run
//! Redis with AOF (`appendonly yes`, `appendfsync everysec` bounds the loss
//! to about a second; `always` to none) and, with replicas, `WAIT` is not
//! used: a failover may lose the last writes the replica had not received.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Value as RedisValue;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use registry_domain::prompt::{LabelName, PromptName, Tags, VersionNumber};
use registry_domain::run::ports::{RunRepository, SinkError};
use registry_domain::run::span::TraceLink;
use registry_domain::run::{Cost, Latency, Run, RunFields, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::run_writer::Writer;

const GROUP: &str = "writers";
const FIELD: &str = "runs";

/// How long one read waits for new entries: well under the Redis client's
/// response timeout (500 ms by default), which a longer block would race
/// and lose (a spurious "timed out" and a retry).
const READ_BLOCK: Duration = Duration::from_millis(250);

/// Where the stream lives and how its writer behaves.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The Redis URL.
    pub url: String,
    /// The stream's key (the configured prefix + `runs`).
    pub key: String,
    /// Most entries the stream holds before appends answer "full".
    pub capacity: usize,
    /// How long an entry read by a writer may stay unacknowledged before
    /// another writer claims it.
    pub claim_after: Duration,
    /// Longest an append may take before the request answers 503.
    pub timeout: Duration,
    /// Most entries one read takes.
    pub read_count: usize,
}

/// The stream of accepted runs, shared by the request handlers (appending)
/// and this replica's writer (consuming).
#[derive(Debug)]
pub struct RunStream {
    config: StreamConfig,
    /// For appends from requests.
    pool: deadpool_redis::Pool,
    /// For the writer's blocking reads, so they never hold up an append.
    reader: deadpool_redis::Pool,
    /// This replica's name in the consumer group.
    consumer: String,
    /// Entries in the stream, as last counted.
    backlog: AtomicUsize,
}

impl RunStream {
    /// # Errors
    /// A malformed URL.
    pub fn new(config: StreamConfig, pool_size: usize) -> anyhow::Result<Self> {
        let pool = |size: usize| {
            let mut cfg = deadpool_redis::Config::from_url(config.url.clone());
            cfg.pool = Some(deadpool_redis::PoolConfig::new(size.max(1)));
            cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1))
        };
        Ok(Self {
            pool: pool(pool_size)?,
            reader: pool(2)?,
            consumer: format!("writer-{}", Uuid::now_v7()),
            backlog: AtomicUsize::new(0),
            config,
        })
    }

    /// Entries waiting in the stream, as last counted by the writer.
    #[must_use]
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Whether an append would be taken now, as far as last counted.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.backlog() < self.config.capacity
    }

    /// Appends `runs` as one entry; returns once Redis has it.
    ///
    /// # Errors
    /// [`SinkError::Full`] past the capacity; [`SinkError::Unavailable`]
    /// when Redis cannot be reached in time.
    pub async fn append(&self, runs: &[Run]) -> Result<(), SinkError> {
        if !self.has_room() {
            return Err(SinkError::Full);
        }
        let payload = serde_json::to_vec(&runs.iter().map(WireRun::from).collect::<Vec<_>>())
            .map_err(|e| SinkError::Unavailable(anyhow::Error::new(e).context("encoding runs")))?;
        let append = async {
            let mut conn = self.pool.get().await?;
            redis::cmd("XADD")
                .arg(&self.config.key)
                .arg("*")
                .arg(FIELD)
                .arg(payload)
                .query_async::<String>(&mut conn)
                .await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(self.config.timeout, append).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Unavailable(e.context("appending to the run stream"))),
            Err(_) => Err(SinkError::Unavailable(anyhow::anyhow!(
                "appending to the run stream took over {:?}",
                self.config.timeout
            ))),
        }
    }

    async fn reader(&self) -> anyhow::Result<deadpool_redis::Connection> {
        Ok(self.reader.get().await?)
    }

    /// Creates the consumer group (and the stream) unless it exists; from
    /// the start of the stream, so entries appended before any writer ran
    /// are read too.
    async fn ensure_group(&self) -> anyhow::Result<()> {
        let mut conn = self.reader().await?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.config.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Entries another writer read and has left unacknowledged for longer
    /// than the claim timeout, now this writer's; `start` is the cursor.
    async fn claim(&self, start: &mut String) -> anyhow::Result<Vec<StreamId>> {
        let mut conn = self.reader().await?;
        let idle_ms = u64::try_from(self.config.claim_after.as_millis()).unwrap_or(u64::MAX);
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.config.key)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(idle_ms)
            .arg(start.as_str())
            .arg("COUNT")
            .arg(self.config.read_count)
            .query_async(&mut conn)
            .await?;
        start.clone_from(&reply.next_stream_id);
        Ok(reply.claimed)
    }

    /// New entries, waiting up to `block` for some.
    async fn read(&self, block: Duration) -> anyhow::Result<Vec<StreamId>> {
        let mut conn = self.reader().await?;
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.read_count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1_000))
            .arg("STREAMS")
            .arg(&self.config.key)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let len: usize = redis::cmd("XLEN")
            .arg(&self.config.key)
            .query_async(&mut conn)
            .await?;
        self.backlog.store(len, Ordering::Relaxed);
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Acknowledges stored entries and deletes them, in one transaction.
    async fn done(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.reader().await?;
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.config.key)
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.config.key)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

/// The runs of an entry; `None` (logged) for one that cannot be read.
fn decode(entry: &StreamId) -> Option<Vec<Run>> {
    let bytes = match entry.map.get(FIELD) {
        Some(RedisValue::BulkString(b)) => b.as_slice(),
        _ => {
            tracing::error!(entry = %entry.id, "a run stream entry without runs; dropped");
            return None;
        }
    };
    let decoded = serde_json::from_slice::<Vec<WireRun>>(bytes)
        .map_err(anyhow::Error::new)
        .and_then(|runs| {
            runs.into_iter()
                .map(Run::try_from)
                .collect::<anyhow::Result<Vec<_>>>()
        });
    match decoded {
        Ok(runs) => Some(runs),
        Err(e) => {
            tracing::error!(entry = %entry.id, error = %format!("{e:#}"), "a run stream entry that cannot be read; dropped");
            None
        }
    }
}

/// The writer of this replica: claims what dead writers left, reads new
/// entries, stores their runs and acknowledges them once committed. Stops
/// when the writer is asked to, leaving unacknowledged entries to others.
pub(crate) async fn consume<R: RunRepository>(stream: Arc<RunStream>, writer: Writer<R>) {
    let mut stopping = writer.stopping.clone();
    let mut wait = writer.config.retry_initial;
    let mut failures: u64 = 0;
    let mut grouped = false;
    let mut cursor = "0-0".to_owned();
    let claim_every = (stream.config.claim_after / 2).max(Duration::from_millis(100));
    let mut last_claim: Option<tokio::time::Instant> = None;
    loop {
        if writer.stopping() {
            break;
        }
        let step = async {
            if !grouped {
                stream.ensure_group().await?;
                grouped = true;
            }
            if last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
                let claimed = stream.claim(&mut cursor).await?;
                if cursor == "0-0" {
                    last_claim = Some(tokio::time::Instant::now());
                }
                if !claimed.is_empty() {
                    tracing::info!(
                        entries = claimed.len(),
                        "claimed run entries another writer left unstored"
                    );
                    return anyhow::Ok(claimed);
                }
            }
            stream.read(READ_BLOCK).await
        };
        let entries = tokio::select! {
            r = step => r,
            _ = stopping.changed() => break,
        };
        let entries = match entries {
            Ok(entries) => {
                if failures > 0 {
                    tracing::info!(failures, "the run stream is reachable again");
                    failures = 0;
                }
                wait = writer.config.retry_initial;
                entries
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(12) {
                    tracing::warn!(error = %format!("{e:#}"), "the run stream cannot be read; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopping.changed() => break,
                }
                wait = (wait * 2).min(writer.config.retry_max);
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let runs: Vec<Run> = entries.iter().filter_map(decode).flatten().collect();
        if !writer.write(runs).await {
            break;
        }
        // Stored: acknowledge, retrying while Redis is away. An entry never
        // acknowledged is claimed and stored again later, harmlessly.
        let mut ack_wait = writer.config.retry_initial;
        for attempt in 1..=10 {
            match stream.done(&ids).await {
                Ok(()) => break,
                Err(e) => {
                    if attempt == 1 {
                        tracing::warn!(error = %format!("{e:#}"), "acknowledging stored runs failed; retrying");
                    }
                    tokio::time::sleep(ack_wait).await;
                    ack_wait = (ack_wait * 2).min(writer.config.retry_max);
                }
            }
        }
    }
    tracing::info!("run stream writer stopped; unacknowledged entries stay for the next writer");
}

/// A run as the stream carries it.
#[derive(Debug, Serialize, Deserialize)]
struct WireRun {
    id: Uuid,
    prompt_id: Uuid,
    prompt: String,
    version_id: Uuid,
    version: i64,
    input: Map<String, Value>,
    output: Option<Value>,
    status: String,
    error: Option<String>,
    model: Option<String>,
    latency_us: u64,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    cost_nanos: i64,
    metadata: Map<String, Value>,
    tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    label: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl From<&Run> for WireRun {
    fn from(r: &Run) -> Self {
        let f = &r.fields;
        Self {
            id: r.id,
            prompt_id: r.prompt_id,
            prompt: r.prompt_name.to_string(),
            version_id: r.version_id,
            version: i64::from(r.version.get()),
            input: f.input.clone(),
            output: f.output.clone(),
            status: f.status.as_str().to_owned(),
            error: f.error.clone(),
            model: f.model.clone(),
            latency_us: f.latency.micros(),
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            cost_nanos: f.cost.nanos(),
            metadata: f.metadata.clone(),
            tags: f.tags.as_slice().to_vec(),
            started_at: f.started_at,
            created_at: r.created_at,
            label: f.label.map(|l| l.to_string()),
            trace_id: f.trace.map(|t| t.trace_id()),
            span_id: f.trace.map(|t| t.span_id()),
        }
    }
}

impl TryFrom<WireRun> for Run {
    type Error = anyhow::Error;

    fn try_from(w: WireRun) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        Ok(Self {
            id: w.id,
            prompt_id: w.prompt_id,
            prompt_name: PromptName::new(&w.prompt).context("prompt")?,
            version_id: w.version_id,
            version: VersionNumber::new(w.version).context("version")?,
            fields: RunFields {
                input: w.input,
                output: w.output,
                status: RunStatus::parse(&w.status).context("status")?,
                error: w.error,
                model: w.model,
                latency: Latency::from_micros(w.latency_us).map_err(|e| anyhow::anyhow!("latency: {e}"))?,
                prompt_tokens: w.prompt_tokens,
                completion_tokens: w.completion_tokens,
                cost: Cost::from_nanos(w.cost_nanos).map_err(|e| anyhow::anyhow!("cost: {e}"))?,
                metadata: w.metadata,
                tags: Tags::new(w.tags).map_err(|e| anyhow::anyhow!("tags: {e}"))?,
                started_at: w.started_at,
                label: w
                    .label
                    .as_deref()
                    .map(LabelName::new)
                    .transpose()
                    .context("label")?,
                trace: match (w.trace_id, w.span_id) {
                    (Some(t), Some(s)) => Some(TraceLink::parse(&t, &s).context("trace link")?),
                    _ => None,
                },
            },
            created_at: w.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::run_writer::tests::{Stub, quick, run, stored};
    use crate::run_writer::{WriterConfig, spawn_durable};

    #[test]
    fn a_run_crosses_the_stream_unchanged() {
        let mut original = run();
        original.fields.output = Some(serde_json::json!({"answer": "\u{0}ok"}));
        original.fields.error = None;
        original.fields.label = Some(LabelName::new("canary").expect("valid"));
        original.fields.trace = Some(TraceLink::parse(&"ab".repeat(16), &"cd".repeat(8)).expect("valid"));
        original.fields.started_at = Some(registry_domain::time::now_utc());
        let wire = serde_json::to_vec(&WireRun::from(&original)).expect("encodes");
        let back: WireRun = serde_json::from_slice(&wire).expect("decodes");
        assert_eq!(Run::try_from(back).expect("valid"), original);
    }

    fn stream(key: &str, claim_after: Duration) -> RunStream {
        let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL");
        RunStream::new(
            StreamConfig {
                url,
                key: key.to_owned(),
                capacity: 1_000,
                claim_after,
                timeout: Duration::from_secs(2),
                read_count: 10,
            },
            2,
        )
        .expect("a valid URL")
    }

    /// A writer that read entries and died before acknowledging them: its
    /// entries are claimed by the next writer after the timeout and stored,
    /// and the stream is left empty.
    #[tokio::test]
    #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
    async fn entries_a_dead_writer_left_pending_are_claimed_and_stored() {
        {
            let key = format!("prompt-registry-test:{}:runs", Uuid::now_v7());
            let first = stream(&key, Duration::from_millis(200));
            let runs: Vec<Run> = (0..5).map(|_| run()).collect();
            first.append(&runs[..3]).await.expect("appended");
            first.append(&runs[3..]).await.expect("appended");
            // The dead writer: joins the group and reads both entries, then
            // never acknowledges them.
            first.ensure_group().await.expect("group");
            assert_eq!(
                first.read(Duration::from_millis(100)).await.expect("read").len(),
                2
            );

            let repo = Arc::new(Stub::default());
            let next = Arc::new(stream(&key, Duration::from_millis(200)));
            let (queue, task) =
                spawn_durable(Arc::clone(&repo), WriterConfig { ..quick() }, Arc::clone(&next));
            for _ in 0..100 {
                if stored(&repo).len() == runs.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            task.shutdown(Duration::from_secs(5)).await;
            let mut want: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
            let mut got = stored(&repo);
            want.sort();
            got.sort();
            assert_eq!(got, want, "every run stored once");
            assert!(queue.is_durable());
            let mut conn = next.reader().await.expect("a connection");
            let (len, pending): (usize, Vec<RedisValue>) = redis::pipe()
                .cmd("XLEN")
                .arg(&key)
                .cmd("XPENDING")
                .arg(&key)
                .arg(GROUP)
                .query_async(&mut conn)
                .await
                .expect("counted");
            assert_eq!(len, 0, "stored entries are deleted");
            assert_eq!(
                pending.first(),
                Some(&RedisValue::Int(0)),
                "nothing is left pending"
            );
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await
                .expect("cleaned up");
        }
    }
}
