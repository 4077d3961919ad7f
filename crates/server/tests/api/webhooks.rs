//! Webhooks and the event stream over HTTP: a real receiver on a local
//! port, failing on purpose; signatures checked; the stream read as a
//! client reads it, and resumed with `Last-Event-ID`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt as _;
use prompt_registry::webhooks::sign;
use registry_domain::webhook::SigningSecret;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestApp, spawn_app, spawn_app_with};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    answered: u16,
}

/// A local endpoint that answers 500 to its first `failures` requests, then 204.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(failures: usize) -> Self {
        Self::answering(move |n| {
            if n < failures {
                (500, None, b"try later".to_vec())
            } else {
                (204, None, Vec::new())
            }
        })
    }

    fn answering(
        answer: impl Fn(usize) -> (u16, Option<(&'static str, &'static str)>, Vec<u8>) + Clone + Send + 'static,
    ) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::clone(&got);
        let server = HttpServer::new(move || {
            let got = Arc::clone(&shared);
            let answer = answer.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let got = Arc::clone(&got);
                let answer = answer.clone();
                async move {
                    let mut got = got.lock().expect("lock");
                    let (answered, header, reply) = answer(got.len());
                    got.push(Received {
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        answered,
                    });
                    let mut res =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(answered).expect("status"));
                    if let Some(h) = header {
                        res.insert_header(h);
                    }
                    res.body(reply)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `n` requests were answered 2xx.
    async fn until_delivered(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.received();
            if got.iter().filter(|r| r.answered == 204).count() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} deliveries arrived: {:#?}", self.received());
    }
}

async fn create_webhook(app: &TestApp, body: &Value) -> (String, String) {
    let res = app.post("/v1/webhooks", body).await;
    assert_eq!(res.status, 201, "{}", res.text);
    (
        res.body["id"].as_str().expect("id").to_owned(),
        res.body["secret"].as_str().expect("secret").to_owned(),
    )
}

fn verify(secret: &str, r: &Received) {
    let secret = SigningSecret::new(secret.to_owned()).expect("secret");
    let id = &r.headers["webhook-id"];
    let ts: i64 = r.headers["webhook-timestamp"].parse().expect("timestamp");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    assert_eq!(
        r.headers["webhook-signature"],
        sign(&secret, id, ts, r.body.as_bytes())
    );
}

async fn a_receiver_failing_at_first_gets_each_event_once_signed(backend: Backend) {
    let app = spawn_app(&backend).await;
    let receiver = Receiver::start(2);
    let (id, secret) = create_webhook(
        &app,
        &json!({"url": receiver.url, "events": ["label.moved", "version.created"], "prompt_prefix": "hooked/"}),
    )
    .await;
    app.create_prompt("hooked/a").await;
    app.create_prompt("other").await;
    app.create_version("hooked/a", &json!({"template": "one", "labels": ["staging"]}))
        .await;
    app.create_version("other", &json!({"template": "not for this endpoint"}))
        .await;
    // A move of its own (on PostgreSQL, written without a transaction, the
    // delivery in the same statement as the event).
    let moved = app
        .send(
            Method::PUT,
            "/v1/prompts/hooked%2Fa/labels/canary",
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(moved.status, 201, "{}", moved.text);
    // version.created, label.moved (staging), label.moved (production, by
    // `activate`), label.moved (canary).
    let got = receiver.until_delivered(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = receiver.received();
    assert_eq!(
        got.len(),
        got_after.len(),
        "nothing more arrives once all succeeded"
    );
    let delivered: Vec<&Received> = got_after.iter().filter(|r| r.answered == 204).collect();
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each event delivered once: {delivered:#?}");
    for r in &got_after {
        verify(&secret, r);
        let body: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(body["data"]["prompt"], "hooked/a", "{body}");
    }
    let types: Vec<String> = delivered
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).expect("json")["type"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        types.contains(&"version.created".to_owned()) && types.contains(&"label.moved".to_owned()),
        "{types:?}"
    );
    // The failed attempts are on record, with their status and error.
    let page = app.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let items = page.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    let attempts: usize = items
        .iter()
        .map(|d| d["attempts"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(attempts, 6, "{}", page.text);
    assert!(items.iter().all(|d| d["status"] == "succeeded"));
    let failed: Vec<&Value> = items
        .iter()
        .flat_map(|d| d["attempts"].as_array().into_iter().flatten())
        .filter(|a| a["status_code"] == 500)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|a| a["error"].as_str().is_some_and(|e| e.contains("try later")))
    );
    let hook = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        hook.body["failing_since"],
        Value::Null,
        "a success ends the streak"
    );
}

async fn webhooks_are_managed_by_admins_and_bad_input_is_refused(backend: Backend) {
    let app = spawn_app(&backend).await;
    let (id, secret) = create_webhook(&app, &json!({"url": "https://hooks.example.com/x"})).await;
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{secret}");
    let list = app.get("/v1/webhooks").await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    assert!(!list.text.contains(&secret), "the secret is shown once");
    assert_eq!(list.body["items"][0]["events"], json!([]));
    let patched = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &json!({"events": ["label.removed"], "prompt_prefix": "p/", "enabled": false}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["events"], json!(["label.removed"]));
    assert_eq!(patched.body["enabled"], false);
    let cleared = app
        .patch(&format!("/v1/webhooks/{id}"), &json!({"prompt_prefix": null}))
        .await;
    assert_eq!(cleared.body["prompt_prefix"], Value::Null);
    for (body, field) in [
        (json!({"url": "ftp://x/"}), "url"),
        (json!({"url": "http://"}), "url"),
        (
            json!({"url": "https://a.example/", "events": ["label.moved", "nope"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://a.example/", "prompt_prefix": ""}),
            "prompt_prefix",
        ),
    ] {
        let res = app.post("/v1/webhooks", &body).await;
        assert_eq!(res.status, 422, "{body}: {}", res.text);
        assert_eq!(res.error_fields(), [field], "{}", res.text);
    }
    assert_eq!(app.post("/v1/webhooks", &json!({"events": []})).await.status, 422);
    assert_eq!(app.get("/v1/webhooks/not-a-uuid").await.status, 400);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(app.get(&format!("/v1/webhooks/{unknown}")).await.status, 404);
    assert_eq!(
        app.post(
            &format!("/v1/webhooks/{id}/deliveries/{unknown}/retry"),
            &json!({})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost"))
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}/deliveries?limit=0"))
            .await
            .status,
        400
    );
    // A write key is not enough.
    let key = app
        .post("/v1/api-keys", &json!({"name": "writer", "scopes": ["write"]}))
        .await;
    let writer = key.body["secret"].as_str().expect("secret");
    let res = app
        .raw_as(
            awc::http::Method::GET,
            "/v1/webhooks",
            None,
            Vec::new(),
            &[("authorization", &format!("Bearer {writer}"))],
        )
        .await;
    assert_eq!(res.status, 403);
    let audit = app.get("/v1/audit?target=webhook:*").await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["webhook.updated", "webhook.updated", "webhook.created"],
        "{}",
        audit.text
    );
    assert_eq!(app.delete(&format!("/v1/webhooks/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.status, 404);
    assert_eq!(app.delete(&format!("/v1/webhooks/{id}")).await.status, 404);
}

async fn a_test_ping_says_whether_the_endpoint_answered(backend: Backend) {
    let app = spawn_app(&backend).await;
    let receiver = Receiver::start(0);
    let (id, secret) = create_webhook(&app, &json!({"url": receiver.url})).await;
    let ping = app.post(&format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(ping.status, 200, "{}", ping.text);
    assert_eq!(ping.body["delivered"], true, "{}", ping.text);
    assert_eq!(ping.body["attempt"]["status_code"], 204);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    verify(&secret, &got[0]);
    assert_eq!(
        serde_json::from_str::<Value>(&got[0].body).expect("json")["type"],
        "webhook.ping"
    );
    // Nobody listens on a port just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (dead, _) = create_webhook(&app, &json!({"url": format!("http://127.0.0.1:{port}/")})).await;
    let ping = app.post(&format!("/v1/webhooks/{dead}/test"), &json!({})).await;
    assert_eq!(ping.body["delivered"], false, "{}", ping.text);
    assert_eq!(ping.body["attempt"]["status_code"], Value::Null);
    assert!(
        ping.body["attempt"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

async fn redirects_are_not_followed_and_long_answers_are_cut(backend: Backend) {
    let app = spawn_app(&backend).await;
    // Redirects to itself: following it would be a second request.
    let redirecting = Receiver::answering(|_| (307, Some(("location", "/hook")), Vec::new()));
    let (id, _) = create_webhook(&app, &json!({"url": redirecting.url})).await;
    let ping = app.post(&format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(ping.body["delivered"], false, "{}", ping.text);
    assert_eq!(ping.body["attempt"]["status_code"], 307);
    assert!(
        ping.body["attempt"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("redirects are not followed")),
        "{}",
        ping.text
    );
    assert_eq!(redirecting.received().len(), 1, "the redirect was not followed");
    // A megabyte of answer: read only up to the limit, and a short excerpt kept.
    let chatty = Receiver::answering(|_| (500, None, vec![b'x'; 1 << 20]));
    let (id, _) = create_webhook(&app, &json!({"url": chatty.url})).await;
    let ping = app.post(&format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(ping.body["attempt"]["status_code"], 500, "{}", ping.text);
    let error = ping.body["attempt"]["error"].as_str().expect("error");
    assert!(error.starts_with("HTTP 500: xxx") && error.len() < 300, "{error}");
}

async fn internal_targets_are_refused_unless_allowed(backend: Backend) {
    let app = spawn_app_with(&backend, |s| s.webhooks.allow_private_targets = Some(false)).await;
    for url in [
        "http://127.0.0.1:9000/",
        "http://localhost/",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://169.254.169.254/",
    ] {
        let res = app.post("/v1/webhooks", &json!({"url": url})).await;
        assert_eq!(res.status, 422, "{url}: {}", res.text);
        assert!(
            res.text.contains("internal") || res.text.contains("loopback"),
            "{}",
            res.text
        );
    }
}

async fn an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_again(backend: Backend) {
    let app = spawn_app_with(&backend, |s| s.webhooks.disable_after_secs = 1).await;
    let receiver = Receiver::start(usize::MAX);
    let (id, _) = create_webhook(&app, &json!({"url": receiver.url})).await;
    app.create_prompt("failing").await;
    let mut hook = Value::Null;
    for _ in 0..100 {
        hook = app.get(&format!("/v1/webhooks/{id}")).await.body;
        if hook["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hook["enabled"], false, "{hook}");
    assert!(
        hook["disabled"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("HTTP 500")),
        "{hook}"
    );
    let calls = receiver.received().len();
    assert!(calls >= 2, "retried before disabling: {calls}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.received().len(),
        calls,
        "nothing is sent to a disabled endpoint"
    );
    let enabled = app
        .patch(&format!("/v1/webhooks/{id}"), &json!({"enabled": true}))
        .await;
    assert_eq!(enabled.body["disabled"], Value::Null, "{}", enabled.text);
    assert_eq!(enabled.body["failing_since"], Value::Null);
}

/// Reads SSE frames from a streaming response until `want` events arrived.
async fn read_events(
    body: &mut (impl futures::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin),
    want: usize,
) -> Vec<(i64, String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < want {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(kind), Some(data)) = (field("id:"), field("event:"), field("data:")) {
                events.push((
                    id.parse().expect("numeric id"),
                    kind,
                    serde_json::from_str(&data).expect("json data"),
                ));
            }
        }
    }
    events
}

async fn the_stream_pushes_changes_and_resumes_after_the_last_event_id(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("live").await;
    let url = format!("{}/v1/events/stream?labels=production", app.address);
    let mut res = app
        .client()
        .get(&url)
        .insert_header(("authorization", format!("Bearer {ADMIN_KEY}")))
        .send()
        .await
        .expect("connected");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    app.create_version(
        "live",
        &json!({"template": "v1", "labels": ["staging"], "activate": false}),
    )
    .await;
    app.create_version("live", &json!({"template": "v2"})).await;
    let first = read_events(&mut res, 2).await;
    let kinds: Vec<&str> = first.iter().map(|(_, k, _)| k.as_str()).collect();
    // Staging moves are filtered out; v2's creation and its production move are in.
    assert_eq!(kinds, ["label.moved", "version.created"], "{first:?}");
    assert_eq!(first[0].2["data"]["label"], "production");
    drop(res);
    // Changes made while disconnected are replayed from the outbox.
    let last_id = first[1].0;
    let moved = app
        .send(
            awc::http::Method::PUT,
            "/v1/prompts/live/labels/production",
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let mut again = app
        .client()
        .get(format!("{}/v1/events/stream", app.address))
        .insert_header(("authorization", format!("Bearer {ADMIN_KEY}")))
        .insert_header(("last-event-id", last_id.to_string()))
        .send()
        .await
        .expect("reconnected");
    let resumed = read_events(&mut again, 1).await;
    assert_eq!(resumed[0].1, "label.moved");
    assert_eq!(resumed[0].2["data"]["to"], json!({"version": 1}));
    assert!(resumed[0].0 > last_id);
    let bad = app
        .raw_as(
            awc::http::Method::GET,
            "/v1/events/stream?types=nope",
            None,
            Vec::new(),
            &[],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad = app
        .raw_as(
            awc::http::Method::GET,
            "/v1/events/stream",
            None,
            Vec::new(),
            &[("last-event-id", "x")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
}

/// The dispatcher skips changes while no endpoint is enabled; an endpoint
/// created here, and a delivery retried here, wake it at once. The poll is
/// set far beyond the test, so nothing else could deliver in time.
async fn an_endpoint_made_and_a_delivery_retried_here_are_served_without_a_poll(backend: Backend) {
    let app = spawn_app_with(&backend, |s| s.webhooks.poll_ms = 600_000).await;
    // A change while no endpoint exists: nothing is queued for it.
    app.create_prompt("before").await;
    let receiver = Receiver::start(0);
    let (id, _) = create_webhook(&app, &json!({"url": receiver.url, "events": ["prompt.created"]})).await;
    app.create_prompt("after").await;
    let got = receiver.until_delivered(1).await;
    let body: Value = serde_json::from_str(&got[0].body).expect("json");
    assert_eq!(body["data"]["prompt"], "after", "{body}");
    let page = app.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    let delivery = page.body["items"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_owned();
    let retried = app
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(retried.status, 202, "{}", retried.text);
    let got = receiver.until_delivered(2).await;
    assert_eq!(
        got[0].headers["webhook-id"], got[1].headers["webhook-id"],
        "the same delivery again"
    );
    assert_eq!(
        receiver.received().len(),
        2,
        "nothing for the change made before the endpoint"
    );
}

backend_tests!(
    #[actix_web::test]
    an_endpoint_made_and_a_delivery_retried_here_are_served_without_a_poll,
    a_receiver_failing_at_first_gets_each_event_once_signed,
    webhooks_are_managed_by_admins_and_bad_input_is_refused,
    a_test_ping_says_whether_the_endpoint_answered,
    redirects_are_not_followed_and_long_answers_are_cut,
    internal_targets_are_refused_unless_allowed,
    an_endpoint_that_keeps_failing_is_disabled_and_can_be_enabled_again,
    the_stream_pushes_changes_and_resumes_after_the_last_event_id,
);
