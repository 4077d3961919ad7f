//! Runs: what a client logs, how a stored run is shown, and the stats.

use registry_domain::page::{Cursor as _, Page};
use registry_domain::prompt::{FieldError, LabelName, PromptName};
use registry_domain::run::stats::{Bucket, StatsQuery, VersionStats};
use registry_domain::run::{
    NewRun, NewRunBuilder, Run, RunCursor, RunFilter, RunListing, RunSort, RunStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::routes::params;

/// A run as a client logs it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// Your id for the run: sending the same id again is a safe retry.
    pub id: Option<Uuid>,
    /// The prompt's name.
    #[schema(example = "support/triage")]
    pub prompt: String,
    /// The version run; without it, `label`'s version now (required for a
    /// split label), else `production`'s.
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// The label the prompt was fetched by (`production`, `canary`…), so the
    /// arms of a rollout can be compared.
    #[schema(example = "production")]
    pub label: Option<String>,
    /// The variables the prompt was rendered with.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Map<String, Value>>,
    /// The model's answer: text or any JSON.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// `success` or `error`.
    #[schema(example = "success")]
    pub status: String,
    /// Why the call failed, when `status` is `error` and the application
    /// knows (optional); absent when `status` is `success`.
    pub error: Option<String>,
    pub model: Option<String>,
    /// Milliseconds, fractions allowed (kept to the microsecond): `120.5`.
    #[schema(minimum = 0, maximum = 86_400_000, example = 120.5)]
    pub latency_ms: f64,
    #[schema(minimum = 0)]
    pub prompt_tokens: Option<i64>,
    #[schema(minimum = 0)]
    pub completion_tokens: Option<i64>,
    /// US dollars as a decimal string such as `"0.00042"` (a JSON number is
    /// accepted too); at most 9 digits after the point. Absent means 0.
    #[schema(value_type = Option<String>, example = "0.00042")]
    pub cost_usd: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// When the client started the call (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<String>,
    /// The W3C trace id of the call (32 hex digits), to link the run to its
    /// trace; given with `span_id`.
    #[schema(example = "4bf92f3577b34da6a3ce929d0e0e4736", pattern = "^[0-9a-fA-F]{32}$")]
    pub trace_id: Option<String>,
    /// The W3C span id of the call (16 hex digits).
    #[schema(example = "00f067aa0ba902b7", pattern = "^[0-9a-fA-F]{16}$")]
    pub span_id: Option<String>,
}

impl CreateRunRequest {
    /// # Errors
    /// Every invalid field, each named with `prefix`.
    pub fn try_into_domain(self, prefix: &str) -> Result<NewRun, Vec<FieldError>> {
        let mut errors = Vec::new();
        let named = |field: &str| format!("{prefix}{field}");
        let cost_usd = match self.cost_usd {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                errors.push(FieldError::new(
                    named("cost_usd"),
                    "must be a decimal string such as \"0.00042\"",
                ));
                None
            }
        };
        let started_at = self.started_at.as_deref().and_then(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| {
                    errors.push(FieldError::new(
                        named("started_at"),
                        "must be an RFC 3339 timestamp",
                    ));
                })
                .ok()
        });
        let built = NewRunBuilder {
            id: self.id,
            prompt: self.prompt,
            version: self.version,
            input: self.input,
            output: self.output,
            status: self.status,
            error: self.error,
            model: self.model,
            latency_ms: self.latency_ms,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd,
            metadata: self.metadata,
            tags: self.tags,
            started_at,
            label: self.label,
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
        .build();
        match built {
            Ok(run) if errors.is_empty() => Ok(run),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(
                    more.into_iter()
                        .map(|e| FieldError::new(named(&e.field), e.message)),
                );
                Err(errors)
            }
        }
    }
}

/// A stored run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    pub id: Uuid,
    pub prompt: String,
    pub prompt_id: Uuid,
    pub version: u32,
    pub version_id: Uuid,
    /// The label it was served under, when the client said.
    pub label: Option<String>,
    #[schema(value_type = Object)]
    pub input: Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(example = "success")]
    pub status: &'static str,
    pub error: Option<String>,
    pub model: Option<String>,
    /// Milliseconds, to the microsecond.
    pub latency_ms: f64,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Exact decimal dollars.
    #[schema(example = "0.00042")]
    pub cost_usd: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The trace the call was part of (W3C id, hex), when known.
    pub trace_id: Option<String>,
    /// Its span (W3C id, hex).
    pub span_id: Option<String>,
}

impl From<Run> for RunResponse {
    fn from(r: Run) -> Self {
        let f = r.fields;
        Self {
            id: r.id,
            prompt: r.prompt_name.to_string(),
            prompt_id: r.prompt_id,
            version: r.version.get(),
            version_id: r.version_id,
            label: f.label.map(|l| l.to_string()),
            input: f.input,
            output: f.output,
            status: f.status.as_str(),
            error: f.error,
            model: f.model,
            latency_ms: f.latency.millis(),
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            cost_usd: f.cost.to_string(),
            metadata: f.metadata,
            tags: f.tags.as_slice().to_vec(),
            started_at: f.started_at,
            created_at: r.created_at,
            trace_id: f.trace.map(|t| t.trace_id()),
            span_id: f.trace.map(|t| t.span_id()),
        }
    }
}

/// The answer to an asynchronous log request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedRun {
    pub id: Uuid,
}

/// The answer to an asynchronous batch: the runs' ids, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedBatch {
    pub ids: Vec<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to `runs.max_batch` runs (1,000 by default).
    #[schema(value_type = Vec<CreateRunRequest>)]
    pub runs: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Runs newly stored.
    pub inserted: usize,
    /// The id of every run of the batch, in order.
    pub ids: Vec<Uuid>,
    /// Ids that were already stored and were left unchanged.
    pub existing: Vec<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs of this prompt (required with `version`).
    prompt: Option<String>,
    /// Only runs of this version number.
    #[param(minimum = 1)]
    version: Option<i64>,
    /// Only runs served under this label.
    label: Option<String>,
    /// `success` or `error`.
    status: Option<String>,
    model: Option<String>,
    /// Created at or after this RFC 3339 time.
    from: Option<String>,
    /// Created before this RFC 3339 time.
    to: Option<String>,
    /// `created_at` (default `-created_at`), `latency_ms` or `cost`; `-` for descending.
    sort: Option<String>,
    /// Page size, 1–1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (with the same `sort`).
    cursor: Option<String>,
}

/// Largest page of runs.
const MAX_RUN_LIMIT: u32 = 1_000;

impl ListRunsQuery {
    /// The listing asked for. `in_path` is the prompt the path names, for
    /// `/v1/prompts/{name}/runs`; then `prompt` must not be given again.
    ///
    /// # Errors
    /// A 400 naming the parameter that cannot be used.
    pub fn try_into_domain(self, in_path: Option<PromptName>) -> Result<RunListing, ApiError> {
        let sort = self.sort.as_deref().map_or(Ok(RunSort::default()), |s| {
            RunSort::parse(s).map_err(|e| ApiError::parameter("sort", e))
        })?;
        let page = params::page::<RunCursor>(self.limit, self.cursor.as_deref(), MAX_RUN_LIMIT)?;
        let prompt = match (in_path, self.prompt) {
            (Some(_), Some(_)) => {
                return Err(ApiError::parameter(
                    "prompt",
                    "the prompt is already named in the path",
                ));
            }
            (Some(name), None) => Some(name),
            (None, given) => given.as_deref().map(params::prompt_name).transpose()?,
        };
        let filter = RunFilter {
            prompt,
            version: self
                .version
                .map(|n| params::version_number(&n.to_string()))
                .transpose()?,
            label: label_param(self.label.as_deref())?,
            status: self
                .status
                .as_deref()
                .map(|s| {
                    RunStatus::parse(s)
                        .ok_or_else(|| ApiError::parameter("status", "must be `success` or `error`"))
                })
                .transpose()?,
            model: params::text("model", self.model)?,
            from: params::timestamp("from", self.from.as_deref())?,
            to: params::timestamp("to", self.to.as_deref())?,
        };
        Ok(RunListing::new(filter, sort, page)?)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<Run, RunCursor>> for RunPage {
    fn from(page: Page<Run, RunCursor>) -> Self {
        Self {
            next_cursor: page.next.map(|c| c.encode()),
            items: page.items.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Runs created at or after this RFC 3339 time.
    from: Option<String>,
    /// Runs created before this RFC 3339 time.
    to: Option<String>,
    /// `hour`, `day` or `none` (default).
    bucket: Option<String>,
    /// Only this version.
    #[param(minimum = 1)]
    version: Option<i64>,
    /// Only runs served under this label.
    label: Option<String>,
    /// `version` (default): one entry per version; `label`: one per version
    /// and label, so the arms of a rollout sit side by side.
    group_by: Option<String>,
}

/// A label from the query string.
fn label_param(raw: Option<&str>) -> Result<Option<LabelName>, ApiError> {
    raw.map(|l| LabelName::new(l).map_err(|e| ApiError::parameter("label", e)))
        .transpose()
}

impl StatsParams {
    /// # Errors
    /// A 400 naming the parameter that cannot be used.
    pub fn try_into_domain(self) -> Result<StatsQuery, ApiError> {
        Ok(StatsQuery {
            from: params::timestamp("from", self.from.as_deref())?,
            to: params::timestamp("to", self.to.as_deref())?,
            bucket: self
                .bucket
                .as_deref()
                .map_or(Ok(Bucket::None), Bucket::parse)
                .map_err(|e| ApiError::parameter("bucket", e))?,
            version: self
                .version
                .map(|n| params::version_number(&n.to_string()))
                .transpose()?,
            label: label_param(self.label.as_deref())?,
            by_label: match self.group_by.as_deref() {
                None | Some("version") => false,
                Some("label") => true,
                Some(other) => {
                    return Err(ApiError::parameter(
                        "group_by",
                        format!("`{other}` is not `version` or `label`"),
                    ));
                }
            },
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyStats {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostStats {
    /// Exact decimal dollars.
    #[schema(example = "1.234")]
    pub total: String,
    /// Per run, rounded to the nano-dollar.
    #[schema(example = "0.000412")]
    pub average: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionStatsResponse {
    pub version: u32,
    /// With `group_by=label`: the label (absent for runs logged without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Start of the bucket (UTC); `null` when `bucket=none`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub bucket_start: Option<OffsetDateTime>,
    pub count: u64,
    pub error_count: u64,
    pub error_rate: f64,
    /// Milliseconds; percentiles are continuous (interpolated).
    pub latency_ms: LatencyStats,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: CostStats,
}

impl From<VersionStats> for VersionStatsResponse {
    fn from(s: VersionStats) -> Self {
        Self {
            version: s.version.get(),
            label: s.label.map(|l| l.to_string()),
            bucket_start: s.bucket,
            count: s.count,
            error_count: s.error_count,
            error_rate: s.error_rate(),
            latency_ms: LatencyStats {
                p50: s.latency_p50,
                p95: s.latency_p95,
                p99: s.latency_p99,
                max: s.latency_max,
            },
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            cost_usd: CostStats {
                total: s.cost_total.to_string(),
                average: s.cost_average().to_string(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub prompt: String,
    /// One entry per version (and per bucket), by version then bucket.
    pub items: Vec<VersionStatsResponse>,
}
