//! The render table shared with the Python client: every case of
//! `clients/python/tests/fixtures/render_cases.json` rendered by the server.
//! The client's `Prompt.compile` is tested against the same file, so the two
//! cannot drift apart: the same output, or the same refused variables with
//! the same messages.

use std::collections::BTreeSet;

use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../clients/python/tests/fixtures/render_cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let table: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    table["cases"].as_array().cloned().unwrap_or_default()
}

/// What a refused variable's message says it is.
fn kind(message: &str) -> &'static str {
    if message.contains("is not declared") {
        "extra"
    } else if message.contains("is required") {
        "missing"
    } else if message.contains("must be a") {
        "wrong_type"
    } else {
        "unknown"
    }
}

async fn the_server_renders_every_case_of_the_table_shared_with_the_python_client(backend: Backend) {
    let app = spawn_app(&backend).await;
    let cases = cases();
    assert!(cases.len() >= 10, "the table holds only {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let label = case["name"].as_str().unwrap_or("unnamed");
        let name = format!("case-{i}");
        app.create_prompt(&name).await;
        app.create_version(
            &name,
            &json!({"template": case["template"], "variables": case["variables"]}),
        )
        .await;
        let res = app
            .post(
                &format!("/v1/prompts/{name}/render"),
                &json!({"variables": case["values"]}),
            )
            .await;
        let expect = &case["expect"];
        if let Some(errors) = expect["errors"].as_array() {
            let problem = res.problem(422);
            let got: BTreeSet<(String, String, String)> = problem["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let field = e["field"].as_str().unwrap_or_default();
                    let message = e["message"].as_str().unwrap_or_default();
                    (
                        field.trim_start_matches("variables.").to_owned(),
                        kind(message).to_owned(),
                        message.to_owned(),
                    )
                })
                .collect();
            let wanted: BTreeSet<(String, String, String)> = errors
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    (s("name"), s("kind"), s("message"))
                })
                .collect();
            assert_eq!(got, wanted, "case {label}: {}", res.text);
        } else if let Some(messages) = expect.get("messages") {
            assert_eq!(res.status, 200, "case {label}: {}", res.text);
            assert_eq!(&res.body["messages"], messages, "case {label}");
        } else {
            assert_eq!(res.status, 200, "case {label}: {}", res.text);
            assert_eq!(res.body["text"], expect["text"], "case {label}");
        }
    }
}

backend_tests!(
    #[actix_web::test]
    the_server_renders_every_case_of_the_table_shared_with_the_python_client,
);
