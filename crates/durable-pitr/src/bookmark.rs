//! Bookmarks: `EEEEEEEE-SSSSSSSSSSSSSSSS-TTTTTTTTTTTT-MMMMMMMMMMMMMMMM`, fixed-width lowercase
//! hex of (epoch, commit sequence number, commit time, keyed check value), so that string order
//! is history order.

use crate::codec::siphash24;
use crate::error::BookmarkError;

/// The sequence number of an epoch's "last commit" sentinel (the undo bookmark).
pub(crate) const SENTINEL_SEQ: u64 = u64::MAX;
/// The time field of a sentinel: all 48 bits set.
pub(crate) const SENTINEL_TS: u64 = 0xffff_ffff_ffff;
/// Length of a bookmark string.
pub const BOOKMARK_LEN: usize = 55;

/// A position in one object's history, as the object's code sees it: a 55-character string.
///
/// Two bookmarks of the same object compare as strings in history order (earlier is less).
/// A bookmark is either *canonical* (a commit: its epoch, sequence number and time) or the
/// *sentinel* of an epoch (`E-ffffffffffffffff-ffffffffffff-M`), "the last state of epoch E",
/// which is what a restore returns as its undo bookmark before that state is known.
///
/// Bookmarks are not secrets: the check value only rejects typos and bookmarks of another
/// object's history (or of an earlier object with the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bookmark {
    /// The restore epoch: 0 at creation, +1 at every restore.
    pub epoch: u32,
    /// The commit's sequence number (global, never reused), or `u64::MAX` for a sentinel.
    pub seq: u64,
    /// The commit's time in ms since the Unix epoch (48 bits), or all ones for a sentinel.
    pub ts_ms: u64,
    mac: u64,
}

/// The keys that bind bookmarks to one history.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryKey {
    pub id: [u8; 16],
    pub key: [u8; 16],
}

impl std::fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryKey").field("id", &hex::encode(self.id)).finish_non_exhaustive()
    }
}

impl HistoryKey {
    fn mac(&self, epoch: u32, seq: u64, ts_ms: u64) -> u64 {
        let mut data = [0u8; 36];
        data[..16].copy_from_slice(&self.id);
        data[16..20].copy_from_slice(&epoch.to_le_bytes());
        data[20..28].copy_from_slice(&seq.to_le_bytes());
        data[28..36].copy_from_slice(&ts_ms.to_le_bytes());
        siphash24(&self.key, &data)
    }

    /// The canonical bookmark of a commit.
    pub(crate) fn bookmark(&self, epoch: u32, seq: u64, ts_ms: u64) -> Bookmark {
        let ts_ms = ts_ms & SENTINEL_TS;
        Bookmark { epoch, seq, ts_ms, mac: self.mac(epoch, seq, ts_ms) }
    }

    /// The sentinel of `epoch`: its last state.
    pub(crate) fn sentinel(&self, epoch: u32) -> Bookmark {
        self.bookmark(epoch, SENTINEL_SEQ, SENTINEL_TS)
    }

    /// Parses `s` and checks that it belongs to this history.
    pub(crate) fn parse(&self, s: &str) -> Result<Bookmark, BookmarkError> {
        let b = Bookmark::parse_unchecked(s)?;
        let sentinel_parts = (b.seq == SENTINEL_SEQ) == (b.ts_ms == SENTINEL_TS);
        if !sentinel_parts || b.mac != self.mac(b.epoch, b.seq, b.ts_ms) {
            return Err(BookmarkError::Foreign { bookmark: s.to_owned() });
        }
        Ok(b)
    }
}

impl Bookmark {
    /// True for an epoch's sentinel (an undo bookmark).
    pub fn is_sentinel(&self) -> bool {
        self.seq == SENTINEL_SEQ
    }

    /// Parses the syntax only (no history check).
    fn parse_unchecked(s: &str) -> Result<Bookmark, BookmarkError> {
        let malformed = || BookmarkError::Malformed { bookmark: s.to_owned() };
        let b = s.as_bytes();
        if b.len() != BOOKMARK_LEN || b[8] != b'-' || b[25] != b'-' || b[38] != b'-' {
            return Err(malformed());
        }
        let field = |range: std::ops::Range<usize>| -> Result<u64, BookmarkError> {
            let part = &b[range];
            if !part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(malformed());
            }
            let text = std::str::from_utf8(part).map_err(|_| malformed())?;
            u64::from_str_radix(text, 16).map_err(|_| malformed())
        };
        let epoch = u32::try_from(field(0..8)?).map_err(|_| malformed())?;
        Ok(Bookmark { epoch, seq: field(9..25)?, ts_ms: field(26..38)?, mac: field(39..55)? })
    }
}

impl std::fmt::Display for Bookmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{:016x}-{:012x}-{:016x}", self.epoch, self.seq, self.ts_ms, self.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HistoryKey {
        HistoryKey { id: [7; 16], key: [9; 16] }
    }

    #[test]
    fn round_trip_and_layout() {
        let k = key();
        let b = k.bookmark(3, 0x1234, 1_700_000_000_000);
        let s = b.to_string();
        assert_eq!(s.len(), BOOKMARK_LEN);
        assert!(s.starts_with("00000003-0000000000001234-018bcfe56800-"), "{s}");
        assert_eq!(k.parse(&s), Ok(b));
        let sentinel = k.sentinel(3).to_string();
        assert!(sentinel.starts_with("00000003-ffffffffffffffff-ffffffffffff-"));
        assert!(k.parse(&sentinel).unwrap().is_sentinel());
        assert!(s < sentinel && sentinel < k.bookmark(4, 0x1235, 0).to_string());
    }

    #[test]
    fn refusals() {
        let k = key();
        let s = k.bookmark(0, 1, 2).to_string();
        assert!(matches!(k.parse(&s.to_uppercase()), Err(BookmarkError::Malformed { .. })));
        assert!(matches!(k.parse(&s[1..]), Err(BookmarkError::Malformed { .. })));
        assert!(matches!(k.parse("not-a-bookmark"), Err(BookmarkError::Malformed { .. })));
        let other = HistoryKey { id: [1; 16], key: [9; 16] };
        assert!(matches!(other.parse(&s), Err(BookmarkError::Foreign { .. })));
    }
}
