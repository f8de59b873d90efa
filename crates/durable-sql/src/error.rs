//! Errors of the SQL layer, with the runtime's messages as their `Display` text.

use std::fmt;

/// A SQLite failure, reported the way the runtime reports it:
/// `<message>[ at offset N]: <CODE>[ (extended: <EXTENDED_CODE>)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFailure {
    /// SQLite's own message (`sqlite3_errmsg`).
    pub message: String,
    /// The primary result code (`SQLITE_ERROR` is 1, ...).
    pub code: i32,
    /// The extended result code.
    pub extended_code: i32,
    /// The byte offset in the statement that SQLite blamed, when it gave one.
    pub offset: Option<usize>,
}

impl SqliteFailure {
    /// The primary code's name, such as `SQLITE_CONSTRAINT`.
    pub fn code_name(&self) -> &'static str {
        code_name(self.code)
    }

    /// True for the errors after which SQLite may have rolled back the open transaction
    /// (`SQLITE_FULL`, `SQLITE_IOERR`, `SQLITE_NOMEM`, `SQLITE_INTERRUPT`, `SQLITE_CORRUPT`).
    pub fn is_critical(&self) -> bool {
        matches!(self.code, 13 | 10 | 7 | 9 | 11)
    }
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, ": {}", code_name(self.code))?;
        if self.extended_code != self.code {
            write!(f, " (extended: {})", extended_code_name(self.extended_code))?;
        }
        Ok(())
    }
}

/// Everything the SQL layer can refuse or fail with.
///
/// `Display` is the runtime's message wherever the runtime has one, so errors can be shown to
/// users (and compared with the runtime) as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused or failed a statement.
    #[error("{0}")]
    Sqlite(SqliteFailure),
    /// The query text held no statement (empty, only a comment, or a trailing one).
    #[error("SQL code did not contain a statement.")]
    NoStatement,
    /// A statement other than the last of a multi-statement query had parameters.
    #[error(
        "When executing multiple SQL statements in a single call, only the last statement can \
         have parameters."
    )]
    ParametersBeforeLastStatement,
    /// The number of bound values differs from the statement's parameter count.
    #[error("Wrong number of parameter bindings for SQL query.")]
    WrongParameterCount {
        /// How many parameters the statement has.
        expected: usize,
        /// How many values were given.
        given: usize,
    },
    /// `one()` found no row.
    #[error("Expected exactly one result from SQL query, but got no results.")]
    NoResults,
    /// `one()` found more than one row.
    #[error("Expected exactly one result from SQL query, but got multiple results.")]
    MultipleResults,
    /// User SQL tried to control transactions itself.
    #[error(
        "To execute a transaction, please use the state.storage.transaction() or \
         state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT \
         statements. The JavaScript API is safer because it will automatically roll back on \
         exceptions, and because it interacts correctly with Durable Objects' automatic atomic \
         write coalescing."
    )]
    TransactionStatement,
    /// A cursor was used after the database was deleted (`reset`).
    #[error("SQLite query was canceled because the database was deleted.")]
    Canceled,
    /// A `transaction_sync` callback returned normally after a critical error had rolled back
    /// the transaction underneath it.
    #[error("Cannot commit transaction due to an earlier SQL critical error")]
    CriticalErrorInTransaction,
    /// The commit found constraints violated (deferred foreign keys); the transaction was
    /// rolled back.
    #[error(
        "Durable Object was reset and rolled back to its last known good state because the \
         application left the database in a state where constraints were violated: {0}"
    )]
    ConstraintsAtCommit(SqliteFailure),
    /// An earlier critical error broke the database handle; it must be reopened.
    #[error("{0}")]
    Broken(Box<Error>),
    /// A value could not be converted to the requested Rust type.
    #[error("cannot convert SQL {from} to {to}")]
    Conversion {
        /// The SQL storage class found.
        from: &'static str,
        /// The Rust type asked for.
        to: &'static str,
    },
    /// A value is of the right storage class but does not fit the Rust type asked for (an
    /// integer too large for `u8`, a negative one for `u64`, a real too large for `f32`).
    #[error("{value} is out of range for {to}")]
    OutOfRange {
        /// The value found, as text.
        value: String,
        /// The Rust type asked for.
        to: &'static str,
    },
    /// A value or row could not be decoded into the Rust type asked for: what serde's
    /// `Deserialize` implementation said (a missing field, an unknown enum variant), or text
    /// that is not the JSON a JSON column should hold.
    #[error("{message}")]
    Decode {
        /// What went wrong.
        message: String,
    },
    /// Reading one column of a row failed: the column's name and why.
    #[error("column {column:?}: {source}")]
    Column {
        /// The column's name.
        column: String,
        /// Why its value could not be read ([`Error::Conversion`], [`Error::OutOfRange`],
        /// [`Error::Decode`]).
        source: Box<Error>,
    },
    /// A column name or index that the row does not have.
    #[error("no such column: {0}")]
    NoSuchColumn(String),
    /// Opening or deleting the database files failed.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Making group-committed commits durable failed (an `fdatasync` of the WAL); commits
    /// not yet durable may be lost, and the database must be opened again.
    #[error("sync failed: {path}: {message}")]
    SyncFailed {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// The JavaScript error class the runtime throws for this error (`Error` or `TypeError`).
    pub fn js_name(&self) -> &'static str {
        match self {
            Error::Conversion { .. } | Error::OutOfRange { .. } | Error::Decode { .. } => {
                "TypeError"
            }
            Error::Broken(inner) | Error::Column { source: inner, .. } => inner.js_name(),
            _ => "Error",
        }
    }

    /// The SQLite failure behind this error, if any.
    pub fn sqlite(&self) -> Option<&SqliteFailure> {
        match self {
            Error::Sqlite(f) | Error::ConstraintsAtCommit(f) => Some(f),
            Error::Broken(inner) => inner.sqlite(),
            _ => None,
        }
    }
}

impl Error {
    /// Names the column a conversion error happened in (errors that already name one, and
    /// errors that are not about a value, pass through).
    pub(crate) fn in_column(self, column: &str) -> Error {
        match self {
            Error::Conversion { .. } | Error::OutOfRange { .. } | Error::Decode { .. } => {
                Error::Column { column: column.to_owned(), source: Box::new(self) }
            }
            other => other,
        }
    }
}

/// Typed rows report serde's complaints (a missing field, an unknown variant) as
/// [`Error::Decode`].
impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Decode { message: msg.to_string() }
    }
}

/// A `Result` whose error is the SQL layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of a primary result code.
pub fn code_name(code: i32) -> &'static str {
    match code & 0xff {
        0 => "SQLITE_OK",
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        16 => "SQLITE_EMPTY",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        24 => "SQLITE_FORMAT",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        27 => "SQLITE_NOTICE",
        28 => "SQLITE_WARNING",
        100 => "SQLITE_ROW",
        101 => "SQLITE_DONE",
        _ => "SQLITE_UNKNOWN",
    }
}

/// The name of an extended result code (falls back to the primary name).
pub fn extended_code_name(code: i32) -> &'static str {
    match code {
        257 => "SQLITE_ERROR_MISSING_COLLSEQ",
        513 => "SQLITE_ERROR_RETRY",
        769 => "SQLITE_ERROR_SNAPSHOT",
        266 => "SQLITE_IOERR_READ",
        522 => "SQLITE_IOERR_SHORT_READ",
        778 => "SQLITE_IOERR_WRITE",
        1034 => "SQLITE_IOERR_FSYNC",
        1290 => "SQLITE_IOERR_DIR_FSYNC",
        1546 => "SQLITE_IOERR_TRUNCATE",
        1802 => "SQLITE_IOERR_FSTAT",
        2058 => "SQLITE_IOERR_UNLOCK",
        2314 => "SQLITE_IOERR_RDLOCK",
        2570 => "SQLITE_IOERR_DELETE",
        3082 => "SQLITE_IOERR_NOMEM",
        3338 => "SQLITE_IOERR_ACCESS",
        3594 => "SQLITE_IOERR_CHECKRESERVEDLOCK",
        3850 => "SQLITE_IOERR_LOCK",
        4106 => "SQLITE_IOERR_CLOSE",
        4618 => "SQLITE_IOERR_SHMOPEN",
        4874 => "SQLITE_IOERR_SHMSIZE",
        5386 => "SQLITE_IOERR_SHMMAP",
        5642 => "SQLITE_IOERR_SEEK",
        5898 => "SQLITE_IOERR_DELETE_NOENT",
        6154 => "SQLITE_IOERR_MMAP",
        262 => "SQLITE_LOCKED_SHAREDCACHE",
        517 => "SQLITE_BUSY_SNAPSHOT",
        261 => "SQLITE_BUSY_RECOVERY",
        773 => "SQLITE_BUSY_TIMEOUT",
        270 => "SQLITE_CANTOPEN_NOTEMPDIR",
        526 => "SQLITE_CANTOPEN_ISDIR",
        782 => "SQLITE_CANTOPEN_FULLPATH",
        267 => "SQLITE_CORRUPT_VTAB",
        523 => "SQLITE_CORRUPT_SEQUENCE",
        779 => "SQLITE_CORRUPT_INDEX",
        264 => "SQLITE_READONLY_RECOVERY",
        520 => "SQLITE_READONLY_CANTLOCK",
        776 => "SQLITE_READONLY_ROLLBACK",
        1032 => "SQLITE_READONLY_DBMOVED",
        516 => "SQLITE_ABORT_ROLLBACK",
        275 => "SQLITE_CONSTRAINT_CHECK",
        531 => "SQLITE_CONSTRAINT_COMMITHOOK",
        787 => "SQLITE_CONSTRAINT_FOREIGNKEY",
        1043 => "SQLITE_CONSTRAINT_FUNCTION",
        1299 => "SQLITE_CONSTRAINT_NOTNULL",
        1555 => "SQLITE_CONSTRAINT_PRIMARYKEY",
        1811 => "SQLITE_CONSTRAINT_TRIGGER",
        2067 => "SQLITE_CONSTRAINT_UNIQUE",
        2323 => "SQLITE_CONSTRAINT_VTAB",
        2579 => "SQLITE_CONSTRAINT_ROWID",
        2835 => "SQLITE_CONSTRAINT_PINNED",
        3091 => "SQLITE_CONSTRAINT_DATATYPE",
        283 => "SQLITE_NOTICE_RECOVER_WAL",
        539 => "SQLITE_NOTICE_RECOVER_ROLLBACK",
        284 => "SQLITE_WARNING_AUTOINDEX",
        279 => "SQLITE_AUTH_USER",
        other => code_name(other),
    }
}
