//! A chat room object: messages in SQL, presence in KV, every event one turn on the object
//! runtime. Run with `cargo run -p durable-storage --example chat_room [DIR]`.

// A program, not a library: it reports on standard output.
#![allow(clippy::print_stdout)]

use durable_storage::txn::Error;
use durable_storage::{Actor, ListOptions, Namespace, NamespaceOptions, ObjectHandle, params};

/// The room's code lives in the events sent to it with `call`.
struct Room;
impl Actor for Room {}

/// Someone joins: presence is a KV entry, and a system message is posted.
async fn join(room: &ObjectHandle<Room>, who: &'static str) -> Result<(), Error> {
    room.call(move |ctx| async move {
        let storage = ctx.storage();
        storage.put(&format!("presence:{who}"), &true); // committed when the turn ends
        post_in_turn(storage, "system", &format!("{who} joined"))
    })
    .await?
}

/// Someone leaves: the presence entry goes.
async fn leave(room: &ObjectHandle<Room>, who: &'static str) -> Result<(), Error> {
    room.call(move |ctx| async move {
        let storage = ctx.storage();
        storage.delete(&format!("presence:{who}")).await?;
        post_in_turn(storage, "system", &format!("{who} left"))
    })
    .await?
}

fn post_in_turn(storage: &durable_storage::Storage, author: &str, body: &str) -> Result<(), Error> {
    let sql = storage.sql()?;
    sql.exec(
        "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, author TEXT, body TEXT)",
        &[],
    )?;
    sql.exec("INSERT INTO messages (author, body) VALUES (?, ?)", &params![author, body])?;
    Ok(())
}

/// A message: one turn, its SQL insert committed when the turn ends.
async fn post(
    room: &ObjectHandle<Room>,
    author: &'static str,
    body: &'static str,
) -> Result<(), Error> {
    room.call(move |ctx| async move { post_in_turn(ctx.storage(), author, body) }).await?
}

/// Who is here (a KV prefix list) and the last `n` messages (SQL), read in one turn.
async fn snapshot(room: &ObjectHandle<Room>, n: i64) -> Result<(Vec<String>, Vec<String>), Error> {
    room.call(move |ctx| async move {
        let storage = ctx.storage();
        let here: Vec<(String, bool)> = storage
            .list(&ListOptions::new().prefix("presence:"))
            .await?;
        let here = here.into_iter().map(|(k, _)| k["presence:".len()..].to_owned()).collect();
        let mut lines = Vec::new();
        let recent = storage.sql()?.exec(
            "SELECT author, body FROM (SELECT * FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id",
            &params![n],
        )?;
        for row in recent {
            let row = row?;
            lines.push(format!("<{}> {}", row.get::<String>("author")?, row.get::<String>("body")?));
        }
        Ok((here, lines))
    })
    .await?
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("durable-chat-room-example"), Into::into);
    let ns = Namespace::open(&dir, NamespaceOptions::default())?;
    let room = ns.object("room-42", |_| Room)?;
    join(&room, "ada").await?;
    join(&room, "grace").await?;
    post(&room, "ada", "hello, room").await?;
    post(&room, "grace", "hi ada").await?;
    leave(&room, "ada").await?;
    let (here, lines) = snapshot(&room, 5).await?;
    println!("here now: {here:?}");
    for line in lines {
        println!("{line}");
    }
    println!("room stored in {}", ns.path_of("room-42").display());
    Ok(())
}
