//! Throwaway databases for tests: SQLite always, PostgreSQL when
//! `TEST_DATABASE_URL` is set. Each test gets a database of its own, removed
//! when the handle is dropped, so tests run in parallel without sharing state.

use std::io::Write as _;

use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

use crate::{Db, DbOptions};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "TEST_DATABASE_URL";
/// When set, every PostgreSQL test database appends a line to this file once
/// its test has run, so a CI script can prove the PostgreSQL tests really ran.
pub const POSTGRES_LEDGER_VAR: &str = "TEST_POSTGRES_LEDGER";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// PostgreSQL at `TEST_DATABASE_URL`.
    ///
    /// # Panics
    /// When `TEST_DATABASE_URL` is not set: a test that asks for PostgreSQL is
    /// compiled as ignored without it (see `build.rs`), so reaching here
    /// means it was set at build time and not at run time.
    #[must_use]
    pub fn postgres() -> Self {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.is_empty() => Self::Postgres(url),
            _ => panic!("{POSTGRES_URL_VAR} is not set: this PostgreSQL test cannot run"),
        }
    }
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    File(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Creates an empty database on `backend`.
    ///
    /// # Panics
    /// When PostgreSQL was asked for and cannot be reached: a test that was
    /// meant to run there must fail, not pass silently.
    pub async fn new(backend: &Backend) -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("prompt-registry-test-{tag}.db"));
                Self {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::File(path),
                }
            }
            Backend::Postgres(admin_url) => {
                let name = format!("prt_{tag}");
                let admin = Database::connect(admin_url.as_str()).await.unwrap_or_else(|e| {
                    panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                let _ = admin.close().await;
                Self {
                    url: replace_database(admin_url, &name),
                    cleanup: Cleanup::Postgres {
                        admin_url: admin_url.clone(),
                        name,
                    },
                }
            }
        }
    }

    /// Opens the database and applies every migration.
    ///
    /// # Panics
    /// When either fails.
    pub async fn migrated(backend: &Backend) -> (Self, Db) {
        let test_db = Self::new(backend).await;
        let db = test_db.connect().await;
        db.migrate()
            .await
            .unwrap_or_else(|e| panic!("migrations failed: {e:#}"));
        (test_db, db)
    }

    /// Opens a pool on this database.
    ///
    /// # Panics
    /// When the database cannot be opened.
    pub async fn connect(&self) -> Db {
        Db::connect(&self.url, &DbOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot open the test database: {e:#}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs outside any async context we could await in, so the
                // database is dropped from a short-lived runtime of its own.
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let admin = Database::connect(admin_url.as_str()).await.ok()?;
                        admin
                            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .await
                            .ok()?;
                        admin.close().await.ok()
                    })
                })
                .join();
                if let Ok(path) = std::env::var(POSTGRES_LEDGER_VAR)
                    && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
                {
                    let _ = writeln!(f, "{} dropped={}", self.url, matches!(dropped, Ok(Some(()))));
                }
            }
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Generates, for each named `async fn test(backend: Backend)`, one test on
/// SQLite and one on PostgreSQL. The PostgreSQL one is compiled as ignored
/// ("TEST_DATABASE_URL is not set") unless the crate's build script found
/// `TEST_DATABASE_URL`, so the summary line says what did not run. The
/// leading attributes (the test attribute first) go on every test.
#[macro_export]
macro_rules! backend_tests {
    ($(#[$attr:meta])+ $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@emit [$(#[$attr])+] $($name),*);
    };
    (@emit $attrs:tt $($name:ident),*) => {
        mod sqlite {
            $( $crate::backend_tests!(@sqlite $attrs $name); )*
        }
        mod postgres {
            $( $crate::backend_tests!(@postgres $attrs $name); )*
        }
    };
    (@sqlite [$(#[$attr:meta])+] $name:ident) => {
        $(#[$attr])+
        async fn $name() {
            super::$name($crate::testing::Backend::Sqlite).await;
        }
    };
    (@postgres [$(#[$attr:meta])+] $name:ident) => {
        $(#[$attr])+
        #[cfg_attr(not(postgres_tests), ignore = "TEST_DATABASE_URL is not set")]
        async fn $name() {
            super::$name($crate::testing::Backend::postgres()).await;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_name_is_replaced_in_a_postgres_url() {
        assert_eq!(
            replace_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

/// A Redis server of a test's own on a free port, so it can be stopped,
/// restarted, frozen and have its clients cut without disturbing other
/// tests. Killed when dropped.
#[derive(Debug)]
pub struct OwnRedis {
    pub child: std::process::Child,
    pub port: u16,
}

impl OwnRedis {
    /// A free port for [`OwnRedis::start`].
    ///
    /// # Panics
    /// No port can be bound.
    #[must_use]
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Starts `redis-server` on `port`, keeping nothing on disk, and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// `redis-server` cannot be run or does not start listening.
    pub async fn start(port: u16) -> Self {
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (it is installed with Redis)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start");
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it.
    ///
    /// # Panics
    /// `redis-cli` cannot be run or fails.
    pub fn cli(&self, args: &[&str]) {
        let status = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli {args:?}");
    }

    /// Stops it now.
    pub fn stop(self) {}
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
