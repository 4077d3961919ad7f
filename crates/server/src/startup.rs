//! Building the application: one app factory for `main` and the tests, and
//! an [`Application`] that binds a listener (port 0 in tests) and serves.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, from_fn};
use actix_web::{App, HttpMessage as _, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context as _;
use registry_cache::{Cache, CacheConfig, CacheMode, LeaseSettings, RedisSettings};
use registry_domain::auth::{AuthService, KeyName, Scopes};
use registry_domain::events::EventLog;
use registry_domain::prompt::PromptService;
use registry_domain::run::RunService;
use registry_persistence::{
    Db, DbOptions, SeaOrmAuditLog, SeaOrmEventLog, SeaOrmPromptRepository, SeaOrmRunRepository,
};
use registry_persistence::{SeaOrmApiKeyRepository, SeaOrmWebhookRepository};
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi as _;
use utoipa_actix_web::{AppExt as _, scope};
use utoipa_swagger_ui::SwaggerUi;

use crate::hub::EventHub;
use crate::mcp::McpService;
use crate::problem::{ApiError, ErrorCode, PROBLEM_JSON, extractors, method_not_allowed};
use crate::routes::keys::random_key_bytes;
use crate::routes::{self, ApiDoc};
use crate::run_writer::{self, WriterConfig, WriterTask};
use crate::settings::{AppEnv, Settings};
use crate::state::{AppState, Auth};
use crate::telemetry::RequestSpan;
use crate::{auth, mcp, metrics, middleware};

/// Limits the app enforces on requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub json_bytes: usize,
    pub request_timeout: Duration,
}

impl Limits {
    #[must_use]
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            json_bytes: settings.server.json_limit,
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
        }
    }
}

/// The OpenAPI document, as the app serves it.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(api_routes)
        .split_for_parts();
    routes::finish_document(api)
}

fn api_routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(routes::health::configure)
        .configure(metrics::configure)
        .service(
            scope::scope("/v1")
                // Versions first: the active-version fetch is the hot path,
                // and the router tries resources in registration order.
                .configure(routes::versions::configure)
                .configure(routes::resolve::configure)
                .configure(routes::labels::configure)
                .configure(routes::prompts::configure)
                .configure(routes::runs::configure)
                .configure(routes::keys::configure)
                .configure(routes::audit::configure)
                .configure(routes::events::configure)
                .configure(routes::webhooks::configure)
                .configure(routes::traces::configure),
        );
}

/// The whole application, as served by `main` and exercised by the tests.
pub fn create_app(
    state: AppState,
    limits: Limits,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .app_data(web::Data::new(state))
        .app_data(
            web::JsonConfig::default()
                .limit(limits.json_bytes)
                .error_handler(extractors::json_handler),
        )
        .app_data(web::QueryConfig::default().error_handler(extractors::query_handler))
        .app_data(middleware::RequestTimeout(limits.request_timeout))
        .app_data(web::PathConfig::default().error_handler(extractors::path_handler))
        .configure(api_routes)
        .split_for_parts();
    let api = routes::finish_document(api);
    app.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
        .route("/docs", web::get().to(redirect_to_docs))
        .route("/", web::get().to(redirect_home))
        // JSON-RPC, not REST: outside the OpenAPI document, so its methods
        // are named here for the 405.
        .service(
            web::resource(MCP_PATH)
                .route(web::get().to(mcp::serve))
                .route(web::post().to(mcp::serve))
                .route(web::delete().to(mcp::serve))
                .default_service(web::to(mcp_method_not_allowed)),
        )
        .configure(crate::ui::configure)
        .default_service(web::to(not_found))
        // The last `wrap` runs first: the request span, then our envelope
        // (request id, time limit, panic containment, headers, line endings,
        // metrics, waking the event hub after writes), authentication, and
        // error bodies.
        .wrap(ErrorHandlers::new().default_handler(problem_body))
        .wrap(from_fn(auth::authenticate))
        .wrap(from_fn(middleware::envelope))
        .wrap(TracingLogger::<RequestSpan>::new())
}

/// Where MCP clients connect (see [`crate::mcp`]).
pub const MCP_PATH: &str = "/mcp";
const MCP_METHODS: [&str; 3] = ["GET", "POST", "DELETE"];

async fn mcp_method_not_allowed(req: HttpRequest) -> HttpResponse {
    method_not_allowed(req.method(), req.path(), &MCP_METHODS)
}

/// `/` leads somewhere useful; temporary, since what is there may change.
async fn redirect_home() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// Every documented path with its methods, to tell "no such path" (404)
/// from "not with this method" (405).
static ROUTES: std::sync::LazyLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
    std::sync::LazyLock::new(|| {
        openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                let allowed = methods
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(m, _)| m)
                    .collect();
                (actix_web::dev::ResourceDef::new(path.as_str()), allowed)
            })
            .collect()
    });

/// The default service: 405 with `Allow` for a documented path, else 404.
async fn not_found(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    if let Some((_, allowed)) = ROUTES.iter().find(|(def, _)| def.is_match(path)) {
        return method_not_allowed(req.method(), path, allowed);
    }
    let mut detail = format!("no route for {} {path}", req.method());
    if let Some(hint) = encoded_name_hint(path) {
        detail.push_str("; ");
        detail.push_str(&hint);
    }
    ApiError::new(ErrorCode::NotFound, detail).error_response()
}

/// A prompt name with a `/` sent unencoded (`/v1/prompts/support/triage`)
/// matches no route: say how to send it.
fn encoded_name_hint(path: &str) -> Option<String> {
    const AFTER_NAME: [&str; 5] = ["versions", "render", "runs", "stats", "activate"];
    let rest = path.strip_prefix("/v1/prompts/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let name_len = segments
        .iter()
        .position(|s| AFTER_NAME.contains(s))
        .unwrap_or(segments.len());
    if name_len < 2 {
        return None;
    }
    let name = segments[..name_len].join("/");
    let mut fixed = format!("/v1/prompts/{}", segments[..name_len].join("%2F"));
    for s in &segments[name_len..] {
        fixed.push('/');
        fixed.push_str(s);
    }
    Some(format!(
        "if `{name}` is a prompt name, percent-encode its `/` as `%2F`: {fixed}"
    ))
}

/// Gives a problem+json body to error responses that do not have one yet,
/// such as those of the HTTP layer itself.
#[allow(clippy::unnecessary_wraps, reason = "ErrorHandlers requires a Result")]
fn problem_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    // The MCP transport's answers (JSON-RPC errors, 404 for an ended
    // session, 406 without the SSE media type) are what MCP clients act on.
    let from_mcp = res.request().extensions().contains::<mcp::TransportAnswer>();
    // The console answers its own errors as pages.
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_problem || from_mcp || is_page {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = ErrorCode::ALL
        .into_iter()
        .find(|c| c.status() == status)
        .unwrap_or(if status.is_server_error() {
            ErrorCode::Internal
        } else {
            ErrorCode::InvalidParameter
        });
    let detail = match code {
        ErrorCode::MethodNotAllowed => format!(
            "{} is not allowed on {}",
            res.request().method(),
            res.request().path()
        ),
        ErrorCode::Internal => "the server failed to handle this request; it has been logged".to_owned(),
        _ => code.title().to_owned(),
    };
    let (req, _) = res.into_parts();
    let mut response = ApiError::new(code, detail).error_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let response: HttpResponse<BoxBody> = response;
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

/// Opens the database and applies or checks migrations as configured.
///
/// # Errors
/// An unreachable database, a failed migration, or — when migrations are not
/// applied at startup — any pending migration.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Db> {
    let options = DbOptions {
        max_connections: settings.database.max_connections,
        connect_timeout: Duration::from_millis(settings.database.connect_timeout_ms),
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
        // A pool per HTTP worker.
        thread_pools: settings.server.worker_count(),
        ..DbOptions::default()
    };
    let db = Db::connect(&settings.database.url, &options).await?;
    if settings.migrate_on_start() {
        db.migrate().await?;
    } else {
        let pending = db.pending_migrations().await?;
        if !pending.is_empty() {
            anyhow::bail!(
                "{} pending migration(s) ({}): apply them with `prompt-registry migrate up` or set APP__DATABASE__MIGRATE=true",
                pending.len(),
                pending.join(", ")
            );
        }
    }
    Ok(db)
}

/// The key service over `db`, with the configured admin key. Built here
/// only, for the server and the command line alike.
#[must_use]
pub fn auth_service(settings: &Settings, db: &Db) -> Auth {
    AuthService::new(
        Arc::new(SeaOrmApiKeyRepository::new(db.clone())),
        settings
            .auth
            .admin_key
            .as_ref()
            .map(crate::settings::Secret::expose),
    )
    .with_outage_grace(settings.stale_if_error())
}

/// The cache the settings describe.
#[must_use]
pub fn cache_config(settings: &Settings) -> CacheConfig {
    let mode = match settings.cache_mode() {
        crate::settings::CacheMode::Off => CacheMode::Off,
        crate::settings::CacheMode::Memory => CacheMode::InProcess,
        crate::settings::CacheMode::Redis => CacheMode::Redis(RedisSettings {
            url: settings.redis.url.clone().unwrap_or_default(),
            prefix: settings.redis.prefix.clone(),
            timeout: Duration::from_millis(settings.redis.timeout_ms.max(1)),
            pool_size: settings.redis.pool_size,
            circuit_failures: settings.redis.circuit_failures,
            circuit_probe: Duration::from_millis(settings.redis.circuit_probe_ms.max(1)),
            lease: (settings.redis.coherence == crate::settings::Coherence::Lease).then(|| LeaseSettings {
                period: Duration::from_millis(settings.redis.lease_ms),
                ack_timeout: Duration::from_millis(settings.redis.ack_timeout_ms),
            }),
        }),
    };
    CacheConfig {
        mode,
        capacity: settings.cache.capacity,
        ttl: Duration::from_secs(settings.cache.ttl_secs),
        stale_if_error: settings.stale_if_error(),
    }
}

/// The composition root: every adapter chosen and every service built, once.
/// Returns what the handlers share and the background writer to stop.
///
/// # Errors
/// A malformed Redis URL, or no way in for an admin.
pub async fn compose(settings: &Settings, db: Db) -> anyhow::Result<(AppState, WriterTask)> {
    let cache = Arc::new(Cache::new(&cache_config(settings))?);
    // In the lease mode: reads check Redis until the first lease is held.
    cache.start(Duration::from_secs(1)).await;
    tracing::info!(cache = ?settings.cache_mode(), "version cache");
    let auth = Arc::new(open_auth(settings, &db).await?);
    let prompts = PromptService::new(
        Arc::new(SeaOrmPromptRepository::new(db.clone())),
        Arc::clone(&cache),
    )
    .with_limits(settings.render_limits())
    .with_label_policy(settings.label_policy()?);
    let run_repo = Arc::new(SeaOrmRunRepository::new(db.clone()));
    let writer_config = WriterConfig {
        capacity: settings.runs.queue_capacity,
        batch_size: settings.runs.writer_batch_size,
        concurrency: settings.runs.writer_concurrency,
        ..WriterConfig::default()
    };
    let ingest = crate::ingest::Ingest::start(settings.runs.ingest_nice, settings.runs.writer_concurrency)?;
    let (queue, writer) = match settings.redis.url.as_ref().filter(|_| settings.durable_runs()) {
        Some(url) => {
            let stream = crate::run_stream::RunStream::new(
                crate::run_stream::StreamConfig {
                    url: url.clone(),
                    key: format!("{}runs", settings.redis.prefix),
                    capacity: settings.runs.stream_capacity,
                    claim_after: Duration::from_millis(settings.runs.claim_after_ms),
                    timeout: Duration::from_millis(settings.runs.stream_timeout_ms),
                    read_count: settings.runs.writer_batch_size.div_ceil(8).max(1),
                },
                settings.redis.pool_size,
            )?;
            tracing::info!("runs answered 202 are kept in the Redis stream until stored");
            run_writer::spawn_durable(Arc::clone(&run_repo), writer_config, Arc::new(stream))
        }
        None => run_writer::spawn(Arc::clone(&run_repo), writer_config),
    };
    tokio::spawn(maintain_runs(
        Arc::clone(&run_repo),
        registry_domain::run::retention::Retention::days(settings.runs.retention_days),
        Duration::from_secs(settings.runs.maintenance_interval_secs),
    ));
    let runs = RunService::new(run_repo, prompts.clone()).with_sink(Arc::new(queue.clone()));
    let events = Arc::new(SeaOrmEventLog::new(db.clone()));
    let hub = Arc::new(EventHub::new(events.last_seq().await?));
    tokio::spawn(Arc::clone(&hub).run(
        Arc::clone(&events) as Arc<dyn EventLog>,
        Duration::from_millis(settings.events.poll_ms),
    ));
    let mcp = McpService::new(prompts.clone(), Arc::clone(&hub));
    let state = AppState {
        prompts,
        runs,
        run_queue: queue,
        cache,
        sessions: Arc::new(registry_domain::auth::session::SessionService::new(
            Arc::new(registry_persistence::SeaOrmSessionRepository::new(db.clone())),
            Duration::from_secs(u64::from(settings.auth.session_hours) * 3600),
            settings.auth.admin_key.is_some(),
        )),
        console: crate::ui::ConsoleSettings {
            secure_cookie: settings.env != AppEnv::Dev,
        },
        auth,
        metrics: Arc::new(crate::metrics::Metrics::default()),
        bodies: Arc::new(crate::state::Bodies::new(10_000)),
        metrics_public: settings.auth.metrics_public,
        audit: Arc::new(SeaOrmAuditLog::new(db.clone())),
        events,
        mcp,
        hub,
        webhooks: Arc::new(SeaOrmWebhookRepository::new(db.clone())),
        delivery: Arc::new(crate::webhooks::DeliveryConfig::from_settings(settings)),
        heartbeat: Duration::from_secs(settings.events.heartbeat_secs),
        db,
        max_batch: settings.runs.max_batch,
        ingest,
    };
    Ok((state, writer))
}

/// The runs' background upkeep, at start and then every `every`: the coming
/// months' partitions (PostgreSQL), and with a retention the removal of
/// expired runs, partitions first, then in small batches. Failures are
/// logged and tried again next time.
async fn maintain_runs<S: registry_domain::run::ports::RunRetention>(
    store: Arc<S>,
    retention: Option<registry_domain::run::retention::Retention>,
    every: Duration,
) {
    loop {
        let now = registry_domain::time::now_utc();
        if let Err(e) = store.prepare(now).await {
            tracing::warn!(error = %format!("{e:#}"), "preparing the coming months' run partitions failed");
        }
        if let Some(retention) = retention {
            match retention.prune(store.as_ref(), now).await {
                Ok(p) if p.partitions > 0 || p.runs > 0 => tracing::info!(
                    partitions = p.partitions,
                    runs = p.runs,
                    cutoff = %registry_domain::time::rfc3339(retention.cutoff(now)),
                    "removed expired runs"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "removing expired runs failed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Where the data lives, for people: a SQLite file as an absolute path (so
/// starting from another directory, which opens another file, is visible),
/// any other URL without its password.
#[must_use]
pub fn describe_database(url: &str) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return crate::settings::redact_url(url);
    };
    let path = rest
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.contains(":memory:") {
        return "SQLite in memory (nothing is kept)".to_owned();
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| std::path::PathBuf::from(path));
    format!("SQLite file {}", absolute.display())
}

/// The key service, making sure an admin can get in: in prod a configured
/// admin key or a stored key is required; in dev a first admin key is
/// created and printed when there is none.
///
/// # Errors
/// Prod with no way in, or storage failures.
pub async fn open_auth(settings: &Settings, db: &Db) -> anyhow::Result<Auth> {
    let auth = auth_service(settings, db);
    if auth.has_a_way_in().await? {
        if settings.env == AppEnv::Dev && settings.auth.admin_key.is_none() {
            // The key was printed on the first start only: say what to do if it is lost.
            eprintln!(
                "\n  API keys exist in this database; none is shown again. Lost yours? Create one with\n    prompt-registry keys create --name admin --scopes admin\n  (or `cargo run --release -- keys create --name admin --scopes admin`)\n"
            );
        }
        return Ok(auth);
    }
    if settings.env == AppEnv::Prod {
        anyhow::bail!(
            "no admin API key: set APP__AUTH__ADMIN_KEY, or create one with `prompt-registry keys create --name admin --scopes admin`"
        );
    }
    let name = KeyName::new("dev-admin").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, generated) = auth
        .create(
            name,
            Scopes::admin(),
            random_key_bytes(),
            &registry_domain::audit::Context::system("first start"),
        )
        .await?;
    // Printed, not logged: shown once, on this first start, so a newcomer can call the API.
    eprintln!(
        "\n  First start: created an admin API key (shown only now):\n\n    {}\n\n  Use it as `Authorization: Bearer <key>`, e.g.\n    curl -H 'Authorization: Bearer {}' http://{}:{}/v1/prompts\n",
        generated.secret, generated.secret, settings.server.host, settings.server.port
    );
    Ok(auth)
}

/// A bound, ready-to-run server, with its background run writer.
pub struct Application {
    port: u16,
    server: Server,
    writer: WriterTask,
    /// Told when shutdown starts, to end long-lived responses.
    hub: Arc<EventHub>,
    /// How long the writer may keep trying to flush at shutdown.
    flush_grace: Duration,
    /// The webhook dispatcher, stopped once the server has: it runs on the
    /// main thread's local task set, which would otherwise drop it (and a
    /// database connection it may hold) after the runtime has gone.
    dispatcher: Option<actix_web::rt::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the database, binds the listener and builds the server.
    ///
    /// # Errors
    /// Any failure to open the database or to bind.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = open_database(&settings).await?;
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).with_context(|| format!("cannot listen on {address}"))?;
        let port = listener.local_addr()?.port();
        let (state, writer) = compose(&settings, db).await?;
        let dispatcher = settings.webhooks.dispatch.then(|| {
            let dispatcher =
                crate::webhooks::Dispatcher::new(Arc::clone(&state.webhooks), (*state.delivery).clone());
            actix_web::rt::spawn(dispatcher.run(Arc::clone(&state.hub)))
        });
        let limits = Limits::from_settings(&settings);
        let hub = Arc::clone(&state.hub);
        // Called on each worker's own thread, which then queries through
        // connections it opened itself.
        let server = HttpServer::new(move || {
            state.db.bind_thread();
            create_app(state.clone(), limits)
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        // Signals are handled in `run_until_stopped`, which ends event
        // streams before the graceful stop waits for connections.
        .disable_signals()
        .workers(settings.server.worker_count())
        .listen(listener)?;
        if settings.env == AppEnv::Dev {
            eprintln!(
                "  Database: {}\n  Swagger UI: http://{address}/docs/\n  Console: http://{address}/ui/ (sign in with an API key)\n",
                describe_database(&settings.database.url)
            );
        }
        tracing::info!(%address, port, "listening");
        Ok(Self {
            port,
            server: server.run(),
            writer,
            hub,
            flush_grace: Duration::from_secs(settings.server.shutdown_timeout_secs),
            dispatcher,
        })
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere.
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the process is asked to stop (SIGINT or SIGTERM), then
    /// finishes in-flight requests and writes every accepted run.
    ///
    /// # Errors
    /// An I/O failure of the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let hub = Arc::clone(&self.hub);
        actix_web::rt::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: ending event streams, finishing requests in flight");
            hub.close();
            handle.stop(true).await;
        });
        let served = self.server.await;
        tracing::info!("server stopped; flushing accepted runs");
        self.writer.shutdown(self.flush_grace).await;
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.abort();
            let _ = dispatcher.await;
        }
        served
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_name_sent_with_a_bare_slash_gets_a_hint() {
        let hint = encoded_name_hint("/v1/prompts/support/triage/versions/active").expect("a hint");
        assert!(
            hint.ends_with("/v1/prompts/support%2Ftriage/versions/active"),
            "{hint}"
        );
        assert!(encoded_name_hint("/v1/prompts/plain/nowhere").is_none_or(|h| h.contains("plain/nowhere")));
        assert_eq!(encoded_name_hint("/v1/prompts/plain/versions/9/x"), None);
        assert_eq!(encoded_name_hint("/v1/other/a/b"), None);
    }

    #[test]
    fn every_documented_path_is_known_to_the_405_check() {
        assert!(ROUTES.len() >= 15, "{}", ROUTES.len());
        assert!(
            ROUTES
                .iter()
                .any(|(def, methods)| def.is_match("/health") && methods == &["GET"])
        );
        assert!(
            ROUTES
                .iter()
                .any(|(def, _)| def.is_match("/v1/prompts/a%2Fb/versions/3"))
        );
    }
}
