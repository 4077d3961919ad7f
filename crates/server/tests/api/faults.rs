//! Faults and bad input that once cost runs or capacity: NUL characters,
//! render amplification, a database outage, invented metric labels, forged
//! cursors, and the hygiene every response must have.

use std::time::Duration;

use actix_web::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

pub fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn prompt_with_version(app: &TestApp, name: &str) {
    app.create_prompt(name).await;
    app.create_version(name, &json!({"template": "Hi {{who}}", "variables": {"who": {}}}))
        .await;
}

/// Polls `GET /v1/runs/{id}` until the run is stored.
pub async fn stored_run(app: &TestApp, id: &str) -> Value {
    for _ in 0..200 {
        let res = app.get(&format!("/v1/runs/{id}")).await;
        if res.status == 200 {
            return res.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} was never stored");
}

async fn runs_carrying_nul_are_stored_exactly_as_sent_on_every_path(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_version(&app, "p").await;
    let run = |id: &str| {
        json!({
            "id": id,
            "prompt": "p",
            "input": {"who\u{0}": "A\u{0}da", "plain": "\u{E000}0"},
            "output": {"text": "a\u{0}b", "parts": ["\u{0}", "\u{E000}\u{0}"]},
            "status": "error",
            "error": "decoder failed at \u{0}",
            "latency_ms": 12.5,
            "metadata": {"raw\u{0}": "\u{0}"},
        })
    };
    let check = |stored: &Value, sent: &Value| {
        for key in ["input", "output", "error", "metadata"] {
            assert_eq!(stored[key], sent[key], "{key}");
        }
    };
    let id = uuid();
    let res = app.post("/v1/runs", &run(&id)).await;
    assert_eq!(res.status, 201, "{}", res.text);
    check(&res.body, &run(&id));
    check(&app.get(&format!("/v1/runs/{id}")).await.body, &run(&id));
    // The same run again is a retry, not a conflict: the stored copy compares equal.
    assert_eq!(app.post("/v1/runs", &run(&id)).await.status, 200);

    let queued: Vec<String> = (0..20).map(|_| uuid()).collect();
    for (i, id) in queued.iter().enumerate() {
        // One poisoned-looking run in every few: none may delay or drop the others.
        let body = if i % 4 == 0 {
            run(id)
        } else {
            json!({"id": id, "prompt": "p", "status": "success", "latency_ms": 1})
        };
        assert_eq!(app.post_async("/v1/runs", &body).await.status, 202);
    }
    for id in &queued {
        stored_run(&app, id).await;
    }
    check(&stored_run(&app, &queued[0]).await, &run(&queued[0]));

    let batch = [uuid(), uuid()];
    let res = app
        .post(
            "/v1/runs/batch",
            &json!({"runs": [run(&batch[0]), run(&batch[1])]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    check(
        &app.get(&format!("/v1/runs/{}", batch[1])).await.body,
        &run(&batch[1]),
    );
}

async fn nul_in_authored_text_or_a_filter_is_refused_by_name(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app
        .post("/v1/prompts", &json!({"name": "d", "description": "a\u{0}"}))
        .await;
    assert_eq!(res.problem(422)["code"], "validation_failed");
    assert_eq!(res.error_fields(), ["description"]);
    app.create_prompt("d").await;
    let cases = [
        (json!({"template": "x\u{0}"}), "template"),
        (
            json!({"template": [{"role": "user", "content": "\u{0}"}]}),
            "template[0].content",
        ),
        (json!({"template": "x", "config": {"stop": ["\u{0}"]}}), "config"),
        (
            json!({"template": "{{a}}", "variables": {"a": {"default": "\u{0}"}}}),
            "variables.a.default",
        ),
        (
            json!({"template": "x", "commit_message": "\u{0}"}),
            "commit_message",
        ),
    ];
    for (body, field) in cases {
        let res = app.post("/v1/prompts/d/versions", &body).await;
        res.problem(422);
        assert_eq!(res.error_fields(), [field], "{body}");
    }
    for path in ["/v1/prompts?q=%00", "/v1/runs?model=a%00"] {
        let res = app.get(path).await;
        assert_eq!(res.problem(400)["code"], "invalid_parameter", "{path}");
    }
}

async fn renders_are_bounded_by_the_configured_limits(backend: Backend) {
    let app = spawn_app_with(&backend, |s| {
        s.render.max_placeholders = 50;
        s.render.max_output_bytes = 10_000;
    })
    .await;
    app.create_prompt("amp").await;
    let over = json!({"template": "{{name}}".repeat(51), "variables": {"name": {}}});
    let res = app.post("/v1/prompts/amp/versions", &over).await;
    res.problem(422);
    assert_eq!(res.error_fields(), ["template"]);
    assert!(res.text.contains("render.max_placeholders"), "{}", res.text);

    let at_limit = json!({"template": "{{name}}".repeat(50), "variables": {"name": {}}});
    app.create_version("amp", &at_limit).await;
    let ok = app
        .post(
            "/v1/prompts/amp/render",
            &json!({"variables": {"name": "x".repeat(200)}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["text"].as_str().map(str::len), Some(10_000));
    let big = app
        .post(
            "/v1/prompts/amp/render",
            &json!({"variables": {"name": "x".repeat(201)}}),
        )
        .await;
    assert_eq!(big.problem(413)["code"], "payload_too_large");
    assert!(big.text.contains("render.max_output_bytes"), "{}", big.text);
    assert!(big.text.len() < 1_000, "the refusal is small: {}", big.text.len());
}

async fn invented_methods_and_paths_do_not_grow_the_metrics(backend: Backend) {
    let app = spawn_app(&backend).await;
    let before = app.get("/metrics").await.text.len();
    let bare = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    for i in 0..1_000 {
        let method = Method::from_bytes(format!("QWERTY{i}").as_bytes()).expect("a token");
        let _ = bare
            .request(method, format!("{}/x/{i}", app.address))
            .send()
            .await
            .expect("answered");
        let _ = bare
            .get(format!("{}/invented/{i}", app.address))
            .send()
            .await
            .expect("answered");
    }
    let after = app.get("/metrics").await.text;
    assert!(!after.contains("QWERTY"), "an invented method became a label");
    assert!(!after.contains("/invented/"), "an invented path became a label");
    assert!(
        after.len() < before + 8_000,
        "the exposition grew from {before} to {} bytes",
        after.len()
    );
    assert!(after.contains("method=\"other\""), "{after}");
}

fn hex(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn any_cursor_is_answered_200_or_400_never_5xx(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_version(&app, "c").await;
    let id = uuid::Uuid::nil();
    let forged = [
        ("/v1/runs", format!("r2:created_at:{}:{id}", i64::MAX)),
        ("/v1/runs", format!("r2:-created_at:{}:{id}", i64::MIN)),
        ("/v1/runs?sort=latency_ms", format!("r2:latency_ms:-1:{id}")),
        ("/v1/runs?sort=cost", format!("r2:cost:-1:{id}")),
        ("/v1/runs", format!("r1:-created_at:0:{id}")),
        ("/v1/prompts", format!("t1:-253402300799999999999:{id}")),
        ("/v1/prompts", format!("t1:{}:{id}", i128::MAX)),
    ];
    for (path, key) in &forged {
        let sep = if path.contains('?') { '&' } else { '?' };
        let res = app.get(&format!("{path}{sep}cursor={}", hex(key))).await;
        assert_eq!(res.problem(400)["code"], "invalid_cursor", "{path} {key}");
    }
    let sorts = [
        "created_at",
        "-created_at",
        "latency_ms",
        "-latency_ms",
        "cost",
        "-cost",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..150 {
        let r = rng.next();
        let value = match r % 4 {
            0 => rng.next().cast_signed().to_string(),
            1 => ((rng.next() % 4_000_000_000_000_000).cast_signed() - 1_000_000_000_000_000).to_string(),
            2 => format!("{}", rng.next() % 100),
            _ => "x".repeat((rng.next() % 5) as usize),
        };
        let sort = sorts[(rng.next() % 6) as usize];
        let run_key = format!(
            "r2:{sort}:{value}:{}",
            uuid::Uuid::from_u128(u128::from(rng.next()))
        );
        let time_key = format!("t1:{value}{}:{id}", rng.next() % 1000);
        let raw: String = (0..(rng.next() % 24))
            .map(|_| char::from(b"0123456789abcdefXYZ%:-"[(rng.next() % 22) as usize]))
            .collect();
        for (path, token) in [
            (format!("/v1/runs?sort={sort}"), hex(&run_key)),
            ("/v1/prompts/c/runs".to_owned(), hex(&run_key)),
            ("/v1/prompts".to_owned(), hex(&time_key)),
            ("/v1/prompts".to_owned(), raw.clone()),
            ("/v1/prompts/c/versions".to_owned(), hex(&time_key)),
        ] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let res = app
                .get(&format!("{path}{sep}cursor={}", token.replace('%', "%25")))
                .await;
            assert!(
                res.status == 200 || res.status == 400,
                "{path} cursor {token}: {} {}",
                res.status,
                res.text
            );
        }
    }
}

async fn every_response_is_nosniff_and_secrets_are_never_cached(backend: Backend) {
    let app = spawn_app(&backend).await;
    let bare = awc::Client::default();
    let unauthenticated = bare
        .get(format!("{}/v1/prompts", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(unauthenticated.status(), 401);
    for res in [
        app.get("/health").await,
        app.get("/v1/prompts").await,
        app.get("/nowhere").await,
        app.post("/v1/prompts", &json!({"name": 5})).await,
    ] {
        assert_eq!(
            res.headers
                .get("x-content-type-options")
                .map(awc::error::HeaderValue::as_bytes),
            Some(&b"nosniff"[..]),
            "{} {}",
            res.status,
            res.text
        );
    }
    assert!(unauthenticated.headers().contains_key("x-content-type-options"));
    let created = app
        .post("/v1/api-keys", &json!({"name": "svc", "scopes": ["read"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created
            .headers
            .get("cache-control")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"no-store"[..])
    );
    let listed = app.get("/v1/api-keys").await;
    assert_eq!(
        listed
            .headers
            .get("cache-control")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"no-store"[..])
    );
}

async fn a_body_with_a_repeated_key_is_refused(backend: Backend) {
    let app = spawn_app(&backend).await;
    for body in [
        &br#"{"name": "a", "name": "b"}"#[..],
        br#"{"name": "a", "tags": [], "description": "x", "description": "y"}"#,
    ] {
        let res = app
            .raw(
                Method::POST,
                "/v1/prompts",
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        assert_eq!(res.problem(400)["code"], "malformed_json");
        assert!(res.text.contains("duplicate key"), "{}", res.text);
    }
    assert_eq!(app.get("/v1/prompts").await.body["items"], json!([]));
}

async fn fractional_latencies_keep_their_microseconds_and_failures_need_no_reason(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_version(&app, "lat").await;
    let latencies = [120.5, 0.25, 3_000.125, 120.25, 86_400_000.0];
    for ms in latencies {
        let res = app
            .post(
                "/v1/runs",
                &json!({"prompt": "lat", "status": "success", "latency_ms": ms}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        assert_eq!(res.body["latency_ms"].as_f64(), Some(ms));
    }
    let failed = app
        .post(
            "/v1/runs",
            &json!({"prompt": "lat", "status": "error", "latency_ms": 1}),
        )
        .await;
    assert_eq!(failed.status, 201, "{}", failed.text);
    assert_eq!(failed.body["error"], Value::Null);
    let page = app.get("/v1/prompts/lat/runs?sort=latency_ms&limit=3").await;
    let first: Vec<f64> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["latency_ms"].as_f64())
        .collect();
    assert_eq!(first, [0.25, 1.0, 120.25]);
    let cursor = page.body["next_cursor"].as_str().expect("more");
    let rest = app
        .get(&format!("/v1/prompts/lat/runs?sort=latency_ms&cursor={cursor}"))
        .await;
    let rest: Vec<f64> = rest.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["latency_ms"].as_f64())
        .collect();
    assert_eq!(rest, [120.5, 3_000.125, 86_400_000.0]);
    let stats = app.get("/v1/prompts/lat/stats").await;
    let row = &stats.body["items"][0];
    assert_eq!(row["latency_ms"]["max"].as_f64(), Some(86_400_000.0));
    assert_eq!(row["latency_ms"]["p50"].as_f64(), Some((120.25 + 120.5) / 2.0));
}

backend_tests!(
    #[actix_web::test]
    runs_carrying_nul_are_stored_exactly_as_sent_on_every_path,
    nul_in_authored_text_or_a_filter_is_refused_by_name,
    renders_are_bounded_by_the_configured_limits,
    invented_methods_and_paths_do_not_grow_the_metrics,
    any_cursor_is_answered_200_or_400_never_5xx,
    every_response_is_nosniff_and_secrets_are_never_cached,
    a_body_with_a_repeated_key_is_refused,
    fractional_latencies_keep_their_microseconds_and_failures_need_no_reason,
);
