//! The shared log: one upload carries the newest commits of every object a node runs.
//!
//! Under leases, a node that must confirm commits quickly (`Replicated` durability) does not
//! upload each object's new history on its own. Each object hands the records it captured
//! since its last hand-off (a *delta*, written as a whole segment file) to its node's log;
//! a *round* writes every delta queued as one object into the next *slot* of one of the
//! log's *lanes*, `{root}/_log/{node}/{instance}/{lane:02x}/{slot:016x}`, create-only. A
//! delta is confirmed when that one request succeeds: its commits survive the loss of the
//! machine. One request per round, whatever the number of objects, as group commit does
//! for fsyncs. Each lane runs one round at a time; deltas handed over while rounds are in
//! flight start a round on an idle lane, or wait for the first lane to finish.
//!
//! The deltas are not the object's history yet: each object still uploads its own segments
//! (`seg/`) at its own pace (the archive lag). Once every delta of a batch is covered by
//! its object's own segments, the batch is deleted (except each lane's newest, see below).
//!
//! When a node stops without uploading (killed, or fenced), its newest deltas exist only in
//! its log. The node that takes an object over (see `lease.rs`) first *fences* the object
//! in the old owner's log: it writes a fence (the object, its term, who took it) into the
//! next free slot of every lane, create-only. Then it claims the next term, reads the old
//! owner's batches and uploads the object's deltas as segments of the old term
//! ([`logged_segments`]), before it lists the history and writes its `from` marker. Readers
//! that open no object (`ArchiveReader`) read the same deltas without uploading them.
//!
//! Why that is safe, lane by lane: a lane writes one slot at a time and moves past a slot
//! only once it is *resolved* (its batch is in it, or a fence is). The taker lists the log
//! and fences the slot after the highest it sees in each lane (the next one up when that is
//! taken meanwhile). Every slot below a fence is resolved, so every batch confirmed before
//! it is in the listing the taker reads afterwards; the owner's round for the fenced slot
//! fails in its own request (the key exists), and from then on the log refuses the
//! object's deltas of that term, in every lane. The owner never deletes a lane's newest
//! batch: with it deleted, the taker would see a lower highest slot and fence a slot the
//! owner had already left behind. A round that fails for another reason leaves its slot
//! unresolved: the lane's next round writes into the same slot (finding an earlier attempt
//! there moves it one slot on). An object has one delta in flight at a time, so its deltas
//! are confirmed in order whichever lanes they take. A sweep deletes a stopped instance's
//! fences only once its node started a later instance: a paused one that comes back
//! (and heartbeats again) must find them in its lanes' next slots.
//!
//! Formats: a batch is `DSLOG` and a version byte, a count, then per delta the object's
//! key prefix, its segment's file name (with the term) and the segment's bytes (each
//! length-prefixed, little-endian), and a CRC-32C of everything before it. A fence is
//! `DSFENCE` and a version byte, then JSON (`object`, `term`, `by`). Logs written before
//! lanes kept their batches flat in the instance's folder (still read), and logs written
//! before fences took slots kept fence markers as `fenced/{object}.{term:08x}` files (still
//! swept).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
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

const FENCE_MAGIC: &[u8; 8] = b"DSFENCE\x01";

/// A fence: `object`'s term `term` was taken over by node `by`; the log refuses the
/// object's deltas of that term (and older) from the slot holding it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fence {
    pub object: String,
    pub term: u32,
    pub by: String,
}

fn encode_fence(fence: &Fence) -> Vec<u8> {
    let mut out = FENCE_MAGIC.to_vec();
    out.extend(serde_json::to_vec(fence).expect("a fence serializes"));
    out
}

/// What a slot holds.
#[derive(Debug)]
enum Slot {
    Batch(Vec<Delta>),
    Fence(Fence),
}

fn decode_slot(bytes: &[u8], what: &str) -> Result<Slot> {
    match bytes.strip_prefix(FENCE_MAGIC.as_slice()) {
        Some(json) => serde_json::from_slice(json)
            .map(Slot::Fence)
            .map_err(|e| corrupt(what, format!("a fence that is not readable: {e}"))),
        None => decode_batch(bytes, what).map(Slot::Batch),
    }
}

/// Independent sequences of slots in one log (`{dir}/{lane:02x}/{slot:016x}`): each is
/// written one round at a time, and rounds of different lanes overlap, so a delta handed
/// over while a round is in flight starts the next round at once on an idle lane rather
/// than waiting for that round to end (only against a slow store, see [`SLOW_STORE`]). A
/// delta goes to whichever lane runs next: an object has one delta in flight at a time,
/// so its deltas are confirmed in order whatever lanes they take.
const LANES: usize = 4;

/// A slot: its lane and its number in the lane.
type SlotId = (usize, u64);

/// The lane given to the flat slots (`{dir}/{slot:016x}`) of logs written before lanes.
const FLAT: usize = usize::MAX;

/// The slots of the log folder `dir`, in order: `{lane:02x}/{slot:016x}` files, and the
/// flat `{slot:016x}` ones of logs written before lanes (not the `fenced/` files of older
/// logs still).
async fn list_slots(store: &Arc<dyn ObjectStore>, dir: &str) -> Result<Vec<(SlotId, StorePath)>> {
    let prefix = StorePath::from(dir);
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&prefix)).try_collect().await.map_err(store_error("list", &prefix))?;
    let mut slots: Vec<(SlotId, StorePath)> = metas
        .into_iter()
        .filter_map(|m| {
            let parts: Vec<String> =
                m.location.prefix_match(&prefix)?.map(|p| p.as_ref().to_owned()).collect();
            Some((parse_slot(&parts)?, m.location))
        })
        .collect();
    slots.sort();
    Ok(slots)
}

/// A slot's id from the parts of its key after the log's folder.
fn parse_slot(parts: &[String]) -> Option<SlotId> {
    match parts {
        [slot] => Some((FLAT, hex(slot, 16)?)),
        [lane, slot] => Some((usize::try_from(hex(lane, 2)?).ok()?, hex(slot, 16)?)),
        _ => None,
    }
}

/// Most slots a taker tries before giving up on fencing a log that keeps moving.
const FENCE_ATTEMPTS: usize = 1000;

/// Fences `object`'s term `term`, held by `instance` of `node`, as `by` takes the object
/// over: writes a [`Fence`] into the next free slot of every lane of the log (see the
/// module documentation), all lanes at once.
pub(crate) async fn write_fence(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    (node, instance): (&str, &str),
    object: &str,
    term: u32,
    by: &str,
) -> Result<()> {
    let dir = log_dir(root, node, instance);
    let slots = list_slots(store, &dir).await?;
    let lanes = slots.iter().filter(|(id, _)| id.0 != FLAT).map(|(id, _)| id.0 + 1).max();
    let fence = Fence { object: object.to_owned(), term, by: by.to_owned() };
    let payload = PutPayload::from(encode_fence(&fence));
    let fences = (0..lanes.unwrap_or(0).max(LANES)).map(|lane| {
        let next = slots.iter().filter(|(id, _)| id.0 == lane).map(|(id, _)| id.1 + 1).max();
        fence_lane(store, &dir, lane, next.unwrap_or(0), payload.clone())
    });
    let fenced = futures_util::future::try_join_all(fences).await?;
    tracing::debug!(log = %dir, object, term, by, slots = ?fenced, "fenced");
    Ok(())
}

/// Writes a fence into the first free slot of `lane` from `next` on; returns that slot.
async fn fence_lane(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    lane: usize,
    next: u64,
    payload: PutPayload,
) -> Result<SlotId> {
    for slot in (next..).take(FENCE_ATTEMPTS) {
        let key = slot_key(dir, (lane, slot));
        match store.put_opts(&key, payload.clone(), PutOptions::from(PutMode::Create)).await {
            Ok(_) => return Ok((lane, slot)),
            // The owner's round (or another taker's fence) took it first: the next one.
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(store_error("put", &key)(e)),
        }
    }
    Err(corrupt(dir, "the log kept growing while this node tried to fence it"))
}

fn slot_key(dir: &str, (lane, slot): SlotId) -> StorePath {
    if lane == FLAT {
        StorePath::from(format!("{dir}/{slot:016x}"))
    } else {
        StorePath::from(format!("{dir}/{lane:02x}/{slot:016x}"))
    }
}

/// A delta waiting for its round, and who waits for the outcome.
struct Waiting {
    delta: Delta,
    done: oneshot::Sender<Result<()>>,
}

/// One lane's sequence of slots.
#[derive(Default)]
struct Lane {
    /// A task is running this lane's rounds.
    running: bool,
    /// The slot the lane's next round writes: the lowest not yet resolved.
    next_slot: u64,
    /// The lane's newest slot holding a batch of this log's, kept while it is the newest.
    newest: Option<u64>,
    /// Slots holding batches of ours whose deltas were not confirmed (an attempt that
    /// landed after all): deleted once a newer batch of the lane is in.
    stale: Vec<u64>,
}

/// How long the store takes to answer a round at least: the shortest round of the last
/// [`FLOOR_WINDOW`] (the first round's until then). A round's time is that floor plus
/// the time its bytes cost, so a high floor means a store far away.
#[derive(Default)]
struct Floor {
    current: Duration,
    window: Option<Duration>,
    rounds: usize,
}

impl Floor {
    /// Whether rounds measured so far show a store under [`SLOW_STORE`].
    fn is_near(&self) -> bool {
        let measured = self.rounds > 0 || !self.current.is_zero();
        measured && self.current < SLOW_STORE
    }

    fn add(&mut self, took: Duration) {
        if self.rounds == 0 && self.current.is_zero() {
            self.current = took;
        }
        let shortest = self.window.map_or(took, |w| w.min(took));
        self.window = Some(shortest);
        self.rounds += 1;
        if self.rounds == FLOOR_WINDOW {
            self.current = shortest;
            self.window = None;
            self.rounds = 0;
        }
    }
}

/// Rounds per [`Floor`] window.
const FLOOR_WINDOW: usize = 32;

/// A store whose rounds take at least this long gets [`LANES`] lanes; a quicker one one
/// lane. Parallel rounds hide a far store's round trips, but against a store that answers
/// at once (one on the same machine) they only split the batches into more requests:
/// benchmark (r) against the local S3 server confirmed 4,500-5,000 events/s with one lane
/// and 3,500-3,950 with four; with every request delayed by 20 ms, 1,200-2,000 with one
/// and 2,500-2,760 with four. The local server's floor under that load was 3 to 6 ms.
const SLOW_STORE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    queue: Vec<Waiting>,
    lanes: [Lane; LANES],
    /// How quickly the store answers (see [`SLOW_STORE`]).
    floor: Floor,
    /// Slots in the store, with how many of their confirmed deltas are not yet covered by
    /// their objects' own segments.
    live: BTreeMap<SlotId, usize>,
    /// Per object: the confirmed deltas not yet covered, as (slot, last position).
    uncovered: HashMap<String, Vec<(SlotId, u64)>>,
    /// Per object fenced in this log: the newest term fenced, and by whom.
    fenced: HashMap<String, (u32, String)>,
}

/// A node's log (see the module documentation). Part of [`crate::Node`].
pub(crate) struct SharedLog {
    state: Mutex<State>,
    /// Batches to delete, gathered so that one request deletes many.
    deletes: Arc<Mutex<Deletes>>,
}

/// Batches the log no longer needs, waiting for the next bulk delete.
#[derive(Default)]
struct Deletes {
    keys: Vec<StorePath>,
    /// A task is gathering and deleting them.
    running: bool,
}

/// How long the log gathers batches to delete before one request deletes them all (S3's
/// `DeleteObjects`, through object_store's `delete_stream`). A covered batch goes a
/// little later, which nothing depends on (a batch deleted too early is the danger, see
/// the module documentation); one request per batch was as many requests as rounds.
const DELETE_GATHER: Duration = Duration::from_millis(100);

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

/// Attempts per batch upload before its deltas fail (each object retries with its next).
const ATTEMPTS: u32 = 3;

impl SharedLog {
    pub(crate) fn new() -> SharedLog {
        SharedLog { state: Mutex::new(State::default()), deletes: Default::default() }
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
            let lanes = if s.floor.current >= SLOW_STORE { LANES } else { 1 };
            let idle = s.lanes.iter().take(lanes).position(|l| !l.running);
            if let Some(lane) = idle {
                s.lanes[lane].running = true;
            }
            idle
        };
        if let Some(lane) = start {
            tokio::spawn(self.clone().rounds(place.clone(), lane));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(Error::Archive(ArchiveError::Poisoned("the shared log stopped".into())))
        })
    }

    /// Runs `lane`'s rounds, one at a time, until nothing waits.
    async fn rounds(self: Arc<Self>, place: LogPlace, lane: usize) {
        // Dropped unfinished (its runtime shut down): the next append starts a new task, and
        // whoever waits in the queue hears that the log stopped.
        struct Running(Arc<SharedLog>, usize, bool);
        impl Drop for Running {
            fn drop(&mut self) {
                if !self.2 {
                    let mut s = self.0.state();
                    s.lanes[self.1].running = false;
                    s.queue.clear();
                }
            }
        }
        let mut running = Running(self, lane, false);
        loop {
            let batch = {
                let mut s = running.0.state();
                if s.queue.is_empty() {
                    s.lanes[lane].running = false;
                    drop(s);
                    running.2 = true;
                    return;
                }
                std::mem::take(&mut s.queue)
            };
            let started = std::time::Instant::now();
            running.0.round(&place, lane, batch).await;
            running.0.state().floor.add(started.elapsed());
        }
    }

    /// One round: writes `batch` into `lane`'s next slot (past any fences found there) and
    /// answers every waiter.
    async fn round(&self, place: &LogPlace, lane: usize, mut batch: Vec<Waiting>) {
        let mut to_delete = Vec::new();
        loop {
            // Deltas of objects fenced in this log are refused without a write.
            let slot = {
                let s = self.state();
                let (refused, kept): (Vec<Waiting>, Vec<Waiting>) =
                    batch.into_iter().partition(|w| fence_of(&s.fenced, &w.delta).is_some());
                for w in refused {
                    let (term, by) = fence_of(&s.fenced, &w.delta).expect("partitioned");
                    let _ = w.done.send(Err(fenced_error(term, by)));
                }
                batch = kept;
                (lane, s.lanes[lane].next_slot)
            };
            if batch.is_empty() {
                break;
            }
            let deltas: Vec<&Delta> = batch.iter().map(|w| &w.delta).collect();
            let bytes = encode_batch(&deltas);
            let outcome = write_slot(place, slot, &bytes).await;
            tracing::debug!(
                log = %place.dir,
                ?slot,
                outcome = match &outcome {
                    Ok(Written::Ours) => "ours".to_owned(),
                    Ok(Written::Fence(f)) => format!("fence {} term {}", f.object, f.term),
                    Ok(Written::Earlier) => "earlier".to_owned(),
                    Err(e) => e.clone(),
                },
                deltas = ?batch
                    .iter()
                    .map(|w| (&w.delta.object, w.delta.name.file_name()))
                    .collect::<Vec<_>>(),
                "round"
            );
            let mut s = self.state();
            match outcome {
                Ok(Written::Ours) => {
                    s.lanes[lane].next_slot = slot.1 + 1;
                    // Counted before anyone hears of it: an upload covering it may follow.
                    s.live.insert(slot, batch.len());
                    for w in &batch {
                        let d = &w.delta;
                        s.uncovered
                            .entry(d.object.clone())
                            .or_default()
                            .push((slot, d.name.last_seq));
                    }
                    // The newest batch is kept (see the module documentation): the one
                    // before it goes once nothing in it is uncovered, and so do the stale.
                    if let Some(before) = s.lanes[lane].newest.replace(slot.1)
                        && s.live.get(&(lane, before)) == Some(&0)
                    {
                        s.live.remove(&(lane, before));
                        to_delete.push((lane, before));
                    }
                    to_delete.extend(s.lanes[lane].stale.drain(..).map(|n| (lane, n)));
                    drop(s);
                    for w in batch {
                        let _ = w.done.send(Ok(()));
                    }
                    break;
                }
                Ok(Written::Fence(fence)) => {
                    s.lanes[lane].next_slot = slot.1 + 1;
                    let entry = s.fenced.entry(fence.object).or_insert((0, String::new()));
                    if fence.term >= entry.0 {
                        *entry = (fence.term, fence.by);
                    }
                }
                Ok(Written::Earlier) => {
                    s.lanes[lane].next_slot = slot.1 + 1;
                    s.lanes[lane].stale.push(slot.1);
                }
                Err(why) => {
                    // The slot stays unresolved: the next round writes into it again.
                    drop(s);
                    let key = slot_key(&place.dir, slot).to_string();
                    for w in batch {
                        let _ = w.done.send(Err(Error::Archive(ArchiveError::Store {
                            action: "put",
                            key: key.clone(),
                            source: object_store::Error::Generic {
                                store: "shared log",
                                source: Box::new(std::io::Error::other(why.clone())),
                            },
                        })));
                    }
                    break;
                }
            }
        }
        if !to_delete.is_empty() {
            self.delete_later(place, to_delete);
        }
    }

    /// `object`'s own segments now hold every position up to `seq`: batches whose every
    /// confirmed delta is covered so are deleted (the newest only once a newer one is in).
    pub(crate) fn covered(&self, place: &LogPlace, object: &str, seq: u64) {
        let mut done = Vec::new();
        {
            let mut s = self.state();
            let Some(list) = s.uncovered.get_mut(object) else { return };
            let mut slots = Vec::new();
            list.retain(|&(slot, last)| {
                let covered = last <= seq;
                if covered {
                    slots.push(slot);
                }
                !covered
            });
            if list.is_empty() {
                s.uncovered.remove(object);
            }
            for slot in slots {
                let newest = s.lanes[slot.0].newest;
                if let Some(n) = s.live.get_mut(&slot) {
                    *n -= 1;
                    if *n == 0 && Some(slot.1) != newest {
                        s.live.remove(&slot);
                        done.push(slot);
                    }
                }
            }
        }
        if !done.is_empty() {
            self.delete_later(place, done);
        }
    }

    /// Whether the store answered the log's rounds of late in under [`SLOW_STORE`] (the
    /// threshold below which the log runs one lane); `false` before the first round.
    pub(crate) fn store_is_near(&self) -> bool {
        self.state().floor.is_near()
    }

    /// Batches in the store still holding deltas their objects have not covered.
    pub(crate) fn live_batches(&self) -> usize {
        self.state().live.values().filter(|&&n| n > 0).count()
    }
}

/// The fence refusing `delta`, if any: its object's fenced term, when not older.
fn fence_of<'a>(
    fenced: &'a HashMap<String, (u32, String)>,
    delta: &Delta,
) -> Option<(u32, &'a str)> {
    fenced
        .get(&delta.object)
        .filter(|(term, _)| *term >= delta.name.term)
        .map(|(_, by)| (delta.name.term, by.as_str()))
}

fn fenced_error(term: u32, by: &str) -> Error {
    Error::Archive(ArchiveError::Fenced { term, by: by.to_owned() })
}

impl SharedLog {
    /// Deletes the batches in `slots` with the next bulk delete (within [`DELETE_GATHER`]).
    /// Outside a runtime, or if the runtime stops first, they stay for a sweep (see
    /// [`sweep`]) once this instance is gone.
    fn delete_later(&self, place: &LogPlace, slots: Vec<SlotId>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        tracing::debug!(log = %place.dir, ?slots, "deleting batches");
        let start = {
            let mut d = self.deletes.lock().unwrap_or_else(|p| p.into_inner());
            d.keys.extend(slots.into_iter().map(|slot| slot_key(&place.dir, slot)));
            !std::mem::replace(&mut d.running, true)
        };
        if start {
            rt.spawn(delete_gathered(self.deletes.clone(), place.store.clone()));
        }
    }
}

/// Every [`DELETE_GATHER`], deletes the batches gathered meanwhile in one bulk request;
/// stops when none were.
async fn delete_gathered(deletes: Arc<Mutex<Deletes>>, store: Arc<dyn ObjectStore>) {
    // Dropped unfinished (its runtime shut down): the next batch to delete starts a task.
    struct Running(Arc<Mutex<Deletes>>, bool);
    impl Drop for Running {
        fn drop(&mut self) {
            if !self.1 {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).running = false;
            }
        }
    }
    let mut running = Running(deletes, false);
    loop {
        tokio::time::sleep(DELETE_GATHER).await;
        let keys = {
            let mut d = running.0.lock().unwrap_or_else(|p| p.into_inner());
            if d.keys.is_empty() {
                // Under the lock: a batch handed over from now on starts a new task.
                d.running = false;
                drop(d);
                running.1 = true;
                return;
            }
            std::mem::take(&mut d.keys)
        };
        if let (_, Some(error)) = delete_all(&store, keys).await {
            tracing::warn!(%error, "could not delete a log batch");
        }
    }
}

/// What a slot holds after a round's write.
enum Written {
    /// This round's batch.
    Ours,
    /// A taker's fence.
    Fence(Fence),
    /// A batch of an earlier round whose write failed but landed after all.
    Earlier,
}

/// Writes a round's batch into `slot` (create-only, retried). An error is the store's, as
/// text (every waiter gets it); the slot is then unresolved.
async fn write_slot(
    place: &LogPlace,
    slot: SlotId,
    bytes: &[u8],
) -> std::result::Result<Written, String> {
    let key = slot_key(&place.dir, slot);
    let payload = PutPayload::from(bytes.to_vec());
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match place.store.put_opts(&key, payload.clone(), PutOptions::from(PutMode::Create)).await {
            Ok(_) => return Ok(Written::Ours),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = match place.store.get(&key).await {
                    Ok(r) => r.bytes().await.map_err(|e| format!("get {key}: {e}"))?,
                    Err(e) => return Err(format!("get {key}: {e}")),
                };
                // A retry after an attempt that landed: the same bytes count as done.
                if there.as_ref() == bytes {
                    return Ok(Written::Ours);
                }
                return match decode_slot(&there, key.as_ref()) {
                    Ok(Slot::Fence(fence)) => Ok(Written::Fence(fence)),
                    Ok(Slot::Batch(_)) => Ok(Written::Earlier),
                    Err(e) => Err(format!("{key} holds something else: {e}")),
                };
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(key = %key, attempt, error = %e, "log batch upload failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(format!("put {key}: {e}")),
        }
    }
}

/// The object's history held only in shared logs: the confirmed deltas of writers that
/// did not upload them as segments themselves (killed, or fenced), for terms from `newest`
/// down to the first term whose holder is known to have moved older deltas into segments
/// (it released the object, or wrote its `from` marker). Only deltas past `after` (the
/// newest position the segments and snapshots hold, `None` when they hold none) and before
/// the next term's start are returned, in
/// history order, each as (segment name, segment bytes). With a `cache` (the reading
/// node's), batches read before are not fetched again.
pub(crate) async fn logged_segments(
    archive: &Archive,
    leases: &Leases,
    newest: u32,
    after: Option<u64>,
    cache: Option<&SlotCache>,
) -> Result<Vec<(SegName, Vec<u8>)>> {
    let root = root_of(&archive.prefix);
    let mut out: BTreeMap<(u64, std::cmp::Reverse<u64>), (SegName, Vec<u8>)> = BTreeMap::new();
    let mut read: BTreeSet<String> = BTreeSet::new();
    for term in (1..=newest).rev() {
        if leases.claims.contains(&term) {
            let owner = crate::lease::read_claim(archive, term).await?;
            let dir = log_dir(root, &owner.node, &owner.instance);
            if read.insert(dir.clone()) {
                let batches = read_log(&archive.store, &dir, cache).await?;
                // Only this object's deltas are copied out of the (shared, cached) batches.
                for delta in batches.iter().flat_map(|b| b.iter()) {
                    let n = delta.name;
                    if delta.object == archive.prefix
                        && after.is_none_or(|a| n.last_seq > a)
                        && n.last_seq < leases.limit(n.term)
                    {
                        let key = (n.first_seq, std::cmp::Reverse(n.last_seq));
                        out.insert(key, (n, delta.bytes.clone()));
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
/// released with its history uploaded), then the instance's fences once its batches are
/// gone and the instance is `gone`. `live` says whether an instance of a node still runs
/// (its heartbeat); `gone`, whether it surely never runs again: its node's heartbeat names
/// a later instance. A stopped instance may only be paused: one that comes back finds the
/// fences of the objects taken from it in its lanes' next slots, so they stay until its
/// process is surely gone (a later instance of the node holds its data folder's lock).
/// Returns how many objects were deleted.
pub(crate) async fn sweep(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    live: impl Fn(&str, &str) -> bool,
    gone: impl Fn(&str, &str) -> bool,
) -> Result<usize> {
    let top = StorePath::from(match root.trim_end_matches('/') {
        "" => "_log".to_owned(),
        root => format!("{root}/_log"),
    });
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&top)).try_collect().await.map_err(store_error("list", &top))?;
    // Per (node, instance): its slots, and the fence markers of logs written before fences
    // took slots.
    let mut dirs: BTreeMap<(String, String), (Vec<StorePath>, Vec<StorePath>)> = BTreeMap::new();
    for meta in metas {
        let Some(rest) = meta.location.prefix_match(&top) else { continue };
        let parts: Vec<String> = rest.map(|p| p.as_ref().to_owned()).collect();
        match parts.as_slice() {
            [node, instance, fenced, _] if fenced == "fenced" => {
                let slot = dirs.entry((node.clone(), instance.clone())).or_default();
                slot.1.push(meta.location);
            }
            [node, instance, rest @ ..] if parse_slot(rest).is_some() => {
                let slot = dirs.entry((node.clone(), instance.clone())).or_default();
                slot.0.push(meta.location);
            }
            _ => {}
        }
    }
    let mut doomed = Vec::new();
    let mut leases: HashMap<String, Leases> = HashMap::new();
    for ((node, instance), (slots, markers)) in dirs {
        if live(&node, &instance) {
            continue;
        }
        let gone = gone(&node, &instance);
        // An instance whose log cannot be read (a slot unreadable or corrupt, its objects'
        // leases unreadable) keeps everything this time; the others are still swept.
        match instance_leftovers(store, slots, markers, gone, &mut leases).await {
            Ok(keys) => doomed.extend(keys),
            Err(error) => {
                tracing::warn!(%error, node, instance, "not sweeping a stopped node's log");
            }
        }
    }
    match delete_all(store, doomed).await {
        (deleted, None) => Ok(deleted),
        (_, Some(e)) => Err(store_error("delete", &top)(e)),
    }
}

/// What one stopped instance's log no longer needs: its batches whose every delta a later
/// holder of the object has moved into segments (or whose term was released), and, once
/// none of its batches is left and the instance is `gone`, its fences and fence markers.
async fn instance_leftovers(
    store: &Arc<dyn ObjectStore>,
    slots: Vec<StorePath>,
    mut markers: Vec<StorePath>,
    gone: bool,
    leases: &mut HashMap<String, Leases>,
) -> Result<Vec<StorePath>> {
    let mut doomed = Vec::new();
    let mut left = 0;
    for key in slots {
        let bytes = match store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(store_error("get", &key))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store_error("get", &key)(e)),
        };
        let deltas = match decode_slot(&bytes, key.as_ref())? {
            Slot::Batch(deltas) => deltas,
            Slot::Fence(_) => {
                markers.push(key);
                continue;
            }
        };
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
        } else {
            doomed.push(key);
        }
    }
    if left == 0 && gone {
        doomed.extend(markers);
    }
    Ok(doomed)
}

/// Deletes `keys` with as few requests as the store allows (S3's `DeleteObjects`, 1,000
/// keys each, through object_store's `delete_stream`); absent keys count as deleted.
/// Returns how many went, and the first failure (the other keys are still tried).
async fn delete_all(
    store: &Arc<dyn ObjectStore>,
    keys: Vec<StorePath>,
) -> (usize, Option<object_store::Error>) {
    let (mut deleted, mut failed) = (0, None);
    let stream = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
    let mut outcomes = store.delete_stream(stream);
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (deleted, failed)
}

/// The batches of the log folder `dir`, in slot order (batches deleted meanwhile are
/// empty: their deltas are in segments; so are fences).
async fn read_log(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    cache: Option<&SlotCache>,
) -> Result<Vec<Arc<Vec<Delta>>>> {
    let keys: Vec<StorePath> = list_slots(store, dir).await?.into_iter().map(|(_, k)| k).collect();
    let cells = match cache {
        Some(cache) => cache.cells(dir, &keys),
        None => keys.iter().map(|_| Arc::default()).collect(),
    };
    // Owned futures (nothing borrowed across the stream), so that the opening stays `Send`.
    let reads: Vec<_> = keys
        .into_iter()
        .zip(cells)
        .map(|(key, cell)| read_cached(store.clone(), key, cell))
        .collect();
    futures_util::stream::iter(reads).buffered(READS_AT_ONCE).try_collect().await
}

/// The deltas of the batch in `key`, from `cell` once read (by this reader or another).
async fn read_cached(
    store: Arc<dyn ObjectStore>,
    key: StorePath,
    cell: Arc<tokio::sync::OnceCell<Arc<Vec<Delta>>>>,
) -> Result<Arc<Vec<Delta>>> {
    cell.get_or_try_init(|| read_batch(&store, &key)).await.cloned()
}

/// The deltas of the batch in `key`: none if it holds a fence, or was deleted since it
/// was listed (a slot once deleted is never written again).
async fn read_batch(store: &Arc<dyn ObjectStore>, key: &StorePath) -> Result<Arc<Vec<Delta>>> {
    let bytes = match store.get(key).await {
        Ok(r) => r.bytes().await.map_err(store_error("get", key))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Arc::default()),
        Err(e) => return Err(store_error("get", key)(e)),
    };
    Ok(Arc::new(match decode_slot(&bytes, key.as_ref())? {
        Slot::Batch(deltas) => deltas,
        Slot::Fence(_) => Vec::new(),
    }))
}

/// Batches of a log read at once.
const READS_AT_ONCE: usize = 16;

/// One cached slot: when it was first asked for, and its deltas once read.
type CachedSlot = (std::time::Instant, Arc<tokio::sync::OnceCell<Arc<Vec<Delta>>>>);

/// Batches a node read from other instances' logs, by key. A slot's content never changes
/// once written (create-only), so when a node takes over many objects of a stopped one at
/// once, each opening reads the same log but each batch is fetched once, not once per
/// object (a kill in the failover test hands each surviving node about 17 objects of one
/// log). What a reader asks for at the same time is fetched once too. Every listing is
/// fresh: the cache only saves the reads. Part of [`crate::Node`]. Kept [`CACHE_FOR`];
/// the slots of a log no longer listed go at its next reading.
#[derive(Default)]
pub(crate) struct SlotCache {
    slots: Mutex<HashMap<String, CachedSlot>>,
}

/// How long a [`SlotCache`] keeps a slot: longer than the takeovers after one node's
/// loss take.
const CACHE_FOR: Duration = Duration::from_secs(30);

impl SlotCache {
    /// The cells of `keys`, the slots of `dir` as just listed (forgetting the slots of
    /// `dir` no longer listed, and every slot kept longer than [`CACHE_FOR`]).
    fn cells(
        &self,
        dir: &str,
        keys: &[StorePath],
    ) -> Vec<Arc<tokio::sync::OnceCell<Arc<Vec<Delta>>>>> {
        let now = std::time::Instant::now();
        let listed: BTreeSet<&str> = keys.iter().map(|k| k.as_ref()).collect();
        let inside = format!("{dir}/");
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|key, (since, _)| {
            now.duration_since(*since) < CACHE_FOR
                && (!key.starts_with(&inside) || listed.contains(key.as_str()))
        });
        keys.iter()
            .map(|key| {
                slots.entry(key.to_string()).or_insert_with(|| (now, Arc::default())).1.clone()
            })
            .collect()
    }
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
        assert_eq!(
            slot_key("ns/_log/n1/ab", (2, 26)).as_ref(),
            "ns/_log/n1/ab/02/000000000000001a"
        );
        assert_eq!(
            slot_key("ns/_log/n1/ab", (FLAT, 26)).as_ref(),
            "ns/_log/n1/ab/000000000000001a"
        );
        let parts = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(parse_slot(&parts("02/000000000000001a")), Some((2, 26)));
        assert_eq!(parse_slot(&parts("000000000000001a")), Some((FLAT, 26)));
        assert_eq!(parse_slot(&parts("fenced/000000000000001a")), None);
        assert_eq!(parse_slot(&parts("2/000000000000001a")), None);
    }

    #[test]
    fn the_floor_is_the_shortest_round_of_the_last_window() {
        let ms = Duration::from_millis;
        let mut floor = Floor::default();
        assert!(!floor.is_near(), "unknown before the first round");
        floor.add(ms(30));
        assert_eq!(floor.current, ms(30), "the first round's until a window is done");
        assert!(!floor.is_near());
        for _ in 1..FLOOR_WINDOW - 1 {
            floor.add(ms(40));
        }
        floor.add(ms(2));
        assert_eq!(floor.current, ms(2), "a near store: one lane");
        assert!(floor.is_near());
        for _ in 0..FLOOR_WINDOW {
            floor.add(ms(25));
        }
        assert_eq!(floor.current, ms(25), "a far store: every lane");
        assert!(floor.current >= SLOW_STORE);
        assert!(!floor.is_near());
    }

    #[test]
    fn a_slot_holds_a_batch_or_a_fence() {
        let fence = Fence { object: "ns/room.sqlite".into(), term: 2, by: "b".into() };
        let bytes = encode_fence(&fence);
        assert!(matches!(decode_slot(&bytes, "x").unwrap(), Slot::Fence(f) if f == fence));
        let a = delta("ns/a.sqlite", 1, 4);
        let batch = encode_batch(&[&a]);
        assert!(matches!(decode_slot(&batch, "x").unwrap(), Slot::Batch(d) if d == vec![a]));
        let err = decode_slot(&bytes[..bytes.len() - 1], "x").unwrap_err().to_string();
        assert!(err.contains("corrupt x") && err.contains("fence"), "{err}");
        assert!(decode_slot(b"something else", "x").is_err());
    }

    #[test]
    fn the_slot_cache_shares_a_slot_and_forgets_what_its_log_no_longer_lists() {
        let cache = SlotCache::default();
        let keys = |dir: &str, slots: &[u64]| -> Vec<StorePath> {
            slots.iter().map(|&n| slot_key(dir, (0, n))).collect()
        };
        let first = cache.cells("ns/_log/a/i", &keys("ns/_log/a/i", &[1, 2, 3]));
        let other = cache.cells("ns/_log/b/j", &keys("ns/_log/b/j", &[1]));
        assert!(first[1].set(Arc::new(vec![delta("ns/r.sqlite", 1, 1)])).is_ok());
        // Listed again: the same cells (one fetch for every reader), the read kept.
        let again = cache.cells("ns/_log/a/i", &keys("ns/_log/a/i", &[2, 3, 4]));
        assert!(Arc::ptr_eq(&first[1], &again[0]) && Arc::ptr_eq(&first[2], &again[1]));
        assert_eq!(again[0].get().map(|d| d.len()), Some(1));
        let slots = cache.slots.lock().unwrap();
        // Slot 1 of a's log is gone from its listing, so from the cache; b's log is kept.
        assert!(!slots.contains_key(&slot_key("ns/_log/a/i", (0, 1)).to_string()));
        assert!(Arc::ptr_eq(&slots[&slot_key("ns/_log/b/j", (0, 1)).to_string()].1, &other[0]));
        assert_eq!(slots.len(), 4);
    }
}
