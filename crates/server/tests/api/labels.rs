//! Labels over HTTP: promotion through environments, compare-and-set,
//! protection and the `release` scope, weighted sticky splits, history,
//! rollback, and the audit log they leave.

use awc::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// A key with `scopes`; its secret.
async fn key(app: &TestApp, scopes: &[&str]) -> String {
    let res = app
        .post(
            "/v1/api-keys",
            &json!({"name": scopes.join("+"), "scopes": scopes}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["secret"].as_str().expect("secret").to_owned()
}

/// Sends JSON with `key` (and extra headers) in place of the admin key.
async fn as_key(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> crate::helpers::Response {
    let bearer = format!("Bearer {key}");
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    let bytes = body
        .map(|b| serde_json::to_vec(b).expect("json"))
        .unwrap_or_default();
    let content_type = body.map(|_| "application/json");
    app.raw_as(method, path, content_type, bytes, &headers).await
}

async fn put(app: &TestApp, path: &str, body: &Value) -> crate::helpers::Response {
    app.send(Method::PUT, path, body).await
}

/// A prompt with `n` text versions, none of them active.
async fn prompt_with_versions(app: &TestApp, name: &str, n: u32) {
    app.create_prompt(name).await;
    for i in 1..=n {
        app.create_version(
            name,
            &json!({"template": format!("version {i}: {{{{who}}}}"), "variables": {"who": {}}, "activate": false}),
        )
        .await;
    }
}

async fn a_version_moves_from_staging_to_production_and_back_with_its_history(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("greeting").await;
    // Version 1 goes straight to production (the default) and staging.
    let v1 = app
        .create_version("greeting", &json!({"template": "Hello", "labels": ["staging"]}))
        .await;
    assert_eq!(v1["is_active"], true);
    // Version 2 goes to staging only.
    app.create_version(
        "greeting",
        &json!({"template": "Hi there", "activate": false, "labels": ["staging"]}),
    )
    .await;
    let staging = app.get("/v1/prompts/greeting/versions/staging").await;
    assert_eq!(staging.status, 200, "{}", staging.text);
    assert_eq!(staging.body["version"], 2);
    assert_eq!(
        staging
            .headers
            .get("x-prompt-label")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"staging"[..])
    );
    assert_eq!(
        staging
            .headers
            .get("x-prompt-split")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"false"[..])
    );
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/active").await.body["version"],
        1
    );
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/production").await.body["version"],
        1
    );

    // Promote: production goes where staging is, compare-and-set on version 1.
    let promoted = put(
        &app,
        "/v1/prompts/greeting/labels/production",
        &json!({"version": 2, "expected_version": 1, "reason": "staging looked good"}),
    )
    .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert_eq!(promoted.body["target"], json!({"version": 2}));
    assert_eq!(
        promoted.body["protected"], true,
        "production is protected by default"
    );
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/active").await.body["version"],
        2
    );
    let prompt = app.get("/v1/prompts/greeting").await;
    assert_eq!(prompt.body["active_version"], 2);

    let labels = app.get("/v1/prompts/greeting/labels").await;
    let names: Vec<&str> = labels
        .body
        .as_array()
        .expect("list")
        .iter()
        .map(|l| l["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["production", "staging"]);

    // The history, newest first: the promotion, then the creation by version 1.
    let history = app.get("/v1/prompts/greeting/labels/production/history").await;
    assert_eq!(history.status, 200, "{}", history.text);
    let items = history.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["from"], json!({"version": 1}));
    assert_eq!(items[0]["to"], json!({"version": 2}));
    assert_eq!(items[0]["reason"], "staging looked good");
    assert_eq!(items[0]["actor"]["name"], "admin key (configuration)");
    assert!(items[0]["request_id"].is_string());
    assert_eq!(items[1]["from"], Value::Null);

    // Roll back from history in one call: production returns to 1.
    let rolled = app
        .raw(
            Method::POST,
            "/v1/prompts/greeting/labels/production/rollback",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    assert_eq!(rolled.body["target"], json!({"version": 1}));
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/active").await.body["version"],
        1
    );
    let history = app
        .get("/v1/prompts/greeting/labels/production/history?limit=1")
        .await;
    assert_eq!(history.body["items"][0]["to"], json!({"version": 1}));
    assert!(history.body["next_cursor"].is_string());
    let next = history.body["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let older = app
        .get(&format!(
            "/v1/prompts/greeting/labels/production/history?limit=1&cursor={next}"
        ))
        .await;
    assert_eq!(older.body["items"][0]["to"], json!({"version": 2}));

    // A label whose last change created it has nothing to roll back to.
    app.create_prompt("fresh").await;
    app.create_version("fresh", &json!({"template": "x"})).await;
    app.post(
        "/v1/prompts/fresh/labels/production/rollback",
        &json!({"reason": "oops"}),
    )
    .await
    .problem(409);
}

async fn a_removed_label_stops_resolving_at_once(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "p", 2).await;
    assert_eq!(
        put(&app, "/v1/prompts/p/labels/canary", &json!({"version": 2}))
            .await
            .status,
        201
    );
    // Cached by a first read.
    assert_eq!(app.get("/v1/prompts/p/versions/canary").await.body["version"], 2);
    assert_eq!(
        app.delete("/v1/prompts/p/labels/canary?reason=done").await.status,
        204
    );
    app.get("/v1/prompts/p/versions/canary").await.problem(404);
    app.get("/v1/prompts/p/labels/canary").await.problem(404);
    app.delete("/v1/prompts/p/labels/canary").await.problem(404);
    let history = app.get("/v1/prompts/p/labels/canary/history").await;
    assert_eq!(history.body["items"][0]["to"], Value::Null);
    assert_eq!(history.body["items"][0]["reason"], "done");
    // Set again, it resolves again.
    assert_eq!(
        put(&app, "/v1/prompts/p/labels/canary", &json!({"version": 1}))
            .await
            .status,
        200
    );
    assert_eq!(app.get("/v1/prompts/p/versions/canary").await.body["version"], 1);
}

async fn bad_labels_targets_and_preconditions_are_problems(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "p", 2).await;
    for bad in ["Prod", "latest", "active", "7up", &"x".repeat(64)] {
        put(
            &app,
            &format!("/v1/prompts/p/labels/{bad}"),
            &json!({"version": 1}),
        )
        .await
        .problem(400);
    }
    for (body, field) in [
        (json!({}), "version"),
        (json!({"version": 0}), "version"),
        (json!({"version": 3}), "version"),
        (
            json!({"version": 1, "split": [{"version": 1, "weight": 100}]}),
            "split",
        ),
        (
            json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 40}]}),
            "split",
        ),
        (
            json!({"split": [{"version": 1, "weight": 50}, {"version": 9, "weight": 50}]}),
            "split[1].version",
        ),
        (
            json!({"split": [{"version": 1, "weight": 0}, {"version": 2, "weight": 100}]}),
            "split[0].weight",
        ),
        (json!({"version": 1, "reason": "r".repeat(1_001)}), "reason"),
    ] {
        let res = put(&app, "/v1/prompts/p/labels/canary", &body).await;
        res.problem(422);
        assert!(
            res.error_fields().contains(&field.to_owned()),
            "{body}: {:?}",
            res.error_fields()
        );
    }
    put(&app, "/v1/prompts/missing/labels/canary", &json!({"version": 1}))
        .await
        .problem(404);
    let created = put(&app, "/v1/prompts/p/labels/canary", &json!({"version": 1})).await;
    assert_eq!(created.status, 201);
    let etag = created
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("etag")
        .to_owned();
    assert_eq!(etag, "\"r1\"");
    // A stale ETag or expected version: 412, and nothing changes.
    let moved = app
        .raw_as(
            Method::PUT,
            "/v1/prompts/p/labels/canary",
            Some("application/json"),
            br#"{"version": 2}"#.to_vec(),
            &[("if-match", etag.as_str())],
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let stale = app
        .raw_as(
            Method::PUT,
            "/v1/prompts/p/labels/canary",
            Some("application/json"),
            br#"{"version": 1}"#.to_vec(),
            &[("if-match", etag.as_str())],
        )
        .await;
    stale.problem(412);
    put(
        &app,
        "/v1/prompts/p/labels/canary",
        &json!({"version": 1, "expected_version": 1}),
    )
    .await
    .problem(412);
    app.delete("/v1/prompts/p/labels/canary?expected_version=1")
        .await
        .problem(412);
    assert_eq!(app.get("/v1/prompts/p/versions/canary").await.body["version"], 2);
    let garbage = app
        .raw_as(
            Method::PUT,
            "/v1/prompts/p/labels/canary",
            Some("application/json"),
            br#"{"version": 1}"#.to_vec(),
            &[("if-match", "yesterday")],
        )
        .await;
    garbage.problem(400);
    app.get("/v1/prompts/p/versions/Prod").await.problem(400);
    app.get("/v1/prompts/p/versions/nothing-here").await.problem(404);
    app.raw(
        Method::POST,
        "/v1/prompts/p/labels/canary/rollback",
        Some("application/json"),
        b"{".to_vec(),
    )
    .await
    .problem(400);
}

async fn of_a_hundred_concurrent_moves_expecting_the_same_version_exactly_one_wins(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "race", 3).await;
    assert_eq!(
        put(&app, "/v1/prompts/race/labels/canary", &json!({"version": 1}))
            .await
            .status,
        201
    );
    let moves = (0..100).map(|i| {
        let app = &app;
        async move {
            put(
                app,
                "/v1/prompts/race/labels/canary",
                &json!({"version": 2 + i % 2, "expected_version": 1, "reason": format!("move {i}")}),
            )
            .await
            .status
            .as_u16()
        }
    });
    let statuses = futures::future::join_all(moves).await;
    let won = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 412).count();
    eprintln!("compare-and-set: 100 concurrent moves, {won} succeeded, {refused} refused with 412");
    assert_eq!((won, refused), (1, 99), "{statuses:?}");
    let history = app.get("/v1/prompts/race/labels/canary/history").await;
    assert_eq!(
        history.body["items"].as_array().map(Vec::len),
        Some(2),
        "one creation, one move"
    );
}

async fn protected_labels_need_the_release_scope(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "p", 3).await;
    assert_eq!(
        put(&app, "/v1/prompts/p/labels/production", &json!({"version": 1}))
            .await
            .status,
        201
    );
    let write = key(&app, &["read", "write"]).await;
    let release = key(&app, &["release"]).await;

    // `write` may not move, remove, roll back or activate production.
    let body = json!({"version": 2});
    for (method, path, body) in [
        (Method::PUT, "/v1/prompts/p/labels/production", Some(&body)),
        (Method::DELETE, "/v1/prompts/p/labels/production", None),
        (Method::POST, "/v1/prompts/p/labels/production/rollback", None),
        (Method::POST, "/v1/prompts/p/versions/2/activate", None),
    ] {
        let res = as_key(&app, &write, method.clone(), path, body, &[]).await;
        assert_eq!(res.problem(403)["errors"][0]["field"], "label", "{method} {path}");
        assert!(
            res.body["detail"].as_str().unwrap_or("").contains("production"),
            "{}",
            res.text
        );
    }
    // Nor create a version that would move it; with `activate: false` it may.
    let res = as_key(
        &app,
        &write,
        Method::POST,
        "/v1/prompts/p/versions",
        Some(&json!({"template": "x"})),
        &[],
    )
    .await;
    res.problem(403);
    let res = as_key(
        &app,
        &write,
        Method::POST,
        "/v1/prompts/p/versions",
        Some(&json!({"template": "x", "activate": false, "labels": ["staging"]})),
        &[],
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(app.get("/v1/prompts/p/versions/active").await.body["version"], 1);
    // Other labels are open to `write`.
    let res = as_key(
        &app,
        &write,
        Method::PUT,
        "/v1/prompts/p/labels/staging",
        Some(&json!({"version": 3})),
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);

    // `release` may.
    let res = as_key(
        &app,
        &release,
        Method::PUT,
        "/v1/prompts/p/labels/production",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(app.get("/v1/prompts/p/versions/active").await.body["version"], 2);
    let history = app.get("/v1/prompts/p/labels/production/history").await;
    assert_eq!(history.body["items"][0]["actor"]["name"], "release");
    assert!(history.body["items"][0]["actor"]["key_id"].is_string());

    // Only an admin may lift the protection; then `write` may move it.
    let off = json!({"protected": false});
    as_key(
        &app,
        &release,
        Method::PATCH,
        "/v1/prompts/p/labels/production",
        Some(&off),
        &[],
    )
    .await
    .problem(403);
    let res = app.patch("/v1/prompts/p/labels/production", &off).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["protected"], false);
    let res = as_key(
        &app,
        &write,
        Method::POST,
        "/v1/prompts/p/versions/1/activate",
        None,
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.patch("/v1/prompts/p/labels/nowhere", &json!({"protected": true}))
        .await
        .problem(404);

    // A removed protected label stays protected: `write` cannot set it again.
    assert_eq!(
        app.patch("/v1/prompts/p/labels/production", &json!({"protected": true}))
            .await
            .status,
        200
    );
    assert_eq!(app.delete("/v1/prompts/p/labels/production").await.status, 204);
    as_key(
        &app,
        &write,
        Method::PUT,
        "/v1/prompts/p/labels/production",
        Some(&body),
        &[],
    )
    .await
    .problem(403);
}

async fn a_split_label_serves_each_subject_one_arm_and_runs_compare_the_arms(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "checkout", 2).await;
    let split = json!({"split": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]});
    let res = put(&app, "/v1/prompts/checkout/labels/production", &split).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["target"], split);
    let prompt = app.get("/v1/prompts/checkout").await;
    assert_eq!(
        prompt.body["active_version"],
        Value::Null,
        "a split has no single active version"
    );

    // The same subject, by query or header, always gets the same arm.
    let mut arms = [0u32; 2];
    for i in 0..400 {
        let path = format!("/v1/prompts/checkout/versions/production?subject=user-{i}");
        let first = app.get(&path).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(
            first
                .headers
                .get("x-prompt-split")
                .map(awc::error::HeaderValue::as_bytes),
            Some(&b"true"[..])
        );
        let served = first
            .headers
            .get("x-prompt-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(first.body["version"].to_string(), served);
        let subject = format!("user-{i}");
        let again = app
            .raw_as(
                Method::GET,
                "/v1/prompts/checkout/versions/active",
                None,
                Vec::new(),
                &[("x-prompt-subject", subject.as_str())],
            )
            .await;
        assert_eq!(again.body["version"], first.body["version"], "subject user-{i}");
        arms[usize::from(first.body["version"] == 2)] += 1;
    }
    eprintln!("split 90/10 over 400 subjects: {arms:?}");
    assert!((20..=65).contains(&arms[1]), "about 10 % get version 2: {arms:?}");
    app.get("/v1/prompts/checkout/versions/production?subject=")
        .await
        .problem(400);

    // Render follows the subject too.
    let render = app
        .post(
            "/v1/prompts/checkout/render",
            &json!({"label": "production", "subject": "user-7", "variables": {"who": "Ada"}}),
        )
        .await;
    assert_eq!(render.status, 200, "{}", render.text);
    let fetched = app
        .get("/v1/prompts/checkout/versions/production?subject=user-7")
        .await;
    assert_eq!(render.body["version"], fetched.body["version"]);

    // Runs record their label; a split label needs the version named.
    let run = |version: Option<u32>, status: &str| {
        let mut body =
            json!({"prompt": "checkout", "label": "production", "status": status, "latency_ms": 10.0});
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        body
    };
    let res = app.post("/v1/runs", &run(None, "success")).await;
    assert!(
        res.problem(422)["errors"][0]["field"] == "version",
        "{}",
        res.text
    );
    for (version, status, n) in [
        (1, "success", 9),
        (1, "error", 1),
        (2, "success", 2),
        (2, "error", 2),
    ] {
        for _ in 0..n {
            let res = app.post("/v1/runs", &run(Some(version), status)).await;
            assert_eq!(res.status, 201, "{}", res.text);
            assert_eq!(res.body["label"], "production");
        }
    }
    app.post(
        "/v1/runs",
        &json!({"prompt": "checkout", "version": 1, "status": "success", "latency_ms": 1.0}),
    )
    .await;
    let listed = app
        .get("/v1/runs?prompt=checkout&label=production&limit=100")
        .await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(14));
    app.get("/v1/runs?label=Bad").await.problem(400);
    app.post(
        "/v1/runs",
        &json!({"prompt": "checkout", "label": "nowhere", "status": "success", "latency_ms": 1.0}),
    )
    .await
    .problem(422);

    let stats = app.get("/v1/prompts/checkout/stats?group_by=label").await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let rows: Vec<(u64, Option<String>, u64, f64)> = stats.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap_or(0),
                r["label"].as_str().map(str::to_owned),
                r["count"].as_u64().unwrap_or(0),
                r["error_rate"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, None, 1, 0.0),
            (1, Some("production".into()), 10, 0.1),
            (2, Some("production".into()), 4, 0.5),
        ]
    );
    let only = app.get("/v1/prompts/checkout/stats?label=production").await;
    assert_eq!(only.body["items"].as_array().map(Vec::len), Some(2));
    app.get("/v1/prompts/checkout/stats?group_by=model")
        .await
        .problem(400);
}

async fn every_change_is_in_the_audit_log_and_reads_are_not(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("audited").await;
    app.create_version("audited", &json!({"template": "one"})).await;
    assert_eq!(
        put(&app, "/v1/prompts/audited/labels/staging", &json!({"version": 1}))
            .await
            .status,
        201
    );
    assert_eq!(
        app.patch("/v1/prompts/audited/labels/staging", &json!({"protected": true}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.patch("/v1/prompts/audited", &json!({"description": "d"}))
            .await
            .status,
        200
    );
    let writer = key(&app, &["write"]).await;
    app.get("/v1/prompts/audited").await;
    let request_id = "audit-request-42";
    let res = as_key(
        &app,
        &writer,
        Method::POST,
        "/v1/prompts/audited/versions",
        Some(&json!({"template": "two", "activate": false})),
        &[("x-request-id", request_id)],
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    app.delete("/v1/prompts/audited").await;

    let log = app.get("/v1/audit?limit=100").await;
    assert_eq!(log.status, 200, "{}", log.text);
    let actions: Vec<&str> = log.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        [
            "prompt.deleted",
            "version.created",
            "key.created",
            "prompt.updated",
            "label.protected",
            "label.moved",
            "version.created",
            "label.moved",
            "prompt.created",
        ],
        "newest first, reads not recorded"
    );
    let by_writer = app.get("/v1/audit?actor=write&action=version.created").await;
    let items = by_writer.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["request_id"], request_id);
    assert_eq!(items[0]["target"], "prompt:audited@2");
    let labels = app.get("/v1/audit?target=prompt:audited%23*").await;
    assert_eq!(labels.body["items"].as_array().map(Vec::len), Some(3));
    let protected = app.get("/v1/audit?action=label.protected").await;
    assert_eq!(protected.body["items"][0]["before"], json!({"protected": false}));
    assert_eq!(protected.body["items"][0]["after"], json!({"protected": true}));
    let page = app.get("/v1/audit?limit=2").await;
    let cursor = page.body["next_cursor"].as_str().expect("more").to_owned();
    let next = app.get(&format!("/v1/audit?limit=2&cursor={cursor}")).await;
    assert_eq!(next.body["items"][0]["action"], "key.created");
    app.get("/v1/audit?action=label.deleted").await.problem(400);
    app.get("/v1/audit?from=yesterday").await.problem(400);
    app.get("/v1/audit?cursor=zz").await.problem(400);
    as_key(&app, &writer, Method::GET, "/v1/audit", None, &[])
        .await
        .problem(403);
}

async fn many_prompts_resolve_in_one_call_with_an_error_per_item(backend: Backend) {
    let app = spawn_app(&backend).await;
    prompt_with_versions(&app, "a", 2).await;
    prompt_with_versions(&app, "b", 2).await;
    assert_eq!(
        put(&app, "/v1/prompts/a/labels/production", &json!({"version": 2}))
            .await
            .status,
        201
    );
    let split = json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]});
    assert_eq!(put(&app, "/v1/prompts/b/labels/canary", &split).await.status, 201);
    let reader = key(&app, &["read"]).await;
    let body = json!({"items": [
        {"name": "a"},
        {"name": "a", "version": 1},
        {"name": "b", "label": "canary", "subject": "user-9"},
        {"name": "b"},
        {"name": "ghost"},
        {"name": "a", "label": "nope"}
    ]});
    let res = as_key(
        &app,
        &reader,
        Method::POST,
        "/v1/prompts:resolve",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let items = res.body["items"].as_array().expect("items");
    let summary: Vec<(u64, Value)> = items
        .iter()
        .map(|i| (i["status"].as_u64().unwrap_or(0), i["version"]["version"].clone()))
        .collect();
    assert_eq!(summary[0], (200, json!(2)));
    assert_eq!(summary[1], (200, json!(1)));
    assert_eq!(summary[2].0, 200);
    assert_eq!(items[2]["split"], true);
    let fetched = app.get("/v1/prompts/b/versions/canary?subject=user-9").await;
    assert_eq!(
        items[2]["version"]["version"], fetched.body["version"],
        "the same arm as a fetch"
    );
    assert_eq!(summary[3].0, 404, "b has no production label");
    assert_eq!(items[4]["error"]["code"], "not_found");
    assert_eq!(summary[5].0, 404, "a has no label `nope`");
    // A malformed item refuses the request, naming it.
    let malformed = json!({"items": [{"name": "a"}, {"name": "Bad Name"}, {"name": "a", "label": "Nope"}, {"name": "a", "version": 0}]});
    let res = app.post("/v1/prompts:resolve", &malformed).await;
    res.problem(422);
    assert_eq!(
        res.error_fields(),
        ["items[1].name", "items[2].label", "items[3].version"]
    );
    let too_many = json!({"items": (0..101).map(|_| json!({"name": "a"})).collect::<Vec<_>>()});
    app.post("/v1/prompts:resolve", &too_many).await.problem(422);
    app.post("/v1/prompts:resolve", &json!({"items": []}))
        .await
        .problem(422);
    app.post(
        "/v1/prompts:resolve",
        &json!({"items": [{"name": "a", "extra": 1}]}),
    )
    .await
    .problem(422);
}

async fn every_change_is_published_as_a_numbered_event(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("ev").await;
    app.create_version("ev", &json!({"template": "one", "labels": ["staging"]}))
        .await;
    app.create_version("ev", &json!({"template": "two", "activate": false}))
        .await;
    assert_eq!(
        put(&app, "/v1/prompts/ev/labels/production", &json!({"version": 2}))
            .await
            .status,
        200
    );
    assert_eq!(app.delete("/v1/prompts/ev/labels/staging").await.status, 204);
    app.get("/v1/prompts/ev/versions/active").await;
    assert_eq!(app.delete("/v1/prompts/ev").await.status, 204);
    let page = app.get("/v1/events?limit=1000").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let items = page.body["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(
        kinds,
        [
            "prompt.created",
            "label.moved",
            "label.moved",
            "version.created",
            "version.created",
            "label.moved",
            "label.removed",
            "prompt.deleted",
        ],
        "one event per change, reads publish nothing"
    );
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap_or(0)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        items[5]["data"],
        json!({"label": "production", "from": {"version": 1}, "to": {"version": 2}})
    );
    assert_eq!(
        items[3]["data"],
        json!({"version": 1, "labels": ["production", "staging"]})
    );
    assert_eq!(
        items[6]["data"],
        json!({"label": "staging", "from": {"version": 1}})
    );
    let after = seqs[5];
    let rest = app.get(&format!("/v1/events?after={after}&limit=1")).await;
    assert_eq!(rest.body["items"][0]["type"], "label.removed");
    assert_eq!(rest.body["next_after"], seqs[6]);
    let none = app.get(&format!("/v1/events?after={}", seqs[7])).await;
    assert_eq!(none.body["items"], json!([]));
    assert_eq!(none.body["next_after"], seqs[7]);
    app.get("/v1/events?after=-1").await.problem(400);
    app.get("/v1/events?limit=0").await.problem(400);
    app.get("/v1/events?after=x").await.problem(400);
}

backend_tests!(
    #[actix_web::test]
    every_change_is_published_as_a_numbered_event,
    many_prompts_resolve_in_one_call_with_an_error_per_item,
    a_version_moves_from_staging_to_production_and_back_with_its_history,
    a_removed_label_stops_resolving_at_once,
    bad_labels_targets_and_preconditions_are_problems,
    of_a_hundred_concurrent_moves_expecting_the_same_version_exactly_one_wins,
    protected_labels_need_the_release_scope,
    a_split_label_serves_each_subject_one_arm_and_runs_compare_the_arms,
    every_change_is_in_the_audit_log_and_reads_are_not,
);
