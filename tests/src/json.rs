//! The oracle's tagged JSON values, mapped to and from `Value` and `SqlValue`.

use durable_kv::Value;
use durable_sql::SqlValue;
use serde_json::{Map, Value as Json, json};

/// An input the Rust API cannot express (a JavaScript-only value or coercion).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported(pub String);

fn unhex(s: &str) -> Result<Vec<u8>, Unsupported> {
    hex::decode(s).map_err(|e| match e {
        hex::FromHexError::OddLength => Unsupported(format!("odd hex string {s:?}")),
        _ => Unsupported(format!("bad hex {s:?}")),
    })
}

/// A JSON number as the f64 a JavaScript runtime would hold.
pub fn number(n: &serde_json::Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

fn tagged_number(tag: &str) -> Result<f64, Unsupported> {
    match tag {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        "-0" => Ok(-0.0),
        other => other.parse().map_err(|_| Unsupported(format!("$num {other:?}"))),
    }
}

/// The single tag of a tagged object, if `v` is one.
fn tag(v: &Map<String, Json>) -> Option<(&str, &Json)> {
    if v.len() == 1 {
        let (k, x) = v.iter().next()?;
        if k.starts_with('$') {
            return Some((k.as_str(), x));
        }
    }
    None
}

/// Decodes a tagged JSON value into a stored `Value`.
pub fn to_value(v: &Json) -> Result<Value, Unsupported> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Float(number(n)),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(to_value).collect::<Result<_, _>>()?),
        Json::Object(map) => match tag(map) {
            Some(("$undefined", _)) => Value::Undefined,
            Some(("$num", Json::String(t))) => Value::Float(tagged_number(t)?),
            Some(("$bytes", Json::String(h))) => Value::Bytes(unhex(h)?),
            Some(("$date", Json::Number(ms))) => Value::Date(number(ms)),
            Some(("$date", Json::Null)) => Value::Date(f64::NAN),
            Some(("$map", Json::Array(pairs))) => Value::AnyMap(
                pairs
                    .iter()
                    .map(|p| match p {
                        Json::Array(kv) if kv.len() == 2 => {
                            Ok((to_value(&kv[0])?, to_value(&kv[1])?))
                        }
                        other => Err(Unsupported(format!("$map entry {other}"))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(("$set", Json::Array(items))) => {
                Value::Set(items.iter().map(to_value).collect::<Result<_, _>>()?)
            }
            Some(("$repeat", Json::Array(args))) if args.len() == 2 => {
                let unit = match &args[0] {
                    Json::String(s) => s.clone(),
                    other => js_string(other)?,
                };
                let n = args[1].as_u64().ok_or_else(|| Unsupported("$repeat count".into()))?;
                Value::String(unit.repeat(n as usize))
            }
            Some(("$bytesOf", Json::Number(n))) => {
                Value::Bytes(vec![0; n.as_u64().unwrap_or(0) as usize])
            }
            Some(("$obj", Json::Object(inner))) => object(inner)?,
            Some((t, _)) => return Err(Unsupported(format!("JavaScript-only value {t}"))),
            None => object(map)?,
        },
    })
}

fn object(map: &Map<String, Json>) -> Result<Value, Unsupported> {
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let v = to_value(v)?;
        // Own properties whose value is undefined are still properties.
        entries.push((k.clone(), v));
    }
    // JavaScript orders integer-like keys first, ascending.
    entries.sort_by(|(a, _), (b, _)| match (array_index(a), array_index(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(Value::Object(entries))
}

fn array_index(k: &str) -> Option<u32> {
    if k == "0" || (!k.starts_with('0') && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())) {
        k.parse::<u32>().ok().filter(|&i| i != u32::MAX)
    } else {
        None
    }
}

fn float_json(f: f64) -> Json {
    if f.is_nan() {
        json!({"$num": "NaN"})
    } else if f == f64::INFINITY {
        json!({"$num": "Infinity"})
    } else if f == f64::NEG_INFINITY {
        json!({"$num": "-Infinity"})
    } else if f == 0.0 && f.is_sign_negative() {
        json!({"$num": "-0"})
    } else {
        serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
    }
}

/// Encodes a stored `Value` as the oracle's tagged JSON.
pub fn from_value(v: &Value) -> Json {
    match v {
        Value::Undefined => json!({"$undefined": true}),
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Integer(i) => float_json(*i as f64),
        Value::Float(f) => float_json(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => json!({"$bytes": hex::encode(b)}),
        Value::Array(items) => Json::Array(items.iter().map(from_value).collect()),
        Value::Object(entries) => {
            let mut m = Map::new();
            let mut tagged = false;
            for (k, v) in entries {
                tagged |= k.starts_with('$');
                m.insert(k.clone(), from_value(v));
            }
            if tagged { json!({"$obj": m}) } else { Json::Object(m) }
        }
        Value::AnyMap(pairs) => json!({"$map": pairs
            .iter()
            .map(|(k, v)| json!([from_value(k), from_value(v)]))
            .collect::<Vec<_>>()}),
        Value::Set(items) => json!({"$set": items.iter().map(from_value).collect::<Vec<_>>()}),
        Value::Date(ms) => {
            if ms.is_nan() {
                json!({"$date": null})
            } else {
                json!({"$date": float_json(*ms)})
            }
        }
    }
}

/// JavaScript's `String(v)` for the scalars a key may be given as.
pub fn js_string(v: &Json) -> Result<String, Unsupported> {
    Ok(match v {
        Json::String(s) => s.clone(),
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => js_number_string(number(n)),
        Json::Object(m) => match tag(m) {
            Some(("$undefined", _)) => "undefined".into(),
            Some(("$repeat", _)) => match to_value(v)? {
                Value::String(s) => s,
                _ => unreachable!("$repeat builds a string"),
            },
            Some(("$num", Json::String(t))) => js_number_string(tagged_number(t)?),
            _ => return Err(Unsupported(format!("key {v}"))),
        },
        Json::Array(_) => return Err(Unsupported(format!("key {v}"))),
    })
}

/// JavaScript's number-to-string for the common cases.
pub fn js_number_string(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else if f == f.trunc() && f.abs() < 1e21 {
        format!("{}", f as i128)
    } else {
        format!("{f}")
    }
}

/// A SQL parameter, bound as the runtime binds a JavaScript value.
pub fn to_param(v: &Json) -> Result<SqlValue, Unsupported> {
    Ok(match v {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Text(b.to_string()),
        Json::Number(n) => SqlValue::Real(number(n)),
        Json::String(s) => SqlValue::Text(s.clone()),
        Json::Object(m) => match tag(m) {
            Some(("$undefined", _)) => SqlValue::Null,
            Some(("$num", Json::String(t))) => SqlValue::Real(tagged_number(t)?),
            Some(("$bytes" | "$ab", Json::String(h))) => SqlValue::Blob(unhex(h)?),
            Some(("$repeat", _)) => SqlValue::Text(js_string(v)?),
            Some(("$bytesOf", Json::Number(n))) => {
                SqlValue::Blob(vec![0; n.as_u64().unwrap_or(0) as usize])
            }
            _ => return Err(Unsupported(format!("JavaScript-only parameter {v}"))),
        },
        Json::Array(_) => return Err(Unsupported(format!("JavaScript-only parameter {v}"))),
    })
}

/// A SQL result value as the runtime hands it to JavaScript.
pub fn from_sql(v: &SqlValue) -> Json {
    match v {
        SqlValue::Null => Json::Null,
        SqlValue::Integer(i) => float_json(*i as f64),
        SqlValue::Real(f) => float_json(*f),
        SqlValue::Text(s) => Json::String(s.clone()),
        SqlValue::Blob(b) => json!({"$ab": hex::encode(b)}),
    }
}

/// `summary: true`: a short description of a value instead of the value.
pub fn summarize(v: Option<&Value>) -> Json {
    match v {
        None | Some(Value::Undefined) => json!({"$undefined": true}),
        Some(Value::String(s)) => json!({"type": "string", "length": s.encode_utf16().count()}),
        Some(Value::Bytes(b)) => json!({"type": "Uint8Array", "byteLength": b.len()}),
        Some(other) => json!({"type": "object", "json": from_value(other).to_string().len()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tags_read_hex_of_either_case_and_refuse_the_rest() {
        let blob = SqlValue::Blob(vec![0x0a, 0xff]);
        assert_eq!(to_param(&json!({"$bytes": "0aFF"})), Ok(blob.clone()));
        assert_eq!(from_sql(&blob), json!({"$ab": "0aff"}));
        let odd = to_param(&json!({"$ab": "abc"}));
        assert_eq!(odd, Err(Unsupported(r#"odd hex string "abc""#.into())));
        // `+f` once read as 0x0f, and a non-ASCII character could split a slice and panic.
        for bad in ["zz", "+f", "aéb"] {
            let err = to_value(&json!({"$bytes": bad})).unwrap_err();
            assert_eq!(err, Unsupported(format!("bad hex {bad:?}")));
        }
    }
}
