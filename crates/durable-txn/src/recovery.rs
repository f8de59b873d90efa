//! Point-in-time recovery as an object's code sees it: the bookmark calls of
//! [`Storage`](crate::Storage), answered by a provider that the host installs
//! ([`Storage::set_recovery`](crate::Storage::set_recovery)). The facade installs the
//! object's WAL archiver; this crate knows nothing of archives.

use crate::error::Result;
use crate::op::Op;

/// The point-in-time recovery of one object's storage (the seed's `getCurrentBookmark`,
/// `getBookmarkForTime`, `onNextSessionRestoreBookmark`). Errors are reported as
/// [`Error::Recovery`](crate::Error::Recovery) with the provider's message.
pub trait Recovery: Send + Sync {
    /// The bookmark of the object's latest durable commit. The storage has committed and
    /// synced what was written before the call.
    fn current_bookmark(&self) -> Result<String>;
    /// The bookmark of the latest commit at or before `time_ms` (ms since the Unix epoch).
    fn bookmark_for_time(&self, time_ms: i64) -> Op<String>;
    /// Records durably that the object's next session starts at `bookmark`; returns the
    /// bookmark that undoes the restore.
    fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String>;
}
