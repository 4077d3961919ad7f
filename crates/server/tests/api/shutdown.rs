//! The real binary, stopped with SIGTERM in the middle of a burst of
//! asynchronous runs, loses none it accepted.

use std::process::Command;
use std::time::{Duration, Instant};

use registry_persistence::backend_tests;
use registry_persistence::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::start_binary;

async fn post(client: &awc::Client, url: String, body: &Value, prefer_async: bool) -> (u16, Value) {
    let mut req = client.post(url);
    if prefer_async {
        req = req.insert_header(("prefer", "respond-async"));
    }
    let mut res = req.send_json(body).await.expect("request sent");
    let bytes = res.body().limit(4 * 1024 * 1024).await.expect("body read");
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn accepted_async_runs_survive_a_sigterm(backend: Backend) {
    let test_db = TestDatabase::new(&backend).await;
    let mut server = start_binary(&test_db.url, &[("APP__RUNS__WRITER_BATCH_SIZE", "7")]).await;
    let client = crate::helpers::client();
    let (status, _) = post(
        &client,
        format!("{}/v1/prompts", server.base),
        &json!({"name": "burst"}),
        false,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &client,
        format!("{}/v1/prompts/burst/versions", server.base),
        &json!({"template": "t"}),
        false,
    )
    .await;
    assert_eq!(status, 201);

    let bodies: Vec<Value> = (0..600)
        .map(|i| json!({"id": uuid::Uuid::now_v7(), "prompt": "burst", "status": "success", "latency_ms": i}))
        .collect();
    let answers = futures::future::join_all(
        bodies
            .iter()
            .map(|b| post(&client, format!("{}/v1/runs", server.base), b, true)),
    )
    .await;
    let accepted: Vec<String> = answers
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, body)| body["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(accepted.len(), 600, "the queue has room for the whole burst");

    let pid = server.child.id().to_string();
    let signalled = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "a clean exit: {exit:?}");

    let restarted = start_binary(&test_db.url, &[]).await;
    let mut res = client
        .get(format!("{}/v1/prompts/burst/runs?limit=1000", restarted.base))
        .send()
        .await
        .expect("request sent");
    let page: Value =
        serde_json::from_slice(&res.body().limit(64 * 1024 * 1024).await.expect("body")).expect("json");
    let stored: std::collections::HashSet<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted runs were lost: {missing:?}",
        missing.len()
    );
}

backend_tests!(
    #[actix_web::test]
    accepted_async_runs_survive_a_sigterm,
);
