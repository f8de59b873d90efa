//! The alarm scheduler: sleeps until the earliest alarm in the namespace's index, then
//! starts the runtimes of exactly the objects whose alarm is due.
//!
//! ```text
//!  loop:
//!    due = index.alarms where at_ms <= now          (one indexed query, no object opened)
//!    release the runtimes whose alarm is no longer due (fired, re-armed later, deleted)
//!    start ns.object(name) for each due name not running yet
//!         └─ the runtime opens the object; its alarm timer fires at once; the handler's
//!            commit clears (or moves) the alarm; the listener updates the index and wakes us
//!    sleep until min(at_ms > now) on the namespace's clock, or an index change
//! ```
//!
//! Alarms that came due while the process was down are simply due at the first pass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use durable_txn::{Actor, Storage};

use crate::error::{Error, Result};
use crate::namespace::{Namespace, ObjectHandle};

/// How long the scheduler waits before trying again after an error.
const RETRY: Duration = Duration::from_millis(100);

/// A running alarm scheduler, from [`Namespace::run_alarms`]. It runs as a tokio task until
/// [`stop`](AlarmScheduler::stop) is called or it is dropped; stopping lets go of the
/// objects it woke (their runtimes stop once their events finish).
#[derive(Debug)]
pub struct AlarmScheduler {
    task: tokio::task::JoinHandle<()>,
    started: Arc<AtomicU64>,
}

impl AlarmScheduler {
    /// How many object runtimes the scheduler has started (or joined) for due alarms.
    pub fn woken_count(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Stops the scheduler.
    pub fn stop(self) {
        // Dropping aborts the task.
    }
}

impl Drop for AlarmScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Namespace {
    /// Starts the namespace's alarm scheduler on the current tokio runtime: whenever an
    /// object's indexed alarm is due (on [`NamespaceOptions::clock`]), it starts that object's
    /// runtime with the actor `make(name, storage)` builds, through [`Namespace::object`], and
    /// the runtime delivers the alarm. Objects whose alarm is not due are never opened.
    /// Alarms that came due while no scheduler ran (the process was down) fire at once.
    ///
    /// The scheduler keeps a woken object's runtime until its indexed alarm is no longer due
    /// (the handler succeeded, re-armed for later, or gave up after its retries), then lets
    /// it go, so the object closes unless someone else uses it.
    ///
    /// Fails with [`Error::NoRuntime`] outside a tokio runtime.
    ///
    /// [`NamespaceOptions::clock`]: crate::NamespaceOptions::clock
    pub fn run_alarms<A: Actor>(
        &self,
        make: impl Fn(&str, &Storage) -> A + Send + Sync + 'static,
    ) -> Result<AlarmScheduler> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::NoRuntime);
        };
        let started = Arc::new(AtomicU64::new(0));
        let task = runtime.spawn(run(self.clone(), Arc::new(make), started.clone()));
        Ok(AlarmScheduler { task, started })
    }
}

type Make<A> = Arc<dyn Fn(&str, &Storage) -> A + Send + Sync>;

async fn run<A: Actor>(ns: Namespace, make: Make<A>, started: Arc<AtomicU64>) {
    let shared = ns.shared().clone();
    let clock = shared.options.clock.clone();
    let mut running: HashMap<String, ObjectHandle<A>> = HashMap::new();
    loop {
        let now = clock.now_ms();
        let (next, retry) = match pass(&ns, &make, &mut running, now, &started) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "alarm scheduler pass failed");
                (None, true)
            }
        };
        let sleep = async {
            match next {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let retry_sleep = async {
            if retry {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = shared.changed.notified() => {}
            () = sleep => {}
            () = retry_sleep => {}
        }
    }
}

/// One pass: release, start, and return the next wake-up time and whether an object was
/// busy (try again soon).
fn pass<A: Actor>(
    ns: &Namespace,
    make: &Make<A>,
    running: &mut HashMap<String, ObjectHandle<A>>,
    now: i64,
    started: &AtomicU64,
) -> Result<(Option<i64>, bool)> {
    let shared = ns.shared();
    let due = shared.index.due(now)?;
    let due_names: HashSet<&str> = due.iter().map(|(n, _)| n.as_str()).collect();
    running.retain(|name, _| due_names.contains(name.as_str()));
    let mut busy = false;
    for (name, at_ms) in &due {
        if running.contains_key(name) {
            continue;
        }
        let make = make.clone();
        let object_name = name.clone();
        match ns.object(name, move |s: &Storage| make(&object_name, s)) {
            Ok(handle) => {
                tracing::debug!(name, at_ms, "waking object for its alarm");
                started.fetch_add(1, Ordering::SeqCst);
                running.insert(name.clone(), handle);
            }
            Err(Error::Busy { .. }) => busy = true,
            Err(error) => {
                tracing::warn!(%error, name, "object with a due alarm could not be started");
                busy = true;
            }
        }
    }
    Ok((shared.index.next_after(now)?, busy))
}
