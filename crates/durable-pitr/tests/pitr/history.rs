//! `Archiver::history`: every retained point, newest first, from the journal and the archive,
//! paged with `before`, and each point's size the size of the image it rebuilds to.

use durable_pitr::{HistoryEntry, PointKind};
use durable_sql::params;

use super::support::Env;

async fn all(archiver: &durable_pitr::Archiver) -> Vec<HistoryEntry> {
    archiver.history(None, usize::MAX).await.unwrap()
}

#[tokio::test]
async fn history_lists_journal_and_archive_newest_first_and_pages() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    archiver.capture().unwrap();
    for i in 0..12 {
        env.clock.advance(1_000);
        db.exec("INSERT INTO t VALUES (randomblob(?))", &params![3000 + i]).unwrap();
        db.commit().unwrap();
        archiver.capture().unwrap();
        if i % 4 == 3 {
            // Half the history goes to the archive, the rest stays in the journal.
            archiver.seal().unwrap();
            archiver.upload().await.unwrap();
        }
    }
    env.clock.advance(1_000);
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    db.commit().unwrap();
    assert!(archiver.status().archived_segments > 0, "{:?}", archiver.status());

    let points = all(&archiver).await;
    let head = archiver.status().seq;
    let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (0..=head).rev().collect::<Vec<_>>(), "every point, newest first");
    assert_eq!(points[0].bookmark, archiver.current_bookmark().unwrap());
    assert_eq!(points.last().unwrap().kind, PointKind::Init);
    assert!(points[..points.len() - 1].iter().all(|p| p.kind == PointKind::Commit));
    for pair in points.windows(2) {
        assert!(pair[0].time_ms >= pair[1].time_ms);
        assert!(pair[0].bookmark > pair[1].bookmark, "bookmarks sort in history order");
    }
    // A point's size is the size of the database it rebuilds to.
    for p in &points {
        let image = archiver.image_at(&p.bookmark).await.unwrap();
        assert_eq!(p.db_bytes, image.len() as u64, "seq {}", p.seq);
    }
    assert!(points[0].db_bytes > points[points.len() - 2].db_bytes);

    // Pages of 5, each starting before the last bookmark of the previous one.
    let mut paged = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = archiver.history(before.as_deref(), 5).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        before = Some(last.bookmark.clone());
        paged.extend(page);
    }
    assert_eq!(paged, points);
    assert!(archiver.history(None, 0).await.unwrap().is_empty());

    // After a restore the new epoch's first point is a restore; earlier points stay listed.
    let target = points[5].bookmark.clone();
    archiver.on_next_session_restore_bookmark(&target).unwrap();
    archiver.close().await.unwrap();
    drop(db);
    let (_db, archiver) = env.open().await;
    let after = all(&archiver).await;
    assert_eq!(after[0].kind, PointKind::Restore);
    assert_eq!(after[0].epoch, 1);
    assert_eq!(after[0].seq, head + 1);
    assert_eq!(after[0].db_bytes, points[5].db_bytes);
    assert_eq!(&after[1..], &points[..], "the archive alone gives the same history");
    archiver.close().await.unwrap();
}
