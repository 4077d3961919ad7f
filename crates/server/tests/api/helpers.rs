//! `spawn_app()` and a small HTTP client for the tests.

use std::sync::LazyLock;

use actix_web::http::{Method, StatusCode, header::HeaderMap};
use prompt_registry::settings::{
    AppEnv, AuthSettings, CacheSettings, DatabaseSettings, EventSettings, LabelSettings, LogSettings,
    RedisConfig, RenderSettings, RunSettings, Secret, ServerSettings, Settings, WebhookSettings,
};
use prompt_registry::startup::Application;
use registry_persistence::testing::{Backend, TestDatabase};
use serde_json::Value;

/// The admin key every test app and test binary accepts.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef-0123456789";

/// An HTTP client that sends the admin key.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .disable_redirects()
        .add_default_header(("authorization", format!("Bearer {ADMIN_KEY}")))
        .finish()
}

/// JSON bodies above this are refused in tests, so the 413 path is cheap to hit.
pub const JSON_LIMIT: usize = 64 * 1024;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        prompt_registry::telemetry::init("debug", false);
    }
});

pub struct TestApp {
    pub address: String,
    /// The app's own database, for tests that reach under the API.
    pub database_url: String,
    client: awc::Client,
    handle: actix_web::dev::ServerHandle,
    _db: TestDatabase,
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts this is a problem+json answer with `status`, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.text
        );
        for key in ["type", "title", "status", "detail", "code"] {
            assert!(
                self.body.get(key).is_some(),
                "problem lacks `{key}`: {}",
                self.text
            );
        }
        assert_eq!(self.body["status"], status);
        &self.body
    }

    /// The `field` of each entry in a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn spawn_app(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Test settings for a database URL: port 0, one worker, migrations applied.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        env: AppEnv::Dev,
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            json_limit: JSON_LIMIT,
            workers: 1,
            request_timeout_secs: 30,
            shutdown_timeout_secs: 10,
        },
        database: DatabaseSettings {
            url: database_url.to_owned(),
            max_connections: 8,
            connect_timeout_ms: 5_000,
            acquire_timeout_ms: 5_000,
            migrate: Some(true),
        },
        runs: RunSettings {
            queue_capacity: 10_000,
            writer_batch_size: 500,
            writer_concurrency: 2,
            max_batch: 1_000,
            durable: None,
            stream_capacity: 100_000,
            claim_after_ms: 30_000,
            stream_timeout_ms: 1_000,
            retention_days: 0,
            ingest_nice: 0,
            maintenance_interval_secs: 3_600,
        },
        cache: CacheSettings {
            mode: None,
            capacity: 10_000,
            ttl_secs: 60,
            stale_if_error_secs: 300,
        },
        redis: RedisConfig {
            url: None,
            prefix: "prompt-registry:".into(),
            timeout_ms: 50,
            pool_size: 4,
            circuit_failures: 3,
            circuit_probe_ms: 500,
            coherence: prompt_registry::settings::Coherence::Lease,
            lease_ms: 2000,
            ack_timeout_ms: 100,
        },
        auth: AuthSettings {
            admin_key: Some(Secret::new(ADMIN_KEY)),
            metrics_public: false,
            session_hours: 12,
        },
        log: LogSettings {
            level: "info".into(),
            json: Some(false),
        },
        render: RenderSettings {
            max_placeholders: 1_000,
            max_output_bytes: 4 * 1024 * 1024,
        },
        labels: LabelSettings {
            protected_by_default: vec!["production".into()],
        },
        events: EventSettings {
            poll_ms: 100,
            heartbeat_secs: 15,
        },
        // Quick retries, so a test sees several attempts in seconds.
        webhooks: WebhookSettings {
            dispatch: true,
            allow_private_targets: Some(true),
            timeout_ms: 2_000,
            concurrency: 4,
            retry_base_ms: 100,
            retry_max_ms: 400,
            give_up_after_secs: 86_400,
            disable_after_secs: 86_400,
            lease_ms: 3_000,
            poll_ms: 100,
            max_response_bytes: 4_096,
        },
    }
}

/// Starts the app with settings adjusted by `adjust`.
pub async fn spawn_app_with(backend: &Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    LazyLock::force(&TRACING);
    let test_db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&test_db.url);
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("the app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        database_url: test_db.url.clone(),
        client: client(),
        handle,
        _db: test_db,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// Sends raw bytes with an optional content type, with the admin key.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        self.raw_as(method, path, content_type, body, &[]).await
    }

    /// As [`TestApp::raw`], with extra headers (an `authorization` here replaces the admin key).
    pub async fn raw_as(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.address));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        if let Some(ct) = content_type {
            req = req.insert_header(("content-type", ct));
        }
        let mut res = req.send_body(body).await.expect("request sent");
        let bytes = res.body().limit(16 * 1024 * 1024).await.expect("body read");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Response {
            status: res.status(),
            headers: res.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.raw(Method::GET, path, None, Vec::new()).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.raw(Method::DELETE, path, None, Vec::new()).await
    }

    pub async fn send(&self, method: Method, path: &str, body: &Value) -> Response {
        let bytes = serde_json::to_vec(body).expect("serialisable");
        self.raw(method, path, Some("application/json"), bytes).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send(Method::POST, path, body).await
    }

    /// Posts with `Prefer: respond-async`.
    pub async fn post_async(&self, path: &str, body: &Value) -> Response {
        let mut res = self
            .client
            .post(format!("{}{path}", self.address))
            .insert_header(("prefer", "respond-async"))
            .send_json(body)
            .await
            .expect("request sent");
        let bytes = res.body().await.expect("body read");
        Response {
            status: res.status(),
            headers: res.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.send(Method::PATCH, path, body).await
    }

    /// Creates a prompt and asserts it worked.
    pub async fn create_prompt(&self, name: &str) -> Value {
        let res = self
            .post("/v1/prompts", &serde_json::json!({ "name": name }))
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body
    }

    /// Creates a version and asserts it worked.
    pub async fn create_version(&self, name: &str, body: &Value) -> Value {
        let path = format!("/v1/prompts/{}/versions", encode(name));
        let res = self.post(&path, body).await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body
    }
}

/// A prompt name as it goes in a path.
pub fn encode(name: &str) -> String {
    name.replace('/', "%2F")
}

/// The real binary, as a child process; killed if the test ends first.
pub struct Binary {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `prompt-registry` on a free port with `env`, and waits for `/ready`.
pub async fn start_binary(database_url: &str, env: &[(&str, &str)]) -> Binary {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prompt-registry"));
    command
        .current_dir(std::env::temp_dir())
        .env_remove("APP_ENV")
        .env_remove("RUST_LOG")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("APP__DATABASE__URL", database_url)
        .env("APP__SERVER__PORT", port.to_string())
        .env("APP__SERVER__WORKERS", "2")
        .env("APP__LOG__LEVEL", "warn")
        .env("APP__AUTH__ADMIN_KEY", ADMIN_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let binary = Binary {
        child: command.spawn().expect("the binary starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = client();
    for _ in 0..300 {
        if let Ok(res) = client.get(format!("{}/ready", binary.base)).send().await
            && res.status().is_success()
        {
            return binary;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server did not become ready");
}

/// `TEST_REDIS_URL`.
///
/// # Panics
/// When it is not set: tests that need Redis are compiled as ignored
/// without it (see `build.rs`).
pub fn redis_url() -> String {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("TEST_REDIS_URL is not set: this Redis test cannot run"),
    }
}
