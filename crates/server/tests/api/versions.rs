use std::collections::BTreeSet;

use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::json;

use crate::helpers::spawn_app;

async fn a_prompt_goes_through_versions_rollback_and_render(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("greeting").await;
    let v1 = app
        .create_version(
            "greeting",
            &json!({
                "template": "Hello {{ name }}!",
                "variables": {"name": {"type": "string"}},
                "config": {"model": "gpt-x", "temperature": 0.2},
                "commit_message": "first"
            }),
        )
        .await;
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["is_active"], true);
    assert_eq!(v1["kind"], "text");
    assert_eq!(v1["prompt_name"], "greeting");
    assert_eq!(v1["config"]["temperature"], 0.2);
    let v2 = app
        .create_version(
            "greeting",
            &json!({"template": "Hi {{name}}, {{mood}}?", "variables": {"name": {}, "mood": {"default": "ok"}}}),
        )
        .await;
    assert_eq!(v2["version"], 2);
    let active = app.get("/v1/prompts/greeting/versions/active").await;
    assert_eq!(active.body["version"], 2);
    // Going back drops `mood` (callers sending it would be refused) and
    // narrows `name`: production is protected, so that must be said.
    let refused = app
        .post("/v1/prompts/greeting/versions/1/activate", &json!({}))
        .await;
    assert_eq!(refused.problem(409)["code"], "breaking_change");
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/active").await.body["version"],
        2,
        "a refused move changes nothing"
    );
    let rolled_back = app
        .post(
            "/v1/prompts/greeting/versions/1/activate?allow_breaking=true",
            &json!({}),
        )
        .await;
    assert_eq!(rolled_back.status, 200, "{}", rolled_back.text);
    assert_eq!(rolled_back.body["version"], 1);
    assert_eq!(rolled_back.body["is_active"], true);
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/active").await.body["version"],
        1
    );
    assert_eq!(
        app.get("/v1/prompts/greeting/versions/2").await.body["is_active"],
        false
    );
    let prompt = app.get("/v1/prompts/greeting").await;
    assert_eq!(
        (
            prompt.body["active_version"].clone(),
            prompt.body["latest_version"].clone()
        ),
        (json!(1), json!(2))
    );
    let rendered = app
        .post(
            "/v1/prompts/greeting/render",
            &json!({"variables": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(rendered.status, 200, "{}", rendered.text);
    assert_eq!(
        rendered.body,
        json!({"version": 1, "kind": "text", "text": "Hello Ada!"})
    );
    let rendered = app
        .post(
            "/v1/prompts/greeting/render",
            &json!({"version": 2, "variables": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(rendered.body["text"], "Hi Ada, ok?");
}

async fn an_undeclared_placeholder_is_rejected_by_name(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    let res = app
        .post(
            "/v1/prompts/p/versions",
            &json!({"template": "{{a}} {{b}}", "variables": {"a": {}}}),
        )
        .await;
    res.problem(422);
    assert!(
        res.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("{{b}}")),
        "{}",
        res.text
    );
    assert_eq!(
        app.get("/v1/prompts/p").await.body["latest_version"],
        json!(null),
        "nothing was stored"
    );
}

async fn invalid_templates_and_variables_are_422_naming_each_field(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    let cases = [
        (json!({"template": "{{ two words }}"}), vec!["template"]),
        (json!({"template": ""}), vec!["template"]),
        (json!({"template": "x", "kind": "chat"}), vec!["template"]),
        (
            json!({"template": [{"role": "user"}]}),
            vec!["template[0].content"],
        ),
        (
            json!({"template": "{{n}}", "variables": {"n": {"type": "number", "default": "seven"}}}),
            vec!["variables.n.default"],
        ),
        (
            json!({"template": "x", "variables": {"9bad": {}}}),
            vec!["variables.9bad"],
        ),
        (
            json!({"template": "x", "commit_message": "m".repeat(2001)}),
            vec!["commit_message"],
        ),
    ];
    for (body, fields) in cases {
        let res = app.post("/v1/prompts/p/versions", &body).await;
        res.problem(422);
        assert_eq!(res.error_fields(), fields, "{body}: {}", res.text);
    }
    for body in [
        json!({"template": "x", "variables": {"v": {"type": "strng"}}}),
        json!({"template": "x", "config": [1, 2]}),
        json!({"template": "x", "activate": "yes"}),
        json!({"template": "x", "variables": {"v": {"requird": true}}}),
        json!({"template": "x", "kind": {}}),
        json!({"template": "x", "variables": {"v": {"type": {}}}}),
    ] {
        app.post("/v1/prompts/p/versions", &body).await.problem(422);
    }
}

async fn a_version_created_without_activation_is_not_served_as_active(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    app.create_version("p", &json!({"template": "one"})).await;
    let v2 = app
        .create_version("p", &json!({"template": "two", "activate": false}))
        .await;
    assert_eq!(v2["is_active"], false);
    assert_eq!(
        app.get("/v1/prompts/p/versions/active").await.body["template"],
        "one"
    );
    assert_eq!(
        app.get("/v1/prompts/p/versions/latest").await.body["template"],
        "two"
    );
}

async fn missing_versions_and_bad_numbers_are_problems(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    app.get("/v1/prompts/p/versions/active").await.problem(404);
    app.get("/v1/prompts/p/versions/latest").await.problem(404);
    app.get("/v1/prompts/p/versions/1").await.problem(404);
    app.post("/v1/prompts/p/versions/1/activate", &json!({}))
        .await
        .problem(404);
    app.post("/v1/prompts/p/render", &json!({})).await.problem(404);
    for bad in ["0", "-1", "Abc", "1.5", "99999999999"] {
        app.get(&format!("/v1/prompts/p/versions/{bad}"))
            .await
            .problem(400);
        app.post(&format!("/v1/prompts/p/versions/{bad}/activate"), &json!({}))
            .await
            .problem(400);
    }
    // A lowercase word is a label: one this prompt does not have.
    let res = app.get("/v1/prompts/p/versions/abc").await;
    assert_eq!(
        res.problem(404)["detail"],
        "prompt `p` has no version labelled `abc`"
    );
    app.post("/v1/prompts/p/versions/abc/activate", &json!({}))
        .await
        .problem(400);
    app.get("/v1/prompts/BAD/versions/active").await.problem(400);
    app.get("/v1/prompts/ghost/versions").await.problem(404);
}

async fn versions_are_listed_newest_first_in_pages(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    for i in 1..=5 {
        app.create_version("p", &json!({"template": format!("t{i}")}))
            .await;
    }
    let first = app.get("/v1/prompts/p/versions?limit=3").await;
    let numbers: Vec<_> = first.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(numbers, vec![json!(5), json!(4), json!(3)]);
    let cursor = first.body["next_cursor"].as_str().expect("more pages");
    let rest = app
        .get(&format!("/v1/prompts/p/versions?limit=3&cursor={cursor}"))
        .await;
    let numbers: Vec<_> = rest.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(numbers, vec![json!(2), json!(1)]);
    assert_eq!(rest.body["next_cursor"], json!(null));
}

async fn rendering_reports_missing_mistyped_and_undeclared_variables(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    app.create_version(
        "p",
        &json!({"template": "{{n}} {{s}} {{o}}", "variables": {"n": {"type": "number"}, "s": {}, "o": {"required": false}}}),
    )
    .await;
    let res = app
        .post(
            "/v1/prompts/p/render",
            &json!({"variables": {"n": "1", "typo": 1}}),
        )
        .await;
    res.problem(422);
    assert_eq!(res.body["code"], "invalid_variables");
    assert_eq!(
        res.error_fields(),
        vec!["variables.typo", "variables.n", "variables.s"]
    );
    let ok = app
        .post("/v1/prompts/p/render", &json!({"variables": {"n": 1, "s": "x"}}))
        .await;
    assert_eq!(ok.body["text"], "1 x ");
    app.post("/v1/prompts/p/render", &json!({"version": 0}))
        .await
        .problem(422);
    app.post("/v1/prompts/p/render", &json!({"version": 7}))
        .await
        .problem(404);
}

async fn chat_versions_render_to_messages(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("chat").await;
    let v = app
        .create_version(
            "chat",
            &json!({"template": [{"role": "system", "content": "You are {{persona}}."}, {"role": "user", "content": "{{question}}"}],
                    "variables": {"persona": {"default": "helpful"}, "question": {"type": "string"}}}),
        )
        .await;
    assert_eq!(v["kind"], "chat");
    let res = app
        .post(
            "/v1/prompts/chat/render",
            &json!({"variables": {"question": "Why?"}}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"version": 1, "kind": "chat", "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Why?"}
        ]})
    );
}

async fn fifty_concurrent_version_creates_give_versions_one_to_fifty(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("hot").await;
    let bodies: Vec<_> = (0..50).map(|i| json!({"template": format!("v{i}")})).collect();
    let requests = bodies
        .iter()
        .map(|body| app.post("/v1/prompts/hot/versions", body));
    let responses = futures::future::join_all(requests).await;
    let mut numbers = BTreeSet::new();
    for res in responses {
        assert_eq!(res.status, 201, "every create succeeds: {}", res.text);
        numbers.insert(res.body["version"].as_u64().expect("number"));
    }
    assert_eq!(numbers, (1..=50).collect());
    let all = app.get("/v1/prompts/hot/versions?limit=100").await;
    let items = all.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 50);
    assert_eq!(items.iter().filter(|v| v["is_active"] == true).count(), 1);
}

async fn version_responses_carry_an_etag_and_answer_304_when_unchanged(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("p").await;
    app.create_version("p", &json!({"template": "one"})).await;
    let first = app.get("/v1/prompts/p/versions/active").await;
    let etag = first
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "a strong ETag: {etag}"
    );
    assert_eq!(
        first
            .headers
            .get("cache-control")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"private, no-cache"[..])
    );
    let numbered = app.get("/v1/prompts/p/versions/1").await;
    assert_eq!(
        numbered.headers.get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
    assert!(
        numbered
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("immutable"))
    );
    let conditional = |tag: String| {
        let app = &app;
        async move {
            let mut res = app
                .client()
                .get(format!("{}/v1/prompts/p/versions/active", app.address))
                .insert_header(("if-none-match", tag))
                .send()
                .await
                .expect("sent");
            let body = res.body().await.expect("body");
            (res.status().as_u16(), body.len())
        }
    };
    assert_eq!(conditional(etag.clone()).await, (304, 0));
    assert_eq!(conditional(format!("\"other\", {etag}")).await.0, 304);
    app.create_version("p", &json!({"template": "two"})).await;
    let (status, len) = conditional(etag.clone()).await;
    assert_eq!(status, 200, "a new active version is a new body");
    assert!(len > 0);
}

backend_tests!(
    #[actix_web::test]
    version_responses_carry_an_etag_and_answer_304_when_unchanged,
    a_prompt_goes_through_versions_rollback_and_render,
    an_undeclared_placeholder_is_rejected_by_name,
    invalid_templates_and_variables_are_422_naming_each_field,
    a_version_created_without_activation_is_not_served_as_active,
    missing_versions_and_bad_numbers_are_problems,
    versions_are_listed_newest_first_in_pages,
    rendering_reports_missing_mistyped_and_undeclared_variables,
    chat_versions_render_to_messages,
    fifty_concurrent_version_creates_give_versions_one_to_fifty,
);
