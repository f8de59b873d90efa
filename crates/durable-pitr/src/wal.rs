//! Reading SQLite's WAL file from a known position: frames are checked against the header's
//! salts and the running checksum, and grouped into commits at commit frames.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Result, io_error};

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// Where capture stands in the WAL: just after the last commit frame copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WalPos {
    pub salt1: u32,
    pub salt2: u32,
    /// Byte offset just after the last copied commit frame (0: no WAL read yet).
    pub offset: u64,
    pub cksum1: u32,
    pub cksum2: u32,
    /// A WAL with other salts is a legitimate new WAL (after our checkpoint, or a fresh
    /// database), read from its start.
    pub restart_ok: bool,
}

impl WalPos {
    /// The position of a database without a WAL (fresh, restored or checkpointed).
    pub(crate) fn fresh() -> WalPos {
        WalPos { restart_ok: true, ..WalPos::default() }
    }
}

/// One commit read from the WAL.
#[derive(Debug, Clone)]
pub(crate) struct WalCommit {
    pub page_size: u32,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    /// The pages the commit wrote, last version of each, by page number.
    pub pages: BTreeMap<u32, Vec<u8>>,
    /// The position after this commit.
    pub end: WalPos,
}

/// What reading the WAL found.
#[derive(Debug)]
pub(crate) struct WalRead {
    pub commits: Vec<WalCommit>,
    /// The WAL does not continue from the position: another writer or a checkpoint we did
    /// not make changed it, so its frames cannot be attributed to commits after our last.
    pub discontinuity: bool,
}

fn checksum(big_endian: bool, mut s: (u32, u32), data: &[u8]) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (
                u32::from_be_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_be_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s.0 = s.0.wrapping_add(a).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(b).wrapping_add(s.0);
    }
    s
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads every complete commit after `pos` in the WAL at `path`.
pub(crate) fn read_commits(path: &Path, pos: &WalPos) -> Result<WalRead> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No WAL: nothing new, unless we had read frames from one that is gone now.
            let discontinuity = pos.offset > WAL_HEADER as u64 && !pos.restart_ok;
            return Ok(WalRead { commits: Vec::new(), discontinuity });
        }
        Err(e) => return Err(io_error("open", path)(e)),
    };
    // Read the header, then only what follows the position (the WAL may hold thousands of
    // frames already copied).
    let mut header = [0u8; WAL_HEADER];
    let len = file.metadata().map_err(io_error("stat", path))?.len() as usize;
    if len < WAL_HEADER {
        return Ok(parse_commits(&[], 0, pos));
    }
    file.read_exact(&mut header).map_err(io_error("read", path))?;
    let same_wal = pos.offset > 0
        && (be32(&header, 16), be32(&header, 20)) == (pos.salt1, pos.salt2)
        && pos.offset as usize <= len;
    let skip = if same_wal { pos.offset as usize - WAL_HEADER } else { 0 };
    let mut bytes = Vec::with_capacity(len - skip);
    bytes.extend_from_slice(&header);
    if skip > 0 {
        file.seek(SeekFrom::Start(pos.offset)).map_err(io_error("seek", path))?;
    }
    file.read_to_end(&mut bytes).map_err(io_error("read", path))?;
    Ok(parse_commits(&bytes, skip, pos))
}

/// Parses commits after `pos` out of a WAL image whose first `skip` bytes after the header
/// were left out (they precede the position).
pub(crate) fn parse_commits(bytes: &[u8], skip: usize, pos: &WalPos) -> WalRead {
    let nothing = |discontinuity| WalRead { commits: Vec::new(), discontinuity };
    if bytes.len() < WAL_HEADER {
        // An empty (truncated) WAL. Having read frames before means a checkpoint we did not
        // make, unless one of ours allows a restart.
        return nothing(pos.offset > WAL_HEADER as u64 && !pos.restart_ok);
    }
    let magic = be32(bytes, 0);
    if magic & !1 != 0x377f_0682 || be32(bytes, 4) != 3_007_000 {
        return nothing(pos.offset > 0 && !pos.restart_ok);
    }
    let big_endian = magic & 1 == 1;
    let page_size = match be32(bytes, 8) {
        1 => 65536,
        n if (512..=65536).contains(&n) && n.is_power_of_two() => n,
        _ => return nothing(pos.offset > 0 && !pos.restart_ok),
    };
    let (salt1, salt2) = (be32(bytes, 16), be32(bytes, 20));
    let header_sum = checksum(big_endian, (0, 0), &bytes[..24]);
    if header_sum != (be32(bytes, 24), be32(bytes, 28)) {
        return nothing(pos.offset > 0 && !pos.restart_ok);
    }
    let same_wal = pos.offset > 0 && (salt1, salt2) == (pos.salt1, pos.salt2);
    let (mut offset, mut sum) = if same_wal {
        (pos.offset as usize - skip, (pos.cksum1, pos.cksum2))
    } else if pos.offset == 0 || pos.restart_ok {
        (WAL_HEADER, header_sum)
    } else {
        return nothing(true);
    };
    if same_wal && offset > bytes.len() + skip {
        // The WAL lost frames we copied: it was rewritten behind our back.
        return nothing(!pos.restart_ok);
    }
    let frame_size = FRAME_HEADER + page_size as usize;
    let mut commits = Vec::new();
    let mut pending: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    while let Some(frame) = bytes.get(offset..offset + frame_size) {
        if (be32(frame, 8), be32(frame, 12)) != (salt1, salt2) {
            break;
        }
        let s = checksum(big_endian, sum, &frame[..8]);
        let s = checksum(big_endian, s, &frame[FRAME_HEADER..]);
        if s != (be32(frame, 16), be32(frame, 20)) {
            break;
        }
        sum = s;
        offset += frame_size;
        let pgno = be32(frame, 0);
        if pgno == 0 {
            break;
        }
        pending.insert(pgno, frame[FRAME_HEADER..].to_vec());
        let db_pages = be32(frame, 4);
        if db_pages != 0 {
            commits.push(WalCommit {
                page_size,
                db_pages,
                pages: std::mem::take(&mut pending),
                end: WalPos {
                    salt1,
                    salt2,
                    offset: (offset + skip) as u64,
                    cksum1: sum.0,
                    cksum2: sum.1,
                    restart_ok: false,
                },
            });
        }
    }
    WalRead { commits, discontinuity: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_never_a_commit() {
        for len in [0, 10, 32, 100, 5000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let read = parse_commits(&bytes, 0, &WalPos::fresh());
            assert!(read.commits.is_empty());
        }
    }
}
