//! Reading JSON request bodies: always an object, never with a key twice.

use std::fmt;

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
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            ErrorCode::ValidationFailed,
            format!("the body does not fit the schema: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
