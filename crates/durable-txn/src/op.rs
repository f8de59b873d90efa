//! `Op`: the future a storage call returns.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Error;

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// The future a storage call returns.
///
/// The call itself does its work when it is *made*, not when this future is awaited: a
/// write takes effect at once and is committed at the end of the turn even if the future is
/// dropped. On the SQLite backend every `Op` is already complete, so awaiting it never ends
/// the turn. Calls that need I/O (a cache miss on the KV backend) finish when awaited.
pub struct Op<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Ready(Option<Result<T, Error>>),
    Io(Boxed<T>),
}

// `Op` never pins its output: a ready value is moved out, and pending I/O is boxed.
impl<T> Unpin for Op<T> {}

impl<T> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.inner {
            Inner::Ready(Some(_)) => "ready",
            Inner::Ready(None) => "taken",
            Inner::Io(_) => "io",
        };
        f.debug_struct("Op").field("state", &state).finish()
    }
}

impl<T> Op<T> {
    /// A call that has already finished with `result`.
    pub fn ready(result: Result<T, Error>) -> Op<T> {
        Op { inner: Inner::Ready(Some(result)) }
    }

    /// A call that finishes when `future` does.
    pub fn io(future: impl Future<Output = Result<T, Error>> + Send + 'static) -> Op<T> {
        Op { inner: Inner::Io(Box::pin(future)) }
    }

    /// True when the call already finished (awaiting it does not wait).
    pub fn is_ready(&self) -> bool {
        matches!(self.inner, Inner::Ready(_))
    }

    /// Blocks the thread until the call finishes: for programs that use storage without an
    /// async executor. On SQLite-backed storage only `sync()` (and a turn's `durable` future)
    /// under group commit waits, for an fsync.
    ///
    /// Do not call it on a thread that drives the I/O the call waits for.
    pub fn wait(self) -> Result<T, Error> {
        match self.inner {
            Inner::Ready(Some(result)) => result,
            other => crate::block::block_on(Op { inner: other }),
        }
    }

    /// The result of a call that already finished, without an executor. `None` when the
    /// call still waits for I/O (the `Op` is given back).
    pub fn now(self) -> Result<Result<T, Error>, Op<T>> {
        match self.inner {
            Inner::Ready(Some(result)) => Ok(result),
            other => Err(Op { inner: other }),
        }
    }
}

impl<T> Future for Op<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Ready(slot) => match slot.take() {
                Some(result) => Poll::Ready(result),
                None => panic!("`Op` polled after it completed"),
            },
            Inner::Io(future) => future.as_mut().poll(cx),
        }
    }
}
