//! An HTTP chat server the way a Durable Objects author writes one: one object per room, a
//! Worker-like router that sends each request to its room's object (`Namespace::object`,
//! then `ObjectHandle::call`), replies released only once the room's writes are durable (the
//! output gate), and an alarm that summarizes a room once it has been idle.
//!
//! ```text
//! cargo run -p durable-chat-server -- DIR                          # serve, talk to itself, exit
//! cargo run -p durable-chat-server -- DIR --serve 127.0.0.1:8787   # serve until Ctrl-C
//!
//! POST /rooms/{room}/messages  {"author": "ada", "text": "hi"}  -> 201 {"id": 1, ...}
//! GET  /rooms/{room}/messages                                  -> 200 [{"id": 1, ...}]
//! GET  /rooms/{room}/summary                                   -> 200 {...} or 404
//! ```
//!
//! Without `--serve` it starts on 127.0.0.1:0, sends itself a few requests over plain HTTP/1.1,
//! waits for the idle alarm's summary, prints what it got and exits 0 (CI runs it).
// A program, not a library: it reports on standard output.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use durable_storage::Row;
use durable_storage::txn::Error as StorageError;
use durable_storage::{
    Actor, AlarmInfo, Context, HandlerError, Namespace, NamespaceOptions, ObjectHandle, Storage,
    params,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a room waits without a message before its alarm summarizes it (short, so that
/// the self-test sees it).
const IDLE_MS: i64 = 300;

/// The room's code. Its state is all in storage: messages in SQL, the summary in KV.
struct Room;

/// A message as the room stores and serves it.
#[derive(Serialize, Deserialize, Debug)]
struct Message {
    id: i64,
    author: String,
    text: String,
    at_ms: i64,
}

/// A new message, as clients send it.
#[derive(Deserialize)]
struct Post {
    author: String,
    text: String,
}

/// What the idle alarm leaves of a room: a typed KV value.
#[derive(Serialize, Deserialize, Debug)]
struct Summary {
    messages: i64,
    authors: Vec<String>,
    last: Option<String>,
    summarized_at_ms: i64,
}

fn schema(storage: &Storage) -> Result<(), StorageError> {
    storage.sql()?.exec(
        "CREATE TABLE IF NOT EXISTS messages \
         (id INTEGER PRIMARY KEY, author TEXT NOT NULL, text TEXT NOT NULL, at_ms INTEGER)",
        &[],
    )?;
    Ok(())
}

impl Actor for Room {
    /// The room has been quiet for `IDLE_MS`: keep a summary, drop the messages. A message
    /// that came in since the alarm was set moved it later, so this runs only when idle.
    async fn alarm(
        self: Arc<Self>,
        ctx: Context<Self>,
        _info: AlarmInfo,
    ) -> Result<(), HandlerError> {
        let storage = ctx.storage();
        schema(storage)?;
        let sql = storage.sql()?;
        let mut authors = Vec::new();
        for row in sql.exec("SELECT DISTINCT author FROM messages ORDER BY author", &[])? {
            authors.push(row?.get::<String>("author")?);
        }
        let messages = sql.exec("SELECT count(*) AS n FROM messages", &[])?.one::<Row>()?;
        let last = sql.exec("SELECT text FROM messages ORDER BY id DESC LIMIT 1", &[])?.next();
        let summary = Summary {
            messages: messages.get("n")?,
            authors,
            last: last.transpose()?.map(|row| row.get::<String>("text")).transpose()?,
            summarized_at_ms: storage.clock().now_ms(),
        };
        // One turn: the summary and the deletion commit together, or neither does.
        storage.put("summary", &summary);
        sql.exec("DELETE FROM messages", &[])?;
        Ok(())
    }
}

/// What the router shares: the namespace that holds every room, and the rooms running.
#[derive(Clone)]
struct App {
    ns: Namespace,
    /// Each room's object stays running while the server does (the runtime keeps a Durable
    /// Object in memory while it gets requests; this example never evicts one).
    rooms: Arc<Mutex<HashMap<String, ObjectHandle<Room>>>>,
}

impl App {
    /// The room's object, started on first use: the same one for every request after that
    /// (`env.ROOMS.get(env.ROOMS.idFromName(room))` in a Worker).
    fn room(&self, name: &str) -> Result<ObjectHandle<Room>, (StatusCode, String)> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        let room = self
            .ns
            .object(name, |_| Room)
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        rooms.insert(name.to_owned(), room.clone());
        Ok(room)
    }
}

/// The reply when the room's object failed or lost the request: nothing was stored.
fn unavailable(e: StorageError) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
}

fn bad_request(e: StorageError) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, e.to_string())
}

/// `POST /rooms/{room}/messages`: one event on the room's object. The insert and the alarm
/// commit when the event's turn ends, and `call` resolves only once that commit is durable
/// (the output gate): a 201 is never sent for a message a crash could lose. A failed commit
/// resets the object and fails the call: the client gets a 503, not a false 201.
async fn post_message(
    State(app): State<App>,
    Path(room): Path<String>,
    Json(post): Json<Post>,
) -> Result<(StatusCode, Json<Message>), (StatusCode, String)> {
    let object = app.room(&room)?;
    let stored = object
        .call(move |ctx| async move {
            let storage = ctx.storage();
            schema(storage)?;
            let now = storage.clock().now_ms();
            let row = storage
                .sql()?
                .exec(
                    "INSERT INTO messages (author, text, at_ms) VALUES (?, ?, ?) RETURNING id",
                    &params![post.author.as_str(), post.text.as_str(), now],
                )?
                .one::<Row>()?;
            // Each message moves the idle alarm later, and the room is active again: the
            // summary of an earlier idle spell goes until the alarm writes the next one.
            storage.delete("summary");
            storage.set_alarm(now + IDLE_MS);
            Ok::<_, StorageError>(Message {
                id: row.get("id")?,
                author: post.author,
                text: post.text,
                at_ms: now,
            })
        })
        .await
        .map_err(unavailable)?
        .map_err(bad_request)?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `GET /rooms/{room}/messages`: the room's messages, oldest first.
async fn list_messages(
    State(app): State<App>,
    Path(room): Path<String>,
) -> Result<Json<Vec<Message>>, (StatusCode, String)> {
    let object = app.room(&room)?;
    let messages = object
        .call(|ctx| async move {
            let storage = ctx.storage();
            schema(storage)?;
            let mut out = Vec::new();
            for row in storage.sql()?.exec("SELECT * FROM messages ORDER BY id", &[])? {
                let row = row?;
                out.push(Message {
                    id: row.get("id")?,
                    author: row.get("author")?,
                    text: row.get("text")?,
                    at_ms: row.get("at_ms")?,
                });
            }
            Ok::<_, StorageError>(out)
        })
        .await
        .map_err(unavailable)?
        .map_err(bad_request)?;
    Ok(Json(messages))
}

/// `GET /rooms/{room}/summary`: what the idle alarm left, or 404 while the room is active.
async fn summary(
    State(app): State<App>,
    Path(room): Path<String>,
) -> Result<Json<Summary>, (StatusCode, String)> {
    let object = app.room(&room)?;
    let summary = object
        .call(|ctx| async move { ctx.storage().get::<Summary>("summary").await })
        .await
        .map_err(unavailable)?
        .map_err(bad_request)?;
    summary.map(Json).ok_or((StatusCode::NOT_FOUND, "no summary yet: the room is active".into()))
}

fn router(app: App) -> Router {
    Router::new()
        .route("/rooms/{room}/messages", get(list_messages).post(post_message))
        .route("/rooms/{room}/summary", get(summary))
        .with_state(app)
}

/// One HTTP/1.1 request over a fresh connection: the status and the body as JSON (or as a
/// JSON string when it is not JSON). A client this small keeps the example's build small.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of the headers")?;
    let status: u16 = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    Ok((status, body))
}

/// Talks to the server at `addr` as two clients would, and checks what comes back.
async fn self_test(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    for (room, author, text) in [
        ("lobby", "ada", "hello, lobby"),
        ("lobby", "grace", "hi ada"),
        ("garden", "ada", "anyone in the garden?"),
        ("lobby", "ada", "see you"),
    ] {
        let post = json!({ "author": author, "text": text });
        let (status, reply) =
            request(addr, "POST", &format!("/rooms/{room}/messages"), Some(post)).await?;
        // The reply exists only because the write is durable: `call` held it until then.
        println!(
            "POST /rooms/{room}/messages -> {status} {reply} (sent after the commit was durable)"
        );
        if status != 201 {
            return Err(format!("POST answered {status}: {reply}").into());
        }
        ids.push((room, reply["id"].as_i64().ok_or("no id")?));
    }
    // Each room is its own object, with its own database: ids count per room (the garden's
    // message did not take a lobby id).
    let lobby: Vec<i64> =
        ids.iter().filter(|(room, _)| *room == "lobby").map(|(_, id)| *id).collect();
    if lobby != [lobby[0], lobby[0] + 1, lobby[0] + 2] {
        return Err(format!("unexpected ids: {ids:?}").into());
    }
    let (status, lobby) = request(addr, "GET", "/rooms/lobby/messages", None).await?;
    println!("GET /rooms/lobby/messages -> {status} {lobby}");
    if lobby.as_array().map(Vec::len) != Some(3) {
        return Err(format!("the lobby holds {lobby}").into());
    }
    let (status, reply) =
        request(addr, "POST", "/rooms/lobby/messages", Some(json!({ "text": "no author" })))
            .await?;
    println!("POST without an author -> {status} {reply}");
    if status != 422 {
        return Err(format!("a bad message was answered {status}").into());
    }
    // The rooms go quiet: after IDLE_MS each one's alarm summarizes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let summary = loop {
        let (status, summary) = request(addr, "GET", "/rooms/lobby/summary", None).await?;
        if status == 200 {
            break summary;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the lobby's idle alarm did not run within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("GET /rooms/lobby/summary -> {summary}");
    if summary["messages"] != 3 || summary["authors"] != json!(["ada", "grace"]) {
        return Err(format!("unexpected summary {summary}").into());
    }
    let (_, lobby) = request(addr, "GET", "/rooms/lobby/messages", None).await?;
    println!("GET /rooms/lobby/messages -> {lobby} (summarized and cleared by the alarm)");
    if lobby != json!([]) {
        return Err(format!("the summarized lobby still holds {lobby}").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .map_or_else(|| std::env::temp_dir().join("durable-chat-server-example"), Into::into);
    let serve = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--serve"), Some(addr)) => Some(addr.parse::<SocketAddr>()?),
        _ => return Err("usage: chat-server [DIR] [--serve ADDR]".into()),
    };
    let ns = Namespace::open(&dir, NamespaceOptions::default())?;
    // Alarms of every room, including those that came due while the server was down.
    let scheduler = ns.run_alarms(|_, _| Room)?;
    let listener = TcpListener::bind(serve.unwrap_or(([127, 0, 0, 1], 0).into())).await?;
    let addr = listener.local_addr()?;
    println!("chat server on http://{addr}, rooms in {}", dir.display());
    let app = router(App { ns: ns.clone(), rooms: Arc::default() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let outcome = match serve {
        Some(_) => tokio::signal::ctrl_c().await.map_err(Into::into),
        None => self_test(addr).await,
    };
    let _ = stop.send(());
    // The server and its router are gone, and with them every room's handle.
    server.await??;
    drop(scheduler);
    // Every room closes with its last writes synced and the folder's lock released.
    ns.close().await?;
    outcome?;
    println!("rooms stored: {:?}", Namespace::open(&dir, NamespaceOptions::default())?.names()?);
    Ok(())
}
