//! Two real server processes sharing one database and one Redis never serve
//! a stale active version, a label's old target or a removed label once the
//! request that changed it has returned; and they resolve a split label to
//! the same arm for the same subject.

use registry_persistence::backend_tests;
use registry_persistence::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::{redis_url, start_binary};

async fn send(client: &awc::Client, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
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

async fn replicas_follow_label_moves_and_removals_and_agree_on_split_arms(backend: Backend) {
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
    let url = |server: &str, path: &str| format!("{server}/v1/prompts/shared{path}");
    let (status, _) = send(
        &client,
        "POST",
        format!("{}/v1/prompts", a.base),
        Some(json!({"name": "shared"})),
    )
    .await;
    assert_eq!(status, 201);
    for i in 1..=3 {
        let body = json!({"template": format!("v{i}"), "activate": false});
        assert_eq!(
            send(&client, "POST", url(&a.base, "/versions"), Some(body))
                .await
                .0,
            201
        );
    }
    let canary = |server: &str| url(server, "/versions/canary");
    for round in 1..=9 {
        let target = round % 3 + 1;
        let (status, moved) = send(
            &client,
            "PUT",
            url(&a.base, "/labels/canary"),
            Some(json!({"version": target})),
        )
        .await;
        assert!(status == 200 || status == 201, "{moved}");
        for _ in 0..3 {
            let (status, got) = send(&client, "GET", canary(&b.base), None).await;
            assert_eq!(status, 200);
            assert_eq!(
                got["version"], target,
                "round {round}: replica B served the label's old target"
            );
        }
        if round % 3 == 0 {
            let (status, _) = send(&client, "DELETE", url(&a.base, "/labels/canary"), None).await;
            assert_eq!(status, 204);
            let (status, _) = send(&client, "GET", canary(&b.base), None).await;
            assert_eq!(status, 404, "round {round}: replica B served a removed label");
        }
    }

    // A split: both processes give each subject the same arm.
    let split = json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 30}, {"version": 3, "weight": 20}]});
    assert_eq!(
        send(&client, "PUT", url(&b.base, "/labels/production"), Some(split))
            .await
            .0,
        201
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let path = format!("/versions/production?subject=customer-{i}");
        let (_, from_a) = send(&client, "GET", url(&a.base, &path), None).await;
        let (_, from_b) = send(&client, "GET", url(&b.base, &path), None).await;
        assert_eq!(
            from_a["version"], from_b["version"],
            "customer-{i} got different arms"
        );
        seen.insert(from_a["version"].to_string());
    }
    assert_eq!(seen.len(), 3, "every arm serves some subjects: {seen:?}");
}

backend_tests!(
    #[actix_web::test]
    #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
    replicas_sharing_redis_never_serve_a_stale_active_version,
    replicas_follow_label_moves_and_removals_and_agree_on_split_arms,
);
