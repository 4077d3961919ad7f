//! Two real server processes sharing one database and one Redis never serve
//! a stale active version once the request that changed it has returned.

use registry_persistence::backend_tests;
use registry_persistence::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::{redis_url, start_binary};

async fn send(client: &awc::Client, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("request sent");
    let bytes = res.body().await.expect("body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn replicas_sharing_redis_never_serve_a_stale_active_version(backend: Backend) {
    let redis = redis_url();
    let test_db = TestDatabase::migrated(&backend).await.0;
    let prefix = format!("coherence:{}:", uuid::Uuid::new_v4().simple());
    let env = [
        ("APP__REDIS__URL", redis.as_str()),
        ("APP__REDIS__PREFIX", prefix.as_str()),
    ];
    let (a, b) = (
        start_binary(&test_db.url, &env).await,
        start_binary(&test_db.url, &env).await,
    );
    let client = crate::helpers::client();
    let (status, _) = send(
        &client,
        "POST",
        format!("{}/v1/prompts", a.base),
        Some(json!({"name": "shared"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, ready) = send(&client, "GET", format!("{}/ready", b.base), None).await;
    assert_eq!(ready["checks"]["cache"], "ok", "{ready}");
    let active = |server: &str| format!("{server}/v1/prompts/shared/versions/active");
    for round in 1..=12 {
        // Writes go to A; B has the previous answer cached.
        let expected = if round % 3 == 0 {
            let (status, v) = send(
                &client,
                "POST",
                format!("{}/v1/prompts/shared/versions/1/activate", a.base),
                None,
            )
            .await;
            assert_eq!(status, 200);
            v["version"].clone()
        } else {
            let (status, v) = send(
                &client,
                "POST",
                format!("{}/v1/prompts/shared/versions", a.base),
                Some(json!({"template": format!("round {round}")})),
            )
            .await;
            assert_eq!(status, 201);
            v["version"].clone()
        };
        for _ in 0..3 {
            let (status, got) = send(&client, "GET", active(&b.base), None).await;
            assert_eq!(status, 200);
            assert_eq!(
                got["version"], expected,
                "round {round}: replica B served a stale active version"
            );
        }
    }
}

backend_tests!(
    #[actix_web::test]
    #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
    replicas_sharing_redis_never_serve_a_stale_active_version,
);
