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

/// The earliest and latest instants a stored timestamp may have: years 1
/// to 9999, which both backends (and RFC 3339) can represent and compare.
fn representable(t: OffsetDateTime) -> bool {
    (1..=9999).contains(&t.to_offset(time::UtcOffset::UTC).year())
}

/// The instant `micros` microseconds after the Unix epoch, when it is one a
/// stored timestamp can be (years 1 to 9999).
#[must_use]
pub fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .filter(|t| representable(*t))
}

/// As [`from_micros`], from nanoseconds.
#[must_use]
pub fn from_nanos(nanos: i128) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .filter(|t| representable(*t))
}

/// `t` as RFC 3339 text in UTC (`2026-11-29T10:00:00.123456Z`).
#[must_use]
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
    fn only_instants_every_backend_can_store_are_accepted() {
        assert!(from_micros(0).is_some());
        assert!(from_micros(i64::MAX).is_none());
        assert!(from_micros(i64::MIN).is_none());
        // Year 0 exists in `time` but not in PostgreSQL's AD/BC calendar.
        assert!(from_micros(-62_167_219_200_000_000).is_none());
        assert!(from_nanos(-62_135_596_800_000_000_000).is_some());
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
