//! Nodes sharing one in-memory archive store on a manual clock, each with a data folder of
//! its own: what the lease and shared-log tests build on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use durable_pitr::object_store::memory::InMemory;
use durable_pitr::object_store::path::Path as StorePath;
use durable_pitr::object_store::{ObjectStore, ObjectStoreExt};
use durable_pitr::{ArchiveConfig, Archiver, Node};
use durable_sql::testing::ManualClock;
use durable_sql::{Database, Options};
use futures_util::TryStreamExt;

use super::support::T0;

/// The nodes' lease duration.
pub const LEASE: Duration = Duration::from_secs(10);

/// One archive store, one clock, one folder holding every node's data folder.
pub struct Cluster {
    pub store: Arc<dyn ObjectStore>,
    pub clock: ManualClock,
    pub dir: tempfile::TempDir,
    segment_max_age: Option<Duration>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::on(Arc::new(InMemory::new()))
    }

    /// A cluster sharing `store`.
    pub fn on(store: Arc<dyn ObjectStore>) -> Cluster {
        Cluster {
            store,
            clock: ManualClock::new(T0),
            dir: tempfile::tempdir().unwrap(),
            segment_max_age: None,
        }
    }

    /// Open segments stay open across the lease expiries a test waits out.
    pub fn with_long_segments(mut self) -> Cluster {
        self.segment_max_age = Some(Duration::from_secs(3_600));
        self
    }

    /// A node `id` (a new instance each call) advertising `{id}.local:80`, heartbeating once.
    pub async fn node(&self, id: &str) -> Arc<Node> {
        let node = Node::new(self.store.clone(), "ns", id, Some(format!("{id}.local:80")), LEASE)
            .unwrap()
            .with_clock(Arc::new(self.clock.clone()));
        node.heartbeat().await.unwrap();
        Arc::new(node)
    }

    /// The archive configuration of `object` on `node`.
    pub fn config(&self, node: &Arc<Node>, object: &str) -> ArchiveConfig {
        let mut config = ArchiveConfig::new(self.store.clone(), format!("ns/{object}.sqlite"))
            .with_clock(Arc::new(self.clock.clone()))
            .with_node(node.clone());
        if let Some(age) = self.segment_max_age {
            config.segment_max_age = age;
        }
        config
    }

    /// The file of `object` in data folder `folder` (created).
    pub fn path(&self, folder: &str, object: &str) -> PathBuf {
        let dir = self.dir.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{object}.sqlite"))
    }

    /// Opens `object` on `node` in data folder `folder`.
    pub async fn try_open(
        &self,
        node: &Arc<Node>,
        folder: &str,
        object: &str,
    ) -> durable_pitr::Result<(Database, Archiver)> {
        let path = self.path(folder, object);
        Archiver::open(path, Options::default(), self.config(node, object)).await
    }

    /// Opens `object` on `node` in data folder `folder`, which must succeed.
    pub async fn open(&self, node: &Arc<Node>, folder: &str, object: &str) -> (Database, Archiver) {
        self.try_open(node, folder, object).await.unwrap()
    }

    /// The keys under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = StorePath::from(prefix);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut out: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        out.sort();
        out
    }

    /// The batches of `node`'s shared log (not the fences takers wrote into it).
    pub async fn batches(&self, node: &Node) -> Vec<String> {
        self.slots(node, b"DSLOG").await
    }

    /// The batches of `node`'s shared log once `settled` holds of them, or as they are
    /// after 5 s: the log deletes covered batches a little later, several at once.
    pub async fn batches_once(
        &self,
        node: &Node,
        settled: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let batches = self.batches(node).await;
            if settled(&batches) || std::time::Instant::now() >= deadline {
                return batches;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The fences takers wrote into `node`'s shared log.
    pub async fn fences(&self, node: &Node) -> Vec<String> {
        self.slots(node, b"DSFENCE").await
    }

    /// The slots of `node`'s shared log whose content starts with `magic`.
    async fn slots(&self, node: &Node, magic: &[u8]) -> Vec<String> {
        let dir = format!("ns/_log/{}/{}", node.id(), node.instance());
        let mut out = Vec::new();
        for key in self.keys(&dir).await {
            let bytes = self.store.get(&StorePath::from(key.as_str())).await.unwrap().bytes();
            if bytes.await.unwrap().starts_with(magic) {
                out.push(key);
            }
        }
        out
    }

    /// Kills a node's objects: no upload, no release.
    pub fn kill(&self, objects: Vec<(Database, Archiver)>) {
        drop(objects);
    }
}

/// Adds a row to table `t` (created on first use), committed and synced.
pub fn write(db: &Database, text: &str) {
    db.exec("CREATE TABLE IF NOT EXISTS t(x TEXT)", &[]).unwrap();
    db.exec("INSERT INTO t VALUES (?)", &[text.into()]).unwrap();
    db.commit().unwrap();
    db.sync().unwrap();
}

/// The rows of table `t`, in order.
pub fn rows(db: &Database) -> Vec<String> {
    let mut cursor = db.exec("SELECT x FROM t ORDER BY rowid", &[]).unwrap();
    let rows = cursor.to_raw_array().unwrap();
    rows.into_iter()
        .map(|r| match &r[0] {
            durable_sql::SqlValue::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The rows of table `t` in a database image, written to `at` to be read.
pub fn rows_of_image(image: &[u8], at: &Path) -> Vec<String> {
    std::fs::write(at, image).unwrap();
    let db = Database::open(at, Options::default()).unwrap();
    rows(&db)
}
