//! JSON on the command line: stored KV values (`durable_kv::Value`) and SQL values both ways.
//!
//! Plain JSON maps to the obvious `Value`s (integers to `Integer`, other numbers to `Float`,
//! objects to `Object` in their order). What JSON cannot say is written as a one-key object
//! whose key starts with `$`:
//!
//! | value | JSON |
//! |---|---|
//! | `Bytes` / BLOB | `{"$bytes": "00ff"}` (hex) |
//! | NaN, ±infinity | `{"$float": "NaN"}`, `{"$float": "Infinity"}`, `{"$float": "-Infinity"}` |
//! | `Date` | `{"$date": 1700000000000}` (milliseconds; `null` for an invalid date) |
//! | `Set` | `{"$set": [1, 2]}` |
//! | `AnyMap` | `{"$map": [[1, "one"], [2, "two"]]}` |
//! | `Undefined` | `{"$undefined": true}` |
//! | an object whose only key starts with `$` | `{"$object": {"$bytes": "x"}}` |

use durable_storage::{SqlValue, Value};
use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, Result};

/// A value given on the command line: JSON if it parses as JSON, else the text itself.
pub fn parse_lenient(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
}

/// The bytes of a `$bytes` tag's hex digits (either case).
fn unhex(text: &str) -> Result<Vec<u8>> {
    hex::decode(text).map_err(|e| {
        Error::msg(match e {
            hex::FromHexError::OddLength => {
                format!("$bytes: odd number of hex digits in {text:?}")
            }
            _ => format!("$bytes: {text:?} is not hex"),
        })
    })
}

fn tag(name: &str, value: Json) -> Json {
    let mut map = Map::new();
    map.insert(name.to_owned(), value);
    Json::Object(map)
}

fn float(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => tag("$float", "NaN".into()),
        None if f > 0.0 => tag("$float", "Infinity".into()),
        None => tag("$float", "-Infinity".into()),
    }
}

fn parse_float(json: &Json) -> Result<f64> {
    match json {
        Json::Number(n) => n.as_f64().ok_or_else(|| Error::msg("$float: not a number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(Error::msg(format!("$float: {s:?} is not NaN, Infinity or -Infinity"))),
        },
        _ => Err(Error::msg("$float takes a number or \"NaN\", \"Infinity\", \"-Infinity\"")),
    }
}

/// The single `$`-key of a tagged object, if `map` is one.
fn tagged(map: &Map<String, Json>) -> Option<(&str, &Json)> {
    if map.len() != 1 {
        return None;
    }
    map.iter().next().filter(|(k, _)| k.starts_with('$')).map(|(k, v)| (k.as_str(), v))
}

/// A stored value as JSON.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Undefined => tag("$undefined", Json::Bool(true)),
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number((*i).into()),
        Value::Float(f) => float(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => tag("$bytes", hex::encode(b).into()),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Object(entries) => {
            let map: Map<String, Json> =
                entries.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect();
            if tagged(&map).is_some() {
                tag("$object", Json::Object(map))
            } else {
                Json::Object(map)
            }
        }
        Value::AnyMap(entries) => tag(
            "$map",
            entries
                .iter()
                .map(|(k, v)| Json::Array(vec![value_to_json(k), value_to_json(v)]))
                .collect(),
        ),
        Value::Set(items) => tag("$set", items.iter().map(value_to_json).collect()),
        Value::Date(ms) => tag("$date", Number::from_f64(*ms).map_or(Json::Null, Json::Number)),
    }
}

/// JSON as a stored value (the table in this module's docs).
pub fn json_to_value(json: &Json) -> Result<Value> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_value).collect::<Result<_>>()?),
        Json::Object(map) => match tagged(map) {
            None => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), json_to_value(v)?)))
                    .collect::<Result<_>>()?,
            ),
            Some(("$object", Json::Object(inner))) => Value::Object(
                inner
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), json_to_value(v)?)))
                    .collect::<Result<_>>()?,
            ),
            Some(("$bytes", Json::String(h))) => Value::Bytes(unhex(h)?),
            Some(("$float", f)) => Value::Float(parse_float(f)?),
            Some(("$date", Json::Null)) => Value::Date(f64::NAN),
            Some(("$date", Json::Number(n))) => Value::Date(n.as_f64().unwrap_or(f64::NAN)),
            Some(("$set", Json::Array(items))) => {
                Value::Set(items.iter().map(json_to_value).collect::<Result<_>>()?)
            }
            Some(("$map", Json::Array(pairs))) => Value::AnyMap(
                pairs
                    .iter()
                    .map(|pair| match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => Ok((json_to_value(k)?, json_to_value(v)?)),
                        _ => Err(Error::msg("$map takes a list of [key, value] pairs")),
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(("$undefined", _)) => Value::Undefined,
            Some((key, _)) => {
                return Err(Error::msg(format!(
                    "{key}: unknown or malformed tag (write {{\"$object\": {{...}}}} for a plain \
                     object with a $ key)"
                )));
            }
        },
    })
}

/// An SQL value as JSON.
pub fn sql_to_json(value: &SqlValue) -> Json {
    match value {
        SqlValue::Null => Json::Null,
        SqlValue::Integer(i) => Json::Number((*i).into()),
        SqlValue::Real(f) => float(*f),
        SqlValue::Text(s) => Json::String(s.clone()),
        SqlValue::Blob(b) => tag("$bytes", hex::encode(b).into()),
    }
}

/// An SQL value as a table cell: text as is, BLOBs as SQL hex literals.
pub fn sql_to_cell(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Text(s) => s.clone(),
        SqlValue::Blob(b) => format!("x'{}'", hex::encode(b)),
    }
}

/// A bound parameter from the command line: JSON if it parses (`42`, `1.5`, `null`,
/// `"42"`, `{"$bytes": "00ff"}`; `true`/`false` bind 1/0), else the text itself.
pub fn sql_param(text: &str) -> Result<SqlValue> {
    Ok(match parse_lenient(text) {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Integer(b.into()),
        Json::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => SqlValue::Text(s),
        Json::Object(map) => match tagged(&map) {
            Some(("$bytes", Json::String(h))) => SqlValue::Blob(unhex(h)?),
            Some(("$float", f)) => SqlValue::Real(parse_float(f)?),
            _ => return Err(Error::msg(format!("parameter {text}: SQL binds no objects"))),
        },
        Json::Array(_) => return Err(Error::msg(format!("parameter {text}: SQL binds no arrays"))),
    })
}
