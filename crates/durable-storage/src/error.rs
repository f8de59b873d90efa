//! Errors of the facade: the turn layer's errors plus what opening a namespace can refuse.
//! It is the one error type of object code: every layer's error converts into it (`From`),
//! so `?` works on SQL, KV, alarm and PITR calls in one handler
//! ([`ObjectHandle::try_call`](crate::ObjectHandle::try_call)).

use std::path::PathBuf;

use durable_txn::HandlerError;

/// Everything the facade can refuse or fail with, and the one error type of object code.
///
/// Each layer's error converts into it with `From` (durable-sql's, durable-kv's,
/// durable-backend's, durable-txn's, durable-pitr's), so `?` works on any storage call in a
/// handler that returns `Result<_, durable_storage::Error>`; an error of the object's own
/// code joins them through [`Error::other`]. Wherever the runtime has a message, `Display`
/// is that message, unchanged (the layers' errors are wrapped transparently).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layers refused or failed (the runtime's messages).
    #[error(transparent)]
    Storage(#[from] durable_txn::Error),
    /// The KV backend failed (KV-backed namespaces).
    #[error(transparent)]
    Backend(#[from] durable_backend::Error),
    /// Point-in-time recovery refused or failed (a malformed or foreign bookmark, a time
    /// outside the window, an archive failure).
    #[error(transparent)]
    Pitr(#[from] durable_pitr::Error),
    /// A file of the namespace could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another process (or another `Namespace` in this one) holds the namespace's lock.
    #[error("{path} is locked: the namespace is open elsewhere")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The namespace's index (`_index.sqlite`) failed.
    #[error("alarm index {path}: {source}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What SQLite said.
        source: durable_sql::rusqlite::Error,
    },
    /// The object's previous instance was aborted but a handle to it is still alive, so a
    /// fresh instance cannot be opened yet. Drop every handle of the aborted instance.
    #[error("object {name:?} was aborted and a handle to it is still alive")]
    StillOpen {
        /// The object's name.
        name: String,
    },
    /// The object already runs with an actor of another type.
    #[error("object {name:?} already runs with another actor type")]
    ActorMismatch {
        /// The object's name.
        name: String,
    },
    /// The object's previous runtime is still finishing events nobody waits for; ask again
    /// once they are done.
    #[error("object {name:?} is still finishing the events of its previous runtime")]
    Busy {
        /// The object's name.
        name: String,
    },
    /// An archive location (`--archive`, [`ArchiveStore::from_url`](crate::ArchiveStore::from_url))
    /// that cannot be used.
    #[error("archive {url}: {detail}")]
    ArchiveUrl {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// [`Namespace::close`](crate::Namespace::close) could not upload some objects'
    /// history. Nothing is lost: it waits in their local journals and uploads at their
    /// next open.
    #[error(
        "history not uploaded to the archive (it waits in the local journal and uploads at the next open): {}",
        objects.iter().map(|(n, e)| format!("{n:?}: {e}")).collect::<Vec<_>>().join("; ")
    )]
    NotArchived {
        /// The objects and the upload error of each.
        objects: Vec<(String, String)>,
    },
    /// An archive was asked for, but the namespace archives nothing (a KV backend, or
    /// `Archive::Off`).
    #[error("this namespace has no archive")]
    NoArchive,
    /// An object runtime was asked for outside a tokio runtime.
    #[error("object runtimes need a tokio runtime; none is running on this thread")]
    NoRuntime,
    /// An error of the object's own code (see [`Error::other`]), shown as it is.
    #[error(transparent)]
    Other(HandlerError),
}

impl Error {
    /// An error of the object's own code, so a handler can fail with it beside storage
    /// errors: `Err(Error::other("no such user"))`, or any `std::error::Error` type.
    pub fn other(error: impl Into<HandlerError>) -> Error {
        Error::Other(error.into())
    }

    /// The turn layer's error inside, when this is one ([`Error::Storage`]): to ask what the
    /// runtime would (`is_overloaded`, `resets_object`, `js_name`).
    pub fn as_storage(&self) -> Option<&durable_txn::Error> {
        match self {
            Error::Storage(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

impl From<durable_sql::Error> for Error {
    fn from(e: durable_sql::Error) -> Error {
        Error::Storage(durable_txn::Error::Sql(e))
    }
}

impl From<durable_kv::Error> for Error {
    fn from(e: durable_kv::Error) -> Error {
        Error::Storage(durable_txn::Error::Kv(e))
    }
}

/// A `Result` whose error is the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
