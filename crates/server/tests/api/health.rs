use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;

use crate::helpers::spawn_app;

async fn health_answers_ok(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app.get("/health").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["status"], "ok");
}

async fn ready_answers_200_when_the_database_answers(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app.get("/ready").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "ready");
    assert_eq!(res.body["checks"]["database"], "ok");
    assert_eq!(res.body["checks"]["cache"], "in_process");
}

async fn the_openapi_document_lists_every_operation(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status, 200);
    let paths = &res.body["paths"];
    let expected = [
        ("/health", "get"),
        ("/ready", "get"),
        ("/v1/prompts", "post"),
        ("/v1/prompts", "get"),
        ("/v1/prompts/{name}", "get"),
        ("/v1/prompts/{name}", "patch"),
        ("/v1/prompts/{name}", "delete"),
        ("/v1/prompts/{name}/versions", "post"),
        ("/v1/prompts/{name}/versions", "get"),
        ("/v1/prompts/{name}/versions/{selector}", "get"),
        ("/v1/prompts/{name}/versions/{version}/activate", "post"),
        ("/v1/prompts/{name}/render", "post"),
        ("/v1/prompts/{name}/labels", "get"),
        ("/v1/prompts/{name}/labels/{label}", "get"),
        ("/v1/prompts/{name}/labels/{label}", "put"),
        ("/v1/prompts/{name}/labels/{label}", "patch"),
        ("/v1/prompts/{name}/labels/{label}", "delete"),
        ("/v1/prompts/{name}/labels/{label}/history", "get"),
        ("/v1/prompts/{name}/labels/{label}/rollback", "post"),
        ("/v1/audit", "get"),
        ("/v1/prompts/{name}/diff", "get"),
        ("/v1/prompts/{name}/dependents", "get"),
        ("/v1/prompts:resolve", "post"),
        ("/v1/events", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
}

async fn swagger_ui_is_served_from_vendored_assets(backend: Backend) {
    let app = spawn_app(&backend).await;
    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect
            .headers
            .get("location")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"/docs/"[..])
    );
    let page = app.get("/docs/").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.text.len() > 100_000, "the bundle is served in full");
}

backend_tests!(
    #[actix_web::test]
    health_answers_ok,
    ready_answers_200_when_the_database_answers,
    the_openapi_document_lists_every_operation,
    swagger_ui_is_served_from_vendored_assets,
);
