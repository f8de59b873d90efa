//! Opening an object under the archiver: its lock, journal recovery, adopting commits that
//! reached the WAL but not the journal, rebuilding a missing database from the archive,
//! applying a pending restore atomically, and the history's identity (`meta`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use durable_sql::{CheckpointMode, Database, Options};

use super::capture::Capture;
use super::rebuild::materialize;
use super::{
    Archiver, Head, Inner, Paths, full_image_pages, random_bytes, read_db_file, remove_if_exists,
    write_atomic,
};
use crate::archive::{Archive, Catalog};
use crate::bookmark::HistoryKey;
use crate::config::ArchiveConfig;
use crate::error::{ArchiveError, Error, Result, corrupt, io_error, missing};
use crate::journal::{Journal, sync_dir};
use crate::record::{self, Header, Kind, Pending};
use crate::wal::{self, WalPos};

/// Opens the database briefly, checkpoints its WAL into the file, and reads the file.
fn checkpointed_image(path: &Path, options: &Options) -> Result<(u32, Vec<u8>)> {
    let db = Database::open(path, options.clone())?;
    let (log, done) = db.internal(|i| i.checkpoint(CheckpointMode::Truncate))?;
    if log != done {
        return Err(corrupt(path.display().to_string(), "could not checkpoint the WAL"));
    }
    drop(db);
    read_db_file(path)
}
impl Archiver {
    /// Opens the object's database at `path` under the archiver.
    ///
    /// In order: takes the object's lock (`<path>-pitr/LOCK`); recovers the journal (a torn
    /// tail is cut off); adopts commits that reached the WAL but not the journal; rebuilds
    /// the database from the archive when the file is missing (a new machine); applies a
    /// pending restore atomically (see [`on_next_session_restore_bookmark`]); opens the
    /// database with automatic checkpoints off (only the archiver checkpoints, after capturing)
    /// and subscribes to its commit pipeline: from then on every commit the pipeline reports
    /// durable is captured, under either [`Durability`](durable_sql::Durability).
    ///
    /// [`on_next_session_restore_bookmark`]: Archiver::on_next_session_restore_bookmark
    pub async fn open(
        path: impl AsRef<Path>,
        options: Options,
        config: ArchiveConfig,
    ) -> Result<(Database, Archiver)> {
        let paths = Paths::new(path.as_ref());
        let mut options = options;
        options.auto_checkpoint = false;
        std::fs::create_dir_all(&paths.dir).map_err(io_error("create", &paths.dir))?;
        let lock_path = paths.dir.join("LOCK");
        let lock_file = durable_sql::files::try_lock(&lock_path)
            .map_err(io_error("lock", &lock_path))?
            .ok_or_else(|| {
                Error::Archive(ArchiveError::Locked { path: lock_path.display().to_string() })
            })?;
        let mut archive = Archive {
            store: config.store.clone(),
            prefix: config.prefix.clone(),
            attempts: config.attempts.max(1),
            failpoint: config.failpoint.clone(),
            term: 0,
        };
        let history = load_meta(&paths, &archive, &config).await?;
        // Under leases: take the next term before reading the archive (a taker claims first
        // and lists after, so nothing a fenced writer uploaded in time escapes it).
        let mut logged = Vec::new();
        if let Some(node) = &config.node {
            let (term, previous, leases) = node.acquire(&archive).await?;
            archive.term = term;
            take_over_locally(&paths, term, previous)?;
            // Commits the previous holders confirmed through their shared logs but did not
            // upload as segments: they become segments of their terms now, before this
            // term's `from` marker says where its history starts.
            if previous > 0 {
                let catalog = archive.catalog().await?;
                let after = catalog.newest_seq();
                logged = crate::log::logged_segments(
                    &archive,
                    &leases,
                    previous,
                    after,
                    Some(node.slot_cache()),
                )
                .await?;
                tracing::debug!(
                    object = %archive.prefix,
                    term,
                    previous,
                    ?after,
                    logged = ?logged.iter().map(|(n, _)| n.file_name()).collect::<Vec<_>>(),
                    "taking over"
                );
                // One after another, in history order: a taker that stops part way leaves
                // no gap (the next one reads the log from the newest segment on). The
                // fence is checked once after them: these are the old term's confirmed
                // commits, which a later taker would upload too, the same bytes.
                for (name, bytes) in &logged {
                    archive
                        .put_immutable_unfenced(&format!("seg/{}", name.file_name()), bytes.clone())
                        .await?;
                }
                if !logged.is_empty() {
                    archive.fence().await?;
                }
            }
        }
        let mut journal =
            Journal::new(paths.dir.join("journal"), history, config.failpoint.clone());
        let mut recovered = journal.recover()?;
        let mut catalog = archive.catalog().await?;
        // The archive holds positions the journal does not: the journal lost writes nothing
        // had synced (a power loss; the WAL, synced before anything is uploaded, kept its
        // commits). Uploads go oldest first, so every record the journal still has is
        // archived too: the history goes on from the archive's last record. Capturing the
        // missing commits from the WAL again would stamp positions the archive already holds
        // with new times, and the bookmarks issued for them would no longer resolve.
        if let (Some(local), Some(archived)) = (&recovered.last, catalog.newest_seq())
            && local.seq < archived
        {
            tracing::warn!(
                db = %paths.db.display(),
                journal = local.seq,
                archived,
                "the journal is behind the archive (a power loss?): going on from the archive's history"
            );
            journal.discard()?;
            recovered = crate::journal::Recovered { last: None, sealed: Vec::new() };
        }
        if !logged.is_empty() {
            tracing::info!(
                db = %paths.db.display(),
                segments = logged.len(),
                "took over history its previous holder had only in its shared log"
            );
        }
        if archive.term > 0 {
            // Where this term's history starts: history of earlier terms from here on is a
            // fenced writer's, superseded.
            let from = catalog
                .segments
                .iter()
                .map(|e| e.name.last_seq + 1)
                .chain(catalog.snapshots.iter().map(|s| s.seq + 1))
                .max()
                .unwrap_or(0);
            crate::lease::mark(&archive, &format!("lease/{:08x}.from-{from:016x}", archive.term))
                .await?;
            tracing::debug!(object = %archive.prefix, term = archive.term, from, "history starts");
        }
        for s in recovered.sealed {
            catalog.add_segment(s);
        }
        let last = match recovered.last {
            Some(h) => Some(h),
            None => last_archived_record(&archive, &history, &catalog).await?,
        };
        let head = match &last {
            Some(h) => Head {
                epoch: h.epoch,
                seq: h.seq,
                ts: h.ts_ms,
                wal: h.wal,
                db_bytes: h.db_pages as u64 * h.page_size as u64,
            },
            None => Head { epoch: 0, seq: 0, ts: 0, wal: WalPos::fresh(), db_bytes: 0 },
        };
        let mut inner = Inner {
            config,
            archive,
            history,
            paths: paths.clone(),
            journal,
            catalog,
            head,
            poisoned: None,
            upload_error: None,
            head_tx: tokio::sync::watch::Sender::new(0),
            replica: std::collections::VecDeque::new(),
            replicated_tx: tokio::sync::watch::Sender::new(0),
            fenced: false,
            uploaded_hint: 0,
            logged_seq: 0,
            log_from: None,
            // Unless every COMMIT syncs, the journal syncs the WAL before itself.
            wal_reader: wal::WalReader::new(
                paths.wal.clone(),
                options.durability != durable_sql::Durability::Full,
            ),
            durable_head: 0,
            _lock: lock_file,
        };
        let pending = match std::fs::read(&paths.pending) {
            Ok(bytes) => {
                Some(record::decode_pending(&bytes, &paths.pending.display().to_string())?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("read", &paths.pending)(e)),
        };
        let finishing = match (&pending, &last) {
            (Some(p), Some(h)) => h.kind == Kind::EpochStart && h.request_id == p.request_id,
            _ => false,
        };
        if !finishing {
            let db_exists = paths.db.exists();
            if last.is_none() {
                let (page_size, data) = checkpointed_image(&paths.db, &options)?;
                inner.append_image(Kind::Init, page_size, &data)?;
            } else if db_exists {
                if inner.capture_wal(true)? {
                    tracing::warn!(db = %paths.db.display(), "WAL discontinuity: recording a full image");
                    let (page_size, data) = checkpointed_image(&paths.db, &options)?;
                    inner.append_image(Kind::Discontinuity, page_size, &data)?;
                } else if inner.without_base() {
                    // History whose start is in no archive this archiver can reach (the
                    // archive location changed): a full image makes it whole from here on.
                    tracing::warn!(db = %paths.db.display(), "history has no base in this archive: recording a full image");
                    let (page_size, data) = checkpointed_image(&paths.db, &options)?;
                    inner.append_image(Kind::Discontinuity, page_size, &data)?;
                }
            } else {
                // A new machine (or a lost file): the latest archived state.
                let image = materialize(&inner.sources(), inner.head.seq, None).await?;
                remove_if_exists(&paths.wal)?;
                remove_if_exists(&paths.shm)?;
                write_atomic(&paths.db, &image.data)?;
                inner.head.wal = WalPos::fresh();
                let (h, bytes) = inner.mark_bytes(0);
                inner.journal.append(&h, &bytes, None)?;
            }
            inner.sync_journal()?;
            if let Some(p) = &pending {
                prepare_restore(&mut inner, p).await?;
            }
        }
        if pending.is_some() {
            finish_restore(&mut inner).await?;
        }
        inner.sync_journal()?;
        inner.uploaded_hint = inner.uploaded_seq();
        let db = Database::open(&paths.db, options)?;
        let inner = Arc::new(Mutex::new(inner));
        let subscription = db.subscribe(Arc::new(Capture(inner.clone())));
        let upload_lock = tokio::sync::Mutex::new(());
        let log_lock = tokio::sync::Mutex::new(());
        Ok((db.clone(), Archiver { inner, upload_lock, log_lock, db, subscription }))
    }
}

/// Restore step 4: rebuild the target, then commit to it with an EPOCH_START record.
async fn prepare_restore(inner: &mut Inner, pending: &Pending) -> Result<()> {
    let (target, check) = inner.resolve(&pending.bookmark, false)?;
    let image = materialize(&inner.sources(), target, check).await?;
    inner.fail("restore.before_image")?;
    write_atomic(&inner.paths.image, &image.data)?;
    inner.fail("restore.after_image")?;
    let prev_last = inner.head.seq;
    let mut h = Header::new(Kind::EpochStart, inner.head.epoch + 1, prev_last + 1, inner.next_ts());
    h.page_size = image.page_size;
    h.db_pages =
        if image.page_size == 0 { 0 } else { (image.data.len() / image.page_size as usize) as u32 };
    h.restored_seq = target;
    h.prev_last_seq = prev_last;
    h.request_id = pending.request_id;
    h.wal = WalPos::fresh();
    inner.append(&h, &full_image_pages(image.page_size, &image.data))?;
    inner.sync_journal()?;
    inner.fail("restore.after_epoch_start")
}

/// Restore step 6 (idempotent): replace the database file with the restored image.
async fn finish_restore(inner: &mut Inner) -> Result<()> {
    let paths = inner.paths.clone();
    remove_if_exists(&paths.wal)?;
    remove_if_exists(&paths.shm)?;
    inner.fail("restore.after_remove_wal")?;
    let data = match std::fs::read(&paths.image) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            materialize(&inner.sources(), inner.head.seq, None).await?.data
        }
        Err(e) => return Err(io_error("read", &paths.image)(e)),
    };
    write_atomic(&paths.db, &data)?;
    inner.fail("restore.after_swap")?;
    remove_if_exists(&paths.image)?;
    remove_if_exists(&paths.pending)?;
    sync_dir(&paths.dir)?;
    inner.head.wal = WalPos::fresh();
    Ok(())
}

/// After taking lease `term`: unless this folder held the term before it (`previous`, 0 for
/// none), another node has written the object since, so the local copy is stale and goes;
/// the object opens from the archive. Then records `term` as this folder's.
fn take_over_locally(paths: &Paths, term: u32, previous: u32) -> Result<()> {
    let term_file = paths.dir.join("term");
    let local_term = match std::fs::read_to_string(&term_file) {
        Ok(s) => s.trim().parse::<u32>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", &term_file)(e)),
    };
    let journal = paths.dir.join("journal");
    let journal_files = match std::fs::read_dir(&journal) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("read", &journal)(e)),
    };
    let local_state = paths.db.exists() || !journal_files.is_empty();
    if previous > 0 && local_term != Some(previous) && local_state {
        tracing::warn!(
            db = %paths.db.display(),
            local_term,
            previous,
            "another node wrote this object since this folder held it: discarding the local copy, opening from the archive"
        );
        for path in [&paths.db, &paths.wal, &paths.shm, &paths.pending, &paths.image] {
            remove_if_exists(path)?;
        }
        for path in &journal_files {
            remove_if_exists(path)?;
        }
        sync_dir(&paths.dir)?;
    }
    write_atomic(&term_file, term.to_string().as_bytes())
}

/// The history's identity: the local copy, else the archive's, else a new one.
async fn load_meta(paths: &Paths, archive: &Archive, config: &ArchiveConfig) -> Result<HistoryKey> {
    let what = paths.meta.display().to_string();
    let remote = archive.get("meta").await?;
    let local = match std::fs::read(&paths.meta) {
        Ok(b) => Some(record::decode_meta(&b, &what)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", &paths.meta)(e)),
    };
    let remote_key = match &remote {
        Some(b) => Some(record::decode_meta(b, "archive meta")?),
        None => None,
    };
    let key = match (local, remote_key) {
        (Some(l), Some(r)) if l != r => {
            return Err(Error::Archive(ArchiveError::OtherHistory { what: "the archive".into() }));
        }
        (Some(l), _) => l,
        (None, Some(r)) => r,
        (None, None) => HistoryKey { id: random_bytes()?, key: random_bytes()? },
    };
    let bytes = record::encode_meta(&key, config.clock.now_ms());
    if !paths.meta.exists() {
        write_atomic(&paths.meta, &bytes)?;
    }
    if remote.is_none() {
        match archive.put_immutable("meta", bytes).await {
            Ok(()) => {}
            // Another meta got there first (same key, other creation time): compare keys.
            Err(Error::Archive(ArchiveError::Conflict { .. })) => {
                let got = archive.get("meta").await?.ok_or_else(|| missing("archive meta"))?;
                if record::decode_meta(&got, "archive meta")? != key {
                    return Err(Error::Archive(ArchiveError::OtherHistory {
                        what: "the archive".into(),
                    }));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(key)
}

/// The last record of the newest archived segment (when the local journal is empty).
async fn last_archived_record(
    archive: &Archive,
    history: &HistoryKey,
    catalog: &Catalog,
) -> Result<Option<Header>> {
    let Some(last) = catalog.last() else { return Ok(None) };
    let what = last.file_name();
    let bytes = archive.get(&format!("seg/{what}")).await?.ok_or_else(|| missing(what.clone()))?;
    let records = record::decode_segment(&bytes, history, &what)?;
    Ok(records.last().map(|r| r.header))
}

#[cfg(test)]
mod tests {
    use durable_sql::Options;

    use super::*;
    use durable_sql::testing::ManualClock;

    fn config(store: Arc<dyn object_store::ObjectStore>) -> ArchiveConfig {
        ArchiveConfig::new(store, "o").with_clock(Arc::new(ManualClock::new(1_700_000_000_000)))
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn one_archiver_per_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let first = block_on(Archiver::open(&path, Options::default(), config(store.clone())));
        let (_db, _archiver) = first.unwrap();
        let second = block_on(Archiver::open(&path, Options::default(), config(store)));
        let err = second.unwrap_err();
        assert!(matches!(err, Error::Archive(ArchiveError::Locked { .. })), "{err:?}");
    }

    #[test]
    fn a_folder_of_another_history_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let first: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        drop(block_on(Archiver::open(&path, Options::default(), config(first))).unwrap());
        // The same database file and journal, pointed at an archive that holds another
        // object's history: refused, not mixed.
        let other_dir = tempfile::tempdir().unwrap();
        let other_store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        drop(
            block_on(Archiver::open(
                other_dir.path().join("o.sqlite"),
                Options::default(),
                config(other_store.clone()),
            ))
            .unwrap(),
        );
        let err =
            block_on(Archiver::open(&path, Options::default(), config(other_store))).unwrap_err();
        assert!(matches!(err, Error::Archive(ArchiveError::OtherHistory { .. })), "{err:?}");
    }

    #[test]
    fn a_database_rebuilt_from_the_archive_alone_has_every_archived_commit() {
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let (db, archiver) =
            block_on(Archiver::open(&path, Options::default(), config(store.clone()))).unwrap();
        db.exec("CREATE TABLE t(x)", &[]).unwrap();
        db.exec("INSERT INTO t VALUES (42)", &[]).unwrap();
        db.commit().unwrap();
        block_on(archiver.close()).unwrap();
        drop(db);
        // A new machine: an empty folder, the same archive.
        let fresh = tempfile::tempdir().unwrap();
        let (db, _archiver) = block_on(Archiver::open(
            fresh.path().join("o.sqlite"),
            Options::default(),
            config(store),
        ))
        .unwrap();
        let x: i64 = db
            .exec("SELECT x FROM t", &[])
            .unwrap()
            .one::<durable_sql::Row>()
            .unwrap()
            .get("x")
            .unwrap();
        assert_eq!(x, 42);
    }
}
