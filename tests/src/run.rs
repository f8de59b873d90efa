//! Executes one op script on durable-storage the way the runtime runs a Durable Object: the
//! object lives in a `Namespace` in the case's folder, each request of the script is one event
//! (`Object::call`), and the request's ops run as that event's async code, in turns. The
//! answers come back in the oracle's result format.
//!
//! - `"restart"` closes the namespace and opens it again on the same folder.
//! - `abort` is `ctx.abort(reason)`; `throwUncaught` is the handler returning an error.
//! - An async call made with `"await": false` keeps its `Op` un-awaited until `awaitPending`
//!   or the end of the event, as a JavaScript promise nobody awaited yet.
//! - A call that throws synchronously in JavaScript is an `Err` of the op; one that returns a
//!   promise is an `Op` (a future), whose failure is a rejection.

use std::path::Path;
use std::pin::Pin;

use durable_kv::{Kv, ListOptions, Value};
use durable_sql::Cursor;
use durable_storage::{
    Actor, Backend, Compatibility, Context, Namespace, NamespaceOptions, ObjectHandle,
};
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
}

impl JsError {
    /// An error as the oracle records it: the random id of an internal error's reference is
    /// `<ref>`, as the oracle's harness writes it.
    fn new(name: &str, message: impl Into<String>) -> JsError {
        const INTERNAL: &str = "internal error; reference = ";
        let mut message = message.into();
        if let Some(id) = message.strip_prefix(INTERNAL)
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            message = format!("{INTERNAL}<ref>");
        }
        JsError { name: name.into(), message }
    }

    fn json(&self) -> Json {
        json!({"name": self.name, "message": self.message})
    }
}

impl From<durable_sql::Error> for JsError {
    fn from(e: durable_sql::Error) -> Self {
        JsError::new(e.js_name(), e.to_string())
    }
}

impl From<durable_kv::Error> for JsError {
    fn from(e: durable_kv::Error) -> Self {
        JsError::new(e.js_name(), e.to_string())
    }
}

impl From<durable_txn::Error> for JsError {
    fn from(e: durable_txn::Error) -> Self {
        JsError::new(e.js_name(), e.to_string())
    }
}

impl From<durable_storage::Error> for JsError {
    fn from(e: durable_storage::Error) -> Self {
        match e {
            durable_storage::Error::Storage(e) => e.into(),
            other => JsError::new("Error", other.to_string()),
        }
    }
}

impl From<Unsupported> for JsError {
    fn from(e: Unsupported) -> Self {
        JsError::new("Unsupported", e.0)
    }
}

/// How an op ended, beyond a result.
enum Flow {
    /// A synchronous throw that escapes the op (`throw`, `propagate`, or a rejection that
    /// was awaited with `propagate`).
    Escape(JsError),
    /// `ctx.abort(reason)`.
    Abort(String),
}

impl<E: Into<JsError>> From<E> for Flow {
    fn from(e: E) -> Self {
        Flow::Escape(e.into())
    }
}

/// The local runtime's message for the SQL API of a KV-backed class (local workerd runs such
/// classes on SQLite with SQL disabled; production answers with
/// [`durable_txn::Error::SqlNotAvailable`]). The oracle records the local one.
const SQL_NOT_ENABLED: &str = "SQL is not enabled for this Durable Object class. To enable it, \
    change `new_classes` to `new_sqlite_classes` within the 'migrations' field in your \
    wrangler.jsonc or wrangler.toml file. If using workerd directly,set `enableSql = true` in \
    your workerd config for the class. Note that this change cannot be made after the class is \
    already deployed to production.";

/// The object's code: the op interpreter runs inside its events. It keeps its name and
/// namespace, to call other objects (`callObject`).
struct Oracle {
    ns: Namespace,
    name: String,
}

impl Actor for Oracle {}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Escape(e) => write!(f, "{}: {}", e.name, e.message),
            Flow::Abort(reason) => f.write_str(reason),
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a call gave back: a value now (a synchronous API), or a promise (an async API's
/// `Op`, or a transaction), whose failure is a rejection.
enum Done {
    Now(Json),
    Later(BoxFuture<'static, Result<Json, JsError>>),
}

impl Done {
    /// A promise that is already settled.
    fn settled(result: Result<Json, JsError>) -> Done {
        Done::Later(Box::pin(std::future::ready(result)))
    }

    /// A promise over a storage call, its value rendered by `render`.
    fn op<T: Send + 'static>(op: Op<T>, render: impl FnOnce(T) -> Json + Send + 'static) -> Done {
        Done::Later(Box::pin(async move { op.await.map(render).map_err(JsError::from) }))
    }
}

/// Where an op runs: directly in the event, or synchronously inside `transactionSync`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Event,
    Sync,
}

/// How an event ended, for the caller.
enum Answer {
    /// The handler returned: its results (and settled promises).
    Done(Json),
    /// The handler threw: what escaped (the results so far are in `Results`).
    Uncaught { error: Json },
}

/// The results of a request, shared with the caller so that `stash` can report them even
/// when the event fails.
#[derive(Clone, Default)]
struct Results {
    list: std::sync::Arc<std::sync::Mutex<Vec<Json>>>,
    stashed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Results {
    fn push(&self, r: Json) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }

    fn take(&self) -> Vec<Json> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn stashed(&self) -> bool {
        self.stashed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One event's interpreter state.
struct Event {
    ctx: Context<Oracle>,
    class: Class,
    results: Results,
    /// Promises made with `"await": false`, settled by `awaitPending` or the event's end.
    pending: Vec<BoxFuture<'static, Json>>,
    /// Cursors a script left unread (`mode: none`): in JavaScript they stay open until
    /// garbage collection, so they stay open until the event ends here too.
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
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return json!({"class": class.name(), "error": {"name": "Error", "message": e.to_string()}});
        }
    };
    rt.block_on(run_class_events(script, class, dir))
}

/// The namespace the script's object lives in: the product's defaults (group commit and a
/// local archive for SQLite-backed objects), on the chosen backend, following the runtime's
/// behaviours at the oracle's compatibility date (2026-01-01) plus the script's
/// `compatibilityFlags`.
fn open(
    class: Class,
    dir: &Path,
    name: &str,
    flags: &[String],
) -> Result<(Namespace, ObjectHandle<Oracle>), JsError> {
    let backend = match class {
        Class::Sql => Backend::Sqlite,
        Class::Kv => Backend::Kv,
    };
    let mut compatibility = Compatibility::for_date(2026, 1, 1);
    for flag in flags {
        match flag.as_str() {
            "delete_all_deletes_alarm" => {
                compatibility = compatibility.delete_all_deletes_alarm(true);
            }
            other => {
                return Err(JsError::new("Unsupported", format!("compatibility flag {other}")));
            }
        }
    }
    let options = NamespaceOptions::new().backend(backend).compatibility(compatibility);
    let ns = Namespace::open(dir, options)?;
    let object = spawn(&ns, name)?;
    Ok((ns, object))
}

fn spawn(ns: &Namespace, name: &str) -> Result<ObjectHandle<Oracle>, JsError> {
    let (oracle_ns, oracle_name) = (ns.clone(), name.to_owned());
    Ok(ns.object(name, move |_| Oracle { ns: oracle_ns.clone(), name: oracle_name.clone() })?)
}

async fn run_class_events(script: &Json, class: Class, dir: &Path) -> Json {
    let name = script.get("name").and_then(Json::as_str).unwrap_or("object");
    let flags: Vec<String> = script
        .get("compatibilityFlags")
        .and_then(Json::as_array)
        .map(|f| f.iter().filter_map(Json::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let fail = |e: JsError| json!({"class": class.name(), "error": e.json()});
    let (mut ns, mut object) = match open(class, dir, name, &flags) {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let mut out = Vec::new();
    for request in requests(script) {
        if request.as_str() == Some("restart") {
            // The whole namespace goes and comes back on the same folder.
            drop(object);
            if let Err(e) = ns.close().await {
                return fail(JsError::new("Error", e.to_string()));
            }
            (ns, object) = match open(class, dir, name, &flags) {
                Ok(opened) => opened,
                Err(e) => return fail(e),
            };
            out.push(json!({"restarted": true}));
            continue;
        }
        let ops = request.as_array().cloned().unwrap_or_default();
        out.push(run_request(&object, class, ops).await);
    }
    drop(object);
    if let Err(e) = ns.close().await {
        return fail(JsError::new("Error", e.to_string()));
    }
    json!({"class": class.name(), "requests": out})
}

/// `callObject`: one request to another object (of the caller's namespace, private to the
/// caller), sent when the op runs: its answer, or a rejection when its handler threw or it
/// was reset.
fn call_object(
    ns: &Namespace,
    name: &str,
    class: Class,
    ops: Vec<Json>,
) -> Result<impl Future<Output = Result<Json, JsError>> + Send + 'static, JsError> {
    let object = spawn(ns, name)?;
    let answer = run_request(&object, class, ops);
    Ok(async move {
        let answer = answer.await;
        drop(object);
        match answer.get("uncaught") {
            Some(e) => Err(JsError::new(
                e["name"].as_str().unwrap_or("Error"),
                e["message"].as_str().unwrap_or(""),
            )),
            None => Ok(answer),
        }
    })
}

/// One request: one event on the object, sent at once; the future gives its answer.
fn run_request(
    object: &ObjectHandle<Oracle>,
    class: Class,
    ops: Vec<Json>,
) -> impl Future<Output = Json> + Send + use<> {
    let results = Results::default();
    let shared = results.clone();
    let answer = object.call(move |ctx| async move {
        let mut event =
            Event { ctx, class, results: shared, pending: Vec::new(), open_cursors: Vec::new() };
        event.run(ops).await
    });
    async move { answer_json(answer.await, &results) }
}

fn answer_json(answer: durable_txn::Result<Answer>, results: &Results) -> Json {
    match answer {
        Ok(Answer::Done(json)) => json,
        Ok(Answer::Uncaught { error }) => json!({"results": results.take(), "uncaught": error}),
        // The object was reset while the event ran (an abort, a failed commit): the event's
        // results are lost, as the runtime loses them, unless the script stashed them.
        Err(e) => {
            let mut uncaught = json!({"name": "Error", "message": e.to_string(), "remote": true});
            if e.is_overloaded() {
                uncaught["overloaded"] = Json::Bool(true);
            }
            if e.resets_object() {
                uncaught["durableObjectReset"] = Json::Bool(true);
            }
            let results = if results.stashed() { Json::Array(results.take()) } else { Json::Null };
            json!({"results": results, "uncaught": uncaught})
        }
    }
}

/// A `throw` from the object's code, as the caller sees it escape the handler.
fn user_throw(message: &str) -> Json {
    json!({"name": "Error", "message": format!("UserThrow: {message}"), "remote": true})
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

fn error_json(e: &JsError, sync: bool) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("error".into(), e.json());
    if sync {
        m.insert("sync".into(), Json::Bool(true));
    }
    m
}

fn undefined() -> Json {
    json!({"$undefined": true})
}

/// A settled promise as `awaitPending` reports it.
fn settled(result: Result<Json, JsError>) -> Json {
    match result {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": e.json()}),
    }
}

impl Event {
    async fn run(&mut self, ops: Vec<Json>) -> Answer {
        for op in &ops {
            let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
            if kind == "throwUncaught" {
                let message =
                    op.get("message").and_then(Json::as_str).unwrap_or("oracle: uncaught throw");
                return Answer::Uncaught { error: user_throw(message) };
            }
            if kind == "stash" {
                // The results so far, and later ones, reach the caller even if the event fails.
                self.results.stashed.store(true, std::sync::atomic::Ordering::SeqCst);
                self.results.push(tagged(op, ok_json(Json::Bool(true))));
                continue;
            }
            match self.run_op(op, Scope::Event, None).await {
                Ok(result) => self.results.push(result),
                Err(Flow::Escape(e)) if e.name == "UserThrow" => {
                    return Answer::Uncaught { error: user_throw(&e.message) };
                }
                Err(Flow::Escape(e)) => {
                    let mut r = error_json(&e, false);
                    r.insert("escaped".into(), Json::Bool(true));
                    self.results.push(Json::Object(r));
                    break;
                }
                Err(Flow::Abort(reason)) => {
                    // The runtime fails the event with the reason; nothing here is reported.
                    self.ctx.abort(Some(&reason));
                    return Answer::Done(Json::Null);
                }
            }
        }
        // Promises nobody awaited settle before the handler returns.
        let pending = std::mem::take(&mut self.pending);
        let mut settled = Vec::with_capacity(pending.len());
        for p in pending {
            settled.push(p.await);
        }
        self.open_cursors.clear();
        let mut out = Map::new();
        out.insert("results".into(), Json::Array(self.results.take()));
        if !settled.is_empty() {
            out.insert("pending".into(), Json::Array(settled));
        }
        Answer::Done(Json::Object(out))
    }

    /// Runs one op and reports it as the oracle does; boxed, as transactions recurse.
    fn run_op<'a>(
        &'a mut self,
        op: &'a Json,
        scope: Scope,
        txn: Option<&'a Transaction>,
    ) -> BoxFuture<'a, Result<Json, Flow>> {
        Box::pin(async move {
            let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
            let propagate = op.get("propagate").and_then(Json::as_bool).unwrap_or(false);
            match self.exec(op, kind, txn).await {
                Ok(Done::Now(value)) => Ok(tagged(op, ok_json(value))),
                Ok(Done::Later(promise)) => {
                    if scope == Scope::Sync {
                        // Not awaited (it cannot be inside transactionSync); the call did its
                        // work when it was made.
                        let mut m = ok_json(json!({"$promise": true}));
                        m.insert("note".into(), json!("returned a promise inside a sync context"));
                        return Ok(tagged(op, m));
                    }
                    if op.get("await").and_then(Json::as_bool) == Some(false) {
                        self.pending.push(Box::pin(async move { settled(promise.await) }));
                        let index = self.pending.len() - 1;
                        return Ok(tagged(op, ok_json(json!({"$pending": index}))));
                    }
                    match promise.await {
                        Ok(value) => Ok(tagged(op, ok_json(value))),
                        Err(e) if propagate => Err(Flow::Escape(e)),
                        Err(e) => Ok(tagged(op, error_json(&e, false))),
                    }
                }
                Err(Flow::Escape(e)) if !(propagate || kind == "throw") => {
                    Ok(tagged(op, error_json(&e, true)))
                }
                Err(flow) => Err(flow),
            }
        })
    }

    fn storage(&self) -> &Storage {
        self.ctx.storage()
    }

    async fn exec(
        &mut self,
        op: &Json,
        kind: &str,
        txn: Option<&Transaction>,
    ) -> Result<Done, Flow> {
        let summary = op.get("summary").and_then(Json::as_bool).unwrap_or(false);
        let target = match txn {
            Some(t) => Target::Txn(t),
            None => Target::Storage(self.storage().clone()),
        };
        Ok(match kind {
            "put" => put(&target, op)?,
            "get" => {
                if op.get("keys").is_some() {
                    let keys = keys_of(op)?;
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    Done::op(target.get_many(&refs), |found| map_json(&found, false))
                } else {
                    let key = key_of(op)?;
                    Done::op(target.get_one(&key), move |v| value_json(v.as_ref(), summary))
                }
            }
            "list" => match list_options(op) {
                Ok(options) => Done::op(target.list(&options), move |e| map_json(&e, summary)),
                Err(e) => Done::settled(Err(e)),
            },
            "delete" => {
                if op.get("keys").is_some() {
                    let keys = keys_of(op)?;
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    Done::op(target.delete_many(&refs), |n| json!(n))
                } else {
                    let key = key_of(op)?;
                    // `txn.delete()` checks its transaction synchronously (the others reject).
                    match (&target, target.delete_one(&key).now()) {
                        (Target::Txn(_), Ok(Err(e @ durable_txn::Error::RolledBack { .. }))) => {
                            return Err(e.into());
                        }
                        (_, Ok(result)) => {
                            Done::settled(result.map(|d| json!(d)).map_err(JsError::from))
                        }
                        (_, Err(op)) => Done::op(op, |d| json!(d)),
                    }
                }
            }
            // `txn.deleteAll()` throws synchronously; `storage.deleteAll()` rejects.
            "deleteAll" => match (&target, target.delete_all().now()) {
                (Target::Txn(_), Ok(Err(e))) => return Err(e.into()),
                (_, Ok(result)) => {
                    Done::settled(result.map(|()| undefined()).map_err(JsError::from))
                }
                (_, Err(op)) => Done::op(op, |()| undefined()),
            },
            "getAlarm" => Done::op(target.get_alarm(), |t| json!(t)),
            "setAlarm" => match op.get("time") {
                Some(Json::Number(n)) => {
                    Done::op(target.set_alarm(json::number(n) as i64), |()| undefined())
                }
                _ => return Err(unsupported("setAlarm time")),
            },
            "deleteAlarm" => Done::op(target.delete_alarm(), |()| undefined()),
            "rollback" => match txn {
                Some(t) => {
                    t.rollback()?;
                    Done::Now(undefined())
                }
                None => return Err(unsupported("rollback outside a transaction")),
            },
            "transaction" => Done::settled(self.transaction(op, txn).await),
            "sync" => Done::op(self.storage().sync(), |()| undefined()),
            "sleep" => {
                let ms = op.get("ms").and_then(Json::as_u64).unwrap_or(0);
                Done::Later(Box::pin(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    // A timer always ends the turn, even at 0 ms.
                    yield_once().await;
                    Ok(Json::Null)
                }))
            }
            "kv.get" | "kvSync.get" | "kv.put" | "kvSync.put" | "kv.delete" | "kvSync.delete"
            | "kv.list" | "kvSync.list" => {
                let kv = self.storage().kv()?.clone();
                Done::Now(sync_kv(&kv, op, kind, summary)?)
            }
            "sql" => {
                if self.class == Class::Kv {
                    return Err(JsError::new("Error", SQL_NOT_ENABLED).into());
                }
                let query = op.get("query").and_then(Json::as_str).unwrap_or("");
                let params = match op.get("params") {
                    Some(Json::Array(p)) => {
                        p.iter().map(to_param).collect::<Result<Vec<_>, _>>()?
                    }
                    _ => Vec::new(),
                };
                let db = self.storage().sql()?.clone();
                let mut cursor = db.exec(query, &params)?;
                let mode = op.get("mode").and_then(Json::as_str).unwrap_or("toArray");
                let result = cursor_result(&mut cursor, mode)?;
                if mode == "none" {
                    self.open_cursors.push(cursor);
                }
                Done::Now(result)
            }
            "databaseSize" => {
                if self.class == Class::Kv {
                    return Err(JsError::new("Error", SQL_NOT_ENABLED).into());
                }
                Done::Now(json!(self.storage().database_size()?))
            }
            "hasSql" => {
                Done::Now(json!({"sql": "object", "kv": "object", "transactionSync": "function"}))
            }
            "transactionSync" => Done::Now(self.transaction_sync(op, txn)?),
            "throw" => {
                let message =
                    op.get("message").and_then(Json::as_str).unwrap_or("oracle: user throw");
                return Err(Flow::Escape(JsError::new("UserThrow", message)));
            }
            "abort" => {
                let reason = op.get("reason").and_then(Json::as_str).unwrap_or("oracle abort");
                return Err(Flow::Abort(reason.to_owned()));
            }
            "bookmark" | "getCurrentBookmark" => {
                Done::op(self.storage().current_bookmark(), |b| json!(b))
            }
            "getBookmarkForTime" => match op.get("time") {
                Some(Json::Number(n)) => {
                    Done::op(self.storage().bookmark_for_time(json::number(n) as i64), |b| json!(b))
                }
                _ => Done::settled(Err(JsError::new(
                    "TypeError",
                    "Failed to execute 'getBookmarkForTime' on 'DurableObjectStorage': \
                     parameter 1 is not of type 'date'.",
                ))),
            },
            "onNextSessionRestoreBookmark" => {
                let bookmark = op.get("bookmark").and_then(Json::as_str).unwrap_or("");
                Done::op(self.storage().on_next_session_restore_bookmark(bookmark), |b| json!(b))
            }
            "kvListIter" => self.list_iter(op).await?,
            "call" => self.call(op)?,
            "callObject" => {
                let oracle = self.ctx.actor();
                let name = op.get("name").and_then(Json::as_str).unwrap_or("other");
                let target = format!("{name}@{}", oracle.name);
                if op.get("class").is_some_and(|c| parse_class(c) != self.class) {
                    return Err(unsupported("callObject to another class"));
                }
                let ops = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
                Done::Later(Box::pin(call_object(&oracle.ns, &target, self.class, ops)?))
            }
            "blockConcurrencyWhile" => {
                let subs = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
                let sleep = op.get("sleep").and_then(Json::as_u64).unwrap_or(0);
                let throw = op.get("throw").and_then(Json::as_bool).unwrap_or(false);
                let message = op
                    .get("throwMessage")
                    .and_then(Json::as_str)
                    .unwrap_or("oracle: throw inside blockConcurrencyWhile")
                    .to_owned();
                let ctx = self.ctx.clone();
                let section = async {
                    if sleep > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(sleep)).await;
                        yield_once().await;
                    }
                    let mut rs = Vec::new();
                    for sub in &subs {
                        rs.push(self.run_op(sub, Scope::Event, None).await?);
                    }
                    if throw {
                        return Err(Flow::Escape(JsError::new("UserThrow", message)));
                    }
                    Ok(Json::Array(rs))
                };
                let result = ctx.block_concurrency_while(section).await;
                Done::settled(result.map_err(|flow| match flow {
                    Flow::Escape(e) => e,
                    Flow::Abort(reason) => JsError::new("Error", reason),
                }))
            }
            "awaitPending" => {
                let pending = std::mem::take(&mut self.pending);
                Done::Later(Box::pin(async move {
                    let mut out = Vec::with_capacity(pending.len());
                    for p in pending {
                        out.push(p.await);
                    }
                    Ok(Json::Array(out))
                }))
            }
            other => return Err(unsupported(format!("op {other} is not implemented yet"))),
        })
    }

    /// `storage.transactionSync(() => { ...ops })`: the sub-ops run synchronously.
    fn transaction_sync(&mut self, op: &Json, txn: Option<&Transaction>) -> Result<Json, Flow> {
        let subs = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
        let throw = op.get("throw").and_then(Json::as_bool).unwrap_or(false);
        let message = op
            .get("throwMessage")
            .and_then(Json::as_str)
            .unwrap_or("oracle: throw inside transactionSync")
            .to_owned();
        let storage = self.storage().clone();
        let mut abort = None;
        let outcome = storage.transaction_sync(|| -> Result<Vec<Json>, JsError> {
            let mut rs = Vec::new();
            for sub in &subs {
                // Nothing inside awaits: every future is ready or left as a promise.
                match now_or_never(self.run_op(sub, Scope::Sync, txn)) {
                    Some(Ok(r)) => rs.push(r),
                    Some(Err(Flow::Escape(e))) => return Err(e),
                    Some(Err(Flow::Abort(reason))) => {
                        abort = Some(reason);
                        return Err(JsError::new("Error", "aborted"));
                    }
                    None => {
                        return Err(JsError::new(
                            "Unsupported",
                            "an op awaited inside transactionSync",
                        ));
                    }
                }
            }
            if throw {
                return Err(JsError::new("UserThrow", message.clone()));
            }
            Ok(rs)
        });
        if let Some(reason) = abort {
            return Err(Flow::Abort(reason));
        }
        Ok(Json::Array(outcome?))
    }

    /// `storage.transaction(async txn => { ...ops })`, nested in `parent` when given; its
    /// outcome is the transaction's promise.
    async fn transaction(
        &mut self,
        op: &Json,
        parent: Option<&Transaction>,
    ) -> Result<Json, JsError> {
        let subs = op.get("ops").and_then(Json::as_array).cloned().unwrap_or_default();
        let rollback = op.get("rollback").and_then(Json::as_bool).unwrap_or(false);
        let use_storage = op.get("useStorage").and_then(Json::as_bool).unwrap_or(false);
        let throw = op.get("throw").and_then(Json::as_bool).unwrap_or(false);
        let message = op
            .get("throwMessage")
            .and_then(Json::as_str)
            .unwrap_or("oracle: throw inside transaction")
            .to_owned();
        let storage = self.storage().clone();
        let ctx = self.ctx.clone();
        let body = |txn: Transaction| async move {
            let mut rs = Vec::new();
            for sub in &subs {
                let inner = if use_storage { None } else { Some(&txn) };
                let inner = match (sub.get("op").and_then(Json::as_str), inner) {
                    (Some("rollback" | "transaction"), None) => Some(&txn),
                    (_, inner) => inner,
                };
                rs.push(self.run_op(sub, Scope::Event, inner).await?);
            }
            if rollback {
                txn.rollback()?;
            }
            if throw {
                return Err(Flow::Escape(JsError::new("UserThrow", message.clone())));
            }
            Ok(Json::Array(rs))
        };
        let result = match parent {
            Some(p) => p.transaction(body).await,
            None => storage.transaction(body).await,
        };
        result.map_err(|flow| match flow {
            Flow::Escape(e) => e,
            // `ctx.abort()` inside the closure resets the object as anywhere else.
            Flow::Abort(reason) => {
                ctx.abort(Some(&reason));
                JsError::new("Error", reason)
            }
        })
    }
}

/// A future that returns `Pending` once: its poll ends the turn.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Polls `future` once: its output if it is ready without waiting.
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// `put`: one key, or `entries` (undefined values are skipped, as the runtime skips them).
fn put(target: &Target<'_>, op: &Json) -> Result<Done, Flow> {
    if let Some(entries) = op.get("entries") {
        let pairs: Vec<(String, Json)> = match entries {
            Json::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Json::Array(a) => a
                .iter()
                .filter_map(|p| p.as_array())
                .filter(|p| p.len() == 2)
                .map(|p| Ok((js_string(&p[0])?, p[1].clone())))
                .collect::<Result<_, Unsupported>>()?,
            _ => return Err(unsupported("entries")),
        };
        let mut values = Vec::new();
        for (k, v) in &pairs {
            values.push((k.as_str(), to_value(v)?));
        }
        return Ok(Done::op(target.put_many(&values), |()| undefined()));
    }
    let key = key_of(op)?;
    let value = value_of(op)?;
    Ok(Done::op(target.put_one(&key, &value), |()| undefined()))
}

fn unsupported(what: impl Into<String>) -> Flow {
    Flow::Escape(JsError::new("Unsupported", what))
}

fn key_of(op: &Json) -> Result<String, Flow> {
    Ok(js_string(op.get("key").unwrap_or(&Json::Null))?)
}

fn keys_of(op: &Json) -> Result<Vec<String>, Flow> {
    match op.get("keys") {
        Some(Json::Array(keys)) => Ok(keys.iter().map(js_string).collect::<Result<_, _>>()?),
        _ => Err(unsupported("keys must be an array")),
    }
}

/// The list options of `op`; a bad limit is the runtime's `TypeError`.
fn list_options(op: &Json) -> Result<ListOptions, JsError> {
    let text = |k: &str| -> Result<Option<String>, JsError> {
        match op.get(k) {
            None => Ok(None),
            Some(Json::Object(m)) if m.contains_key("$undefined") => Ok(None),
            Some(v) => Ok(Some(js_string(v)?)),
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
    let mut options = ListOptions::new().reverse(reverse);
    options.prefix = text("prefix")?;
    options.start = text("start")?;
    options.start_after = text("startAfter")?;
    options.end = text("end")?;
    options.limit = limit;
    Ok(options)
}

/// WebIDL `long` conversion of a list limit.
fn js_int32(v: &Json) -> Result<i64, JsError> {
    let f = match v {
        Json::Number(n) => json::number(n),
        Json::String(s) => s.trim().parse::<f64>().unwrap_or(f64::NAN),
        Json::Bool(b) => f64::from(u8::from(*b)),
        Json::Null => 0.0,
        Json::Object(m) => match m.get("$num").and_then(Json::as_str) {
            Some("NaN") => f64::NAN,
            Some("Infinity") => f64::INFINITY,
            Some("-Infinity") => f64::NEG_INFINITY,
            _ => return Err(JsError::new("Unsupported", format!("limit {v}"))),
        },
        Json::Array(_) => return Err(JsError::new("Unsupported", format!("limit {v}"))),
    };
    if f.is_nan() || f.is_infinite() {
        return Ok(0);
    }
    let t = f.trunc();
    if t < f64::from(i32::MIN) || t > f64::from(i32::MAX) {
        return Err(JsError::new(
            "TypeError",
            "Value out of range. Must be between -2147483648 and 2147483647 (inclusive).",
        ));
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
    Ok(op.get("value").map_or(Ok(Value::Undefined), to_value)?)
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

fn sync_kv(kv: &Kv, op: &Json, kind: &str, summary: bool) -> Result<Json, Flow> {
    match kind.split_once('.').map_or(kind, |(_, k)| k) {
        "get" => {
            let key = key_of(op)?;
            let v: Option<Value> = kv.get(&key)?;
            Ok(value_json(v.as_ref(), summary))
        }
        "put" => {
            let key = key_of(op)?;
            kv.put(&key, &value_of(op)?)?;
            Ok(undefined())
        }
        "delete" => {
            let key = key_of(op)?;
            Ok(json!(kv.delete(&key)?))
        }
        _ => {
            let options = list_options(op)?;
            let entries: Vec<(String, Value)> =
                kv.list_iter(&options)?.collect::<Result<_, _>>()?;
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
            let rows = cursor.to_array::<durable_storage::Row>()?;
            out.insert("result".into(), Json::Array(rows.iter().map(row_json).collect()));
        }
        "one" => {
            let row = cursor.one::<durable_storage::Row>()?;
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

/// What `kvListIter` steps through: the sync KV API's lazy iterator, the async `list()`'s
/// snapshot, or an SQL cursor.
enum Rows {
    Kv(durable_kv::ListIter<Value>),
    Snapshot(std::vec::IntoIter<(String, Value)>),
    Sql(Cursor),
}

impl Rows {
    /// The next row as the oracle renders it.
    fn next(&mut self, summary: bool) -> Option<Result<Json, JsError>> {
        match self {
            Rows::Kv(it) => it.next().map(|r| {
                r.map(|(k, v)| json!([k, value_json(Some(&v), summary)])).map_err(JsError::from)
            }),
            Rows::Snapshot(it) => {
                it.next().map(|(k, v)| Ok(json!([k, value_json(Some(&v), summary)])))
            }
            Rows::Sql(cursor) => {
                cursor.next().map(|r| r.map(|row| row_json(&row)).map_err(JsError::from))
            }
        }
    }
}

fn row_json(row: &durable_sql::Row) -> Json {
    let mut m = Map::new();
    for (k, v) in row.entries() {
        m.insert(k.to_owned(), from_sql(v));
    }
    Json::Object(m)
}

/// Takes up to `n` rows into `rec` (`rows`, then `done` at the end or the `error` met).
fn take_rows(rows: &mut Rows, n: u64, summary: bool, rec: &mut Map<String, Json>) {
    let mut taken = Vec::new();
    for _ in 0..n {
        match rows.next(summary) {
            None => {
                rec.insert("done".into(), Json::Bool(true));
                break;
            }
            Some(Ok(row)) => taken.push(row),
            Some(Err(e)) => {
                rec.insert("error".into(), e.json());
                break;
            }
        }
    }
    rec.insert("rows".into(), Json::Array(taken));
}

impl Event {
    /// `kvListIter`: steps through a list (or a cursor), running sub-ops between steps.
    async fn list_iter(&mut self, op: &Json) -> Result<Done, Flow> {
        let summary = op.get("summary").and_then(Json::as_bool).unwrap_or(false);
        let api = op.get("api").and_then(Json::as_str).unwrap_or("kv");
        let mut rows = match api {
            "storage" => {
                let options = match list_options(op) {
                    Ok(o) => o,
                    Err(e) => return Ok(Done::settled(Err(e))),
                };
                match self.storage().list::<Value>(&options).await {
                    Ok(entries) => Rows::Snapshot(entries.into_iter()),
                    Err(e) => return Ok(Done::settled(Err(e.into()))),
                }
            }
            "sql" => {
                let query = op.get("query").and_then(Json::as_str).unwrap_or("");
                let params = match op.get("params") {
                    Some(Json::Array(p)) => {
                        p.iter().map(to_param).collect::<Result<Vec<_>, _>>()?
                    }
                    _ => Vec::new(),
                };
                Rows::Sql(self.storage().sql()?.exec(query, &params)?)
            }
            _ => {
                let options = list_options(op)?;
                Rows::Kv(self.storage().kv()?.list_iter(&options)?)
            }
        };
        let steps = op.get("steps").and_then(Json::as_array).cloned().unwrap_or_default();
        let mut out_steps = Vec::new();
        for step in &steps {
            let mut rec = Map::new();
            take_rows(
                &mut rows,
                step.get("take").and_then(Json::as_u64).unwrap_or(0),
                summary,
                &mut rec,
            );
            if let Some(subs) = step.get("ops").and_then(Json::as_array) {
                let mut results = Vec::new();
                for sub in subs {
                    results.push(self.run_op(sub, Scope::Event, None).await?);
                }
                rec.insert("ops".into(), Json::Array(results));
            }
            out_steps.push(Json::Object(rec));
        }
        let mut out = Map::new();
        out.insert("steps".into(), Json::Array(out_steps));
        if op.get("drain").and_then(Json::as_bool) != Some(false) {
            let mut rest = Map::new();
            take_rows(&mut rows, u64::MAX, summary, &mut rest);
            out.insert("rest".into(), Json::Object(rest));
        }
        Ok(Done::settled(Ok(Json::Object(out))))
    }

    /// `call`: a method called with an exact argument list. Rust's types rule out the calls
    /// JavaScript's bindings refuse by type (no argument, a number for a key); those answer
    /// `Unsupported` and are listed in the skip file.
    fn call(&mut self, op: &Json) -> Result<Done, Flow> {
        let method = op.get("method").and_then(Json::as_str).unwrap_or("");
        let target = op.get("target").and_then(Json::as_str).unwrap_or("storage");
        let args = op.get("args").and_then(Json::as_array).cloned().unwrap_or_default();
        let string = |i: usize| args.get(i).and_then(Json::as_str).map(str::to_owned);
        let storage = self.storage().clone();
        match (target, method, args.len()) {
            ("storage", "get", 1) if string(0).is_some() => {
                let key = string(0).unwrap_or_default();
                Ok(Done::op(storage.get::<Value>(&key), |v| value_json(v.as_ref(), false)))
            }
            ("storage", "put", 1) if string(0).is_some() => {
                let key = string(0).unwrap_or_default();
                Ok(Done::op(storage.put(&key, &Value::Undefined), |()| undefined()))
            }
            ("kv", "get", 1) if string(0).is_some() => {
                let key = string(0).unwrap_or_default();
                let v: Option<Value> = storage.kv()?.get(&key)?;
                Ok(Done::Now(value_json(v.as_ref(), false)))
            }
            ("sql", "exec", 1) => {
                if self.class == Class::Kv {
                    return Err(JsError::new("Error", SQL_NOT_ENABLED).into());
                }
                // JavaScript turns the query into a string first (42 → "42").
                let query = match &args[0] {
                    Json::String(s) => s.clone(),
                    other => js_string(other)?,
                };
                let mut cursor = storage.sql()?.exec(&query, &[])?;
                Ok(Done::Now(cursor_result(&mut cursor, "toArray")?))
            }
            _ => Err(unsupported(format!("{target}.{method} with {} arguments", args.len()))),
        }
    }
}
