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
}

/// The journal folder and its open segment.
pub(crate) struct Journal {
    dir: PathBuf,
    history: HistoryKey,
    open: Option<OpenSegment>,
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
        Journal { dir, history, open: None, failpoint }
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
        sealed.sort_by_key(|e| (e.name.first_seq, std::cmp::Reverse(e.name.last_seq)));
        open_files.sort();
        let mut last = None;
        if let Some(e) = sealed.last()
            && let Some(path) = &e.local
        {
            let bytes = std::fs::read(path).map_err(io_error("read", path))?;
            let records =
                record::decode_segment(&bytes, &self.history, &path.display().to_string())?;
            last = records.last().map(|r| r.header);
        }
        // At most one open segment exists; an older one would come from a crash between
        // creating a new segment and sealing the previous, which the order of sealing forbids.
        if open_files.len() > 1 {
            return Err(crate::error::corrupt(
                self.dir.display().to_string(),
                format!("{} open journal segments", open_files.len()),
            ));
        }
        if let Some(path) = open_files.pop() {
            let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
            let what = path.display().to_string();
            if bytes.len() < record::SEGMENT_HEADER {
                // Torn while being created: it holds nothing.
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            } else {
                let mut at = record::check_segment_header(&bytes, &self.history, &what)?;
                let mut index = Vec::new();
                let mut epoch = None;
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
                let file =
                    OpenOptions::new().append(true).open(&path).map_err(io_error("open", &path))?;
                if at < bytes.len() {
                    tracing::warn!(path = %what, at, len = bytes.len(), "cutting a torn journal tail");
                    file.set_len(at as u64).map_err(io_error("truncate", &path))?;
                    file.sync_all().map_err(io_error("sync", &path))?;
                }
                let epoch = epoch.or(last.map(|h| h.epoch)).unwrap_or(0);
                self.open = Some(OpenSegment {
                    file,
                    path,
                    epoch,
                    len: at as u64,
                    synced_len: at as u64,
                    index,
                });
            }
        }
        Ok(Recovered { last, sealed })
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
            let name = format!("{:08x}-{:016x}.open", header.epoch, header.seq);
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
            file.sync_all().map_err(io_error("sync", &path))?;
            sync_dir(&self.dir)?;
            let len = head.len() as u64;
            self.open = Some(OpenSegment {
                file,
                path,
                epoch: header.epoch,
                len,
                synced_len: len,
                index: Vec::new(),
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

    /// Makes everything appended durable. Under group commit the archiver syncs the WAL
    /// first (`Inner::sync_journal`), so the journal never holds, durably, a commit the
    /// database could still lose.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Some(open) = &mut self.open
            && open.synced_len < open.len
        {
            if let Some(f) = &self.failpoint
                && f("journal.before_sync")
            {
                return Err(Error::Archive(ArchiveError::Injected("journal.before_sync")));
            }
            open.file.sync_data().map_err(io_error("sync", &open.path))?;
            open.synced_len = open.len;
        }
        Ok(())
    }

    /// The positions of the open segment.
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
        let (Some(first), Some(last)) = (open.index.first(), open.index.last()) else {
            return Ok(None);
        };
        let name = SegName {
            epoch: open.epoch,
            first_seq: first.seq,
            last_seq: last.seq,
            first_ts: first.ts,
            last_ts: last.ts,
        };
        self.sync()?;
        self.fail("seal.before_rename")?;
        let open = self.open.take().ok_or_else(|| crate::error::missing("open segment"))?;
        let target = self.dir.join(name.file_name());
        std::fs::rename(&open.path, &target).map_err(io_error("rename", &open.path))?;
        sync_dir(&self.dir)?;
        Ok(Some(SegEntry { name, local: Some(target), remote: false, size: open.len }))
    }
}

/// Keeps `Kind` reachable for callers building marks.
pub(crate) fn mark_header(epoch: u32, seq: u64, ts: u64) -> Header {
    Header::new(Kind::Mark, epoch, seq, ts)
}
