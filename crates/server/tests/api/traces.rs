//! OTLP/HTTP trace exports: protobuf and JSON, gzip, LLM spans becoming
//! runs once, the others ignored, rejections explained, bad bodies refused.

use std::io::Write as _;
use std::time::Duration;

use actix_web::http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event, status};
use prost::Message as _;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const START: u64 = 1_780_000_000_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn int(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn span(n: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x10, 0, 0, 0, 0, 0, 0, n],
        name: format!("span {n}"),
        start_time_unix_nano: START,
        end_time_unix_nano: START + 420_000_000,
        attributes,
        ..Span::default()
    }
}

/// An LLM call to prompt `chat`, as the GenAI conventions describe it.
fn llm_span(n: u8) -> Span {
    span(
        n,
        vec![
            text("gen_ai.operation.name", "chat"),
            text("prompt_registry.prompt.name", "chat"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 11),
            int("gen_ai.usage.output_tokens", 3),
            text("gen_ai.prompt.0.role", "user"),
            text("gen_ai.prompt.0.content", "Hi"),
            text("gen_ai.completion.0.role", "assistant"),
            text("gen_ai.completion.0.content", "Hello!"),
        ],
    )
}

fn export(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "checkout")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("in memory");
    enc.finish().expect("in memory")
}

async fn setup(app: &TestApp) {
    app.create_prompt("chat").await;
    app.create_version("chat", &json!({"template": "Hi", "labels": ["production"]}))
        .await;
}

/// Sends a protobuf export, gzip-encoded, and decodes the answer.
async fn send_protobuf(app: &TestApp, request: &ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let mut res = app
        .client()
        .post(format!("{}/v1/traces", app.address))
        .insert_header(("content-type", "application/x-protobuf"))
        .insert_header(("content-encoding", "gzip"))
        .send_body(gzip(&request.encode_to_vec()))
        .await
        .expect("request sent");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf")
    );
    let body = res.body().await.expect("body read");
    ExportTraceServiceResponse::decode(body).expect("an OTLP answer")
}

/// The runs of prompt `chat` once `n` are stored (the writer is asynchronous).
async fn runs_once(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let res = app.get("/v1/runs?prompt=chat&limit=100").await;
        let items = res.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} runs were not stored in time");
}

async fn llm_spans_become_runs_once_and_the_rest_is_ignored_or_explained(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup(&app).await;
    let mut failed = llm_span(2);
    failed.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: String::new(),
    });
    failed.events = vec![Event {
        name: "exception".into(),
        attributes: vec![
            text("exception.type", "RateLimitError"),
            text("exception.message", "slow down"),
        ],
        ..Event::default()
    }];
    let unknown = span(
        3,
        vec![
            text("gen_ai.operation.name", "chat"),
            text("prompt_registry.prompt.name", "nope"),
        ],
    );
    let unnamed = span(4, vec![text("openinference.span.kind", "LLM")]);
    let http = span(5, vec![text("http.request.method", "GET")]);
    let request = export(vec![llm_span(1), failed, unknown, unnamed, http]);

    let answer = send_protobuf(&app, &request).await;
    let partial = answer.partial_success.expect("two spans were rejected");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("no prompt named `nope`"),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("prompt_registry.prompt.name"),
        "{}",
        partial.error_message
    );

    let runs = runs_once(&app, 2).await;
    let ok = runs
        .iter()
        .find(|r| r["status"] == "success")
        .expect("the successful call");
    assert_eq!(ok["trace_id"], json!("ab".repeat(16)));
    assert_eq!(ok["span_id"], json!("1000000000000001"));
    assert_eq!(ok["model"], "gpt-4o-mini");
    assert_eq!(
        (ok["prompt_tokens"].as_u64(), ok["completion_tokens"].as_u64()),
        (Some(11), Some(3))
    );
    assert_eq!(ok["latency_ms"].as_f64(), Some(420.0));
    assert_eq!(ok["version"], 1);
    assert_eq!(ok["input"]["messages"][0]["content"], "Hi");
    assert_eq!(ok["output"], "Hello!");
    assert_eq!(ok["metadata"]["service.name"], "checkout");
    let err = runs
        .iter()
        .find(|r| r["status"] == "error")
        .expect("the failed call");
    assert_eq!(err["error"], "RateLimitError: slow down");

    // The exporter retries the same export with one more span: the retried
    // spans are not stored twice.
    let mut again = request.clone();
    again.resource_spans[0].scope_spans[0].spans.push(llm_span(6));
    send_protobuf(&app, &again).await;
    let runs = runs_once(&app, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs_once(&app, 3).await.len(), 3, "{runs:?}");

    let metrics = app.get("/metrics").await.text;
    for line in [
        "otlp_spans_total{outcome=\"accepted\"} 5",
        "otlp_spans_total{outcome=\"ignored\"} 2",
        "otlp_spans_total{outcome=\"rejected\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

async fn otlp_json_with_base64_ids_and_string_integers_is_read(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup(&app).await;
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        // base64 of 16 bytes 0x01..0x10, and of 8 bytes 0x01..0x08
        "traceId": "AQIDBAUGBwgJCgsMDQ4PEA==",
        "spanId": "AQIDBAUGBwg=",
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1780000000000000000",
        "endTimeUnixNano": "1780000000100000000",
        "attributes": [
            {"key": "openinference.span.kind", "value": {"stringValue": "LLM"}},
            {"key": "prompt_registry.prompt.name", "value": {"stringValue": "chat"}},
            {"key": "prompt_registry.prompt.version", "value": {"intValue": "1"}},
            {"key": "llm.token_count.prompt", "value": {"intValue": "7"}},
            {"key": "output.value", "value": {"stringValue": "done"}}
        ],
        "status": {"code": 1}
    }]}]}]});
    let res = app.post("/v1/traces", &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body, json!({}), "nothing rejected: no partialSuccess");
    let run = runs_once(&app, 1).await.remove(0);
    assert_eq!(run["trace_id"], "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(run["span_id"], "0102030405060708");
    assert_eq!(run["prompt_tokens"], 7);
    assert_eq!(run["output"], "done");
    assert_eq!(run["latency_ms"].as_f64(), Some(100.0));

    let rejected = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0102030405060708090a0b0c0d0e0f11",
        "spanId": "0102030405060709",
        "startTimeUnixNano": "1780000000000000000",
        "endTimeUnixNano": "1780000000100000000",
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
    }]}]}]});
    let res = app.post("/v1/traces", &rejected).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["partialSuccess"]["rejectedSpans"], "1");
}

async fn bad_exports_are_refused_with_a_problem(backend: Backend) {
    let app = spawn_app(&backend).await;
    let post = |ct: Option<&'static str>, body: Vec<u8>, headers: &'static [(&'static str, &'static str)]| {
        app.raw_as(Method::POST, "/v1/traces", ct, body, headers)
    };
    post(Some("text/plain"), b"hello".to_vec(), &[])
        .await
        .problem(415);
    post(Some("application/x-protobuf"), b"\xff\xff\xff".to_vec(), &[])
        .await
        .problem(400);
    post(Some("application/json"), b"{\"resourceSpans\": 3}".to_vec(), &[])
        .await
        .problem(400);
    post(Some("application/json"), b"{".to_vec(), &[])
        .await
        .problem(400);
    let res = post(
        Some("application/x-protobuf"),
        b"not gzip".to_vec(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(res.problem(400)["code"], "malformed_body");
    post(
        Some("application/json"),
        b"{}".to_vec(),
        &[("content-encoding", "br")],
    )
    .await
    .problem(415);
    // A small body that inflates past the cap.
    let bomb = gzip(&vec![b' '; 17 * 1024 * 1024]);
    post(Some("application/json"), bomb, &[("content-encoding", "gzip")])
        .await
        .problem(413);
    // An empty export is a valid one.
    let res = post(Some("application/json"), b"{}".to_vec(), &[]).await;
    assert_eq!(res.status, 200, "{}", res.text);
    // A run's trace link is checked when logged directly, too.
    app.create_prompt("chat").await;
    app.create_version("chat", &json!({"template": "Hi", "labels": ["production"]}))
        .await;
    let run = |extra: Value| {
        let mut body = json!({"prompt": "chat", "status": "success", "latency_ms": 1});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        body
    };
    for bad in [
        json!({"trace_id": "ab".repeat(16)}),
        json!({"trace_id": "xyz", "span_id": "ab".repeat(8)}),
        json!({"trace_id": "0".repeat(32), "span_id": "ab".repeat(8)}),
    ] {
        app.post("/v1/runs", &run(bad)).await.problem(422);
    }
    let res = app
        .post(
            "/v1/runs",
            &run(json!({"trace_id": "AB".repeat(16), "span_id": "cd".repeat(8)})),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["trace_id"], "ab".repeat(16));
}

backend_tests!(
    #[actix_web::test]
    llm_spans_become_runs_once_and_the_rest_is_ignored_or_explained,
    otlp_json_with_base64_ids_and_string_integers_is_read,
    bad_exports_are_refused_with_a_problem,
);
