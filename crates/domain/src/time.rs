//! The one place where "now" is decided for stored timestamps.

use time::OffsetDateTime;

/// The current UTC time, truncated to whole microseconds.
///
/// PostgreSQL keeps microseconds, so a timestamp with nanoseconds would come
/// back different from what was written; cursors built from it would then
/// skip or repeat rows. Truncating once, here, keeps both backends identical.
#[must_use]
pub fn now_utc() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// Drops the sub-microsecond part of a timestamp and normalises it to UTC.
#[must_use]
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_has_no_sub_microsecond_part_and_is_utc() {
        let t = now_utc();
        assert_eq!(t.nanosecond() % 1_000, 0);
        assert_eq!(t.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn truncation_keeps_microseconds() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.123_456_789 +02:00);
        let u = truncate_to_micros(t);
        assert_eq!(u.nanosecond(), 123_456_000);
        assert_eq!(u.offset(), time::UtcOffset::UTC);
        assert_eq!(u.hour(), 1);
    }
}
