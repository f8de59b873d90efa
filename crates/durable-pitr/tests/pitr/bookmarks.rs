//! Bookmark refusals: malformed strings, one-character typos, other objects' bookmarks, and
//! the error messages the object's code sees.

use durable_pitr::{BookmarkError, Error};

use super::support::Env;

#[tokio::test]
async fn typos_other_objects_and_garbage_are_refused() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    let good = archiver.current_bookmark().unwrap();
    assert_eq!(good.len(), durable_pitr::BOOKMARK_LEN);
    // Every one-character change is refused: syntax or check value.
    let alphabet = b"0123456789abcdefF-x";
    for i in 0..good.len() {
        for &c in alphabet {
            let mut bytes = good.clone().into_bytes();
            if bytes[i] == c {
                continue;
            }
            bytes[i] = c;
            let typo = String::from_utf8(bytes).unwrap();
            let err = archiver.on_next_session_restore_bookmark(&typo).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Bookmark(
                        BookmarkError::Malformed { .. } | BookmarkError::Foreign { .. }
                    )
                ),
                "{typo}: {err}"
            );
        }
    }
    for garbage in ["", "not-a-bookmark", &good.to_uppercase(), &good[1..], &format!("{good}0")] {
        let err = archiver.on_next_session_restore_bookmark(garbage).unwrap_err();
        assert_eq!(err.to_string(), format!("Invalid bookmark: \"{garbage}\" is not a bookmark."));
    }
    // Another object's bookmark (another history) is refused.
    let other = Env::new();
    let (odb, oarch) = other.open().await;
    odb.exec("CREATE TABLE t(x)", &[]).unwrap();
    odb.commit().unwrap();
    let foreign = oarch.current_bookmark().unwrap();
    let err = archiver.on_next_session_restore_bookmark(&foreign).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Invalid bookmark: \"{foreign}\" does not belong to this Durable Object.")
    );
    // None of this recorded a restore: the next open changes nothing.
    drop((archiver, db));
    let (_db, archiver) = env.open().await;
    assert_eq!(archiver.status().epoch, 0);
    assert_eq!(archiver.current_bookmark().unwrap(), good);
}

#[tokio::test]
async fn bookmarks_older_than_the_window_are_refused() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    let old = archiver.current_bookmark().unwrap();
    env.clock.advance(30 * super::support::DAY + 1);
    let err = archiver.on_next_session_restore_bookmark(&old).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Bookmark \"{old}\" is outside the point-in-time recovery window of 30 days.")
    );
}

/// Fuzz: arbitrary strings (and mutations of a real bookmark) given to the bookmark parser
/// through every call that takes one: never a panic, never a restore recorded, and the
/// object keeps working.
#[test]
fn arbitrary_bookmark_strings_are_refused_without_a_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let env = Env::new();
    let (db, archiver) = rt.block_on(env.open());
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    let good = archiver.current_bookmark().unwrap();
    let before = archiver.status();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(5_000);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let strategy = prop_oneof![
        any::<String>(),
        "[0-9a-fA-F-]{0,70}",
        (0..good.len(), any::<char>()).prop_map({
            let good = good.clone();
            move |(i, c)| {
                let mut chars: Vec<char> = good.chars().collect();
                chars[i] = c;
                chars.into_iter().collect::<String>()
            }
        }),
    ];
    runner
        .run(&strategy, |candidate| {
            if candidate != good {
                prop_assert!(archiver.on_next_session_restore_bookmark(&candidate).is_err());
                prop_assert!(rt.block_on(archiver.image_at(&candidate)).is_err());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(archiver.status().epoch, before.epoch, "no restore was recorded");
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    db.commit().unwrap();
    assert!(archiver.current_bookmark().unwrap() > good);
}
