//! The local journal: the open segment that every captured commit is appended to, its
//! recovery after a crash (a torn tail is cut off), sealing, and the sealed segments that wait
//! for upload.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::archive::{SegEntry, SegName};
use crate::bookmark::HistoryKey;
use crate::config::Failpoint;
use crate::error::{ArchiveError, Error, Result, io_error};
use crate::record::{self, Header, Kind};

/// One position (a record with a sequence number) of the open segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub epoch: u32,
    pub seq: u64,
    pub ts: u64,
}

struct OpenSegment {
    file: File,
    path: PathBuf,
    epoch: u32,
    len: u64,
    synced_len: u64,
    /// Positions in this segment, in order.
    index: Vec<Entry>,
    /// Where the last delta handed to the shared log ended (0: none was), and how many
    /// positions it had reached ([`Journal::delta`]).
    logged: (u64, usize),
}

/// The records appended to the open segment since the last delta, as a segment file of
/// their own ([`Journal::delta`]).
#[derive(Debug)]
pub(crate) struct Delta {
    /// The positions it holds (term 0).
    pub name: SegName,
    /// Segment header and records.
    pub bytes: Vec<u8>,
    path: PathBuf,
    end: (u64, usize),
}

/// A segment taken out of the journal for upload ([`Journal::rotate`]), not yet synced.
#[derive(Debug)]
struct Rotated {
    path: PathBuf,
    synced: bool,
}

/// The journal folder and its open segment.
pub(crate) struct Journal {
    dir: PathBuf,
    history: HistoryKey,
    open: Option<OpenSegment>,
    /// Segments rotated out for upload whose upload has not finished.
    rotated: Vec<Rotated>,
    /// A file was created or renamed since the folder was last synced.
    dir_dirty: bool,
    failpoint: Option<Failpoint>,
}

/// What recovery found in the journal folder.
pub(crate) struct Recovered {
    /// The last record of the journal (the newest position or mark), if any.
    pub last: Option<Header>,
    /// Sealed segments waiting for upload.
    pub sealed: Vec<SegEntry>,
}

/// Makes `dir`'s entries durable (`durable_sql::files::sync_dir`), as this crate's error.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    durable_sql::files::sync_dir(dir).map_err(io_error("sync", dir))
}

impl Journal {
    pub(crate) fn new(dir: PathBuf, history: HistoryKey, failpoint: Option<Failpoint>) -> Journal {
        Journal { dir, history, open: None, rotated: Vec::new(), dir_dirty: false, failpoint }
    }

    fn fail(&self, point: &'static str) -> Result<()> {
        if let Some(f) = &self.failpoint
            && f(point)
        {
            return Err(Error::Archive(ArchiveError::Injected(point)));
        }
        Ok(())
    }

    /// Opens the folder after a crash or a clean stop: cuts a torn tail off the open segment
    /// and lists the sealed segments.
    pub(crate) fn recover(&mut self) -> Result<Recovered> {
        std::fs::create_dir_all(&self.dir).map_err(io_error("create", &self.dir))?;
        let mut sealed = Vec::new();
        let mut open_files = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(seg) = SegName::parse(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                sealed.push(SegEntry { name: seg, local: Some(path), remote: false, size });
            } else if name.ends_with(".open") {
                open_files.push(path);
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
            }
        }
        // Open segments in history order (their names start with epoch and first seq). More
        // than one means a crash while segments rotated out for upload were in flight: the
        // older ones are sealed (an upload of the same bytes that already happened counts as
        // done). The first torn one ends the journal: it is cut there and every later file
        // goes, since nothing was synced after it and its commits are still in the WAL.
        open_files.sort();
        let mut current: Option<(OpenSegment, Option<Header>)> = None;
        let mut files = open_files.into_iter().peekable();
        while let Some(path) = files.next() {
            let Some((segment, last, torn)) = self.read_open(&path)? else {
                files.for_each(|later| {
                    let _ = std::fs::remove_file(later);
                });
                break;
            };
            if torn || files.peek().is_none() {
                for later in files.by_ref() {
                    tracing::warn!(path = %later.display(), "dropping a journal segment after a torn one");
                    std::fs::remove_file(&later).map_err(io_error("remove", &later))?;
                }
                current = Some((segment, last));
                break;
            }
            match segment_name(&segment) {
                Some(name) => {
                    segment.file.sync_data().map_err(io_error("sync", &path))?;
                    let target = self.dir.join(name.file_name());
                    std::fs::rename(&path, &target).map_err(io_error("rename", &path))?;
                    sealed.push(SegEntry {
                        name,
                        local: Some(target),
                        remote: false,
                        size: segment.len,
                    });
                }
                None => std::fs::remove_file(&path).map_err(io_error("remove", &path))?,
            }
            sync_dir(&self.dir)?;
        }
        sealed.sort_by_key(|e| (e.name.first_seq, std::cmp::Reverse(e.name.last_seq)));
        let mut last = None;
        if let Some(e) = sealed.last()
            && let Some(path) = &e.local
        {
            let bytes = std::fs::read(path).map_err(io_error("read", path))?;
            let records =
                record::decode_segment(&bytes, &self.history, &path.display().to_string())?;
            last = records.last().map(|r| r.header);
        }
        if let Some((segment, open_last)) = current {
            last = open_last.or(last);
            self.open = Some(segment);
        }
        Ok(Recovered { last, sealed })
    }

    /// Forgets everything the journal holds and deletes its files: for a journal found
    /// behind the archive after a power loss (every record it holds is archived; see
    /// `Archiver::open`).
    pub(crate) fn discard(&mut self) -> Result<()> {
        self.open = None;
        self.rotated.clear();
        let entries = std::fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        for entry in entries {
            let path = entry.map_err(io_error("list", &self.dir))?.path();
            if path.is_file() {
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
        }
        sync_dir(&self.dir)?;
        self.dir_dirty = false;
        Ok(())
    }

    /// Reads an open segment: the segment (its torn tail cut off), its last record, and
    /// whether a tail was cut. `None` (the file removed) when it holds no whole header: it
    /// was torn while being created, before anything in it was synced.
    fn read_open(&self, path: &Path) -> Result<Option<(OpenSegment, Option<Header>, bool)>> {
        let bytes = std::fs::read(path).map_err(io_error("read", path))?;
        let what = path.display().to_string();
        if record::segment_header_torn(&bytes) {
            tracing::warn!(path = %what, "removing a journal segment torn while being created");
            std::fs::remove_file(path).map_err(io_error("remove", path))?;
            return Ok(None);
        }
        let mut at = record::check_segment_header(&bytes, &self.history, &what)?;
        let mut index = Vec::new();
        let mut epoch = None;
        let mut last = None;
        while let Some((rec, len)) = record::decode_record(&bytes[at..]) {
            if rec.header.kind.is_position() {
                index.push(Entry {
                    epoch: rec.header.epoch,
                    seq: rec.header.seq,
                    ts: rec.header.ts_ms,
                });
                epoch = Some(rec.header.epoch);
            }
            last = Some(rec.header);
            at += len;
        }
        let file = OpenOptions::new().append(true).open(path).map_err(io_error("open", path))?;
        let torn = at < bytes.len();
        if torn {
            tracing::warn!(path = %what, at, len = bytes.len(), "cutting a torn journal tail");
            file.set_len(at as u64).map_err(io_error("truncate", path))?;
            file.sync_all().map_err(io_error("sync", path))?;
        }
        let epoch = epoch.or(last.map(|h| h.epoch)).unwrap_or(0);
        let segment = OpenSegment {
            file,
            path: path.to_path_buf(),
            epoch,
            len: at as u64,
            synced_len: at as u64,
            index,
            logged: (0, 0),
        };
        Ok(Some((segment, last, torn)))
    }

    /// Appends one encoded record. `mark` is written first when a new segment starts (the
    /// position capture stands at), so every segment says where it continues from. Returns
    /// the segment sealed first when the record starts a new epoch.
    pub(crate) fn append(
        &mut self,
        header: &Header,
        bytes: &[u8],
        mark: Option<Vec<u8>>,
    ) -> Result<Option<SegEntry>> {
        let mut sealed = None;
        if let Some(open) = &self.open
            && header.kind.is_position()
            && open.epoch != header.epoch
        {
            // A segment never spans two epochs.
            if open.index.is_empty() {
                let path = open.path.clone();
                self.open = None;
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            } else {
                sealed = self.seal()?;
            }
        }
        if self.open.is_none() {
            // Named by the first position it will hold: a mark carries the position before
            // it. (Named by the mark's own position, a segment opened by a checkpoint's mark
            // right after a one-position segment was rotated out took that segment's file
            // name and truncated it before its upload read it.)
            let first = if header.kind.is_position() { header.seq } else { header.seq + 1 };
            let name = format!("{:08x}-{first:016x}.open", header.epoch);
            let path = self.dir.join(name);
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(io_error("create", &path))?;
            let mut head = record::encode_segment_header(&self.history);
            if let Some(mark) = mark {
                head.extend_from_slice(&mark);
            }
            file.write_all(&head).map_err(io_error("write", &path))?;
            // Not synced here: the next `sync` (before any checkpoint) makes the file and
            // its folder entry durable, and until then every record in it is also in the WAL.
            self.dir_dirty = true;
            let len = head.len() as u64;
            self.open = Some(OpenSegment {
                file,
                path,
                epoch: header.epoch,
                len,
                synced_len: 0,
                index: Vec::new(),
                logged: (0, 0),
            });
        }
        self.fail("journal.before_write")?;
        let torn = self.failpoint.as_ref().is_some_and(|f| f("journal.torn_write"));
        let open = self.open.as_mut().ok_or_else(|| crate::error::missing("open segment"))?;
        if torn {
            let _ = open.file.write_all(&bytes[..bytes.len() / 2]);
            return Err(Error::Archive(ArchiveError::Injected("journal.torn_write")));
        }
        open.file.write_all(bytes).map_err(io_error("write", &open.path))?;
        open.len += bytes.len() as u64;
        if header.kind.is_position() {
            open.epoch = header.epoch;
            open.index.push(Entry { epoch: header.epoch, seq: header.seq, ts: header.ts_ms });
        }
        self.fail("journal.after_write")?;
        Ok(sealed)
    }

    /// Makes everything appended durable (the open segment, segments rotated out for an
    /// upload still running, the folder's entries). Under group commit the archiver syncs
    /// the WAL first (`Inner::sync_journal`), so the journal never holds, durably, a commit
    /// the database could still lose.
    pub(crate) fn sync(&mut self) -> Result<()> {
        let open_due = self.open.as_ref().is_some_and(|o| o.synced_len < o.len);
        let rotated_due = self.rotated.iter().any(|r| !r.synced);
        if open_due || rotated_due {
            self.fail("journal.before_sync")?;
        }
        if let Some(open) = &mut self.open
            && open.synced_len < open.len
        {
            open.file.sync_data().map_err(io_error("sync", &open.path))?;
            open.synced_len = open.len;
        }
        for r in self.rotated.iter_mut().filter(|r| !r.synced) {
            File::open(&r.path).and_then(|f| f.sync_data()).map_err(io_error("sync", &r.path))?;
            r.synced = true;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Takes the open segment out of the journal for an upload, without syncing anything:
    /// the next record starts a new segment. Its entry names the file (still `*.open`).
    /// Returns `None` when the open segment holds no position.
    pub(crate) fn rotate(&mut self) -> Option<SegEntry> {
        let open = self.open.as_ref()?;
        let name = segment_name(open)?;
        let open = self.open.take()?;
        self.rotated.push(Rotated { path: open.path.clone(), synced: open.synced_len >= open.len });
        Some(SegEntry { name, local: Some(open.path), remote: false, size: open.len })
    }

    /// The upload of a rotated segment succeeded: its file goes (no sync needed: a file
    /// that comes back after a crash holds history the archive has too).
    pub(crate) fn rotated_uploaded(&mut self, entry: &SegEntry) -> Result<()> {
        let Some(path) = &entry.local else { return Ok(()) };
        self.rotated.retain(|r| &r.path != path);
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", path)(e)),
        }
    }

    /// The upload of a rotated segment failed: it becomes a sealed segment (synced and
    /// renamed), uploaded by a later attempt.
    pub(crate) fn seal_rotated(&mut self, entry: &SegEntry) -> Result<SegEntry> {
        let Some(path) = entry.local.clone() else { return Ok(entry.clone()) };
        File::open(&path).and_then(|f| f.sync_data()).map_err(io_error("sync", &path))?;
        self.fail("seal.before_rename")?;
        let target = self.dir.join(entry.name.file_name());
        std::fs::rename(&path, &target).map_err(io_error("rename", &path))?;
        sync_dir(&self.dir)?;
        self.rotated.retain(|r| r.path != path);
        Ok(SegEntry { local: Some(target), ..entry.clone() })
    }

    /// The positions of the open segment.
    /// The records appended to the open segment since the last delta was taken and handed
    /// over ([`delta_logged`](Journal::delta_logged)), as a segment file; `None` when no
    /// position was added since.
    pub(crate) fn delta(&self) -> Result<Option<Delta>> {
        use std::io::{Read, Seek, SeekFrom};
        let Some(open) = &self.open else { return Ok(None) };
        let (from, count) = open.logged;
        let positions = open.index.get(count..).unwrap_or_default();
        let (Some(first), Some(last)) = (positions.first(), positions.last()) else {
            return Ok(None);
        };
        let start = if from == 0 { record::SEGMENT_HEADER as u64 } else { from };
        let mut bytes = record::encode_segment_header(&self.history);
        let header = bytes.len();
        bytes.resize(header + (open.len - start) as usize, 0);
        let mut file = File::open(&open.path).map_err(io_error("open", &open.path))?;
        file.seek(SeekFrom::Start(start)).map_err(io_error("read", &open.path))?;
        file.read_exact(&mut bytes[header..]).map_err(io_error("read", &open.path))?;
        let name = span_name(open.epoch, first, last);
        Ok(Some(Delta { name, bytes, path: open.path.clone(), end: (open.len, open.index.len()) }))
    }

    /// `delta` is in the shared log: the next one starts after it (unless the segment it
    /// came from was rotated out meanwhile).
    pub(crate) fn delta_logged(&mut self, delta: &Delta) {
        if let Some(open) = &mut self.open
            && open.path == delta.path
            && open.logged.0 < delta.end.0
        {
            open.logged = delta.end;
        }
    }

    pub(crate) fn index(&self) -> &[Entry] {
        self.open.as_ref().map_or(&[], |o| &o.index)
    }

    /// The open segment's file, when it holds positions.
    pub(crate) fn open_path(&self) -> Option<&Path> {
        self.open.as_ref().filter(|o| !o.index.is_empty()).map(|o| o.path.as_path())
    }

    /// Bytes in the open segment.
    pub(crate) fn open_len(&self) -> u64 {
        self.open.as_ref().map_or(0, |o| o.len)
    }

    /// Seals the open segment (if it holds positions): fsync, rename to its final name.
    pub(crate) fn seal(&mut self) -> Result<Option<SegEntry>> {
        let Some(open) = &self.open else { return Ok(None) };
        let Some(name) = segment_name(open) else { return Ok(None) };
        self.sync()?;
        self.fail("seal.before_rename")?;
        let open = self.open.take().ok_or_else(|| crate::error::missing("open segment"))?;
        let target = self.dir.join(name.file_name());
        std::fs::rename(&open.path, &target).map_err(io_error("rename", &open.path))?;
        sync_dir(&self.dir)?;
        Ok(Some(SegEntry { name, local: Some(target), remote: false, size: open.len }))
    }
}

/// The name an open segment gets when sealed (`None` when it holds no position).
fn segment_name(open: &OpenSegment) -> Option<SegName> {
    Some(span_name(open.epoch, open.index.first()?, open.index.last()?))
}

/// The name of a segment of `epoch` holding the positions `first..=last` (term set on upload).
fn span_name(epoch: u32, first: &Entry, last: &Entry) -> SegName {
    SegName {
        epoch,
        first_seq: first.seq,
        last_seq: last.seq,
        first_ts: first.ts,
        last_ts: last.ts,
        term: 0,
    }
}

/// Keeps `Kind` reachable for callers building marks.
pub(crate) fn mark_header(epoch: u32, seq: u64, ts: u64) -> Header {
    Header::new(Kind::Mark, epoch, seq, ts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key() -> HistoryKey {
        HistoryKey { id: [7; 16], key: [9; 16] }
    }

    fn commit(journal: &mut Journal, seq: u64) {
        let mut h = Header::new(Kind::Commit, 0, seq, 1_000 + seq);
        h.page_size = 512;
        h.db_pages = 1;
        let pages = BTreeMap::from([(1u32, vec![seq as u8; 512])]);
        let mark =
            record::encode_record(&mark_header(0, seq - 1, 1_000 + seq - 1), &BTreeMap::new());
        journal.append(&h, &record::encode_record(&h, &pages), Some(mark)).unwrap();
    }

    fn seqs(dir: &Path) -> (Vec<(u64, u64)>, Vec<u64>, Option<u64>) {
        let mut j = Journal::new(dir.to_path_buf(), key(), None);
        let r = j.recover().unwrap();
        let sealed = r.sealed.iter().map(|e| (e.name.first_seq, e.name.last_seq)).collect();
        let open = j.index().iter().map(|e| e.seq).collect();
        (sealed, open, r.last.map(|h| h.seq))
    }

    #[test]
    fn segments_rotated_out_for_an_upload_that_never_finished_are_sealed_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(dir.path().to_path_buf(), key(), None);
        j.recover().unwrap();
        commit(&mut j, 1);
        commit(&mut j, 2);
        let first = j.rotate().unwrap();
        assert_eq!((first.name.first_seq, first.name.last_seq), (1, 2));
        commit(&mut j, 3);
        let second = j.rotate().unwrap();
        commit(&mut j, 4);
        // The process dies with both uploads in flight: three open files.
        drop(j);
        let (sealed, open, last) = seqs(dir.path());
        assert_eq!(sealed, [(1, 2), (3, 3)], "the rotated ones are sealed");
        assert_eq!(open, [4], "the newest stays open");
        assert_eq!(last, Some(4));
        assert!(!first.local.unwrap().exists() && !second.local.unwrap().exists(), "renamed");
    }

    #[test]
    fn a_checkpoint_mark_after_a_rotation_leaves_the_rotated_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(dir.path().to_path_buf(), key(), None);
        j.recover().unwrap();
        commit(&mut j, 1);
        let rotated = j.rotate().unwrap();
        let path = rotated.local.clone().unwrap();
        let before = std::fs::read(&path).unwrap();
        // A checkpoint's mark (the head's position, 1) opens the next segment while the
        // rotated one's upload has not read it yet.
        let mark = record::encode_record(&mark_header(0, 1, 1_001), &BTreeMap::new());
        j.append(&mark_header(0, 1, 1_001), &mark, None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before, "the rotated segment is intact");
        commit(&mut j, 2);
        drop(j);
        let (sealed, open, last) = seqs(dir.path());
        assert_eq!(sealed, [(1, 1)]);
        assert_eq!(open, [2]);
        assert_eq!(last, Some(2));
    }

    #[test]
    fn a_torn_rotated_segment_ends_the_journal_and_later_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(dir.path().to_path_buf(), key(), None);
        j.recover().unwrap();
        commit(&mut j, 1);
        commit(&mut j, 2);
        let rotated = j.rotate().unwrap();
        commit(&mut j, 3);
        drop(j);
        // A power loss tore the rotated file (never synced) inside its second record.
        let path = rotated.local.unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 10).unwrap();
        let (sealed, open, last) = seqs(dir.path());
        assert_eq!(sealed, Vec::<(u64, u64)>::new());
        assert_eq!(open, [1], "cut after the last whole record; seq 3's file is gone");
        assert_eq!(last, Some(1), "capture resumes from the WAL after seq 1");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1);
    }

    #[test]
    fn a_segment_torn_while_being_created_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:08x}-{:016x}.open", 0, 5)), [0u8; 40]).unwrap();
        let (sealed, open, last) = seqs(dir.path());
        assert!(sealed.is_empty() && open.is_empty() && last.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
