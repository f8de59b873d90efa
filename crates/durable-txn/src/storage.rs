//! `Storage`: one object's storage with the turn model on top (the seed's `ctx.storage`).

use std::sync::{Arc, Mutex, MutexGuard};

use durable_kv::{Kv, ListOptions};
use durable_sql::{Database, Options};
use serde::Serialize;
use serde::de::DeserializeOwned;

use durable_backend::KvBackend;
use durable_backend::cache::CacheOptions;

use crate::alarm::{self, AlarmCache, AlarmTime};
use crate::clock::{Clock, SystemClock};
use crate::durability::Durable;
use crate::durability::Replicated;
use crate::error::{Error, Result};
use crate::legacy::{KvEngine, map_op};
use crate::op::Op;
use crate::recovery::Recovery;
use crate::target::Target;
use crate::transaction::{self, Transaction, TxnShared};

/// Options of a read (`get`, `list`, `get_alarm`): `GetOptions::new().no_cache(true)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    /// Let other events run while this read waits for I/O (the input gate stays open).
    pub allow_concurrency: bool,
    /// Keep what this read fetches out of the cache (memory use only).
    pub no_cache: bool,
}

/// Options of a write (`put`, `delete`, `set_alarm`, `delete_alarm`):
/// `PutOptions::new().allow_unconfirmed(true)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// Accepted for symmetry with reads; writes never wait for I/O.
    pub allow_concurrency: bool,
    /// Do not hold the object's results until this write is durable.
    pub allow_unconfirmed: bool,
    /// Keep the written entry out of the cache once it is flushed.
    pub no_cache: bool,
}

impl GetOptions {
    /// No options (`GetOptions::default()`): `GetOptions::new().allow_concurrency(true)`.
    pub fn new() -> GetOptions {
        GetOptions::default()
    }

    /// Lets other events run while the read waits for I/O ([`allow_concurrency`](GetOptions::allow_concurrency)).
    #[must_use]
    pub fn allow_concurrency(mut self, allow_concurrency: bool) -> GetOptions {
        self.allow_concurrency = allow_concurrency;
        self
    }

    /// Keeps what the read fetches out of the cache ([`no_cache`](GetOptions::no_cache)).
    #[must_use]
    pub fn no_cache(mut self, no_cache: bool) -> GetOptions {
        self.no_cache = no_cache;
        self
    }
}

impl PutOptions {
    /// No options (`PutOptions::default()`): `PutOptions::new().allow_unconfirmed(true)`.
    pub fn new() -> PutOptions {
        PutOptions::default()
    }

    /// Accepted for symmetry with reads ([`allow_concurrency`](PutOptions::allow_concurrency)).
    #[must_use]
    pub fn allow_concurrency(mut self, allow_concurrency: bool) -> PutOptions {
        self.allow_concurrency = allow_concurrency;
        self
    }

    /// Lets the object's results out before this write is durable ([`allow_unconfirmed`](PutOptions::allow_unconfirmed)).
    #[must_use]
    pub fn allow_unconfirmed(mut self, allow_unconfirmed: bool) -> PutOptions {
        self.allow_unconfirmed = allow_unconfirmed;
        self
    }

    /// Keeps the written entry out of the cache once flushed ([`no_cache`](PutOptions::no_cache)).
    #[must_use]
    pub fn no_cache(mut self, no_cache: bool) -> PutOptions {
        self.no_cache = no_cache;
        self
    }
}

/// Behaviours the runtime changed at a compatibility date, and which ones a storage follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compatibility {
    /// `delete_all()` deletes the alarm too: the runtime's `delete_all_deletes_alarm`
    /// compatibility flag, on by default from compatibility date 2026-02-24 (and so the
    /// default here). Off, the alarm survives `delete_all()`, as for earlier dates.
    pub delete_all_deletes_alarm: bool,
}

impl Default for Compatibility {
    fn default() -> Self {
        Compatibility { delete_all_deletes_alarm: true }
    }
}

impl Compatibility {
    /// The behaviours of the runtime at compatibility date `year-month-day`.
    pub fn for_date(year: u16, month: u8, day: u8) -> Compatibility {
        Compatibility { delete_all_deletes_alarm: (year, month, day) >= (2026, 2, 24) }
    }

    /// Sets [`delete_all_deletes_alarm`](Compatibility::delete_all_deletes_alarm).
    pub fn delete_all_deletes_alarm(mut self, on: bool) -> Compatibility {
        self.delete_all_deletes_alarm = on;
        self
    }
}

/// How the end of a turn went for storage.
#[derive(Debug)]
#[non_exhaustive]
pub enum TurnEnd {
    /// Nothing was written, or everything written is durable already.
    Durable,
    /// The turn's writes are on their way to the backend (KV-backed storage), or committed
    /// and waiting for their sync (SQLite-backed storage with group commit).
    Flushing {
        /// Completes once they are durable (fails if the flush fails).
        durable: Op<()>,
        /// Some write of the batch was confirmed: results must wait for `durable`.
        confirmed: bool,
    },
}

/// One object's storage: the SQL API, the sync KV API, the async KV API, both transaction
/// forms, alarms and the commit points, over one SQLite database.
///
/// Every write made between two commit points is one atomic transaction. Under the object
/// runtime ([`Object`](crate::Object)) the commit points are the ends of turns and come by
/// themselves; a program that uses `Storage` directly commits with [`sync`](Storage::sync)
/// (or [`end_turn`](Storage::end_turn)). A `Storage` dropped with writes pending commits
/// them, so nothing written is lost by forgetting a commit point.
///
/// `Storage` is a cheap handle: clones share the object.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.inner.engine {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Kv(_) => "kv",
        };
        f.debug_struct("Storage").field("backend", &backend).finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    state: Mutex<State>,
}

/// Where an object's data lives.
pub(crate) enum Engine {
    /// SQLite-backed: every API; `durable` follows the database's commit pipeline; `alarm`
    /// remembers the committed alarm.
    Sqlite { db: Database, kv: Kv, durable: Durable, alarm: AlarmCache },
    /// KV-backed (the legacy backend): the async KV API through the write-behind cache.
    Kv(Arc<KvEngine>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Engine::Sqlite { db, .. } = &self.engine {
            // Commit what is still open and make every commit durable before the storage is
            // gone (a group-committing database's sync threads may still be at it).
            if db.in_transaction() {
                let _ = db.commit();
            }
            if let Err(error) = db.sync() {
                tracing::error!(%error, "final sync of an object's commits failed");
            }
        }
        if let Engine::Kv(engine) = &self.engine {
            let aborted = self.state.lock().map(|s| s.broken.is_some()).unwrap_or(true);
            if !aborted {
                engine.flush_blocking();
            }
        }
    }
}

pub(crate) struct State {
    /// Explicit async transactions, outermost first.
    pub(crate) txns: Vec<Arc<TxnShared>>,
    /// Set by `abort`: every later call fails with this.
    broken: Option<Error>,
    /// The alarm whose handler is running (milliseconds), if one is.
    pub(crate) running_alarm: Option<i64>,
    /// The clock `set_alarm` reads "now" from.
    pub(crate) clock: Arc<dyn Clock>,
    /// Told the committed alarm whenever a commit changes it.
    listener: Option<AlarmListener>,
    /// The committed alarm the listener last heard of (`None`: not told yet).
    told: Option<Option<i64>>,
    /// The object's point-in-time recovery, when the host provides one.
    recovery: Option<Arc<dyn Recovery>>,
    /// `delete_all()` deletes the alarm too ([`Compatibility`]).
    pub(crate) delete_all_deletes_alarm: bool,
    /// `sync()` calls made during the running turn: each is handed the turn's durability
    /// once the turn ends and commits.
    turn_syncs: Vec<tokio::sync::oneshot::Sender<Op<()>>>,
    /// Commits made since the last end of turn that may still wait to be durable
    /// (SQLite-backed storage): the last one's sequence number, and whether any of them
    /// held a confirmed write.
    unsynced: Option<(u64, bool)>,
}

/// A callback told the object's committed alarm (milliseconds, or none) after every commit
/// that changes it, and after a `delete_all` that deletes it: the seam a namespace-wide
/// alarm index hangs on. It is never told an uncommitted alarm, nor the same alarm twice
/// in a row.
pub type AlarmListener = Arc<dyn Fn(Option<i64>) + Send + Sync>;

impl Default for State {
    fn default() -> State {
        State {
            txns: Vec::new(),
            broken: None,
            running_alarm: None,
            clock: Arc::new(SystemClock),
            listener: None,
            told: None,
            recovery: None,
            delete_all_deletes_alarm: Compatibility::default().delete_all_deletes_alarm,
            turn_syncs: Vec::new(),
            unsynced: None,
        }
    }
}

impl Storage {
    /// Opens (creating if needed) the SQLite-backed storage at `path`.
    ///
    /// With [`Durability::Group`](durable_sql::Durability::Group) in `options` (what a
    /// namespace uses), a commit writes the WAL without waiting for the disk and a shared
    /// pool of sync threads makes it durable, one fsync covering every commit made before it
    /// (of this object, while its next turns run; and of many objects at once, which the
    /// filesystem folds together); [`end_turn`](Storage::end_turn) then answers
    /// [`TurnEnd::Flushing`] until the turn's commit is durable, and the object runtime's
    /// output gate holds results until then.
    pub fn open(path: impl AsRef<std::path::Path>, options: Options) -> Result<Storage> {
        Ok(Storage::new(Database::open(path, options)?))
    }

    /// Opens private in-memory storage (tests, ephemeral objects).
    pub fn open_in_memory() -> Result<Storage> {
        Ok(Storage::new(Database::open_in_memory(Options::default())?))
    }

    /// Storage over an open database.
    pub fn new(db: Database) -> Storage {
        let kv = Kv::new(db.clone());
        Storage::with_kv(kv)
    }

    /// Storage over an open KV store (its database and limits). Results wait for commits
    /// to be durable as the database's commit pipeline reports them
    /// ([`Durability`](durable_sql::Durability)).
    pub fn with_kv(kv: Kv) -> Storage {
        let db = kv.database().clone();
        let durable = Durable::attach(&db);
        let alarm = AlarmCache::new(durable.resets());
        Storage::from_engine(Engine::Sqlite { db, kv, durable, alarm })
    }

    /// KV-backed storage (the legacy backend) over `backend`, through the runtime's
    /// write-behind cache: the async KV API, transactions and alarms; the SQL API, the sync
    /// KV API and `transaction_sync` answer with the runtime's errors.
    pub fn kv_backed(backend: Arc<dyn KvBackend>, options: CacheOptions) -> Storage {
        Storage::from_engine(Engine::Kv(Arc::new(KvEngine::new(backend, options))))
    }

    fn from_engine(engine: Engine) -> Storage {
        Storage { inner: Arc::new(Inner { engine, state: Mutex::new(State::default()) }) }
    }

    /// True for SQLite-backed storage.
    pub fn is_sqlite(&self) -> bool {
        matches!(self.inner.engine, Engine::Sqlite { .. })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.state().broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Where a KV or alarm call goes now (see [`Target`]), without checking the handle.
    fn route(&self) -> Target<'_> {
        match &self.inner.engine {
            Engine::Sqlite { db, kv, alarm, .. } => Target::Sqlite { db, kv, alarm },
            Engine::Kv(engine) => match Transaction::active_kv(self) {
                Some(txn) => Target::KvTransaction(txn),
                None => Target::Kv(engine),
            },
        }
    }

    /// Where a KV or alarm call goes, once the handle is known to be usable.
    fn target(&self) -> Result<Target<'_>> {
        self.check_usable()?;
        Ok(self.route())
    }

    /// Runs a call that returns an [`Op`] on its target (a refused handle answers at once).
    fn with_target<T>(&self, call: impl FnOnce(Target<'_>) -> Op<T>) -> Op<T> {
        match self.target() {
            Ok(target) => call(target),
            Err(e) => Op::ready(Err(e)),
        }
    }

    /// The SQL API (`ctx.storage.sql`); on KV-backed storage the runtime's "not available"
    /// error.
    pub fn sql(&self) -> Result<&Database> {
        match &self.inner.engine {
            Engine::Sqlite { db, .. } => Ok(db),
            Engine::Kv(_) => Err(Error::SqlNotAvailable),
        }
    }

    /// The synchronous KV API (`ctx.storage.kv`); on KV-backed storage the runtime's "only
    /// available for SQLite-backed Durable Objects" error.
    pub fn kv(&self) -> Result<&Kv> {
        match &self.inner.engine {
            Engine::Sqlite { kv, .. } => Ok(kv),
            Engine::Kv(_) => Err(Error::SyncKvNotAvailable),
        }
    }

    /// The database's size in bytes (`ctx.storage.sql.databaseSize`).
    pub fn database_size(&self) -> Result<u64> {
        Ok(self.sql()?.database_size()?)
    }

    /// The value of `key`, if present.
    pub fn get<T: DeserializeOwned + Send + 'static>(&self, key: &str) -> Op<Option<T>> {
        self.get_with(key, GetOptions::default())
    }

    /// [`get`](Storage::get) with options.
    pub fn get_with<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Op<Option<T>> {
        self.with_target(|t| t.get(key, options))
    }

    /// The present keys among `keys` with their values, sorted by key; duplicates collapse.
    pub fn get_multiple<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: &[&str],
    ) -> Op<Vec<(String, T)>> {
        self.get_multiple_with(keys, GetOptions::default())
    }

    /// [`get_multiple`](Storage::get_multiple) with options.
    pub fn get_multiple_with<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: &[&str],
        options: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        self.with_target(|t| t.get_multiple(keys, options))
    }

    /// Stores `value` under `key`. The write takes effect now; the returned [`Op`] only
    /// reports its outcome.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Op<()> {
        self.put_with(key, value, PutOptions::default())
    }

    /// [`put`](Storage::put) with options.
    pub fn put_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Op<()> {
        Op::ready(self.target().and_then(|t| t.put(key, value, options)))
    }

    /// Stores every pair atomically: all or none.
    pub fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Op<()> {
        self.put_multiple_with(entries, PutOptions::default())
    }

    /// [`put_multiple`](Storage::put_multiple) with options.
    pub fn put_multiple_with<T: Serialize>(
        &self,
        entries: &[(&str, T)],
        options: PutOptions,
    ) -> Op<()> {
        Op::ready(self.target().and_then(|t| t.put_multiple(entries, options)))
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Op<bool> {
        self.delete_with(key, PutOptions::default())
    }

    /// [`delete`](Storage::delete) with options.
    pub fn delete_with(&self, key: &str, options: PutOptions) -> Op<bool> {
        self.with_target(|t| t.delete(key, options))
    }

    /// Deletes every key of `keys`; the number that existed.
    pub fn delete_multiple(&self, keys: &[&str]) -> Op<usize> {
        self.delete_multiple_with(keys, PutOptions::default())
    }

    /// [`delete_multiple`](Storage::delete_multiple) with options.
    pub fn delete_multiple_with(&self, keys: &[&str], options: PutOptions) -> Op<usize> {
        self.with_target(|t| t.delete_multiple(keys, options))
    }

    /// The entries `options` selects, in the requested order.
    pub fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        options: &ListOptions,
    ) -> Op<Vec<(String, T)>> {
        self.list_with(options, GetOptions::default())
    }

    /// [`list`](Storage::list) with options.
    pub fn list_with<T: DeserializeOwned + Send + 'static>(
        &self,
        options: &ListOptions,
        get: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        self.with_target(|t| t.list(options, get))
    }

    /// Deletes everything: every key, every SQL table, the object's whole database. Writes
    /// not yet committed are discarded first. The alarm is deleted too unless the storage
    /// follows a compatibility date before 2026-02-24 ([`Compatibility`]), as in the runtime.
    /// Refused inside an async [`transaction`](Storage::transaction).
    pub fn delete_all(&self) -> Op<()> {
        if let Err(e) = self.check_usable() {
            return Op::ready(Err(e));
        }
        if !self.state().txns.is_empty() {
            return Op::ready(Err(Error::DeleteAllInTransaction));
        }
        match &self.inner.engine {
            Engine::Sqlite { db, kv, alarm, .. } => {
                let keep_alarm = !self.state().delete_all_deletes_alarm;
                let result = Self::delete_all_sqlite(db, kv, alarm, keep_alarm);
                // The wipe is durable already: a deleted alarm is news for the listener now
                // (a kept one is rewritten in a transaction, told when that commits).
                self.tell_alarm();
                Op::ready(result)
            }
            Engine::Kv(engine) => engine.delete_all(!self.state().delete_all_deletes_alarm),
        }
    }

    fn delete_all_sqlite(db: &Database, kv: &Kv, cache: &AlarmCache, keep: bool) -> Result<()> {
        // The alarm as this turn sees it (an uncommitted `set_alarm` included) survives, as
        // the runtime rewrites its cached alarm into the fresh database (unless
        // `delete_all_deletes_alarm`).
        let alarm = if keep { cache.read(db)? } else { None };
        db.rollback()?;
        kv.delete_all()?;
        if let Some(ns) = alarm {
            cache.write(db, Some(ns))?;
        }
        Ok(())
    }

    /// The alarm's time in milliseconds since the epoch, if one is set. While the alarm's
    /// handler runs it reads as none, unless the handler set a new one.
    pub fn get_alarm(&self) -> Op<Option<i64>> {
        self.get_alarm_with(GetOptions::default())
    }

    /// [`get_alarm`](Storage::get_alarm) with options.
    pub fn get_alarm_with(&self, _options: GetOptions) -> Op<Option<i64>> {
        if let Err(e) = self.check_usable() {
            return Op::ready(Err(e));
        }
        let running = self.state().running_alarm;
        map_op(self.stored_alarm_op(), move |stored| {
            Ok(match (stored, running) {
                (Some(t), Some(r)) if t == r => None,
                (stored, _) => stored,
            })
        })
    }

    fn stored_alarm_op(&self) -> Op<Option<i64>> {
        self.route().alarm()
    }

    /// Sets the alarm to `time` (`setAlarm()`): milliseconds since the epoch (an `i64`) or a
    /// [`SystemTime`](std::time::SystemTime) ([`AlarmTime`]); a past time means now.
    pub fn set_alarm(&self, time: impl Into<AlarmTime>) -> Op<()> {
        self.set_alarm_with(time, PutOptions::default())
    }

    /// [`set_alarm`](Storage::set_alarm) with options.
    pub fn set_alarm_with(&self, time: impl Into<AlarmTime>, options: PutOptions) -> Op<()> {
        Op::ready(self.set_alarm_now(time.into().as_millis(), options))
    }

    fn set_alarm_now(&self, time_ms: i64, options: PutOptions) -> Result<()> {
        self.check_usable()?;
        if time_ms <= 0 {
            return Err(Error::AlarmTimeNotPositive);
        }
        let now = self.state().clock.now_ms();
        self.route().set_alarm(Some(time_ms.max(now)), options)
    }

    /// Deletes the alarm.
    pub fn delete_alarm(&self) -> Op<()> {
        self.delete_alarm_with(PutOptions::default())
    }

    /// [`delete_alarm`](Storage::delete_alarm) with options.
    pub fn delete_alarm_with(&self, options: PutOptions) -> Op<()> {
        Op::ready(self.delete_alarm_now(options))
    }

    fn delete_alarm_now(&self, options: PutOptions) -> Result<()> {
        self.target()?.set_alarm(None, options)
    }

    /// Runs `f` inside a savepoint: `Ok` keeps its writes, `Err` rolls them back and is
    /// returned unchanged. Calls nest. The writes become durable with the turn's commit.
    pub fn transaction_sync<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        enum Either<E> {
            User(E),
            Sql(durable_sql::Error),
        }
        impl<E> From<durable_sql::Error> for Either<E> {
            fn from(e: durable_sql::Error) -> Self {
                Either::Sql(e)
            }
        }
        self.check_usable()?;
        let db = match &self.inner.engine {
            Engine::Sqlite { db, .. } => db,
            Engine::Kv(_) => return Err(E::from(Error::NotBackedBySql)),
        };
        db.transaction_sync(|| f().map_err(Either::User)).map_err(|e| match e {
            Either::User(e) => e,
            Either::Sql(e) => E::from(Error::Sql(e)),
        })
    }

    /// Runs the async closure `f` as one transaction, holding the input gate while it runs:
    /// the writes made before it in this turn are committed first; `Ok` commits the
    /// closure's writes; `Err` rolls them back and is returned; `txn.rollback()` discards
    /// them without an error. Calls nest (savepoints).
    pub async fn transaction<F, Fut, T, E>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(transaction::Transaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        transaction::run(self, f).await
    }

    /// Resolves once everything written before the call is durable.
    ///
    /// Under the object runtime `sync()` belongs to the turn, as in the runtime: it commits
    /// nothing by itself; awaiting it ends the turn, whose commit it then waits for (so an
    /// `abort()` later in the same turn still discards what was written before an
    /// un-awaited `sync()`). Without the runtime it is the explicit commit point: outside an
    /// explicit transaction it commits the open implicit transaction now.
    pub fn sync(&self) -> Op<()> {
        if let Err(e) = self.check_usable() {
            return Op::ready(Err(e));
        }
        if crate::turn::in_turn() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.state().turn_syncs.push(tx);
            return Op::io(async move {
                match rx.await {
                    Ok(durable) => durable.await,
                    // The object was reset before the turn ended.
                    Err(_) => Err(Error::NoLongerAccessible),
                }
            });
        }
        match &self.inner.engine {
            Engine::Sqlite { db, durable, .. } => {
                // The caller waits for the disk anyway: sync on this thread (one handoff to
                // the pool and back less), after a sync already running.
                if let Err(e) = self.commit_if_idle(true) {
                    return Op::ready(Err(e));
                }
                match db.sync() {
                    Ok(()) => {
                        self.state().unsynced = None;
                        // Under replication, also until the copy holds it.
                        durable.wait(db.commit_progress().committed)
                    }
                    Err(e) => Op::ready(Err(Error::WriteFailed(e.to_string()))),
                }
            }
            Engine::Kv(engine) => {
                let wrote = engine.busy();
                let op = engine.sync();
                if wrote {
                    self.tell_alarm();
                }
                op
            }
        }
    }

    /// Ends the turn: commits the implicit transaction if one is open (and no explicit
    /// transaction is running). The object runtime calls this after every turn; a program
    /// without the runtime calls it (or [`sync`](Storage::sync)) at its own commit points.
    ///
    /// A failed commit is returned; the transaction is rolled back.
    pub fn end_turn(&self) -> Result<TurnEnd> {
        let end = self.end_turn_commit();
        self.release_turn_syncs(&end);
        end
    }

    /// Hands the `sync()` calls of the turn that just ended what they wait for: everything
    /// committed so far becoming durable (or the commit's failure). Inside an explicit
    /// transaction that is what was committed before it (its own writes commit when it
    /// ends; waiting for them would wait for ever).
    fn release_turn_syncs(&self, end: &Result<TurnEnd>) {
        let waiters = std::mem::take(&mut self.state().turn_syncs);
        for waiter in waiters {
            let durable = match end {
                Err(e) => Op::ready(Err(e.clone())),
                Ok(_) => self.durable_so_far(),
            };
            let _ = waiter.send(durable);
        }
    }

    /// Resolves once every commit (or flush) made so far is durable.
    fn durable_so_far(&self) -> Op<()> {
        match &self.inner.engine {
            Engine::Sqlite { db, durable, .. } => durable.wait(db.commit_progress().committed),
            Engine::Kv(engine) => engine.sync(),
        }
    }

    fn end_turn_commit(&self) -> Result<TurnEnd> {
        // Inside an explicit transaction nothing commits; on SQLite, commits made before it
        // (the turn's earlier writes) may still wait for their sync, so it goes on.
        if !self.is_sqlite() && !self.state().txns.is_empty() {
            return Ok(TurnEnd::Durable);
        }
        match &self.inner.engine {
            Engine::Sqlite { durable, .. } => {
                self.commit_if_idle(false)?;
                let unsynced = self.state().unsynced.take();
                Ok(match unsynced {
                    Some((seq, confirmed)) => {
                        TurnEnd::Flushing { durable: durable.wait(seq), confirmed }
                    }
                    None => TurnEnd::Durable,
                })
            }
            Engine::Kv(engine) => {
                let wrote = engine.busy();
                let end = engine.end_turn()?;
                if wrote {
                    self.tell_alarm();
                }
                Ok(match end {
                    None => TurnEnd::Durable,
                    Some((durable, confirmed)) => TurnEnd::Flushing { durable, confirmed },
                })
            }
        }
    }

    /// Commits the implicit transaction unless an explicit transaction is running; fails
    /// after a critical error (SQLITE_FULL, IOERR, ...) rolled the turn back underneath: the
    /// output gate breaks and the object resets (spec 5.2).
    /// `sync_here`: make the commit durable on this thread (the caller waits for it anyway).
    fn commit_if_idle(&self, sync_here: bool) -> Result<()> {
        let Engine::Sqlite { db, .. } = &self.inner.engine else { return Ok(()) };
        if self.state().txns.is_empty() {
            self.commit_with(sync_here)?;
        }
        match db.broken() {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Commits the implicit transaction now (explicit transactions use it), remembering the
    /// commit until the turn ends and telling the alarm listener.
    pub(crate) fn commit_now(&self) -> std::result::Result<(), durable_sql::Error> {
        self.commit_with(false)
    }

    fn commit_with(&self, sync_here: bool) -> std::result::Result<(), durable_sql::Error> {
        let Engine::Sqlite { db, durable, .. } = &self.inner.engine else { return Ok(()) };
        let confirmed = db.write_confirmed();
        let committed = if sync_here { db.commit_and_sync() } else { db.commit() };
        if let Some(seq) = committed? {
            // Durable already (an fsync inside COMMIT, or a sync that was quick), and
            // replicated if the host asks for that: it covers every earlier commit too, and
            // the turn has nothing to wait for. Durable alone is not enough under
            // replication: the result would go out before any second copy held the commit.
            let pending = !durable.settled(seq);
            {
                let mut state = self.state();
                let earlier = state.unsynced.is_some_and(|(_, c)| c);
                state.unsynced = pending.then_some((seq, earlier || confirmed));
            }
            self.tell_alarm();
        }
        Ok(())
    }

    /// Tells the alarm listener the committed alarm if it changed since it was last told.
    ///
    /// On SQLite this runs after every commit, so it reads the alarm through the
    /// [`AlarmCache`]: no SQL unless the alarm was written (or the database reset) since the
    /// last look. While a transaction that wrote the alarm is open nothing is told; the
    /// commit that ends it tells.
    fn tell_alarm(&self) {
        let Some(listener) = self.state().listener.clone() else { return };
        let alarm = match &self.inner.engine {
            Engine::Sqlite { db, alarm, .. } => match alarm.committed(db) {
                Ok(Some(ns)) => ns.map(alarm::ns_to_ms),
                Ok(None) | Err(_) => return,
            },
            Engine::Kv(_) => match self.stored_alarm_op().now() {
                Ok(Ok(alarm)) => alarm,
                _ => return,
            },
        };
        let changed = {
            let mut state = self.state();
            let changed = state.told != Some(alarm);
            state.told = Some(alarm);
            changed
        };
        if changed {
            listener(alarm);
        }
    }

    /// Follows the runtime's behaviours of a compatibility date ([`Compatibility`]).
    pub fn set_compatibility(&self, compatibility: Compatibility) {
        self.state().delete_all_deletes_alarm = compatibility.delete_all_deletes_alarm;
    }

    /// Makes results wait, beyond the local fsync, until the host reports their commits
    /// replicated (`Replicated` durability: in the archive store, so they survive the loss
    /// of this machine); `None` goes back to local durability. A result whose commit the
    /// host reports failed ([`Replicated::failed`]) fails with
    /// [`Error::WriteFailed`] and the object resets. No effect on KV-backed storage.
    pub fn set_replication(&self, replication: Option<tokio::sync::watch::Receiver<Replicated>>) {
        if let Engine::Sqlite { durable, .. } = &self.inner.engine {
            durable.set_replica(replication);
        }
    }

    /// Installs the object's point-in-time recovery (`None` removes it): what the bookmark
    /// calls answer with. Without one they answer with the runtime's "does not implement
    /// point-in-time recovery" error, as KV-backed objects do.
    pub fn set_recovery(&self, recovery: Option<Arc<dyn Recovery>>) {
        self.state().recovery = recovery;
    }

    fn recovery(&self) -> Result<Arc<dyn Recovery>> {
        self.check_usable()?;
        match (&self.inner.engine, self.state().recovery.clone()) {
            (Engine::Sqlite { .. }, Some(recovery)) => Ok(recovery),
            _ => Err(Error::PitrNotAvailable),
        }
    }

    /// A commit that failed inside a turn of the object runtime resets the object, wherever
    /// the commit ran (the end of the turn, `transaction()`, a bookmark call): the event
    /// fails with `error`, the code after the call never runs (this never resolves), and
    /// the next event runs on a fresh instance. Without the runtime it is `error`.
    pub(crate) async fn commit_failed(&self, error: Error) -> Error {
        if crate::turn::request_reset(error.clone()) {
            return crate::runtime::reset_pending().await;
        }
        error
    }

    /// Commits the turn's writes before a critical section (`block_concurrency_while`), as
    /// the runtime does; the KV-backed engine hands them to a flush. A failed commit resets
    /// the object.
    pub(crate) fn commit_before_critical_section(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Sqlite { .. } => {
                if let Err(e) = self.commit_if_idle(false) {
                    crate::turn::request_reset(e.clone());
                    return Err(e);
                }
                Ok(())
            }
            // The KV-backed engine sends them to the backend now.
            Engine::Kv(engine) => {
                if self.state().txns.is_empty() {
                    drop(engine.flush_now());
                }
                Ok(())
            }
        }
    }

    /// Commits what was written before the call and makes it durable now, on this thread: a
    /// bookmark names durable history. `Err(None)`: the commit failed inside a turn and the
    /// object is being reset (the call must never resolve).
    fn commit_durably(&self) -> std::result::Result<(), Option<Error>> {
        if let Err(e) = self.commit_if_idle(true) {
            return Err(if crate::turn::request_reset(e.clone()) { None } else { Some(e) });
        }
        match self.sql().map_err(Some)?.sync() {
            Ok(()) => {
                // Durable locally now; under replication the turn's results still wait for
                // the copy (the bookmark itself needs only the local history), and they wait
                // as for a confirmed write even if every write before was unconfirmed: the
                // bookmark names that state.
                let Engine::Sqlite { durable, .. } = &self.inner.engine else { return Ok(()) };
                let mut state = self.state();
                state.unsynced = match state.unsynced {
                    Some((seq, _)) if !durable.settled(seq) => Some((seq, true)),
                    _ => None,
                };
                Ok(())
            }
            Err(e) => Err(Some(Error::WriteFailed(e.to_string()))),
        }
    }

    /// A bookmark call: commits durably first, then asks the recovery provider.
    fn with_durable_history<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Recovery) -> Result<T>,
    ) -> Op<T> {
        let recovery = match self.recovery() {
            Ok(r) => r,
            Err(e) => return Op::ready(Err(e)),
        };
        match self.commit_durably() {
            Ok(()) => Op::ready(f(&*recovery)),
            Err(Some(e)) => Op::ready(Err(e)),
            Err(None) => Op::io(crate::runtime::reset_pending()),
        }
    }

    /// A bookmark naming the object's current state (`getCurrentBookmark()`): what was
    /// written before the call is committed first.
    pub fn current_bookmark(&self) -> Op<String> {
        self.with_durable_history(|r| r.current_bookmark())
    }

    /// The bookmark of the latest commit at or before `time_ms` (milliseconds since the
    /// epoch, within the last 30 days): `getBookmarkForTime()`.
    pub fn bookmark_for_time(&self, time_ms: i64) -> Op<String> {
        match self.recovery() {
            Ok(r) => r.bookmark_for_time(time_ms),
            Err(e) => Op::ready(Err(e)),
        }
    }

    /// Records durably that the object's next session starts at `bookmark`, and returns the
    /// bookmark that undoes the restore (`onNextSessionRestoreBookmark()`). What was written
    /// before the call is committed first. The restore happens when the object next opens:
    /// after `ctx.abort()`, or once it is closed.
    pub fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Op<String> {
        self.with_durable_history(|r| r.on_next_session_restore_bookmark(bookmark))
    }

    /// Installs `listener`, told the committed alarm now (or, while a transaction that wrote
    /// the alarm is open, when it commits) and after every change of it ([`AlarmListener`]);
    /// a namespace keeps its index of due alarms with it.
    pub fn set_alarm_listener(&self, listener: Option<AlarmListener>) {
        {
            let mut state = self.state();
            state.listener = listener;
            state.told = None;
        }
        self.tell_alarm();
    }

    /// Resets the object as `ctx.abort()` does: writes not yet committed are discarded and
    /// every later call on this handle fails with "Durable Object storage is no longer
    /// accessible.". Open the object again to go on.
    pub fn abort(&self) {
        match &self.inner.engine {
            Engine::Sqlite { db, .. } => {
                let _ = db.rollback();
            }
            Engine::Kv(engine) => engine.reset(),
        }
        let mut state = self.state();
        state.txns.clear();
        state.broken = Some(Error::NoLongerAccessible);
    }

    /// True once [`abort`](Storage::abort) was called on this handle.
    pub fn is_aborted(&self) -> bool {
        self.state().broken.is_some()
    }

    /// Uses `clock` for "now" (a past alarm time is clamped to it).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.state().clock = clock;
    }

    /// The clock this storage reads "now" from.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.state().clock.clone()
    }

    /// Marks the alarm at `time_ms` as running (its handler started), or none.
    pub(crate) fn set_running_alarm(&self, time_ms: Option<i64>) {
        self.state().running_alarm = time_ms;
    }

    /// The stored alarm, in milliseconds, ignoring the running handler (`None` also when
    /// reading it would need I/O).
    pub(crate) fn stored_alarm(&self) -> Result<Option<i64>> {
        match self.stored_alarm_op().now() {
            Ok(result) => result,
            Err(_) => Ok(None),
        }
    }
}
