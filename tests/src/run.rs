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
use durable_storage::{Actor, Backend, Context, Namespace, NamespaceOptions, ObjectHandle};
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
    fn new(name: &str, message: impl Into<String>) -> JsError {
        JsError { name: name.into(), message: message.into() }
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

/// The object's code: the op interpreter runs inside its events; it keeps nothing in memory.
struct Oracle;

impl Actor for Oracle {}

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
    /// The handler threw: the results so far and what escaped.
    Uncaught { results: Vec<Json>, error: Json },
}

/// One event's interpreter state.
struct Event {
    ctx: Context<Oracle>,
    class: Class,
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
/// local archive for SQLite-backed objects), on the chosen backend.
fn open(
    class: Class,
    dir: &Path,
    name: &str,
) -> Result<(Namespace, ObjectHandle<Oracle>), JsError> {
    let backend = match class {
        Class::Sql => Backend::Sqlite,
        Class::Kv => Backend::Kv,
    };
    let ns = Namespace::open(dir, NamespaceOptions { backend, ..NamespaceOptions::default() })?;
    let object = ns.object(name, |_| Oracle)?;
    Ok((ns, object))
}

async fn run_class_events(script: &Json, class: Class, dir: &Path) -> Json {
    let name = script.get("name").and_then(Json::as_str).unwrap_or("object");
    let fail = |e: JsError| json!({"class": class.name(), "error": e.json()});
    let (mut ns, mut object) = match open(class, dir, name) {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let mut out = Vec::new();
    for request in requests(script) {
        if request.as_str() == Some("restart") {
            // The whole namespace goes and comes back on the same folder.
            drop(object);
            ns.close().await;
            (ns, object) = match open(class, dir, name) {
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
    ns.close().await;
    json!({"class": class.name(), "requests": out})
}

/// One request: one event on the object.
async fn run_request(object: &ObjectHandle<Oracle>, class: Class, ops: Vec<Json>) -> Json {
    let answer = object
        .call(move |ctx| async move {
            let mut event = Event { ctx, class, pending: Vec::new(), open_cursors: Vec::new() };
            event.run(ops).await
        })
        .await;
    match answer {
        Ok(Answer::Done(json)) => json,
        Ok(Answer::Uncaught { results, error }) => json!({"results": results, "uncaught": error}),
        // The object was reset while the event ran (an abort, a failed commit): the event's
        // results are lost, as the runtime loses them.
        Err(e) => {
            let mut uncaught = json!({"name": "Error", "message": e.to_string(), "remote": true});
            if matches!(e, durable_txn::Error::Aborted(_)) {
                uncaught["durableObjectReset"] = Json::Bool(true);
            }
            json!({"results": null, "uncaught": uncaught})
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
        let mut results = Vec::new();
        for op in &ops {
            let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
            if kind == "throwUncaught" {
                let message =
                    op.get("message").and_then(Json::as_str).unwrap_or("oracle: uncaught throw");
                return Answer::Uncaught { results, error: user_throw(message) };
            }
            match self.run_op(op, Scope::Event, None).await {
                Ok(result) => results.push(result),
                Err(Flow::Escape(e)) if e.name == "UserThrow" => {
                    return Answer::Uncaught { results, error: user_throw(&e.message) };
                }
                Err(Flow::Escape(e)) => {
                    let mut r = error_json(&e, false);
                    r.insert("escaped".into(), Json::Bool(true));
                    results.push(Json::Object(r));
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
        out.insert("results".into(), Json::Array(results));
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
            Flow::Abort(reason) => JsError::new("Error", reason),
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
            let value = to_value(v)?;
            if value != Value::Undefined {
                values.push((k.as_str(), value));
            }
        }
        return Ok(Done::op(target.put_many(&values), |()| undefined()));
    }
    let key = key_of(op)?;
    let value = value_of(op)?;
    if value == Value::Undefined {
        return Ok(Done::settled(Err(JsError::new(
            "TypeError",
            "put() called with undefined value.",
        ))));
    }
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
