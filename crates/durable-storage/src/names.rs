//! Object names to file names and back: a reversible escape for names of reasonable length,
//! a SHA-256 digest for longer ones.
//!
//! An object's database is `<stem>.sqlite` in the namespace's folder, where the stem is:
//!
//! - for the empty name: `_`;
//! - when the escaped name has at most [`MAX_ESCAPED`] bytes: the name's UTF-8 bytes with
//!   `a`-`z`, `0`-`9` and `-` kept and every other byte written `_xx` (two lowercase hex
//!   digits), so `Room 42` is `_52oom_2042`;
//! - otherwise: `_h` and the 64 lowercase hex digits of the name's SHA-256; the name itself
//!   is kept in the namespace's index (`_index.sqlite`) so that `names()` can list it.
//!
//! Stems use only lowercase letters, digits, `-` and `_`, so they are safe on every file
//! system, including case-insensitive ones, and never collide with each other: an escape
//! is `_` and two hex digits, while `_` followed by `h` marks a digest. The namespace's own
//! files (`.lock`, `_index.sqlite`) decode as neither, so they are never taken for objects.

use sha2::{Digest, Sha256};

/// The longest escaped stem kept as is (bytes); longer names use a digest. With the
/// `.sqlite-journal` suffix the file name stays well within the usual 255-byte limit.
pub const MAX_ESCAPED: usize = 200;

/// The suffix of every object's database file.
pub const SUFFIX: &str = ".sqlite";

/// How a name is stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stem {
    /// The name escaped; decodes back to the name.
    Escaped(String),
    /// `_h` + SHA-256 hex; the name lives in the index.
    Digest(String),
}

impl Stem {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Stem::Escaped(s) | Stem::Digest(s) => s,
        }
    }
}

fn kept(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// The stem of `name`'s database file.
pub(crate) fn stem(name: &str) -> Stem {
    if name.is_empty() {
        return Stem::Escaped("_".into());
    }
    let escaped_len: usize = name.bytes().map(|b| if kept(b) { 1 } else { 3 }).sum();
    if escaped_len > MAX_ESCAPED {
        let digest = Sha256::digest(name.as_bytes());
        return Stem::Digest(format!("_h{}", hex::encode(digest)));
    }
    let mut out = String::with_capacity(escaped_len);
    for b in name.bytes() {
        if kept(b) {
            out.push(b as char);
        } else {
            out.push('_');
            out.push_str(&hex::encode([b]));
        }
    }
    Stem::Escaped(out)
}

/// What a file stem found on disk is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// An escaped stem: the object's name.
    Name(String),
    /// A digest stem: look the name up in the index.
    Digest,
}

/// Decodes a stem written by [`stem`]; `None` for anything [`stem`] never writes (the
/// namespace's own files, foreign files).
pub(crate) fn decode(stem_text: &str) -> Option<Decoded> {
    if stem_text == "_" {
        return Some(Decoded::Name(String::new()));
    }
    if let Some(digits) = stem_text.strip_prefix("_h") {
        // Only the canonical form is ours: 32 bytes in lowercase hex (`hex` reads either case).
        let mut digest = [0u8; 32];
        let ok = hex::decode_to_slice(digits, &mut digest).is_ok() && hex::encode(digest) == digits;
        return ok.then_some(Decoded::Digest);
    }
    let bytes = stem_text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if kept(b) {
            out.push(b);
            i += 1;
        } else if b == b'_' && i + 2 < bytes.len() {
            // Either case decodes here; the canonical check below refuses uppercase.
            let mut byte = [0u8];
            hex::decode_to_slice(&bytes[i + 1..i + 3], &mut byte).ok()?;
            out.push(byte[0]);
            i += 3;
        } else {
            return None;
        }
    }
    let name = String::from_utf8(out).ok()?;
    // Only the canonical form is ours (`_61` for `a` is not).
    (stem(&name) == Stem::Escaped(stem_text.to_string())).then_some(Decoded::Name(name))
}
