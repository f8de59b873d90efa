//! Errors of the turn layer, with the runtime's messages as their `Display` text.

/// Everything the turn layer can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQL layer failed.
    #[error(transparent)]
    Sql(#[from] durable_sql::Error),
    /// The KV layer refused or failed.
    #[error(transparent)]
    Kv(#[from] durable_kv::Error),
    /// The KV backend (or its cache) failed: a flush that broke the object, a read.
    #[error(transparent)]
    Backend(durable_backend::Error),
    /// `delete_all()` was called inside an async `transaction`.
    #[error("Cannot call deleteAll() within a transaction")]
    DeleteAllInTransaction,
    /// A [`Transaction`](crate::Transaction) method was used after `rollback()`.
    #[error("Cannot {op} on rolled back transaction")]
    RolledBack {
        /// The method, as the runtime names it (`get()`, `put()` ...).
        op: &'static str,
    },
    /// A [`Transaction`](crate::Transaction) method was used after its closure finished.
    #[error(
        "Cannot call {op} on transaction that has already committed: did you move `txn` \
         outside of the closure?"
    )]
    AlreadyCommitted {
        /// The method, as the runtime names it.
        op: &'static str,
    },
    /// An outer transaction was rolled back while a nested one was running.
    #[error("Cannot roll back an outer transaction while a nested transaction is still running.")]
    NestedTransactionRunning,
    /// `transaction_sync` on a KV-backed object.
    #[error("Durable Object is not backed by SQL.")]
    NotBackedBySql,
    /// The SQL API on a KV-backed object.
    #[error(
        "This Durable Object is not backed by SQLite storage, so the SQL API is not available. \
         SQL can be enabled on a new Durable Object class by using the `new_sqlite_classes` \
         instead of `new_classes` under `[[migrations]]` in your wrangler.toml, but an \
         already-deployed class cannot be converted to SQLite (except by deleting the existing \
         data)."
    )]
    SqlNotAvailable,
    /// The synchronous KV API on a KV-backed object.
    #[error(
        "The storage.kv (synchronous KV) API is only available for SQLite-backed Durable \
         Objects, but this object's namespace is not declared to use SQLite. You can use the \
         older, asyncronous interface via methods of `storage` itself (e.g. `storage.get()`). \
         Alternatively, to enable SQLite, change `new_classes` to `new_sqlite_classes` within \
         the 'migrations' field in your wrangler.jsonc or wrangler.toml file. If using workerd \
         directly, set `enableSql = true` in your workerd config for the class. Note that this \
         change cannot be made after the class is already deployed to production."
    )]
    SyncKvNotAvailable,
    /// Point-in-time recovery refused or failed (a malformed or foreign bookmark, a time
    /// outside the window, an archive failure): the recovery provider's message.
    #[error("{0}")]
    Recovery(String),
    /// Point-in-time recovery on a backend that has none.
    #[error("This Durable Object's storage back-end does not implement point-in-time recovery.")]
    PitrNotAvailable,
    /// Storage used after the object was aborted or closed.
    #[error("Durable Object storage is no longer accessible.")]
    NoLongerAccessible,
    /// The object's code called `abort(reason)`: what its callers see.
    #[error("{0}")]
    Aborted(String),
    /// A critical section (`block_concurrency_while`, a transaction's closure) ran past the
    /// object's limit (30 s by default, as the runtime): the object was reset. The runtime
    /// marks this error `overloaded`; see [`Error::is_overloaded`].
    #[error("{}", crate::runtime::CRITICAL_SECTION_TIMEOUT_MESSAGE)]
    CriticalSectionTimedOut,
    /// A write could not be made durable; the object was reset.
    #[error(
        "Internal error in Durable Object storage write caused object to be reset; reference = {0}"
    )]
    WriteFailed(String),
    /// The async `put()` of JavaScript's `undefined` (the sync KV API stores it).
    #[error("put() called with undefined value.")]
    PutUndefined,
    /// `set_alarm` with a time at or before zero.
    #[error("setAlarm() cannot be called with an alarm time <= 0")]
    AlarmTimeNotPositive,
    /// `block_concurrency_while` nested more than 64 deep.
    #[error("blockConcurrencyWhile() calls are nested too deeply.")]
    NestedTooDeeply,
    /// The object runtime has stopped (its tokio runtime shut down).
    #[error("Durable Object runtime has shut down.")]
    RuntimeStopped,
}

impl Error {
    /// Whether the runtime marks this error `overloaded`: the object was too busy, and a
    /// caller may retry later (the object starts fresh).
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::CriticalSectionTimedOut)
    }

    /// Whether this error means the object was reset (the runtime's `durableObjectReset`):
    /// its in-memory state is gone and the next event runs on a fresh instance. A failed
    /// write ([`Error::WriteFailed`]) also resets the object, but the runtime does not mark
    /// its error so.
    pub fn resets_object(&self) -> bool {
        matches!(self, Error::Aborted(_) | Error::CriticalSectionTimedOut)
    }

    /// The JavaScript error class the runtime throws for this error.
    pub fn js_name(&self) -> &'static str {
        match self {
            Error::Sql(e) => e.js_name(),
            Error::Kv(e) => e.js_name(),
            Error::Backend(e) => e.js_name(),
            Error::AlarmTimeNotPositive | Error::PutUndefined => "TypeError",
            _ => "Error",
        }
    }
}

impl From<durable_backend::Error> for Error {
    fn from(e: durable_backend::Error) -> Self {
        match e {
            durable_backend::Error::Kv(e) => Error::Kv(e),
            other => Error::Backend(other),
        }
    }
}

/// A `Result` whose error is the turn layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
