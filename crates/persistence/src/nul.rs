//! Keeping U+0000 in logged runs on every backend.
//!
//! PostgreSQL refuses the NUL character in `text` and `jsonb`, yet a model's
//! output or an application's input can carry one, and a run is stored as
//! sent. So the run repository escapes, on both backends alike, the strings
//! (object keys included) of a run's input, output and metadata and its error
//! text on the way in, and unescapes them on the way out:
//!
//! - U+0000 is written as U+E000 followed by `0`;
//! - U+E000 itself (a private-use character) is written as U+E000 twice.
//!
//! The mapping is reversible and leaves every string without either character
//! untouched, so the common case costs one scan and no copy.

use std::borrow::Cow;

use serde_json::{Map, Value};

const ESCAPE: char = '\u{E000}';

fn needs_escape(s: &str) -> bool {
    s.contains(['\0', ESCAPE])
}

/// `s` with U+0000 and U+E000 escaped.
#[must_use]
pub fn escape_str(s: &str) -> Cow<'_, str> {
    if !needs_escape(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\0' => {
                out.push(ESCAPE);
                out.push('0');
            }
            ESCAPE => {
                out.push(ESCAPE);
                out.push(ESCAPE);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// The inverse of [`escape_str`]. An escape character followed by anything
/// else (which [`escape_str`] never writes) is kept as it is.
#[must_use]
pub fn unescape_str(s: &str) -> Cow<'_, str> {
    if !s.contains(ESCAPE) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('0') => {
                chars.next();
                out.push('\0');
            }
            Some(&ESCAPE) => {
                chars.next();
                out.push(ESCAPE);
            }
            _ => out.push(ESCAPE),
        }
    }
    Cow::Owned(out)
}

fn map_strings(value: &mut Value, f: &impl Fn(&str) -> Cow<'_, str>) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(changed) = f(s) {
                *s = changed;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| map_strings(v, f)),
        Value::Object(map) => map_object(map, f),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn map_object(map: &mut Map<String, Value>, f: &impl Fn(&str) -> Cow<'_, str>) {
    if map.keys().any(|k| matches!(f(k), Cow::Owned(_))) {
        // Keys change: rebuild the object, keeping its order.
        *map = std::mem::take(map)
            .into_iter()
            .map(|(k, v)| (f(&k).into_owned(), v))
            .collect();
    }
    map.values_mut().for_each(|v| map_strings(v, f));
}

/// Escapes every string and key of `value` in place.
pub fn escape_json(value: &mut Value) {
    map_strings(value, &escape_str);
}

/// Unescapes every string and key of `value` in place.
pub fn unescape_json(value: &mut Value) {
    map_strings(value, &unescape_str);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_without_nul_or_the_escape_are_left_alone() {
        assert!(matches!(escape_str("plain text"), Cow::Borrowed(_)));
        assert!(matches!(unescape_str("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaping_round_trips_and_leaves_no_nul_behind() {
        for s in [
            "a\0b",
            "\0",
            "\u{E000}",
            "\u{E000}0",
            "\u{E000}\0\u{E000}\u{E000}0\0",
            "x\u{E000}",
        ] {
            let escaped = escape_str(s);
            assert!(!escaped.contains('\0'), "{s:?}");
            assert_eq!(unescape_str(&escaped), s, "{s:?}");
        }
    }

    #[test]
    fn json_strings_and_keys_are_escaped_at_every_depth() {
        let original = json!({"a\u{0}": ["x\u{0}y", {"k": "\u{E000}"}], "n": 1, "plain": "p"});
        let mut v = original.clone();
        escape_json(&mut v);
        assert!(!v.to_string().contains("\\u0000"), "{v}");
        assert_eq!(v["plain"], "p");
        unescape_json(&mut v);
        assert_eq!(v, original);
    }
}
