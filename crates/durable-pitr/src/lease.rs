//! Single-writer leases with fencing, kept in the archive store itself.
//!
//! Several processes (*nodes*), each with its own data folder, may share one archive. Each
//! object has one writer at a time: the node holding its lease. Everything is written with
//! create-only puts (`PutMode::Create`, S3's `If-None-Match: *`), the one conditional write
//! every object_store backend implements, the local folder included; liveness is a per-node
//! heartbeat the node overwrites.
//!
//! Under an object's prefix, `lease/` holds, for each *term* (the fencing epoch, from 1):
//!
//! - `{term:08x}`: the claim, created once by the node that took the term; JSON naming the
//!   node, its instance (one per process run), the address it advertises and when.
//! - `{term:08x}.from-{seq:016x}`: written by the claim's holder before its first upload:
//!   the first position of history it may write. History of lower terms at or past it is
//!   superseded (a fenced writer's late uploads), and readers ignore it.
//! - `{term:08x}.released`: the holder closed the object with its history uploaded; the
//!   next node may take it at once.
//!
//! Under the namespace's root, `_nodes/{node}` is each node's heartbeat (instance, address,
//! `expires_ms`), overwritten every third of the lease. A claim is *live* while its node's
//! heartbeat names the claim's instance and has not expired. Opening an object takes the
//! next term when the newest claim is released, dead, or was made by this node's folder
//! before (the folder's lock proves that process gone); otherwise it fails with
//! [`ArchiveError::LeaseHeld`] naming the owner.
//!
//! Fencing: after every upload of history (and before every delete), the writer checks
//! that the next term's claim does not exist; if it does, the upload fails with
//! [`ArchiveError::Fenced`] and the archiver stops for good. A taker claims first and lists
//! the archive after, so everything a fenced writer uploaded before its check failed is in
//! the taker's view, and everything after is superseded by the taker's `from` marker.
//! Commits a writer confirmed through its node's shared log rather than as segments are
//! fenced the same way with a marker in that log, written before the claim (`log.rs`).
//!
//! Expiry compares the owner's wall clock (in the heartbeat) with the taker's: clocks must
//! agree to well within a lease (10 s by default). Fencing keeps history safe either way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, hex_field as hex, store_error};
use crate::clock::{Clock, SystemClock};
use crate::error::{ArchiveError, Error, Result};
use crate::log::{LogPlace, SharedLog};

/// A process that takes part in leases: its id (stable across restarts, one per data
/// folder), this run's instance, the address it advertises, and how long its leases last.
pub struct Node {
    store: Arc<dyn ObjectStore>,
    root: String,
    id: String,
    instance: String,
    address: Option<String>,
    lease: Duration,
    clock: Arc<dyn Clock>,
    /// The shared log of this instance (`Replicated` uploads, see `log.rs`).
    log: Arc<SharedLog>,
    /// Batches read from other instances' logs while taking objects over.
    slots: crate::log::SlotCache,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("instance", &self.instance)
            .field("address", &self.address)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A node's heartbeat, as stored in `_nodes/{node}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Heartbeat {
    instance: String,
    address: Option<String>,
    expires_ms: i64,
}

/// The node holding (or last holding) an object's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Owner {
    /// The node's id.
    pub node: String,
    /// The node's run that took the lease.
    pub instance: String,
    /// The address the node advertises (to forward requests to it), if any.
    pub address: Option<String>,
    /// The lease's term (fencing epoch).
    pub term: u32,
    /// When the lease was taken (ms since the Unix epoch).
    pub acquired_ms: i64,
    /// The lease is held now: not released, and its node's heartbeat is current.
    #[serde(skip)]
    pub live: bool,
}

/// What `lease/` holds for one object.
#[derive(Debug, Default, Clone)]
pub(crate) struct Leases {
    pub claims: BTreeSet<u32>,
    pub from: BTreeMap<u32, u64>,
    pub released: BTreeSet<u32>,
}

impl Leases {
    fn parse(names: impl IntoIterator<Item = String>) -> Leases {
        let mut out = Leases::default();
        for name in names {
            let term = name.get(..8).and_then(|t| hex(t, 8)).and_then(|t| u32::try_from(t).ok());
            let Some(term) = term else { continue };
            match &name[8..] {
                "" => {
                    out.claims.insert(term);
                }
                ".released" => {
                    out.released.insert(term);
                }
                rest => match rest.strip_prefix(".from-").and_then(|s| hex(s, 16)) {
                    Some(seq) => {
                        out.from.insert(term, seq);
                    }
                    None => {
                        tracing::warn!(name, "ignoring a foreign object in the archive's lease/")
                    }
                },
            }
        }
        out
    }

    /// The newest term claimed (0: none).
    pub(crate) fn newest(&self) -> u32 {
        self.claims.last().copied().unwrap_or(0)
    }

    /// The first position history of `term` may not reach: the lowest `from` of a later
    /// term (`u64::MAX` when none).
    pub(crate) fn limit(&self, term: u32) -> u64 {
        self.from.range(term.saturating_add(1)..).map(|(_, s)| *s).min().unwrap_or(u64::MAX)
    }
}

pub(crate) fn claim_key(term: u32) -> String {
    format!("lease/{term:08x}")
}

impl Node {
    /// A node `id` (unique among the nodes sharing `store`) whose heartbeat lives under
    /// `root` (the namespace's folder in the store), advertising `address`, with leases of
    /// `lease`. Each `Node` value is a new instance: leases taken by earlier instances with
    /// the same id are taken over at once.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: impl Into<String>,
        id: impl Into<String>,
        address: Option<String>,
        lease: Duration,
    ) -> Result<Node> {
        let instance = hex::encode(crate::archiver::random_bytes::<8>()?);
        Ok(Node {
            store,
            root: root.into(),
            id: id.into(),
            instance,
            address,
            lease,
            clock: Arc::new(SystemClock),
            log: Arc::new(SharedLog::new()),
            slots: Default::default(),
        })
    }

    /// Replaces the clock that stamps heartbeats and judges expiry.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Node {
        self.clock = clock;
        self
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This run's instance id (random).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The address the node advertises.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// How long a lease lasts without a heartbeat.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The folder in the store this node's heartbeat and log are under (the namespace's).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The batches this node read from other instances' logs (see `log.rs`).
    pub(crate) fn slot_cache(&self) -> &crate::log::SlotCache {
        &self.slots
    }

    /// This instance's shared log and where it writes.
    pub(crate) fn log(&self) -> (&Arc<SharedLog>, LogPlace) {
        let place = LogPlace {
            store: self.store.clone(),
            dir: crate::log::log_dir(&self.root, &self.id, &self.instance),
        };
        (&self.log, place)
    }

    /// Deletes what the shared logs of stopped instances (this node's earlier runs, dead
    /// nodes) no longer need to hold: batches whose every commit a later holder of its object
    /// has moved into segments (or whose holder released the object with its history
    /// uploaded), and the fences of instances without batches whose node has started a
    /// later instance since (a paused instance that comes back must find them). Batches
    /// holding commits of objects nobody took over yet stay: they are the only copy.
    /// Returns how many store objects were deleted. The namespace runs it now and then in the background.
    pub async fn sweep_logs(&self) -> Result<usize> {
        let mut live = BTreeSet::new();
        // Per node, the instance its heartbeat names, expired or not.
        let mut newest = std::collections::HashMap::new();
        let nodes = StorePath::from(if self.root.is_empty() {
            "_nodes".to_owned()
        } else {
            format!("{}/_nodes", self.root.trim_end_matches('/'))
        });
        let metas: Vec<object_store::ObjectMeta> =
            futures_util::TryStreamExt::try_collect(self.store.list(Some(&nodes)))
                .await
                .map_err(store_error("list", &nodes))?;
        for meta in metas {
            let Some(node) = meta.location.filename() else { continue };
            let beat = match self.store.get(&meta.location).await {
                Ok(r) => r.bytes().await.ok(),
                Err(_) => None,
            };
            let Some(beat) = beat.and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok()) else {
                continue;
            };
            if beat.expires_ms > self.clock.now_ms() {
                live.insert((node.to_owned(), beat.instance.clone()));
            }
            newest.insert(node.to_owned(), beat.instance);
        }
        live.insert((self.id.clone(), self.instance.clone()));
        newest.insert(self.id.clone(), self.instance.clone());
        crate::log::sweep(
            &self.store,
            &self.root,
            |node, instance| live.contains(&(node.to_owned(), instance.to_owned())),
            |node, instance| newest.get(node).is_some_and(|n| n != instance),
        )
        .await
    }

    /// Batches of this node's shared log still holding commits their objects have not
    /// uploaded as segments (0 when every object's history is in its own segments).
    pub fn log_batches(&self) -> usize {
        self.log.live_batches()
    }

    /// Whether the store answered this node's shared log quickly of late (its shortest
    /// round under 10 ms, as a server on the same machine or network does): the log then
    /// runs one round at a time, and other uploads compete with it for the same server.
    /// `false` before the log's first round.
    pub fn store_is_near(&self) -> bool {
        self.log.store_is_near()
    }

    fn heartbeat_key(&self, node: &str) -> StorePath {
        let rest = format!("_nodes/{node}");
        if self.root.is_empty() {
            StorePath::from(rest)
        } else {
            StorePath::from(format!("{}/{rest}", self.root.trim_end_matches('/')))
        }
    }

    /// Says this node is alive for one more lease. Call it at least every third of the
    /// lease (the namespace does, in the background).
    pub async fn heartbeat(&self) -> Result<()> {
        let expires = self.clock.now_ms().saturating_add(self.lease.as_millis() as i64);
        self.put_heartbeat(expires).await
    }

    async fn put_heartbeat(&self, expires_ms: i64) -> Result<()> {
        let beat = Heartbeat {
            instance: self.instance.clone(),
            address: self.address.clone(),
            expires_ms,
        };
        let bytes = serde_json::to_vec(&beat).expect("a heartbeat serializes");
        let key = self.heartbeat_key(&self.id);
        self.store.put(&key, PutPayload::from(bytes)).await.map_err(store_error("put", &key))?;
        Ok(())
    }

    /// True when `node`'s heartbeat names `instance` and has not expired.
    async fn alive(&self, node: &str, instance: &str) -> Result<bool> {
        let key = self.heartbeat_key(node);
        let bytes = match self.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(store_error("get", &key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(store_error("get", &key)(e)),
        };
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(&bytes) else {
            tracing::warn!(key = %key, "unreadable heartbeat: taken as expired");
            return Ok(false);
        };
        Ok(beat.instance == instance && beat.expires_ms > self.clock.now_ms())
    }

    /// The node holding (or, with `live` false, last holding) the lease of the object
    /// archived as `config` says; `None` when no node ever took it. Reads the archive only.
    pub async fn owner(&self, config: &crate::ArchiveConfig) -> Result<Option<Owner>> {
        let archive = &Archive::reading(config);
        let leases = read_leases(archive).await?;
        let term = leases.newest();
        if term == 0 {
            return Ok(None);
        }
        let mut owner = read_claim(archive, term).await?;
        owner.live =
            !leases.released.contains(&term) && self.alive(&owner.node, &owner.instance).await?;
        Ok(Some(owner))
    }

    /// Takes the object's next term, or fails with [`ArchiveError::LeaseHeld`]. Returns the
    /// new term, the one before it (0: none), and `lease/` as it was when the term was taken.
    ///
    /// Taking over a term that was not released first fences it in its holder's shared log
    /// (`log.rs`): the holder's next round refuses the object's commits.
    pub(crate) async fn acquire(&self, archive: &Archive) -> Result<(u32, u32, Leases)> {
        for _ in 0..8 {
            let leases = read_leases(archive).await?;
            let previous = leases.newest();
            if previous > 0 && !leases.released.contains(&previous) {
                let owner = read_claim(archive, previous).await?;
                // The same node id is this data folder, whose lock this process holds: the
                // run that made the claim is gone.
                if owner.node != self.id && self.alive(&owner.node, &owner.instance).await? {
                    return Err(Error::Archive(ArchiveError::LeaseHeld {
                        node: owner.node,
                        address: owner.address,
                        term: previous,
                    }));
                }
                crate::log::write_fence(
                    &archive.store,
                    crate::log::root_of(&archive.prefix),
                    (&owner.node, &owner.instance),
                    &archive.prefix,
                    previous,
                    &self.id,
                )
                .await?;
            }
            let term = previous.checked_add(1).ok_or_else(|| {
                crate::error::corrupt(archive.key("lease").to_string(), "no term left")
            })?;
            let claim = Owner {
                node: self.id.clone(),
                instance: self.instance.clone(),
                address: self.address.clone(),
                term,
                acquired_ms: self.clock.now_ms(),
                live: true,
            };
            let bytes = serde_json::to_vec(&claim).expect("a claim serializes");
            let key = archive.key(&claim_key(term));
            match archive
                .store
                .put_opts(&key, PutPayload::from(bytes), PutOptions::from(PutMode::Create))
                .await
            {
                Ok(_) => return Ok((term, previous, leases)),
                // Another node claimed the term first: look again.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(store_error("put", &key)(e)),
            }
        }
        Err(crate::error::corrupt(
            archive.key("lease").to_string(),
            "the lease kept changing hands while this node tried to take it",
        ))
    }
}

/// Lists `lease/`.
pub(crate) async fn read_leases(archive: &Archive) -> Result<Leases> {
    Ok(Leases::parse(archive.list("lease").await?.into_iter().map(|(name, _)| name)))
}

pub(crate) async fn read_claim(archive: &Archive, term: u32) -> Result<Owner> {
    let key = claim_key(term);
    let bytes =
        archive.get(&key).await?.ok_or_else(|| crate::error::missing(format!("claim {key}")))?;
    serde_json::from_slice(&bytes).map_err(|e| crate::error::corrupt(key, e.to_string()))
}

/// Writes an empty marker object (create-only; already there is fine).
pub(crate) async fn mark(archive: &Archive, rest: &str) -> Result<()> {
    let key = archive.key(rest);
    match archive.store.put_opts(&key, PutPayload::new(), PutOptions::from(PutMode::Create)).await {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(store_error("put", &key)(e)),
    }
}

/// Fails with [`ArchiveError::Fenced`] when a term after `term` has been claimed.
pub(crate) async fn check_fence(archive: &Archive, term: u32) -> Result<()> {
    let key = archive.key(&claim_key(term + 1));
    match archive.store.head(&key).await {
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Ok(_) => {
            let by = match read_claim(archive, term + 1).await {
                Ok(owner) => owner.node,
                Err(_) => "another node".into(),
            };
            Err(Error::Archive(ArchiveError::Fenced { term, by }))
        }
        Err(e) => Err(store_error("head", &key)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_parse_and_limits_come_from_later_terms() {
        let names = [
            "00000001",
            "00000001.from-0000000000000000",
            "00000001.released",
            "00000002",
            "00000002.from-0000000000000010",
            "00000003",
            "00000003.from-0000000000000014",
            "README",
            "0000000x",
        ];
        let leases = Leases::parse(names.iter().map(|s| s.to_string()));
        assert_eq!(leases.newest(), 3);
        assert_eq!(leases.claims.len(), 3);
        assert!(leases.released.contains(&1) && !leases.released.contains(&2));
        assert_eq!(leases.limit(0), 0, "term 0 history is superseded from term 1's start");
        assert_eq!(leases.limit(1), 0x10);
        assert_eq!(leases.limit(2), 0x14);
        assert_eq!(leases.limit(3), u64::MAX, "the newest term is unlimited");
    }
}
