//! The backend choice per namespace: SQLite-backed (every API) and KV-backed (async KV only,
//! the rest answers with the runtime's "not available" errors).

use durable_storage::{Backend, NamespaceOptions, txn};

use crate::support::{Dir, T0, fast, now, rt};

fn kv_options() -> NamespaceOptions {
    NamespaceOptions::new().backend(Backend::Kv)
}

#[test]
fn a_sqlite_namespace_serves_sql_sync_kv_and_async_kv_in_one_transaction() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let s = ns.storage("room").unwrap();
    assert!(s.is_sqlite());
    s.sql().unwrap().exec("CREATE TABLE t (x)", &[]).unwrap();
    s.kv().unwrap().put("sync", &1_i64).unwrap();
    s.put("async", &2_i64);
    s.abort(); // nothing was committed: all three go
    drop(s);
    let s = ns.storage("room").unwrap();
    assert!(s.sql().unwrap().exec("SELECT * FROM t", &[]).is_err());
    assert_eq!(s.kv().unwrap().get::<i64>("sync").unwrap(), None);
    assert_eq!(now(s.get::<i64>("async")), None);
    assert!(s.database_size().unwrap() > 0);
}

#[test]
fn a_kv_namespace_serves_the_async_kv_api_and_keeps_it_across_reopens() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(kv_options());
        let s = ns.storage("room").unwrap();
        assert!(!s.is_sqlite());
        s.put("a", &1_i64);
        s.put_multiple(&[("b", 2_i64), ("c", 3_i64)]);
        assert_eq!(s.get::<i64>("a").await.unwrap(), Some(1));
        s.sync().await.unwrap();
        drop(s);
        assert!(ns.open_names().is_empty());
        let s = ns.storage("room").unwrap();
        let all: Vec<(String, i64)> = s.list(&Default::default()).await.unwrap();
        assert_eq!(all, [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        assert_eq!(ns.names().unwrap(), ["room"]);
        assert!(ns.path_of("room").exists());
    });
}

#[test]
fn a_kv_namespace_answers_sql_sync_kv_and_transaction_sync_with_the_runtime_errors() {
    let dir = Dir::new();
    let ns = dir.open(kv_options());
    let s = ns.storage("room").unwrap();
    let sql = s.sql().unwrap_err();
    assert_eq!(sql, txn::Error::SqlNotAvailable);
    assert!(sql.to_string().starts_with(
        "This Durable Object is not backed by SQLite storage, so the SQL API is not available."
    ));
    let kv = s.kv().unwrap_err();
    assert_eq!(kv, txn::Error::SyncKvNotAvailable);
    assert!(kv.to_string().starts_with("The storage.kv (synchronous KV) API is only available"));
    let ts = s.transaction_sync(|| Ok::<(), txn::Error>(())).unwrap_err();
    assert_eq!(ts.to_string(), "Durable Object is not backed by SQL.");
}

#[test]
fn the_kv_backend_enforces_the_legacy_limits() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(kv_options());
        let s = ns.storage("room").unwrap();
        let key = "k".repeat(2049);
        let err = s.put(&key, &1_i64).await.unwrap_err();
        assert!(err.to_string().contains("2048"), "{err}");
        let keys: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(s.get_multiple::<i64>(&keys).await.is_err());
    });
}

#[test]
fn a_kv_namespace_indexes_alarms_committed_by_its_objects() {
    struct Plain;
    impl durable_storage::Actor for Plain {}
    let dir = Dir::new();
    let clock = durable_storage::ManualClock::new(T0);
    rt().block_on(async {
        let ns = dir.open(fast(&clock).backend(Backend::Kv));
        let object = ns.object("room", |_| Plain).unwrap();
        object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + 10).await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ns.indexed_alarm("room").unwrap(), Some(T0 + 10));
    });
}
