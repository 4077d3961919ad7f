use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::json;

use crate::helpers::spawn_app;

async fn creating_a_prompt_answers_201_with_its_location(backend: Backend) {
    let app = spawn_app(&backend).await;
    let res = app
        .post(
            "/v1/prompts",
            &json!({"name": "support/triage", "description": "Routes tickets", "tags": ["support", "v2"]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.headers.get("location").map(awc::error::HeaderValue::as_bytes),
        Some(&b"/v1/prompts/support%2Ftriage"[..])
    );
    assert_eq!(res.body["name"], "support/triage");
    assert_eq!(res.body["description"], "Routes tickets");
    assert_eq!(res.body["tags"], json!(["support", "v2"]));
    assert_eq!(res.body["active_version"], json!(null));
    assert!(res.body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let got = app.get("/v1/prompts/support%2Ftriage").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["id"], res.body["id"]);
}

async fn a_taken_name_is_a_409_problem(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("dup").await;
    let res = app.post("/v1/prompts", &json!({"name": "dup"})).await;
    assert_eq!(res.problem(409)["code"], "already_exists");
}

async fn a_bad_name_is_a_422_naming_the_field(backend: Backend) {
    let app = spawn_app(&backend).await;
    for bad in ["", "Upper", "-dash", "sp ace", &"x".repeat(129)] {
        let res = app.post("/v1/prompts", &json!({"name": bad})).await;
        res.problem(422);
        assert_eq!(res.error_fields(), vec!["name"], "{bad}: {}", res.text);
    }
    let res = app
        .post("/v1/prompts", &json!({"name": "ok", "tags": ["", "fine"]}))
        .await;
    res.problem(422);
    assert_eq!(res.error_fields(), vec!["tags[0]"]);
}

async fn a_missing_prompt_is_a_404_problem(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.get("/v1/prompts/ghost").await.problem(404);
    app.patch("/v1/prompts/ghost", &json!({"description": "x"}))
        .await
        .problem(404);
    app.delete("/v1/prompts/ghost").await.problem(404);
}

async fn prompts_are_paged_in_creation_order(backend: Backend) {
    let app = spawn_app(&backend).await;
    for i in 0..5 {
        app.create_prompt(&format!("p{i}")).await;
    }
    let mut names = Vec::new();
    let mut path = "/v1/prompts?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let res = app.get(&path).await;
        assert_eq!(res.status, 200, "{}", res.text);
        pages += 1;
        names.extend(
            res.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_owned()),
        );
        match res.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/prompts?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, vec!["p0", "p1", "p2", "p3", "p4"]);
    let default_page = app.get("/v1/prompts").await;
    assert_eq!(default_page.body["items"].as_array().map(Vec::len), Some(5));
    assert_eq!(default_page.body["next_cursor"], json!(null));
}

async fn prompts_are_filtered_by_prefix_tag_and_time(backend: Backend) {
    let app = spawn_app(&backend).await;
    let first = app
        .post("/v1/prompts", &json!({"name": "team/a", "tags": ["prod"]}))
        .await
        .body;
    app.post("/v1/prompts", &json!({"name": "team/b", "tags": ["dev"]}))
        .await;
    app.post("/v1/prompts", &json!({"name": "other", "tags": ["prod"]}))
        .await;
    let names = |res: &crate::helpers::Response| -> Vec<String> {
        res.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names(&app.get("/v1/prompts?q=team%2F").await),
        vec!["team/a", "team/b"]
    );
    assert_eq!(
        names(&app.get("/v1/prompts?tag=prod").await),
        vec!["team/a", "other"]
    );
    assert_eq!(
        names(&app.get("/v1/prompts?q=team%2F&tag=prod").await),
        vec!["team/a"]
    );
    let after = first["created_at"]
        .as_str()
        .expect("timestamp")
        .replace(':', "%3A");
    assert_eq!(
        names(&app.get(&format!("/v1/prompts?created_after={after}")).await),
        vec!["team/b", "other"]
    );
    assert_eq!(
        names(&app.get(&format!("/v1/prompts?created_before={after}")).await),
        Vec::<String>::new()
    );
}

async fn patching_changes_description_and_tags(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.post(
        "/v1/prompts",
        &json!({"name": "p", "description": "old", "tags": ["a"]}),
    )
    .await;
    let res = app.patch("/v1/prompts/p", &json!({"tags": ["b", "c"]})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["description"], "old");
    assert_eq!(res.body["tags"], json!(["b", "c"]));
    let res = app.patch("/v1/prompts/p", &json!({"description": null})).await;
    assert_eq!(res.body["description"], json!(null));
    assert_eq!(res.body["tags"], json!(["b", "c"]));
    let res = app
        .patch("/v1/prompts/p", &json!({"description": "d".repeat(4001)}))
        .await;
    res.problem(422);
    assert_eq!(res.error_fields(), vec!["description"]);
    let res = app.patch("/v1/prompts/p", &json!({"name": "renamed"})).await;
    res.problem(422);
}

async fn deleting_a_prompt_answers_204_and_removes_it(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("gone/soon").await;
    app.create_version("gone/soon", &json!({"template": "hi"})).await;
    let res = app.delete("/v1/prompts/gone%2Fsoon").await;
    assert_eq!(res.status, 204);
    assert!(res.text.is_empty());
    app.get("/v1/prompts/gone%2Fsoon").await.problem(404);
    app.get("/v1/prompts/gone%2Fsoon/versions/1").await.problem(404);
}

backend_tests!(
    #[actix_web::test]
    creating_a_prompt_answers_201_with_its_location,
    a_taken_name_is_a_409_problem,
    a_bad_name_is_a_422_naming_the_field,
    a_missing_prompt_is_a_404_problem,
    prompts_are_paged_in_creation_order,
    prompts_are_filtered_by_prefix_tag_and_time,
    patching_changes_description_and_tags,
    deleting_a_prompt_answers_204_and_removes_it,
);
