//! `Database`: one object's SQLite connection, its statement cache, live cursors, the
//! implicit write transaction and savepoints.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::ffi;

use crate::auth::{self, AuthShared};
use crate::cache::{Home, StmtCache};
use crate::cursor::Cursor;
use crate::error::{Error, Result, SqliteFailure};
use crate::held::Held;
use crate::options::{Durability, Options};
use crate::pipeline::{CommitProgress, CommitSubscriber, Pipeline, SubscriptionId};
use crate::raw::{self, RawStmt};
use crate::value::SqlValue;

/// How [`Database::checkpoint`] copies the WAL into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointMode {
    /// Copy what can be copied without waiting.
    Passive,
    /// Copy everything, waiting for readers.
    Full,
    /// Copy everything and start the WAL over from its beginning.
    Restart,
    /// Copy everything and truncate the WAL file to zero bytes.
    Truncate,
}

/// One object's database.
///
/// A `Database` is a cheap handle (clone it freely); all clones share one connection, which
/// is used by one thread at a time. Cursors hold a handle too, so they can outlive the
/// borrow that created them and be moved between threads.
///
/// Writes are grouped into an *implicit transaction*: the first write opens it and
/// [`commit`](Database::commit) ends it. A handle dropped with a transaction still open
/// commits it, so nothing written is lost; call [`rollback`](Database::rollback) first to
/// discard instead.
#[derive(Clone)]
pub struct Database {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Database").field("path", &state.path).finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) pipeline: Arc<Pipeline>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if state.conn.is_some() && state.txn_open {
            // Nothing written is lost: a handle dropped mid-transaction commits it.
            let _ = state.commit();
            if state.txn_open {
                state.rollback();
            }
        }
        self.pipeline.close();
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A statement slot owned by a live cursor.
pub(crate) struct Slot {
    stmt: Option<RawStmt>,
    home: Home<Box<str>>,
    readonly: bool,
    columns: usize,
    /// Rows read out ahead of the cursor (before a commit finished its statement).
    buffered: VecDeque<Vec<SqlValue>>,
    /// An error met while reading ahead, reported when the cursor gets there.
    error: Option<Error>,
}

pub(crate) struct State {
    conn: Option<rusqlite::Connection>,
    path: Option<PathBuf>,
    options: Options,
    auth: Arc<AuthShared>,
    cache: StmtCache,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
    pub(crate) generation: u64,
    txn_open: bool,
    /// Some write of the open transaction was confirmed (made outside [`Database::unconfirmed`]).
    confirmed: bool,
    /// Depth of [`Database::unconfirmed`] calls running.
    unconfirmed: u32,
    sync_depth: u32,
    broken: Option<Error>,
    pipeline: Arc<Pipeline>,
}

/// What `exec` hands to a new cursor.
pub(crate) struct Started {
    pub slot: Option<usize>,
    pub first: Option<Vec<SqlValue>>,
    pub columns: Vec<String>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub generation: u64,
}

/// The outcome of stepping a cursor's statement.
pub(crate) struct Stepped {
    pub row: Option<Vec<SqlValue>>,
    pub finished: bool,
    /// The statement's counters after the step, when the statement was stepped.
    pub counters: Option<(u64, u64)>,
}

fn is_sql_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl Database {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Database> {
        Database::start(Some(path.as_ref().to_path_buf()), options)
    }

    /// Opens a private in-memory database (for tests and ephemeral objects).
    pub fn open_in_memory(options: Options) -> Result<Database> {
        Database::start(None, options)
    }

    fn start(path: Option<PathBuf>, options: Options) -> Result<Database> {
        let pipeline = Pipeline::new(options.durability, path.as_deref());
        let state = State::open(path, options, pipeline.clone())?;
        let shared = Arc::new(Shared { state: Mutex::new(state), pipeline });
        shared.pipeline.attach(Arc::downgrade(&shared));
        Ok(Database { shared })
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<PathBuf> {
        self.shared.lock().path.clone()
    }

    /// Runs `query` with `params` bound to the last statement.
    ///
    /// Every statement but the last runs to completion during the call (results discarded);
    /// earlier statements stay applied when a later one fails. The last statement is stepped
    /// once here, so its errors and, for writes, all of its effects happen now; the returned
    /// cursor reads its rows.
    ///
    /// ```
    /// # use durable_sql::{Database, Options, params};
    /// let db = Database::open_in_memory(Options::default())?;
    /// db.exec("CREATE TABLE t(x)", &[])?;
    /// db.exec("INSERT INTO t VALUES (?), (?)", &params![1, 2])?;
    /// let total: i64 = db.exec("SELECT sum(x) AS s FROM t", &[])?.one()?;
    /// assert_eq!(total, 3);
    /// # Ok::<(), durable_sql::Error>(())
    /// ```
    pub fn exec(&self, query: &str, params: &[SqlValue]) -> Result<Cursor> {
        let started = self.shared.lock().exec(query, params)?;
        Ok(Cursor::new(self.clone(), started))
    }

    /// The database's size in bytes: pages in use (WAL included) times the page size.
    pub fn database_size(&self) -> Result<u64> {
        self.shared.lock().database_size()
    }

    /// Runs `f` inside a savepoint. `Ok` releases it; `Err` rolls back to it and returns the
    /// error; a panic rolls back and is resumed. Calls nest. The savepoint lives inside the
    /// implicit transaction, so its work is durable at the next [`commit`](Database::commit).
    pub fn transaction_sync<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        let depth = self.shared.lock().open_sync_savepoint()?;
        let outcome = catch_unwind(AssertUnwindSafe(f));
        let mut state = self.shared.lock();
        match outcome {
            Ok(Ok(value)) => {
                state.release_sync_savepoint(depth)?;
                Ok(value)
            }
            Ok(Err(err)) => {
                state.rollback_sync_savepoint(depth);
                Err(err)
            }
            Err(panic) => {
                state.rollback_sync_savepoint(depth);
                drop(state);
                resume_unwind(panic)
            }
        }
    }

    /// True while a write transaction is open (uncommitted writes exist).
    pub fn in_transaction(&self) -> bool {
        self.shared.lock().txn_open
    }

    /// True while the open transaction holds a *confirmed* write: any write made outside
    /// [`unconfirmed`](Database::unconfirmed) (every SQL write, every `transaction_sync`).
    /// The turn layer locks the output gate only for such transactions (the runtime's
    /// `allowUnconfirmed`).
    pub fn write_confirmed(&self) -> bool {
        let state = self.shared.lock();
        state.txn_open && state.confirmed
    }

    /// Runs `f` with its writes counted as unconfirmed (`allowUnconfirmed: true`): they open
    /// the implicit transaction as any write does, but do not make it
    /// [`write_confirmed`](Database::write_confirmed).
    pub fn unconfirmed<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Ends the unconfirmed scope however `f` ends, a panic included.
        struct Scope<'a>(&'a Shared);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.unconfirmed = state.unconfirmed.saturating_sub(1);
            }
        }
        self.shared.lock().unconfirmed += 1;
        let _scope = Scope(&self.shared);
        f()
    }

    /// Opens the implicit transaction if none is open, as a write would.
    pub fn begin_write(&self) -> Result<()> {
        self.shared.lock().begin_write()
    }

    /// Commits the implicit transaction, if one is open, and returns the commit's sequence
    /// number in the [commit pipeline](crate::pipeline) (`None`: nothing to commit). The
    /// commit is durable when it returns under [`Durability::Full`]; under
    /// [`Durability::Group`] once its [`CommitEvent::Durable`](crate::CommitEvent::Durable) event is out (or after
    /// [`sync`](Database::sync)).
    ///
    /// Write statements still open in cursors (a `RETURNING` not read to its end) are
    /// finished first, their rows kept for the cursor, so a commit never fails because of a
    /// cursor left open. Constraints violated at commit (deferred foreign keys) roll the
    /// transaction back and return [`Error::ConstraintsAtCommit`].
    pub fn commit(&self) -> Result<Option<u64>> {
        let seq = self.shared.lock().commit()?;
        if let Some(seq) = seq {
            self.shared.pipeline.after_commit(seq, self);
        }
        Ok(seq)
    }

    /// Commits like [`commit`](Database::commit), then syncs on this thread rather than on a
    /// sync thread: for a caller that waits for durability anyway (one handoff to a sync
    /// thread and back less). Returns the commit's outcome; the sync's is the pipeline's to
    /// tell (a [`sync`](Database::sync) right after returns it at once).
    pub fn commit_and_sync(&self) -> Result<Option<u64>> {
        let seq = self.shared.lock().commit()?;
        match (seq, self.durability()) {
            (Some(_), Durability::Group) => {
                let _ = self.shared.pipeline.sync_now();
            }
            (Some(seq), _) => self.shared.pipeline.after_commit(seq, self),
            (None, _) => {}
        }
        Ok(seq)
    }

    /// Makes every commit made before the call durable, on this thread (a sync already
    /// running for this database is waited for first). Nothing to do unless the database
    /// group-commits. Fails once a sync has failed: the database must be opened again.
    pub fn sync(&self) -> Result<()> {
        self.shared.pipeline.sync_now().map_err(|error| Error::SyncFailed {
            path: self.path().map_or_else(|| ":memory:".into(), |p| p.display().to_string()),
            message: error.to_string(),
        })
    }

    /// Stops this database's commit pipeline as a failed sync does: subscribers get
    /// `SyncFailed` with `error`, no later commit is reported durable, and [`sync`] fails from
    /// now on, so whoever waits on durability (the turn layer's output gate) fails and the
    /// object must be opened again. For hosts whose durability depends on more than the
    /// local disk: the archiver calls it when another node has taken the object over
    /// (fencing).
    ///
    /// [`sync`]: Database::sync
    pub fn fail_durability(&self, error: std::io::Error) {
        self.shared.pipeline.fail(error);
    }

    /// When this database's commits are durable.
    pub fn durability(&self) -> Durability {
        self.shared.pipeline.durability()
    }

    /// Where the database's commits stand: the last commit, the last durable one, and the
    /// sync failure that stopped the pipeline if one did.
    pub fn commit_progress(&self) -> CommitProgress {
        self.shared.pipeline.progress()
    }

    /// Adds a subscriber to the [commit pipeline](crate::pipeline): it is told every later
    /// event, in order. Returns the id that ends the subscription.
    pub fn subscribe(&self, subscriber: Arc<dyn CommitSubscriber>) -> SubscriptionId {
        self.shared.pipeline.subscribe(subscriber)
    }

    /// Ends a subscription. When this returns the subscriber is not being told an event and
    /// will not be told another (deliveries in flight are waited for), so whatever it holds
    /// can be let go. Must not be called from inside a subscriber, nor with the database
    /// locked.
    pub fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.pipeline.unsubscribe(id);
        // Events delivered with the database locked: wait for one in flight.
        drop(self.shared.lock());
    }

    /// Runs `hook` before every group-commit sync, on the thread that syncs; an error it
    /// returns fails the sync, as a failed `fdatasync` would (tests hold and fail syncs with
    /// it). `None` removes it.
    #[cfg(feature = "testing")]
    pub fn set_sync_hook(&self, hook: Option<crate::pipeline::SyncHook>) {
        self.shared.pipeline.set_hook(hook);
    }

    /// The WAL file of this database (`<path>-wal`), or `None` for an in-memory database.
    pub fn wal_path(&self) -> Option<PathBuf> {
        self.path().map(|p| crate::files::wal_path(&p))
    }

    /// Discards the implicit transaction, if one is open.
    pub fn rollback(&self) -> Result<()> {
        self.shared.lock().rollback();
        Ok(())
    }

    /// Deletes the database and starts over with an empty one: every table (the project's
    /// included), index, trigger and setting is gone. Open cursors fail with
    /// [`Error::Canceled`] from then on.
    pub fn reset(&self) -> Result<()> {
        self.shared.lock().reset()
    }

    /// The error that broke this handle, if a critical error did.
    pub fn broken(&self) -> Option<Error> {
        self.shared.lock().broken.clone()
    }

    /// Checkpoints the WAL into the database file. Returns the WAL's size in frames and how
    /// many of them are now in the database file.
    pub fn checkpoint(&self, mode: CheckpointMode) -> Result<(u32, u32)> {
        self.shared.lock().checkpoint(mode)
    }

    /// Runs `f` with the connection in trusted mode: the authorizer lets internal SQL reach
    /// the project's own `_cf_` tables. This is the seam the KV layer and the archiver use;
    /// user SQL must never go through it.
    pub fn internal<T>(&self, f: impl FnOnce(&mut Internal<'_>) -> Result<T>) -> Result<T> {
        let mut state = self.shared.lock();
        state.auth.trusted.store(true, Ordering::Relaxed);
        // Dropping `Internal` turns trusted mode off again however the closure ends, a
        // panic included, so user SQL can never run with the authorizer relaxed.
        let mut internal = Internal { state: &mut state };
        let result = f(&mut internal);
        drop(internal);
        if let Err(Error::Sqlite(failure)) = &result {
            state.note_failure(failure);
        }
        result
    }

    /// Closes the handle, committing an open transaction. Other clones keep the connection
    /// open; it closes when the last one goes.
    pub fn close(self) -> Result<()> {
        self.commit().map(|_| ())
    }
}

/// Trusted access to the connection, handed out by [`Database::internal`].
pub struct Internal<'a> {
    state: &'a mut State,
}

impl Drop for Internal<'_> {
    fn drop(&mut self) {
        self.state.auth.trusted.store(false, Ordering::Relaxed);
    }
}

impl Internal<'_> {
    /// The underlying rusqlite connection.
    pub fn connection(&self) -> &rusqlite::Connection {
        self.state.conn()
    }

    /// Opens the implicit transaction if none is open (call before writing).
    pub fn begin_write(&mut self) -> Result<()> {
        self.state.begin_write()
    }

    /// Fails with [`Error::Broken`] once a critical error has broken the handle, as
    /// [`begin_write`](Internal::begin_write) does: for reads that the runtime refuses after
    /// a critical error (its KV reads; its read-only SQL is not checked, nor is this crate's).
    pub fn check_broken(&self) -> Result<()> {
        match &self.state.broken {
            Some(broken) => Err(Error::Broken(Box::new(broken.clone()))),
            None => Ok(()),
        }
    }

    /// Opens a savepoint with `name` (an internal `_cf_` name).
    pub fn savepoint(&mut self, name: &str) -> Result<()> {
        self.state.batch(&format!("SAVEPOINT {name}"))
    }

    /// Releases the savepoint `name`.
    pub fn release(&mut self, name: &str) -> Result<()> {
        self.state.batch(&format!("RELEASE {name}"))
    }

    /// Rolls back to the savepoint `name` and releases it.
    pub fn rollback_to(&mut self, name: &str) -> Result<()> {
        self.state.batch(&format!("ROLLBACK TO {name}"))?;
        self.state.batch(&format!("RELEASE {name}"))
    }

    /// True when no transaction is open at the SQLite level.
    pub fn autocommit(&self) -> bool {
        raw::autocommit(self.state.handle())
    }

    /// The statement for `sql` (one statement of the project's own SQL), prepared on first
    /// use in trusted mode and held by the database across calls, for hot internal paths
    /// (the KV layer's point reads and writes). The database finalizes it on
    /// [`reset`](Database::reset) and close; SQLite re-prepares it after schema changes, and
    /// a step reports an error if that fails (a table it reads no longer exists).
    ///
    /// Held statements are kept apart from the cache of [`exec`](Database::exec), so user
    /// SQL with the same text never runs a statement prepared in trusted mode.
    pub fn held(&mut self, sql: &'static str) -> Result<Held<'_>> {
        let db = self.state.handle();
        let index = match self.state.cache.held_index(sql) {
            Some(index) => index,
            None => {
                let (stmt, consumed) = raw::prepare(db, sql).map_err(Error::Sqlite)?;
                let stmt = stmt.ok_or(Error::NoStatement)?;
                debug_assert!(
                    sql.as_bytes()[consumed..].iter().all(|&b| is_sql_space(b)),
                    "a held statement is one statement: {sql}"
                );
                self.state.cache.hold(sql, stmt)
            }
        };
        Ok(Held::new(self.state.cache.held_at(index), db))
    }

    /// Checkpoints the WAL while the database stays locked (so no commit can slip in
    /// between an archiver's last copy of the WAL and the checkpoint). Returns the WAL's size
    /// in frames and how many of them are now in the database file. Fails with SQLite's error
    /// when a transaction is open.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<(u32, u32)> {
        if !self.autocommit() {
            return Err(Error::Sqlite(SqliteFailure {
                message: "cannot checkpoint while a transaction is open".into(),
                code: ffi::SQLITE_LOCKED,
                extended_code: ffi::SQLITE_LOCKED,
                offset: None,
            }));
        }
        self.state.checkpoint(mode)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(err, message) => Error::Sqlite(SqliteFailure {
                message: message.unwrap_or_else(|| err.to_string()),
                code: err.extended_code & 0xff,
                extended_code: err.extended_code,
                offset: None,
            }),
            rusqlite::Error::SqlInputError { error, msg, offset, .. } => {
                Error::Sqlite(SqliteFailure {
                    message: msg,
                    code: error.extended_code & 0xff,
                    extended_code: error.extended_code,
                    offset: usize::try_from(offset).ok(),
                })
            }
            other => Error::Sqlite(SqliteFailure {
                message: other.to_string(),
                code: ffi::SQLITE_ERROR,
                extended_code: ffi::SQLITE_ERROR,
                offset: None,
            }),
        }
    }
}

impl State {
    fn open(path: Option<PathBuf>, options: Options, pipeline: Arc<Pipeline>) -> Result<State> {
        let auth = Arc::new(AuthShared::default());
        let conn = connect(path.as_deref(), &options, &auth)?;
        Ok(State {
            cache: StmtCache::new(options.statement_cache_bytes),
            conn: Some(conn),
            path,
            options,
            auth,
            slots: Vec::new(),
            free_slots: Vec::new(),
            generation: 0,
            txn_open: false,
            confirmed: false,
            unconfirmed: 0,
            sync_depth: 0,
            broken: None,
            pipeline,
        })
    }

    fn conn(&self) -> &rusqlite::Connection {
        self.conn.as_ref().expect("connection is open")
    }

    fn handle(&self) -> *mut ffi::sqlite3 {
        // SAFETY: the handle is only used under the database lock, while `conn` lives.
        unsafe { self.conn().handle() }
    }

    /// Runs internal SQL in trusted mode.
    fn batch(&self, sql: &str) -> Result<()> {
        let was = self.auth.trusted.swap(true, Ordering::Relaxed);
        let result = raw::execute_batch(self.handle(), sql);
        self.auth.trusted.store(was, Ordering::Relaxed);
        result.map_err(Error::Sqlite)
    }

    fn begin_write(&mut self) -> Result<()> {
        if let Some(broken) = &self.broken {
            return Err(Error::Broken(Box::new(broken.clone())));
        }
        if !self.txn_open {
            self.batch("BEGIN")?;
            self.txn_open = true;
            self.confirmed = false;
        }
        if self.unconfirmed == 0 {
            self.confirmed = true;
        }
        Ok(())
    }

    /// Records a statement failure; a critical one that rolled the transaction back breaks
    /// the handle.
    fn note_failure(&mut self, failure: &SqliteFailure) {
        if failure.is_critical() && self.txn_open && raw::autocommit(self.handle()) {
            self.txn_open = false;
            self.broken = Some(Error::Sqlite(failure.clone()));
        }
    }

    fn statement_error(&mut self, failure: SqliteFailure) -> Error {
        self.note_failure(&failure);
        Error::Sqlite(failure)
    }

    fn prepare_error(&self, failure: SqliteFailure) -> Error {
        if self.auth.denied_transaction.swap(false, Ordering::Relaxed) {
            Error::TransactionStatement
        } else {
            Error::Sqlite(failure)
        }
    }

    /// Gives a finished statement back to the cache (or finalizes it).
    fn release(&mut self, stmt: RawStmt, home: Home<&str>) {
        stmt.reset();
        self.cache.give_back(stmt, home);
    }

    pub(crate) fn exec(&mut self, sql: &str, params: &[SqlValue]) -> Result<Started> {
        if let Some((slot, stmt)) = self.cache.checkout(sql) {
            return self.start(stmt, Home::Cached(slot), params);
        }
        let db = self.handle();
        let mut offset = 0;
        loop {
            let rest = sql.get(offset..).unwrap_or("");
            self.auth.denied_transaction.store(false, Ordering::Relaxed);
            let (stmt, consumed) = raw::prepare(db, rest).map_err(|f| self.prepare_error(f))?;
            let Some(stmt) = stmt else {
                return Err(Error::NoStatement);
            };
            let tail = rest.as_bytes().get(consumed..).unwrap_or(&[]);
            if tail.iter().all(|&b| is_sql_space(b)) {
                let home = if offset == 0 { Home::Fresh(sql) } else { Home::Uncached };
                return self.start(stmt, home, params);
            }
            if stmt.parameter_count() > 0 {
                stmt.finalize();
                return Err(Error::ParametersBeforeLastStatement);
            }
            if !stmt.readonly()
                && let Err(e) = self.begin_write()
            {
                stmt.finalize();
                return Err(e);
            }
            let outcome = loop {
                match stmt.step(db) {
                    Ok(true) => continue,
                    Ok(false) => break Ok(()),
                    Err(failure) => break Err(failure),
                }
            };
            stmt.finalize();
            if let Err(failure) = outcome {
                return Err(self.statement_error(failure));
            }
            offset += consumed;
            // The next statement starts at its first token, so error offsets count from it.
            offset += sql.as_bytes()[offset..].iter().take_while(|&&b| is_sql_space(b)).count();
        }
    }

    fn start(&mut self, stmt: RawStmt, home: Home<&str>, params: &[SqlValue]) -> Result<Started> {
        let expected = stmt.parameter_count();
        if expected != params.len() {
            self.release(stmt, home);
            return Err(Error::WrongParameterCount { expected, given: params.len() });
        }
        let db = self.handle();
        if let Err(failure) = stmt.bind_all(db, params) {
            self.release(stmt, home);
            return Err(Error::Sqlite(failure));
        }
        let readonly = stmt.readonly();
        if !readonly && let Err(e) = self.begin_write() {
            self.release(stmt, home);
            return Err(e);
        }
        stmt.row_counters(true);
        let stepped = stmt.step(db);
        let (rows_read, rows_written) = stmt.row_counters(false);
        match stepped {
            Ok(true) => {
                let columns = stmt.column_names();
                let first = stmt.read_row(columns.len());
                let slot = self.insert_slot(Slot {
                    stmt: Some(stmt),
                    home: home.to_owned(),
                    readonly,
                    columns: columns.len(),
                    buffered: VecDeque::new(),
                    error: None,
                });
                Ok(Started {
                    slot: Some(slot),
                    first: Some(first),
                    columns,
                    rows_read,
                    rows_written,
                    generation: self.generation,
                })
            }
            Ok(false) => {
                let columns = stmt.column_names();
                self.release(stmt, home);
                Ok(Started {
                    slot: None,
                    first: None,
                    columns,
                    rows_read,
                    rows_written,
                    generation: self.generation,
                })
            }
            Err(failure) => {
                self.release(stmt, home);
                Err(self.statement_error(failure))
            }
        }
    }

    fn insert_slot(&mut self, slot: Slot) -> usize {
        match self.free_slots.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    /// Steps a cursor's statement. `Ok(row: None, finished: true)` at the end.
    pub(crate) fn step_slot(&mut self, id: usize, generation: u64) -> Result<Stepped> {
        if generation != self.generation {
            return Err(Error::Canceled);
        }
        let db = self.handle();
        let slot = self.slots.get_mut(id).and_then(Option::as_mut).ok_or(Error::Canceled)?;
        if let Some(row) = slot.buffered.pop_front() {
            let finished = slot.stmt.is_none() && slot.buffered.is_empty() && slot.error.is_none();
            if finished {
                self.free_slot(id);
            }
            return Ok(Stepped { row: Some(row), finished, counters: None });
        }
        if let Some(error) = slot.error.take() {
            self.free_slot(id);
            return Err(error);
        }
        let Some(stmt) = slot.stmt.as_ref() else {
            self.free_slot(id);
            return Ok(Stepped { row: None, finished: true, counters: None });
        };
        let stepped = stmt.step(db);
        let counters = Some(stmt.row_counters(false));
        match stepped {
            Ok(true) => {
                let row = stmt.read_row(slot.columns);
                Ok(Stepped { row: Some(row), finished: false, counters })
            }
            Ok(false) => {
                self.free_slot(id);
                Ok(Stepped { row: None, finished: true, counters })
            }
            Err(failure) => {
                self.free_slot(id);
                Err(self.statement_error(failure))
            }
        }
    }

    /// Ends a cursor's statement early (the cursor was dropped or closed).
    pub(crate) fn close_slot(&mut self, id: usize, generation: u64) {
        if generation == self.generation {
            self.free_slot(id);
        }
    }

    fn free_slot(&mut self, id: usize) {
        if let Some(slot) = self.slots.get_mut(id).and_then(Option::take) {
            if let Some(stmt) = slot.stmt {
                self.release(stmt, slot.home.as_ref());
            }
            self.free_slots.push(id);
        }
    }

    /// Runs every open write statement to its end, keeping its rows for its cursor.
    fn finish_writers(&mut self) {
        let db = self.handle();
        let mut done = Vec::new();
        for slot in self.slots.iter_mut().flatten() {
            if slot.readonly {
                continue;
            }
            let Some(stmt) = slot.stmt.take() else { continue };
            loop {
                match stmt.step(db) {
                    Ok(true) => slot.buffered.push_back(stmt.read_row(slot.columns)),
                    Ok(false) => break,
                    Err(failure) => {
                        slot.error = Some(Error::Sqlite(failure));
                        break;
                    }
                }
            }
            done.push((stmt, std::mem::replace(&mut slot.home, Home::Uncached)));
        }
        for (stmt, home) in done {
            self.release(stmt, home.as_ref());
        }
    }

    fn commit(&mut self) -> Result<Option<u64>> {
        if !self.txn_open {
            return Ok(None);
        }
        if self.sync_depth > 0 {
            return Err(Error::Sqlite(SqliteFailure {
                message: "cannot commit while transaction_sync is running".into(),
                code: ffi::SQLITE_MISUSE,
                extended_code: ffi::SQLITE_MISUSE,
                offset: None,
            }));
        }
        self.finish_writers();
        match self.batch("COMMIT") {
            Ok(()) => {
                self.txn_open = false;
                Ok(Some(self.pipeline.committed()))
            }
            Err(Error::Sqlite(failure)) => {
                if !raw::autocommit(self.handle()) {
                    let _ = self.batch("ROLLBACK");
                }
                self.txn_open = false;
                if failure.code == ffi::SQLITE_CONSTRAINT {
                    Err(Error::ConstraintsAtCommit(failure))
                } else {
                    if failure.is_critical() {
                        self.broken = Some(Error::Sqlite(failure.clone()));
                    }
                    Err(Error::Sqlite(failure))
                }
            }
            Err(other) => Err(other),
        }
    }

    fn rollback(&mut self) {
        if !self.txn_open {
            return;
        }
        self.finish_writers();
        if !raw::autocommit(self.handle()) {
            let _ = self.batch("ROLLBACK");
        }
        self.txn_open = false;
        self.sync_depth = 0;
    }

    fn open_sync_savepoint(&mut self) -> Result<u32> {
        self.begin_write()?;
        let depth = self.sync_depth;
        self.batch(&format!("SAVEPOINT _cf_sync_savepoint_{depth}"))?;
        self.sync_depth += 1;
        Ok(depth)
    }

    fn release_sync_savepoint(&mut self, depth: u32) -> Result<()> {
        self.sync_depth = depth;
        if self.broken.is_some() || !self.txn_open || raw::autocommit(self.handle()) {
            return Err(Error::CriticalErrorInTransaction);
        }
        self.batch(&format!("RELEASE _cf_sync_savepoint_{depth}"))
    }

    fn rollback_sync_savepoint(&mut self, depth: u32) {
        self.sync_depth = depth;
        if self.broken.is_some() || !self.txn_open || raw::autocommit(self.handle()) {
            return;
        }
        self.finish_writers();
        let name = format!("_cf_sync_savepoint_{depth}");
        let _ = self.batch(&format!("ROLLBACK TO {name}"));
        let _ = self.batch(&format!("RELEASE {name}"));
    }

    fn database_size(&self) -> Result<u64> {
        let conn = self.conn();
        let was = self.auth.trusted.swap(true, Ordering::Relaxed);
        let result = (|| -> rusqlite::Result<u64> {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(((pages - free).max(0) * size) as u64)
        })();
        self.auth.trusted.store(was, Ordering::Relaxed);
        Ok(result?)
    }

    fn checkpoint(&mut self, mode: CheckpointMode) -> Result<(u32, u32)> {
        let mode = match mode {
            CheckpointMode::Passive => ffi::SQLITE_CHECKPOINT_PASSIVE,
            CheckpointMode::Full => ffi::SQLITE_CHECKPOINT_FULL,
            CheckpointMode::Restart => ffi::SQLITE_CHECKPOINT_RESTART,
            CheckpointMode::Truncate => ffi::SQLITE_CHECKPOINT_TRUNCATE,
        };
        raw::checkpoint(self.handle(), mode).map_err(Error::Sqlite)
    }

    fn finalize_all(&mut self) {
        for slot in self.slots.iter_mut() {
            if let Some(stmt) = slot.take().and_then(|s| s.stmt) {
                stmt.finalize();
            }
        }
        self.slots.clear();
        self.free_slots.clear();
        self.cache.clear();
    }

    fn reset(&mut self) -> Result<()> {
        self.finalize_all();
        self.pipeline.resetting();
        self.generation += 1;
        self.txn_open = false;
        self.sync_depth = 0;
        self.broken = None;
        // Dropping the connection closes it (rolling back anything uncommitted).
        drop(self.conn.take());
        if let Some(path) = &self.path {
            for name in crate::files::all_paths(path) {
                match std::fs::remove_file(&name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Open {
                            path: name.display().to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        self.conn = Some(connect(self.path.as_deref(), &self.options, &self.auth)?);
        // The removals and the new files are entries of the folder: make them durable, or a
        // power loss could bring the old database back (`delete_all` returns durable).
        if let Some(dir) = self.path.as_deref().and_then(Path::parent)
            && self.options.durability != Durability::Off
        {
            crate::files::sync_dir(dir).map_err(|e| Error::Open {
                path: dir.display().to_string(),
                message: format!("cannot sync the folder: {e}"),
            })?;
        }
        self.pipeline.reset_done();
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The final commit ran in `Shared::drop`.
        if self.conn.is_some() {
            self.finalize_all();
        }
    }
}

fn open_error(path: Option<&Path>, e: impl std::fmt::Display) -> Error {
    Error::Open {
        path: path.map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string()),
        message: e.to_string(),
    }
}

/// Opens and configures one connection.
fn connect(
    path: Option<&Path>,
    options: &Options,
    auth: &Arc<AuthShared>,
) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let mut conn = match path {
        Some(p) => rusqlite::Connection::open_with_flags(p, flags),
        None => rusqlite::Connection::open_in_memory_with_flags(flags),
    }
    .map_err(|e| open_error(path, e))?;
    configure(&conn, options).map_err(|e| open_error(path, e))?;
    auth::install(&mut conn, auth.clone()).map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// Each connection's lookaside buffer: slot size in bytes and slot count. SQLite's default
/// (1200 x 40, 48 kB) is touched in full when the connection opens, and was about 45% of an
/// open object's memory; half of it keeps every allocation of a cached statement's execution
/// (KV gets and puts, a prepared INSERT) in lookaside, as measured with callgrind, and costs
/// opening and preparing nothing measurable. `docs/performance.md`, (g-mem), has the figures.
const LOOKASIDE: (c_int, c_int) = (1200, 20);

fn configure(conn: &rusqlite::Connection, options: &Options) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    use rusqlite::limits::Limit;
    // First: SQLite refuses to change lookaside once the connection has allocated from it.
    let (size, count) = LOOKASIDE;
    raw::set_lookaside(conn, size, count).map_err(|f| {
        rusqlite::Error::SqliteFailure(ffi::Error::new(f.extended_code), Some(f.message))
    })?;
    if options.exclusive_locking {
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    }
    // `synchronous` first: switching a new file to WAL writes and syncs it under the
    // setting in force, so the caller's choice (OFF in tests) must already apply.
    conn.pragma_update(None, "synchronous", options.durability.pragma_value())?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    let _ = mode; // in-memory databases answer "memory"
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !options.auto_checkpoint {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let max_pages = (options.limits.max_database_size / page_size.max(512) as u64).max(1);
    conn.query_row(&format!("PRAGMA max_page_count={max_pages}"), [], |_| Ok(()))?;
    let l = &options.limits;
    let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, to_i32(l.max_value_size))?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, to_i32(l.max_statement_length))?;
    conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, to_i32(l.max_columns))?;
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, to_i32(l.max_expression_depth))?;
    conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, to_i32(l.max_compound_select))?;
    conn.set_limit(Limit::SQLITE_LIMIT_VDBE_OP, 25_000)?;
    conn.set_limit(Limit::SQLITE_LIMIT_FUNCTION_ARG, to_i32(l.max_function_arguments))?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, to_i32(l.max_like_pattern_length))?;
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, to_i32(l.max_bound_parameters))?;
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, to_i32(l.max_trigger_depth))?;
    conn.set_limit(Limit::SQLITE_LIMIT_WORKER_THREADS, 0)?;
    Ok(())
}
