//! `POST /v1/traces`: OpenTelemetry trace exports (OTLP/HTTP), whose LLM
//! calls become runs.
//!
//! Both encodings of the protocol are read, protobuf and JSON, plain or
//! gzip-encoded, with the published message types. Which spans are LLM calls
//! and which attribute says what is the domain's to decide
//! ([`registry_domain::run::span`]); this module decodes and answers.

use std::io::Read as _;
use std::sync::atomic::Ordering;

use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use registry_domain::run::ports::RunError;
use registry_domain::run::span::{AttrValue, Attributes, Span, SpanEvent, SpanStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::problem::{ApiError, ErrorCode, Problem};
use crate::state::AppState;

/// Most bytes an export request may carry, compressed or not, and most it
/// may inflate to.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Free places in the run queue below which an export is refused before it
/// is decoded: the OpenTelemetry SDKs' default export batch.
const EXPORT_ROOM: usize = 512;
/// Most rejection reasons quoted in `partialSuccess.errorMessage`.
const REASONS_QUOTED: usize = 5;

const PROTOBUF: &str = "application/x-protobuf";

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(export);
}

/// The OTLP answer, as the JSON encoding writes it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportResponse {
    /// Present when some spans were rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartialSuccess {
    /// How many spans were rejected (an int64, as a string in OTLP/JSON).
    #[schema(example = "1")]
    pub rejected_spans: String,
    /// Why, for the first few of them.
    pub error_message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(req: &HttpRequest) -> Result<Encoding, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("send OTLP as {PROTOBUF} or application/json, not `{ct}`"),
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("an export request may hold at most {MAX_BODY_BYTES} bytes, inflated"),
    )
}

async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| bad_request(&format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether the body is gzip-encoded; another coding is a 415.
fn is_gzip(req: &HttpRequest) -> Result<bool, ApiError> {
    let coding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match coding.as_deref() {
        None | Some("" | "identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Encoding `{other}` is not supported: send gzip or nothing"),
        )),
    }
}

/// A gzip body inflated, with the same size cap as a plain one (a small
/// body must not inflate without bound).
fn inflate(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let limit = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::GzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| bad_request(&format!("the gzip body cannot be inflated: {e}")))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(out)
}

fn bad_request(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::MalformedBody, detail.to_owned())
}

/// OTLP/JSON writes ids in hex; some exporters send the protobuf JSON
/// mapping's base64 instead. Ids that are not hex of the right length but
/// are base64 of it are rewritten to hex before the protocol types read them.
fn hex_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let len = match key.as_str() {
                    "traceId" => 16,
                    "spanId" | "parentSpanId" => 8,
                    _ => {
                        hex_ids(v);
                        continue;
                    }
                };
                if let Value::String(s) = v {
                    let is_hex = s.len() == len * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
                    if !is_hex && !s.is_empty() {
                        use base64::Engine as _;
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s.as_bytes())
                            && bytes.len() == len
                        {
                            *s = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        }
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hex_ids),
        _ => {}
    }
}

fn parse(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, ApiError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| bad_request(&format!("not an OTLP ExportTraceServiceRequest: {e}"))),
        Encoding::Json => {
            let mut value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("the body is not JSON: {e}")))?;
            hex_ids(&mut value);
            serde_path_to_error::deserialize(value)
                .map_err(|e| bad_request(&format!("not an OTLP/JSON ExportTraceServiceRequest: {e}")))
        }
    }
}

fn attr_value(v: Option<&AnyValue>) -> Option<AttrValue> {
    Some(match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => AttrValue::Str(s.clone()),
        any_value::Value::BoolValue(b) => AttrValue::Bool(*b),
        any_value::Value::IntValue(n) => AttrValue::Int(*n),
        any_value::Value::DoubleValue(x) => AttrValue::Double(*x),
        any_value::Value::BytesValue(b) => AttrValue::Bytes(b.clone()),
        any_value::Value::ArrayValue(a) => {
            AttrValue::Array(a.values.iter().filter_map(|v| attr_value(Some(v))).collect())
        }
        any_value::Value::KvlistValue(kv) => AttrValue::Map(attributes(&kv.values)),
        // A string index into a dictionary this encoding does not carry.
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn attributes(kvs: &[KeyValue]) -> Attributes {
    Attributes(
        kvs.iter()
            .filter_map(|kv| attr_value(kv.value.as_ref()).map(|v| (kv.key.clone(), v)))
            .collect(),
    )
}

fn id<const N: usize>(bytes: &[u8]) -> [u8; N] {
    // A wrong length reads as all zeros, which no span may have: an LLM span
    // with it is rejected for its id.
    bytes.try_into().unwrap_or([0; N])
}

/// The spans of an export, flattened, each with its resource's service.
fn spans(request: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match attr_value(kv.value.as_ref()) {
                    Some(AttrValue::Str(s)) => Some(s),
                    _ => None,
                })
        });
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let status = match &s.status {
                    Some(st) if st.code == StatusCode::Error as i32 => {
                        SpanStatus::Error(Some(st.message.clone()).filter(|m| !m.is_empty()))
                    }
                    Some(st) if st.code == StatusCode::Ok as i32 => SpanStatus::Ok,
                    _ => SpanStatus::Unset,
                };
                out.push(Span {
                    trace_id: id(&s.trace_id),
                    span_id: id(&s.span_id),
                    name: s.name.clone(),
                    start_unix_nanos: s.start_time_unix_nano,
                    end_unix_nanos: s.end_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| SpanEvent {
                            name: e.name.clone(),
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    status,
                    service_name: service.clone(),
                });
            }
        }
    }
    out
}

fn respond(encoding: Encoding, rejected: &[String]) -> HttpResponse {
    let partial = (!rejected.is_empty()).then(|| {
        let mut message = rejected
            .iter()
            .take(REASONS_QUOTED)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if rejected.len() > REASONS_QUOTED {
            message.push_str(&format!("; and {} more", rejected.len() - REASONS_QUOTED));
        }
        (i64::try_from(rejected.len()).unwrap_or(i64::MAX), message)
    });
    match encoding {
        Encoding::Protobuf => {
            let response = ExportTraceServiceResponse {
                partial_success: partial.map(|(n, m)| ExportTracePartialSuccess {
                    rejected_spans: n,
                    error_message: m,
                }),
            };
            HttpResponse::Ok()
                .content_type(PROTOBUF)
                .body(response.encode_to_vec())
        }
        Encoding::Json => HttpResponse::Ok()
            .insert_header(ContentType::json())
            .json(ExportResponse {
                partial_success: partial.map(|(n, m)| PartialSuccess {
                    rejected_spans: n.to_string(),
                    error_message: m,
                }),
            }),
    }
}

/// Receives an OTLP/HTTP trace export (protobuf or JSON, optionally gzip).
///
/// Spans that describe an LLM call (`gen_ai.operation.name` of `chat`,
/// `text_completion` or `generate_content`; `openinference.span.kind` =
/// `LLM`; or `llm.request.type`) become runs, queued like runs logged with
/// `Prefer: respond-async`; other spans are accepted and ignored. A run
/// belongs to a registered prompt, named by `prompt_registry.prompt.name`
/// (or `langfuse.prompt.name`, `traceloop.prompt.key`): an LLM span that
/// names none, or an unknown prompt or version, is rejected and counted in
/// `partialSuccess` with the reason, while the rest are stored. The run id
/// comes from the trace and span ids, so an exporter's retry is stored once.
/// The answer is encoded as the request was.
#[utoipa::path(
    tag = "traces",
    request_body(
        description = "An OTLP ExportTraceServiceRequest",
        content(
            (Object = "application/json"),
            (Vec<u8> = "application/x-protobuf"),
        )
    ),
    params(("Content-Encoding" = Option<String>, Header, description = "`gzip` for a compressed body")),
    responses(
        (status = 200, description = "Accepted; `partialSuccess` counts and explains rejected spans", body = ExportResponse),
        (status = 400, description = "Not an OTLP export request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 16 MiB, inflated", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither protobuf nor JSON, or an unsupported encoding", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The run queue is full; retry later (exporters do)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/traces")]
async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let encoding = encoding(&req)?;
    let gzip = is_gzip(&req)?;
    // Under back-pressure, answer before decoding: an export the queue
    // cannot take would only take CPU from the writers that make room.
    if !state.run_queue.has_room(EXPORT_ROOM) {
        return Err(RunError::QueueFull.into());
    }
    let body = read_body(payload).await?;
    let runs = state.runs.clone();
    let report = state
        .ingest
        .run(async move {
            let body = if gzip { inflate(&body)? } else { body };
            let request = parse(encoding, &body)?;
            Ok(runs.ingest(&spans(&request)).await?)
        })
        .await?;
    let c = &state.metrics.spans;
    c.accepted.fetch_add(report.accepted as u64, Ordering::Relaxed);
    c.ignored.fetch_add(report.ignored as u64, Ordering::Relaxed);
    c.rejected
        .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
    if !report.rejected.is_empty() {
        tracing::info!(
            rejected = report.rejected.len(),
            first = %report.rejected[0],
            "trace export: spans rejected"
        );
    }
    Ok(respond(encoding, &report.rejected))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn base64_ids_are_rewritten_to_hex_and_hex_ids_are_kept() {
        let mut v = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "AQIDBAUGBwgJCgsMDQ4PEA==",
            "spanId": "0102030405060708",
            "parentSpanId": "AQIDBAUGBwg=",
            "name": "x"
        }]}]}]});
        hex_ids(&mut v);
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], json!("0102030405060708090a0b0c0d0e0f10"));
        assert_eq!(span["spanId"], json!("0102030405060708"));
        assert_eq!(span["parentSpanId"], json!("0102030405060708"));
    }
}
