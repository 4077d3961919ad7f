//! Text rules shared by every aggregate.
//!
//! The NUL character (U+0000) is refused in what people *author* (templates,
//! descriptions, variable specs, configs, commit messages, model names): it
//! has no meaning there, would be sent to a model verbatim, and PostgreSQL
//! cannot store it in `text` or `jsonb`. What applications *log* (a run's
//! input, output, metadata and error text) is different: it is kept exactly as
//! sent, NUL included, and the storage adapters escape it on the way in and
//! out (see `registry-persistence`'s `nul` module).

use serde_json::Value;

/// The message given for a field that contains U+0000.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Whether `s` contains U+0000.
#[must_use]
pub fn has_nul(s: &str) -> bool {
    s.as_bytes().contains(&0)
}

/// Whether any string or object key anywhere in `value` contains U+0000.
#[must_use]
pub fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => has_nul(s),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| has_nul(k) || json_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_is_found_in_strings_keys_and_nested_values() {
        assert!(has_nul("a\0b"));
        assert!(!has_nul("ab"));
        assert!(json_has_nul(&json!({"a": ["x", {"b": "c\u{0}"}]})));
        assert!(json_has_nul(&json!({"k\u{0}": 1})));
        assert!(!json_has_nul(&json!({"k": [1, true, null, "s"]})));
    }
}
