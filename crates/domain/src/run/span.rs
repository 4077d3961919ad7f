//! Runs from OpenTelemetry spans: which spans describe an LLM call, and
//! which attribute says what.
//!
//! The instrumentations in use name the same facts differently: the GenAI
//! semantic conventions (`gen_ai.*`, current and older names), OpenLLMetry
//! (`gen_ai.prompt.0.content`, `llm.request.type`) and OpenInference
//! (`openinference.span.kind`, `llm.input_messages.0.message.content`). Each
//! fact is read from an ordered list of attributes; the first one present
//! wins. The protocol's own types stay in the adapter that decodes them: it
//! hands this module a [`Span`].
//!
//! Failed calls carry less: OpenInference then sets no `llm.model_name` (it
//! reads the model from the response), and the requested model is only in
//! the `llm.invocation_parameters` JSON, so the model is read from there last.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::{NewRun, NewRunBuilder};

/// An attribute's value, as OpenTelemetry's `AnyValue` carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Array(Vec<AttrValue>),
    Map(Attributes),
}

impl AttrValue {
    /// As JSON: strings that hold JSON (message lists, request bodies) stay
    /// strings here; callers parse them where the convention says so.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Int(n) => json!(n),
            Self::Double(x) => json!(x),
            Self::Bool(b) => json!(b),
            Self::Bytes(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            Self::Map(m) => Value::Object(m.0.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Key-value attributes in the order they came; the first of a repeated
/// key is the one read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes(pub Vec<(String, AttrValue)>);

impl Attributes {
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A non-empty string value.
    #[must_use]
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(AttrValue::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// A whole number, sent as an int, a whole double or decimal text.
    #[must_use]
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            AttrValue::Int(n) => Some(*n),
            AttrValue::Str(s) => s.trim().parse().ok(),
            #[allow(clippy::cast_possible_truncation, reason = "checked to be whole and in range")]
            AttrValue::Double(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Some(*x as i64),
            _ => None,
        }
    }

    /// The first of `keys` that holds a non-empty string.
    fn first_str(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.str(k))
    }

    /// The first of `keys` present, with its name.
    fn first<'a>(&'a self, keys: &[&'a str]) -> Option<(&'a str, &'a AttrValue)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }
}

/// A span event (`gen_ai.choice`, `exception`…).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub attributes: Attributes,
}

/// A span's status as its instrumentation set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    /// With the status message, if any.
    Error(Option<String>),
}

/// Where a run came from in a tracing system: its trace and span ids, so a
/// run links back to the trace it was part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceLink {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

/// Why a trace or span id cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdError {
    #[error("the trace id must be 32 hexadecimal digits, not all zero")]
    Trace,
    #[error("the span id must be 16 hexadecimal digits, not all zero")]
    Span,
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceLink {
    /// From the raw ids; all-zero ids are invalid in OpenTelemetry.
    ///
    /// # Errors
    /// An all-zero trace or span id.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Result<Self, TraceIdError> {
        if trace_id == [0; 16] {
            return Err(TraceIdError::Trace);
        }
        if span_id == [0; 8] {
            return Err(TraceIdError::Span);
        }
        Ok(Self { trace_id, span_id })
    }

    /// From lowercase or uppercase hex, as W3C trace context writes them.
    ///
    /// # Errors
    /// Ids of the wrong length, not hex, or all zero.
    pub fn parse(trace_id: &str, span_id: &str) -> Result<Self, TraceIdError> {
        let trace = unhex::<16>(trace_id).ok_or(TraceIdError::Trace)?;
        let span = unhex::<8>(span_id).ok_or(TraceIdError::Span)?;
        Self::new(trace, span)
    }

    #[must_use]
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    #[must_use]
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The run id of this span: a UUIDv7 whose time is the span's start and
    /// whose other bits come from a hash of the two ids. An exporter that
    /// retries sends the same span, so the retry carries the same run id and
    /// is stored once.
    #[must_use]
    pub fn run_id(&self, start_unix_nanos: u64) -> Uuid {
        let digest = Sha256::new()
            .chain_update(self.trace_id)
            .chain_update(self.span_id)
            .finalize();
        let mut tail = [0u8; 10];
        tail.copy_from_slice(&digest[..10]);
        uuid::Builder::from_unix_timestamp_millis(start_unix_nanos / 1_000_000, &tail).into_uuid()
    }
}

/// A span as the OTLP adapter decodes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    pub status: SpanStatus,
    /// The resource's `service.name`, kept in the run's metadata.
    pub service_name: Option<String>,
}

/// What a span is to the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanRun {
    /// Not an LLM call (an HTTP request, a database query, an embedding):
    /// accepted and ignored.
    NotLlm,
    /// An LLM call, as a run still to be tied to its version.
    Run(Box<NewRun>),
    /// An LLM call that cannot become a run, with the reason.
    Rejected(String),
}

/// Attributes naming the prompt, first present wins: this registry's own,
/// then those other prompt managers' instrumentations set.
pub const PROMPT_NAME: [&str; 3] = [
    "prompt_registry.prompt.name",
    "langfuse.prompt.name",
    "traceloop.prompt.key",
];
/// Attributes naming the version run.
pub const PROMPT_VERSION: [&str; 4] = [
    "prompt_registry.prompt.version",
    "langfuse.prompt.version",
    "traceloop.prompt.version",
    "llm.prompt_template.version",
];
/// Attributes naming the label the prompt was fetched by.
pub const PROMPT_LABEL: [&str; 1] = ["prompt_registry.prompt.label"];
const MODEL: [&str; 5] = [
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.request.model",
    "llm.model_name",
];
/// The JSON attribute of the request's parameters (OpenInference), whose
/// `model` is read when no attribute of [`MODEL`] is present.
const INVOCATION_PARAMETERS: &str = "llm.invocation_parameters";
const INPUT_TOKENS: [&str; 4] = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
];
const OUTPUT_TOKENS: [&str; 4] = [
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
];
/// `gen_ai.operation.name` values that are LLM calls.
const LLM_OPERATIONS: [&str; 4] = ["chat", "text_completion", "generate_content", "completion"];
/// Attributes copied into the run's metadata when present.
const METADATA: [&str; 4] = [
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
];

impl Span {
    /// Whether the span describes an LLM call, by any of the conventions.
    #[must_use]
    pub fn is_llm_call(&self) -> bool {
        let a = &self.attributes;
        a.str("gen_ai.operation.name")
            .is_some_and(|op| LLM_OPERATIONS.contains(&op))
            || a.str("openinference.span.kind")
                .is_some_and(|k| k.eq_ignore_ascii_case("llm"))
            || a.str("llm.request.type")
                .is_some_and(|t| t == "chat" || t == "completion")
    }

    /// What the span is to the registry; see the module's documentation.
    #[must_use]
    pub fn to_run(&self) -> SpanRun {
        if !self.is_llm_call() {
            return SpanRun::NotLlm;
        }
        match self.build() {
            Ok(run) => SpanRun::Run(Box::new(run)),
            Err(reason) => SpanRun::Rejected(reason),
        }
    }

    fn build(&self) -> Result<NewRun, String> {
        let a = &self.attributes;
        let link = TraceLink::new(self.trace_id, self.span_id).map_err(|e| e.to_string())?;
        let Some(prompt) = a.first_str(&PROMPT_NAME) else {
            return Err(format!(
                "it names no prompt: set `{}` (runs belong to a registered prompt)",
                PROMPT_NAME[0]
            ));
        };
        let version = match a.first(&PROMPT_VERSION) {
            None => None,
            Some((key, value)) => Some(
                version_number(value)
                    .ok_or_else(|| format!("`{key}` is not a version number: {}", value.to_json()))?,
            ),
        };
        let Some(nanos) = self.end_unix_nanos.checked_sub(self.start_unix_nanos) else {
            return Err("it ends before it starts".into());
        };
        let (status, error) = self.outcome();
        let mut metadata = Map::new();
        metadata.insert("otel.span_name".into(), Value::String(self.name.clone()));
        if let Some(service) = &self.service_name {
            metadata.insert("service.name".into(), Value::String(service.clone()));
        }
        for key in METADATA {
            if let Some(v) = a.get(key) {
                metadata.insert(key.into(), v.to_json());
            }
        }
        #[allow(clippy::cast_precision_loss, reason = "a day is 8.64e13 ns, exact in an f64")]
        let latency_ms = nanos as f64 / 1_000_000.0;
        let builder = NewRunBuilder {
            id: Some(link.run_id(self.start_unix_nanos)),
            prompt: prompt.to_owned(),
            version,
            input: Some(self.input()),
            output: self.output(),
            status: status.into(),
            error,
            model: self.model(),
            latency_ms,
            prompt_tokens: INPUT_TOKENS.iter().find_map(|k| a.int(k)),
            completion_tokens: OUTPUT_TOKENS.iter().find_map(|k| a.int(k)),
            cost_usd: None,
            metadata: Some(metadata),
            tags: None,
            started_at: crate::time::from_nanos(i128::from(self.start_unix_nanos)),
            label: a.first_str(&PROMPT_LABEL).map(str::to_owned),
            trace_id: Some(link.trace_id()),
            span_id: Some(link.span_id()),
        };
        builder.build().map_err(|e| e.to_string())
    }

    /// The model: the answering one where the span names it, else the one
    /// asked for, from an attribute or from the request's parameters.
    fn model(&self) -> Option<String> {
        let a = &self.attributes;
        a.first_str(&MODEL).map(str::to_owned).or_else(|| {
            let parameters = serde_json::from_str::<Value>(a.str(INVOCATION_PARAMETERS)?).ok()?;
            let model = parameters.get("model")?.as_str()?;
            (!model.is_empty()).then(|| model.to_owned())
        })
    }

    /// `success`, or `error` with the most specific reason the span gives:
    /// the status message, then `error.type`, then an exception event.
    fn outcome(&self) -> (&'static str, Option<String>) {
        let exception = self.events.iter().find(|e| e.name == "exception").map(|e| {
            let a = &e.attributes;
            match (a.str("exception.type"), a.str("exception.message")) {
                (Some(t), Some(m)) => format!("{t}: {m}"),
                (Some(t), None) => t.to_owned(),
                (None, Some(m)) => m.to_owned(),
                (None, None) => "exception".to_owned(),
            }
        });
        let error_type = self.attributes.str("error.type").map(str::to_owned);
        match &self.status {
            SpanStatus::Error(message) => (
                "error",
                message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .or(error_type)
                    .or(exception)
                    .or_else(|| Some("error".into())),
            ),
            SpanStatus::Ok => ("success", None),
            // Unset: the conventions set `error.type` on failure.
            SpanStatus::Unset => match error_type {
                Some(t) => ("error", Some(t)),
                None => ("success", None),
            },
        }
    }

    /// The messages sent, as `{"messages": [{"role", "content"}…]}`, or the
    /// raw `input.value` as `{"value": …}`.
    fn input(&self) -> Map<String, Value> {
        let a = &self.attributes;
        let messages = json_messages(a.str("gen_ai.input.messages"))
            .or_else(|| indexed(a, "gen_ai.prompt.", ".role", ".content"))
            .or_else(|| indexed(a, "llm.input_messages.", ".message.role", ".message.content"))
            .or_else(|| self.event_messages(false));
        let mut input = Map::new();
        if let Some(messages) = messages {
            input.insert("messages".into(), Value::Array(messages));
        } else if let Some(value) = a.str("input.value") {
            input.insert("value".into(), parse_or_text(value));
        }
        input
    }

    /// The answer: the content of the only message returned, the messages
    /// when there are several, or the raw `output.value`.
    fn output(&self) -> Option<Value> {
        let a = &self.attributes;
        let messages = json_messages(a.str("gen_ai.output.messages"))
            .or_else(|| indexed(a, "gen_ai.completion.", ".role", ".content"))
            .or_else(|| indexed(a, "llm.output_messages.", ".message.role", ".message.content"))
            .or_else(|| self.event_messages(true));
        match messages {
            Some(mut m) if m.len() == 1 => m
                .pop()
                .and_then(|mut msg| msg.get_mut("content").map(Value::take)),
            Some(m) => Some(Value::Array(m)),
            None => a.str("output.value").map(parse_or_text),
        }
    }

    /// Messages carried as span events, as the older GenAI conventions log
    /// them: `gen_ai.{system,user,assistant,tool}.message` and
    /// `gen_ai.choice`, or `gen_ai.content.prompt`/`.completion`.
    fn event_messages(&self, output: bool) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        for e in &self.events {
            let a = &e.attributes;
            let role = match (output, e.name.as_str()) {
                (false, "gen_ai.system.message") => "system",
                (false, "gen_ai.user.message") => "user",
                (false, "gen_ai.assistant.message") => "assistant",
                (false, "gen_ai.tool.message") => "tool",
                (true, "gen_ai.choice") => "assistant",
                (false, "gen_ai.content.prompt") => {
                    out.extend(json_messages(a.str("gen_ai.prompt")).unwrap_or_default());
                    continue;
                }
                (true, "gen_ai.content.completion") => {
                    out.extend(json_messages(a.str("gen_ai.completion")).unwrap_or_default());
                    continue;
                }
                _ => continue,
            };
            let content = a
                .get("content")
                .or_else(|| a.get("gen_ai.event.content"))
                .map(AttrValue::to_json)
                .or_else(|| {
                    a.str("message")
                        .map(parse_or_text)
                        .and_then(|m| m.get("content").cloned())
                });
            if let Some(content) = content {
                out.push(json!({"role": a.str("role").unwrap_or(role), "content": content}));
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A version number from an int or text such as `"3"` or `"v3"`.
fn version_number(v: &AttrValue) -> Option<i64> {
    match v {
        AttrValue::Int(n) => Some(*n),
        AttrValue::Str(s) => {
            let s = s.trim();
            s.strip_prefix(['v', 'V']).unwrap_or(s).parse().ok()
        }
        _ => None,
    }
}

fn parse_or_text(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// Messages as `{"role", "content"}` from a JSON array in either form the
/// conventions use: `content` text, or `parts` of `{"type": "text",
/// "content"}` (GenAI conventions 1.37 and later).
fn json_messages(raw: Option<&str>) -> Option<Vec<Value>> {
    let Value::Array(items) = serde_json::from_str(raw?).ok()? else {
        return None;
    };
    let messages: Vec<Value> = items
        .into_iter()
        .filter_map(|item| {
            let role = item.get("role").cloned().unwrap_or(Value::Null);
            let content = item.get("content").cloned().or_else(|| {
                let parts = item.get("parts")?.as_array()?;
                let text: Vec<&str> = parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("content").and_then(Value::as_str))
                    .collect();
                Some(if text.is_empty() {
                    Value::Array(parts.clone())
                } else {
                    Value::String(text.concat())
                })
            })?;
            Some(json!({"role": role, "content": content}))
        })
        .collect();
    (!messages.is_empty()).then_some(messages)
}

/// Messages spread over indexed attributes: `{prefix}0{role}`,
/// `{prefix}0{content}`, `{prefix}1{role}`… until an index is missing.
fn indexed(a: &Attributes, prefix: &str, role: &str, content: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for i in 0.. {
        let r = a.get(&format!("{prefix}{i}{role}")).map(AttrValue::to_json);
        let c = a.get(&format!("{prefix}{i}{content}")).map(AttrValue::to_json);
        if r.is_none() && c.is_none() {
            break;
        }
        out.push(json!({"role": r.unwrap_or(Value::Null), "content": c.unwrap_or(Value::Null)}));
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStatus;

    fn attrs(pairs: &[(&str, AttrValue)]) -> Attributes {
        Attributes(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    fn s(v: &str) -> AttrValue {
        AttrValue::Str(v.into())
    }

    fn span(pairs: &[(&str, AttrValue)]) -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [9; 8],
            name: "chat gpt-4o".into(),
            start_unix_nanos: 1_780_000_000_000_000_000,
            end_unix_nanos: 1_780_000_000_250_500_000,
            attributes: attrs(pairs),
            ..Span::default()
        }
    }

    fn run(span: &Span) -> NewRun {
        match span.to_run() {
            SpanRun::Run(r) => *r,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn only_llm_calls_become_runs() {
        assert_eq!(span(&[("http.method", s("GET"))]).to_run(), SpanRun::NotLlm);
        assert_eq!(
            span(&[("gen_ai.operation.name", s("embeddings"))]).to_run(),
            SpanRun::NotLlm
        );
        for kind in [
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.operation.name", s("generate_content")),
            ("openinference.span.kind", s("LLM")),
            ("llm.request.type", s("completion")),
        ] {
            let sp = span(&[kind.clone(), ("prompt_registry.prompt.name", s("p"))]);
            assert!(matches!(sp.to_run(), SpanRun::Run(_)), "{kind:?}");
        }
    }

    #[test]
    fn the_genai_conventions_map_to_a_run() {
        let sp = span(&[
            ("gen_ai.operation.name", s("chat")),
            ("prompt_registry.prompt.name", s("support/triage")),
            ("prompt_registry.prompt.version", AttrValue::Int(3)),
            ("prompt_registry.prompt.label", s("production")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.response.model", s("gpt-4o-2024-08-06")),
            ("gen_ai.usage.input_tokens", AttrValue::Int(12)),
            ("gen_ai.usage.output_tokens", s("5")),
            (
                "gen_ai.input.messages",
                s(r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#),
            ),
            (
                "gen_ai.output.messages",
                s(r#"[{"role":"assistant","parts":[{"type":"text","content":"Hello!"}]}]"#),
            ),
        ]);
        let r = run(&sp);
        assert_eq!(r.prompt().as_str(), "support/triage");
        assert_eq!(r.version().map(crate::prompt::VersionNumber::get), Some(3));
        let f = r.fields();
        assert_eq!(f.label.map(|l| l.to_string()).as_deref(), Some("production"));
        assert_eq!(
            f.model.as_deref(),
            Some("gpt-4o-2024-08-06"),
            "the response model wins"
        );
        assert_eq!((f.prompt_tokens, f.completion_tokens), (Some(12), Some(5)));
        assert_eq!(f.latency.micros(), 250_500);
        assert_eq!(f.status, RunStatus::Success);
        assert_eq!(f.input["messages"], json!([{"role": "user", "content": "Hi"}]));
        assert_eq!(f.output, Some(json!("Hello!")));
        let link = f.trace.expect("linked");
        assert_eq!(link.trace_id(), "07".repeat(16));
        assert_eq!(link.span_id(), "09".repeat(8));
        assert_eq!(f.metadata["otel.span_name"], json!("chat gpt-4o"));
        assert_eq!(
            f.started_at.map(time::OffsetDateTime::unix_timestamp_nanos),
            Some(1_780_000_000_000_000_000)
        );
    }

    #[test]
    fn openllmetry_and_openinference_attributes_map_too() {
        let legacy = run(&span(&[
            ("llm.request.type", s("chat")),
            ("traceloop.prompt.key", s("p")),
            ("traceloop.prompt.version", s("v2")),
            ("gen_ai.request.model", s("gpt-4o-mini")),
            ("gen_ai.usage.prompt_tokens", AttrValue::Int(7)),
            ("gen_ai.usage.completion_tokens", AttrValue::Int(2)),
            ("gen_ai.prompt.0.role", s("system")),
            ("gen_ai.prompt.0.content", s("Be brief.")),
            ("gen_ai.prompt.1.role", s("user")),
            ("gen_ai.prompt.1.content", s("Hi")),
            ("gen_ai.completion.0.role", s("assistant")),
            ("gen_ai.completion.0.content", s("Hello")),
        ]));
        assert_eq!(legacy.version().map(crate::prompt::VersionNumber::get), Some(2));
        assert_eq!(
            legacy.fields().input["messages"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(legacy.fields().output, Some(json!("Hello")));
        assert_eq!(legacy.fields().prompt_tokens, Some(7));

        let oi = run(&span(&[
            ("openinference.span.kind", s("LLM")),
            ("prompt_registry.prompt.name", s("p")),
            ("llm.model_name", s("gpt-4o")),
            ("llm.token_count.prompt", AttrValue::Int(9)),
            ("llm.token_count.completion", AttrValue::Int(4)),
            ("llm.input_messages.0.message.role", s("user")),
            ("llm.input_messages.0.message.content", s("Hi")),
            ("llm.output_messages.0.message.role", s("assistant")),
            ("llm.output_messages.0.message.content", s("Hey")),
        ]));
        assert_eq!(oi.fields().model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            (oi.fields().prompt_tokens, oi.fields().completion_tokens),
            (Some(9), Some(4))
        );
        assert_eq!(oi.fields().input["messages"][0]["content"], json!("Hi"));
        assert_eq!(oi.fields().output, Some(json!("Hey")));
    }

    #[test]
    fn messages_in_events_and_raw_values_are_read_when_attributes_are_absent() {
        let mut sp = span(&[
            ("gen_ai.operation.name", s("chat")),
            ("prompt_registry.prompt.name", s("p")),
        ]);
        sp.events = vec![
            SpanEvent {
                name: "gen_ai.user.message".into(),
                attributes: attrs(&[("content", s("Hi"))]),
            },
            SpanEvent {
                name: "gen_ai.choice".into(),
                attributes: attrs(&[("message", s(r#"{"role":"assistant","content":"Yo"}"#))]),
            },
        ];
        let r = run(&sp);
        assert_eq!(
            r.fields().input["messages"],
            json!([{"role": "user", "content": "Hi"}])
        );
        assert_eq!(r.fields().output, Some(json!("Yo")));

        let raw = run(&span(&[
            ("openinference.span.kind", s("LLM")),
            ("prompt_registry.prompt.name", s("p")),
            ("input.value", s(r#"{"q":1}"#)),
            ("output.value", s("plain text")),
        ]));
        assert_eq!(raw.fields().input["value"], json!({"q": 1}));
        assert_eq!(raw.fields().output, Some(json!("plain text")));
    }

    #[test]
    fn errors_come_from_the_status_then_error_type_then_the_exception() {
        let mut sp = span(&[
            ("gen_ai.operation.name", s("chat")),
            ("prompt_registry.prompt.name", s("p")),
        ]);
        sp.status = SpanStatus::Error(None);
        sp.events = vec![SpanEvent {
            name: "exception".into(),
            attributes: attrs(&[
                ("exception.type", s("RateLimitError")),
                ("exception.message", s("slow down")),
            ]),
        }];
        let r = run(&sp);
        assert_eq!(r.fields().status, RunStatus::Error);
        assert_eq!(r.fields().error.as_deref(), Some("RateLimitError: slow down"));

        sp.status = SpanStatus::Error(Some("429".into()));
        assert_eq!(run(&sp).fields().error.as_deref(), Some("429"));

        sp.status = SpanStatus::Unset;
        sp.events.clear();
        sp.attributes.0.push(("error.type".into(), s("timeout")));
        assert_eq!(run(&sp).fields().error.as_deref(), Some("timeout"));
    }

    /// The attributes OpenInference's OpenAI instrumentation (0.1.66) sets
    /// on a chat completion that failed with a 500: no `llm.model_name`,
    /// the model only in `llm.invocation_parameters`.
    #[test]
    fn an_openinference_failed_call_takes_its_model_from_the_invocation_parameters() {
        let mut sp = span(&[
            ("prompt_registry.prompt.name", s("p")),
            ("llm.system", s("openai")),
            (
                "input.value",
                s(r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}"#),
            ),
            ("input.mime_type", s("application/json")),
            ("llm.invocation_parameters", s(r#"{"model": "gpt-4o-mini"}"#)),
            ("llm.input_messages.0.message.role", s("user")),
            ("llm.input_messages.0.message.content", s("Hi")),
            ("openinference.span.kind", s("LLM")),
        ]);
        sp.status = SpanStatus::Error(Some(
            "InternalServerError: Error code: 500 - The server had an error".into(),
        ));
        let failed = run(&sp);
        assert_eq!(failed.fields().model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(failed.fields().status, RunStatus::Error);
        assert_eq!(failed.fields().input["messages"][0]["content"], json!("Hi"));

        sp.attributes
            .0
            .push(("llm.model_name".into(), s("gpt-4o-mini-2024-07-18")));
        assert_eq!(
            run(&sp).fields().model.as_deref(),
            Some("gpt-4o-mini-2024-07-18"),
            "the answering model, when the span has it, wins"
        );

        sp.attributes
            .0
            .retain(|(k, _)| k != "llm.model_name" && k != "llm.invocation_parameters");
        sp.attributes
            .0
            .push(("llm.invocation_parameters".into(), s("not json")));
        assert_eq!(run(&sp).fields().model, None);
    }

    #[test]
    fn a_span_without_a_usable_prompt_or_times_is_rejected_with_the_reason() {
        let reason = |sp: &Span| match sp.to_run() {
            SpanRun::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        };
        let no_prompt = span(&[("gen_ai.operation.name", s("chat"))]);
        assert!(reason(&no_prompt).contains("prompt_registry.prompt.name"));
        let bad_version = span(&[
            ("gen_ai.operation.name", s("chat")),
            ("prompt_registry.prompt.name", s("p")),
            ("prompt_registry.prompt.version", s("latest-ish")),
        ]);
        assert!(reason(&bad_version).contains("not a version number"));
        let mut backwards = span(&[
            ("gen_ai.operation.name", s("chat")),
            ("prompt_registry.prompt.name", s("p")),
        ]);
        backwards.end_unix_nanos = backwards.start_unix_nanos - 1;
        assert_eq!(reason(&backwards), "it ends before it starts");
        backwards.end_unix_nanos = backwards.start_unix_nanos;
        backwards.trace_id = [0; 16];
        assert!(reason(&backwards).contains("trace"));
    }

    #[test]
    fn a_retried_span_gets_the_same_run_id_and_another_span_another() {
        let link = TraceLink::parse(&"ab".repeat(16), &"cd".repeat(8)).expect("valid");
        let other = TraceLink::parse(&"ab".repeat(16), &"ce".repeat(8)).expect("valid");
        let start = 1_780_000_000_123_000_000;
        assert_eq!(link.run_id(start), link.run_id(start));
        assert_ne!(link.run_id(start), other.run_id(start));
        assert_eq!(link.run_id(start).get_version_num(), 7);
        let (secs, _) = link
            .run_id(start)
            .get_timestamp()
            .expect("a v7 id has a time")
            .to_unix();
        assert_eq!(secs, 1_780_000_000);
        assert_eq!(TraceLink::parse("xyz", &"cd".repeat(8)), Err(TraceIdError::Trace));
        assert_eq!(
            TraceLink::parse(&"ab".repeat(16), &"0".repeat(16)),
            Err(TraceIdError::Span)
        );
    }
}
