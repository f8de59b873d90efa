//! `Value`: untyped data that round-trips exactly through the codec, and reads any stored value.

use std::fmt;

use serde::de::{DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::names;

/// Untyped stored data, for values whose shape is not known at compile time.
///
/// It covers what Durable Objects' structured clone stores: floats keep NaN, the infinities
/// and -0 bit for bit; maps keep their insertion order; `AnyMap` and `Set` take keys of any
/// kind. Typed data can use any `Serialize` type instead.
///
/// Any stored value reads as a `Value`, whatever type wrote it: integers become `Integer` (or
/// `Float` beyond `i64`), `f32` and `f64` become `Float`, strings and chars `String`, bytes
/// `Bytes`, `()`, `None` and unit structs `Null`, sequences and tuples `Array`, structs and
/// maps with string keys `Object` (in stored order), other maps `AnyMap`, a unit enum variant
/// its name as a `String`, any other variant a one-entry `Object` from its name to its
/// payload. A `Value` reads back exactly as it was written.
///
/// # Serde representation
///
/// In a human-readable format (JSON, and the codec's format 2) a `Value` is written as the
/// plain data it holds: `Null` as unit, `Integer` as an `i64`, `Object` as a map, and so on.
/// The kinds serde's data model lacks use reserved names the codec understands and other
/// formats see through: `Undefined` is the unit struct `$durable_kv::Undefined` (JSON
/// `null`), `Date` the newtype struct `$durable_kv::Date` around its milliseconds, `Set` the
/// newtype struct `$durable_kv::Set` around a sequence, `AnyMap` the newtype struct
/// `$durable_kv::AnyMap` around a map. Reading a human-readable format goes through
/// `deserialize_any`, so a `Value` also reads inside `#[serde(flatten)]` and
/// `#[serde(untagged)]` types (where the four reserved kinds come back as their plain forms).
///
/// In a compact format (`is_human_readable() == false`, such as bincode, in which format 1
/// stored values) a `Value` is the externally tagged enum `Value` with the variants below, in
/// this order, exactly as `#[derive(Serialize, Deserialize)]` would write it.
#[derive(Debug, Clone)]
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
    Array(Vec<Value>),
    /// An object: string keys in insertion order.
    Object(Vec<(String, Value)>),
    /// A map with keys of any kind, in insertion order.
    AnyMap(Vec<(Value, Value)>),
    /// A set, in insertion order.
    Set(Vec<Value>),
    /// A date: milliseconds since the Unix epoch (NaN for an invalid date).
    Date(f64),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return self.serialize_tagged(s);
        }
        match self {
            Value::Undefined => s.serialize_unit_struct(names::UNDEFINED),
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_bytes(v),
            Value::Array(items) => s.collect_seq(items),
            Value::Object(entries) => s.collect_map(entries.iter().map(|(k, v)| (k, v))),
            Value::AnyMap(entries) => s.serialize_newtype_struct(names::ANY_MAP, &Entries(entries)),
            Value::Set(items) => s.serialize_newtype_struct(names::SET, items),
            Value::Date(ms) => s.serialize_newtype_struct(names::DATE, ms),
        }
    }
}

impl Value {
    /// The compact (format-1) representation: the externally tagged enum, as derived.
    fn serialize_tagged<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "Value";
        match self {
            Value::Undefined => s.serialize_unit_variant(NAME, 0, "Undefined"),
            Value::Null => s.serialize_unit_variant(NAME, 1, "Null"),
            Value::Bool(v) => s.serialize_newtype_variant(NAME, 2, "Bool", v),
            Value::Integer(v) => s.serialize_newtype_variant(NAME, 3, "Integer", v),
            Value::Float(v) => s.serialize_newtype_variant(NAME, 4, "Float", v),
            Value::String(v) => s.serialize_newtype_variant(NAME, 5, "String", v),
            Value::Bytes(v) => s.serialize_newtype_variant(NAME, 6, "Bytes", v),
            Value::Array(v) => s.serialize_newtype_variant(NAME, 7, "Array", v),
            Value::Object(v) => s.serialize_newtype_variant(NAME, 8, "Object", v),
            Value::AnyMap(v) => s.serialize_newtype_variant(NAME, 9, "AnyMap", v),
            Value::Set(v) => s.serialize_newtype_variant(NAME, 10, "Set", v),
            Value::Date(v) => s.serialize_newtype_variant(NAME, 11, "Date", v),
        }
    }
}

/// An `AnyMap`'s entries, serialized as a map.
struct Entries<'a>(&'a [(Value, Value)]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The codec's decoder answers this name with the value itself (and its flavoured
        // kinds as variants); every other format calls `visit_newtype_struct`.
        d.deserialize_newtype_struct(names::VALUE, ValueVisitor)
    }
}

/// Builds a [`Value`] from whatever the deserializer holds.
struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(ValueVisitor)
        } else {
            Tagged::deserialize(d).map(Value::from)
        }
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }

    /// Beyond `i64::MAX` an integer becomes the nearest `Float`, as a JavaScript number.
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Integer))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Integer))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Integer))
    }

    fn visit_f32<E>(self, v: f32) -> Result<Value, E> {
        Ok(Value::Float(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_char<E>(self, v: char) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOCATE));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    /// String keys make an `Object`; any other key makes the whole map an `AnyMap`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let capacity = map.size_hint().unwrap_or(0).min(PREALLOCATE);
        let mut object: Vec<(String, Value)> = Vec::with_capacity(capacity);
        while let Some(key) = map.next_key::<Value>()? {
            match key {
                Value::String(key) => object.push((key, map.next_value()?)),
                key => {
                    let mut any: Vec<(Value, Value)> =
                        object.into_iter().map(|(k, v)| (Value::String(k), v)).collect();
                    any.push((key, map.next_value()?));
                    while let Some(entry) = map.next_entry()? {
                        any.push(entry);
                    }
                    return Ok(Value::AnyMap(any));
                }
            }
        }
        Ok(Value::Object(object))
    }

    /// The codec's flavoured kinds.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (flavour, variant) = data.variant::<Flavour>()?;
        Ok(match flavour {
            Flavour::Undefined => {
                variant.unit_variant()?;
                Value::Undefined
            }
            Flavour::Date => Value::Date(variant.newtype_variant()?),
            Flavour::Set => Value::Set(variant.newtype_variant()?),
            Flavour::AnyMap => Value::AnyMap(variant.newtype_variant_seed(AnyMapSeed)?),
        })
    }
}

/// How many elements a visitor reserves room for before seeing them (a hostile count must
/// not allocate).
const PREALLOCATE: usize = 4096;

/// The variants the codec's decoder offers for its flavoured tags.
#[derive(Deserialize)]
enum Flavour {
    #[serde(rename = "$undefined")]
    Undefined,
    #[serde(rename = "$date")]
    Date,
    #[serde(rename = "$set")]
    Set,
    #[serde(rename = "$map")]
    AnyMap,
}

/// Reads an `AnyMap`'s entries from a map.
struct AnyMapSeed;

impl<'de> DeserializeSeed<'de> for AnyMapSeed {
    type Value = Vec<(Value, Value)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnyMapSeed {
    type Value = Vec<(Value, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(PREALLOCATE));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// The compact representation, as `#[derive(Deserialize)]` reads it (format 1's bytes).
#[derive(Deserialize)]
#[serde(rename = "Value")]
enum Tagged {
    Undefined,
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
    Array(#[serde(deserialize_with = "nested")] Vec<Value>),
    Object(#[serde(deserialize_with = "nested")] Vec<(String, Value)>),
    AnyMap(#[serde(deserialize_with = "nested")] Vec<(Value, Value)>),
    Set(#[serde(deserialize_with = "nested")] Vec<Value>),
    Date(f64),
}

impl From<Tagged> for Value {
    fn from(t: Tagged) -> Value {
        match t {
            Tagged::Undefined => Value::Undefined,
            Tagged::Null => Value::Null,
            Tagged::Bool(v) => Value::Bool(v),
            Tagged::Integer(v) => Value::Integer(v),
            Tagged::Float(v) => Value::Float(v),
            Tagged::String(v) => Value::String(v),
            Tagged::Bytes(v) => Value::Bytes(v),
            Tagged::Array(v) => Value::Array(v),
            Tagged::Object(v) => Value::Object(v),
            Tagged::AnyMap(v) => Value::AnyMap(v),
            Tagged::Set(v) => Value::Set(v),
            Tagged::Date(v) => Value::Date(v),
        }
    }
}

/// How deeply values may nest. Decoding recurses once per level, so a limit keeps crafted
/// bytes from exhausting the stack; deeper data is refused with a typed decode error, and the
/// encoder refuses to write it. Format 2 counts a level for every `Some`, enum variant,
/// sequence and map (a struct is a map); format 1 counted `Value`'s containers only.
pub const MAX_DEPTH: usize = 128;

thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Deserializes one container level of format 1's `Value`, refusing to go deeper than [`MAX_DEPTH`].
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
