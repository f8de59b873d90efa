//! Thin, unsafe-contained helpers over the SQLite C API for statements.
//!
//! Every function here takes the connection handle and statement pointers that
//! [`State`](crate::db) owns; callers hold the database lock, so no two threads ever touch one
//! connection at once.

use std::ffi::{CStr, c_char, c_int};
use std::ptr::{self, NonNull};

use rusqlite::ffi;

use crate::error::SqliteFailure;
use crate::value::SqlValue;

unsafe extern "C" {
    /// Defined by the project's patch of the amalgamation (see `build.rs`).
    fn durable_sqlite3_stmt_rows(
        stmt: *mut ffi::sqlite3_stmt,
        reset: c_int,
        read: *mut i64,
        written: *mut i64,
    );
}

/// An owned prepared statement pointer. It is only used under the database lock.
#[derive(Debug)]
pub(crate) struct RawStmt(NonNull<ffi::sqlite3_stmt>);

// SAFETY: a statement is only touched while its connection's lock is held, and the
// connection is opened in multi-thread mode, which allows use from any one thread at a time.
unsafe impl Send for RawStmt {}

impl RawStmt {
    pub(crate) fn ptr(&self) -> *mut ffi::sqlite3_stmt {
        self.0.as_ptr()
    }

    /// Finalizes the statement.
    pub(crate) fn finalize(self) {
        // SAFETY: the pointer came from sqlite3_prepare_v3 and is finalized once.
        unsafe {
            ffi::sqlite3_finalize(self.ptr());
        }
    }

    /// Resets the statement and clears its bindings so it can be reused.
    pub(crate) fn reset(&self) {
        // SAFETY: valid statement pointer.
        unsafe {
            ffi::sqlite3_reset(self.ptr());
            ffi::sqlite3_clear_bindings(self.ptr());
        }
    }

    pub(crate) fn readonly(&self) -> bool {
        // SAFETY: valid statement pointer.
        unsafe { ffi::sqlite3_stmt_readonly(self.ptr()) != 0 }
    }

    pub(crate) fn parameter_count(&self) -> usize {
        // SAFETY: valid statement pointer.
        unsafe { ffi::sqlite3_bind_parameter_count(self.ptr()) as usize }
    }

    pub(crate) fn column_count(&self) -> usize {
        // SAFETY: valid statement pointer.
        unsafe { ffi::sqlite3_column_count(self.ptr()) as usize }
    }

    pub(crate) fn column_names(&self) -> Vec<String> {
        (0..self.column_count())
            .map(|i| {
                // SAFETY: i is within the column count; the name pointer is valid until the
                // statement is finalized or re-prepared, and we copy it at once.
                unsafe {
                    let name = ffi::sqlite3_column_name(self.ptr(), i as c_int);
                    if name.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(name).to_string_lossy().into_owned()
                    }
                }
            })
            .collect()
    }

    /// Binds `bytes` to parameter `idx` (1-based) without copying them, as TEXT or as BLOB.
    ///
    /// # Safety
    ///
    /// `bytes` must stay alive and unchanged until the binding is cleared
    /// ([`reset`](RawStmt::reset)) or replaced; the statement must not be stepped after that
    /// without binding the parameter again.
    pub(crate) unsafe fn bind_borrowed(
        &self,
        db: *mut ffi::sqlite3,
        idx: usize,
        bytes: &[u8],
        text: bool,
    ) -> Result<(), SqliteFailure> {
        let idx = c_int::try_from(idx).unwrap_or(c_int::MAX);
        // SAFETY: valid statement; the caller keeps `bytes` alive while bound (STATIC).
        let rc = unsafe { self.bind_bytes(idx, bytes, text, ffi::SQLITE_STATIC()) };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(failure(db, rc)) }
    }

    /// Binds `bytes` as TEXT (UTF-8) or BLOB, an empty BLOB as a zero-length zeroblob (a null
    /// pointer would bind NULL); returns SQLite's code.
    ///
    /// # Safety
    ///
    /// With `SQLITE_STATIC`, as [`bind_borrowed`](RawStmt::bind_borrowed); `SQLITE_TRANSIENT`
    /// makes SQLite copy the bytes.
    unsafe fn bind_bytes(
        &self,
        idx: c_int,
        bytes: &[u8],
        text: bool,
        destructor: ffi::sqlite3_destructor_type,
    ) -> c_int {
        // SAFETY: valid statement; `bytes` is valid for its length during the call.
        unsafe {
            if text {
                ffi::sqlite3_bind_text64(
                    self.ptr(),
                    idx,
                    bytes.as_ptr().cast::<c_char>(),
                    bytes.len() as u64,
                    destructor,
                    ffi::SQLITE_UTF8 as u8,
                )
            } else if bytes.is_empty() {
                ffi::sqlite3_bind_zeroblob(self.ptr(), idx, 0)
            } else {
                ffi::sqlite3_bind_blob64(
                    self.ptr(),
                    idx,
                    bytes.as_ptr().cast(),
                    bytes.len() as u64,
                    destructor,
                )
            }
        }
    }

    /// The bytes of column `i` of the current row (TEXT or BLOB; other types as SQLite
    /// converts them), `None` for NULL. Valid until the statement is stepped or reset.
    pub(crate) fn column_bytes(&self, i: usize) -> Option<&[u8]> {
        let stmt = self.ptr();
        let i = c_int::try_from(i).unwrap_or(c_int::MAX);
        // SAFETY: valid statement positioned on a row; the pointer stays valid until the
        // next step or reset, which take the statement while this borrow is alive in `Held`.
        unsafe {
            if ffi::sqlite3_column_type(stmt, i) == ffi::SQLITE_NULL {
                return None;
            }
            let p = ffi::sqlite3_column_blob(stmt, i);
            let n = ffi::sqlite3_column_bytes(stmt, i);
            if p.is_null() || n <= 0 {
                Some(&[])
            } else {
                Some(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
            }
        }
    }

    /// Reads (and with `reset` clears) the patched per-statement row counters.
    pub(crate) fn row_counters(&self, reset: bool) -> (u64, u64) {
        let (mut read, mut written) = (0i64, 0i64);
        // SAFETY: valid statement pointer; out-pointers are locals.
        unsafe {
            durable_sqlite3_stmt_rows(self.ptr(), c_int::from(reset), &mut read, &mut written)
        };
        (read.max(0) as u64, written.max(0) as u64)
    }

    /// Binds `values` to parameters 1..=n.
    pub(crate) fn bind_all(
        &self,
        db: *mut ffi::sqlite3,
        values: &[SqlValue],
    ) -> Result<(), SqliteFailure> {
        for (i, value) in values.iter().enumerate() {
            let idx = (i + 1) as c_int;
            // SAFETY: valid statement; TRANSIENT makes SQLite copy text and blob data.
            let rc = unsafe {
                match value {
                    SqlValue::Null => ffi::sqlite3_bind_null(self.ptr(), idx),
                    SqlValue::Integer(v) => ffi::sqlite3_bind_int64(self.ptr(), idx, *v),
                    SqlValue::Real(v) => ffi::sqlite3_bind_double(self.ptr(), idx, *v),
                    SqlValue::Text(s) => {
                        self.bind_bytes(idx, s.as_bytes(), true, ffi::SQLITE_TRANSIENT())
                    }
                    SqlValue::Blob(b) => self.bind_bytes(idx, b, false, ffi::SQLITE_TRANSIENT()),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(failure(db, rc));
            }
        }
        Ok(())
    }

    /// Steps once: `Ok(true)` for a row, `Ok(false)` when done.
    pub(crate) fn step(&self, db: *mut ffi::sqlite3) -> Result<bool, SqliteFailure> {
        // SAFETY: valid statement.
        match unsafe { ffi::sqlite3_step(self.ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(failure(db, rc)),
        }
    }

    /// Copies the current row's values.
    pub(crate) fn read_row(&self, columns: usize) -> Vec<SqlValue> {
        (0..columns).map(|i| self.column(i)).collect()
    }

    pub(crate) fn column(&self, i: usize) -> SqlValue {
        let stmt = self.ptr();
        let i = i as c_int;
        // SAFETY: valid statement positioned on a row; the data pointers are copied before
        // any further call on the statement.
        unsafe {
            match ffi::sqlite3_column_type(stmt, i) {
                ffi::SQLITE_INTEGER => SqlValue::Integer(ffi::sqlite3_column_int64(stmt, i)),
                ffi::SQLITE_FLOAT => SqlValue::Real(ffi::sqlite3_column_double(stmt, i)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(stmt, i);
                    let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
                    if p.is_null() || n == 0 {
                        SqlValue::Text(String::new())
                    } else {
                        let bytes = std::slice::from_raw_parts(p, n);
                        SqlValue::Text(String::from_utf8_lossy(bytes).into_owned())
                    }
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_column_blob(stmt, i);
                    let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
                    if p.is_null() || n == 0 {
                        SqlValue::Blob(Vec::new())
                    } else {
                        SqlValue::Blob(std::slice::from_raw_parts(p.cast::<u8>(), n).to_vec())
                    }
                }
                _ => SqlValue::Null,
            }
        }
    }
}

/// Prepares the first statement of `sql`. Returns the statement (or `None` when the text
/// holds only whitespace and comments) and the byte offset where the rest begins.
pub(crate) fn prepare(
    db: *mut ffi::sqlite3,
    sql: &str,
) -> Result<(Option<RawStmt>, usize), SqliteFailure> {
    let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
    let mut tail: *const c_char = ptr::null();
    let base = sql.as_ptr().cast::<c_char>();
    // A length that does not fit SQLite's int is certainly over the statement-length limit;
    // pass something that is, so SQLite reports "statement too long".
    let len = c_int::try_from(sql.len()).unwrap_or(c_int::MAX);
    // SAFETY: base/len describe a live &str; out-pointers are locals.
    let rc = unsafe { ffi::sqlite3_prepare_v3(db, base, len, 0, &mut stmt, &mut tail) };
    if rc != ffi::SQLITE_OK {
        if !stmt.is_null() {
            // SAFETY: finalize whatever was returned.
            unsafe { ffi::sqlite3_finalize(stmt) };
        }
        return Err(failure(db, rc));
    }
    let consumed = if tail.is_null() {
        sql.len()
    } else {
        // SAFETY: tail points into the same buffer.
        (unsafe { tail.offset_from(base) }) as usize
    };
    Ok((NonNull::new(stmt).map(RawStmt), consumed.min(sql.len())))
}

/// Builds a failure from the connection's current error state.
pub(crate) fn failure(db: *mut ffi::sqlite3, rc: c_int) -> SqliteFailure {
    // SAFETY: db is a live connection handle.
    unsafe {
        let msg = ffi::sqlite3_errmsg(db);
        let message = if msg.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        let extended = ffi::sqlite3_extended_errcode(db);
        let offset = ffi::sqlite3_error_offset(db);
        let code = if rc & 0xff == extended & 0xff { extended } else { rc };
        SqliteFailure {
            message,
            code: code & 0xff,
            extended_code: code,
            offset: usize::try_from(offset).ok(),
        }
    }
}

/// Runs trusted SQL with no results (pragmas, savepoints, BEGIN/COMMIT).
pub(crate) fn execute_batch(db: *mut ffi::sqlite3, sql: &str) -> Result<(), SqliteFailure> {
    let c = std::ffi::CString::new(sql).expect("internal SQL has no NUL");
    // SAFETY: db is live; the SQL is a NUL-terminated string.
    let rc = unsafe { ffi::sqlite3_exec(db, c.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(failure(db, rc)) }
}

/// Runs `sqlite3_wal_checkpoint_v2` on the main database with `mode` (an
/// `SQLITE_CHECKPOINT_*` constant): the WAL's size in frames and how many are checkpointed.
pub(crate) fn checkpoint(db: *mut ffi::sqlite3, mode: c_int) -> Result<(u32, u32), SqliteFailure> {
    let (mut log, mut done) = (0, 0);
    // SAFETY: db is live; out-pointers are locals; "main" is NUL-terminated.
    let rc =
        unsafe { ffi::sqlite3_wal_checkpoint_v2(db, c"main".as_ptr(), mode, &mut log, &mut done) };
    if rc != ffi::SQLITE_OK {
        return Err(failure(db, rc));
    }
    Ok((log.max(0) as u32, done.max(0) as u32))
}

/// True when the connection is in autocommit mode (no transaction open).
pub(crate) fn autocommit(db: *mut ffi::sqlite3) -> bool {
    // SAFETY: db is live.
    unsafe { ffi::sqlite3_get_autocommit(db) != 0 }
}

/// Gives `conn` a lookaside buffer of `count` slots of `size` bytes, allocated by SQLite.
/// Call it right after opening: SQLite answers `SQLITE_BUSY` once lookaside is in use.
pub(crate) fn set_lookaside(
    conn: &rusqlite::Connection,
    size: c_int,
    count: c_int,
) -> Result<(), SqliteFailure> {
    // SAFETY: the handle is live while `conn` is borrowed; a null buffer makes SQLite
    // allocate (and later free) its own.
    unsafe {
        let db = conn.handle();
        let rc = ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_LOOKASIDE,
            ptr::null_mut::<std::ffi::c_void>(),
            size,
            count,
        );
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(failure(db, rc)) }
    }
}

/// Rows changed by the last finished INSERT, UPDATE or DELETE of the connection.
pub(crate) fn changes(db: *mut ffi::sqlite3) -> u64 {
    // SAFETY: db is live.
    unsafe { ffi::sqlite3_changes64(db).max(0) as u64 }
}
