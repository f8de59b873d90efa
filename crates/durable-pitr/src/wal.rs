//! Reading SQLite's WAL file from a known position: frames are checked against the header's
//! salts and the running checksum, and grouped into commits at commit frames.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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

/// Reads a WAL file capture after capture, keeping it open in between (a capture per commit
/// would otherwise open and close it every time). It opens the file again when the path
/// names another file (the WAL was deleted and created again, by a reset or a restore).
pub(crate) struct WalReader {
    path: PathBuf,
    open: Option<(std::fs::File, FileId)>,
    /// The database's commits may reach the WAL before the disk (group commit): `sync`
    /// makes them durable. Otherwise every `COMMIT` synced and `sync` has nothing to do.
    needs_sync: bool,
}

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<FileId> {
    None
}

impl WalReader {
    pub(crate) fn new(path: PathBuf, needs_sync: bool) -> WalReader {
        WalReader { path, open: None, needs_sync }
    }

    /// Makes everything written to the WAL durable (an `fdatasync`); nothing to do without
    /// a WAL, or when the database syncs its own commits.
    pub(crate) fn sync(&self) -> Result<()> {
        if !self.needs_sync {
            return Ok(());
        }
        match std::fs::File::open(&self.path) {
            Ok(file) => file.sync_data().map_err(io_error("sync", &self.path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("open", &self.path)(e)),
        }
    }

    /// Every complete commit after `pos` in the WAL.
    pub(crate) fn read_commits(&mut self, pos: &WalPos) -> Result<WalRead> {
        let path = self.path.as_path();
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.open = None;
                // No WAL: nothing new, unless we had read frames from one that is gone now.
                let discontinuity = pos.offset > WAL_HEADER as u64 && !pos.restart_ok;
                return Ok(WalRead { commits: Vec::new(), discontinuity });
            }
            Err(e) => return Err(io_error("stat", path)(e)),
        };
        let id = file_id(&meta);
        let reuse = matches!((&self.open, id), (Some((_, known)), Some(id)) if *known == id);
        if !reuse {
            self.open = None;
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let discontinuity = pos.offset > WAL_HEADER as u64 && !pos.restart_ok;
                    return Ok(WalRead { commits: Vec::new(), discontinuity });
                }
                Err(e) => return Err(io_error("open", path)(e)),
            };
            if let Some(id) = id {
                self.open = Some((file, id));
            } else {
                let mut file = file;
                return read_open(&mut file, meta.len() as usize, path, pos);
            }
        }
        let Some((file, _)) = self.open.as_mut() else {
            return Err(io_error("open", path)(std::io::Error::other("WAL not open")));
        };
        file.seek(SeekFrom::Start(0)).map_err(io_error("seek", path))?;
        read_open(file, meta.len() as usize, path, pos)
    }
}

fn read_open(file: &mut std::fs::File, len: usize, path: &Path, pos: &WalPos) -> Result<WalRead> {
    // Read the header, then only what follows the position (the WAL may hold thousands of
    // frames already copied).
    let mut header = [0u8; WAL_HEADER];
    if len < WAL_HEADER {
        return Ok(parse_commits(&[], 0, pos));
    }
    file.read_exact(&mut header).map_err(io_error("read", path))?;
    let same_wal = pos.offset > 0
        && (be32(&header, 16), be32(&header, 20)) == (pos.salt1, pos.salt2)
        && pos.offset as usize <= len;
    let skip = if same_wal { pos.offset as usize - WAL_HEADER } else { 0 };
    let mut bytes = header.to_vec();
    let page_size = match be32(&header, 8) {
        1 => 65536,
        n if (512..=65536).contains(&n) && n.is_power_of_two() => n as usize,
        // Not a WAL header we can read frames by: let the parser say what it is.
        _ => {
            if skip > 0 {
                file.seek(SeekFrom::Start(pos.offset)).map_err(io_error("seek", path))?;
            }
            file.read_to_end(&mut bytes).map_err(io_error("read", path))?;
            return Ok(parse_commits(&bytes, skip, pos));
        }
    };
    if skip > 0 && pos.offset as usize >= WAL_HEADER + FRAME_HEADER + page_size {
        // The frame the position ends with must be the one captured (same salts, same
        // running checksum). A power loss can take commits from the WAL that the journal
        // kept (its pages reached the disk first); the WAL, still as long, then holds other
        // frames there, and reading on from the position would skip the commits SQLite makes
        // next. That is a discontinuity: the archiver records a full image.
        let last = pos.offset - (FRAME_HEADER + page_size) as u64;
        let mut frame_header = [0u8; FRAME_HEADER];
        file.seek(SeekFrom::Start(last)).map_err(io_error("seek", path))?;
        file.read_exact(&mut frame_header).map_err(io_error("read", path))?;
        let ends_here = (be32(&frame_header, 8), be32(&frame_header, 12)) == (pos.salt1, pos.salt2)
            && (be32(&frame_header, 16), be32(&frame_header, 20)) == (pos.cksum1, pos.cksum2)
            && be32(&frame_header, 4) != 0;
        if !ends_here {
            return Ok(WalRead { commits: Vec::new(), discontinuity: true });
        }
    }
    if skip > 0 {
        file.seek(SeekFrom::Start(pos.offset)).map_err(io_error("seek", path))?;
    }
    read_frames(file, path, &header, page_size, &mut bytes)?;
    Ok(parse_commits(&bytes, skip, pos))
}

/// Appends the frames that follow the file's position to `bytes`, up to the end of the file
/// or the first frame whose salts are not the header's: after a `RESTART` checkpoint the WAL
/// keeps its length and the frames of its previous generation stay behind the new ones until
/// overwritten. Each frame's header is read and checked before its page, so a capture that
/// finds nothing new reads 24 bytes, and one that finds a commit copies only its frames.
fn read_frames(
    file: &mut std::fs::File,
    path: &Path,
    header: &[u8; WAL_HEADER],
    page_size: usize,
    bytes: &mut Vec<u8>,
) -> Result<()> {
    let salts = (be32(header, 16), be32(header, 20));
    let mut frame_header = [0u8; FRAME_HEADER];
    loop {
        match file.read_exact(&mut frame_header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io_error("read", path)(e)),
        }
        if (be32(&frame_header, 8), be32(&frame_header, 12)) != salts {
            return Ok(());
        }
        let start = bytes.len();
        bytes.reserve(FRAME_HEADER + page_size);
        bytes.extend_from_slice(&frame_header);
        let got = file
            .by_ref()
            .take(page_size as u64)
            .read_to_end(bytes)
            .map_err(io_error("read", path))?;
        if got < page_size {
            // A torn last frame: not part of the WAL.
            bytes.truncate(start);
            return Ok(());
        }
    }
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

    /// After a `RESTART` checkpoint the WAL keeps its length and its old frames: the reader
    /// must stop at the new generation's end, not read the dead frames as commits.
    #[test]
    fn a_restarted_wal_is_read_up_to_its_new_frames_only() {
        use durable_sql::{CheckpointMode, Database, Options, SqlValue};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let options = Options::new().auto_checkpoint(false);
        let db = Database::open(&path, options).unwrap();
        db.exec("CREATE TABLE t(x)", &[]).unwrap();
        db.commit().unwrap();
        for i in 0..20 {
            db.exec("INSERT INTO t VALUES (?)", &[SqlValue::Blob(vec![i; 3000])]).unwrap();
            db.commit().unwrap();
        }
        let mut reader = WalReader::new(db.wal_path().unwrap(), false);
        let first = reader.read_commits(&WalPos::fresh()).unwrap();
        assert_eq!(first.commits.len(), 21);
        assert!(!first.discontinuity);
        let full_len = std::fs::metadata(db.wal_path().unwrap()).unwrap().len();

        db.checkpoint(CheckpointMode::Restart).unwrap();
        db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
        db.commit().unwrap();
        assert_eq!(std::fs::metadata(db.wal_path().unwrap()).unwrap().len(), full_len);
        let restart = WalPos { restart_ok: true, ..first.commits.last().unwrap().end };
        let again = reader.read_commits(&restart).unwrap();
        assert!(!again.discontinuity);
        assert_eq!(again.commits.len(), 1, "dead frames of the old generation were read");
        // Nothing new after it.
        let after = reader.read_commits(&again.commits[0].end).unwrap();
        assert!(after.commits.is_empty() && !after.discontinuity);
    }

    /// A position whose frame the WAL no longer holds (a power loss kept the journal's record
    /// but not the WAL's frames, and the WAL, as long as before, holds other frames there) is
    /// a discontinuity, not "nothing new".
    #[test]
    fn a_position_the_wal_does_not_end_a_frame_at_is_a_discontinuity() {
        use durable_sql::{Database, Options, SqlValue};
        let dir = tempfile::tempdir().unwrap();
        let options = Options::new().auto_checkpoint(false);
        let db = Database::open(dir.path().join("o.sqlite"), options).unwrap();
        db.exec("CREATE TABLE t(x)", &[]).unwrap();
        db.commit().unwrap();
        for i in 0..5 {
            db.exec("INSERT INTO t VALUES (?)", &[SqlValue::Integer(i)]).unwrap();
            db.commit().unwrap();
        }
        let mut reader = WalReader::new(db.wal_path().unwrap(), false);
        let read = reader.read_commits(&WalPos::fresh()).unwrap();
        let third = read.commits[2].end;
        let fine = reader.read_commits(&third).unwrap();
        assert!(!fine.discontinuity);
        assert_eq!(fine.commits.len(), read.commits.len() - 3);
        // The same offset and salts, another running checksum: not the frame captured.
        let lost = WalPos { cksum1: third.cksum1 ^ 1, ..third };
        let read = reader.read_commits(&lost).unwrap();
        assert!(read.discontinuity && read.commits.is_empty());
        // An offset in the middle of the WAL that ends no commit frame either.
        let frame = (FRAME_HEADER + 4096) as u64;
        let inside = WalPos { offset: third.offset - frame / 2, ..third };
        assert!(reader.read_commits(&inside).unwrap().discontinuity);
    }
}
