//! How long runs are kept, and removing the older ones in steps that hold no
//! lock for long: whole partitions first where the storage has them, then
//! small batches of rows.

use time::OffsetDateTime;

use super::ports::{RunError, RunRetention};

/// Runs removed by one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Partitions dropped, each holding only expired runs.
    pub partitions: u64,
    /// Runs deleted row by row.
    pub runs: u64,
}

/// Keep runs for `days` days (by their server timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    days: u32,
    batch: u32,
}

impl Retention {
    /// Rows deleted per statement: small enough that each delete holds its
    /// locks for milliseconds.
    pub const BATCH: u32 = 1_000;

    /// `None` for 0 days: retention is off.
    #[must_use]
    pub fn days(days: u32) -> Option<Self> {
        (days > 0).then_some(Self {
            days,
            batch: Self::BATCH,
        })
    }

    /// The oldest creation time a run may have at `now` and be kept.
    #[must_use]
    pub fn cutoff(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - time::Duration::days(i64::from(self.days))
    }

    /// Removes every run created before the cutoff at `now`.
    ///
    /// # Errors
    /// Storage failures; what was removed before one stays removed.
    pub async fn prune<S: RunRetention + ?Sized>(
        &self,
        store: &S,
        now: OffsetDateTime,
    ) -> Result<Pruned, RunError> {
        let cutoff = self.cutoff(now);
        let mut pruned = Pruned {
            partitions: store.drop_expired(cutoff).await?,
            runs: 0,
        };
        loop {
            let deleted = store.delete_expired(cutoff, self.batch).await?;
            pruned.runs += deleted;
            if deleted < u64::from(self.batch) {
                return Ok(pruned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::run::ports::MockRunRetention;

    #[tokio::test]
    async fn whole_partitions_go_first_then_batches_until_one_is_short() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let cutoff = datetime!(2026-08-31 12:00 UTC);
        let mut store = MockRunRetention::new();
        let mut seq = mockall::Sequence::new();
        store
            .expect_drop_expired()
            .withf(move |c| *c == cutoff)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(2));
        for deleted in [1_000, 1_000, 17] {
            store
                .expect_delete_expired()
                .withf(move |c, limit| *c == cutoff && *limit == Retention::BATCH)
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _| Ok(deleted));
        }
        let retention = Retention::days(90).expect("on");
        assert_eq!(retention.cutoff(now), cutoff);
        assert_eq!(
            retention.prune(&store, now).await.expect("pruned"),
            Pruned {
                partitions: 2,
                runs: 2_017
            }
        );
        assert_eq!(Retention::days(0), None, "0 days is off");
    }
}
