//! `durable objects`: every stored object with its size (in human units; bytes in JSON),
//! last write time and bookmark.

use std::path::Path;
use std::time::UNIX_EPOCH;

use indicatif::HumanBytes;
use serde_json::json;

use crate::Env;
use crate::error::Result;
use crate::time::format_ms;

/// The latest modification time of the object's files (database and WAL), in milliseconds.
fn last_write_ms(db: &Path) -> Option<i64> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db, Path::new(&wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
        .filter_map(|t| i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok())
        .max()
}

/// Lists the objects of the data directory.
pub fn run(env: &mut Env) -> Result<()> {
    if !env.data.exists() {
        if env.out.json {
            return env.out.json(&json!([]));
        }
        return env.out.line(format!("no objects: {} does not exist", env.data.display()));
    }
    let ns = env.namespace()?;
    let mut rows = Vec::new();
    for name in ns.names()? {
        let path = ns.path_of(&name);
        // Read the times before opening: opening may touch the files.
        let written = last_write_ms(&path);
        let handle = ns.storage(&name)?;
        let size = handle.database_size()?;
        let bookmark = handle.current_bookmark().ok();
        rows.push((name, size, written, bookmark));
    }
    if env.out.json {
        let docs: Vec<_> = rows
            .iter()
            .map(|(name, size, written, bookmark)| {
                json!({
                    "name": name,
                    "size": size,
                    "last_write": written.map(format_ms),
                    "last_write_ms": written,
                    "bookmark": bookmark,
                })
            })
            .collect();
        return env.out.json(&serde_json::Value::Array(docs));
    }
    if rows.is_empty() {
        return env.out.line(format!("no objects in {}", env.data.display()));
    }
    let header = ["object", "size", "last write", "bookmark"].map(String::from);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, size, written, bookmark)| {
            vec![
                name.clone(),
                HumanBytes(*size).to_string(),
                written.map_or("-".into(), format_ms),
                bookmark.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    env.out.table(&header, &cells)
}
