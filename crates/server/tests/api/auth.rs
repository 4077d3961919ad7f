//! Authentication: the matrix of every operation in the server's own OpenAPI
//! document (so a new route is covered without being listed here) × no key,
//! a bad key, a revoked key and each scope; and key management itself.

use actix_web::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn create_key(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let res = app
        .post(
            "/v1/api-keys",
            &json!({"name": format!("{scopes:?}"), "scopes": scopes}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    (
        res.body["id"].as_str().expect("id").to_owned(),
        res.body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// The scope an operation needs, by the documented rule.
fn needed(method: &str, path: &str) -> Option<&'static str> {
    if !path.starts_with("/v1/") && path != "/metrics" {
        return None;
    }
    if path.starts_with("/v1/api-keys")
        || path.starts_with("/v1/audit")
        || path.starts_with("/v1/webhooks")
        || path == "/metrics"
    {
        Some("admin")
    } else if method == "get" || path == "/v1/prompts:resolve" {
        Some("read")
    } else {
        Some("write")
    }
}

fn concrete(path: &str) -> String {
    let url = path
        .replace("{name}", "matrix")
        .replace("{version}", "1")
        .replace("{selector}", "1")
        .replace("{label}", "staging")
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{delivery}", "00000000-0000-0000-0000-000000000000");
    // The stream never ends: a filter it refuses (400, after the key is
    // checked) gives an answer to read.
    if url.ends_with("/events/stream") {
        return format!("{url}?types=none-such");
    }
    url
}

async fn every_operation_checks_keys_and_scopes(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("matrix").await;
    let read = create_key(&app, &["read"]).await.1;
    let write = create_key(&app, &["write"]).await.1;
    let release = create_key(&app, &["release"]).await.1;
    let admin = create_key(&app, &["admin"]).await.1;
    let (revoked_id, revoked) = create_key(&app, &["admin"]).await;
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{revoked_id}")).await.status,
        204
    );

    let doc = app.get("/openapi.json").await.body;
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                operations.push((method.to_owned(), path.clone()));
            }
        }
    }
    assert!(
        operations.len() >= 20,
        "the route table has {} operations",
        operations.len()
    );
    let mut checked = 0;
    for (method, path) in &operations {
        let url = concrete(path);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let send = |headers: Vec<(&'static str, String)>| {
            let (app, m, url) = (&app, m.clone(), url.clone());
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let body = if m == Method::GET || m == Method::DELETE {
                    Vec::new()
                } else {
                    b"{}".to_vec()
                };
                app.raw_as(m, &url, Some("application/json"), body, &h).await
            }
        };
        let Some(scope) = needed(method, path) else {
            let res = send(vec![("authorization", String::new())]).await;
            assert_ne!(res.status, 401, "{method} {path} is public");
            checked += 1;
            continue;
        };
        for (what, auth) in [
            ("no key", String::new()),
            (
                "a bad key",
                "Bearer pr_00000000_0000000000000000000000000000000000000000".to_owned(),
            ),
            ("garbage", "Bearer nonsense".to_owned()),
            ("a revoked key", format!("Bearer {revoked}")),
        ] {
            let res = send(vec![("authorization", auth)]).await;
            res.problem(401);
            assert_eq!(
                res.headers
                    .get("www-authenticate")
                    .map(awc::error::HeaderValue::as_bytes),
                Some(&b"Bearer"[..]),
                "{method} {path}"
            );
            assert!(res.status == 401, "{method} {path} with {what}");
            checked += 1;
        }
        for (name, key) in [
            ("read", &read),
            ("write", &write),
            ("release", &release),
            ("admin", &admin),
        ] {
            let res = send(vec![("authorization", format!("Bearer {key}"))]).await;
            // `release` implies `write`; `admin` implies everything.
            let allowed = name == "admin" || name == scope || (name == "release" && scope == "write");
            if allowed {
                assert!(
                    res.status != 401 && res.status != 403,
                    "{method} {path} with {name}: {}",
                    res.status
                );
            } else {
                assert_eq!(
                    res.problem(403)["code"],
                    "forbidden",
                    "{method} {path} with {name}"
                );
            }
            checked += 1;
        }
    }
    eprintln!("auth matrix: {} operations, {checked} requests", operations.len());
    // The X-API-Key header works as well as a bearer token.
    let res = app
        .raw_as(
            Method::GET,
            "/v1/prompts",
            None,
            Vec::new(),
            &[("authorization", ""), ("x-api-key", &read)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

async fn keys_are_shown_once_listed_without_secrets_and_revocable(backend: Backend) {
    let app = spawn_app(&backend).await;
    let created = app
        .post(
            "/v1/api-keys",
            &json!({"name": "svc", "scopes": ["read", "write"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("pr_") && secret.len() >= 52);
    let listed = app.get("/v1/api-keys").await;
    assert!(
        !listed.text.contains(&secret[12..]),
        "listings never show the secret"
    );
    let mine: Vec<&Value> = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter(|k| k["name"] == "svc")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["scopes"], json!(["read", "write"]));
    let bearer = format!("Bearer {secret}");
    let headers = [("authorization", bearer.as_str())];
    let use_it = || app.raw_as(Method::GET, "/v1/prompts", None, Vec::new(), &headers);
    assert_eq!(use_it().await.status, 200);
    let id = created.body["id"].as_str().expect("id");
    assert_eq!(app.delete(&format!("/v1/api-keys/{id}")).await.status, 204);
    use_it().await.problem(401);
    app.delete("/v1/api-keys/00000000-0000-0000-0000-000000000000")
        .await
        .problem(404);
    app.delete("/v1/api-keys/not-a-uuid").await.problem(400);
    for bad in [
        json!({"name": "", "scopes": ["read"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
    ] {
        app.post("/v1/api-keys", &bad).await.problem(422);
    }
}

backend_tests!(
    #[actix_web::test]
    every_operation_checks_keys_and_scopes,
    keys_are_shown_once_listed_without_secrets_and_revocable,
);
