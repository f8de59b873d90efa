//! kill -9: every batch whose result was released survives, and no batch is partly present.
//!
//! The test runs its own binary again as a child (`crash_child`), which writes batches, one
//! turn each, and prints the number of each batch whose result it got back. The parent kills
//! it with SIGKILL mid-stream, reopens the object and checks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use durable_kv::ListOptions;

use crate::support::Dir;

const CHILD_DIR: &str = "DURABLE_TXN_CRASH_CHILD_DIR";
const KEYS_PER_BATCH: usize = 25;

#[test]
#[allow(clippy::print_stdout)] // the child reports to its parent on stdout
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let path = std::path::PathBuf::from(dir).join("object.sqlite");
        let object = durable_txn::Object::spawn(
            move || durable_txn::Storage::open(&path, Default::default()),
            |_| crate::support::Plain,
        );
        for batch in 0u64.. {
            object
                .call(move |ctx| async move {
                    for i in 0..KEYS_PER_BATCH {
                        ctx.storage().put(&format!("b{batch:06}:{i:02}"), &batch);
                    }
                })
                .await
                .unwrap();
            println!("released {batch}");
        }
    });
}

#[test]
fn kill_9_loses_no_released_batch_and_tears_none() {
    let dir = Dir::new();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash::crash_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut released = Vec::new();
    while released.len() < 200 {
        let line = lines.next().expect("child output").unwrap();
        if let Some(n) = line.strip_prefix("released ") {
            released.push(n.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let storage = dir.open();
    let all: Vec<(String, u64)> =
        storage.list(&ListOptions::default()).now().ok().unwrap().unwrap();
    let mut per_batch = std::collections::BTreeMap::<u64, usize>::new();
    for (key, batch) in &all {
        assert!(key.starts_with(&format!("b{batch:06}:")), "{key} holds {batch}");
        *per_batch.entry(*batch).or_default() += 1;
    }
    for (batch, n) in &per_batch {
        assert_eq!(*n, KEYS_PER_BATCH, "batch {batch} is torn");
    }
    for batch in &released {
        assert!(per_batch.contains_key(batch), "released batch {batch} was lost");
    }
}
