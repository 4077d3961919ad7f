//! The Model Context Protocol at `/mcp`, spoken as JSON-RPC over HTTP:
//! the session handshake, `prompts/list` with each prompt's arguments,
//! `prompts/get` rendering through the domain (strict, with every problem
//! named), `_version`, `list_changed` on the session's stream, and the keys.

use std::time::Duration;

use actix_web::http::Method;
use futures::StreamExt as _;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const ACCEPT: &str = "application/json, text/event-stream";
const PROTOCOL: &str = "2025-06-18";

/// The JSON-RPC messages in an answer: an SSE stream's `data:` lines, or a
/// plain JSON body.
fn messages(text: &str) -> Vec<Value> {
    let from_sse: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    if from_sse.is_empty() {
        serde_json::from_str(text).into_iter().collect()
    } else {
        from_sse
    }
}

/// One MCP session of the admin key.
struct Session<'a> {
    app: &'a TestApp,
    id: String,
    next: u64,
}

impl<'a> Session<'a> {
    /// `initialize`, then `notifications/initialized`.
    async fn open(app: &'a TestApp) -> Self {
        let res = post(
            app,
            None,
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "api-test", "version": "1"}
            }}),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text);
        let id = res
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("an Mcp-Session-Id header")
            .to_owned();
        let init = messages(&res.text).pop().expect("the initialize result");
        assert_eq!(init["result"]["serverInfo"]["name"], "prompt-registry", "{init}");
        assert_eq!(init["result"]["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(init["result"]["capabilities"]["prompts"]["listChanged"], true);
        assert_eq!(init["result"]["protocolVersion"], PROTOCOL);
        let done = post(
            app,
            Some(&id),
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(done.status, 202, "{}", done.text);
        Self { app, id, next: 1 }
    }

    /// A request; its JSON-RPC answer (`result` or `error`).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let res = post(
            self.app,
            Some(&self.id),
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text);
        messages(&res.text)
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to request {id} in {}", res.text))
    }

    async fn get(&mut self, name: &str, arguments: Value) -> Value {
        self.call("prompts/get", json!({"name": name, "arguments": arguments}))
            .await
    }
}

/// A JSON-RPC POST to `/mcp` with the admin key.
async fn post(app: &TestApp, session: Option<&str>, body: &Value) -> crate::helpers::Response {
    let bytes = serde_json::to_vec(body).expect("json");
    let mut headers = vec![("accept", ACCEPT), ("mcp-protocol-version", PROTOCOL)];
    if let Some(id) = session {
        headers.push(("mcp-session-id", id));
    }
    app.raw_as(Method::POST, "/mcp", Some("application/json"), bytes, &headers)
        .await
}

/// `support/triage` (chat, three variables) and `greeting` (text, two versions).
async fn seed(app: &TestApp) {
    let res = app
        .post(
            "/v1/prompts",
            &json!({"name": "support/triage", "description": "Sorts support tickets"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    app.create_version(
        "support/triage",
        &json!({
            "template": [
                {"role": "system", "content": "You triage tickets in a {{tone}} tone."},
                {"role": "user", "content": "Customer {{customer}} has {{count}} open tickets."},
                {"role": "assistant", "content": "Understood."}
            ],
            "variables": {
                "customer": {"type": "string", "description": "Who wrote in"},
                "count": {"type": "number"},
                "tone": {"type": "string", "default": "calm"}
            }
        }),
    )
    .await;
    app.create_prompt("greeting").await;
    app.create_version(
        "greeting",
        &json!({"template": "Hello {{name}}!", "variables": {"name": {"type": "string"}}}),
    )
    .await;
    app.create_version(
        "greeting",
        &json!({"template": "Hi {{name}}, welcome back.", "variables": {"name": {"type": "string"}}}),
    )
    .await;
}

fn argument<'v>(prompt: &'v Value, name: &str) -> &'v Value {
    prompt["arguments"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no argument `{name}` in {prompt}"))
}

async fn prompts_are_listed_with_their_declared_arguments(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    app.create_prompt("empty").await;
    let mut session = Session::open(&app).await;
    let list = session.call("prompts/list", json!({})).await;
    let prompts = list["result"]["prompts"].as_array().expect("prompts");
    let names: Vec<&str> = prompts.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for expected in ["support/triage", "greeting", "empty"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let triage = prompts
        .iter()
        .find(|p| p["name"] == "support/triage")
        .expect("triage");
    assert_eq!(triage["description"], "Sorts support tickets");
    let customer = argument(triage, "customer");
    assert_eq!(customer["required"], true);
    assert_eq!(customer["description"], "Who wrote in");
    assert_eq!(argument(triage, "count")["required"], true);
    assert_eq!(
        argument(triage, "tone")["required"],
        false,
        "a default makes it optional"
    );
    assert_eq!(argument(triage, "_label")["required"], false);
    assert_eq!(argument(triage, "_version")["required"], false);
    assert_eq!(triage["arguments"].as_array().map(Vec::len), Some(5));
    let empty = prompts.iter().find(|p| p["name"] == "empty").expect("empty");
    assert_eq!(
        empty["arguments"].as_array().map(Vec::len),
        Some(2),
        "only the selectors: {empty}"
    );
    // Ending the session: 204, as the official clients expect, and it is gone.
    let session_header = [("mcp-session-id", session.id.as_str())];
    let ended = app
        .raw_as(
            awc::http::Method::DELETE,
            "/mcp",
            None,
            Vec::new(),
            &session_header,
        )
        .await;
    assert_eq!(ended.status, 204, "{}", ended.text);
    let after = post(
        &app,
        Some(&session.id),
        &json!({"jsonrpc": "2.0", "id": 9, "method": "prompts/list"}),
    )
    .await;
    assert_eq!(after.status, 404, "{}", after.text);
}

async fn a_chat_and_a_text_prompt_render_with_their_arguments(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let mut session = Session::open(&app).await;
    let chat = session
        .get("support/triage", json!({"customer": "Ada", "count": "3"}))
        .await;
    let result = &chat["result"];
    assert_eq!(
        result["messages"],
        json!([
            {"role": "user", "content": {"type": "text", "text": "You triage tickets in a calm tone."}},
            {"role": "user", "content": {"type": "text", "text": "Customer Ada has 3 open tickets."}},
            {"role": "assistant", "content": {"type": "text", "text": "Understood."}}
        ]),
        "{chat}"
    );
    assert_eq!(
        result["description"],
        "Prompt `support/triage`, version 1 (label `production`)"
    );
    let text = session.get("greeting", json!({"name": "Grace"})).await;
    assert_eq!(
        text["result"]["messages"],
        json!([{"role": "user", "content": {"type": "text", "text": "Hi Grace, welcome back."}}]),
        "{text}"
    );
    assert_eq!(
        text["result"]["description"],
        "Prompt `greeting`, version 2 (label `production`)"
    );
    // The same render as the REST endpoint.
    let rest = app
        .post(
            "/v1/prompts/support%2Ftriage/render",
            &json!({"variables": {"customer": "Ada", "count": 3}}),
        )
        .await;
    assert_eq!(
        rest.body["messages"][1]["content"],
        "Customer Ada has 3 open tickets."
    );
}

async fn a_strict_render_error_names_every_missing_extra_and_unparsable_argument(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let mut session = Session::open(&app).await;
    let answer = session
        .get("support/triage", json!({"count": "many", "bogus": "x"}))
        .await;
    assert!(answer.get("result").is_none(), "{answer}");
    assert_eq!(answer["error"]["code"], -32602, "invalid params: {answer}");
    let message = answer["error"]["message"].as_str().expect("message");
    for named in ["`customer`", "`bogus`", "`count`"] {
        assert!(message.contains(named), "{named} in {message}");
    }
    assert!(message.starts_with("3 argument error(s)"), "{message}");
    // A value of the wrong JSON type is the domain's type error.
    let wrong = session
        .get("support/triage", json!({"customer": "Ada", "count": "\"3\""}))
        .await;
    let message = wrong["error"]["message"].as_str().expect("message");
    assert!(message.contains("must be a number, got string"), "{message}");
    let unknown = session.get("nobody", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602);
    assert!(
        unknown["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no prompt named `nobody`")),
        "{unknown}"
    );
    let both = session
        .get(
            "greeting",
            json!({"name": "x", "_version": "1", "_label": "staging"}),
        )
        .await;
    assert_eq!(both["error"]["code"], -32602, "{both}");
}

async fn version_and_label_arguments_select_what_is_rendered(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let mut session = Session::open(&app).await;
    let old = session
        .get("greeting", json!({"name": "Grace", "_version": "1"}))
        .await;
    assert_eq!(
        old["result"]["messages"][0]["content"]["text"], "Hello Grace!",
        "{old}"
    );
    assert_eq!(
        old["result"]["description"],
        "Prompt `greeting`, version 1 (by number)"
    );
    let res = app
        .send(
            Method::PUT,
            "/v1/prompts/greeting/labels/staging",
            &json!({"version": 1}),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    let staged = session
        .get("greeting", json!({"name": "Lin", "_label": "staging"}))
        .await;
    assert_eq!(
        staged["result"]["messages"][0]["content"]["text"], "Hello Lin!",
        "{staged}"
    );
    let missing = session
        .get("greeting", json!({"name": "Lin", "_version": "9"}))
        .await;
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
}

async fn a_session_hears_that_the_prompt_list_changed(backend: Backend) {
    let app = spawn_app(&backend).await;
    let session = Session::open(&app).await;
    let mut stream = app
        .client()
        .get(format!("{}/mcp", app.address))
        .insert_header(("accept", "text/event-stream"))
        .insert_header(("mcp-session-id", session.id.as_str()))
        .insert_header(("mcp-protocol-version", PROTOCOL))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    app.create_prompt("arrives-later").await;
    let mut seen = String::new();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("notifications/prompts/list_changed") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "stream so far: {seen}");
}

async fn mcp_needs_a_valid_key_and_answers_bad_requests_properly(backend: Backend) {
    let app = spawn_app(&backend).await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}
    }});
    let anonymous = awc::Client::default();
    let mut res = anonymous
        .post(format!("{}/mcp", app.address))
        .insert_header(("accept", ACCEPT))
        .send_json(&initialize)
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], 401, "{body}");
    let wrong = app
        .raw_as(
            Method::POST,
            "/mcp",
            Some("application/json"),
            serde_json::to_vec(&initialize).expect("json"),
            &[("accept", ACCEPT), ("authorization", "Bearer not-a-key")],
        )
        .await;
    wrong.problem(401);
    // Any key holds `read`, the minimum: a read-only key is enough.
    let key = app
        .post("/v1/api-keys", &json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let secret = key.body["secret"].as_str().expect("secret");
    let reader = app
        .raw_as(
            Method::POST,
            "/mcp",
            Some("application/json"),
            serde_json::to_vec(&initialize).expect("json"),
            &[("accept", ACCEPT), ("authorization", &format!("Bearer {secret}"))],
        )
        .await;
    assert_eq!(reader.status, 200, "{}", reader.text);
    let put = app.send(Method::PUT, "/mcp", &json!({})).await;
    put.problem(405);
    assert_eq!(
        put.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST, DELETE")
    );
    let garbage = app
        .raw_as(
            Method::POST,
            "/mcp",
            Some("application/json"),
            b"{not json".to_vec(),
            &[("accept", ACCEPT)],
        )
        .await;
    assert_eq!(garbage.status, 400, "{}", garbage.text);
    assert_eq!(garbage.body["error"]["code"], -32700, "{}", garbage.text);
    let not_rpc = app
        .raw_as(
            Method::POST,
            "/mcp",
            Some("application/json"),
            br#"{"id": 7, "hello": "world"}"#.to_vec(),
            &[("accept", ACCEPT)],
        )
        .await;
    assert_eq!(not_rpc.status, 400, "{}", not_rpc.text);
    assert_eq!(not_rpc.body["error"]["code"], -32600, "{}", not_rpc.text);
    assert_eq!(not_rpc.body["id"], 7);
    let stale = post(
        &app,
        Some("no-such-session"),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}),
    )
    .await;
    assert_eq!(stale.status, 404, "an ended session: {}", stale.text);
}

backend_tests!(
    #[actix_web::test]
    prompts_are_listed_with_their_declared_arguments,
    a_chat_and_a_text_prompt_render_with_their_arguments,
    a_strict_render_error_names_every_missing_extra_and_unparsable_argument,
    version_and_label_arguments_select_what_is_rendered,
    a_session_hears_that_the_prompt_list_changed,
    mcp_needs_a_valid_key_and_answers_bad_requests_properly,
);
