//! Executes one op script on durable-storage and answers in the oracle's result format.

use std::path::Path;

use std::sync::Arc;

use durable_kv::{Kv, ListOptions, Value};
use durable_sql::Cursor;
use durable_storage::{Backend, Namespace, NamespaceOptions, StorageHandle};
use durable_txn::{Op, Storage, Transaction};
use serde_json::{Map, Value as Json, json};

use crate::json::{
    self, Unsupported, from_sql, from_value, js_string, summarize, to_param, to_value,
};

/// The storage backend an op script runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// SQLite-backed (`new_sqlite_classes`): every API.
    Sql,
    /// KV-backed (`new_classes`): the async KV API only.
    Kv,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Sql => "sql",
            Class::Kv => "kv",
        }
    }
}

/// A JavaScript error as the oracle reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsError {
    name: String,
    message: String,
    /// The call threw synchronously (rather than rejecting its promise).
    sync: bool,
}

impl JsError {
    fn new(name: &str, message: impl Into<String>, sync: bool) -> JsError {
        JsError { name: name.into(), message: message.into(), sync }
    }

    fn json(&self) -> Json {
        json!({"name": self.name, "message": self.message})
    }
}

impl From<durable_sql::Error> for JsError {
    fn from(e: durable_sql::Error) -> Self {
        JsError::new(e.js_name(), e.to_string(), true)
    }
}

impl From<durable_kv::Error> for JsError {
    fn from(e: durable_kv::Error) -> Self {
        JsError::new(e.js_name(), e.to_string(), true)
    }
}

impl From<durable_txn::Error> for JsError {
    fn from(e: durable_txn::Error) -> Self {
        JsError::new(e.js_name(), e.to_string(), true)
    }
}

impl From<durable_txn::Error> for Flow {
    fn from(e: durable_txn::Error) -> Self {
        Flow::Escape(e.into())
    }
}

impl From<Unsupported> for JsError {
    fn from(e: Unsupported) -> Self {
        JsError::new("Unsupported", e.0, true)
    }
}

/// How an op ended, beyond a plain result.
enum Flow {
    /// An error that escapes the enclosing scope (`throw`, `propagate`).
    Escape(JsError),
    /// `ctx.abort(reason)`.
    Abort(String),
}

/// The local runtime's message for the SQL API of a KV-backed class (local workerd runs such
/// classes on SQLite with SQL disabled; production answers with
/// [`durable_txn::Error::SqlNotAvailable`]). The oracle records the local one.
const SQL_NOT_ENABLED: &str = "SQL is not enabled for this Durable Object class. To enable it, \
    change `new_classes` to `new_sqlite_classes` within the 'migrations' field in your \
    wrangler.jsonc or wrangler.toml file. If using workerd directly,set `enableSql = true` in \
    your workerd config for the class. Note that this change cannot be made after the class is \
    already deployed to production.";

/// One object under test, opened the way users open objects: through a `Namespace` in the
/// case's folder, with the namespace's defaults (group commit, point-in-time recovery
/// archived locally for the sql class; the legacy backend for the kv class).
struct Object {
    class: Class,
    name: String,
    ns: Namespace,
    /// The live instance; `None` between an abort and the next open.
    open: Option<Open>,
}

struct Open {
    /// The object's handle (its `Storage`, and the PITR calls).
    handle: StorageHandle,
    /// The handle's storage, for the calls that take a `Storage`.
    storage: Storage,
}

impl From<durable_storage::Error> for JsError {
    fn from(e: durable_storage::Error) -> Self {
        match e {
            durable_storage::Error::Storage(e) => e.into(),
            other => JsError::new("Error", other.to_string(), true),
        }
    }
}

impl Object {
    fn open(class: Class, dir: &Path, name: &str) -> Result<Object, JsError> {
        let backend = match class {
            Class::Sql => Backend::Sqlite,
            Class::Kv => Backend::Kv,
        };
        let ns = Namespace::open(dir, NamespaceOptions { backend, ..NamespaceOptions::default() })?;
        let mut object = Object { class, name: name.to_owned(), ns, open: None };
        object.restart()?;
        Ok(object)
    }

    /// Opens the object's instance again (after `ctx.abort()`, or at first): the aborted
    /// handle is let go first, as the namespace requires.
    fn restart(&mut self) -> Result<(), JsError> {
        self.open = None;
        let handle = self.ns.storage(&self.name)?;
        let storage = handle.storage().clone();
        self.open = Some(Open { handle, storage });
        Ok(())
    }

    fn storage(&self) -> &Storage {
        &self.open.as_ref().expect("the object is open").storage
    }

    fn handle(&self) -> &StorageHandle {
        &self.open.as_ref().expect("the object is open").handle
    }
}

/// Waits for a storage call (the KV-backed class may read through its backend).
fn wait<T>(op: Op<T>) -> Result<T, durable_txn::Error> {
    op.wait()
}

/// Polls a future to completion on this thread (the interpreter is synchronous).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Per-request state.
struct Request {
    pending: Vec<Json>,
    /// Cursors a script left unread (`mode: none`): in JavaScript they stay open until
    /// garbage collection, so they stay open until the request ends here too.
    open_cursors: Vec<Cursor>,
}

/// Runs `script` (one op script of the oracle's format) with its data under `dir`.
pub fn run_script(script: &Json, dir: &Path) -> Json {
    match script.get("class") {
        Some(Json::Array(classes)) => {
            let mut by_class = Map::new();
            for c in classes {
                let class = parse_class(c);
                let sub = dir.join(class.name());
                let _ = std::fs::create_dir_all(&sub);
                by_class.insert(class.name().into(), run_class(script, class, &sub));
            }
            json!({"byClass": by_class})
        }
        Some(c) => run_class(script, parse_class(c), dir),
        None => run_class(script, Class::Sql, dir),
    }
}

fn parse_class(c: &Json) -> Class {
    if c.as_str() == Some("kv") { Class::Kv } else { Class::Sql }
}

fn requests(script: &Json) -> Vec<Json> {
    match (script.get("requests"), script.get("ops")) {
        (Some(Json::Array(r)), _) => r.clone(),
        (_, Some(ops)) => vec![ops.clone()],
        _ => Vec::new(),
    }
}

fn run_class(script: &Json, class: Class, dir: &Path) -> Json {
    let name = script.get("name").and_then(Json::as_str).unwrap_or("object");
    let mut object = match Object::open(class, dir, name) {
        Ok(o) => o,
        Err(e) => return json!({"class": class.name(), "error": e.json()}),
    };
    let mut out = Vec::new();
    for request in requests(script) {
        if request.as_str() == Some("restart") {
            // The whole namespace goes and comes back on the same folder.
            drop(object);
            object = match Object::open(class, dir, name) {
                Ok(o) => o,
                Err(e) => return json!({"class": class.name(), "error": e.json()}),
            };
            out.push(json!({"restarted": true}));
            continue;
        }
        if object.open.is_none()
            && let Err(e) = object.restart()
        {
            return json!({"class": class.name(), "error": e.json()});
        }
        let ops = request.as_array().cloned().unwrap_or_default();
        out.push(run_request(&mut object, &ops));
    }
    json!({"class": class.name(), "requests": out})
}

fn run_request(object: &mut Object, ops: &[Json]) -> Json {
    let mut req = Request { pending: Vec::new(), open_cursors: Vec::new() };
    let mut results = Vec::new();
    let mut uncaught: Option<Json> = None;
    for op in ops {
        let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
        if kind == "throwUncaught" {
            let message =
                op.get("message").and_then(Json::as_str).unwrap_or("oracle: uncaught throw");
            uncaught = Some(
                json!({"name": "Error", "message": format!("UserThrow: {message}"), "remote": true}),
            );
            break;
        }
        match run_op(object, &mut req, op, false, None) {
            Ok(result) => results.push(result),
            Err(Flow::Escape(e)) => {
                if e.name == "UserThrow" {
                    uncaught = Some(
                        json!({"name": "Error", "message": format!("UserThrow: {}", e.message), "remote": true}),
                    );
                } else {
                    let mut r = Map::new();
                    r.insert("error".into(), e.json());
                    r.insert("escaped".into(), Json::Bool(true));
                    results.push(Json::Object(r));
                }
                break;
            }
            Err(Flow::Abort(reason)) => {
                object.storage().abort();
                // Cursors the script left open hold the old database too.
                req.open_cursors.clear();
                if let Err(e) = object.restart() {
                    return json!({"results": null, "uncaught": e.json()});
                }
                return json!({"results": null, "uncaught": {"name": "Error", "message": reason, "remote": true, "durableObjectReset": true}});
            }
        }
    }
    // The turn ends: its implicit transaction commits (or its writes flush).
    let ended = object.storage().end_turn().and_then(|end| match end {
        durable_txn::TurnEnd::Flushing { durable, .. } => wait(durable),
        _ => Ok(()),
    });
    if let Err(e) = ended {
        return json!({"results": null, "uncaught": {"name": "Error", "message": e.to_string(), "remote": true}});
    }
    let mut out = Map::new();
    out.insert("results".into(), Json::Array(results));
    // A request that ended in an uncaught throw reports no settled promises.
    if !req.pending.is_empty() && uncaught.is_none() {
        out.insert("pending".into(), Json::Array(std::mem::take(&mut req.pending)));
    }
    if let Some(u) = uncaught {
        out.insert("uncaught".into(), u);
    }
    Json::Object(out)
}

fn tagged(op: &Json, body: Map<String, Json>) -> Json {
    let mut m = Map::new();
    m.insert("op".into(), op.get("op").cloned().unwrap_or(Json::Null));
    if let Some(label) = op.get("label") {
        m.insert("label".into(), label.clone());
    }
    m.extend(body);
    Json::Object(m)
}

fn ok_json(v: Json) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("ok".into(), v);
    m
}

fn undefined() -> Json {
    json!({"$undefined": true})
}

/// Runs one op; `in_sync` is true inside `transactionSync` (every error is synchronous).
fn run_op(
    object: &mut Object,
    req: &mut Request,
    op: &Json,
    in_sync: bool,
    txn: Option<&Transaction>,
) -> Result<Json, Flow> {
    let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
    let propagate = op.get("propagate").and_then(Json::as_bool).unwrap_or(false);
    match exec_op(object, req, op, kind, txn) {
        Ok(value) => {
            if op.get("await").and_then(Json::as_bool) == Some(false) && is_async(kind) && !in_sync
            {
                req.pending.push(json!({"ok": value}));
                return Ok(tagged(op, ok_json(json!({"$pending": req.pending.len() - 1}))));
            }
            Ok(tagged(op, ok_json(value)))
        }
        Err(Flow::Escape(e)) if !(propagate || (kind == "throw")) => {
            if op.get("await").and_then(Json::as_bool) == Some(false) && !e.sync && !in_sync {
                req.pending.push(json!({"error": e.json()}));
                return Ok(tagged(op, ok_json(json!({"$pending": req.pending.len() - 1}))));
            }
            let mut m = Map::new();
            m.insert("error".into(), e.json());
            if e.sync || in_sync {
                m.insert("sync".into(), Json::Bool(true));
            }
            Ok(tagged(op, m))
        }
        Err(flow) => Err(flow),
    }
}

fn is_async(kind: &str) -> bool {
    matches!(
        kind,
        "put"
            | "get"
            | "list"
            | "delete"
            | "deleteAll"
            | "sync"
            | "getAlarm"
            | "setAlarm"
            | "deleteAlarm"
            | "transaction"
            | "bookmark"
            | "getCurrentBookmark"
            | "getBookmarkForTime"
            | "onNextSessionRestoreBookmark"
            | "sleep"
    )
}

/// An async API's failure: a rejected promise, not a synchronous throw.
fn rejected(e: impl Into<JsError>) -> Flow {
    let mut e = e.into();
    e.sync = false;
    Flow::Escape(e)
}

fn thrown(e: impl Into<JsError>) -> Flow {
    let mut e = e.into();
    e.sync = true;
    Flow::Escape(e)
}

fn unsupported(what: impl Into<String>) -> Flow {
    Flow::Escape(JsError::new("Unsupported", what, true))
}

fn key_of(op: &Json) -> Result<String, Flow> {
    js_string(op.get("key").unwrap_or(&Json::Null)).map_err(|e| unsupported(e.0))
}

fn keys_of(op: &Json) -> Result<Vec<String>, Flow> {
    match op.get("keys") {
        Some(Json::Array(keys)) => {
            keys.iter().map(|k| js_string(k).map_err(|e| unsupported(e.0))).collect()
        }
        _ => Err(unsupported("keys must be an array")),
    }
}

fn list_options(op: &Json) -> Result<ListOptions, Flow> {
    let text = |k: &str| -> Result<Option<String>, Flow> {
        match op.get(k) {
            None => Ok(None),
            Some(Json::Object(m)) if m.contains_key("$undefined") => Ok(None),
            Some(v) => js_string(v).map(Some).map_err(|e| unsupported(e.0)),
        }
    };
    let limit = match op.get("limit") {
        None => None,
        Some(v) => Some(js_int32(v)?),
    };
    let reverse = match op.get("reverse") {
        None | Some(Json::Null) | Some(Json::Bool(false)) => false,
        Some(Json::Number(n)) => json::number(n) != 0.0,
        Some(Json::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    Ok(ListOptions {
        prefix: text("prefix")?,
        start: text("start")?,
        start_after: text("startAfter")?,
        end: text("end")?,
        limit,
        reverse,
    })
}

/// WebIDL `long` conversion of a list limit.
fn js_int32(v: &Json) -> Result<i64, Flow> {
    let f = match v {
        Json::Number(n) => json::number(n),
        Json::String(s) => s.trim().parse::<f64>().unwrap_or(f64::NAN),
        Json::Bool(b) => f64::from(u8::from(*b)),
        Json::Null => 0.0,
        Json::Object(m) => match m.get("$num").and_then(Json::as_str) {
            Some("NaN") => f64::NAN,
            Some("Infinity") => f64::INFINITY,
            Some("-Infinity") => f64::NEG_INFINITY,
            _ => return Err(unsupported(format!("limit {v}"))),
        },
        Json::Array(_) => return Err(unsupported(format!("limit {v}"))),
    };
    if f.is_nan() || f.is_infinite() {
        return Ok(0);
    }
    let t = f.trunc();
    if t < f64::from(i32::MIN) || t > f64::from(i32::MAX) {
        return Err(rejected(JsError::new(
            "TypeError",
            "Value out of range. Must be between -2147483648 and 2147483647 (inclusive).",
            false,
        )));
    }
    Ok(t as i64)
}

/// A read value as the oracle reports it: the value, `undefined` when missing, or with
/// `summary: true` a short description.
fn value_json(v: Option<&Value>, summary: bool) -> Json {
    match (v, summary) {
        (_, true) => summarize(v),
        (Some(v), false) => from_value(v),
        (None, false) => undefined(),
    }
}

/// The op's `value` field: `undefined` when absent.
fn value_of(op: &Json) -> Result<Value, Flow> {
    op.get("value").map_or(Ok(Value::Undefined), |v| to_value(v).map_err(|e| unsupported(e.0)))
}

/// `[key, value]` pairs as the oracle lists them.
fn pairs_json(entries: &[(String, Value)], summary: bool) -> Vec<Json> {
    entries.iter().map(|(k, v)| json!([k, value_json(Some(v), summary)])).collect()
}

fn map_json(entries: &[(String, Value)], summary: bool) -> Json {
    json!({"$map": pairs_json(entries, summary)})
}

/// The object's async KV surface for one op: the storage itself, or the `txn` of the
/// enclosing `transaction` op.
enum Target<'a> {
    Storage(Storage),
    Txn(&'a Transaction),
}

impl Target<'_> {
    fn put_one(&self, key: &str, value: &Value) -> Op<()> {
        match self {
            Target::Storage(s) => s.put(key, value),
            Target::Txn(t) => t.put(key, value),
        }
    }
    fn put_many(&self, entries: &[(&str, Value)]) -> Op<()> {
        match self {
            Target::Storage(s) => s.put_multiple(entries),
            Target::Txn(t) => t.put_multiple(entries),
        }
    }
    fn get_one(&self, key: &str) -> Op<Option<Value>> {
        match self {
            Target::Storage(s) => s.get(key),
            Target::Txn(t) => t.get(key),
        }
    }
    fn get_many(&self, keys: &[&str]) -> Op<Vec<(String, Value)>> {
        match self {
            Target::Storage(s) => s.get_multiple(keys),
            Target::Txn(t) => t.get_multiple(keys),
        }
    }
    fn list(&self, options: &ListOptions) -> Op<Vec<(String, Value)>> {
        match self {
            Target::Storage(s) => s.list(options),
            Target::Txn(t) => t.list(options),
        }
    }
    fn delete_one(&self, key: &str) -> Op<bool> {
        match self {
            Target::Storage(s) => s.delete(key),
            Target::Txn(t) => t.delete(key),
        }
    }
    fn delete_many(&self, keys: &[&str]) -> Op<usize> {
        match self {
            Target::Storage(s) => s.delete_multiple(keys),
            Target::Txn(t) => t.delete_multiple(keys),
        }
    }
    fn delete_all(&self) -> Op<()> {
        match self {
            Target::Storage(s) => s.delete_all(),
            Target::Txn(t) => t.delete_all(),
        }
    }
    fn get_alarm(&self) -> Op<Option<i64>> {
        match self {
            Target::Storage(s) => s.get_alarm(),
            Target::Txn(t) => t.get_alarm(),
        }
    }
    fn set_alarm(&self, time: i64) -> Op<()> {
        match self {
            Target::Storage(s) => s.set_alarm(time),
            Target::Txn(t) => t.set_alarm(time),
        }
    }
    fn delete_alarm(&self) -> Op<()> {
        match self {
            Target::Storage(s) => s.delete_alarm(),
            Target::Txn(t) => t.delete_alarm(),
        }
    }
}

fn exec_op(
    object: &mut Object,
    req: &mut Request,
    op: &Json,
    kind: &str,
    txn: Option<&Transaction>,
) -> Result<Json, Flow> {
    let summary = op.get("summary").and_then(Json::as_bool).unwrap_or(false);
    let target = match txn {
        Some(t) => Target::Txn(t),
        None => Target::Storage(object.storage().clone()),
    };
    match kind {
        "put" => {
            if let Some(entries) = op.get("entries") {
                let pairs: Vec<(String, Json)> = match entries {
                    Json::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    Json::Array(a) => a
                        .iter()
                        .filter_map(|p| p.as_array())
                        .filter(|p| p.len() == 2)
                        .map(|p| {
                            Ok((js_string(&p[0]).map_err(|e| unsupported(e.0))?, p[1].clone()))
                        })
                        .collect::<Result<_, Flow>>()?,
                    _ => return Err(unsupported("entries")),
                };
                let mut values = Vec::new();
                for (k, v) in &pairs {
                    let value = to_value(v).map_err(|e| unsupported(e.0))?;
                    if value != Value::Undefined {
                        values.push((k.as_str(), value));
                    }
                }
                wait(target.put_many(&values)).map_err(rejected)?;
                return Ok(undefined());
            }
            let key = key_of(op)?;
            let value = value_of(op)?;
            if value == Value::Undefined {
                return Err(rejected(JsError::new(
                    "TypeError",
                    "put() called with undefined value.",
                    false,
                )));
            }
            wait(target.put_one(&key, &value)).map_err(rejected)?;
            Ok(undefined())
        }
        "get" => {
            if op.get("keys").is_some() {
                let keys = keys_of(op)?;
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let found = wait(target.get_many(&refs)).map_err(rejected)?;
                return Ok(map_json(&found, false));
            }
            let key = key_of(op)?;
            let v = wait(target.get_one(&key)).map_err(rejected)?;
            Ok(value_json(v.as_ref(), summary))
        }
        "list" => {
            let options = list_options(op)?;
            let entries = wait(target.list(&options)).map_err(rejected)?;
            Ok(map_json(&entries, summary))
        }
        "delete" => {
            if op.get("keys").is_some() {
                let keys = keys_of(op)?;
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                return Ok(json!(wait(target.delete_many(&refs)).map_err(rejected)?));
            }
            let key = key_of(op)?;
            // `txn.delete()` checks its transaction synchronously (the others reject).
            Ok(json!(wait(target.delete_one(&key)).map_err(|e| match e {
                durable_txn::Error::RolledBack { .. } => thrown(e),
                other => rejected(other),
            })?))
        }
        "deleteAll" => {
            // Refused inside a transaction synchronously, as the runtime throws it.
            // `txn.deleteAll()` throws synchronously; `storage.deleteAll()` rejects.
            let on_txn = matches!(target, Target::Txn(_));
            wait(target.delete_all()).map_err(|e| if on_txn { thrown(e) } else { rejected(e) })?;
            Ok(undefined())
        }
        "getAlarm" => Ok(json!(wait(target.get_alarm()).map_err(rejected)?)),
        "setAlarm" => {
            let time = match op.get("time") {
                Some(Json::Number(n)) => json::number(n),
                _ => return Err(unsupported("setAlarm time")),
            };
            wait(target.set_alarm(time as i64)).map_err(rejected)?;
            Ok(undefined())
        }
        "deleteAlarm" => {
            wait(target.delete_alarm()).map_err(rejected)?;
            Ok(undefined())
        }
        "rollback" => match txn {
            Some(t) => {
                t.rollback().map_err(thrown)?;
                Ok(undefined())
            }
            None => Err(unsupported("rollback outside a transaction")),
        },
        "transaction" => run_transaction(object, req, op, txn),
        "sync" | "sleep" => {
            // Both end the turn: what the turn wrote commits.
            wait(object.storage().sync()).map_err(rejected)?;
            Ok(if kind == "sleep" { Json::Null } else { undefined() })
        }
        "kv.get" | "kvSync.get" | "kv.put" | "kvSync.put" | "kv.delete" | "kvSync.delete"
        | "kv.list" | "kvSync.list" => {
            let kv = object.storage().kv().map_err(thrown)?.clone();
            sync_kv(&kv, op, kind, summary)
        }
        "sql" => {
            if object.class == Class::Kv {
                return Err(thrown(JsError::new("Error", SQL_NOT_ENABLED, true)));
            }
            let query = op.get("query").and_then(Json::as_str).unwrap_or("");
            let params = match op.get("params") {
                Some(Json::Array(p)) => p
                    .iter()
                    .map(to_param)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| unsupported(e.0))?,
                _ => Vec::new(),
            };
            let db = object.storage().sql().map_err(thrown)?.clone();
            let mut cursor = db.exec(query, &params).map_err(thrown)?;
            let mode = op.get("mode").and_then(Json::as_str).unwrap_or("toArray");
            let result = cursor_result(&mut cursor, mode).map_err(thrown)?;
            if mode == "none" {
                req.open_cursors.push(cursor);
            }
            Ok(result)
        }
        "databaseSize" => {
            if object.class == Class::Kv {
                return Err(thrown(JsError::new("Error", SQL_NOT_ENABLED, true)));
            }
            Ok(json!(object.storage().database_size().map_err(thrown)?))
        }
        "hasSql" => Ok(json!({"sql": "object", "kv": "object", "transactionSync": "function"})),
        "transactionSync" => {
            let subs = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
            let throw = op.get("throw").and_then(Json::as_bool).unwrap_or(false);
            let message = op
                .get("throwMessage")
                .and_then(Json::as_str)
                .unwrap_or("oracle: throw inside transactionSync")
                .to_owned();
            let storage = object.storage().clone();
            let mut abort = None;
            let outcome = storage.transaction_sync(|| -> Result<Vec<Json>, JsError> {
                let mut rs = Vec::new();
                for sub in &subs {
                    match run_op(object, req, sub, true, txn) {
                        Ok(r) => rs.push(r),
                        Err(Flow::Escape(e)) => return Err(e),
                        Err(Flow::Abort(reason)) => {
                            abort = Some(reason);
                            return Err(JsError::new("Error", "aborted", true));
                        }
                    }
                }
                if throw {
                    return Err(JsError::new("UserThrow", message.clone(), true));
                }
                Ok(rs)
            });
            if let Some(reason) = abort {
                return Err(Flow::Abort(reason));
            }
            outcome.map(Json::Array).map_err(thrown)
        }
        "throw" => {
            let message = op.get("message").and_then(Json::as_str).unwrap_or("oracle: user throw");
            Err(Flow::Escape(JsError::new("UserThrow", message, true)))
        }
        "abort" => {
            let reason = op.get("reason").and_then(Json::as_str).unwrap_or("oracle abort");
            Err(Flow::Abort(reason.to_owned()))
        }
        "bookmark" | "getCurrentBookmark" => {
            wait(object.storage().sync()).map_err(rejected)?;
            Ok(json!(object.handle().current_bookmark().map_err(rejected)?))
        }
        "getBookmarkForTime" => {
            let time = match op.get("time") {
                Some(Json::Number(n)) => json::number(n) as i64,
                _ => {
                    return Err(rejected(JsError::new(
                        "TypeError",
                        "Failed to execute 'getBookmarkForTime' on 'DurableObjectStorage': \
                         parameter 1 is not of type 'date'.",
                        false,
                    )));
                }
            };
            Ok(json!(object.handle().bookmark_for_time(time).map_err(rejected)?))
        }
        "onNextSessionRestoreBookmark" => {
            let bookmark = op.get("bookmark").and_then(Json::as_str).unwrap_or("");
            wait(object.storage().sync()).map_err(rejected)?;
            let undo = object.handle().on_next_session_restore_bookmark(bookmark);
            Ok(json!(undo.map_err(rejected)?))
        }
        "awaitPending" => Ok(Json::Array(std::mem::take(&mut req.pending))),
        other => Err(unsupported(format!("op {other} is not implemented yet"))),
    }
}

/// `storage.transaction(async txn => { ...ops })`, nested in `parent` when given.
fn run_transaction(
    object: &mut Object,
    req: &mut Request,
    op: &Json,
    parent: Option<&Transaction>,
) -> Result<Json, Flow> {
    let subs = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
    let rollback = op.get("rollback").and_then(Json::as_bool).unwrap_or(false);
    let use_storage = op.get("useStorage").and_then(Json::as_bool).unwrap_or(false);
    let throw = op.get("throw").and_then(Json::as_bool).unwrap_or(false);
    let message = op
        .get("throwMessage")
        .and_then(Json::as_str)
        .unwrap_or("oracle: throw inside transaction")
        .to_owned();
    let storage = object.storage().clone();
    let body = |txn: Transaction| {
        let mut run = || -> Result<Json, Flow> {
            let mut rs = Vec::new();
            for sub in &subs {
                let inner = if use_storage { None } else { Some(&txn) };
                let inner = match (sub.get("op").and_then(Json::as_str), inner) {
                    (Some("rollback" | "transaction"), None) => Some(&txn),
                    (_, inner) => inner,
                };
                rs.push(run_op(object, req, sub, false, inner)?);
            }
            if rollback {
                txn.rollback().map_err(thrown)?;
            }
            if throw {
                return Err(Flow::Escape(JsError::new("UserThrow", message.clone(), false)));
            }
            Ok(Json::Array(rs))
        };
        std::future::ready(run())
    };
    let result = match parent {
        Some(p) => block_on(p.transaction(body)),
        None => block_on(storage.transaction(body)),
    };
    result.map_err(|flow| match flow {
        Flow::Escape(mut e) => {
            e.sync = false;
            Flow::Escape(e)
        }
        other => other,
    })
}

fn sync_kv(kv: &Kv, op: &Json, kind: &str, summary: bool) -> Result<Json, Flow> {
    match kind.split_once('.').map_or(kind, |(_, k)| k) {
        "get" => {
            let key = key_of(op)?;
            let v: Option<Value> = kv.get(&key).map_err(thrown)?;
            Ok(value_json(v.as_ref(), summary))
        }
        "put" => {
            let key = key_of(op)?;
            kv.put(&key, &value_of(op)?).map_err(thrown)?;
            Ok(undefined())
        }
        "delete" => {
            let key = key_of(op)?;
            Ok(json!(kv.delete(&key).map_err(thrown)?))
        }
        _ => {
            let options = list_options(op).map_err(|f| match f {
                Flow::Escape(mut e) => {
                    e.sync = true;
                    Flow::Escape(e)
                }
                other => other,
            })?;
            let entries: Vec<(String, Value)> = kv
                .list_iter(&options)
                .map_err(thrown)?
                .collect::<Result<_, _>>()
                .map_err(thrown)?;
            Ok(json!({"$entries": pairs_json(&entries, summary)}))
        }
    }
}

fn cursor_result(cursor: &mut Cursor, mode: &str) -> Result<Json, durable_sql::Error> {
    let mut out = Map::new();
    let row_json = |row: &durable_sql::Row| -> Json {
        let mut m = Map::new();
        for (k, v) in row.entries() {
            m.insert(k.to_owned(), from_sql(v));
        }
        Json::Object(m)
    };
    match mode {
        "toArray" | "iterate" => {
            let rows = cursor.to_array()?;
            out.insert("result".into(), Json::Array(rows.iter().map(row_json).collect()));
        }
        "one" => {
            let row = cursor.one()?;
            out.insert("result".into(), row_json(&row));
        }
        "raw" => {
            let rows = cursor.to_raw_array()?;
            out.insert(
                "result".into(),
                Json::Array(
                    rows.iter().map(|r| Json::Array(r.iter().map(from_sql).collect())).collect(),
                ),
            );
        }
        "next" => {
            let next = match cursor.next() {
                Some(row) => json!({"done": false, "value": row_json(&row?)}),
                None => json!({"done": true, "value": undefined()}),
            };
            out.insert("result".into(), next);
        }
        _ => {}
    }
    out.insert("columnNames".into(), json!(cursor.column_names()));
    out.insert("rowsRead".into(), json!(cursor.rows_read()));
    out.insert("rowsWritten".into(), json!(cursor.rows_written()));
    Ok(Json::Object(out))
}
