//! Errors of the facade: the turn layer's errors plus what opening a namespace can refuse.

use std::path::PathBuf;

/// Everything the facade can refuse or fail with.
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
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

impl From<durable_sql::Error> for Error {
    fn from(e: durable_sql::Error) -> Error {
        Error::Storage(durable_txn::Error::Sql(e))
    }
}

/// A `Result` whose error is the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
