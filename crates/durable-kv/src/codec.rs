//! The value codec: a format-version byte, then the value. Format 2 (written) stores serde's
//! data model, self-describing; format 1 (read only) is bincode 2's plain serde encoding.
//!
//! Format 2 keeps what bincode's serde path drops: field names, variant names, lengths and the
//! kind of every value. So a value reads back as any type that accepts its shape: a struct as
//! [`Value`](crate::Value) or `serde_json::Value`, an old struct as a new one with a
//! `#[serde(default)]` field, an enum through `#[serde(untagged)]` or a renamed variant's
//! `alias`. Each value is a one-byte tag followed by its payload, and every fixed-width field is
//! laid out as bincode 2 with this codec's configuration writes that Rust type (little-endian,
//! fixed width, never a varint). `docs/storage-format.md` describes the bytes of both formats.
//!
//! The encoder writes straight into the output buffer and the decoder reads straight from the
//! stored slice (strings and bytes are borrowed, not copied), so a small value costs one
//! allocation to write and none beyond its own to read.

mod de;
mod ser;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The first byte of every value this build writes: the codec's format version.
pub const FORMAT_VERSION: u8 = 2;

/// The version byte of format 1 (bincode's serde encoding), which this build still reads.
pub const FORMAT_1: u8 = 1;

/// The most bytes a decoder will believe a value holds or claims to hold (64 MiB).
pub const DECODE_LIMIT: usize = 64 << 20;

/// True when `encoded` is JavaScript's `undefined` ([`Value::Undefined`](crate::Value)): the
/// async KV API refuses to store it, and skips it among the entries of a multi-key put.
pub fn is_undefined(encoded: &[u8]) -> bool {
    encoded == [FORMAT_VERSION, tag::UNDEFINED]
}

/// Encodes `value` as stored bytes (format 2).
///
/// Values nested more than [`MAX_DEPTH`](crate::MAX_DEPTH) levels deep (see
/// `docs/storage-format.md` for what counts as a level) and values whose encoding exceeds
/// [`DECODE_LIMIT`] are refused, so nothing is stored that could not be read back.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut encoder = ser::Encoder::new(FORMAT_VERSION);
    value.serialize(&mut encoder).map_err(|e| Error::Encode { message: e.0 })?;
    let out = encoder.finish();
    if out.len() - 1 > DECODE_LIMIT {
        return Err(Error::Encode {
            message: format!(
                "the encoded value has {} bytes, more than the {DECODE_LIMIT}-byte limit",
                out.len() - 1
            ),
        });
    }
    Ok(out)
}

/// Decodes stored bytes of either format. Garbage, trailing bytes, nesting deeper than
/// [`MAX_DEPTH`](crate::MAX_DEPTH) or an unknown version are typed errors, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        None => Err(Error::Decode { message: "empty value".into() }),
        Some((&FORMAT_VERSION, body)) => {
            if body.len() > DECODE_LIMIT {
                return Err(Error::Decode {
                    message: format!(
                        "the value has {} bytes, more than the {DECODE_LIMIT}-byte limit",
                        body.len()
                    ),
                });
            }
            let mut decoder = de::Decoder::new(body);
            let value = T::deserialize(&mut decoder).map_err(|e| Error::Decode { message: e.0 })?;
            decoder.finish().map_err(|e| Error::Decode { message: e.0 })?;
            Ok(value)
        }
        Some((&FORMAT_1, body)) => decode_format_1(body),
        Some((&version, _)) => Err(Error::UnknownFormat { version }),
    }
}

/// Format 1's bincode configuration: little-endian, fixed-width integers, a 64 MiB limit.
fn format_1_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// Decodes a format-1 body exactly as the format-1 codec did.
fn decode_format_1<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(body, format_1_config())
        .map_err(|e| Error::Decode { message: e.to_string() })?;
    if used != body.len() {
        return Err(Error::Decode {
            message: format!("{} trailing bytes after the value", body.len() - used),
        });
    }
    Ok(value)
}

/// The tags of format 2: the first byte of every encoded value.
///
/// `UNDEFINED`, `DATE`, `SET` and `ANY_MAP` are flavours of `UNIT`, `F64`, `SEQ` and `MAP`
/// with the same layout, written only by [`Value`](crate::Value) so that its JavaScript-only
/// kinds round-trip; every other reader sees them as their plain kind.
pub(crate) mod tag {
    /// `()`, a unit struct, `Value::Null`. No payload.
    pub const UNIT: u8 = 0x00;
    /// `false`. No payload.
    pub const FALSE: u8 = 0x01;
    /// `true`. No payload.
    pub const TRUE: u8 = 0x02;
    /// An integer in -2^7..2^7: 1 byte.
    pub const I8: u8 = 0x03;
    /// An integer in -2^15..2^15: 2 bytes LE.
    pub const I16: u8 = 0x04;
    /// An integer in -2^31..2^31: 4 bytes LE.
    pub const I32: u8 = 0x05;
    /// An integer in -2^63..2^63: 8 bytes LE.
    pub const I64: u8 = 0x06;
    /// An integer in 2^63..2^64: 8 bytes LE, unsigned.
    pub const U64: u8 = 0x07;
    /// An integer in -2^127..-2^63: 16 bytes LE.
    pub const I128: u8 = 0x08;
    /// An integer in 2^64..2^128: 16 bytes LE, unsigned.
    pub const U128: u8 = 0x09;
    /// An `f32`: its bits, 4 bytes LE.
    pub const F32: u8 = 0x0a;
    /// An `f64`: its bits, 8 bytes LE.
    pub const F64: u8 = 0x0b;
    /// A `char`: its scalar value, 4 bytes LE.
    pub const CHAR: u8 = 0x0c;
    /// A string: `u32` byte length LE, then UTF-8.
    pub const STR: u8 = 0x0d;
    /// Bytes: `u32` length LE, then the bytes.
    pub const BYTES: u8 = 0x0e;
    /// `None`. No payload.
    pub const NONE: u8 = 0x0f;
    /// `Some`: one value follows.
    pub const SOME: u8 = 0x10;
    /// A sequence, tuple or tuple struct: `u32` count LE, then the elements.
    pub const SEQ: u8 = 0x11;
    /// A map or struct: `u32` entry count LE, then key, value, key, value ...
    pub const MAP: u8 = 0x12;
    /// An enum variant: its name as `u32` length LE and UTF-8, then its payload as one value
    /// (`UNIT` for a unit variant, a `SEQ` for a tuple variant, a `MAP` for a struct variant).
    pub const VARIANT: u8 = 0x13;
    /// `Value::Undefined`: laid out as `UNIT`.
    pub const UNDEFINED: u8 = 0x14;
    /// `Value::Date`: laid out as `F64`.
    pub const DATE: u8 = 0x15;
    /// `Value::Set`: laid out as `SEQ`.
    pub const SET: u8 = 0x16;
    /// `Value::AnyMap`: laid out as `MAP`.
    pub const ANY_MAP: u8 = 0x17;
}

/// The reserved serde names through which [`Value`](crate::Value) asks the codec for its
/// flavoured tags. Other serializers see ordinary newtype and unit structs.
pub(crate) mod names {
    /// `Value`'s `Deserialize` asks for a newtype struct of this name.
    pub const VALUE: &str = "$durable_kv::Value";
    /// A unit struct: `Value::Undefined`.
    pub const UNDEFINED: &str = "$durable_kv::Undefined";
    /// A newtype struct around the milliseconds: `Value::Date`.
    pub const DATE: &str = "$durable_kv::Date";
    /// A newtype struct around a sequence: `Value::Set`.
    pub const SET: &str = "$durable_kv::Set";
    /// A newtype struct around a map: `Value::AnyMap`.
    pub const ANY_MAP: &str = "$durable_kv::AnyMap";
}

/// The message of a failed encode or decode (serde's error type for both directions).
#[derive(Debug)]
pub(crate) struct CodecError(pub(crate) String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl serde::ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

impl serde::de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

/// How many levels are open around the value being written or read: the encoder and the
/// decoder count the same levels (the inside of a `SOME`, `VARIANT`, `SEQ` or `MAP`) and
/// refuse the same depths.
#[derive(Debug, Default)]
struct Depth(usize);

impl Depth {
    /// Enters one level; refused past [`MAX_DEPTH`](crate::MAX_DEPTH).
    #[inline]
    fn enter(&mut self) -> Result<(), CodecError> {
        self.0 += 1;
        if self.0 > crate::MAX_DEPTH { Err(too_deep()) } else { Ok(()) }
    }

    /// Leaves the level entered last.
    #[inline]
    fn leave(&mut self) {
        self.0 -= 1;
    }
}

/// The error for a value nested deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
#[cold]
fn too_deep() -> CodecError {
    CodecError(format!("values nest more than {} levels deep", crate::MAX_DEPTH))
}
