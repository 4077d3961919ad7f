//! Aggregates over runs, and the percentile definition both backends share.

use time::OffsetDateTime;

use super::cost::Cost;
use crate::prompt::{LabelName, VersionNumber};

/// Time buckets for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
    /// One bucket for the whole range.
    None,
}

impl Bucket {
    /// Parses `hour`, `day` or `none`.
    ///
    /// # Errors
    /// Anything else, with a message that says what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "none" => Ok(Self::None),
            other => Err(format!("`{other}` is not hour, day or none")),
        }
    }

    /// The start of the bucket `t` falls in (UTC), or `None` for [`Bucket::None`].
    #[must_use]
    pub fn start(self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = t.to_offset(time::UtcOffset::UTC);
        match self {
            Self::Hour => t
                .replace_minute(0)
                .and_then(|t| t.replace_second(0))
                .and_then(|t| t.replace_nanosecond(0))
                .ok(),
            Self::Day => Some(t.replace_time(time::Time::MIDNIGHT)),
            Self::None => None,
        }
    }
}

/// What a stats request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub bucket: Bucket,
    pub version: Option<VersionNumber>,
    /// Only runs served under this label.
    pub label: Option<LabelName>,
    /// One row per version *and label* (the arms of a rollout side by side),
    /// rather than per version.
    pub by_label: bool,
}

/// The figures of one version in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStats {
    pub version: VersionNumber,
    /// The label, when grouped by label (`None` for runs logged without one).
    pub label: Option<LabelName>,
    pub bucket: Option<OffsetDateTime>,
    pub count: u64,
    pub error_count: u64,
    /// Latency percentiles and maximum, in milliseconds (microsecond precision).
    pub latency_p50: f64,
    pub latency_p95: f64,
    pub latency_p99: f64,
    pub latency_max: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_total: Cost,
}

impl VersionStats {
    #[must_use]
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let rate = self.error_count as f64 / self.count as f64;
            rate
        }
    }

    /// Average cost per run, rounded half up to the nano-dollar.
    #[must_use]
    pub fn cost_average(&self) -> Cost {
        let count = i64::try_from(self.count).unwrap_or(i64::MAX).max(1);
        let total = self.cost_total.nanos();
        Cost::from_nanos((total + count / 2) / count).unwrap_or(Cost::ZERO)
    }
}

/// One run as the stats need it: what a backend without a percentile
/// aggregate reads, to be summed up by [`aggregate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSample {
    pub version: VersionNumber,
    pub label: Option<LabelName>,
    pub error: bool,
    pub latency_us: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nanos: i64,
    pub created_at: OffsetDateTime,
}

/// The figures per version (and label, with `by_label`) and bucket, ordered
/// by version, label, then bucket, with
/// the same definitions as the PostgreSQL query (continuous percentiles of
/// the latency in milliseconds).
///
/// # Errors
/// A cost total that overflows 64 bits.
pub fn aggregate(
    samples: impl IntoIterator<Item = StatsSample>,
    bucket: Bucket,
    by_label: bool,
) -> anyhow::Result<Vec<VersionStats>> {
    #[derive(Default)]
    struct Acc {
        latencies: Vec<u64>,
        errors: u64,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost: i64,
    }
    type Group = (VersionNumber, Option<LabelName>, Option<OffsetDateTime>);
    let mut groups: std::collections::BTreeMap<Group, Acc> = std::collections::BTreeMap::new();
    for s in samples {
        let label = if by_label { s.label } else { None };
        let acc = groups
            .entry((s.version, label, bucket.start(s.created_at)))
            .or_default();
        acc.latencies.push(s.latency_us);
        acc.errors += u64::from(s.error);
        acc.prompt_tokens += s.prompt_tokens;
        acc.completion_tokens += s.completion_tokens;
        acc.cost = acc
            .cost
            .checked_add(s.cost_nanos)
            .ok_or_else(|| anyhow::anyhow!("the cost total overflows"))?;
    }
    groups
        .into_iter()
        .map(|((version, label, bucket), mut acc)| {
            acc.latencies.sort_unstable();
            let ms = |p: f64| percentile_cont(&acc.latencies, p) / 1000.0;
            Ok(VersionStats {
                version,
                label,
                bucket,
                count: acc.latencies.len() as u64,
                error_count: acc.errors,
                latency_p50: ms(0.5),
                latency_p95: ms(0.95),
                latency_p99: ms(0.99),
                latency_max: ms(1.0),
                prompt_tokens: acc.prompt_tokens,
                completion_tokens: acc.completion_tokens,
                cost_total: Cost::from_nanos(acc.cost).map_err(|e| anyhow::anyhow!("{e}"))?,
            })
        })
        .collect()
}

/// The continuous percentile of sorted values, with linear interpolation
/// between the two nearest ranks: PostgreSQL's `percentile_cont`.
#[must_use]
pub fn percentile_cont(sorted: &[u64], p: f64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    match sorted {
        [] => 0.0,
        [only] => *only as f64,
        _ => {
            let rank = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
            let lower = rank.floor() as usize;
            let upper = rank.ceil() as usize;
            let (lo, hi) = (sorted[lower] as f64, sorted[upper] as f64);
            lo + (hi - lo) * (rank - lower as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        let v = [10, 20, 30, 40];
        assert!((percentile_cont(&v, 0.5) - 25.0).abs() < 1e-9);
        assert!((percentile_cont(&v, 0.95) - 38.5).abs() < 1e-9);
        assert!((percentile_cont(&v, 1.0) - 40.0).abs() < 1e-9);
        assert!((percentile_cont(&[7], 0.99) - 7.0).abs() < 1e-9);
        assert!(percentile_cont(&[], 0.5).abs() < 1e-9);
    }

    #[test]
    fn samples_are_grouped_by_version_and_bucket_in_milliseconds() {
        let at = |h| time::macros::datetime!(2026-05-06 00:30 UTC) + time::Duration::hours(h);
        let v = |n| VersionNumber::new(n).expect("valid");
        let sample = |version, latency_us, h, error| StatsSample {
            version: v(version),
            label: None,
            error,
            latency_us,
            prompt_tokens: 2,
            completion_tokens: 3,
            cost_nanos: 5,
            created_at: at(h),
        };
        let stats = aggregate(
            [
                sample(2, 1_500, 0, false),
                sample(1, 4_000, 1, true),
                sample(1, 1_000, 0, false),
                sample(1, 2_500, 0, false),
            ],
            Bucket::Hour,
            false,
        )
        .expect("sums");
        let keys: Vec<_> = stats.iter().map(|s| (s.version.get(), s.bucket)).collect();
        assert_eq!(
            keys,
            [
                (1, Bucket::Hour.start(at(0))),
                (1, Bucket::Hour.start(at(1))),
                (2, Bucket::Hour.start(at(0)))
            ]
        );
        assert_eq!(stats[0].count, 2);
        assert!((stats[0].latency_p50 - 1.75).abs() < 1e-9);
        assert!((stats[0].latency_max - 2.5).abs() < 1e-9);
        assert_eq!(stats[1].error_count, 1);
        assert_eq!(stats[0].cost_total.nanos(), 10);
        assert!(
            aggregate(
                [
                    StatsSample {
                        cost_nanos: i64::MAX,
                        ..sample(1, 1, 0, false)
                    },
                    sample(1, 1, 0, false)
                ],
                Bucket::None,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn grouped_by_label_the_arms_of_a_rollout_are_separate_rows() {
        let at = time::macros::datetime!(2026-05-06 00:30 UTC);
        let production = Some(LabelName::PRODUCTION);
        let canary = LabelName::new("canary").ok();
        let sample = |version, label| StatsSample {
            version: VersionNumber::new(version).expect("valid"),
            label,
            error: false,
            latency_us: 1_000,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_nanos: 0,
            created_at: at,
        };
        let samples = [
            sample(7, production),
            sample(8, production),
            sample(8, canary),
            sample(8, None),
        ];
        let by_label = aggregate(samples, Bucket::None, true).expect("sums");
        let keys: Vec<_> = by_label
            .iter()
            .map(|s| (s.version.get(), s.label, s.count))
            .collect();
        assert_eq!(
            keys,
            [
                (7, production, 1),
                (8, None, 1),
                (8, canary, 1),
                (8, production, 1)
            ]
        );
        let by_version = aggregate(samples, Bucket::None, false).expect("sums");
        let keys: Vec<_> = by_version
            .iter()
            .map(|s| (s.version.get(), s.label, s.count))
            .collect();
        assert_eq!(keys, [(7, None, 1), (8, None, 3)]);
    }

    #[test]
    fn buckets_start_on_the_hour_and_the_day() {
        let t = time::macros::datetime!(2026-05-06 07:08:09.5 +02:00);
        assert_eq!(
            Bucket::Hour.start(t),
            Some(time::macros::datetime!(2026-05-06 05:00 UTC))
        );
        assert_eq!(
            Bucket::Day.start(t),
            Some(time::macros::datetime!(2026-05-06 00:00 UTC))
        );
        assert_eq!(Bucket::None.start(t), None);
    }

    #[test]
    fn the_average_cost_rounds_half_up() {
        let s = VersionStats {
            version: VersionNumber::FIRST,
            label: None,
            bucket: None,
            count: 3,
            error_count: 1,
            latency_p50: 0.0,
            latency_p95: 0.0,
            latency_p99: 0.0,
            latency_max: 0.0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_total: Cost::from_nanos(5).expect("valid"),
        };
        assert_eq!(s.cost_average().nanos(), 2);
        assert!((s.error_rate() - 1.0 / 3.0).abs() < 1e-12);
    }
}
