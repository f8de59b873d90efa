//! `durable objects`: every stored object with its size (in human units; bytes in JSON),
//! last write time and bookmark, and with a shared archive its owner (the node holding its
//! lease).

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

/// The node other than this folder's that holds object `name`'s lease, or last held it:
/// `NODE at ADDRESS`, with `(lease ended)` when it is not held now. `None` when objects are
/// not leased, or this folder's node holds it, or no node ever did. An inspecting command
/// leaves such an object alone: opening it would take it over (or fail with `LeaseHeld`).
pub(crate) fn held_elsewhere(
    ns: &durable_storage::Namespace,
    name: &str,
) -> Result<Option<String>> {
    let Some(me) = ns.node_id() else { return Ok(None) };
    Ok(ns.owner(name)?.filter(|o| o.node != me).map(|o| {
        let at = o.address.map(|a| format!(" at {a}")).unwrap_or_default();
        let ended = if o.live { "" } else { " (lease ended)" };
        format!("{}{at}{ended}", o.node)
    }))
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
        // With a shared archive, an object another node owns (or owned last) is not
        // opened here, which would take it over: its row names the owner instead.
        if let Some(owner) = held_elsewhere(&ns, &name)? {
            rows.push((name, None, written, None, Some(owner)));
            continue;
        }
        let (size, bookmark, owner) = match ns.storage(&name) {
            Ok(handle) => {
                let owner = ns.node_id();
                (Some(handle.database_size()?), handle.current_bookmark().ok(), owner)
            }
            Err(durable_storage::Error::Pitr(durable_storage::pitr::Error::Archive(
                durable_storage::pitr::ArchiveError::LeaseHeld { node, address, .. },
            ))) => {
                let at = address.map(|a| format!(" at {a}")).unwrap_or_default();
                (None, None, Some(format!("{node}{at}")))
            }
            Err(e) => return Err(e.into()),
        };
        rows.push((name, size, written, bookmark, owner));
    }
    let leased = ns.node_id().is_some();
    if env.out.json {
        let docs: Vec<_> = rows
            .iter()
            .map(|(name, size, written, bookmark, owner)| {
                json!({
                    "name": name,
                    "size": size,
                    "last_write": written.map(format_ms),
                    "last_write_ms": written,
                    "bookmark": bookmark,
                    "owner": owner,
                })
            })
            .collect();
        return env.out.json(&serde_json::Value::Array(docs));
    }
    if rows.is_empty() {
        return env.out.line(format!("no objects in {}", env.data.display()));
    }
    let mut header = ["object", "size", "last write", "bookmark"].map(String::from).to_vec();
    if leased {
        header.push("owner".into());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, size, written, bookmark, owner)| {
            let mut row = vec![
                name.clone(),
                size.map_or("-".into(), |s| HumanBytes(s).to_string()),
                written.map_or("-".into(), format_ms),
                bookmark.clone().unwrap_or_else(|| "-".into()),
            ];
            if leased {
                row.push(owner.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    env.out.table(&header, &cells)
}
