//! The shared log: one upload carries the newest commits of every object a node runs.
//!
//! Under leases, a node that must confirm commits quickly (`Replicated` durability) does not
//! upload each object's new history on its own. Each object hands the records it captured
//! since its last hand-off (a *delta*, written as a whole segment file) to its node's log;
//! the log writes every delta handed over while the previous *round* was in flight as one
//! object, `{root}/_log/{node}/{instance}/{round:016x}` (create-only), then checks once, for
//! all of them, that no object of the batch was taken over (one listing of
//! `{root}/_log/{node}/{instance}/fenced/`). A delta is confirmed when both succeed: its
//! commits survive the loss of the machine. Two requests per round, whatever the number of
//! objects, as group commit does for fsyncs.
//!
//! The deltas are not the object's history yet: each object still uploads its own segments
//! (`seg/`) at its own pace (the archive lag). Once every delta of a batch is covered by
//! its object's own segments, the batch is deleted.
//!
//! When a node stops without uploading (killed, or fenced), its newest deltas exist only in
//! its log. The node that takes an object over (see `lease.rs`) first writes a *fence
//! marker* `{root}/_log/{node}/{instance}/fenced/{object}.{term:08x}` into the old owner's
//! log, then claims the next term, then reads the old owner's batches and uploads the
//! object's deltas as segments of the old term ([`logged_segments`]), before it lists the
//! history and writes its `from` marker. Readers that open no object (`ArchiveReader`) read
//! the same deltas without uploading them.
//!
//! Why that is safe: a round confirms a delta only after its listing found no marker for
//! the object, so the marker (and the claim after it) came later, and the taker's reading of
//! the log, later still, sees the batch. A delta whose round found the marker is not
//! confirmed; the taker may or may not have seen it, and either way the history is
//! consistent (past the taker's `from`, a fenced writer's history is superseded).
//!
//! The batch format: `DSLOG` and a version byte, a count, then per delta the object's key
//! prefix, its segment's file name (with the term) and the segment's bytes (each
//! length-prefixed, little-endian), and a CRC-32C of everything before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::path::{Path as StorePath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::archive::{Archive, SegName, hex_field as hex, store_error};
use crate::codec::Reader;
use crate::error::{ArchiveError, Error, Result, corrupt};
use crate::lease::Leases;

const MAGIC: &[u8; 6] = b"DSLOG\x01";

/// One object's delta: the records it captured since its last one, as a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The object's key prefix in the store.
    pub object: String,
    /// The segment's name, with the term it was written under.
    pub name: SegName,
    /// A whole segment file: header and records.
    pub bytes: Vec<u8>,
}

pub(crate) fn encode_batch(deltas: &[&Delta]) -> Vec<u8> {
    let size: usize = deltas.iter().map(|d| d.object.len() + d.bytes.len() + 120).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(deltas.len() as u32).to_le_bytes());
    for d in deltas {
        let name = d.name.file_name();
        out.extend_from_slice(&(d.object.len() as u32).to_le_bytes());
        out.extend_from_slice(d.object.as_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(d.bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&d.bytes);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_batch(bytes: &[u8], what: &str) -> Result<Vec<Delta>> {
    let bad = |detail: &str| corrupt(what, detail);
    let body_len = bytes.len().checked_sub(4).ok_or_else(|| bad("too short"))?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    let mut r = Reader::new(body);
    if r.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(bad("not a log batch"));
    }
    let count = r.u32().ok_or_else(|| bad("short"))?;
    let mut out = Vec::new();
    let text = |r: &mut Reader<'_>| -> Result<String> {
        let len = r.u32().ok_or_else(|| bad("short"))? as usize;
        let raw = r.take(len).ok_or_else(|| bad("short"))?;
        String::from_utf8(raw.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    };
    for _ in 0..count {
        let object = text(&mut r)?;
        let file = text(&mut r)?;
        let name = SegName::parse(&file).ok_or_else(|| bad("a bad segment name"))?;
        let len = r.u64().and_then(|l| usize::try_from(l).ok()).ok_or_else(|| bad("short"))?;
        let seg = r.take(len).ok_or_else(|| bad("short"))?;
        out.push(Delta { object, name, bytes: seg.to_vec() });
    }
    if r.pos() != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// `{root}/_log/{node}/{instance}`.
pub(crate) fn log_dir(root: &str, node: &str, instance: &str) -> String {
    let rest = format!("_log/{node}/{instance}");
    if root.is_empty() { rest } else { format!("{}/{rest}", root.trim_end_matches('/')) }
}

/// The namespace folder an object's prefix sits in (its parent), where its nodes' logs are.
pub(crate) fn root_of(object: &str) -> &str {
    object.trim_end_matches('/').rsplit_once('/').map_or("", |(root, _)| root)
}

/// The fence marker's file name for `object`'s term `term` (the object's prefix as one
/// path part: its slashes percent-encoded).
fn marker_name(object: &str, term: u32) -> PathPart<'static> {
    PathPart::from(format!("{object}.{term:08x}"))
}

/// What a fence marker holds: who took the object over.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    by: String,
}

/// Writes the marker that fences `object`'s term `term` held by `instance` of `node`, as
/// `by` takes the object over (create-only; already there is fine).
pub(crate) async fn write_marker(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    (node, instance): (&str, &str),
    object: &str,
    term: u32,
    by: &str,
) -> Result<()> {
    let key = StorePath::from(format!("{}/fenced", log_dir(root, node, instance)))
        .join(marker_name(object, term));
    let body = serde_json::to_vec(&Marker { by: by.to_owned() }).expect("a marker serializes");
    match store.put_opts(&key, PutPayload::from(body), PutOptions::from(PutMode::Create)).await {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(store_error("put", &key)(e)),
    }
}

/// A delta waiting for its round, and who waits for the outcome.
struct Waiting {
    delta: Delta,
    done: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct State {
    queue: Vec<Waiting>,
    /// Tasks running rounds (at most `ROUNDS_IN_FLIGHT`).
    running: usize,
    next_round: u64,
    /// Rounds in the store, with how many of their confirmed deltas are not yet covered by
    /// their objects' own segments.
    live: BTreeMap<u64, usize>,
    /// Per object: the confirmed deltas not yet covered, as (round, last position).
    uncovered: HashMap<String, Vec<(u64, u64)>>,
}

/// A node's log (see the module documentation). Part of [`crate::Node`].
pub(crate) struct SharedLog {
    state: Mutex<State>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

/// Where a node's log writes: the store, its folder, and who the node is.
#[derive(Clone)]
pub(crate) struct LogPlace {
    pub store: Arc<dyn ObjectStore>,
    pub dir: String,
}

/// Rounds uploading at once. A round costs two round trips to the store (the PUT, then the
/// fence listing): with one round at a time, commits arriving meanwhile wait for it to end
/// and then for their own. Measured with benchmark (r) and a store answering in 20 ms: 100
/// objects confirmed 842 events/s (p99 197 ms) with one round in flight, 1,408/s (p99 124
/// ms) with four, and the same with eight; against the local S3 server, no difference.
const ROUNDS_IN_FLIGHT: usize = 4;

/// Attempts per batch upload before its deltas fail (each object retries with its next).
const ATTEMPTS: u32 = 3;

impl SharedLog {
    pub(crate) fn new() -> SharedLog {
        SharedLog { state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `delta` to the next round and waits for it: `Ok` once it is in the store and
    /// its object was not taken over, [`ArchiveError::Fenced`] when it was. Must run inside
    /// a tokio runtime (the rounds run on it).
    pub(crate) async fn append(self: &Arc<Self>, place: &LogPlace, delta: Delta) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let start = {
            let mut s = self.state();
            s.queue.push(Waiting { delta, done });
            let start = s.running < ROUNDS_IN_FLIGHT;
            if start {
                s.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().rounds(place.clone()));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(Error::Archive(ArchiveError::Poisoned("the shared log stopped".into())))
        })
    }

    /// Runs rounds until nothing waits.
    async fn rounds(self: Arc<Self>, place: LogPlace) {
        loop {
            let (round, batch) = {
                let mut s = self.state();
                if s.queue.is_empty() {
                    s.running -= 1;
                    return;
                }
                let round = s.next_round;
                s.next_round += 1;
                (round, std::mem::take(&mut s.queue))
            };
            let outcome = write_round(&place, round, &batch).await;
            // Each waiter's answer; the confirmed ones are counted in the batch before anyone
            // hears of them (an upload that covers them may follow at once).
            let answers: Vec<Result<()>> = batch
                .iter()
                .map(|w| match &outcome {
                    Ok(fenced) => match fenced.get(&w.delta.object) {
                        Some((term, by)) if *term >= w.delta.name.term => {
                            Err(Error::Archive(ArchiveError::Fenced {
                                term: w.delta.name.term,
                                by: by.clone(),
                            }))
                        }
                        _ => Ok(()),
                    },
                    Err(why) => Err(Error::Archive(ArchiveError::Store {
                        action: "put",
                        key: format!("{}/{round:016x}", place.dir),
                        source: object_store::Error::Generic {
                            store: "shared log",
                            source: Box::new(std::io::Error::other(why.clone())),
                        },
                    })),
                })
                .collect();
            let confirmed: Vec<(&Delta, &Result<()>)> =
                batch.iter().map(|w| &w.delta).zip(&answers).filter(|(_, a)| a.is_ok()).collect();
            if confirmed.is_empty() {
                // Nothing in it anyone needs (it may not even exist): let it go.
                spawn_delete(&place, vec![round]);
            } else {
                let mut s = self.state();
                s.live.insert(round, confirmed.len());
                for (delta, _) in confirmed {
                    s.uncovered
                        .entry(delta.object.clone())
                        .or_default()
                        .push((round, delta.name.last_seq));
                }
            }
            for (w, answer) in batch.into_iter().zip(answers) {
                let _ = w.done.send(answer);
            }
        }
    }

    /// `object`'s own segments now hold every position up to `seq`: batches whose every
    /// confirmed delta is covered so are deleted.
    pub(crate) fn covered(&self, place: &LogPlace, object: &str, seq: u64) {
        let mut done = Vec::new();
        {
            let mut s = self.state();
            let Some(list) = s.uncovered.get_mut(object) else { return };
            let mut rounds = Vec::new();
            list.retain(|&(round, last)| {
                let covered = last <= seq;
                if covered {
                    rounds.push(round);
                }
                !covered
            });
            if list.is_empty() {
                s.uncovered.remove(object);
            }
            for round in rounds {
                if let Some(n) = s.live.get_mut(&round) {
                    *n -= 1;
                    if *n == 0 {
                        s.live.remove(&round);
                        done.push(round);
                    }
                }
            }
        }
        if !done.is_empty() {
            spawn_delete(place, done);
        }
    }

    /// Batches in the store still holding deltas their objects have not covered.
    pub(crate) fn live_batches(&self) -> usize {
        self.state().live.len()
    }
}

fn spawn_delete(place: &LogPlace, rounds: Vec<u64>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let place = place.clone();
    rt.spawn(async move {
        for round in rounds {
            let key = StorePath::from(format!("{}/{round:016x}", place.dir));
            match place.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => tracing::warn!(%error, key = %key, "could not delete a log batch"),
            }
        }
    });
}

/// Writes one round's batch and lists the fence markers: per fenced object, the newest term
/// fenced and by whom. An error is the store's, as text (every waiter gets it).
async fn write_round(
    place: &LogPlace,
    round: u64,
    batch: &[Waiting],
) -> std::result::Result<HashMap<String, (u32, String)>, String> {
    let deltas: Vec<&Delta> = batch.iter().map(|w| &w.delta).collect();
    let bytes = encode_batch(&deltas);
    let key = StorePath::from(format!("{}/{round:016x}", place.dir));
    let payload = PutPayload::from(bytes.clone());
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match place.store.put_opts(&key, payload.clone(), PutOptions::from(PutMode::Create)).await {
            Ok(_) => break,
            // A retry after an attempt that landed: the same bytes count as done.
            Err(object_store::Error::AlreadyExists { .. }) => {
                let same = match place.store.get(&key).await {
                    Ok(r) => r.bytes().await.is_ok_and(|b| b.as_ref() == bytes.as_slice()),
                    Err(_) => false,
                };
                if same {
                    break;
                }
                return Err(format!("{key} already exists with other content"));
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(key = %key, attempt, error = %e, "log batch upload failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(format!("put {key}: {e}")),
        }
    }
    // The fence check: one listing for every object of the batch.
    let fenced_dir = StorePath::from(format!("{}/fenced", place.dir));
    let metas: Vec<object_store::ObjectMeta> = place
        .store
        .list(Some(&fenced_dir))
        .try_collect()
        .await
        .map_err(|e| format!("list {fenced_dir}: {e}"))?;
    let mut fenced: HashMap<String, (u32, String)> = HashMap::new();
    if metas.is_empty() {
        return Ok(fenced);
    }
    let objects: BTreeSet<&str> = batch.iter().map(|w| w.delta.object.as_str()).collect();
    for meta in metas {
        let Some(file) = meta.location.filename() else { continue };
        let Some((object, term)) = file.rsplit_once('.') else { continue };
        let Some(term) = hex(term, 8).and_then(|t| u32::try_from(t).ok()) else { continue };
        let Some(object) = objects.iter().find(|o| PathPart::from(**o).as_ref() == object) else {
            continue;
        };
        let by = match place.store.get(&meta.location).await {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
                .map_or_else(|| "another node".to_owned(), |m| m.by),
            Err(_) => "another node".to_owned(),
        };
        let slot = fenced.entry((*object).to_owned()).or_insert((0, String::new()));
        if term >= slot.0 {
            *slot = (term, by);
        }
    }
    Ok(fenced)
}

/// The object's history held only in shared logs: the confirmed deltas of writers that
/// did not upload them as segments themselves (killed, or fenced), for terms from `newest`
/// down to the first term whose holder is known to have moved older deltas into segments
/// (it released the object, or wrote its `from` marker). Only deltas past `after` (the
/// newest position the segments and snapshots hold, `None` when they hold none) and before
/// the next term's start are returned, in
/// history order, each as (segment name, segment bytes).
pub(crate) async fn logged_segments(
    archive: &Archive,
    leases: &Leases,
    newest: u32,
    after: Option<u64>,
) -> Result<Vec<(SegName, Vec<u8>)>> {
    let root = root_of(&archive.prefix);
    let mut out: BTreeMap<(u64, std::cmp::Reverse<u64>), (SegName, Vec<u8>)> = BTreeMap::new();
    let mut read: BTreeSet<String> = BTreeSet::new();
    for term in (1..=newest).rev() {
        if leases.claims.contains(&term) {
            let owner = crate::lease::read_claim(archive, term).await?;
            let dir = log_dir(root, &owner.node, &owner.instance);
            if read.insert(dir.clone()) {
                for delta in read_log(&archive.store, &dir).await? {
                    let n = delta.name;
                    if delta.object == archive.prefix
                        && after.is_none_or(|a| n.last_seq > a)
                        && n.last_seq < leases.limit(n.term)
                    {
                        out.insert((n.first_seq, std::cmp::Reverse(n.last_seq)), (n, delta.bytes));
                    }
                }
            }
        }
        if leases.released.contains(&term) || leases.from.contains_key(&term) {
            break;
        }
    }
    Ok(out.into_values().collect())
}

/// Deletes what the logs of stopped instances under `root` no longer need to hold: a batch
/// once every object in it has moved past it (a later holder of the object wrote its
/// `from` marker, having moved the deltas into segments first, or the delta's own term was
/// released with its history uploaded), then the instance's fence markers once its batches
/// are gone. `live` says whether an instance of a node still runs (its heartbeat). Returns
/// how many objects were deleted.
pub(crate) async fn sweep(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    live: impl Fn(&str, &str) -> bool,
) -> Result<usize> {
    let top = StorePath::from(match root.trim_end_matches('/') {
        "" => "_log".to_owned(),
        root => format!("{root}/_log"),
    });
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&top)).try_collect().await.map_err(store_error("list", &top))?;
    // Per (node, instance): its batches and its markers.
    let mut dirs: BTreeMap<(String, String), (Vec<StorePath>, Vec<StorePath>)> = BTreeMap::new();
    for meta in metas {
        let Some(rest) = meta.location.prefix_match(&top) else { continue };
        let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
        match parts.as_slice() {
            [node, instance, batch] if hex(batch, 16).is_some() => {
                let slot = dirs.entry((node.clone(), instance.clone())).or_default();
                slot.0.push(meta.location);
            }
            [node, instance, fenced, _] if fenced == "fenced" => {
                let slot = dirs.entry((node.clone(), instance.clone())).or_default();
                slot.1.push(meta.location);
            }
            _ => {}
        }
    }
    let mut deleted = 0;
    let mut leases: HashMap<String, Leases> = HashMap::new();
    for ((node, instance), (batches, markers)) in dirs {
        if live(&node, &instance) {
            continue;
        }
        let mut left = 0;
        for key in batches {
            let bytes = match store.get(&key).await {
                Ok(r) => r.bytes().await.map_err(store_error("get", &key))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store_error("get", &key)(e)),
            };
            let deltas = decode_batch(&bytes, key.as_ref())?;
            let mut needed = false;
            for delta in &deltas {
                if !leases.contains_key(&delta.object) {
                    let archive = Archive {
                        store: store.clone(),
                        prefix: delta.object.clone(),
                        attempts: 1,
                        failpoint: None,
                        term: 0,
                    };
                    leases.insert(delta.object.clone(), crate::lease::read_leases(&archive).await?);
                }
                let l = &leases[&delta.object];
                let term = delta.name.term;
                let moved = l.released.contains(&term)
                    || l.from.range(term.saturating_add(1)..).next().is_some();
                needed |= !moved;
            }
            if needed {
                left += 1;
                continue;
            }
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(store_error("delete", &key)(e)),
            }
        }
        if left == 0 {
            for key in markers {
                match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(store_error("delete", &key)(e)),
                }
            }
        }
    }
    Ok(deleted)
}

/// Every delta in the batches of the log folder `dir` (batches deleted meanwhile are
/// skipped: their deltas are in segments).
async fn read_log(store: &Arc<dyn ObjectStore>, dir: &str) -> Result<Vec<Delta>> {
    let prefix = StorePath::from(dir);
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&prefix)).try_collect().await.map_err(store_error("list", &prefix))?;
    let mut batches: Vec<StorePath> = metas
        .into_iter()
        .map(|m| m.location)
        .filter(|l| l.filename().is_some_and(|f| hex(f, 16).is_some()))
        .filter(|l| l.prefix_match(&prefix).is_some_and(|mut rest| rest.nth(1).is_none()))
        .collect();
    batches.sort();
    let mut out = Vec::new();
    for key in batches {
        let bytes = match store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(store_error("get", &key))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store_error("get", &key)(e)),
        };
        out.extend(decode_batch(&bytes, key.as_ref())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(object: &str, first: u64, last: u64) -> Delta {
        let name = SegName {
            epoch: 0,
            first_seq: first,
            last_seq: last,
            first_ts: 1,
            last_ts: 2,
            term: 3,
        };
        Delta { object: object.into(), name, bytes: vec![first as u8; (last - first + 1) as usize] }
    }

    #[test]
    fn batches_round_trip_and_damage_is_refused() {
        let a = delta("ns/a.sqlite", 1, 4);
        let b = delta("ns/b c.sqlite", 7, 7);
        let bytes = encode_batch(&[&a, &b]);
        assert_eq!(decode_batch(&bytes, "x").unwrap(), vec![a.clone(), b]);
        assert!(decode_batch(&encode_batch(&[]), "x").unwrap().is_empty());
        for at in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            let err = decode_batch(&bad, "x").unwrap_err().to_string();
            assert!(err.contains("corrupt x"), "{err}");
        }
        assert!(decode_batch(&bytes[..3], "x").is_err());
        assert!(decode_batch(&[], "x").is_err());
    }

    #[test]
    fn objects_sit_in_their_namespace_folder() {
        assert_eq!(root_of("ns/room.sqlite"), "ns");
        assert_eq!(root_of("a/b/room.sqlite/"), "a/b");
        assert_eq!(root_of("room.sqlite"), "");
        assert_eq!(log_dir("", "n1", "ab"), "_log/n1/ab");
        assert_eq!(log_dir("ns/", "n1", "ab"), "ns/_log/n1/ab");
        assert_eq!(marker_name("ns/room.sqlite", 2).as_ref(), "ns%2Froom.sqlite.00000002");
        let key = StorePath::from("ns/_log/a/b/fenced").join(marker_name("ns/room.sqlite", 2));
        assert_eq!(key.filename(), Some("ns%2Froom.sqlite.00000002"));
    }
}
