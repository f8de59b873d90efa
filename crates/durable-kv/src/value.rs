//! `Value`: untyped data that round-trips exactly through the codec.

use serde::{Deserialize, Serialize};

/// Untyped stored data, for values whose shape is not known at compile time.
///
/// It covers what Durable Objects' structured clone stores: floats keep NaN, the infinities
/// and -0 bit for bit; maps keep their insertion order; `AnyMap` and `Set` take keys of any
/// kind. Typed data can use any `Serialize` type instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    /// JavaScript's `undefined` (only the sync KV API stores it).
    Undefined,
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float, bit-exact (NaN payloads and -0 included).
    Float(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list.
    Array(#[serde(deserialize_with = "nested")] Vec<Value>),
    /// An object: string keys in insertion order.
    Object(#[serde(deserialize_with = "nested")] Vec<(String, Value)>),
    /// A map with keys of any kind, in insertion order.
    AnyMap(#[serde(deserialize_with = "nested")] Vec<(Value, Value)>),
    /// A set, in insertion order.
    Set(#[serde(deserialize_with = "nested")] Vec<Value>),
    /// A date: milliseconds since the Unix epoch (NaN for an invalid date).
    Date(f64),
}

/// How deeply containers may nest in a decoded [`Value`]. Decoding recurses once per level,
/// so a limit keeps crafted bytes from exhausting the stack; deeper data is refused with a
/// typed decode error.
pub const MAX_DEPTH: usize = 128;

thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Deserializes one container level, refusing to go deeper than [`MAX_DEPTH`].
fn nested<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let depth = DEPTH.with(|d| {
        let depth = d.get() + 1;
        d.set(depth);
        depth
    });
    let _leave = Leave;
    if depth > MAX_DEPTH {
        return Err(serde::de::Error::custom(format!(
            "values nest more than {MAX_DEPTH} levels deep"
        )));
    }
    T::deserialize(deserializer)
}

impl PartialEq for Value {
    /// Exact equality: floats compare by their bits, so NaN equals NaN and -0 differs from 0.
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Undefined, Undefined) | (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (Float(a), Float(b)) | (Date(a), Date(b)) => a.to_bits() == b.to_bits(),
            (String(a), String(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) | (Set(a), Set(b)) => a == b,
            (Object(a), Object(b)) => a == b,
            (AnyMap(a), AnyMap(b)) => a == b,
            _ => false,
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
