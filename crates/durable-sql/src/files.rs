//! The files of one database (`<db>`, `<db>-wal`, `<db>-shm`, `<db>-journal`), making a
//! folder's entries durable, and the lock files that keep a second writer out: the one place
//! that knows SQLite's file names and how the project locks and syncs files.

use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The write-ahead log of the database at `db`: `<db>-wal`.
pub fn wal_path(db: &Path) -> PathBuf {
    suffixed(db, "-wal")
}

/// The WAL index (shared memory) of the database at `db`: `<db>-shm`.
pub fn shm_path(db: &Path) -> PathBuf {
    suffixed(db, "-shm")
}

/// Every file SQLite may keep for the database at `db`: the database, its WAL, its WAL
/// index and its rollback journal.
pub fn all_paths(db: &Path) -> [PathBuf; 4] {
    [db.to_path_buf(), wal_path(db), shm_path(db), suffixed(db, "-journal")]
}

/// Makes the entries of `dir` durable (files created, renamed or deleted in it): an fsync of
/// the folder. Does nothing where folders cannot be synced (not Unix).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Opens (creating it if needed) the lock file at `path` and takes an exclusive lock on it,
/// held for as long as the returned file lives (the operating system lets go of it when the
/// process dies, however it dies). `Ok(None)`: another process, or another handle in this
/// one, holds the lock. Other failures (the folder is missing, no permission) are errors,
/// never reported as "locked".
pub fn try_lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_sqlite() {
        let db = Path::new("data/room.sqlite");
        assert_eq!(wal_path(db), Path::new("data/room.sqlite-wal"));
        assert_eq!(shm_path(db), Path::new("data/room.sqlite-shm"));
        assert_eq!(all_paths(db)[3], Path::new("data/room.sqlite-journal"));
    }

    #[test]
    fn a_lock_is_held_until_its_file_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let held = try_lock(&path).unwrap().expect("free");
        assert!(try_lock(&path).unwrap().is_none(), "held by the first handle");
        drop(held);
        assert!(try_lock(&path).unwrap().is_some(), "free again");
        // A lock that cannot even be created is an error, not "locked".
        assert!(try_lock(&dir.path().join("missing/LOCK")).is_err());
    }

    #[test]
    fn syncing_a_folder_that_is_not_there_fails() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        sync_dir(Path::new("")).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
