//! A run's data, as logged by a client and as stored.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::cost::Cost;
use crate::page::{Cursor, CursorError, PageRequest};
use crate::prompt::{FieldError, LabelName, PromptName, Tags, ValidationErrors, VersionNumber};

/// Largest latency accepted: one day, in milliseconds.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;
/// The same bound in microseconds, the unit latencies are kept in.
pub const MAX_LATENCY_US: u64 = 86_400_000_000;
const MAX_MODEL: usize = 200;
const MAX_ERROR: usize = 16_384;

/// How long a call took, kept in whole microseconds: clients time calls with
/// floating-point clocks (`120.5` ms), and OpenTelemetry durations are
/// nanoseconds, so whole milliseconds would lose what they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Latency(u64);

impl Latency {
    /// From milliseconds, fractional ones included, rounded to the microsecond.
    ///
    /// # Errors
    /// A [`FieldError`] on `latency_ms` for a value that is not a number from
    /// 0 to one day.
    pub fn from_millis(ms: f64) -> Result<Self, FieldError> {
        if !(ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&ms)) {
            return Err(FieldError::new(
                "latency_ms",
                format!("must be a number of milliseconds from 0 to {MAX_LATENCY_MS}"),
            ));
        }
        // In range and finite: the product fits a u64 with room to spare.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micros = (ms * 1_000.0).round() as u64;
        Ok(Self(micros.min(MAX_LATENCY_US)))
    }

    /// From whole microseconds, as stored.
    ///
    /// # Errors
    /// A value above one day.
    pub fn from_micros(us: u64) -> Result<Self, FieldError> {
        if us > MAX_LATENCY_US {
            return Err(FieldError::new("latency_ms", "is longer than one day"));
        }
        Ok(Self(us))
    }

    #[must_use]
    pub fn micros(self) -> u64 {
        self.0
    }

    /// Milliseconds, with the microseconds as the fraction.
    #[must_use]
    pub fn millis(self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "at most 8.64e10, exact in an f64")]
        let us = self.0 as f64;
        us / 1_000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Success,
    Error,
}

impl RunStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A run as a client reports it, every field already valid. Built only by
/// [`NewRunBuilder::build`]: its fields are private to this crate.
///
/// ```
/// use registry_domain::run::NewRunBuilder;
///
/// let run = NewRunBuilder {
///     prompt: "support/triage".into(),
///     status: "success".into(),
///     latency_ms: 120.5,
///     ..NewRunBuilder::default()
/// }
/// .build()
/// .expect("valid");
/// assert_eq!(run.prompt().as_str(), "support/triage");
/// assert_eq!(run.fields().latency.micros(), 120_500);
///
/// let err = NewRunBuilder { prompt: "Bad Name".into(), status: "ok".into(), ..NewRunBuilder::default() }
///     .build()
///     .expect_err("two bad fields");
/// assert_eq!(err.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The client's id (its idempotency key), or a fresh one.
    pub(crate) id: Uuid,
    /// Whether the client chose the id: only then is a repeat a retry.
    pub(crate) client_id: bool,
    pub(crate) prompt: PromptName,
    /// The version run; `None` means the one active when the run is logged.
    pub(crate) version: Option<VersionNumber>,
    pub(crate) fields: RunFields,
}

impl NewRun {
    #[must_use]
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Whether the client chose the id (then a repeat is a retry).
    #[must_use]
    pub fn client_id(&self) -> bool {
        self.client_id
    }

    #[must_use]
    pub fn prompt(&self) -> &PromptName {
        &self.prompt
    }

    /// The version named, or `None` for the one active when logged.
    #[must_use]
    pub fn version(&self) -> Option<VersionNumber> {
        self.version
    }

    #[must_use]
    pub fn fields(&self) -> &RunFields {
        &self.fields
    }
}

/// What a run carries besides its identity and its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFields {
    pub input: Map<String, Value>,
    pub output: Option<Value>,
    pub status: RunStatus,
    pub error: Option<String>,
    pub model: Option<String>,
    pub latency: Latency,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Cost,
    pub metadata: Map<String, Value>,
    pub tags: Tags,
    pub started_at: Option<OffsetDateTime>,
    /// The label the prompt was fetched by, so the arms of a rollout can be
    /// compared.
    pub label: Option<LabelName>,
    /// The trace and span the run was part of, to link back to the tracing
    /// system.
    pub trace: Option<super::span::TraceLink>,
}

/// The raw parts of a run, checked all at once by [`NewRunBuilder::build`].
#[derive(Debug, Clone, Default)]
pub struct NewRunBuilder {
    pub id: Option<Uuid>,
    pub prompt: String,
    pub version: Option<i64>,
    pub input: Option<Map<String, Value>>,
    pub output: Option<Value>,
    pub status: String,
    pub error: Option<String>,
    pub model: Option<String>,
    /// Milliseconds; fractions are kept to the microsecond.
    pub latency_ms: f64,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// Dollars as a decimal string.
    pub cost_usd: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub started_at: Option<OffsetDateTime>,
    pub label: Option<String>,
    /// W3C trace id, 32 hex digits; given together with `span_id`.
    pub trace_id: Option<String>,
    /// W3C span id, 16 hex digits.
    pub span_id: Option<String>,
}

fn tokens(field: &str, n: Option<i64>, errors: &mut Vec<FieldError>) -> Option<u32> {
    let n = n?;
    u32::try_from(n)
        .ok()
        .filter(|v| i32::try_from(*v).is_ok())
        .or_else(|| {
            errors.push(FieldError::new(
                field,
                format!("must be a whole number from 0 to {}", i32::MAX),
            ));
            None
        })
}

impl NewRunBuilder {
    /// # Errors
    /// Every invalid field, each named.
    pub fn build(self) -> Result<NewRun, ValidationErrors> {
        let mut errors = Vec::new();
        let prompt = PromptName::new(&self.prompt)
            .map_err(|e| errors.push(FieldError::new("prompt", e.to_string())))
            .ok();
        let version = self.version.and_then(|n| {
            VersionNumber::new(n)
                .map_err(|e| errors.push(FieldError::new("version", e.to_string())))
                .ok()
        });
        let status = RunStatus::parse(&self.status).or_else(|| {
            errors.push(FieldError::new("status", "must be `success` or `error`"));
            None
        });
        // The status is what counts: an application that cannot say why a
        // call failed still logs the failure.
        let error = self.error.filter(|e| !e.is_empty());
        if status == Some(RunStatus::Success) && error.is_some() {
            errors.push(FieldError::new(
                "error",
                "must be absent when `status` is `success`",
            ));
        }
        if error.as_ref().is_some_and(|e| e.chars().count() > MAX_ERROR) {
            errors.push(FieldError::new(
                "error",
                format!("must be at most {MAX_ERROR} characters"),
            ));
        }
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.is_empty() || m.chars().count() > MAX_MODEL)
        {
            errors.push(FieldError::new(
                "model",
                format!("must be 1 to {MAX_MODEL} characters"),
            ));
        } else if self.model.as_deref().is_some_and(crate::text::has_nul) {
            errors.push(FieldError::new("model", crate::text::NUL_MESSAGE));
        }
        let latency = Latency::from_millis(self.latency_ms)
            .map_err(|e| errors.push(e))
            .ok();
        let prompt_tokens = tokens("prompt_tokens", self.prompt_tokens, &mut errors);
        let completion_tokens = tokens("completion_tokens", self.completion_tokens, &mut errors);
        let cost = match self.cost_usd.as_deref().map(Cost::parse) {
            None => Some(Cost::ZERO),
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                errors.push(FieldError::new("cost_usd", e.to_string()));
                None
            }
        };
        let tags = Tags::new(self.tags.unwrap_or_default())
            .map_err(|e| errors.extend(e))
            .ok();
        let label = self.label.as_deref().and_then(|l| {
            LabelName::new(l)
                .map_err(|e| errors.push(FieldError::new("label", e.to_string())))
                .ok()
        });
        let trace = match (self.trace_id.as_deref(), self.span_id.as_deref()) {
            (None, None) => None,
            (Some(t), Some(s)) => super::span::TraceLink::parse(t, s)
                .map_err(|e| {
                    let field = match e {
                        super::span::TraceIdError::Trace => "trace_id",
                        super::span::TraceIdError::Span => "span_id",
                    };
                    errors.push(FieldError::new(field, e.to_string()));
                })
                .ok(),
            (Some(_), None) | (None, Some(_)) => {
                errors.push(FieldError::new(
                    "span_id",
                    "`trace_id` and `span_id` are given together or not at all",
                ));
                None
            }
        };
        match (prompt, status, latency, cost, tags) {
            (Some(prompt), Some(status), Some(latency), Some(cost), Some(tags)) if errors.is_empty() => {
                Ok(NewRun {
                    id: self.id.unwrap_or_else(Uuid::now_v7),
                    client_id: self.id.is_some(),
                    prompt,
                    version,
                    fields: RunFields {
                        input: self.input.unwrap_or_default(),
                        output: self.output,
                        status,
                        error,
                        model: self.model,
                        latency,
                        prompt_tokens,
                        completion_tokens,
                        cost,
                        metadata: self.metadata.unwrap_or_default(),
                        tags,
                        started_at: self.started_at.map(crate::time::truncate_to_micros),
                        label,
                        trace,
                    },
                })
            }
            _ => Err(errors.into()),
        }
    }
}

/// A run tied to the exact version it ran, ready to store or as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub prompt_id: Uuid,
    pub prompt_name: PromptName,
    pub version_id: Uuid,
    pub version: VersionNumber,
    pub fields: RunFields,
    pub created_at: OffsetDateTime,
}

/// Narrows a run listing; every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub prompt: Option<PromptName>,
    pub version: Option<VersionNumber>,
    pub label: Option<LabelName>,
    pub status: Option<RunStatus>,
    pub model: Option<String>,
    /// Created at or after.
    pub from: Option<OffsetDateTime>,
    /// Created before.
    pub to: Option<OffsetDateTime>,
}

/// A listing of runs as asked: what to match, in which order, which page.
/// Only built by [`RunListing::new`], which refuses what cannot be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RunListing {
    filter: RunFilter,
    sort: RunSort,
    page: PageRequest<RunCursor>,
}

/// Why a listing cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// Version numbers are per prompt: a version filter needs a prompt.
    #[error("filtering by version needs a prompt")]
    VersionWithoutPrompt,
    /// A cursor only continues the order it was issued for.
    #[error("this cursor belongs to another sort order")]
    CursorOfAnotherOrder,
}

impl RunListing {
    /// # Errors
    /// [`ListingError`] for a version filter without a prompt, or a cursor of
    /// another sort order.
    pub fn new(filter: RunFilter, sort: RunSort, page: PageRequest<RunCursor>) -> Result<Self, ListingError> {
        if filter.version.is_some() && filter.prompt.is_none() {
            return Err(ListingError::VersionWithoutPrompt);
        }
        if page.after.is_some_and(|c| c.sort != sort) {
            return Err(ListingError::CursorOfAnotherOrder);
        }
        Ok(Self { filter, sort, page })
    }

    #[must_use]
    pub fn filter(&self) -> &RunFilter {
        &self.filter
    }

    #[must_use]
    pub fn sort(&self) -> RunSort {
        self.sort
    }

    #[must_use]
    pub fn page(&self) -> &PageRequest<RunCursor> {
        &self.page
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    LatencyMs,
    Cost,
}

impl SortField {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::LatencyMs => "latency_ms",
            Self::Cost => "cost",
        }
    }
}

/// A listing order: a field and a direction, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSort {
    pub field: SortField,
    pub descending: bool,
}

impl Default for RunSort {
    fn default() -> Self {
        Self {
            field: SortField::CreatedAt,
            descending: true,
        }
    }
}

impl RunSort {
    /// Parses `created_at`, `-latency_ms`, `cost`… (`-` for descending).
    ///
    /// # Errors
    /// An unknown field.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (descending, name) = s.strip_prefix('-').map_or((false, s), |rest| (true, rest));
        let field = match name {
            "created_at" => SortField::CreatedAt,
            "latency_ms" => SortField::LatencyMs,
            "cost" => SortField::Cost,
            _ => {
                return Err(format!(
                    "`{s}` is not a sort order: use created_at, latency_ms or cost, with `-` for descending"
                ));
            }
        };
        Ok(Self { field, descending })
    }

    /// The sort key of a run, as the cursor holds it.
    #[must_use]
    pub fn key(self, run: &Run) -> i64 {
        match self.field {
            SortField::CreatedAt => {
                i64::try_from(run.created_at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
            }
            SortField::LatencyMs => i64::try_from(run.fields.latency.micros()).unwrap_or(i64::MAX),
            SortField::Cost => run.fields.cost.nanos(),
        }
    }

    /// Whether `key` is one a stored run can have in this order: a time
    /// every backend can compare, a latency within a day, a cost that is
    /// not negative.
    fn accepts(self, key: i64) -> bool {
        match self.field {
            SortField::CreatedAt => crate::time::from_micros(key).is_some(),
            SortField::LatencyMs => u64::try_from(key).is_ok_and(|us| us <= MAX_LATENCY_US),
            SortField::Cost => Cost::from_nanos(key).is_ok(),
        }
    }
}

/// Position after a run in a listing of a given order.
///
/// Only [`Cursor::decode`] builds one from client input, and it refuses a key
/// the order cannot hold, so a repository never sees an unusable position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCursor {
    pub sort: RunSort,
    /// The sort key: microseconds since the epoch, microseconds of latency,
    /// or nano-dollars.
    pub key: i64,
    pub id: Uuid,
}

impl RunCursor {
    /// The creation time a `created_at` cursor points after.
    #[must_use]
    pub fn time(&self) -> Option<OffsetDateTime> {
        crate::time::from_micros(self.key)
    }
}

impl Cursor for RunCursor {
    fn to_key(&self) -> String {
        let dir = if self.sort.descending { "-" } else { "" };
        format!("r2:{dir}{}:{}:{}", self.sort.field.as_str(), self.key, self.id)
    }

    fn from_key(key: &str) -> Result<Self, CursorError> {
        // `r1` cursors held latencies in milliseconds: they are refused rather
        // than misread.
        let mut parts = key.splitn(4, ':');
        let (Some("r2"), Some(sort), Some(value), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError);
        };
        let sort = RunSort::parse(sort).map_err(|_| CursorError)?;
        let key: i64 = value.parse().map_err(|_| CursorError)?;
        if !sort.accepts(key) {
            return Err(CursorError);
        }
        Ok(Self {
            sort,
            key,
            id: Uuid::parse_str(id).map_err(|_| CursorError)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(key: &str) -> String {
        key.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_cursor_whose_key_no_run_can_have_is_refused() {
        let id = Uuid::nil();
        for key in [
            format!("r2:created_at:{}:{id}", i64::MAX),
            format!("r2:-created_at:{}:{id}", i64::MIN),
            format!("r2:latency_ms:-1:{id}"),
            format!("r2:latency_ms:{}:{id}", MAX_LATENCY_US + 1),
            format!("r2:cost:-5:{id}"),
            format!("r2:cost:99999999999999999999:{id}"),
        ] {
            assert_eq!(RunCursor::decode(&hex(&key)), Err(CursorError), "{key}");
        }
        let fine = format!("r2:created_at:1780000000000000:{id}");
        assert!(RunCursor::decode(&hex(&fine)).is_ok());
    }

    fn valid() -> NewRunBuilder {
        NewRunBuilder {
            prompt: "p".into(),
            status: "success".into(),
            latency_ms: 12.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_run_is_valid() {
        let run = valid().build().expect("valid");
        assert!(!run.client_id);
        assert_eq!(run.fields.cost, Cost::ZERO);
        assert_eq!(run.fields.status, RunStatus::Success);
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = NewRunBuilder {
            prompt: "Bad Name".into(),
            version: Some(0),
            status: "ok".into(),
            model: Some(String::new()),
            latency_ms: -1.0,
            prompt_tokens: Some(-3),
            completion_tokens: Some(i64::from(i32::MAX) + 1),
            cost_usd: Some("-0.1".into()),
            tags: Some(vec![String::new()]),
            ..Default::default()
        }
        .build()
        .expect_err("invalid");
        let fields: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "prompt",
                "version",
                "status",
                "model",
                "latency_ms",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
                "tags[0]"
            ]
        );
    }

    #[test]
    fn an_error_run_may_omit_its_error_and_a_success_has_none() {
        let run = NewRunBuilder {
            status: "error".into(),
            ..valid()
        }
        .build()
        .expect("the status is what counts");
        assert_eq!(run.fields.status, RunStatus::Error);
        assert_eq!(run.fields.error, None);
        let err = NewRunBuilder {
            error: Some("boom".into()),
            ..valid()
        }
        .build()
        .expect_err("success with error");
        assert_eq!(err[0].field, "error");
        assert!(
            NewRunBuilder {
                status: "error".into(),
                error: Some("boom".into()),
                ..valid()
            }
            .build()
            .is_ok()
        );
    }

    #[test]
    fn latency_is_bounded_and_keeps_fractions_to_the_microsecond() {
        let at = |ms: f64| {
            NewRunBuilder {
                latency_ms: ms,
                ..valid()
            }
            .build()
            .map(|r| r.fields.latency)
        };
        assert_eq!(at(MAX_LATENCY_MS).map(Latency::micros), Ok(MAX_LATENCY_US));
        assert_eq!(at(120.5).map(Latency::micros), Ok(120_500));
        assert_eq!(at(0.0015).map(Latency::micros), Ok(2));
        assert!((at(120.5).map(Latency::millis).unwrap_or_default() - 120.5).abs() < f64::EPSILON);
        for bad in [MAX_LATENCY_MS + 1.0, -0.001, f64::NAN, f64::INFINITY] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_model_name_with_nul_is_refused() {
        let err = NewRunBuilder {
            model: Some("gpt\u{0}".into()),
            ..valid()
        }
        .build()
        .expect_err("NUL in model");
        assert_eq!(err[0].field, "model");
    }

    #[test]
    fn a_listing_refuses_a_version_without_a_prompt_and_a_cursor_of_another_order() {
        let page = |after| PageRequest {
            limit: crate::page::Limit::new(10, 100).expect("valid"),
            after,
        };
        let by_version = RunFilter {
            version: Some(VersionNumber::FIRST),
            ..RunFilter::default()
        };
        assert_eq!(
            RunListing::new(by_version.clone(), RunSort::default(), page(None)),
            Err(ListingError::VersionWithoutPrompt)
        );
        let of_prompt = RunFilter {
            prompt: Some(PromptName::new("p").expect("valid")),
            ..by_version
        };
        assert!(RunListing::new(of_prompt.clone(), RunSort::default(), page(None)).is_ok());
        let cost_cursor = RunCursor {
            sort: RunSort::parse("cost").expect("valid"),
            key: 1,
            id: Uuid::nil(),
        };
        assert_eq!(
            RunListing::new(of_prompt, RunSort::default(), page(Some(cost_cursor))),
            Err(ListingError::CursorOfAnotherOrder)
        );
    }

    #[test]
    fn sort_orders_parse_with_a_direction() {
        assert_eq!(
            RunSort::parse("-latency_ms"),
            Ok(RunSort {
                field: SortField::LatencyMs,
                descending: true
            })
        );
        assert_eq!(
            RunSort::parse("cost"),
            Ok(RunSort {
                field: SortField::Cost,
                descending: false
            })
        );
        assert!(RunSort::parse("name").is_err());
    }

    #[test]
    fn a_run_cursor_round_trips_and_remembers_its_order() {
        let c = RunCursor {
            sort: RunSort::parse("-cost").expect("valid"),
            key: 42,
            id: Uuid::now_v7(),
        };
        assert_eq!(RunCursor::decode(&c.encode()), Ok(c));
        assert_eq!(
            RunCursor::decode(&hex(&c.to_key().replacen("r2", "r1", 1))),
            Err(CursorError)
        );
        assert!(
            RunCursor::decode(
                &crate::page::TimeCursor {
                    created_at: crate::time::now_utc(),
                    id: c.id
                }
                .encode()
            )
            .is_err()
        );
    }
}
