//! The binary as an operator meets it: startup validation, logs that keep
//! secrets out, request ids, and the CLI.

use std::process::{Command, Stdio};

use registry_persistence::testing::{Backend, TestDatabase};

use crate::helpers::{ADMIN_KEY, client, start_binary};

fn run(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prompt-registry"));
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("APP_ENV")
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("APP__SERVER__PORT", "0")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_configuration_stops_the_process_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("pr-startup-{}", uuid::Uuid::new_v4().simple()));
    let sqlite = format!("sqlite://{}/a.sqlite", dir.display());
    let fresh = format!("sqlite://{}/b.sqlite", dir.display());
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("APP__DATABASE__URL", "mysql://nope")],
            "database.url must start with",
        ),
        (&[("APP__SERVER__PORT", "99999")], "invalid configuration"),
        (&[("APP_ENV", "staging")], "APP_ENV must be"),
        (
            &[
                ("APP_ENV", "prod"),
                ("APP__DATABASE__URL", &sqlite),
                ("APP__DATABASE__MIGRATE", "true"),
            ],
            "no admin API key",
        ),
        (
            &[
                ("APP_ENV", "prod"),
                ("APP__DATABASE__URL", &fresh),
                ("APP__AUTH__ADMIN_KEY", ADMIN_KEY),
            ],
            "pending migration",
        ),
    ];
    for (env, expected) in cases {
        let (ok, _, stderr) = run(env, &[]);
        assert!(!ok, "{env:?} must not start");
        // Logs may come first; the failure itself is one line, the last.
        let failures: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("prompt-registry: "))
            .collect();
        assert_eq!(failures.len(), 1, "{env:?}: one failure line, got:\n{stderr}");
        assert!(failures[0].contains(expected), "{env:?}: {}", failures[0]);
        assert_eq!(stderr.lines().last(), Some(failures[0]), "{env:?}");
        assert!(!stderr.contains("listening"), "{env:?}: it never bound");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn keys_can_be_created_from_the_command_line_and_config_checked() {
    let test_db = TestDatabase::new(&Backend::Sqlite).await;
    let env = [
        ("APP__DATABASE__URL", test_db.url.as_str()),
        ("APP__AUTH__ADMIN_KEY", ADMIN_KEY),
    ];
    let (ok, stdout, stderr) = run(
        &env,
        &["keys", "create", "--name", "ci", "--scopes", "read,write"],
    );
    assert!(ok, "{stderr}");
    let secret = stdout.trim().to_owned();
    assert!(secret.starts_with("pr_"), "{stdout}");
    let (ok, listing, _) = run(&env, &["keys", "list"]);
    assert!(
        ok && listing.contains("read,write") && !listing.contains(&secret[12..]),
        "{listing}"
    );
    let (ok, status, _) = run(&env, &["migrate", "status"]);
    assert!(ok && status.contains("Applied"), "{status}");
    let (ok, checked, stderr) = run(&env, &["check"]);
    assert!(ok, "{stderr}");
    assert!(checked.contains("configuration: ok"), "{checked}");
    let server = start_binary(&test_db.url, &[]).await;
    let mut res = awc::Client::default()
        .get(format!("{}/v1/prompts", server.base))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200, "{:?}", res.body().await);
}

#[actix_web::test]
async fn logs_carry_request_ids_but_never_keys_bodies_or_prompt_data() {
    let test_db = TestDatabase::new(&Backend::Sqlite).await;
    let log = std::env::temp_dir().join(format!("pr-log-{}.txt", uuid::Uuid::new_v4().simple()));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_prompt-registry"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    command
        .current_dir(std::env::temp_dir())
        .env_remove("APP_ENV")
        .env("RUST_LOG", "debug")
        .env("APP__DATABASE__URL", &test_db.url)
        .env("APP__SERVER__PORT", port.to_string())
        .env("APP__AUTH__ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(log_file);
    let mut child = command.spawn().expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let mut ready = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready);
    let post = |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).send_json(&body);
    post(
        "/v1/prompts",
        serde_json::json!({"name": "logged", "description": "MARKER-DESCRIPTION"}),
    )
    .await
    .expect("sent");
    post(
        "/v1/prompts/logged/versions",
        serde_json::json!({"template": "MARKER-TEMPLATE {{q}}", "variables": {"q": {}}}),
    )
    .await
    .expect("sent");
    post("/v1/runs", serde_json::json!({"prompt": "logged", "status": "success", "latency_ms": 1, "input": {"q": "MARKER-INPUT"}, "output": "MARKER-OUTPUT"}))
        .await
        .expect("sent");
    post(
        "/v1/prompts/logged/render",
        serde_json::json!({"variables": {"q": "MARKER-RENDER"}}),
    )
    .await
    .expect("sent");
    let res = http
        .get(format!("{base}/v1/prompts/missing-one"))
        .insert_header(("x-request-id", "req-from-client-42"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()
            .get("x-request-id")
            .map(awc::error::HeaderValue::as_bytes),
        Some(&b"req-from-client-42"[..])
    );
    let generated = http.get(format!("{base}/health")).send().await.expect("sent");
    assert!(
        generated
            .headers()
            .get("x-request-id")
            .is_some_and(|v| v.len() >= 32),
        "an id is generated"
    );
    let wrong_key = "pr_abcdef01_MARKERMARKERMARKERMARKERMARKERMARKERMARK";
    let refused = awc::Client::default()
        .get(format!("{base}/v1/prompts"))
        .insert_header(("authorization", format!("Bearer {wrong_key}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    // A row the service cannot read: a 500 whose log line carries the cause.
    let raw = sea_orm::Database::connect(test_db.url.as_str())
        .await
        .expect("the test database");
    sea_orm::ConnectionTrait::execute_unprepared(
        &raw,
        "UPDATE prompt_versions SET variables = '\"CORRUPT-VARIABLES\"'",
    )
    .await
    .expect("corrupted");
    let broken = http
        .get(format!("{base}/v1/prompts/logged/versions/1"))
        .insert_header(("x-request-id", "req-broken-row-7"))
        .send()
        .await
        .expect("sent");
    assert_eq!(broken.status(), 500);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).expect("logs");
    let _ = std::fs::remove_file(&log);
    assert!(
        logs.contains("req-from-client-42"),
        "the client's request id is on the request's log line"
    );
    assert!(
        logs.contains("route=/v1/prompts/{name}") || logs.contains("/v1/prompts/{name}"),
        "the route pattern is logged"
    );
    let failure = logs
        .lines()
        .find(|l| l.contains("request failed") && l.contains("req-broken-row-7"))
        .unwrap_or_else(|| panic!("no error line for the 500:\n{logs}"));
    assert!(
        failure.contains("stored variables") && failure.contains("invalid type"),
        "the whole cause chain is logged: {failure}"
    );
    for secret in [ADMIN_KEY, wrong_key, "MARKER-"] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs:\n{logs}");
    }
}
