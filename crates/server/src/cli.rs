//! The command line: `serve` (the default), `migrate`, `keys` and `check`.

use clap::{Parser, Subcommand};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "prompt-registry",
    version,
    about = "Prompt Registry: prompts, immutable versions and runs over a REST API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply, roll back or inspect the schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Validate the configuration and reach every dependency, then exit.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the last migrations.
    Down {
        #[arg(short = 'n', long, default_value_t = 1)]
        steps: u32,
    },
    /// Roll back every migration (an empty schema).
    Reset,
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table, then apply every migration.
    Fresh,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: Uuid },
}
