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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A storage's view of its database's commit pipeline.
pub(crate) struct Durable {
    db: Database,
    id: SubscriptionId,
    rx: watch::Receiver<Progress>,
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
        Durable { db: db.clone(), id, rx, resets }
    }

    /// The count of the database's resets, kept current by the pipeline (the alarm cache
    /// trusts a value only while it stays the same).
    pub(crate) fn resets(&self) -> Arc<AtomicU64> {
        self.resets.clone()
    }

    /// Resolves once commit `seq` is durable; fails if the pipeline failed first.
    pub(crate) fn wait(&self, seq: u64) -> Op<()> {
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
