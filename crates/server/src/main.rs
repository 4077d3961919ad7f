use std::process::ExitCode;

use clap::Parser as _;
use migration::{Migrator, MigratorTrait};
use prompt_registry::cli::{Cli, Command, KeysAction, MigrateAction};
use prompt_registry::routes::keys::random_key_bytes;
use prompt_registry::settings::{AppEnv, Settings, redact_url};
use prompt_registry::startup::{Application, auth_service, cache_config, open_database};
use prompt_registry::telemetry;
use registry_cache::{Cache, CacheHealth};
use registry_domain::audit::Context;
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

/// The file of a SQLite URL (not an in-memory one).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite:")?
        .trim_start_matches("//")
        .split('?')
        .next()?;
    (!path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

async fn connect(settings: &Settings) -> anyhow::Result<Db> {
    Db::connect(&settings.database.url, &DbOptions::default()).await
}

async fn migrate(settings: &Settings, action: MigrateAction) -> anyhow::Result<()> {
    let db = connect(settings).await?;
    match action {
        MigrateAction::Up => {
            db.migrate().await?;
            eprintln!("migrations: up to date");
        }
        MigrateAction::Down { steps } => db.migrate_down(Some(steps)).await?,
        MigrateAction::Reset => db.migrate_down(None).await?,
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
    let auth = auth_service(settings, &db);
    match action {
        KeysAction::Create { name, scopes } => {
            let name = KeyName::new(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let scopes = Scopes::parse(&scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (key, generated) = auth
                .create(name, scopes, random_key_bytes(), &Context::system("command line"))
                .await?;
            eprintln!(
                "created key {} ({}); it is shown only now:",
                key.id,
                key.name.as_str()
            );
            println!("{}", generated.secret);
        }
        KeysAction::List => {
            println!(
                "{:<36}  {:<15}  {:<8} {:<20} NAME",
                "ID", "PREFIX", "STATE", "SCOPES"
            );
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
            auth.revoke(id, &Context::system("command line")).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// Checks the configuration and every dependency without changing anything:
/// no migration is applied and no key is created.
async fn check(settings: &Settings) -> anyhow::Result<()> {
    if let Some(path) = sqlite_file(&settings.database.url)
        && !path.exists()
    {
        println!(
            "database: none yet at {}; the first start creates it",
            std::path::absolute(&path).unwrap_or(path).display()
        );
        println!("configuration: ok");
        return Ok(());
    }
    let db = connect(settings).await?;
    db.ping().await?;
    println!("database: ok ({})", redact_url(&settings.database.url));
    let pending = db.pending_migrations().await?;
    match (pending.len(), settings.migrate_on_start()) {
        (0, _) => println!("migrations: up to date"),
        (n, true) => println!("migrations: {n} pending, applied when the server starts"),
        (n, false) => anyhow::bail!(
            "{n} pending migration(s) ({}): apply them with `prompt-registry migrate up`",
            pending.join(", ")
        ),
    }
    let auth = auth_service(settings, &db);
    // Before the first start the key table may not exist yet: no key, then.
    let way_in = pending.is_empty() && auth.has_a_way_in().await?;
    match (way_in, settings.env) {
        (true, _) => println!("admin access: ok"),
        (false, AppEnv::Dev) => println!("admin access: none yet; the first start creates and prints a key"),
        (false, AppEnv::Prod) => anyhow::bail!(
            "no admin API key: set APP__AUTH__ADMIN_KEY, or create one with `prompt-registry keys create --name admin --scopes admin`"
        ),
    }
    let cache = Cache::new(&cache_config(settings))?;
    match cache.health().await {
        CacheHealth::RedisDegraded => anyhow::bail!("redis: not answering"),
        health => println!("cache: {}", health.as_str()),
    }
    println!("configuration: ok");
    Ok(())
}
