//! Errors of the KV layer, with the runtime's messages as their `Display` text.

/// Everything the KV layer can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQL layer failed (for example `string or blob too big: SQLITE_TOOBIG`).
    #[error(transparent)]
    Sql(#[from] durable_sql::Error),
    /// `list()` got both `start` and `start_after`.
    #[error("list() cannot be called with both start and startAfter values.")]
    StartAndStartAfter,
    /// `list()` got a limit of zero or less.
    #[error("List limit must be positive.")]
    LimitNotPositive,
    /// A sync `list()` iterator was used after another `list()` started.
    #[error(
        "kv.list() iterator was invalidated because a new call to kv.list() was started. Only \
         one kv.list() iterator can exist at a time."
    )]
    ListInvalidated,
    /// A sync `list()` iterator met a `delete_all()` that wiped the database under it: the
    /// runtime's internal error (the iterator's query was canceled). `reference` names the
    /// log line with the cause.
    #[error("internal error; reference = {reference}")]
    ListCanceled {
        /// The reference of the log line that holds the cause.
        reference: String,
    },
    /// A key over the configured key-size limit (the legacy backend's 2 KiB).
    #[error("Keys cannot be larger than {limit} bytes. A key of size {size} was provided.")]
    KeyTooLarge {
        /// The key's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A value over the configured value-size limit (the legacy backend's 128 KiB).
    #[error("Values cannot be larger than {limit} bytes. A value of size {size} was provided.")]
    ValueTooLarge {
        /// The serialized value's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More keys in one call than the configured batch limit (the legacy backend's 128).
    #[error("Maximum number of key value pairs is {limit}. {count} pairs were provided.")]
    TooManyKeys {
        /// Keys in the call.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A value could not be serialized.
    #[error("cannot serialize value: {message}")]
    Encode {
        /// What the serializer said.
        message: String,
    },
    /// Stored bytes could not be decoded as the requested type.
    #[error("cannot deserialize stored value: {message}")]
    Decode {
        /// What the decoder said.
        message: String,
    },
    /// Stored bytes carry a format version this build does not know.
    #[error("stored value has unknown format version {version}")]
    UnknownFormat {
        /// The version byte found.
        version: u8,
    },
}

impl Error {
    /// The JavaScript error class the runtime throws for this error.
    pub fn js_name(&self) -> &'static str {
        match self {
            Error::Sql(e) => e.js_name(),
            Error::StartAndStartAfter | Error::LimitNotPositive => "TypeError",
            Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } | Error::TooManyKeys { .. } => {
                "RangeError"
            }
            _ => "Error",
        }
    }
}

/// A `Result` whose error is the KV layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
