//! The process-wide pool of threads that make group-committed databases durable: each job is
//! one database's pipeline, synced until every commit handed over is durable.
//!
//! Plain threads, not an async runtime's: syncs mostly wait on the disk, must finish even
//! while a program's runtime shuts down, and this crate knows nothing of async runtimes.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::pipeline::Pipeline;

/// Most pool threads syncing at once. Syncs mostly wait on the disk, and the more of them
/// are in flight the more the filesystem folds into one journal commit (measured here: 64
/// files synced by 1 thread 3.1 k/s, 16 threads 9.0 k/s, 64 threads 10.1 k/s).
const MAX_THREADS: usize = 32;

/// How long an idle pool thread waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Arc<Pipeline>>,
    threads: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool { state: Mutex::new(PoolState::default()), work: Condvar::new() })
}

/// Queues `pipeline` for a sync (its `running` flag is set by the caller).
pub(crate) fn submit(pipeline: Arc<Pipeline>) {
    pool().submit(pipeline);
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&'static self, pipeline: Arc<Pipeline>) {
        let mut state = self.lock();
        state.queue.push_back(pipeline);
        if state.idle > 0 {
            self.work.notify_one();
        }
        // More work queued than idle threads to wake: start another thread.
        if state.queue.len() > state.idle && state.threads < MAX_THREADS {
            let spawned = std::thread::Builder::new()
                .name("durable-sync".into())
                .spawn(move || self.worker());
            match spawned {
                Ok(_) => state.threads += 1,
                Err(_) if state.threads == 0 => {
                    // No thread at all: sync here rather than never.
                    let queued: Vec<_> = state.queue.drain(..).collect();
                    drop(state);
                    for pipeline in queued {
                        pipeline.drain();
                    }
                }
                // The threads running will get to it.
                Err(_) => {}
            }
        }
    }

    fn worker(&self) {
        let mut state = self.lock();
        loop {
            if let Some(pipeline) = state.queue.pop_front() {
                drop(state);
                pipeline.drain();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) =
                self.work.wait_timeout(state, IDLE).unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}
