//! Connections, migrations and the transaction discipline shared by the
//! repositories.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::Value as SqlValue;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr};
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::Mutex;

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    /// How long SQLite waits for another process's write lock.
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL: how many threads may take a pool of their own (see
    /// [`Db::bind_thread`]), within `max_connections` in all; 0 for one
    /// shared pool.
    pub thread_pools: usize,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            thread_pools: 0,
        }
    }
}

/// An open database, with what every repository needs to write safely.
#[derive(Debug, Clone)]
pub struct Db {
    /// The shared pool; on PostgreSQL, the one for threads not bound to a
    /// pool of their own.
    conn: DatabaseConnection,
    /// PostgreSQL: pools for one thread each, see [`Db::bind_thread`].
    bound: Option<Arc<ThreadPools>>,
    /// SQLite allows one writer at a time. Queuing this process's writers here
    /// means they never race for the file lock (which SQLite would answer
    /// with "database is locked" for a transaction that read first); the busy
    /// timeout still covers writers in other processes.
    sqlite_writer: Option<Arc<Mutex<()>>>,
}

/// Pools that each serve the threads bound to them.
#[derive(Debug)]
struct ThreadPools {
    /// Tells this `Db`'s pools from another's on the same thread.
    id: usize,
    pools: Vec<DatabaseConnection>,
    next: AtomicUsize,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The pool this thread takes its connections from: a `Db`'s id and
    /// the pool's index in it.
    static BOUND: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// How `max` connections are shared when `threads` threads have a pool of
/// their own beside the shared one: (the shared pool's, each thread pool's).
/// `None` when that would leave a pool fewer than two.
fn split_connections(max: u32, threads: usize) -> Option<(u32, u32)> {
    let threads = u32::try_from(threads).ok().filter(|&t| t > 0)?;
    let each = max / (threads + 1);
    (each >= 2).then(|| (max - each * threads, each))
}

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How many connections a thread's own pool opens, at once, as it is bound:
/// a request that reads and then writes uses two, as sqlx pings a
/// connection that comes back to the pool before it lends it again, and
/// the next request may start while that ping is under way.
pub const WARM_CONNECTIONS: usize = 3;

/// Attempts for a transaction that fails with a transient error.
const MAX_ATTEMPTS: u32 = 6;

impl Db {
    /// Opens a pool for a `postgres://` or `sqlite://` URL. A SQLite file and
    /// its directory are created when missing.
    ///
    /// # Errors
    /// An unsupported or malformed URL, or a database that cannot be reached.
    pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let is_sqlite = url.starts_with("sqlite:");
        if !(is_sqlite || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("unsupported database URL: use postgres://… or sqlite://…");
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if is_sqlite && !in_memory {
            ensure_sqlite_dir(url)?;
        }
        let url = if is_sqlite && !in_memory && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        if !is_sqlite {
            probe_postgres(&url, options.connect_timeout).await?;
        }
        let mut opts = ConnectOptions::new(url);
        // Each connection to an in-memory SQLite database is its own database.
        let max = if in_memory {
            1
        } else {
            options.max_connections.max(1)
        };
        let split = (!is_sqlite)
            .then(|| split_connections(max, options.thread_pools))
            .flatten();
        let busy = options.sqlite_busy_timeout;
        opts.max_connections(split.map_or(max, |(shared, _)| shared))
            .min_connections(if in_memory { 1 } else { 0 })
            .connect_timeout(options.connect_timeout)
            .acquire_timeout(options.acquire_timeout)
            // A connection that served a query a moment ago is not pinged
            // again before the next: that was one more round trip per query
            // (sqlx already pings each connection as it comes back to the
            // pool). One that has sat idle is, so the first requests after
            // a database restart find live connections.
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(busy)
                    .foreign_keys(true)
            });
        let bound = match split {
            Some((_, each)) => {
                let mut pools = Vec::with_capacity(options.thread_pools);
                for _ in 0..options.thread_pools {
                    let mut opts = opts.clone();
                    // Opened by the thread that uses them, on first use.
                    opts.max_connections(each).connect_lazy(true);
                    pools.push(
                        Database::connect(opts)
                            .await
                            .context("cannot connect to the database")?,
                    );
                }
                Some(Arc::new(ThreadPools {
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    pools,
                    next: AtomicUsize::new(0),
                }))
            }
            None => None,
        };
        let conn = Database::connect(opts)
            .await
            .context("cannot connect to the database")?;
        let sqlite_writer = is_sqlite.then(|| Arc::new(Mutex::new(())));
        Ok(Self {
            conn,
            bound,
            sqlite_writer,
        })
    }

    /// The pool to use on this thread: its own when it is bound to one,
    /// else the shared one.
    #[must_use]
    pub fn conn(&self) -> &DatabaseConnection {
        if let Some(bound) = &self.bound
            && let Some((id, i)) = BOUND.get()
            && id == bound.id
        {
            return &bound.pools[i];
        }
        &self.conn
    }

    /// Gives this thread a pool of its own (shared with other threads only
    /// when there are more threads than pools). For the threads of
    /// single-threaded runtimes that query on every request, the HTTP
    /// workers: a connection's socket is driven by the runtime that opened
    /// it, so a connection opened on one thread and used on another wakes
    /// the first on every round trip. Nothing on SQLite, whose connections
    /// each run on a thread of their own anyway.
    ///
    /// Called on a thread that runs a single-threaded runtime, it also
    /// opens the pool's first [`WARM_CONNECTIONS`] connections on that
    /// runtime at once, so the thread's first requests do not wait for them
    /// (with TLS, about 100 ms each on loopback here: see
    /// docs/performance.md).
    pub fn bind_thread(&self) {
        if let Some(bound) = &self.bound {
            let i = bound.next.fetch_add(1, Ordering::Relaxed) % bound.pools.len();
            BOUND.set(Some((bound.id, i)));
            if let Ok(runtime) = tokio::runtime::Handle::try_current()
                && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
            {
                let pool = bound.pools[i].get_postgres_connection_pool().clone();
                let count = WARM_CONNECTIONS.min(pool.options().get_max_connections() as usize);
                // Each held until all are open, so each is one of its own.
                let opened = Arc::new(tokio::sync::Barrier::new(count));
                for _ in 0..count {
                    let (pool, opened) = (pool.clone(), Arc::clone(&opened));
                    runtime.spawn(async move {
                        let conn = pool.acquire().await;
                        if let Err(e) = &conn {
                            // Unreachable now: requests open them instead.
                            tracing::debug!(error = %e, "could not open a worker's first database connections");
                        }
                        opened.wait().await;
                        drop(conn);
                    });
                }
            }
        }
    }

    #[must_use]
    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// A timestamp as this backend must store and compare it.
    ///
    /// SQLite keeps timestamps as text and compares them as text, but the
    /// driver's RFC 3339 form trims trailing zeros (`…:05.5Z` sorts after
    /// `…:05.51Z`). Writing a fixed-width UTC form everywhere a timestamp is
    /// stored or compared keeps text order equal to time order.
    #[must_use]
    pub fn time(&self, t: OffsetDateTime) -> SqlValue {
        let t = t.to_offset(UtcOffset::UTC);
        match self.backend() {
            DbBackend::Sqlite => fixed_width(t).into(),
            _ => t.into(),
        }
    }

    /// As [`Db::time`], for a nullable column.
    #[must_use]
    pub fn opt_time(&self, t: Option<OffsetDateTime>) -> SqlValue {
        match (t, self.backend()) {
            (Some(t), _) => self.time(t),
            (None, DbBackend::Sqlite) => Option::<String>::None.into(),
            (None, _) => Option::<OffsetDateTime>::None.into(),
        }
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// A migration that fails.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        if self.backend() == DbBackend::Sqlite {
            // The migrator runs SQLite migrations outside a transaction, one
            // statement per pooled connection: a statement could then run on a
            // connection whose read snapshot predates the one before it (an
            // index "already exists" right after it was dropped). One
            // transaction keeps every statement on one connection, and makes
            // the whole upgrade atomic, as it is on PostgreSQL.
            use sea_orm::TransactionTrait as _;
            let txn = self.conn.begin().await.context("cannot start the migrations")?;
            Migrator::up(&txn, None).await.context("migrations failed")?;
            return txn.commit().await.context("cannot commit the migrations");
        }
        Migrator::up(&self.conn, None).await.context("migrations failed")
    }

    /// Rolls back the last `steps` applied migrations (every one when `None`),
    /// in one transaction on SQLite for the reason [`Db::migrate`] gives.
    ///
    /// # Errors
    /// A migration that fails.
    pub async fn migrate_down(&self, steps: Option<u32>) -> anyhow::Result<()> {
        if self.backend() == DbBackend::Sqlite {
            use sea_orm::TransactionTrait as _;
            let txn = self.conn.begin().await.context("cannot start the migrations")?;
            Migrator::down(&txn, steps).await.context("migrations failed")?;
            return txn.commit().await.context("cannot commit the migrations");
        }
        Migrator::down(&self.conn, steps)
            .await
            .context("migrations failed")
    }

    /// Names of migrations not yet applied.
    ///
    /// # Errors
    /// When the migration table cannot be read.
    pub async fn pending_migrations(&self) -> anyhow::Result<Vec<String>> {
        let pending = Migrator::get_pending_migrations(&self.conn)
            .await
            .context("cannot read the applied migrations")?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Connections open and connections idle in the pool.
    #[must_use]
    pub fn pool_usage(&self) -> (u32, usize) {
        let usage = |conn: &DatabaseConnection| match self.backend() {
            DbBackend::Postgres => {
                let pool = conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        };
        let bound = self.bound.iter().flat_map(|b| b.pools.iter());
        std::iter::once(&self.conn)
            .chain(bound)
            .map(usage)
            .fold((0, 0), |(size, idle), (s, i)| (size + s, idle + i))
    }

    /// Answers whether the database responds to a trivial query.
    ///
    /// # Errors
    /// The failure, when it does not.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.conn().ping().await.context("database ping failed")
    }

    /// Runs a write `op` (which opens and commits its own transaction) with
    /// this process's SQLite writers queued, retrying it on transient
    /// failures with jittered, bounded backoff. `op` must be safe to run
    /// again after a failed attempt: a failed transaction is rolled back.
    ///
    /// # Errors
    /// The last error, once it is not transient or the attempts are used up.
    pub async fn write<T, F, Fut>(&self, op: F) -> Result<T, DbErr>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let _guard = match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        retry_transient(op).await
    }
}

/// Retries `op` while it fails with an error that running it again may
/// mend: a write conflict (serialization failure, deadlock, SQLite busy)
/// several times, a connection that broke under it once. An unreachable
/// database is not retried here: the pool already waited its acquire
/// timeout, and the caller decides (a request answers 503, the run writer
/// keeps its runs and tries again later).
async fn retry_transient<T, F, Fut>(mut op: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(err) if attempt < MAX_ATTEMPTS && is_conflict(&err) => {
                tracing::warn!(attempt, error = %err, "write conflict; retrying the transaction");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(err) if attempt == 1 && is_broken_connection(&err) => {
                tracing::warn!(error = %err, "the connection broke; retrying the transaction once");
            }
            result => return result,
        }
    }
}

/// Exponential backoff from 10 ms, capped at 500 ms, with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (10u64 << attempt.min(6)).min(500);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(cap_ms / 2 + random % (cap_ms / 2 + 1))
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// Serialization failures and deadlocks on PostgreSQL, busy or locked on
/// SQLite: the same transaction run again may commit.
fn is_conflict(err: &DbErr) -> bool {
    matches!(
        sqlx_error(err),
        Some(sea_orm::sqlx::Error::Database(db)) if matches!(
            db.code().as_deref(),
            // PostgreSQL: serialization_failure, deadlock_detected.
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some("40001" | "40P01" | "5" | "6" | "261" | "517" | "262")
        )
    )
}

/// A connection that failed under a statement (the server restarted, the
/// socket was reset): a fresh connection from the pool may work.
fn is_broken_connection(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    matches!(sqlx_error(err), Some(SqlxError::Io(_) | SqlxError::WorkerCrashed))
}

/// Whether `err` says the database cannot be reached now, rather than that
/// it refused what was asked: no connection could be had, the connection
/// broke, or the server is shutting down or starting up. Such a failure may
/// pass; any other will happen again with the same input.
#[must_use]
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    // No connection could be had, or one could not be opened (refused, closed
    // during the handshake, a proxy in front with nothing behind it).
    if matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    match sqlx_error(err) {
        Some(
            SqlxError::Io(_) | SqlxError::PoolTimedOut | SqlxError::PoolClosed | SqlxError::WorkerCrashed,
        ) => true,
        Some(SqlxError::Database(db)) => db.code().is_some_and(|code| {
            // PostgreSQL: class 08 (connection exception), 53300
            // (too_many_connections), 57P01–57P03 (shutdown, cannot connect now).
            code.starts_with("08") || matches!(code.as_ref(), "53300" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Wraps a database error as the domain expects it: `unavailable` when the
/// database cannot be reached, `unknown` otherwise, with the whole cause
/// chain kept for the log.
pub(crate) fn classify<E>(
    err: DbErr,
    unavailable: impl FnOnce(anyhow::Error) -> E,
    unknown: impl FnOnce(anyhow::Error) -> E,
) -> E {
    if is_unavailable(&err) {
        unavailable(anyhow::Error::new(err).context("the database is unavailable"))
    } else {
        unknown(anyhow::Error::new(err).context("database error"))
    }
}

const FIXED_WIDTH: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

fn fixed_width(t: OffsetDateTime) -> String {
    t.format(FIXED_WIDTH).unwrap_or_else(|_| t.to_string())
}

fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the database directory {}", dir.display()))?;
    }
    Ok(())
}

/// Opens one connection before the pool does, to report why PostgreSQL
/// cannot be used in words a person can act on: the pool would only say
/// that it timed out, and the driver's own text carries source locations.
async fn probe_postgres(url: &str, timeout: Duration) -> anyhow::Result<()> {
    use sea_orm::sqlx::postgres::PgConnectOptions;
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _, Error as SqlxError};
    let options: PgConnectOptions = url.parse().context("malformed PostgreSQL URL")?;
    let at = format!("{}:{}", options.get_host(), options.get_port());
    let database = options
        .get_database()
        .unwrap_or("(the user's default)")
        .to_owned();
    let attempt = tokio::time::timeout(timeout, options.connect()).await;
    let err = match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Ok(Err(e)) => e,
        // Slow, not refused: the pool's own attempts decide.
        Err(_) => return Ok(()),
    };
    match &err {
        SqlxError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            anyhow::bail!("cannot connect to PostgreSQL at {at}: connection refused (is it running?)")
        }
        SqlxError::Io(io) => anyhow::bail!("cannot connect to PostgreSQL at {at}: {io}"),
        SqlxError::Database(db) if db.code().as_deref() == Some("3D000") => anyhow::bail!(
            "the database `{database}` does not exist on PostgreSQL at {at}: create it (e.g. `createdb -h {} -p {} {database}`) or fix database.url",
            options.get_host(),
            options.get_port()
        ),
        SqlxError::Database(db) if db.code().as_deref().is_some_and(|c| c.starts_with("28")) => {
            anyhow::bail!("PostgreSQL at {at} refused the credentials: {}", db.message())
        }
        SqlxError::Database(db) => anyhow::bail!("PostgreSQL at {at}: {}", db.message()),
        other => anyhow::bail!("cannot connect to PostgreSQL at {at}: {other}"),
    }
}

/// A `LIKE` pattern matching every text that starts with `prefix` (used with
/// `ESCAPE '\\'`): the wildcards and the escape character in it are escaped.
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Whether `err` is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_pools_share_the_connections_and_never_get_fewer_than_two() {
        assert_eq!(split_connections(16, 2), Some((6, 5)));
        assert_eq!(split_connections(16, 0), None);
        assert_eq!(split_connections(5, 2), None, "1 each is too few");
        assert_eq!(split_connections(6, 2), Some((2, 2)));
        for (max, threads) in [(16, 1), (16, 3), (100, 7), (9, 2)] {
            let (shared, each) = split_connections(max, threads).unwrap();
            assert_eq!(shared + each * u32::try_from(threads).unwrap(), max);
            assert!(shared >= each && each >= 2);
        }
    }

    #[test]
    fn fixed_width_timestamps_sort_as_time_does() {
        let a = time::macros::datetime!(2026-01-01 00:00:05.5 UTC);
        let b = time::macros::datetime!(2026-01-01 00:00:05.51 UTC);
        let c = time::macros::datetime!(2026-01-01 00:00:06 UTC);
        let (fa, fb, fc) = (fixed_width(a), fixed_width(b), fixed_width(c));
        assert_eq!(fa, "2026-01-01T00:00:05.500000Z");
        assert!(fa < fb && fb < fc);
        assert_eq!(
            OffsetDateTime::parse(&fb, &time::format_description::well_known::Rfc3339).ok(),
            Some(b)
        );
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        for attempt in 1..10 {
            let d = backoff(attempt);
            assert!(
                d >= Duration::from_millis(5) && d <= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_non_transient_error_is_not_retried() {
        let mut calls = 0;
        let result: Result<(), DbErr> = retry_transient(|| {
            calls += 1;
            async { Err(DbErr::Custom("boom".into())) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_not_retried_but_reported_as_unavailable() {
        let mut calls = 0;
        let result: Result<(), DbErr> = retry_transient(|| {
            calls += 1;
            async { Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)) }
        })
        .await;
        assert_eq!(calls, 1, "the pool already waited its acquire timeout");
        assert!(result.as_ref().is_err_and(is_unavailable));
        assert!(!is_unavailable(&DbErr::Custom("constraint".into())));
    }

    #[tokio::test]
    async fn a_broken_connection_is_retried_once() {
        let mut calls = 0;
        let result = retry_transient(|| {
            calls += 1;
            let fail = calls < 2;
            async move {
                if fail {
                    let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                    Err(DbErr::Query(RuntimeErr::SqlxError(Arc::new(
                        sea_orm::sqlx::Error::Io(io),
                    ))))
                } else {
                    Ok(calls)
                }
            }
        })
        .await;
        assert_eq!(result.ok(), Some(2));
    }
}
