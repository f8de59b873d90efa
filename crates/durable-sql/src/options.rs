//! Options for opening a database: durability, locking, checkpoints and limits.

/// When a commit is durable, and so when the commit pipeline reports it durable
/// ([`CommitEvent::Durable`](crate::CommitEvent::Durable)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// No fsync at all (`synchronous=OFF`): fast, but a power loss can lose or corrupt recent
    /// commits. For tests and throwaway data; commits are reported durable at once.
    Off,
    /// An fsync inside every `COMMIT` (`synchronous=FULL`, the default): a commit is durable
    /// when it returns.
    #[default]
    Full,
    /// Group commit (`synchronous=NORMAL`): a `COMMIT` writes the WAL without waiting for the
    /// disk, and a shared pool of threads makes it durable, one `fdatasync` of the WAL
    /// covering every commit made before it. SQLite still syncs around every checkpoint, so
    /// the file is never corrupt; a commit is durable once its `Durable` event is out, exactly
    /// as under `Full`.
    Group,
}

impl Durability {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Durability::Off => "OFF",
            Durability::Group => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// The limits one object's database enforces. The defaults are the production limits of
/// SQLite-backed Durable Objects (decimal units, as the runtime's documentation gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest database, in bytes (10 GB). Writes past it fail with `SQLITE_FULL`.
    pub max_database_size: u64,
    /// Most columns in a table, index or result set (100).
    pub max_columns: u32,
    /// Longest query text of one `exec`, in bytes (100 KB).
    pub max_statement_length: u32,
    /// Most bound parameters in one statement (100).
    pub max_bound_parameters: u32,
    /// Largest string, BLOB or row, in bytes (2 MB).
    pub max_value_size: u32,
    /// Most terms in a compound SELECT (5).
    pub max_compound_select: u32,
    /// Deepest expression tree (100).
    pub max_expression_depth: u32,
    /// Most arguments to one function (127).
    pub max_function_arguments: u32,
    /// Longest LIKE or GLOB pattern, in bytes (50).
    pub max_like_pattern_length: u32,
    /// Deepest trigger recursion (10).
    pub max_trigger_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_database_size: 10_000_000_000,
            max_columns: 100,
            max_statement_length: 100_000,
            max_bound_parameters: 100,
            max_value_size: 2_000_000,
            max_compound_select: 5,
            max_expression_depth: 100,
            max_function_arguments: 127,
            max_like_pattern_length: 50,
            max_trigger_depth: 10,
        }
    }
}

/// How to open an object's database.
///
/// Built with [`Options::new`] (or `default()`) and one method per option; more options may
/// come, so there is no struct literal outside this crate:
///
/// ```
/// use durable_sql::{Durability, Options};
///
/// let options = Options::new().durability(Durability::Group).exclusive_locking(true);
/// assert!(options.auto_checkpoint);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// When commits are durable ([`Durability::Full`] by default).
    pub durability: Durability,
    /// The limits to enforce.
    pub limits: Limits,
    /// Hold the file with `locking_mode=EXCLUSIVE`: faster reads and commits, but no other
    /// process can open the database while this handle is open. Off by default.
    pub exclusive_locking: bool,
    /// Let SQLite checkpoint the WAL by itself (on by default). An archiver that must see
    /// every WAL frame turns this off and calls [`Database::checkpoint`](crate::Database::checkpoint).
    pub auto_checkpoint: bool,
    /// Bytes of SQL text the prepared-statement cache may hold (1 MiB, as the runtime).
    pub statement_cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Full,
            limits: Limits::default(),
            exclusive_locking: false,
            auto_checkpoint: true,
            statement_cache_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// The defaults (`Options::default()`); chain the builder methods to change them: `Options::new().durability(Durability::Group)`.
    pub fn new() -> Options {
        Options::default()
    }

    /// When commits are durable ([`durability`](Options::durability)).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// The limits to enforce ([`limits`](Options::limits)).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Options {
        self.limits = limits;
        self
    }

    /// Holds the file with `locking_mode=EXCLUSIVE` ([`exclusive_locking`](Options::exclusive_locking)).
    #[must_use]
    pub fn exclusive_locking(mut self, exclusive_locking: bool) -> Options {
        self.exclusive_locking = exclusive_locking;
        self
    }

    /// Lets SQLite checkpoint the WAL by itself ([`auto_checkpoint`](Options::auto_checkpoint)).
    #[must_use]
    pub fn auto_checkpoint(mut self, auto_checkpoint: bool) -> Options {
        self.auto_checkpoint = auto_checkpoint;
        self
    }

    /// Bytes of SQL text the statement cache may hold ([`statement_cache_bytes`](Options::statement_cache_bytes)).
    #[must_use]
    pub fn statement_cache_bytes(mut self, statement_cache_bytes: usize) -> Options {
        self.statement_cache_bytes = statement_cache_bytes;
        self
    }
}
