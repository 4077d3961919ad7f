//! Reading JSON request bodies: always an object, never with a key twice.

use std::fmt;

use registry_domain::prompt::FieldError;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::problem::{ApiError, ErrorCode};

/// The start of the error a repeated object key gives, so the extractor's
/// error mapping can answer it 400 like other unreadable JSON.
const DUPLICATE_KEY: &str = "duplicate key";

/// Whether a body failed to parse because an object repeats a key.
#[must_use]
pub fn is_duplicate_key(err: &serde_json::Error) -> bool {
    err.is_data() && err.to_string().starts_with(DUPLICATE_KEY)
}

/// Any JSON value, refusing an object that repeats a key.
///
/// serde_json keeps the last of two equal keys; two parsers reading the same
/// body (a proxy that checks it, this service that stores it) could then
/// disagree on what it says, so a repeated key is refused instead.
#[derive(Debug)]
pub struct StrictValue(pub Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize_from(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_KEY} `{key}`: each key may appear once in an object"
                )));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

impl StrictValue {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        <Self as serde::Deserialize>::deserialize(d).map(|v| v.0)
    }
}

/// A JSON request body that must be an object of type `T`.
///
/// serde's derived structs also accept a JSON array of the fields in order,
/// and report some type mismatches as syntax errors; reading the body as a
/// JSON value first (refusing repeated keys), then requiring an object, makes
/// every body that does not fit the schema a 422 and only unreadable JSON a
/// 400.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = actix_web::web::Json::<StrictValue>::from_request(req, payload);
        Box::pin(async move {
            let actix_web::web::Json(StrictValue(value)) = json.await?;
            into_object(value).map(Body).map_err(Into::into)
        })
    }
}

/// Reads a JSON object as `T`.
///
/// # Errors
/// A 422 problem for anything but an object of the right shape.
pub fn into_object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = field_of(&e);
        let message = e.inner().to_string();
        let mut err = ApiError::new(
            ErrorCode::ValidationFailed,
            format!("the body does not fit the schema: {field}: {message}"),
        );
        err.errors.push(FieldError::new(field, message));
        err
    })
}

/// The field a deserialization error is about: its path (`tags`,
/// `variables.city.type`), or for a missing or unknown field at that level,
/// the field serde names in backticks.
fn field_of(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let message = e.inner().to_string();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path.as_str(), named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// A body that may be left out: empty is `T::default()`, anything else is
/// read as [`Body`] reads it. For actions such as a rollback, where every
/// field is optional.
///
/// # Errors
/// A 400 problem for unreadable JSON, a 422 for the wrong shape.
pub fn optional<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    from_slice(bytes)
}

/// Reads JSON text as [`Body`] reads a body: no repeated key, an object of
/// the right shape.
///
/// # Errors
/// A 400 problem for unreadable JSON, a 422 for the wrong shape.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: StrictValue = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    into_object(value.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Shape {
        name: String,
        tags: Option<Vec<String>>,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Inner {
        n: u8,
    }

    #[test]
    fn a_body_that_does_not_fit_names_the_field() {
        let field = |v: Value| {
            into_object::<Shape>(v)
                .expect_err("does not fit")
                .errors
                .first()
                .map(|e| e.field.clone())
        };
        assert_eq!(
            field(serde_json::json!({"name": "x", "tags": "demo"})).as_deref(),
            Some("tags")
        );
        assert_eq!(field(serde_json::json!({"tags": []})).as_deref(), Some("name"));
        assert_eq!(
            field(serde_json::json!({"name": "x", "colour": 1})).as_deref(),
            Some("colour")
        );
        assert_eq!(
            field(serde_json::json!({"name": "x", "inner": {"n": "one"}})).as_deref(),
            Some("inner.n")
        );
    }

    #[test]
    fn a_repeated_key_at_any_depth_is_refused_and_named() {
        for body in [r#"{"a": 1, "a": 2}"#, r#"{"x": [{"b": 1, "b": 1}]}"#] {
            let err = serde_json::from_str::<StrictValue>(body).expect_err(body);
            assert!(is_duplicate_key(&err), "{err}");
        }
        let ok = serde_json::from_str::<StrictValue>(r#"{"a": {"a": [1, 2.5, null, true, "s"]}}"#)
            .expect("no key repeats within one object");
        assert_eq!(ok.0["a"]["a"][1], 2.5);
    }
}
