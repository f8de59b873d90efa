//! `durable tour`: every call of the storage API, run on one object of the data directory,
//! each step printed with its Rust form and its result.

use durable_storage::txn::Error as TxnError;
use durable_storage::{
    Actor, GetOptions, ListOptions, Namespace, PutOptions, Row, SqlValue, Storage, StorageHandle,
    Value, params,
};
use serde_json::json;

use crate::Env;
use crate::error::{Error, Result};
use crate::out::Out;
use crate::values::{sql_to_json, value_to_json};

/// Numbers and prints the steps.
struct Steps<'a> {
    out: &'a mut Out,
    n: usize,
    section: &'static str,
}

impl Steps<'_> {
    fn section(&mut self, title: &'static str) -> Result<()> {
        self.section = title;
        if self.out.json {
            return Ok(());
        }
        self.out.line("")?;
        self.out.line(format!("== {title}"))
    }

    /// Prints one step: what it does, its Rust form and what it returned.
    fn step(&mut self, what: &str, rust: &str, result: impl std::fmt::Display) -> Result<()> {
        self.n += 1;
        let result = result.to_string();
        if self.out.json {
            return self.out.json(&json!({
                "step": self.n,
                "section": self.section,
                "what": what,
                "rust": rust,
                "result": result,
            }));
        }
        self.out.line(format!("{:2}. {what}", self.n))?;
        for line in rust.lines() {
            self.out.line(format!("      {line}"))?;
        }
        self.out.line(format!("      -> {result}"))
    }
}

fn rows_json(rows: &[durable_storage::Row]) -> String {
    let docs: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let map: serde_json::Map<String, serde_json::Value> =
                row.entries().into_iter().map(|(k, v)| (k.to_owned(), sql_to_json(v))).collect();
            serde_json::Value::Object(map)
        })
        .collect();
    serde_json::Value::Array(docs).to_string()
}

fn entries_json(entries: &[(String, Value)]) -> String {
    let docs: Vec<String> =
        entries.iter().map(|(k, v)| format!("{k:?}: {}", value_to_json(v))).collect();
    format!("{{{}}}", docs.join(", "))
}

/// The actor of the object-runtime step: its code lives in the closures given to `call`.
struct Visits;
impl Actor for Visits {}

fn sql_api(s: &mut Steps<'_>, storage: &Storage) -> Result<()> {
    s.section("SQL API (ctx.storage.sql)")?;
    let sql = storage.sql()?;
    let c = sql.exec(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT)",
        &[],
    )?;
    s.step(
        "create a table",
        "storage.sql()?.exec(\"CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         status TEXT)\", &[])?",
        format!("rows written: {}", c.rows_written()),
    )?;
    let c = sql.exec(
        "INSERT INTO users (name, status) VALUES (?, ?), (?, ?), (?, ?)",
        &params!["Ada", "active", "Grace", "active", "Linus", "away"],
    )?;
    s.step(
        "insert with bound parameters",
        "sql.exec(\"INSERT INTO users (name, status) VALUES (?, ?), (?, ?), (?, ?)\",\n    \
         &params![\"Ada\", \"active\", \"Grace\", \"active\", \"Linus\", \"away\"])?",
        format!("rows written: {}", c.rows_written()),
    )?;
    let rows =
        sql.exec("SELECT * FROM users WHERE status = ?", &params!["active"])?.to_array::<Row>()?;
    s.step(
        "every row: cursor.toArray()",
        "sql.exec(\"SELECT * FROM users WHERE status = ?\", &params![\"active\"])?.to_array::<Row>()?",
        rows_json(&rows),
    )?;
    let name: String = sql.exec("SELECT name FROM users WHERE id = ?", &params![1])?.one()?;
    s.step(
        "exactly one row: cursor.one()",
        "let name: String = sql.exec(\"SELECT name FROM users WHERE id = ?\", &params![1])?.one()?;",
        format!("{name:?}"),
    )?;
    let one_err = sql.exec("SELECT * FROM users", &[])?.one::<Row>().map(|_| ()).unwrap_err();
    s.step(
        "one() on three rows is an error (the runtime's message)",
        "sql.exec(\"SELECT * FROM users\", &[])?.one::<Row>()",
        format!("Err({one_err})"),
    )?;
    let mut cursor = sql.exec("SELECT id, name FROM users ORDER BY id", &[])?;
    let raw: Vec<Vec<SqlValue>> = cursor.raw().collect::<Result<_, _>>()?;
    let raw: Vec<serde_json::Value> =
        raw.iter().map(|r| r.iter().map(sql_to_json).collect()).collect();
    s.step(
        "raw values without column names: cursor.raw()",
        "sql.exec(\"SELECT id, name FROM users ORDER BY id\", &[])?.raw().collect::<Result<Vec<_>, _>>()?",
        serde_json::Value::Array(raw),
    )?;
    let mut names = Vec::new();
    for row in sql.exec("SELECT name FROM users ORDER BY name DESC", &[])? {
        names.push(row?.get::<String>("name")?);
    }
    s.step(
        "iterate: for (const row of cursor)",
        "for row in sql.exec(\"SELECT name FROM users ORDER BY name DESC\", &[])? {\n    \
         names.push(row?.get::<String>(\"name\")?);\n}",
        format!("{names:?}"),
    )?;
    let mut c = sql
        .exec("UPDATE users SET status = 'away' WHERE name = ? RETURNING id", &params!["Grace"])?;
    let returned = c.to_array::<Row>()?;
    s.step(
        "cursor properties: columnNames, rowsRead, rowsWritten",
        "let mut c = sql.exec(\"UPDATE users SET status = 'away' WHERE name = ? RETURNING id\", \
         &params![\"Grace\"])?;\nc.to_array::<Row>()?; (c.column_names(), c.rows_read(), c.rows_written())",
        format!(
            "{:?}, rows read {}, rows written {} ({} row returned)",
            c.column_names(),
            c.rows_read(),
            c.rows_written(),
            returned.len()
        ),
    )?;
    s.step("database size: sql.databaseSize", "storage.database_size()?", {
        let size = storage.database_size()?;
        format!("{size} bytes ({})", indicatif::HumanBytes(size))
    })?;
    let refused = sql.exec("ATTACH DATABASE 'other.db' AS other", &[]).map(|_| ()).unwrap_err();
    s.step(
        "the authorizer: user SQL stays inside its object",
        "sql.exec(\"ATTACH DATABASE 'other.db' AS other\", &[])",
        format!("Err({refused})"),
    )?;
    Ok(())
}

fn transaction_sync(s: &mut Steps<'_>, storage: &Storage) -> Result<()> {
    s.section("transactionSync")?;
    let sql = storage.sql()?;
    sql.exec(
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER CHECK (balance >= 0))",
        &[],
    )?;
    sql.exec("INSERT INTO accounts VALUES ('alice', 100), ('bob', 0)", &[])?;
    let transfer = |amount: i64| {
        storage.transaction_sync(|| {
            sql.exec(
                "UPDATE accounts SET balance = balance + ? WHERE id = 'bob'",
                &params![amount],
            )?;
            sql.exec(
                "UPDATE accounts SET balance = balance - ? WHERE id = 'alice'",
                &params![amount],
            )?;
            Ok::<(), TxnError>(())
        })
    };
    let balances = || -> Result<String> {
        Ok(rows_json(&sql.exec("SELECT * FROM accounts ORDER BY id", &[])?.to_array::<Row>()?))
    };
    transfer(30)?;
    s.step(
        "a transfer of 30 inside transaction_sync: both updates or neither",
        "storage.transaction_sync(|| {\n    sql.exec(\"UPDATE accounts SET balance = balance + ? \
         WHERE id = 'bob'\", &params![amount])?;\n    sql.exec(\"UPDATE accounts SET balance = \
         balance - ? WHERE id = 'alice'\", &params![amount])?;\n    Ok::<(), Error>(())\n})?",
        balances()?,
    )?;
    let failed = transfer(500).unwrap_err();
    s.step(
        "a transfer of 500 fails the CHECK: the closure's error rolls back bob's credit too",
        "storage.transaction_sync(|| { ... })  // amount = 500",
        format!("Err({failed}); balances {}", balances()?),
    )?;
    Ok(())
}

fn sync_kv(s: &mut Steps<'_>, storage: &Storage) -> Result<()> {
    s.section("Synchronous KV API (ctx.storage.kv)")?;
    let kv = storage.kv()?;
    let data = Value::Object(vec![("data".into(), "value".into())]);
    kv.put("key", &data)?;
    s.step(
        "put",
        "storage.kv()?.put(\"key\", &Value::Object(vec![(\"data\".into(), \"value\".into())]))?",
        "Ok(())",
    )?;
    let got: Option<Value> = kv.get("key")?;
    s.step(
        "get",
        "let value: Option<Value> = kv.get(\"key\")?;",
        got.as_ref().map_or("None (undefined)".into(), |v| value_to_json(v).to_string()),
    )?;
    s.step("delete returns whether the key existed", "kv.delete(\"key\")?", kv.delete("key")?)?;
    let missing: Option<Value> = kv.get("key")?;
    s.step("get of a missing key", "kv.get::<Value>(\"key\")?", format!("{missing:?}"))?;
    for (k, v) in [("member:ada", "Ada"), ("member:grace", "Grace"), ("team:core", "core")] {
        kv.put(k, &Value::from(v))?;
    }
    let mut listed = Vec::new();
    for entry in kv.list_iter::<Value>(&ListOptions::new().prefix("member:"))? {
        listed.push(entry?);
    }
    s.step(
        "list with a prefix (a lazy iterator)",
        "for entry in kv.list_iter::<Value>(&ListOptions::new().prefix(\"member:\"))? { ... }",
        entries_json(&listed),
    )?;
    Ok(())
}

fn async_kv(s: &mut Steps<'_>, storage: &Storage) -> Result<()> {
    s.section("Async KV API (ctx.storage.get/put/delete/list)")?;
    storage.put("counter", &Value::Integer(1)).wait()?;
    s.step(
        "put (an Op: a future, or .wait() without an executor)",
        "storage.put(\"counter\", &Value::Integer(1)).await?",
        "Ok(())",
    )?;
    let v: Option<Value> = storage.get("counter").wait()?;
    s.step(
        "get",
        "storage.get::<Value>(\"counter\").await?",
        v.as_ref().map_or("None".into(), |v| value_to_json(v).to_string()),
    )?;
    let entries = [("key1", Value::from(1)), ("key2", Value::from(2)), ("key3", Value::from(3))]
        .map(|(k, v)| (k, v));
    storage.put_multiple(&entries).wait()?;
    s.step(
        "put of several keys (up to 128)",
        "storage.put_multiple(&[(\"key1\", 1), (\"key2\", 2), (\"key3\", 3)]).await?",
        "Ok(())",
    )?;
    let got: Vec<(String, Value)> = storage.get_multiple(&["key1", "key3", "nope"]).wait()?;
    s.step(
        "get of several keys: the present ones",
        "storage.get_multiple::<Value>(&[\"key1\", \"key3\", \"nope\"]).await?",
        entries_json(&got),
    )?;
    s.step("delete", "storage.delete(\"counter\").await?", storage.delete("counter").wait()?)?;
    s.step(
        "delete of several keys: how many existed",
        "storage.delete_multiple(&[\"key1\", \"key2\", \"nope\"]).await?",
        storage.delete_multiple(&["key1", "key2", "nope"]).wait()?,
    )?;
    for i in 100..=205 {
        storage.put(&format!("user:{i}"), &Value::from(i64::from(i))).wait()?;
    }
    let options =
        ListOptions::new().prefix("user:").start("user:100").end("user:200").limit(3).reverse(true);
    let listed: Vec<(String, Value)> = storage.list(&options).wait()?;
    s.step(
        "list with options",
        "storage.list::<Value>(&ListOptions::new().prefix(\"user:\").start(\"user:100\")\n    \
         .end(\"user:200\").limit(3).reverse(true)).await?",
        entries_json(&listed),
    )?;
    let bad = storage.list::<Value>(&ListOptions::new().limit(0)).wait().unwrap_err();
    s.step(
        "a refused option (the runtime's message)",
        "storage.list::<Value>(&ListOptions::new().limit(0)).await",
        format!("Err({bad})"),
    )?;

    s.section("Storage options")?;
    let v: Option<Value> = storage
        .get_with("user:100", GetOptions::new().allow_concurrency(true).no_cache(true))
        .wait()?;
    s.step(
        "get with allowConcurrency / noCache",
        "storage.get_with::<Value>(\"user:100\", GetOptions::new().allow_concurrency(true).no_cache(true)).await?",
        v.as_ref().map_or("None".into(), |v| value_to_json(v).to_string()),
    )?;
    storage
        .put_with("fast", &Value::Bool(true), PutOptions::new().allow_unconfirmed(true))
        .wait()?;
    s.step(
        "put with allowUnconfirmed (results need not wait for this write)",
        "storage.put_with(\"fast\", &true, PutOptions::new().allow_unconfirmed(true)).await?",
        "Ok(())",
    )?;
    Ok(())
}

fn coalescing(s: &mut Steps<'_>, storage: &Storage) -> Result<()> {
    s.section("Write coalescing and sync")?;
    storage.sync().wait()?;
    drop(storage.put("a", &Value::from(1)));
    drop(storage.put("b", &Value::from(2)));
    drop(storage.put("c", &Value::from(3)));
    let open = storage.sql()?.in_transaction();
    s.step(
        "three puts, none awaited: they take effect now, in one open transaction",
        "storage.put(\"a\", &1); storage.put(\"b\", &2); storage.put(\"c\", &3);\n\
         storage.sql()?.in_transaction()",
        format!("in transaction: {open}"),
    )?;
    storage.sync().wait()?;
    s.step(
        "sync: the commit point (the object runtime commits at the end of every turn)",
        "storage.sync().await?; storage.sql()?.in_transaction()",
        format!("in transaction: {}", storage.sql()?.in_transaction()),
    )?;
    Ok(())
}

fn runtime_steps(s: &mut Steps<'_>, ns: &Namespace, storage: &Storage, object: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("tokio runtime: {e}")))?;
    s.section("Async transactions")?;
    storage.put("balance", &Value::from(100)).wait()?;
    let outcome = |amount: i64| {
        rt.block_on(storage.transaction(|txn| async move {
            let balance = match txn.get::<Value>("balance").await? {
                Some(Value::Integer(b)) => b,
                _ => 0,
            };
            if balance >= amount {
                txn.put("balance", &Value::from(balance - amount)).await?;
                Ok::<&str, TxnError>("debited")
            } else {
                txn.rollback()?;
                Ok("rolled back")
            }
        }))
    };
    let rust = "storage.transaction(|txn| async move {\n    let balance = ...txn.get(\"balance\").await?;\n    \
                if balance >= amount { txn.put(\"balance\", &(balance - amount)).await?; }\n    \
                else { txn.rollback()?; }\n    Ok(())\n}).await?";
    let first = outcome(60)?;
    let after: Option<Value> = storage.get("balance").wait()?;
    s.step("debit 60 from 100", rust, format!("{first}; balance {}", json_of(&after)))?;
    let second = outcome(60)?;
    let after: Option<Value> = storage.get("balance").wait()?;
    s.step(
        "debit 60 from 40: txn.rollback()",
        "(the same closure)",
        format!("{second}; balance {}", json_of(&after)),
    )?;

    s.section("Alarms")?;
    let at = crate::time::now_ms() + 3_600_000;
    storage.set_alarm(at).wait()?;
    s.step(
        "set an alarm an hour from now",
        "storage.set_alarm(now_ms + 3_600_000).await?",
        "Ok(())",
    )?;
    let got = storage.get_alarm().wait()?;
    s.step(
        "get_alarm",
        "storage.get_alarm().await?",
        format!("{:?}", got.map(crate::time::format_ms)),
    )?;
    storage.delete_alarm().wait()?;
    s.step(
        "delete_alarm",
        "storage.delete_alarm().await?; storage.get_alarm().await?",
        format!("{:?}", storage.get_alarm().wait()?),
    )?;
    storage.sync().wait()?;

    s.section("The object runtime: events in turns")?;
    let visits: Vec<i64> = rt.block_on(async {
        let object = ns.object(object, |_| Visits)?;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let n = object
                .call(|ctx| async move {
                    let n = match ctx.storage().get::<Value>("visits").await? {
                        Some(Value::Integer(n)) => n,
                        _ => 0,
                    };
                    ctx.storage().put("visits", &Value::from(n + 1)); // committed when the turn ends
                    Ok::<i64, TxnError>(n + 1)
                })
                .await??;
            seen.push(n);
        }
        Ok::<_, Error>(seen)
    })?;
    s.step(
        "three events on the object's runtime, each a turn whose writes commit as it ends",
        "let object = ns.object(\"tour\", |_| Visits)?;\nobject.call(|ctx| async move {\n    \
         let n = ctx.storage().get::<i64>(\"visits\").await?.unwrap_or(0);\n    \
         ctx.storage().put(\"visits\", &(n + 1));\n    Ok::<i64, Error>(n + 1)\n}).await??",
        format!("{visits:?}"),
    )?;
    Ok(())
}

fn count_users(storage: &Storage) -> Result<i64> {
    Ok(storage.sql()?.exec("SELECT count(*) FROM users", &[])?.one()?)
}

fn pitr_steps(
    s: &mut Steps<'_>,
    ns: &Namespace,
    handle: StorageHandle,
    object: &str,
) -> Result<()> {
    s.section("Point-in-time recovery (PITR)")?;
    let before = handle.current_bookmark()?;
    s.step("getCurrentBookmark", "let before = storage.current_bookmark()?;", &before)?;
    handle.sql()?.exec("DELETE FROM users", &[])?;
    handle.sync().wait()?;
    s.step(
        "a mistake: every user deleted",
        "sql.exec(\"DELETE FROM users\", &[])?; storage.sync().await?;",
        format!("users left: {}", count_users(&handle)?),
    )?;
    let now = handle.bookmark_for_time(crate::time::now_ms())?;
    s.step(
        "getBookmarkForTime(now): the latest commit at or before the time; bookmarks sort in history order",
        "storage.bookmark_for_time(now_ms)?",
        format!("{now} (after `before`: {})", now > before),
    )?;
    let undo = handle.on_next_session_restore_bookmark(&before)?;
    s.step(
        "onNextSessionRestoreBookmark(before): the restore happens when the object next opens",
        "let undo = storage.on_next_session_restore_bookmark(&before)?;",
        format!("undo bookmark {undo}"),
    )?;
    drop(handle);
    let reopened = ns.storage(object)?;
    s.step(
        "close and reopen the object: it starts at `before`",
        "drop(storage); let storage = ns.storage(\"tour\")?;",
        format!("users: {}", count_users(&reopened)?),
    )?;
    s.step(
        "the restore is itself a point in history: the undo bookmark brings the deletion back",
        "storage.on_next_session_restore_bookmark(&undo)?  // or: durable restore tour UNDO",
        format!("current bookmark {}", reopened.current_bookmark()?),
    )?;
    Ok(())
}

fn json_of(value: &Option<Value>) -> String {
    value.as_ref().map_or("None".into(), |v| value_to_json(v).to_string())
}

/// Runs the tour on `object` in the data directory.
pub fn run(env: &mut Env, object: &str) -> Result<()> {
    let ns = env.namespace()?;
    let handle = ns.storage(object)?;
    let storage: &Storage = &handle;
    let data = env.data.display().to_string();
    let mut s = Steps { out: &mut env.out, n: 0, section: "setup" };
    if !s.out.json {
        s.out.line(format!("durable tour: every storage API on object {object:?} in {data}"))?;
    }
    s.section("Namespace and storage")?;
    s.step(
        "open the data directory and the object (its database is created on first use)",
        &format!("let ns = Namespace::open({data:?}, NamespaceOptions::default())?;\nlet storage = ns.storage({object:?})?;"),
        format!("{}", ns.path_of(object).display()),
    )?;
    storage.delete_all().wait()?;
    storage.sync().wait()?;
    s.step(
        "deleteAll: start from an empty object (the alarm goes too, delete_all_deletes_alarm)",
        "storage.delete_all().await?; storage.sync().await?",
        "Ok(())",
    )?;
    sql_api(&mut s, storage)?;
    transaction_sync(&mut s, storage)?;
    sync_kv(&mut s, storage)?;
    async_kv(&mut s, storage)?;
    coalescing(&mut s, storage)?;
    runtime_steps(&mut s, &ns, storage, object)?;
    storage.sync().wait()?;
    pitr_steps(&mut s, &ns, handle, object)?;
    if !s.out.json {
        s.out.line("")?;
        s.out.line(format!("done: {} steps. The object stays in {data}; look at it with", s.n))?;
        s.out.line(format!("  durable --data {data} sql {object} 'SELECT * FROM users'"))?;
        s.out.line(format!("  durable --data {data} kv list {object} --prefix user: --limit 5"))?;
    }
    Ok(())
}
