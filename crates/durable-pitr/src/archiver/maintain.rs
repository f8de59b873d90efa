//! Archive maintenance: uploading sealed segments, compaction (snapshots and merges of old
//! segments) and retention. Each step plans under the archiver's lock, works on the object
//! store without it, and records the outcome under it again (the lock discipline in
//! `mod.rs`).

use super::rebuild::materialize;
use super::{Archiver, now_ts, remove_if_exists};
use crate::archive::{SegEntry, SegName, SnapName, read_local};
use crate::config::ArchiveConfig;
use crate::error::{Result, missing};
use crate::record::{self, SnapshotHeader};

/// The groups of archived segments to merge: old enough (older than `merge_after`), of one
/// epoch, contiguous, within one `merge_span` period and at most `merge_max_bytes` together.
/// Only groups of two or more are returned.
fn merge_groups(archived: &[&SegEntry], cfg: &ArchiveConfig, now: u64) -> Vec<Vec<SegEntry>> {
    let merge_before = now.saturating_sub(cfg.merge_after.as_millis() as u64);
    let span = (cfg.merge_span.as_millis() as u64).max(1);
    let mut groups: Vec<Vec<SegEntry>> = Vec::new();
    for e in archived.iter().filter(|e| e.name.last_ts < merge_before) {
        let fits = groups.last().is_some_and(|g: &Vec<SegEntry>| {
            let last = g[g.len() - 1].name;
            g[0].name.first_ts / span == e.name.last_ts / span
                && last.epoch == e.name.epoch
                && last.last_seq + 1 == e.name.first_seq
                && g.iter().map(|x| x.size).sum::<u64>() + e.size <= cfg.merge_max_bytes
        });
        match groups.last_mut() {
            Some(g) if fits => g.push((*e).clone()),
            _ => groups.push(vec![(*e).clone()]),
        }
    }
    groups.retain(|g| g.len() > 1);
    groups
}

/// The snapshot retention keeps as the oldest: the newest one taken at or before `cutoff`
/// (ms), and never one past a pending restore's target `pin`. Everything older goes.
fn retention_anchor(snapshots: &[SnapName], cutoff: i64, pin: Option<u64>) -> Option<SnapName> {
    snapshots
        .iter()
        .filter(|s| (s.ts as i64) <= cutoff && pin.is_none_or(|p| s.seq <= p))
        .max_by_key(|s| s.seq)
        .copied()
}

impl Archiver {
    /// Uploads sealed segments to the archive (immutable, retried), deleting each local copy
    /// once it is archived; the open segment is sealed first when it is due (16 MiB, 10 s).
    /// Returns how many were uploaded.
    pub async fn upload(&self) -> Result<usize> {
        let _one_at_a_time = self.upload_lock.lock().await;
        self.capture()?;
        {
            let mut inner = self.lock();
            inner.check_poisoned()?;
            let r = inner.seal_if_due();
            inner.poison(r)?;
        }
        self.upload_locals().await
    }

    /// Puts every position captured so far into the archive store by the quickest way:
    /// under a lease, as a delta in the node's shared log (one upload for the new commits
    /// of every object of the node, see [`crate::Node`]); otherwise by
    /// [`flush`](Archiver::flush). Returns true when something was added.
    ///
    /// A delta is not yet part of the object's own segments: keep calling `flush` at the
    /// archive lag's pace (it uploads them, and lets the log delete its batches). What
    /// this confirms is reported by [`watch_replicated`](Archiver::watch_replicated) and
    /// [`Status::replicated_seq`](super::Status::replicated_seq).
    pub async fn replicate(&self) -> Result<bool> {
        let node = {
            let inner = self.lock();
            inner.config.node.clone().filter(|n| {
                inner.archive.term > 0 && crate::log::root_of(&inner.archive.prefix) == n.root()
            })
        };
        let Some(node) = node else { return Ok(self.flush().await? > 0) };
        let _one_at_a_time = self.log_lock.lock().await;
        let taken = {
            let mut inner = self.lock();
            inner.check_poisoned()?;
            // Positions sealed out of the open segment (at open, or by its age or size
            // limit) before they reached the log: those go up as segments, with everything
            // else, so that the log only ever continues the object's segments.
            let (from, logged) = (inner.log_from, inner.logged_seq);
            let unlogged = |e: &crate::archive::SegEntry| {
                e.local.is_some()
                    && !e.remote
                    && (from.is_none_or(|f| e.name.first_seq < f) || e.name.last_seq > logged)
            };
            if inner.catalog.segments.iter().any(unlogged) {
                None
            } else {
                let r = inner.wal_durable();
                inner.poison(r)?;
                let delta = inner.journal.delta();
                let Some(delta) = inner.poison(delta)? else { return Ok(false) };
                Some((delta, inner.archive.clone()))
            }
        };
        let Some((delta, archive)) = taken else { return Ok(self.flush().await? > 0) };
        let shared = crate::log::Delta {
            object: archive.prefix.clone(),
            name: delta.name.with_term(archive.term),
            bytes: delta.bytes.clone(),
        };
        let (log, place) = node.log();
        let outcome = match archive.fail("upload.before_put") {
            Ok(()) => log.append(&place, shared).await,
            Err(e) => Err(e),
        };
        let mut inner = self.lock();
        match outcome {
            Ok(()) => {
                inner.journal.delta_logged(&delta);
                inner.logged_seq = inner.logged_seq.max(delta.name.last_seq);
                inner.log_from.get_or_insert(delta.name.first_seq);
                inner.upload_error = None;
                inner.publish_replicated();
                Ok(true)
            }
            Err(error) => {
                inner.upload_error = Some(error.to_string());
                drop(inner);
                self.after_failure(&error);
                Err(error)
            }
        }
    }

    /// After an upload of the object's own segments: the shared log may let go of the
    /// batches they cover.
    fn log_covered(&self) {
        let (node, prefix, uploaded) = {
            let inner = self.lock();
            let Some(node) = inner.config.node.clone() else { return };
            (node, inner.archive.prefix.clone(), inner.uploaded_hint)
        };
        let (log, place) = node.log();
        log.covered(&place, &prefix, uploaded);
    }

    /// Uploads every position captured so far (the journal's open segment too, whatever
    /// its age): continuous archiving calls this within its lag bound, so that one upload
    /// carries every commit captured since the previous one. Returns how many segments were
    /// uploaded.
    ///
    /// The open segment is *rotated* out rather than sealed: no fsync and no rename; after
    /// a successful upload its file is simply deleted, and after a failed one it is sealed
    /// (synced and renamed) for a later attempt. The WAL is synced first, so nothing reaches
    /// the archive that the database could still lose.
    pub async fn flush(&self) -> Result<usize> {
        let _one_at_a_time = self.upload_lock.lock().await;
        let mut count = self.upload_locals().await?;
        let (rotated, archive) = {
            let mut inner = self.lock();
            inner.check_poisoned()?;
            let r = inner.wal_durable();
            inner.poison(r)?;
            let Some(entry) = inner.journal.rotate() else { return Ok(count) };
            inner.catalog.add_segment(entry.clone());
            (entry, inner.archive.clone())
        };
        let uploaded = rotated.name.with_term(archive.term);
        let outcome = async {
            let bytes = read_local(rotated.local.as_deref().unwrap_or(std::path::Path::new("")))?;
            archive.put_immutable(&format!("seg/{}", uploaded.file_name()), bytes).await?;
            archive.fail("upload.before_local_delete")
        }
        .await;
        let mut inner = self.lock();
        match outcome {
            Ok(()) => {
                let r = inner.journal.rotated_uploaded(&rotated);
                inner.poison(r)?;
                if let Some(e) = inner.catalog.segments.iter_mut().find(|e| e.name == rotated.name)
                {
                    e.name = uploaded;
                    e.local = None;
                    e.remote = true;
                }
                inner.upload_error = None;
                inner.publish_replicated();
                drop(inner);
                self.log_covered();
                count += 1;
                Ok(count)
            }
            Err(error) => {
                let fenced = inner.fenced(&error);
                inner.upload_error = Some(error.to_string());
                let sealed = inner.journal.seal_rotated(&rotated);
                let kept = inner.poison(sealed).map(|sealed| {
                    inner.catalog.segments.retain(|e| e.name != rotated.name);
                    inner.catalog.add_segment(sealed);
                });
                drop(inner);
                if fenced {
                    self.stop_durability(&error);
                }
                kept?;
                Err(error)
            }
        }
    }

    /// Uploads the sealed segments waiting in the journal folder (the caller holds the
    /// upload lock).
    async fn upload_locals(&self) -> Result<usize> {
        let (locals, archive) = {
            let inner = self.lock();
            inner.check_poisoned()?;
            let locals: Vec<SegEntry> =
                inner.catalog.segments.iter().filter(|e| e.local.is_some()).cloned().collect();
            (locals, inner.archive.clone())
        };
        let mut count = 0;
        for entry in locals {
            let Some(path) = entry.local.clone() else { continue };
            // Uploaded under this archiver's lease term (the local name has none).
            let uploaded =
                if entry.remote { entry.name } else { entry.name.with_term(archive.term) };
            let outcome: Result<()> = async {
                if !entry.remote {
                    let bytes = read_local(&path)?;
                    archive.put_immutable(&format!("seg/{}", uploaded.file_name()), bytes).await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                self.lock().upload_error = Some(e.to_string());
                self.after_failure(&e);
                return Err(e);
            }
            archive.fail("upload.before_local_delete")?;
            remove_if_exists(&path)?;
            let mut inner = self.lock();
            if let Some(e) = inner.catalog.segments.iter_mut().find(|e| e.name == entry.name) {
                e.name = uploaded;
                e.local = None;
                e.remote = true;
            }
            count += 1;
        }
        let mut inner = self.lock();
        inner.upload_error = None;
        inner.publish_replicated();
        drop(inner);
        if count > 0 {
            self.log_covered();
        }
        Ok(count)
    }

    /// Takes a snapshot of the newest archived position when the log since the last
    /// snapshot has outgrown the database (or `snapshot_interval` passed with writes), and
    /// merges archived segments older than `merge_after` into larger ones (concatenation:
    /// every commit stays a position). Returns true when it changed the archive.
    pub async fn compact(&self) -> Result<bool> {
        let outcome = self.compact_steps().await;
        if let Err(e) = &outcome {
            self.after_failure(e);
        }
        outcome
    }

    async fn compact_steps(&self) -> Result<bool> {
        let (sources, now, cfg, db_bytes) = {
            let inner = self.lock();
            (inner.sources(), now_ts(&inner.config), inner.config.clone(), inner.head.db_bytes)
        };
        let mut changed = false;
        let last_snap = sources.catalog.snapshots.iter().max_by_key(|s| s.seq).copied();
        let archived: Vec<&SegEntry> =
            sources.catalog.chain().into_iter().filter(|e| e.remote && e.local.is_none()).collect();
        if let Some(newest) = archived.iter().map(|e| e.name).max_by_key(|n| n.last_seq) {
            let since = last_snap.map_or(0, |s| s.seq + 1);
            let log_bytes: u64 =
                archived.iter().filter(|e| e.name.last_seq >= since).map(|e| e.size).sum();
            let old = last_snap.is_none_or(|s| {
                now.saturating_sub(s.ts) >= cfg.snapshot_interval.as_millis() as u64
            });
            if newest.last_seq >= since && (log_bytes >= db_bytes.max(1) || old) {
                let image = materialize(&sources, newest.last_seq, None).await?;
                let name = SnapName {
                    epoch: newest.epoch,
                    seq: newest.last_seq,
                    ts: newest.last_ts,
                    term: sources.archive.term,
                };
                let h = SnapshotHeader {
                    page_size: image.page_size,
                    epoch: name.epoch,
                    db_pages: if image.page_size == 0 {
                        0
                    } else {
                        (image.data.len() / image.page_size as usize) as u32
                    },
                    seq: name.seq,
                    ts_ms: name.ts,
                };
                let bytes = record::encode_snapshot(&h, &sources.history, &image.data);
                sources.archive.fail("compact.before_snapshot")?;
                sources.archive.put_immutable(&format!("snap/{}", name.file_name()), bytes).await?;
                self.lock().catalog.snapshots.push(name);
                self.lock().catalog.sort();
                changed = true;
            }
        }
        for group in merge_groups(&archived, &cfg, now) {
            let mut merged = record::encode_segment_header(&sources.history);
            for e in &group {
                let what = e.name.file_name();
                let bytes = sources
                    .archive
                    .get(&format!("seg/{what}"))
                    .await?
                    .ok_or_else(|| missing(what.clone()))?;
                record::decode_segment(&bytes, &sources.history, &what)?;
                merged.extend_from_slice(&bytes[record::SEGMENT_HEADER..]);
            }
            let (first, last) = (group[0].name, group[group.len() - 1].name);
            let name = SegName {
                epoch: first.epoch,
                first_seq: first.first_seq,
                last_seq: last.last_seq,
                first_ts: first.first_ts,
                last_ts: last.last_ts,
                term: sources.archive.term,
            };
            let size = merged.len() as u64;
            sources.archive.put_immutable(&format!("seg/{}", name.file_name()), merged).await?;
            self.lock().catalog.add_segment(SegEntry { name, local: None, remote: true, size });
            sources.archive.fail("compact.after_merge_put")?;
            for e in &group {
                sources.archive.delete(&format!("seg/{}", e.name.file_name())).await?;
                self.lock().catalog.segments.retain(|x| x.name != e.name);
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Deletes what no point of the window (plus grace) needs: snapshots older than the
    /// newest snapshot taken before the window's start, and segments that end before it. A
    /// pending restore's target is never deleted. Returns how many objects were deleted.
    pub async fn retain(&self) -> Result<usize> {
        let outcome = self.retain_steps().await;
        if let Err(e) = &outcome {
            self.after_failure(e);
        }
        outcome
    }

    async fn retain_steps(&self) -> Result<usize> {
        let (catalog, archive, cutoff, pin) = {
            let inner = self.lock();
            let c = &inner.config;
            let cutoff = c.clock.now_ms() - c.window_ms() - c.grace.as_millis() as i64;
            let pin = match std::fs::read(&inner.paths.pending) {
                Ok(bytes) => {
                    let p = record::decode_pending(&bytes, "restore.pending")?;
                    Some(inner.resolve(&p.bookmark, false).map(|(s, _)| s).unwrap_or(0))
                }
                Err(_) => None,
            };
            (inner.catalog.clone(), inner.archive.clone(), cutoff, pin)
        };
        if cutoff < 0 {
            return Ok(0);
        }
        let anchor = retention_anchor(&catalog.snapshots, cutoff, pin);
        let mut deleted = 0;
        // History a later lease term superseded (a fenced writer's late uploads).
        for key in &catalog.superseded {
            archive.delete(key).await?;
            self.lock().catalog.superseded.retain(|k| k != key);
            deleted += 1;
        }
        // Merge leftovers first: segments covered by a merged one.
        for e in catalog.covered() {
            if e.remote {
                archive.delete(&format!("seg/{}", e.name.file_name())).await?;
                self.lock().catalog.segments.retain(|x| x.name != e.name || x.local.is_some());
                deleted += 1;
            }
        }
        let Some(anchor) = anchor else { return Ok(deleted) };
        for e in catalog.chain().into_iter().filter(|e| e.name.last_seq < anchor.seq) {
            archive.fail("retain.before_delete")?;
            if e.remote {
                archive.delete(&format!("seg/{}", e.name.file_name())).await?;
            }
            if let Some(p) = &e.local {
                remove_if_exists(p)?;
            }
            self.lock().catalog.segments.retain(|x| x.name != e.name);
            deleted += 1;
        }
        for s in catalog.snapshots.iter().filter(|s| s.seq < anchor.seq) {
            archive.delete(&format!("snap/{}", s.file_name())).await?;
            self.lock().catalog.snapshots.retain(|x| x != s);
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn seg(epoch: u32, first: u64, last: u64, first_ts: u64, last_ts: u64, size: u64) -> SegEntry {
        let name = SegName { epoch, first_seq: first, last_seq: last, first_ts, last_ts, term: 0 };
        SegEntry { name, local: None, remote: true, size }
    }

    fn config() -> ArchiveConfig {
        let mut c = ArchiveConfig::in_memory();
        c.merge_after = Duration::from_millis(100);
        c.merge_span = Duration::from_millis(1_000);
        c.merge_max_bytes = 300;
        c
    }

    fn names(groups: &[Vec<SegEntry>]) -> Vec<Vec<u64>> {
        groups.iter().map(|g| g.iter().map(|e| e.name.first_seq).collect()).collect()
    }

    #[test]
    fn old_contiguous_segments_of_one_epoch_and_period_merge() {
        let segs = [
            seg(0, 0, 9, 0, 10, 100),
            seg(0, 10, 19, 20, 30, 100),
            seg(0, 20, 29, 40, 50, 100),
            // Over the size cap with the three before.
            seg(0, 30, 39, 60, 70, 100),
            seg(0, 40, 49, 80, 90, 50),
        ];
        let refs: Vec<&SegEntry> = segs.iter().collect();
        assert_eq!(names(&merge_groups(&refs, &config(), 1_000)), [vec![0, 10, 20], vec![30, 40]]);
        // Too young to merge: nothing.
        assert!(merge_groups(&refs, &config(), 120).is_empty());
    }

    #[test]
    fn merges_stop_at_gaps_epochs_and_periods() {
        let segs = [
            seg(0, 0, 9, 0, 10, 10),
            seg(0, 11, 19, 20, 30, 10),       // a gap: seq 10 is missing
            seg(1, 20, 29, 40, 50, 10),       // another epoch
            seg(1, 30, 39, 1_010, 1_020, 10), // the next period
            seg(1, 40, 49, 1_030, 1_040, 10),
        ];
        let refs: Vec<&SegEntry> = segs.iter().collect();
        assert_eq!(names(&merge_groups(&refs, &config(), 10_000)), [vec![30, 40]]);
    }

    #[test]
    fn retention_keeps_the_newest_snapshot_before_the_cutoff_and_the_restore_target() {
        let snaps = [
            SnapName { epoch: 0, seq: 10, ts: 100, term: 0 },
            SnapName { epoch: 0, seq: 20, ts: 200, term: 0 },
            SnapName { epoch: 0, seq: 30, ts: 300, term: 0 },
        ];
        assert_eq!(retention_anchor(&snaps, 250, None).map(|s| s.seq), Some(20));
        assert_eq!(retention_anchor(&snaps, 50, None), None, "nothing old enough");
        assert_eq!(retention_anchor(&snaps, 1_000, Some(25)).map(|s| s.seq), Some(20));
        assert_eq!(retention_anchor(&snaps, 1_000, Some(5)), None, "the target needs them all");
    }
}
