//! Keyset pagination: a validated page size, opaque cursors, and pages.
//!
//! Cursors are opaque to clients: they are the hex encoding of a small,
//! versioned text key. Decoding a cursor that was not produced here fails with
//! [`CursorError`] rather than being guessed at.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

/// A page size within the bounds an endpoint allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be between 1 and {max}, got {got}")]
pub struct LimitError {
    pub got: i64,
    pub max: u32,
}

impl Limit {
    /// # Errors
    /// Returns [`LimitError`] when `n` is not within `1..=max`.
    pub fn new(n: i64, max: u32) -> Result<Self, LimitError> {
        match u32::try_from(n) {
            Ok(v) if (1..=max).contains(&v) => Ok(Self(v)),
            _ => Err(LimitError { got: n, max }),
        }
    }

    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }
}

/// What a list query asks for: how many items, and where to continue from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub limit: Limit,
    pub after: Option<C>,
}

/// One page of results and, when more exist, the key to continue after.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page from up to `limit + 1` rows fetched in order: the extra
    /// row, if present, only proves that another page exists.
    pub fn from_overfetch(mut rows: Vec<T>, limit: Limit, key: impl Fn(&T) -> C) -> Self {
        let limit = limit.get() as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Self { items: rows, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U, C> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this endpoint issued")]
pub struct CursorError;

/// A cursor that can be turned into, and parsed back from, an opaque token.
pub trait Cursor: Sized {
    /// The key's text form, before it is made opaque.
    fn to_key(&self) -> String;
    /// # Errors
    /// Returns [`CursorError`] when `key` is not a key this type produced.
    fn from_key(key: &str) -> Result<Self, CursorError>;

    fn encode(&self) -> String {
        hex_encode(self.to_key().as_bytes())
    }

    /// # Errors
    /// Returns [`CursorError`] for anything that is not a token [`Cursor::encode`] made.
    fn decode(token: &str) -> Result<Self, CursorError> {
        let bytes = hex_decode(token).ok_or(CursorError)?;
        let key = String::from_utf8(bytes).map_err(|_| CursorError)?;
        Self::from_key(&key)
    }
}

/// Position after a row ordered by `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

impl Cursor for TimeCursor {
    fn to_key(&self) -> String {
        format!("t1:{}:{}", self.created_at.unix_timestamp_nanos(), self.id)
    }

    fn from_key(key: &str) -> Result<Self, CursorError> {
        let mut parts = key.splitn(3, ':');
        let (Some("t1"), Some(nanos), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CursorError);
        };
        let nanos: i128 = nanos.parse().map_err(|_| CursorError)?;
        // Only a time every backend can compare: a far-off one is a forgery.
        let created_at = crate::time::from_nanos(nanos).ok_or(CursorError)?;
        let id = Uuid::parse_str(id).map_err(|_| CursorError)?;
        Ok(Self { created_at, id })
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 512 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_rejected() {
        assert!(Limit::new(0, 100).is_err());
        assert!(Limit::new(101, 100).is_err());
        assert!(Limit::new(-1, 100).is_err());
        assert_eq!(Limit::new(100, 100).map(Limit::get), Ok(100));
    }

    #[test]
    fn a_time_cursor_round_trips_through_its_token() {
        let c = TimeCursor {
            created_at: time::macros::datetime!(2026-03-04 05:06:07.123_456 UTC),
            id: Uuid::now_v7(),
        };
        assert_eq!(TimeCursor::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn garbage_tokens_are_not_cursors() {
        for token in [
            "",
            "zz",
            "abc",
            "74313a",
            &hex_encode(b"t1:x:y"),
            &hex_encode(format!("t1:-253402300799999999999:{}", Uuid::nil()).as_bytes()),
            &hex_encode(format!("t1:{}:{}", i128::MAX, Uuid::nil()).as_bytes()),
            &"a".repeat(600),
        ] {
            assert_eq!(TimeCursor::decode(token), Err(CursorError), "{token}");
        }
    }

    #[test]
    fn a_page_built_from_an_overfetch_knows_whether_more_exist() {
        let limit = Limit::new(2, 10).expect("valid limit");
        let more = Page::from_overfetch(vec![1, 2, 3], limit, |n| *n);
        assert_eq!(more.items, vec![1, 2]);
        assert_eq!(more.next, Some(2));
        let last = Page::from_overfetch(vec![1, 2], limit, |n| *n);
        assert_eq!(last.next, None);
    }
}
