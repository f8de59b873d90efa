//! Issue 19: one error type for object code. Every layer's error converts into
//! `durable_storage::Error` with its runtime message unchanged, and `ObjectHandle::try_call`
//! flattens a handler's error and the event's into it.

use std::time::{Duration, SystemTime};

use durable_storage::{Actor, Backend, Error, NamespaceOptions, txn};

use crate::support::{Dir, rt};

struct Room;

impl Actor for Room {}

/// `from` converts into the facade's error with the same `Display`.
fn check_into<E: Into<Error> + std::fmt::Display>(from: E, message: &str) {
    assert_eq!(from.to_string(), message);
    let into: Error = from.into();
    assert_eq!(into.to_string(), message);
}

#[test]
fn every_layers_error_converts_with_its_message_unchanged() {
    check_into(
        durable_sql::Error::NoResults,
        "Expected exactly one result from SQL query, but got no results.",
    );
    check_into(durable_kv::Error::LimitNotPositive, "List limit must be positive.");
    check_into(durable_backend::Error::Backend { message: "disk on fire".into() }, "disk on fire");
    check_into(
        txn::Error::AlarmTimeNotPositive,
        "setAlarm() cannot be called with an alarm time <= 0",
    );
    check_into(
        durable_pitr::Error::from(durable_pitr::BookmarkError::Malformed { bookmark: "x".into() }),
        "Invalid bookmark: \"x\" is not a bookmark.",
    );
    // The object's own errors join them, shown as they are.
    check_into(Error::other("no such user"), "no such user");
    let io = Error::other(std::io::Error::other("socket closed"));
    assert_eq!(io.to_string(), "socket closed");
    assert!(io.as_storage().is_none());
    // SQL and KV errors land where the turn layer keeps them, so its questions still work.
    let sql: Error = durable_sql::Error::Conversion { from: "text", to: "i64" }.into();
    assert_eq!(sql.as_storage().map(txn::Error::js_name), Some("TypeError"));
}

#[test]
fn try_call_lets_one_handler_use_question_mark_on_every_layer() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::default());
        let room = ns.object("lobby", |_| Room).unwrap();
        let at = SystemTime::now() + Duration::from_secs(3600);
        let (posts, last, alarm, bookmark) = room
            .try_call(move |ctx| async move {
                let storage = ctx.storage();
                let sql = storage.sql()?; // durable_txn::Error
                sql.exec("CREATE TABLE posts(body TEXT)", &[])?; // durable_sql::Error
                sql.exec("INSERT INTO posts VALUES ('hi'), ('there')", &[])?;
                storage.kv()?.put("last", "there")?; // durable_kv::Error
                storage.set_alarm(at).await?; // alarms
                let bookmark = storage.current_bookmark().await?; // PITR
                let posts: i64 = sql.exec("SELECT count(*) FROM posts", &[])?.one()?;
                let last: Option<String> = storage.get("last").await?; // async KV
                Ok((posts, last, storage.get_alarm().await?, bookmark))
            })
            .await
            .unwrap();
        assert_eq!((posts, last.as_deref()), (2, Some("there")));
        let at_ms = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(alarm, Some(at_ms));
        assert_eq!(bookmark.len(), 55, "a bookmark: {bookmark}");

        // A storage error in the handler comes back as itself, with the runtime's message.
        let e = room
            .try_call(|ctx| async move {
                ctx.storage().sql()?.exec("SELECT * FROM nope", &[])?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no such table: nope: SQLITE_ERROR");
        assert!(matches!(e, Error::Storage(txn::Error::Sql(_))), "{e:?}");
        let e = room
            .try_call(|ctx| async move {
                let kv = ctx.storage().kv()?;
                let options = durable_storage::ListOptions::new().limit(0);
                kv.list::<String>(&options)?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "List limit must be positive.");

        // The handler's own error, unchanged.
        let e = room
            .try_call(|_ctx| async move { Err::<(), _>(Error::other("the room is full")) })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "the room is full");

        // An error of the event itself (the object was reset under it) is the same type.
        let e = room
            .try_call(|ctx| async move {
                ctx.abort(Some("closing the room"));
                tokio::task::yield_now().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "closing the room");
        assert!(e.as_storage().is_some_and(txn::Error::resets_object), "{e:?}");
        // The object goes on, fresh, with what was committed.
        let posts: i64 = room
            .try_call(|ctx| async move {
                Ok(ctx.storage().sql()?.exec("SELECT count(*) FROM posts", &[])?.one()?)
            })
            .await
            .unwrap();
        assert_eq!(posts, 2);
    });
}

#[test]
fn try_call_on_a_kv_backed_object_reports_the_runtimes_refusals() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::new().backend(Backend::Kv));
        let room = ns.object("old", |_| Room).unwrap();
        let e = room
            .try_call(|ctx| async move {
                ctx.storage().put("k", &1).await?;
                ctx.storage().current_bookmark().await?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "This Durable Object's storage back-end does not implement point-in-time recovery."
        );
    });
}
