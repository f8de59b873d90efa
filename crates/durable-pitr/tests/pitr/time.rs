//! `bookmark_for_time` against a reference model under a fake clock: the latest commit at or
//! before t, stable for a past t, monotone in t, and the window's edges.

use proptest::prelude::*;

use durable_pitr::{Error, TimeError};

use super::support::{DAY, Env, T0};

/// (seq, ts) of a bookmark string.
fn fields(b: &str) -> (u64, u64) {
    (u64::from_str_radix(&b[9..25], 16).unwrap(), u64::from_str_radix(&b[26..38], 16).unwrap())
}

async fn check(moves: Vec<(i64, bool)>, probes: Vec<u32>) {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    archiver.capture().unwrap();
    // The model: every position's (seq, ts), with ts = max(clock, previous ts).
    let mut model: Vec<(u64, u64)> = Vec::new();
    let (seq0, ts0) = fields(&archiver.current_bookmark().unwrap());
    assert_eq!(seq0, 1);
    model.push((0, T0 as u64)); // INIT
    model.push((seq0, ts0));
    for (i, (advance, commit)) in moves.iter().enumerate() {
        env.clock.advance(*advance);
        if *commit {
            db.exec("INSERT INTO t VALUES (?)", &[(i as i64).into()]).unwrap();
            db.commit().unwrap();
            let ts = (env.clock.now_ms() as u64).max(model.last().unwrap().1);
            model.push((model.last().unwrap().0 + 1, ts));
        }
        if i % 5 == 0 {
            archiver.upload().await.unwrap();
        }
        if i % 7 == 0 {
            archiver.seal().unwrap();
        }
    }
    let now = env.clock.now_ms();
    let first = model[0].1 as i64 - 2_000;
    let span = (now - first).max(1);
    let mut answers = Vec::new();
    let mut ts: Vec<i64> = probes.iter().map(|p| first + (*p as i64 % (span + 1))).collect();
    ts.push(now);
    ts.sort();
    for t in ts {
        let got = archiver.bookmark_for_time(t).await.unwrap();
        let expected =
            model.iter().rev().find(|(_, ts)| *ts as i64 <= t).copied().unwrap_or(model[0]);
        assert_eq!(fields(&got), expected, "time {t}");
        // Asked twice: the same.
        assert_eq!(archiver.bookmark_for_time(t).await.unwrap(), got);
        answers.push((t, got));
    }
    // Monotone in t.
    for w in answers.windows(2) {
        assert!(w[0].1 <= w[1].1);
    }
    // Stable after more commits (which get later times).
    env.clock.advance(10);
    db.exec("INSERT INTO t VALUES (0)", &[]).unwrap();
    db.commit().unwrap();
    archiver.upload().await.unwrap();
    for (t, got) in answers {
        assert_eq!(archiver.bookmark_for_time(t).await.unwrap(), got, "time {t} changed");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_reference_model(
        moves in proptest::collection::vec((-400i64..3_000, proptest::bool::weighted(0.7)), 1..60),
        probes in proptest::collection::vec(any::<u32>(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(check(moves, probes));
    }
}

#[tokio::test]
async fn window_edges() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    env.clock.advance(40 * DAY);
    let now = env.clock.now_ms();
    let (seq, _) = fields(&archiver.bookmark_for_time(now - 30 * DAY).await.unwrap());
    assert_eq!(seq, 1, "exactly 30 days back is inside the window");
    let err = archiver.bookmark_for_time(now - 30 * DAY - 1).await.unwrap_err();
    assert!(matches!(err, Error::Time(TimeError::OutOfWindow { .. })), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "getBookmarkForTime(): the time must be within the last 30 days (got {} ms since the epoch).",
            now - 30 * DAY - 1
        )
    );
    // A second of clock skew means "now"; more is the future.
    let current = archiver.current_bookmark().unwrap();
    assert_eq!(archiver.bookmark_for_time(now + 1_000).await.unwrap(), current);
    let err = archiver.bookmark_for_time(now + 1_001).await.unwrap_err();
    assert!(matches!(err, Error::Time(TimeError::InFuture { .. })), "{err}");
}

#[tokio::test]
async fn a_time_before_the_first_commit_is_the_empty_start() {
    let env = Env::new();
    env.clock.set(T0);
    let (db, archiver) = env.open().await;
    env.clock.advance(5_000);
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    let b = archiver.bookmark_for_time(T0 - 60_000).await.unwrap();
    assert_eq!(fields(&b).0, 0);
    let empty = archiver.image_at(&b).await.unwrap();
    let (page_size, pages) = (4096, empty.len() / 4096);
    assert!(
        pages <= 1 && empty.len() % page_size == 0,
        "the empty database: {} bytes",
        empty.len()
    );
}
