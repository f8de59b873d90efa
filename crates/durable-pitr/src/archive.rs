//! The archive: segment and snapshot names, immutable retried uploads through `object_store`,
//! and the catalog of what history exists where (archive or local journal folder).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::Failpoint;
use crate::error::{ArchiveError, Error, Result, io_error};

/// A segment's name: `{epoch:08x}-{first_seq:016x}-{last_seq:016x}-{first_ts:012x}-{last_ts:012x}.seg`,
/// with `-{term:08x}` before `.seg` when it was uploaded under a lease (term 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegName {
    pub epoch: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    pub term: u32,
}

fn term_suffix(term: u32) -> String {
    if term == 0 { String::new() } else { format!("-{term:08x}") }
}

fn parse_term(t: Option<&&str>) -> Option<u32> {
    match t {
        None => Some(0),
        Some(t) => u32::try_from(hex_field(t, 8)?).ok().filter(|t| *t > 0),
    }
}

pub(crate) fn hex_field(s: &str, width: usize) -> Option<u64> {
    if s.len() != width || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

impl SegName {
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{:08x}-{:016x}-{:016x}-{:012x}-{:012x}{}.seg",
            self.epoch,
            self.first_seq,
            self.last_seq,
            self.first_ts,
            self.last_ts,
            term_suffix(self.term)
        )
    }

    /// The same positions under another term.
    pub(crate) fn with_term(self, term: u32) -> SegName {
        SegName { term, ..self }
    }

    pub(crate) fn parse(name: &str) -> Option<SegName> {
        let stem = name.strip_suffix(".seg")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let [e, f, l, ft, lt, term @ ..] = parts.as_slice() else { return None };
        if term.len() > 1 {
            return None;
        }
        let seg = SegName {
            epoch: u32::try_from(hex_field(e, 8)?).ok()?,
            first_seq: hex_field(f, 16)?,
            last_seq: hex_field(l, 16)?,
            first_ts: hex_field(ft, 12)?,
            last_ts: hex_field(lt, 12)?,
            term: parse_term(term.first())?,
        };
        (seg.first_seq <= seg.last_seq && seg.first_ts <= seg.last_ts).then_some(seg)
    }

    /// True when `self` covers every position of `other`.
    pub(crate) fn covers(&self, other: &SegName) -> bool {
        self.first_seq <= other.first_seq && other.last_seq <= self.last_seq
    }
}

/// A snapshot's name: `{epoch:08x}-{seq:016x}-{ts:012x}.snap`, with `-{term:08x}` before
/// `.snap` when it was uploaded under a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SnapName {
    pub epoch: u32,
    pub seq: u64,
    pub ts: u64,
    pub term: u32,
}

impl SnapName {
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{:08x}-{:016x}-{:012x}{}.snap",
            self.epoch,
            self.seq,
            self.ts,
            term_suffix(self.term)
        )
    }

    pub(crate) fn parse(name: &str) -> Option<SnapName> {
        let stem = name.strip_suffix(".snap")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let [e, s, t, term @ ..] = parts.as_slice() else { return None };
        if term.len() > 1 {
            return None;
        }
        Some(SnapName {
            epoch: u32::try_from(hex_field(e, 8)?).ok()?,
            seq: hex_field(s, 16)?,
            ts: hex_field(t, 12)?,
            term: parse_term(term.first())?,
        })
    }
}

/// Where a segment's bytes are.
#[derive(Debug, Clone)]
pub(crate) struct SegEntry {
    pub name: SegName,
    /// A sealed copy in the local journal folder, not yet uploaded (or not yet deleted).
    pub local: Option<PathBuf>,
    /// Present in the archive.
    pub remote: bool,
    /// Size in bytes.
    pub size: u64,
}

/// Everything known to exist: sealed segments (local or archived) and snapshots.
#[derive(Debug, Default, Clone)]
pub(crate) struct Catalog {
    pub segments: Vec<SegEntry>,
    pub snapshots: Vec<SnapName>,
    /// Archive keys (`seg/..`, `snap/..`) of history a later lease term superseded: a
    /// fenced writer's late uploads. Readers ignore them; retention deletes them.
    pub superseded: Vec<String>,
    /// Segments held in memory rather than in the archive or a local file: history a
    /// reader found only in a shared log (`log.rs`).
    pub held: std::collections::BTreeMap<SegName, Arc<Vec<u8>>>,
    /// The keys of `superseded` that begin before the start of the later term and end
    /// after it: positions below that start are left out with them (a broken chain, not a
    /// late upload). `ArchiveReader::check` reports them.
    pub straddling: Vec<String>,
}

impl Catalog {
    pub(crate) fn sort(&mut self) {
        self.segments.sort_by(|a, b| {
            a.name.first_seq.cmp(&b.name.first_seq).then(b.name.last_seq.cmp(&a.name.last_seq))
        });
        self.snapshots.sort();
        self.snapshots.dedup();
    }

    pub(crate) fn add_segment(&mut self, entry: SegEntry) {
        let positions = entry.name.with_term(0);
        if let Some(e) = self.segments.iter_mut().find(|e| e.name.with_term(0) == positions) {
            e.remote |= entry.remote;
            if entry.local.is_some() {
                e.local = entry.local;
            }
        } else {
            self.segments.push(entry);
        }
        self.sort();
    }

    /// The segments that cover history without overlap: a segment covered by another (the
    /// inputs of a merge whose deletion did not finish) is left out.
    pub(crate) fn chain(&self) -> Vec<&SegEntry> {
        let mut out: Vec<&SegEntry> = Vec::new();
        for e in &self.segments {
            if let Some(last) = out.last()
                && last.name.covers(&e.name)
            {
                continue;
            }
            out.push(e);
        }
        out
    }

    /// Segments covered by another one (safe to delete).
    pub(crate) fn covered(&self) -> Vec<SegEntry> {
        self.segments
            .iter()
            .filter(|e| {
                self.segments.iter().any(|o| {
                    // The same positions under two terms (a retried upload after a
                    // takeover): the older copy is the covered one.
                    let same = o.name.with_term(0) == e.name.with_term(0);
                    o.name.covers(&e.name) && (!same || o.name.term > e.name.term)
                })
            })
            .cloned()
            .collect()
    }

    /// The last position the sealed segments hold.
    pub(crate) fn last(&self) -> Option<SegName> {
        self.segments.iter().map(|e| e.name).max_by_key(|n| n.last_seq)
    }

    /// The newest position the segments and snapshots hold (`None`: they hold none).
    pub(crate) fn newest_seq(&self) -> Option<u64> {
        let segments = self.segments.iter().map(|e| e.name.last_seq);
        segments.chain(self.snapshots.iter().map(|s| s.seq)).max()
    }
}

/// An object store with a prefix, retries and failpoints.
#[derive(Clone)]
pub(crate) struct Archive {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub attempts: u32,
    pub failpoint: Option<Failpoint>,
    /// The lease term this archiver writes under (0: no leases). Every upload of history
    /// is followed by a fencing check, and every delete preceded by one.
    pub term: u32,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

pub(crate) fn store_error(
    action: &'static str,
    key: &StorePath,
) -> impl FnOnce(object_store::Error) -> Error {
    let key = key.to_string();
    move |source| Error::Archive(ArchiveError::Store { action, key, source })
}

impl Archive {
    /// The archive `config` describes, read-only (no failpoints, no lease term).
    pub(crate) fn reading(config: &crate::ArchiveConfig) -> Archive {
        Archive {
            store: config.store.clone(),
            prefix: config.prefix.clone(),
            attempts: config.attempts.max(1),
            failpoint: None,
            term: 0,
        }
    }

    pub(crate) fn key(&self, rest: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(rest)
        } else {
            StorePath::from(format!("{}/{rest}", self.prefix.trim_end_matches('/')))
        }
    }

    pub(crate) fn fail(&self, point: &'static str) -> Result<()> {
        if let Some(f) = &self.failpoint
            && f(point)
        {
            return Err(Error::Archive(ArchiveError::Injected(point)));
        }
        Ok(())
    }

    /// Uploads `bytes` to `rest` if no object is there yet. An object already there with the
    /// same bytes counts as done (a retry after a crash); other bytes are a conflict. Then
    /// fails with `Fenced` if a later lease term was claimed meanwhile.
    pub(crate) async fn put_immutable(&self, rest: &str, bytes: Vec<u8>) -> Result<()> {
        let landed = self.put_immutable_unfenced(rest, bytes).await?;
        self.fence().await?;
        if landed { self.fail("upload.after_put") } else { Ok(()) }
    }

    /// [`put_immutable`](Archive::put_immutable) without the fence check: for a writer
    /// that checks once after several uploads. Returns whether this call wrote it (`false`:
    /// the same bytes were there).
    pub(crate) async fn put_immutable_unfenced(&self, rest: &str, bytes: Vec<u8>) -> Result<bool> {
        let key = self.key(rest);
        let payload = PutPayload::from(bytes.clone());
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.fail("upload.before_put")?;
            let outcome =
                self.store.put_opts(&key, payload.clone(), PutOptions::from(PutMode::Create)).await;
            match outcome {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let existing = self.get(rest).await?;
                    return match existing {
                        Some(b) if b == bytes => Ok(false),
                        _ => Err(Error::Archive(ArchiveError::Conflict { key: key.to_string() })),
                    };
                }
                Err(e) if attempt < self.attempts => {
                    tracing::warn!(key = %key, attempt, error = %e, "archive upload failed, retrying");
                    backoff(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(store_error("put", &key)(e)),
            }
        }
    }

    /// The bytes of `rest`, or `None` when it does not exist.
    pub(crate) async fn get(&self, rest: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rest);
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.store.get(&key).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts => {
                    tracing::warn!(key = %key, attempt, error = %e, "archive read failed, retrying");
                    backoff(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(store_error("get", &key)(e)),
            }
        }
    }

    /// Fails with `Fenced` when a later lease term has been claimed (never without leases).
    pub(crate) async fn fence(&self) -> Result<()> {
        if self.term == 0 {
            return Ok(());
        }
        crate::lease::check_fence(self, self.term).await
    }

    /// Deletes `rest` (absent is fine), unless this writer has been fenced.
    pub(crate) async fn delete(&self, rest: &str) -> Result<()> {
        self.fence().await?;
        let key = self.key(rest);
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("delete", &key)(e)),
        }
    }

    /// Names (the part after `{prefix}/{dir}/`) of the objects under `dir`, sorted.
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let key = self.key(dir);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&key)).try_collect().await.map_err(store_error("list", &key))?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| m.location.filename().map(|n| (n.to_owned(), m.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads what the archive holds: history of each lease term up to where a later term
    /// began (the rest is `superseded`).
    pub(crate) async fn catalog(&self) -> Result<Catalog> {
        let leases = crate::lease::read_leases(self).await?;
        let mut catalog = Catalog::default();
        for (name, size) in self.list("seg").await? {
            match SegName::parse(&name) {
                // A segment reaching past the start of a later term is superseded whole: a
                // taker's `from` is past everything uploaded before it claimed, so only a
                // fenced writer's late uploads start (and end) there.
                Some(n) if n.last_seq >= leases.limit(n.term) => {
                    if n.first_seq < leases.limit(n.term) {
                        tracing::error!(
                            name,
                            "a segment straddles the start of a later lease term"
                        );
                        catalog.straddling.push(format!("seg/{name}"));
                    }
                    catalog.superseded.push(format!("seg/{name}"));
                }
                Some(n) => {
                    catalog.segments.push(SegEntry { name: n, local: None, remote: true, size })
                }
                None => tracing::warn!(name, "ignoring a foreign object in the archive's seg/"),
            }
        }
        for (name, _) in self.list("snap").await? {
            match SnapName::parse(&name) {
                Some(n) if n.seq >= leases.limit(n.term) => {
                    catalog.superseded.push(format!("snap/{name}"));
                }
                Some(n) => catalog.snapshots.push(n),
                None => tracing::warn!(name, "ignoring a foreign object in the archive's snap/"),
            }
        }
        catalog.sort();
        Ok(catalog)
    }
}

/// Waits `delay` before a retry, on the tokio timer: archive work runs inside a tokio
/// runtime with its time driver (object stores such as S3's need one anyway).
async fn backoff(delay: Duration) {
    tokio::time::sleep(delay).await;
}

/// Reads a local file whole.
pub(crate) fn read_local(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_error("read", path))
}
