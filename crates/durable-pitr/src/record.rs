//! The byte formats: journal records, segment files, snapshots, the history's `meta` and the
//! `restore.pending` request (all little-endian, fixed width; see docs/storage-format.md).

use std::collections::BTreeMap;

use crate::bookmark::HistoryKey;
use crc32c::crc32c;

use crate::codec::Reader;
use crate::error::{Result, corrupt};
use crate::wal::WalPos;

/// Magic number that opens every record ("DSPR").
pub(crate) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"DSPR");
/// Bytes in a record header.
pub(crate) const RECORD_HEADER: usize = 96;
/// Magic of a segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"DSPITRSG";
/// Bytes in a segment file header.
pub(crate) const SEGMENT_HEADER: usize = 32;
/// Magic of a snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"DSPITRSN";
/// Bytes in a snapshot header.
pub(crate) const SNAPSHOT_HEADER: usize = 64;
/// Magic of the history's meta file.
pub(crate) const META_MAGIC: [u8; 8] = *b"DSPITRMT";
/// Magic of a restore request.
pub(crate) const PENDING_MAGIC: [u8; 8] = *b"DSPITRRQ";
/// The format version written by this crate.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Seq 0: the database when the history began (a full image).
    Init = 1,
    /// A commit: the pages it wrote.
    Commit = 2,
    /// A restore: the first position of a new epoch, a full image of the restored state.
    EpochStart = 3,
    /// No position: where capture stands in the WAL (opens each segment; marks checkpoints).
    Mark = 4,
    /// The WAL was changed behind the archiver's back: a full image of the database.
    Discontinuity = 5,
    /// `deleteAll` (a reset): a full image of the new, empty database.
    Reset = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Init,
            2 => Kind::Commit,
            3 => Kind::EpochStart,
            4 => Kind::Mark,
            5 => Kind::Discontinuity,
            6 => Kind::Reset,
            _ => return None,
        })
    }

    /// True for records that are positions in history (everything but marks).
    pub(crate) fn is_position(self) -> bool {
        self != Kind::Mark
    }

    /// True for records whose pages are the whole database.
    pub(crate) fn is_full_image(self) -> bool {
        matches!(self, Kind::Init | Kind::EpochStart | Kind::Discontinuity | Kind::Reset)
    }
}

/// Record flag: the commit was adopted from the WAL at open (its time is the adoption's).
pub(crate) const FLAG_ADOPTED: u8 = 1;
/// Mark flag: the archiver checkpointed the WAL after this point.
pub(crate) const FLAG_CHECKPOINTED: u8 = 2;

/// A record's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub flags: u8,
    pub epoch: u32,
    pub page_size: u32,
    pub seq: u64,
    pub ts_ms: u64,
    pub db_pages: u32,
    pub n_pages: u32,
    pub wal: WalPos,
    /// EPOCH_START: the sequence number restored to.
    pub restored_seq: u64,
    /// EPOCH_START: the last sequence number of the previous epoch.
    pub prev_last_seq: u64,
    /// EPOCH_START: the id of the restore request it completes.
    pub request_id: u64,
}

impl Header {
    pub(crate) fn new(kind: Kind, epoch: u32, seq: u64, ts_ms: u64) -> Header {
        Header {
            kind,
            flags: 0,
            epoch,
            page_size: 0,
            seq,
            ts_ms,
            db_pages: 0,
            n_pages: 0,
            wal: WalPos::fresh(),
            restored_seq: 0,
            prev_last_seq: 0,
            request_id: 0,
        }
    }
}

/// Encodes a record: header, then `(pgno, page)` pairs.
pub(crate) fn encode_record(header: &Header, pages: &BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    let page_size = header.page_size as usize;
    let mut out = Vec::with_capacity(RECORD_HEADER + pages.len() * (4 + page_size));
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.push(header.kind as u8);
    let restart = if header.wal.restart_ok { 0x80 } else { 0 };
    out.push(header.flags | restart);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&header.page_size.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.ts_ms.to_le_bytes());
    out.extend_from_slice(&header.db_pages.to_le_bytes());
    out.extend_from_slice(&(pages.len() as u32).to_le_bytes());
    out.extend_from_slice(&header.wal.salt1.to_le_bytes());
    out.extend_from_slice(&header.wal.salt2.to_le_bytes());
    out.extend_from_slice(&header.wal.offset.to_le_bytes());
    out.extend_from_slice(&header.wal.cksum1.to_le_bytes());
    out.extend_from_slice(&header.wal.cksum2.to_le_bytes());
    out.extend_from_slice(&header.restored_seq.to_le_bytes());
    out.extend_from_slice(&header.prev_last_seq.to_le_bytes());
    out.extend_from_slice(&header.request_id.to_le_bytes());
    let payload_at = out.len() + 8;
    out.extend_from_slice(&[0u8; 8]); // payload CRC and header CRC, filled below
    for (pgno, page) in pages {
        out.extend_from_slice(&pgno.to_le_bytes());
        out.extend_from_slice(page);
    }
    let payload_crc = crc32c(&out[payload_at..]);
    out[88..92].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c(&out[..92]);
    out[92..96].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// A decoded record; pages point into the decoded bytes.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub header: Header,
    /// The payload: `n_pages` pairs of (pgno u32, page bytes).
    payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// The pages of the record, in page-number order.
    pub(crate) fn pages(&self) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        let size = self.header.page_size as usize;
        self.payload
            .chunks_exact(4 + size)
            .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), &c[4..]))
    }
}

/// Decodes the record at the start of `bytes`. `Ok(None)`: a torn or corrupt record (or the
/// end); the caller decides whether that is the tail of a journal or a corrupt file.
pub(crate) fn decode_record(bytes: &[u8]) -> Option<(Record<'_>, usize)> {
    let head = bytes.get(..RECORD_HEADER)?;
    let mut r = Reader::new(head);
    if r.u32()? != RECORD_MAGIC {
        return None;
    }
    if crc32c(&head[..92]) != u32::from_le_bytes(head[92..96].try_into().ok()?) {
        return None;
    }
    let kind = Kind::from_u8(r.u8()?)?;
    let raw_flags = r.u8()?;
    let _reserved = r.u16()?;
    let epoch = r.u32()?;
    let page_size = r.u32()?;
    let seq = r.u64()?;
    let ts_ms = r.u64()?;
    let db_pages = r.u32()?;
    let n_pages = r.u32()?;
    let wal = WalPos {
        salt1: r.u32()?,
        salt2: r.u32()?,
        offset: r.u64()?,
        cksum1: r.u32()?,
        cksum2: r.u32()?,
        restart_ok: raw_flags & 0x80 != 0,
    };
    let restored_seq = r.u64()?;
    let prev_last_seq = r.u64()?;
    let request_id = r.u64()?;
    let payload_crc = r.u32()?;
    if n_pages > 0 && !(512..=65536).contains(&page_size) {
        return None;
    }
    let len = (n_pages as usize).checked_mul(4 + page_size as usize)?;
    let payload = bytes.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if crc32c(payload) != payload_crc {
        return None;
    }
    let header = Header {
        kind,
        flags: raw_flags & 0x7f,
        epoch,
        page_size,
        seq,
        ts_ms,
        db_pages,
        n_pages,
        wal,
        restored_seq,
        prev_last_seq,
        request_id,
    };
    Some((Record { header, payload }, RECORD_HEADER + len))
}

/// The header of a segment file (the open journal has the same format).
pub(crate) fn encode_segment_header(history: &HistoryKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&history.id);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment file's header; returns the offset of its first record.
/// True when `bytes` do not start with a whole segment header (short, no magic, a checksum
/// that does not match): a file torn while being created, before anything was synced.
pub(crate) fn segment_header_torn(bytes: &[u8]) -> bool {
    bytes.len() < SEGMENT_HEADER
        || bytes[..8] != SEGMENT_MAGIC
        || bytes[28..32] != crc32c(&bytes[..28]).to_le_bytes()
}

pub(crate) fn check_segment_header(
    bytes: &[u8],
    history: &HistoryKey,
    what: &str,
) -> Result<usize> {
    let mut r = Reader::new(bytes);
    let bad = |detail: &str| corrupt(what, detail);
    if r.array::<8>() != Some(SEGMENT_MAGIC) {
        return Err(bad("not a segment file"));
    }
    let version = r.u32().ok_or_else(|| bad("short header"))?;
    let id = r.array::<16>().ok_or_else(|| bad("short header"))?;
    let crc = r.u32().ok_or_else(|| bad("short header"))?;
    if crc != crc32c(&bytes[..28]) {
        return Err(bad("header checksum mismatch"));
    }
    if version != FORMAT_VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    if id != history.id {
        return Err(crate::error::Error::Archive(crate::error::ArchiveError::OtherHistory {
            what: what.to_owned(),
        }));
    }
    Ok(SEGMENT_HEADER)
}

/// Decodes every record of a sealed segment; any damage is an error.
pub(crate) fn decode_segment<'a>(
    bytes: &'a [u8],
    history: &HistoryKey,
    what: &str,
) -> Result<Vec<Record<'a>>> {
    let mut at = check_segment_header(bytes, history, what)?;
    let mut out = Vec::new();
    while at < bytes.len() {
        let Some((record, len)) = decode_record(&bytes[at..]) else {
            return Err(corrupt(what, format!("bad record at byte {at}")));
        };
        out.push(record);
        at += len;
    }
    Ok(out)
}

/// A snapshot's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotHeader {
    pub page_size: u32,
    pub epoch: u32,
    pub db_pages: u32,
    pub seq: u64,
    pub ts_ms: u64,
}

/// Encodes a snapshot: header, then the database image.
pub(crate) fn encode_snapshot(h: &SnapshotHeader, history: &HistoryKey, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + image.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&h.page_size.to_le_bytes());
    out.extend_from_slice(&h.epoch.to_le_bytes());
    out.extend_from_slice(&h.db_pages.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.ts_ms.to_le_bytes());
    out.extend_from_slice(&history.id);
    out.extend_from_slice(&crc32c(image).to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(image);
    out
}

/// Decodes a snapshot; returns its header and image.
pub(crate) fn decode_snapshot<'a>(
    bytes: &'a [u8],
    history: &HistoryKey,
    what: &str,
) -> Result<(SnapshotHeader, &'a [u8])> {
    let bad = |detail: &str| corrupt(what, detail);
    let mut r = Reader::new(bytes);
    if r.array::<8>() != Some(SNAPSHOT_MAGIC) {
        return Err(bad("not a snapshot"));
    }
    let short = || bad("short header");
    let version = r.u32().ok_or_else(short)?;
    let page_size = r.u32().ok_or_else(short)?;
    let epoch = r.u32().ok_or_else(short)?;
    let db_pages = r.u32().ok_or_else(short)?;
    let seq = r.u64().ok_or_else(short)?;
    let ts_ms = r.u64().ok_or_else(short)?;
    let id = r.array::<16>().ok_or_else(short)?;
    let image_crc = r.u32().ok_or_else(short)?;
    let header_crc = r.u32().ok_or_else(short)?;
    if header_crc != crc32c(&bytes[..SNAPSHOT_HEADER - 4]) {
        return Err(bad("header checksum mismatch"));
    }
    if version != FORMAT_VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    if id != history.id {
        return Err(crate::error::Error::Archive(crate::error::ArchiveError::OtherHistory {
            what: what.to_owned(),
        }));
    }
    let image = &bytes[SNAPSHOT_HEADER..];
    if crc32c(image) != image_crc || image.len() as u64 != db_pages as u64 * page_size as u64 {
        return Err(bad("image checksum or size mismatch"));
    }
    Ok((SnapshotHeader { page_size, epoch, db_pages, seq, ts_ms }, image))
}

/// The history's identity: written once, locally and in the archive.
pub(crate) fn encode_meta(history: &HistoryKey, created_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&history.id);
    out.extend_from_slice(&history.key);
    out.extend_from_slice(&created_ms.to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a meta file.
pub(crate) fn decode_meta(bytes: &[u8], what: &str) -> Result<HistoryKey> {
    let bad = |detail: &str| corrupt(what, detail);
    let mut r = Reader::new(bytes);
    if r.array::<8>() != Some(META_MAGIC) {
        return Err(bad("not a meta file"));
    }
    let version = r.u32().ok_or_else(|| bad("short"))?;
    let id = r.array::<16>().ok_or_else(|| bad("short"))?;
    let key = r.array::<16>().ok_or_else(|| bad("short"))?;
    let _created = r.u64().ok_or_else(|| bad("short"))?;
    let at = r.pos();
    let crc = r.u32().ok_or_else(|| bad("short"))?;
    if crc != crc32c(&bytes[..at]) || r.pos() != bytes.len() {
        return Err(bad("checksum mismatch"));
    }
    if version != FORMAT_VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    Ok(HistoryKey { id, key })
}

/// A recorded restore request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub request_id: u64,
    pub requested_ms: i64,
    pub bookmark: String,
}

pub(crate) fn encode_pending(p: &Pending) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(&PENDING_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&p.request_id.to_le_bytes());
    out.extend_from_slice(&p.requested_ms.to_le_bytes());
    out.extend_from_slice(&(p.bookmark.len() as u32).to_le_bytes());
    out.extend_from_slice(p.bookmark.as_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_pending(bytes: &[u8], what: &str) -> Result<Pending> {
    let bad = |detail: &str| corrupt(what, detail);
    let mut r = Reader::new(bytes);
    if r.array::<8>() != Some(PENDING_MAGIC) {
        return Err(bad("not a restore request"));
    }
    let _version = r.u32().ok_or_else(|| bad("short"))?;
    let request_id = r.u64().ok_or_else(|| bad("short"))?;
    let requested_ms = r.u64().ok_or_else(|| bad("short"))? as i64;
    let len = r.u32().ok_or_else(|| bad("short"))? as usize;
    let text = r.take(len.min(1024)).ok_or_else(|| bad("short"))?;
    let at = r.pos();
    let crc = r.u32().ok_or_else(|| bad("short"))?;
    if crc != crc32c(&bytes[..at]) || r.pos() != bytes.len() {
        return Err(bad("checksum mismatch"));
    }
    let bookmark = String::from_utf8(text.to_vec()).map_err(|_| bad("bookmark is not UTF-8"))?;
    Ok(Pending { request_id, requested_ms, bookmark })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_flip_detected() {
        let mut h = Header::new(Kind::Commit, 2, 9, 1234);
        h.page_size = 512;
        h.db_pages = 3;
        let pages = BTreeMap::from([(1, vec![1u8; 512]), (3, vec![3u8; 512])]);
        let bytes = encode_record(&h, &pages);
        let (rec, len) = decode_record(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(rec.header.n_pages, 2);
        assert_eq!(Header { n_pages: 0, ..rec.header }, h);
        let got: Vec<_> = rec.pages().map(|(n, p)| (n, p.to_vec())).collect();
        assert_eq!(got, pages.into_iter().collect::<Vec<_>>());
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_record(&bad).is_none(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_none());
        }
    }

    #[test]
    fn crc32c_is_the_castagnoli_crc() {
        // The CRC catalogue's check value and RFC 3720's (iSCSI) vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c::crc32c_append(crc32c(b"1234"), b"56789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xff; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(&(0..32).collect::<Vec<u8>>()), 0x46DD_794E);
        assert_eq!(crc32c(&(0..32).rev().collect::<Vec<u8>>()), 0x113F_DB5C);
        // The bit-at-a-time definition, at every start and at lengths around the edges of
        // word-at-a-time and multi-block paths.
        let bitwise = |data: &[u8]| {
            let mut c = !0u32;
            for &b in data {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                }
            }
            !c
        };
        let data: Vec<u8> =
            (0..30_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..17 {
            for len in [0, 1, 7, 8, 9, 63, 64, 65, 255, 256, 769, 4096, 24_577, 29_983 - start] {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), bitwise(d), "start {start} len {len}");
            }
        }
        for n in 0..100 {
            let whole = crc32c(&data[..100]);
            assert_eq!(crc32c::crc32c_append(crc32c(&data[..n]), &data[n..100]), whole);
        }
    }

    #[test]
    fn checksums_written_are_pinned() {
        // The checksum fields of files written by earlier builds: whatever computes CRC-32C,
        // these bytes must not change, or existing journals and archives stop reading.
        let mut h = Header::new(Kind::Commit, 2, 9, 1234);
        h.page_size = 512;
        h.db_pages = 3;
        let page: Vec<u8> = (0..512u32).map(|i| (i * 31 + 7) as u8).collect();
        let bytes = encode_record(&h, &BTreeMap::from([(1, page), (3, vec![3u8; 512])]));
        assert_eq!(bytes[88..96], [198, 40, 17, 131, 52, 173, 15, 18], "payload CRC, header CRC");
        let history = HistoryKey { id: [1; 16], key: [2; 16] };
        let meta = encode_meta(&history, 1_700_000_000_000);
        assert_eq!(meta[meta.len() - 4..], [141, 40, 71, 237], "meta CRC");
        // 64 KiB: long enough for the multi-block paths of hardware CRC implementations.
        let image: Vec<u8> =
            (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let snapshot =
            SnapshotHeader { page_size: 512, epoch: 1, db_pages: 128, seq: 5, ts_ms: 99 };
        let snap = encode_snapshot(&snapshot, &history, &image);
        assert_eq!(
            snap[SNAPSHOT_HEADER - 8..SNAPSHOT_HEADER],
            [159, 70, 197, 154, 120, 136, 70, 206],
            "image CRC, header CRC"
        );
    }
}
