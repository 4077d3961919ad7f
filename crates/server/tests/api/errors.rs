//! Bad input anywhere gets a 4xx problem+json answer, never a 500 or HTML.

use actix_web::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::json;

use crate::helpers::{JSON_LIMIT, spawn_app};

async fn malformed_json_is_a_400(backend: Backend) {
    let app = spawn_app(&backend).await;
    for body in [&b"{"[..], b"not json", b"{\"name\": \"x\",}", b""] {
        let res = app
            .raw(
                Method::POST,
                "/v1/prompts",
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        assert_eq!(
            res.problem(400)["code"],
            "malformed_json",
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

async fn wrong_types_and_unknown_fields_are_422(backend: Backend) {
    let app = spawn_app(&backend).await;
    for body in [
        json!({"name": 5}),
        json!({"name": "x", "tags": "a"}),
        json!({"name": "x", "colour": "red"}),
        json!([]),
    ] {
        let res = app.post("/v1/prompts", &body).await;
        assert_eq!(res.problem(422)["code"], "validation_failed", "{body}");
    }
}

async fn an_oversize_body_is_a_413(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    let huge = json!({"template": "x".repeat(JSON_LIMIT + 1)});
    let res = app.post("/v1/prompts/p/versions", &huge).await;
    assert_eq!(res.problem(413)["code"], "payload_too_large");
}

async fn a_wrong_content_type_is_a_415(backend: Backend) {
    let app = spawn_app(&backend).await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let res = app
            .raw(Method::POST, "/v1/prompts", ct, br#"{"name":"x"}"#.to_vec())
            .await;
        assert_eq!(res.problem(415)["code"], "unsupported_media_type", "{ct:?}");
    }
}

async fn bad_query_parameters_are_400(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    for path in [
        "/v1/prompts?limit=0",
        "/v1/prompts?limit=101",
        "/v1/prompts?limit=-5",
        "/v1/prompts?limit=ten",
        "/v1/prompts?cursor=garbage",
        "/v1/prompts?cursor=00",
        "/v1/prompts?created_after=yesterday",
        "/v1/prompts?created_before=2026-13-01T00:00:00Z",
        "/v1/prompts?unknown=1",
        "/v1/prompts/p/versions?limit=1000",
        "/v1/prompts/p/versions?cursor=%00",
    ] {
        let res = app.get(path).await;
        let code = if path.contains("cursor=") {
            "invalid_cursor"
        } else {
            "invalid_parameter"
        };
        assert_eq!(res.problem(400)["code"], code, "{path}");
    }
    // A cursor of one listing is not accepted by another.
    app.create_version("p", &json!({"template": "a"})).await;
    app.create_version("p", &json!({"template": "b"})).await;
    let versions = app.get("/v1/prompts/p/versions?limit=1").await;
    let cursor = versions.body["next_cursor"].as_str().expect("a cursor");
    app.get(&format!("/v1/prompts?cursor={cursor}"))
        .await
        .problem(400);
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(&backend).await;
    assert_eq!(app.get("/nowhere").await.problem(404)["code"], "not_found");
    app.get("/v1/prompts/a/b/c/d").await.problem(404);
    let res = app
        .raw(
            Method::PUT,
            "/v1/prompts",
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert!(res.status.is_client_error());
    assert_eq!(res.content_type(), "application/problem+json");
}

async fn internal_details_never_reach_the_client(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app
        .post("/v1/prompts", &json!({"name": "x", "bogus": true}))
        .await;
    res.problem(422);
    assert!(
        !res.text.contains("sqlx") && !res.text.contains("DbErr"),
        "{}",
        res.text
    );
}

backend_tests!(
    #[actix_web::test]
    malformed_json_is_a_400,
    wrong_types_and_unknown_fields_are_422,
    an_oversize_body_is_a_413,
    a_wrong_content_type_is_a_415,
    bad_query_parameters_are_400,
    unknown_routes_and_methods_are_problems,
    internal_details_never_reach_the_client,
);
