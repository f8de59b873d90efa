//! Errors of the legacy backend and its cache, with the runtime's messages as their `Display`.

/// Everything a backend or the write-behind cache can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KV layer refused or failed: the legacy limits (key, value, keys per call) with the
    /// runtime's `RangeError` messages, or a SQLite failure of [`SqliteBackend`](crate::SqliteBackend).
    #[error(transparent)]
    Kv(#[from] durable_kv::Error),
    /// A backend failed for a reason of its own (for backends outside this crate).
    #[error("{message}")]
    Backend {
        /// What the backend said.
        message: String,
    },
    /// A fault injected by `FaultyBackend` (the `testing` feature).
    #[error("injected fault: {message}")]
    Injected {
        /// The fault's description.
        message: String,
    },
    /// `FaultyBackend` "crashed": nothing reaches the inner backend
    /// any more.
    #[error("storage backend crashed (injected after {batches} write batches)")]
    Crashed {
        /// How many write batches succeeded before the crash.
        batches: usize,
    },
    /// A call carried more keys than the backend accepts in one call
    /// ([`KvBackend::max_keys_per_call`](crate::KvBackend::max_keys_per_call)).
    #[error("backend call with {count} keys exceeds its limit of {limit} keys per call")]
    CallTooLarge {
        /// Keys in the call.
        count: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// A flush of pending writes failed: the output gate breaks and the object must be reset
    /// ([`WriteBehindCache::reset`](crate::cache::WriteBehindCache::reset)).
    #[error(
        "Internal error in Durable Object storage write caused object to be reset; reference = \
         {reference}"
    )]
    FlushFailed {
        /// The reference logged (through `tracing`) with the backend's error.
        reference: String,
        /// The backend's error.
        #[source]
        source: Box<Error>,
    },
    /// A flush carrying a `delete_all` failed: the object must be reset.
    #[error(
        "Internal error in Durable Object storage deleteAll() caused object to be reset; \
         reference = {reference}"
    )]
    DeleteAllFailed {
        /// The reference logged (through `tracing`) with the backend's error.
        reference: String,
        /// The backend's error.
        #[source]
        source: Box<Error>,
    },
    /// The cache is broken by a failed flush and refuses every operation until it is reset.
    #[error("Durable Object storage is no longer accessible.")]
    Broken,
}

impl Error {
    /// The JavaScript error class the runtime throws for this error.
    pub fn js_name(&self) -> &'static str {
        match self {
            Error::Kv(e) => e.js_name(),
            _ => "Error",
        }
    }
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<durable_sql::Error> for Error {
    fn from(e: durable_sql::Error) -> Self {
        Error::Kv(durable_kv::Error::Sql(e))
    }
}
