//! Aggregates over runs, and the percentile definition both backends share.

use time::OffsetDateTime;

use super::cost::Cost;
use crate::prompt::VersionNumber;

/// Time buckets for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
    /// One bucket for the whole range.
    None,
}

impl Bucket {
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
}

/// The figures of one version in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStats {
    pub version: VersionNumber,
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
