//! Waiting for commits to become durable: the SQL layer's commit pipeline, seen from async
//! code.
//!
//! ```text
//!  turn 1 ─ COMMIT (seq 7) ─► pipeline: fsync on a sync thread ─► Durable{7} ─► results of turn 1 out
//!  turn 2 ─ COMMIT (seq 8) ─┐                   (turn 2 ran meanwhile)
//!  turn 3 ─ COMMIT (seq 9) ─┴───────────────► one fsync ─► Durable{9} ─► results of turns 2, 3
//! ```
//!
//! A storage subscribes to its database's pipeline and keeps the newest durable sequence
//! number (or the failure that stopped the pipeline) in a watch channel; a turn that
//! committed sequence number `n` hands the runtime a future that resolves once `n` is
//! durable, and the output gate holds the turn's results until then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use durable_sql::{CommitEvent, Database, SubscriptionId};
use tokio::sync::watch;

use crate::error::Error;
use crate::op::Op;

#[derive(Clone, Default)]
struct Progress {
    /// Every commit up to this one is durable.
    durable: u64,
    /// The failure that stopped the pipeline: waits for later commits fail with it.
    error: Option<Error>,
}

fn sync_error(error: &std::io::Error) -> Error {
    Error::WriteFailed(format!("sync failed: {error}"))
}

/// How far an object's commits have reached a second copy beyond the local disk (the
/// archive store), as its host reports it: results wait for this too once a host installs
/// it ([`Storage::set_replication`](crate::Storage::set_replication)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replicated {
    /// Every commit up to this one (the database's commit pipeline numbers) is replicated.
    pub seq: u64,
    /// Commits up to this one that are not replicated yet will not be confirmed: their
    /// results fail with this message (the copy timed out, or this node lost the object).
    pub failed: Option<(u64, String)>,
}

impl Replicated {
    /// Every commit up to `seq` is replicated.
    pub fn up_to(seq: u64) -> Replicated {
        Replicated { seq, failed: None }
    }

    /// Commits up to `seq` not yet replicated fail with `message`.
    pub fn failing(self, seq: u64, message: impl Into<String>) -> Replicated {
        Replicated { failed: Some((seq, message.into())), ..self }
    }
}

/// A storage's view of its database's commit pipeline.
pub(crate) struct Durable {
    db: Database,
    id: SubscriptionId,
    rx: watch::Receiver<Progress>,
    /// The host's replication, when results wait for it too.
    replica: Mutex<Option<watch::Receiver<Replicated>>>,
    /// How many times the database was reset ([`Database::reset`]), counted as the
    /// pipeline's `Reset` events arrive (with the database locked).
    resets: Arc<AtomicU64>,
}

impl Durable {
    pub(crate) fn attach(db: &Database) -> Durable {
        let now = db.commit_progress();
        let (tx, rx) = watch::channel(Progress {
            durable: now.durable,
            error: now.failed.as_deref().map(sync_error),
        });
        let resets = Arc::new(AtomicU64::new(0));
        let counted = resets.clone();
        let id = db.subscribe(Arc::new(move |event: &CommitEvent<'_>| match event {
            CommitEvent::Durable { seq, .. } | CommitEvent::Reset { seq } => {
                if matches!(event, CommitEvent::Reset { .. }) {
                    counted.fetch_add(1, Ordering::Release);
                }
                tx.send_if_modified(|p| {
                    let newer = *seq > p.durable;
                    p.durable = p.durable.max(*seq);
                    newer
                });
            }
            CommitEvent::SyncFailed { error, .. } => {
                tx.send_if_modified(|p| {
                    let first = p.error.is_none();
                    if first {
                        p.error = Some(sync_error(error));
                    }
                    first
                });
            }
            _ => {}
        }));
        Durable { db: db.clone(), id, rx, replica: Mutex::new(None), resets }
    }

    /// The count of the database's resets, kept current by the pipeline (the alarm cache
    /// trusts a value only while it stays the same).
    pub(crate) fn resets(&self) -> Arc<AtomicU64> {
        self.resets.clone()
    }

    /// Makes every later wait also wait for replication (`None`: local durability only).
    pub(crate) fn set_replica(&self, replica: Option<watch::Receiver<Replicated>>) {
        *self.replica.lock().unwrap_or_else(|p| p.into_inner()) = replica;
    }

    /// True when a result of commit `seq` has nothing to wait for: the commit is durable
    /// locally and, when the host asks for replication, replicated. (A commit durable at
    /// once, an fsync inside COMMIT or a sync that was quick, may still wait for its copy.)
    pub(crate) fn settled(&self, seq: u64) -> bool {
        let local = self.db.commit_progress().durable >= seq;
        let replica = self.replica.lock().unwrap_or_else(|p| p.into_inner());
        local && replica.as_ref().is_none_or(|r| r.borrow().seq >= seq)
    }

    /// Resolves once commit `seq` is durable, and replicated when the host asks for it.
    pub(crate) fn wait(&self, seq: u64) -> Op<()> {
        let local = self.wait_local(seq);
        let replica = self.replica.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(mut replica) = replica else { return local };
        let reached = move |r: &Replicated| {
            r.seq >= seq || r.failed.as_ref().is_some_and(|(upto, _)| *upto >= seq)
        };
        let outcome = move |r: &Replicated| match &r.failed {
            Some((_, message)) if r.seq < seq => Err(Error::WriteFailed(message.clone())),
            _ => Ok(()),
        };
        if reached(&replica.borrow()) {
            return match outcome(&replica.borrow()) {
                Ok(()) => local,
                Err(e) => Op::ready(Err(e)),
            };
        }
        let progress = self.rx.clone();
        Op::io(async move {
            local.await?;
            match replica.wait_for(reached).await {
                Ok(r) => outcome(&r),
                // The host stopped reporting: when it stopped the pipeline first (another
                // node took the object over: fenced), that is the reason to give.
                Err(_) => Err(progress.borrow().error.clone().unwrap_or_else(|| {
                    Error::WriteFailed("the object closed before its write was replicated".into())
                })),
            }
        })
    }

    /// Resolves once commit `seq` is durable on the local disk; fails if the pipeline
    /// failed first.
    fn wait_local(&self, seq: u64) -> Op<()> {
        let reached = move |p: &Progress| p.durable >= seq || p.error.is_some();
        let outcome = move |p: &Progress| match &p.error {
            Some(e) if p.durable < seq => Err(e.clone()),
            _ => Ok(()),
        };
        let mut rx = self.rx.clone();
        {
            let now = rx.borrow();
            if reached(&now) {
                return Op::ready(outcome(&now));
            }
        }
        Op::io(async move {
            match rx.wait_for(reached).await {
                Ok(p) => outcome(&p),
                // The database closed: its last handle synced what it had.
                Err(_) => Ok(()),
            }
        })
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.db.unsubscribe(self.id);
    }
}
