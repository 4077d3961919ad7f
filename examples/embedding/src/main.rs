//! Prompt Registry inside another Rust service, without the HTTP server.
//!
//! The domain crate holds the rules; the service picks the adapters: here the
//! SeaORM repositories on SQLite and the in-process version cache. The same
//! wiring works with a `postgres://` URL, or with `TieredCache::with_redis`
//! when several replicas share one database.
//!
//! ```sh
//! cargo run -p embedding-example                                  # in memory
//! cargo run -p embedding-example -- "sqlite://data/embedded.db"   # a file
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use registry_cache::TieredCache;
use registry_domain::audit::Context;
use registry_domain::prompt::error::RenderFailure;
use registry_domain::prompt::{
    LabelName, NewPrompt, NewVersion, PromptName, PromptService, Rendered, Tags, Template, Variables,
    VersionSelector,
};
use registry_domain::run::stats::{Bucket, StatsQuery};
use registry_domain::run::{NewRunBuilder, RunService};
use registry_persistence::{Db, DbOptions, SeaOrmPromptRepository, SeaOrmRunRepository};
use serde_json::{Map, Value, json};

type Prompts = PromptService<SeaOrmPromptRepository, TieredCache>;
type Runs = RunService<SeaOrmRunRepository, SeaOrmPromptRepository, TieredCache>;

/// The registry as the host service holds it: cheap to clone, one per process.
#[derive(Clone)]
struct Registry {
    prompts: Prompts,
    runs: Runs,
}

impl Registry {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let db = Db::connect(url, &DbOptions::default()).await?;
        db.migrate().await?;
        let cache = Arc::new(TieredCache::in_process(10_000, Duration::from_secs(300)));
        let prompt_repo = Arc::new(SeaOrmPromptRepository::new(db.clone()));
        let prompts = PromptService::new(prompt_repo, cache);
        let runs = RunService::new(Arc::new(SeaOrmRunRepository::new(db)), prompts.clone());
        Ok(Self { prompts, runs })
    }
}

/// What the walk-through saw, so the test below can check it.
#[derive(Debug)]
struct Report {
    /// The active version after version 2 was added and then rolled back.
    active_after_rollback: u32,
    /// The active template rendered with `{"name": "Ada"}`.
    rendered: String,
    /// Why rendering without `name` failed.
    missing_variable: String,
    /// Runs logged against the active version, as the stats count them.
    runs_counted: u64,
}

fn version(template: &str, variables: Value, message: &str) -> anyhow::Result<NewVersion> {
    let template = Template::parse(None, &Value::String(template.to_owned()))?;
    let specs = serde_json::from_value(variables).context("variable declarations")?;
    let variables = Variables::new(specs)?;
    Ok(NewVersion::new(
        template,
        variables,
        Map::new(),
        Some(message.to_owned()),
        true,
    )?)
}

fn values(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

async fn walk_through(registry: &Registry) -> anyhow::Result<Report> {
    // Every change is recorded in the audit log under who made it.
    let ctx = Context::system("embedding example");
    let name = PromptName::new("support/greeting")?;
    registry
        .prompts
        .create_prompt(
            NewPrompt {
                name: name.clone(),
                description: None,
                tags: Tags::new(vec!["example".to_owned()])?,
            },
            &ctx,
        )
        .await?;

    let variables = json!({ "name": { "type": "string" } });
    registry
        .prompts
        .create_version(
            &name,
            version("Hello {{ name }}!", variables.clone(), "first")?,
            &ctx,
        )
        .await?;
    registry
        .prompts
        .create_version(
            &name,
            version("Hi {{ name }}, welcome back.", variables, "friendlier")?,
            &ctx,
        )
        .await?;
    // Label `production` points at version 2 now; roll it back in one call.
    registry
        .prompts
        .rollback_label(
            &name,
            LabelName::PRODUCTION,
            Some("the old greeting tested better".into()),
            false,
            &ctx,
        )
        .await?;

    // The hot path: the active version, from the cache after the first call.
    let active = registry
        .prompts
        .get_version(&name, VersionSelector::ACTIVE)
        .await?;
    let (_, rendered) = registry
        .prompts
        .render(
            &name,
            VersionSelector::ACTIVE,
            None,
            &values(json!({ "name": "Ada" })),
        )
        .await
        .map_err(|e| anyhow!(e))?;
    let Rendered::Text(rendered) = rendered else {
        anyhow::bail!("a text template renders as text");
    };

    // Strict variables: a missing value is an error, never an empty string.
    let missing_variable = match registry
        .prompts
        .render(&name, VersionSelector::ACTIVE, None, &Map::new())
        .await
    {
        Err(RenderFailure::Invalid(errors)) => errors.to_string(),
        Err(other) => return Err(anyhow!(other)),
        Ok(_) => anyhow::bail!("rendering without `name` should fail"),
    };

    // Log what the model did with it; the run is tied to the active version.
    let run = NewRunBuilder {
        prompt: name.to_string(),
        input: Some(values(json!({ "name": "Ada" }))),
        output: Some(json!("Hello Ada! How can I help?")),
        status: "success".to_owned(),
        model: Some("example-model".to_owned()),
        latency_ms: 420.5,
        prompt_tokens: Some(12),
        completion_tokens: Some(9),
        cost_usd: Some("0.000105".to_owned()),
        ..NewRunBuilder::default()
    }
    .build()?;
    registry.runs.log(run).await?;

    let stats = registry
        .runs
        .stats(
            &name,
            StatsQuery {
                from: None,
                to: None,
                bucket: Bucket::None,
                version: Some(active.version),
                label: None,
                by_label: false,
            },
        )
        .await?;

    Ok(Report {
        active_after_rollback: active.version.get(),
        rendered,
        missing_variable,
        runs_counted: stats.iter().map(|s| s.count).sum(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite::memory:".to_owned());
    let registry = Registry::open(&url).await?;
    let report = walk_through(&registry).await?;
    println!(
        "active version after the rollback: {}",
        report.active_after_rollback
    );
    println!("rendered: {}", report.rendered);
    println!("without `name`: {}", report.missing_variable);
    println!("runs counted for the active version: {}", report.runs_counted);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_walk_through_rolls_back_renders_strictly_and_counts_the_run() -> anyhow::Result<()> {
        let registry = Registry::open("sqlite::memory:").await?;
        let report = walk_through(&registry).await?;
        assert_eq!(report.active_after_rollback, 1);
        assert_eq!(report.rendered, "Hello Ada!");
        assert!(
            report.missing_variable.contains("`name` is required"),
            "{}",
            report.missing_variable
        );
        assert_eq!(report.runs_counted, 1);
        Ok(())
    }
}
