//! The value codec: a format-version byte followed by bincode 2 with one fixed configuration.
//!
//! The configuration is little-endian, fixed-width integers (never varints) and a decode limit
//! that keeps hostile length prefixes from allocating without bound. `docs/storage-format.md`
//! describes the bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The first byte of every stored value: the codec's format version.
pub const FORMAT_VERSION: u8 = 1;

/// The most bytes a decoder will believe a value claims to hold (64 MiB).
pub const DECODE_LIMIT: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// Encodes `value` as stored bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| Error::Encode { message: e.to_string() })?;
    Ok(out)
}

/// Decodes stored bytes. Garbage, trailing bytes or an unknown version are typed errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        None => Err(Error::Decode { message: "empty value".into() }),
        Some((&FORMAT_VERSION, body)) => {
            let (value, used) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| Error::Decode { message: e.to_string() })?;
            if used != body.len() {
                return Err(Error::Decode {
                    message: format!("{} trailing bytes after the value", body.len() - used),
                });
            }
            Ok(value)
        }
        Some((&version, _)) => Err(Error::UnknownFormat { version }),
    }
}
