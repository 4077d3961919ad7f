use prompt_registry::settings::{Settings, redact_url};
use prompt_registry::startup::Application;
use prompt_registry::telemetry;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("prompt-registry: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log.level, settings.json_logs());
    tracing::info!(env = ?settings.env, database = %redact_url(&settings.database.url), "starting");
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("startup failed: {e:#}");
            eprintln!("prompt-registry: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prompt-registry: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
