//! Errors: bookmark and time refusals (with the messages the object's code sees), archive and
//! journal failures, and the crate's top-level [`Error`].

/// A bookmark that cannot be used: malformed, of another history, or out of reach.
///
/// The production runtime's messages for these cases are not recorded in the project's
/// specifications, so these are ours, written in the runtime's style.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BookmarkError {
    /// Not 55 characters of lowercase hex with dashes at the fixed places.
    #[error("Invalid bookmark: \"{bookmark}\" is not a bookmark.")]
    Malformed {
        /// The string as given.
        bookmark: String,
    },
    /// Well-formed, but its check value does not match this object's history: a typo, or a
    /// bookmark of another object (or of an earlier object with the same name).
    #[error("Invalid bookmark: \"{bookmark}\" does not belong to this Durable Object.")]
    Foreign {
        /// The string as given.
        bookmark: String,
    },
    /// The point is older than the recovery window, or its history was deleted by retention.
    #[error(
        "Bookmark \"{bookmark}\" is outside the point-in-time recovery window of {window_days} days."
    )]
    OutOfWindow {
        /// The string as given.
        bookmark: String,
        /// The window, in whole days.
        window_days: u64,
    },
    /// The point is later than the object's last durable commit (or names a later epoch).
    #[error("Bookmark \"{bookmark}\" refers to a point in the future.")]
    Future {
        /// The string as given.
        bookmark: String,
    },
}

/// A time that `bookmark_for_time` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The time is more than the recovery window back.
    #[error(
        "getBookmarkForTime(): the time must be within the last {window_days} days (got {time_ms} ms since the epoch)."
    )]
    OutOfWindow {
        /// The time asked for, in ms since the Unix epoch.
        time_ms: i64,
        /// The window, in whole days.
        window_days: u64,
    },
    /// The time is in the future (beyond the tolerated clock skew).
    #[error(
        "getBookmarkForTime(): the time must not be in the future (got {time_ms} ms since the epoch)."
    )]
    InFuture {
        /// The time asked for, in ms since the Unix epoch.
        time_ms: i64,
    },
}

/// A failure of the archive, the journal or the files next to the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A local file operation failed.
    #[error("point-in-time recovery: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The object store failed (after retries, for uploads).
    #[error("point-in-time recovery: object store: {action} {key}: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The object's key.
        key: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A file of the journal or the archive does not decode, or fails its checksum.
    #[error("point-in-time recovery: corrupt {what}: {detail}")]
    Corrupt {
        /// Which file or object.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// History needed to rebuild a point is missing from the archive.
    #[error("point-in-time recovery: history is missing: {detail}")]
    Missing {
        /// What was needed.
        detail: String,
    },
    /// An object already in the archive differs from the one being uploaded under its name:
    /// another writer (for example a second machine running the same object) is archiving
    /// into the same place.
    #[error("point-in-time recovery: {key} already exists in the archive with other content")]
    Conflict {
        /// The object's key.
        key: String,
    },
    /// The archive (or the journal) belongs to another object's history.
    #[error("point-in-time recovery: {what} belongs to another history")]
    OtherHistory {
        /// Which file or object.
        what: String,
    },
    /// Another archiver holds the object's lock file.
    #[error("point-in-time recovery: {path} is locked by another archiver")]
    Locked {
        /// The lock file.
        path: String,
    },
    /// An earlier capture failed, so the archiver stopped (the object must be reopened; the
    /// commits since are adopted from the WAL then).
    #[error("point-in-time recovery: the archiver stopped after an earlier failure: {0}")]
    Poisoned(String),
    /// Another live node holds the object's lease: open it there (its address, when it
    /// advertises one), or here once that node releases the lease or stops renewing it.
    #[error(
        "the object is owned by node {node}{} (lease term {term}); open it there, or here once that node closes it or its lease expires",
        address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default()
    )]
    LeaseHeld {
        /// The owner's node id.
        node: String,
        /// The address the owner advertises.
        address: Option<String>,
        /// The owner's term.
        term: u32,
    },
    /// This node's lease was taken over (it stopped renewing it in time): it can no longer
    /// add to the object's history, and the object must be opened again (where it lives
    /// now).
    #[error(
        "point-in-time recovery: fenced: node {by} took the object over after lease term {term}; this node can no longer write its history"
    )]
    Fenced {
        /// The term this node held.
        term: u32,
        /// The node that took the object over.
        by: String,
    },
    /// A failpoint of the crash tests fired.
    #[error("point-in-time recovery: injected crash at {0}")]
    Injected(&'static str),
}

/// Everything this crate can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bookmark was refused.
    #[error(transparent)]
    Bookmark(#[from] BookmarkError),
    /// A time was refused.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// The archive, journal or local files failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The database failed.
    #[error(transparent)]
    Sql(#[from] durable_sql::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Archive(ArchiveError::Io { action, path, source })
}

pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Archive(ArchiveError::Corrupt { what: what.into(), detail: detail.into() })
}

pub(crate) fn missing(detail: impl Into<String>) -> Error {
    Error::Archive(ArchiveError::Missing { detail: detail.into() })
}
