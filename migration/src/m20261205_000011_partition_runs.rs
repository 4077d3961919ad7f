//! On PostgreSQL, `prompt_runs` becomes a table partitioned by month, so old
//! runs are removed by dropping a partition instead of deleting rows under
//! long locks (`runs.retention_days`).
//!
//! The partition key is the run id: a run's id stays its only key, so
//! `ON CONFLICT (id)` keeps making retries idempotent (a partitioned table's
//! unique keys must contain its partition key, and a key of `(id,
//! created_at)` would not catch a retry stamped a moment later). Ids are
//! UUIDv7, whose first 48 bits are the creation time in milliseconds, so one
//! range of ids is one calendar month (UTC): `prompt_runs_p2026_11` holds the
//! ids from `2026-11-01T00:00Z` to `2026-12-01T00:00Z`. Ids of another form (a
//! client's UUIDv4) land in `prompt_runs_default`, from which old runs are
//! deleted in small batches. The partitions of the current month and the two
//! after it are created here and kept ahead by the server.
//!
//! SQLite has no partitions: there, this migration changes nothing, and old
//! runs are deleted in small batches.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The secondary indexes, as migrations 3, 5 and 6 left them.
const INDEXES: [(&str, &str); 6] = [
    ("ix_prompt_runs_created", "created_at, id"),
    ("ix_prompt_runs_prompt_created", "prompt_id, created_at, id"),
    (
        "ix_prompt_runs_prompt_version_created",
        "prompt_id, version, created_at, id",
    ),
    ("ix_prompt_runs_prompt_latency", "prompt_id, latency_us, id"),
    ("ix_prompt_runs_prompt_cost", "prompt_id, cost_nanos, id"),
    ("ix_prompt_runs_prompt_label", "prompt_id, label, created_at, id"),
];

/// Months kept ready ahead of the current one.
pub const MONTHS_AHEAD: i32 = 2;

/// The partition of runs whose ids were made in `month` (1–12) of `year`.
#[must_use]
pub fn partition_name(year: i32, month: u8) -> String {
    format!("prompt_runs_p{year:04}_{month:02}")
}

/// The first id of a month: its first millisecond, every other bit zero.
fn month_start_id(year: i32, month: u8) -> String {
    let ms = days_from_civil(year, month) * 86_400_000;
    let ms: u64 = ms.try_into().unwrap_or(0);
    format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
}

/// Days from 1970-01-01 to the first of `month` of `year` (proleptic
/// Gregorian; Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u8) -> i64 {
    let (y, m) = (i64::from(year), i64::from(month));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The month after `month` of `year`.
#[must_use]
pub fn next_month(year: i32, month: u8) -> (i32, u8) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// `CREATE TABLE IF NOT EXISTS` of a month's partition.
#[must_use]
pub fn create_partition_sql(year: i32, month: u8) -> String {
    let (ny, nm) = next_month(year, month);
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF prompt_runs FOR VALUES FROM ('{}') TO ('{}')",
        partition_name(year, month),
        month_start_id(year, month),
        month_start_id(ny, nm)
    )
}

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await.map(|_| ())
}

/// Months since year 0, to compare and count them.
fn ordinal(year: i32, month: u8) -> i32 {
    year * 12 + i32::from(month) - 1
}

/// The foreign key to prompts and the secondary indexes, on the table
/// `prompt_runs` is now (on a partitioned table, each partition gets them).
async fn foreign_key_and_indexes(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    exec(
        manager,
        "ALTER TABLE prompt_runs ADD CONSTRAINT fk_prompt_runs_prompt \
         FOREIGN KEY (prompt_id) REFERENCES prompts(id) ON DELETE CASCADE",
    )
    .await?;
    for (name, cols) in INDEXES {
        exec(manager, &format!("CREATE INDEX {name} ON prompt_runs ({cols})")).await?;
    }
    Ok(())
}

/// (year, month) of a `date_trunc('month', …)` text `YYYY-MM`.
fn year_month(text: &str) -> Option<(i32, u8)> {
    let (y, m) = text.split_once('-')?;
    Some((y.parse().ok()?, m.parse().ok()?))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // Partitions from the month of the oldest run (or this month) to two
        // months ahead, at most ten years of them.
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT to_char(least(min(created_at), now()) AT TIME ZONE 'UTC', 'YYYY-MM') AS first, \
                 to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS this FROM prompt_runs",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("no answer to the month query".into()))?;
        let first: String = row.try_get("", "first")?;
        let this: String = row.try_get("", "this")?;
        let (Some(mut month), Some((ty, tm))) = (year_month(&first), year_month(&this)) else {
            return Err(DbErr::Custom(format!("unexpected months {first} and {this}")));
        };
        let last = ordinal(ty, tm) + MONTHS_AHEAD;
        if ordinal(month.0, month.1) < last - 120 {
            month = ((last - 120) / 12, ((last - 120) % 12 + 1).try_into().unwrap_or(1));
        }

        exec(
            manager,
            "ALTER TABLE prompt_runs RENAME TO prompt_runs_unpartitioned",
        )
        .await?;
        exec(manager, "ALTER TABLE prompt_runs_unpartitioned RENAME CONSTRAINT prompt_runs_pkey TO prompt_runs_unpartitioned_pkey").await?;
        exec(
            manager,
            "ALTER TABLE prompt_runs_unpartitioned DROP CONSTRAINT fk_prompt_runs_prompt",
        )
        .await?;
        for (name, _) in INDEXES {
            exec(manager, &format!("DROP INDEX {name}")).await?;
        }
        exec(manager, "CREATE TABLE prompt_runs (LIKE prompt_runs_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (id)").await?;
        exec(
            manager,
            "ALTER TABLE prompt_runs ADD CONSTRAINT prompt_runs_pkey PRIMARY KEY (id)",
        )
        .await?;
        exec(
            manager,
            "CREATE TABLE prompt_runs_default PARTITION OF prompt_runs DEFAULT",
        )
        .await?;
        loop {
            exec(manager, &create_partition_sql(month.0, month.1)).await?;
            if ordinal(month.0, month.1) >= last {
                break;
            }
            month = next_month(month.0, month.1);
        }
        exec(
            manager,
            "INSERT INTO prompt_runs SELECT * FROM prompt_runs_unpartitioned",
        )
        .await?;
        exec(manager, "DROP TABLE prompt_runs_unpartitioned").await?;
        foreign_key_and_indexes(manager).await?;
        exec(manager, "ANALYZE prompt_runs").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        exec(
            manager,
            "CREATE TABLE prompt_runs_unpartitioned (LIKE prompt_runs INCLUDING DEFAULTS)",
        )
        .await?;
        exec(
            manager,
            "INSERT INTO prompt_runs_unpartitioned SELECT * FROM prompt_runs",
        )
        .await?;
        exec(manager, "DROP TABLE prompt_runs").await?;
        exec(
            manager,
            "ALTER TABLE prompt_runs_unpartitioned RENAME TO prompt_runs",
        )
        .await?;
        exec(
            manager,
            "ALTER TABLE prompt_runs ADD CONSTRAINT prompt_runs_pkey PRIMARY KEY (id)",
        )
        .await?;
        foreign_key_and_indexes(manager).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_starts_at_its_first_millisecond() {
        assert_eq!(days_from_civil(1970, 1), 0);
        assert_eq!(days_from_civil(2026, 12), 20_788);
        // 2026-12-01T00:00:00Z is 1,796,083,200,000 ms after the epoch.
        let ms: u64 = 1_796_083_200_000;
        assert_eq!(
            month_start_id(2026, 12),
            format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
        );
        assert_eq!(next_month(2026, 12), (2027, 1));
        assert!(create_partition_sql(2026, 12).contains("prompt_runs_p2026_12"));
    }
}
