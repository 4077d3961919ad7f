//! Authoring over HTTP: composed prompts, diffs, the breaking-change gate,
//! dependents, and rebasing on a moved shared part.

use awc::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn put(app: &TestApp, path: &str, body: &Value) -> crate::helpers::Response {
    app.send(Method::PUT, path, body).await
}

/// A shared preamble at version 1 (labelled production) and 2 (not yet).
async fn shared_preamble(app: &TestApp) {
    app.create_prompt("shared/safety").await;
    app.create_version(
        "shared/safety",
        &json!({"template": "Never reveal {{secret_kind}}.", "variables": {"secret_kind": {"type": "string", "default": "keys"}}}),
    )
    .await;
    app.create_version(
        "shared/safety",
        &json!({"template": "Never reveal {{secret_kind}}, ever.", "variables": {"secret_kind": {"type": "string", "default": "keys"}}, "activate": false}),
    )
    .await;
}

async fn two_prompts_share_a_preamble_resolved_when_their_versions_are_created(backend: Backend) {
    let app = spawn_app(&backend).await;
    shared_preamble(&app).await;
    app.create_prompt("support").await;
    let support = app
        .create_version(
            "support",
            &json!({"template": "{{> shared/safety@production}}\nAnswer: {{q}}", "variables": {"q": {"type": "string"}}}),
        )
        .await;
    assert_eq!(
        support["template"],
        "Never reveal {{secret_kind}}.\nAnswer: {{q}}"
    );
    assert_eq!(
        support["includes"],
        json!([{"prompt": "shared/safety", "version": 1, "via_label": "production"}])
    );
    assert_eq!(
        support["source"]["template"],
        "{{> shared/safety@production}}\nAnswer: {{q}}"
    );
    assert_eq!(support["variables"]["secret_kind"]["from"], "shared/safety@1");
    assert!(support["source"]["variables"].get("secret_kind").is_none());

    app.create_prompt("sales").await;
    let sales = app
        .create_version(
            "sales",
            &json!({"template": [
                {"role": "system", "content": "{{> shared/safety@2}}"},
                {"role": "user", "content": "{{q}}"}
            ], "variables": {"q": {}}}),
        )
        .await;
    assert_eq!(
        sales["template"][0]["content"],
        "Never reveal {{secret_kind}}, ever."
    );
    assert_eq!(
        sales["includes"],
        json!([{"prompt": "shared/safety", "version": 2}])
    );

    // Moving the shared label changes no stored version.
    assert_eq!(
        put(
            &app,
            "/v1/prompts/shared%2Fsafety/labels/production",
            &json!({"version": 2})
        )
        .await
        .status,
        200
    );
    let fetched = app.get("/v1/prompts/support/versions/active").await;
    assert_eq!(
        fetched.body["template"],
        "Never reveal {{secret_kind}}.\nAnswer: {{q}}"
    );

    // Render is as strict as ever, and names the include a variable came from.
    let render = app
        .post(
            "/v1/prompts/support/render",
            &json!({"variables": {"q": "hi", "secret_kind": 3}}),
        )
        .await;
    let problem = render.problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("(declared by include shared/safety@1)"),
        "{problem}"
    );
    let ok = app
        .post("/v1/prompts/support/render", &json!({"variables": {"q": "hi"}}))
        .await;
    assert_eq!(ok.body["text"], "Never reveal keys.\nAnswer: hi");

    // Who includes the shared part.
    let dependents = app.get("/v1/prompts/shared%2Fsafety/dependents").await;
    assert_eq!(
        dependents.body,
        json!([
            {"prompt": "sales", "version": 1, "includes_version": 2, "via_label": null},
            {"prompt": "support", "version": 1, "includes_version": 1, "via_label": "production"}
        ])
    );
    app.get("/v1/prompts/ghost/dependents").await.problem(404);

    // Rebase picks up the moved label deliberately.
    let rebased = app
        .post(
            "/v1/prompts/support/versions",
            &json!({"rebase_includes": true, "commit_message": "new preamble"}),
        )
        .await;
    assert_eq!(rebased.status, 201, "{}", rebased.text);
    assert_eq!(rebased.body["version"], 2);
    assert_eq!(
        rebased.body["template"],
        "Never reveal {{secret_kind}}, ever.\nAnswer: {{q}}"
    );
    assert_eq!(rebased.body["includes"][0]["version"], 2);
    app.post("/v1/prompts/sales/versions", &json!({"rebase_includes": true}))
        .await
        .problem(422);
    app.post(
        "/v1/prompts/support/versions",
        &json!({"rebase_includes": true, "template": "x"}),
    )
    .await
    .problem(422);

    // A shared part in use is not deleted by accident.
    let refused = app.delete("/v1/prompts/shared%2Fsafety").await;
    assert_eq!(refused.problem(409)["code"], "conflict");
    assert!(
        refused.body["detail"].as_str().unwrap_or("").contains("sales@1"),
        "{}",
        refused.text
    );
    assert_eq!(
        app.delete("/v1/prompts/shared%2Fsafety?force=true").await.status,
        204
    );
    let still = app
        .post("/v1/prompts/support/render", &json!({"variables": {"q": "hi"}}))
        .await;
    assert_eq!(
        still.body["text"], "Never reveal keys, ever.\nAnswer: hi",
        "composed versions keep their text"
    );
}

async fn bad_includes_are_refused_naming_why(backend: Backend) {
    let app = spawn_app(&backend).await;
    shared_preamble(&app).await;
    app.create_prompt("chatty").await;
    app.create_version(
        "chatty",
        &json!({"template": [{"role": "system", "content": "Hi"}]}),
    )
    .await;
    app.create_prompt("p").await;
    app.create_prompt("typed").await;
    app.create_version(
        "typed",
        &json!({"template": "{{secret_kind}}", "variables": {"secret_kind": {"type": "number"}}}),
    )
    .await;
    for (template, variables, needle) in [
        (json!("{{> shared/safety}}"), json!({}), "names no version"),
        (json!("{{> nobody@1}}"), json!({}), "no prompt named `nobody`"),
        (json!("{{> shared/safety@9}}"), json!({}), "has no version 9"),
        (
            json!("{{> shared/safety@staging}}"),
            json!({}),
            "has no version labelled `staging`",
        ),
        (json!("Before {{> chatty@1}}"), json!({}), "chat prompt"),
        (json!("{{> p@latest}}"), json!({}), "has no latest version"),
        (
            json!("{{> shared/safety@1}} {{> typed@1}}"),
            json!({}),
            "declared as string by include shared/safety@1 and as number by include typed@1",
        ),
        (
            json!("{{> shared/safety@1}} {{secret_kind}}"),
            json!({"secret_kind": {"type": "boolean"}}),
            "declared as boolean by this version and as string by include shared/safety@1",
        ),
    ] {
        let res = app
            .post(
                "/v1/prompts/p/versions",
                &json!({"template": template, "variables": variables}),
            )
            .await;
        let problem = res.problem(422);
        assert!(res.text.contains(needle), "{template}: {problem}");
    }
    // A cycle through another prompt.
    app.create_version("p", &json!({"template": "p one"})).await;
    app.create_prompt("q").await;
    app.create_version("q", &json!({"template": "{{> p@1}}"})).await;
    let cycle = app
        .post("/v1/prompts/p/versions", &json!({"template": "{{> q@1}}"}))
        .await;
    assert!(
        cycle.problem(422)["detail"]
            .as_str()
            .unwrap_or("")
            .contains("cycle: p → q@1 → p@1"),
        "{}",
        cycle.text
    );
    // Nesting: l1 ← l2 ← … each including the one before.
    app.create_prompt("l0").await;
    app.create_version("l0", &json!({"template": "base"})).await;
    for level in 1..=5 {
        let name = format!("l{level}");
        app.create_prompt(&name).await;
        app.create_version(&name, &json!({"template": format!("{{{{> l{}@1}}}}", level - 1)}))
            .await;
    }
    let deep = app
        .post("/v1/prompts/p/versions", &json!({"template": "{{> l5@1}}"}))
        .await;
    assert!(
        deep.problem(422)["detail"]
            .as_str()
            .unwrap_or("")
            .contains("deeper than 5"),
        "{}",
        deep.text
    );
    let fine = app
        .post(
            "/v1/prompts/p/versions",
            &json!({"template": "{{> l4@1}}", "activate": false}),
        )
        .await;
    assert_eq!(fine.status, 201, "five levels are allowed: {}", fine.text);
    assert_eq!(fine.body["template"], "base");
    // A split label cannot be included.
    put(
        &app,
        "/v1/prompts/shared%2Fsafety/labels/canary",
        &json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}),
    )
    .await;
    let split = app
        .post(
            "/v1/prompts/p/versions",
            &json!({"template": "{{> shared/safety@canary}}"}),
        )
        .await;
    assert!(
        split.problem(422)["detail"]
            .as_str()
            .unwrap_or("")
            .contains("split"),
        "{}",
        split.text
    );
    // `from` is the server's to set.
    app.post(
        "/v1/prompts/p/versions",
        &json!({"template": "{{a}}", "variables": {"a": {"from": "x@1"}}}),
    )
    .await
    .problem(422);
}

async fn a_diff_shows_template_variables_and_config_and_classifies_itself(backend: Backend) {
    let app = spawn_app(&backend).await;
    app.create_prompt("d").await;
    app.create_version(
        "d",
        &json!({"template": "Hello {{name}}.\nBe brief.\n", "variables": {"name": {"type": "string"}}, "config": {"model": "a", "temperature": 0.2}}),
    )
    .await;
    app.create_version(
        "d",
        &json!({"template": "Hello {{name}}.\nBe very brief in {{lang}}.\n", "variables": {"name": {"type": "string"}, "lang": {}},
                "config": {"model": "b"}, "labels": ["staging"], "activate": false}),
    )
    .await;
    let diff = app.get("/v1/prompts/d/diff?from=production&to=staging").await;
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert_eq!(diff.body["from"], 1);
    assert_eq!(diff.body["to"], 2);
    let unified = diff.body["template_diff"].as_str().unwrap_or("");
    assert!(
        unified.contains("-Be brief.\n+Be very brief in {{lang}}.\n"),
        "{unified}"
    );
    assert_eq!(
        diff.body["variables"],
        json!([{"name": "lang", "change": "added", "from": null, "to": {"required": true}}])
    );
    assert_eq!(
        diff.body["config_patch"],
        json!([{"op": "replace", "path": "/model", "value": "b"}, {"op": "remove", "path": "/temperature"}])
    );
    assert_eq!(diff.body["breaking"], true);
    assert_eq!(
        diff.body["breaking_reasons"],
        json!(["adds required variable `lang`"])
    );
    let back = app.get("/v1/prompts/d/diff?from=2&to=1").await;
    assert_eq!(back.body["breaking_reasons"], json!(["removes variable `lang`"]));
    let same = app.get("/v1/prompts/d/diff?from=latest&to=2").await;
    assert_eq!(same.body["breaking"], false);
    assert_eq!(same.body["template_diff"], "");
    app.get("/v1/prompts/d/diff?from=1").await.problem(400);
    app.get("/v1/prompts/d/diff?from=1&to=Bad").await.problem(400);
    app.get("/v1/prompts/d/diff?from=1&to=9").await.problem(404);

    // The gate: production is protected, and this move breaks callers.
    let refused = app.post("/v1/prompts/d/versions/2/activate", &json!({})).await;
    let problem = refused.problem(409);
    assert_eq!(problem["code"], "breaking_change");
    assert_eq!(problem["errors"][0]["message"], "adds required variable `lang`");
    put(&app, "/v1/prompts/d/labels/production", &json!({"version": 2}))
        .await
        .problem(409);
    assert_eq!(app.get("/v1/prompts/d/versions/active").await.body["version"], 1);
    // An unprotected label moves freely.
    assert_eq!(
        put(&app, "/v1/prompts/d/labels/staging", &json!({"version": 1}))
            .await
            .status,
        200
    );
    // The override goes through and is recorded.
    let moved = put(
        &app,
        "/v1/prompts/d/labels/production",
        &json!({"version": 2, "allow_breaking": true, "reason": "callers send lang now"}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let history = app.get("/v1/prompts/d/labels/production/history?limit=1").await;
    assert_eq!(
        history.body["items"][0]["allowed_breaking"],
        json!(["adds required variable `lang`"])
    );
    let audit = app
        .get("/v1/audit?action=label.moved&target=prompt:d%23production&limit=1")
        .await;
    assert_eq!(
        audit.body["items"][0]["after"]["allowed_breaking"],
        json!(["adds required variable `lang`"])
    );
    // Creating a breaking version that would move production is gated too.
    let gated = app
        .post(
            "/v1/prompts/d/versions",
            &json!({"template": "{{x}}", "variables": {"x": {"type": "number"}}}),
        )
        .await;
    gated.problem(409);
    assert_eq!(
        app.get("/v1/prompts/d/versions/latest").await.body["version"],
        2,
        "nothing was stored"
    );
    // Rolling back from history is a move like any other.
    let back = app
        .post("/v1/prompts/d/labels/production/rollback", &json!({}))
        .await;
    back.problem(409);
    let back = app
        .post(
            "/v1/prompts/d/labels/production/rollback",
            &json!({"allow_breaking": true}),
        )
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(app.get("/v1/prompts/d/versions/active").await.body["version"], 1);
}

backend_tests!(
    #[actix_web::test]
    two_prompts_share_a_preamble_resolved_when_their_versions_are_created,
    bad_includes_are_refused_naming_why,
    a_diff_shows_template_variables_and_config_and_classifies_itself,
);
