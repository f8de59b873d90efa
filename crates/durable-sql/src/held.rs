//! `Held`: a statement of the project's own SQL, prepared once and kept across calls.
//!
//! The KV layer runs the same few statements (read, write, delete one key) on every call;
//! looking them up in a statement cache and handing them back was about a fifth of a KV get.
//! A held statement lives in the database's state beside the statement cache, so it is
//! finalized with it (on [`Database::reset`](crate::Database::reset) and on close), and
//! SQLite re-prepares it by itself after a schema change.

use rusqlite::ffi;

use crate::cache::HeldEntry;
use crate::error::{Error, Result};
use crate::raw;

/// A held statement, checked out by [`Internal::held`](crate::Internal::held) for one use.
///
/// Bind the parameters, [`step`](Held::step), read the columns of the current row. Bound
/// bytes are not copied: they are borrowed for as long as the handle lives. Dropping the
/// handle resets the statement and clears its bindings, which also ends the read
/// transaction a `SELECT` opened in autocommit mode.
pub struct Held<'a> {
    entry: &'a mut HeldEntry,
    db: *mut ffi::sqlite3,
}

impl<'a> Held<'a> {
    pub(crate) fn new(entry: &'a mut HeldEntry, db: *mut ffi::sqlite3) -> Held<'a> {
        if !entry.clean {
            // The last handle was leaked: its bindings may point at freed bytes.
            entry.stmt.reset();
        }
        entry.clean = false;
        Held { entry, db }
    }

    /// Binds `text` (UTF-8 bytes, not checked) as TEXT to the 1-based parameter `index`.
    pub fn bind_text(&mut self, index: usize, text: &'a [u8]) -> Result<()> {
        // SAFETY: `text` outlives `'a`, and the binding is cleared when this handle drops
        // (or, if it is leaked, before the statement is used again).
        unsafe { self.entry.stmt.bind_borrowed(self.db, index, text, true) }.map_err(Error::Sqlite)
    }

    /// Binds `blob` as a BLOB to the 1-based parameter `index` (an empty one as an empty
    /// BLOB, not NULL).
    pub fn bind_blob(&mut self, index: usize, blob: &'a [u8]) -> Result<()> {
        // SAFETY: as in `bind_text`.
        unsafe { self.entry.stmt.bind_borrowed(self.db, index, blob, false) }.map_err(Error::Sqlite)
    }

    /// Steps once: `Ok(true)` with a row to read, `Ok(false)` when the statement is done.
    pub fn step(&mut self) -> Result<bool> {
        self.entry.stmt.step(self.db).map_err(Error::Sqlite)
    }

    /// The bytes of column `index` (0-based) of the current row, `None` when it is NULL.
    /// Only meaningful after [`step`](Held::step) returned `Ok(true)`.
    pub fn column(&self, index: usize) -> Option<&[u8]> {
        self.entry.stmt.column_bytes(index)
    }

    /// Rows changed by the statement, once it is done (an INSERT, UPDATE or DELETE).
    pub fn changes(&self) -> u64 {
        raw::changes(self.db)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.entry.stmt.reset();
        self.entry.clean = true;
    }
}
