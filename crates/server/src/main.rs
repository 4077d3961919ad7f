use std::process::ExitCode;

use clap::Parser as _;
use migration::{Migrator, MigratorTrait};
use prompt_registry::cache::{AppCache, CacheHealth};
use prompt_registry::cli::{Cli, Command, KeysAction, MigrateAction};
use prompt_registry::routes::keys::random_key_bytes;
use prompt_registry::settings::{Settings, redact_url};
use prompt_registry::startup::{Application, open_auth, open_database};
use prompt_registry::telemetry;
use registry_domain::auth::{KeyName, Scopes};
use registry_persistence::{Db, DbOptions};

/// Startup and command failures are one clear line on stderr and a non-zero exit.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("prompt-registry: {e:#}");
    ExitCode::FAILURE
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    telemetry::init(&settings.log.level, settings.json_logs());
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate { action } => migrate(&settings, action).await,
        Command::Keys { action } => keys(&settings, action).await,
        Command::Check => check(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(env = ?settings.env, database = %redact_url(&settings.database.url), "starting");
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}

async fn connect(settings: &Settings) -> anyhow::Result<Db> {
    Db::connect(&settings.database.url, &DbOptions::default()).await
}

async fn migrate(settings: &Settings, action: MigrateAction) -> anyhow::Result<()> {
    let db = connect(settings).await?;
    match action {
        MigrateAction::Up => Migrator::up(db.conn(), None).await?,
        MigrateAction::Down { steps } => Migrator::down(db.conn(), Some(steps)).await?,
        MigrateAction::Fresh => Migrator::fresh(db.conn()).await?,
        MigrateAction::Status => {
            for m in Migrator::get_migration_with_status(db.conn()).await? {
                println!("{:<50} {:?}", m.name(), m.status());
            }
        }
    }
    Ok(())
}

async fn keys(settings: &Settings, action: KeysAction) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    let repo = std::sync::Arc::new(registry_persistence::SeaOrmApiKeyRepository::new(db));
    let auth = registry_domain::auth::AuthService::new(repo, None);
    match action {
        KeysAction::Create { name, scopes } => {
            let name = KeyName::new(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let scopes = Scopes::parse(&scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (key, generated) = auth.create(name, scopes, random_key_bytes()).await?;
            eprintln!(
                "created key {} ({}); it is shown only now:",
                key.id,
                key.name.as_str()
            );
            println!("{}", generated.secret);
        }
        KeysAction::List => {
            for k in auth.list().await? {
                let scopes: Vec<_> = k.scopes.as_slice().iter().map(|s| s.as_str()).collect();
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}  pr_{}_…  {:<8} {:<20} {}",
                    k.id,
                    k.prefix,
                    state,
                    scopes.join(","),
                    k.name.as_str()
                );
            }
        }
        KeysAction::Revoke { id } => {
            auth.revoke(id).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

async fn check(settings: &Settings) -> anyhow::Result<()> {
    let db = open_database(settings).await?;
    db.ping().await?;
    println!("database: ok ({})", redact_url(&settings.database.url));
    open_auth(settings, &db).await?;
    println!("admin access: ok");
    let cache = AppCache::from_settings(settings)?;
    match cache.health().await {
        CacheHealth::RedisDegraded => anyhow::bail!("redis: not answering"),
        health => println!("cache: {}", health.as_str()),
    }
    println!("configuration: ok");
    Ok(())
}
