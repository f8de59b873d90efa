//! A point-in-time restore: take a bookmark, make a mistake, restore the object to the
//! bookmark (applied when it next opens), then undo the restore. Run with
//! `cargo run -p durable-storage --example restore [DIR]`.

// A program, not a library: it reports on standard output.
#![allow(clippy::print_stdout)]

use durable_storage::{Namespace, NamespaceOptions, StorageHandle, params};

fn count(room: &StorageHandle) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(room.sql()?.exec("SELECT count(*) FROM messages", &[])?.one()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("durable-restore-example"), Into::into);
    // Objects archive their history to `DIR/archive` by default.
    let ns = Namespace::open(&dir, NamespaceOptions::default())?;
    let room = ns.storage("room")?;
    room.delete_all().wait()?;
    let sql = room.sql()?;
    sql.exec("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)", &[])?;
    for body in ["hello", "how are you?", "fine, thanks"] {
        sql.exec("INSERT INTO messages (body) VALUES (?)", &params![body])?;
    }
    room.sync().wait()?;
    let before = room.current_bookmark()?;
    println!("{} messages at bookmark {before}", count(&room)?);

    sql.exec("DELETE FROM messages", &[])?;
    room.sync().wait()?;
    println!("oops: {} messages", count(&room)?);

    // Scheduled now, applied atomically the next time the object opens.
    let undo = room.on_next_session_restore_bookmark(&before)?;
    drop(room);
    let room = ns.storage("room")?;
    println!("after the restore: {} messages (undo bookmark {undo})", count(&room)?);

    // The restore is itself undoable: the undo bookmark returns to the deletion.
    room.on_next_session_restore_bookmark(&undo)?;
    drop(room);
    let room = ns.storage("room")?;
    println!("after undoing it: {} messages", count(&room)?);
    Ok(())
}
