//! The size the runtime gives a stored value on the KV-backed (legacy) backend: the length of
//! its V8 structured-clone serialization, the 2-byte header included. The runtime refuses a
//! value whose serialization passes 131,072 bytes by more than 34 bytes of slack, so the
//! same value is accepted or refused here as there (a 131,072-character ASCII string is
//! 131,078 bytes and accepted).
//!
//! The size is computed from the value's data model (a [`Value`], or any stored value read
//! as one): strings of Latin-1 characters count one byte each and others two (UTF-16), as
//! V8 stores them; integers in the small-integer range count as a varint, other numbers as
//! eight bytes; bytes are a `Uint8Array` over its buffer; containers add V8's tags and
//! counts.

use crate::value::Value;

/// V8's version-15 header: the version tag and the version.
const HEADER: usize = 2;

/// The smallest and largest integers V8 keeps as small integers (31-bit, with pointer
/// compression): serialized as a zigzag varint rather than a double.
const SMI_MIN: i64 = -(1 << 30);
const SMI_MAX: i64 = (1 << 30) - 1;

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn zigzag_len(n: i64) -> usize {
    varint_len(((n << 1) ^ (n >> 63)) as u64)
}

/// The serialized length of a number V8 holds as `f`.
fn number_len(f: f64) -> usize {
    let integral = f.fract() == 0.0 && !(f == 0.0 && f.is_sign_negative());
    if integral && f >= SMI_MIN as f64 && f <= SMI_MAX as f64 {
        1 + zigzag_len(f as i64)
    } else {
        1 + 8
    }
}

/// Adds the serialized length of a string written at `pos`.
fn string_len(s: &str, pos: usize) -> usize {
    if s.chars().all(|c| (c as u32) <= 0xff) {
        let n = s.chars().count();
        1 + varint_len(n as u64) + n
    } else {
        let bytes = s.encode_utf16().count() * 2;
        let head = 1 + varint_len(bytes as u64);
        // Two-byte data starts at an even offset: a padding tag goes first when needed.
        let padding = usize::from((pos + head) % 2 == 1);
        padding + head + bytes
    }
}

/// An object key: a canonical array index is written as a number, anything else as a
/// string.
fn key_len(key: &str, pos: usize) -> usize {
    match key.parse::<u32>() {
        Ok(i) if i.to_string() == key => number_len(f64::from(i)),
        _ => string_len(key, pos),
    }
}

fn value_len(v: &Value, pos: usize) -> usize {
    match v {
        Value::Undefined | Value::Null | Value::Bool(_) => 1,
        Value::Integer(i) if (SMI_MIN..=SMI_MAX).contains(i) => 1 + zigzag_len(*i),
        Value::Integer(_) => 1 + 8,
        Value::Float(f) => number_len(*f),
        Value::Date(_) => 1 + 8,
        Value::String(s) => string_len(s, pos),
        Value::Bytes(b) => {
            // The ArrayBuffer, then the Uint8Array view: subtag, offset, length, flags.
            let n = b.len() as u64;
            (1 + varint_len(n) + b.len()) + (1 + 1 + 1 + varint_len(n) + 1)
        }
        Value::Array(items) => {
            let mut at = pos + 1 + varint_len(items.len() as u64);
            for item in items {
                at += value_len(item, at);
            }
            // End of the dense array: no extra properties, and the length again.
            at + 1 + 1 + varint_len(items.len() as u64) - pos
        }
        Value::Object(entries) => {
            let mut at = pos + 1;
            for (k, item) in entries {
                at += key_len(k, at);
                at += value_len(item, at);
            }
            at + 1 + varint_len(entries.len() as u64) - pos
        }
        Value::AnyMap(entries) => {
            let mut at = pos + 1;
            for (k, item) in entries {
                at += value_len(k, at);
                at += value_len(item, at);
            }
            at + 1 + varint_len(2 * entries.len() as u64) - pos
        }
        Value::Set(items) => {
            let mut at = pos + 1;
            for item in items {
                at += value_len(item, at);
            }
            at + 1 + varint_len(items.len() as u64) - pos
        }
    }
}

impl Value {
    /// The length of this value's V8 structured-clone serialization, header included: how
    /// the runtime's KV-backed storage measures a value against its 128 KiB limit.
    pub fn structured_clone_size(&self) -> usize {
        HEADER + value_len(self, HEADER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    #[test]
    fn sizes_match_what_the_runtime_measured() {
        // From the oracle (case 66): 'a' × n is n + 6 bytes; Uint8Array(n) is n + 13;
        // 'é' is one byte (Latin-1); '€' two bytes (UTF-16).
        assert_eq!(s(&"a".repeat(131_072)).structured_clone_size(), 131_078);
        assert_eq!(s(&"a".repeat(131_101)).structured_clone_size(), 131_107);
        assert_eq!(Value::Bytes(vec![0; 131_093]).structured_clone_size(), 131_106);
        assert_eq!(Value::Bytes(vec![0; 131_094]).structured_clone_size(), 131_107);
        assert_eq!(s(&"é".repeat(65_536)).structured_clone_size(), 65_542);
        assert_eq!(s(&"€".repeat(65_550)).structured_clone_size(), 131_106);
        assert_eq!(s(&"€".repeat(65_551)).structured_clone_size(), 131_108);
    }

    #[test]
    fn small_values() {
        assert_eq!(Value::Null.structured_clone_size(), 3);
        assert_eq!(Value::Integer(1).structured_clone_size(), 4);
        assert_eq!(Value::Float(1.5).structured_clone_size(), 11);
        assert_eq!(Value::Float(-0.0).structured_clone_size(), 11);
        assert_eq!(Value::Integer(1 << 40).structured_clone_size(), 11);
        // {v: 1}: 'o', "v" (3 bytes), I 1 (2 bytes), '{' count.
        let obj = Value::Object(vec![("v".into(), Value::Integer(1))]);
        assert_eq!(obj.structured_clone_size(), 2 + 1 + 3 + 2 + 2);
        // [1, 2]: 'A' len, two small integers, '$' 0 len.
        let arr = Value::Array(vec![Value::Integer(1), Value::Integer(2)]);
        assert_eq!(arr.structured_clone_size(), 2 + 2 + 4 + 3);
    }
}
