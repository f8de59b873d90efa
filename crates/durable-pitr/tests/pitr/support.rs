//! Shared helpers: an object in a temporary folder with a fake clock, the oracle image of a
//! database (SQLite's own `serialize` through a second, read-only connection), and a seeded
//! random workload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use durable_pitr::object_store::ObjectStore;
use durable_pitr::object_store::memory::InMemory;
use durable_pitr::{ArchiveConfig, Archiver};
use durable_sql::rusqlite::{Connection, OpenFlags};
use durable_sql::testing::ManualClock;
use durable_sql::{Database, Options, SqlValue};

/// 2023-11-14, a fixed start for fake clocks.
pub const T0: i64 = 1_700_000_000_000;
pub const DAY: i64 = 86_400_000;

/// One object: its folder, clock and archive.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub clock: ManualClock,
    pub store: Arc<dyn ObjectStore>,
}

impl Env {
    pub fn new() -> Env {
        Env::with_store(Arc::new(InMemory::new()))
    }

    pub fn with_store(store: Arc<dyn ObjectStore>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object.sqlite");
        Env { dir, path, clock: ManualClock::new(T0), store }
    }

    pub fn config(&self) -> ArchiveConfig {
        let mut c = ArchiveConfig::new(self.store.clone(), "objects/one")
            .with_clock(Arc::new(self.clock.clone()));
        c.segment_max_bytes = 48 * 1024;
        c.checkpoint_frames = 40;
        c
    }

    pub fn clock_now(&self) -> i64 {
        durable_pitr::Clock::now_ms(&self.clock)
    }

    pub async fn open(&self) -> (Database, Archiver) {
        match Archiver::open(&self.path, Options::default(), self.config()).await {
            Ok(x) => x,
            Err(e) => {
                for entry in walk(self.dir.path()) {
                    let bytes = std::fs::read(&entry).unwrap_or_default();
                    eprintln!(
                        "{} {} {:?}",
                        entry.display(),
                        bytes.len(),
                        &bytes[..bytes.len().min(12)]
                    );
                }
                {
                    use durable_pitr::object_store::ObjectStoreExt;
                    use futures_util::TryStreamExt;
                    let list: Vec<_> = self.store.list(None).try_collect().await.unwrap();
                    for m in list {
                        let b = self.store.get(&m.location).await.unwrap().bytes().await.unwrap();
                        eprintln!("store {} {} {:?}", m.location, m.size, &b[..b.len().min(10)]);
                    }
                }
                panic!("{e:?}")
            }
        }
    }

    pub async fn open_with(
        &self,
        config: ArchiveConfig,
    ) -> durable_pitr::Result<(Database, Archiver)> {
        Archiver::open(&self.path, Options::default(), config).await
    }
}

/// The database's logical image as SQLite itself sees it (the test oracle).
pub fn image(path: &Path) -> Vec<u8> {
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let data = conn.serialize("main").unwrap();
    data.to_vec()
}

/// The bytes of the database file (after a restore nothing is in the WAL).
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A small deterministic random generator (xorshift*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One random step of a workload; ends with a commit or a rollback (or a reset).
pub fn step(db: &Database, rng: &mut Rng) {
    let _ = db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)", &[]);
    let _ = db.exec("CREATE INDEX IF NOT EXISTS t_k ON t(k)", &[]);
    match rng.below(20) {
        0..=8 => {
            for _ in 0..=rng.below(4) {
                let size = [10, 300, 1200, 6000][rng.below(4) as usize];
                let blob: Vec<u8> = (0..size).map(|i| (i as u64 ^ rng.next()) as u8).collect();
                let key = format!("k{}", rng.below(500));
                db.exec(
                    "INSERT INTO t(k, v) VALUES (?, ?)",
                    &[SqlValue::from(key), SqlValue::Blob(blob)],
                )
                .unwrap();
            }
        }
        9..=11 => {
            let lo = rng.below(400) as i64;
            db.exec("DELETE FROM t WHERE id BETWEEN ? AND ?", &[lo.into(), (lo + 30).into()])
                .unwrap();
        }
        12..=13 => {
            db.exec(
                "UPDATE t SET v = zeroblob(?) WHERE id % 7 = ?",
                &[(rng.below(2000) as i64).into(), (rng.below(7) as i64).into()],
            )
            .unwrap();
        }
        14 => {
            // A savepoint that fails and rolls back; the rest commits.
            let _ = db.transaction_sync(|| {
                db.exec("INSERT INTO t(k, v) VALUES ('sp', randomblob(5000))", &[])?;
                Err::<(), _>(durable_sql::Error::Canceled)
            });
            db.exec("INSERT INTO t(k) VALUES ('after-sp')", &[]).unwrap();
        }
        15 => {
            db.exec("CREATE TABLE IF NOT EXISTS other(x)", &[]).unwrap();
            db.exec("INSERT INTO other SELECT randomblob(700) FROM t LIMIT 40", &[]).unwrap();
        }
        16 => {
            let _ = db.exec("DROP TABLE IF EXISTS other", &[]);
        }
        17 => {
            // Written, then rolled back: never a position.
            db.exec("INSERT INTO t(k, v) VALUES ('rolled', randomblob(20000))", &[]).unwrap();
            db.rollback().unwrap();
            return;
        }
        18 => {
            // A RETURNING cursor dropped before its end.
            let mut c = db
                .exec("INSERT INTO t(k) VALUES ('r1'), ('r2'), ('r3') RETURNING id", &[])
                .unwrap();
            let _ = c.next();
            drop(c);
        }
        _ => {
            if rng.below(8) == 0 {
                db.reset().unwrap();
                return;
            }
            db.exec("DELETE FROM t WHERE id % 3 = 0", &[]).unwrap();
        }
    }
    db.commit().unwrap();
}

/// Copies the files of folder `from` into `to` (created), not recursing: a folder as a power
/// loss would leave it, when `from` was saved at the last sync.
pub fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() { out.extend(walk(&e.path())) } else { out.push(e.path()) }
    }
    out
}
