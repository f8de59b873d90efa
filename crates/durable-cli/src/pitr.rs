//! Point-in-time recovery on the command line: `bookmark`, `restore` and `archive`.

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use durable_storage::pitr::{ArchiveConfig, local_store};
use durable_storage::{Archive, Namespace, StorageHandle};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::error::{Error, Result};
use crate::time::{format_ms, now_ms, parse_time_ms};
use crate::{ArchiveLocation, Env};

/// An archive subcommand.
#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// What is archived for each object (or one): epoch, newest commit, segments, snapshots.
    Status {
        /// Only this object.
        object: Option<String>,
    },
    /// Uploads sealed history, merges old segments and drops what the 30-day window no
    /// longer needs, for each object (or one).
    Prune {
        /// Only this object.
        object: Option<String>,
    },
}

/// The namespace's archive setting for `--archive`.
pub fn archive_option(env_data: &std::path::Path, location: &ArchiveLocation) -> Archive {
    match location {
        ArchiveLocation::Local(dir) if *dir == env_data.join("archive") => Archive::Local,
        ArchiveLocation::Local(dir) => {
            let dir = dir.clone();
            Archive::Custom(Arc::new(move |db_path| {
                let name = db_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(ArchiveConfig::new(local_store(&dir)?, name))
            }))
        }
    }
}

/// A spinner on stderr while `f` runs (hidden when stderr is not a terminal).
fn with_spinner<T>(message: String, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    let result = f();
    bar.finish_and_clear();
    result
}

/// A bar on stderr over `names` (hidden when stderr is not a terminal).
fn per_object<T>(
    names: &[String],
    mut f: impl FnMut(&String) -> Result<T>,
) -> Result<Vec<(String, T)>> {
    let bar = ProgressBar::new(names.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let mut out = Vec::new();
    for name in names {
        bar.set_message(name.clone());
        let result = f(name);
        bar.inc(1);
        match result {
            Ok(v) => out.push((name.clone(), v)),
            Err(e) => {
                bar.finish_and_clear();
                return Err(Error::msg(format!("{name}: {e}")));
            }
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Runs `durable bookmark OBJECT [--at TIME]`.
pub fn bookmark(env: &mut Env, object: &str, at: Option<&str>) -> Result<()> {
    let ns = env.namespace()?;
    let handle = env.existing(&ns, object)?;
    let (bookmark, at_ms) = match at {
        None => (handle.current_bookmark()?, None),
        Some(text) => {
            let t = parse_time_ms(text, now_ms())?;
            (handle.bookmark_for_time(t)?, Some(t))
        }
    };
    if env.out.json {
        return env.out.json(&json!({
            "object": object,
            "bookmark": bookmark,
            "at": at_ms.map(format_ms),
        }));
    }
    env.out.line(bookmark)
}

fn target(handle: &StorageHandle, bookmark: Option<&str>, at: Option<&str>) -> Result<String> {
    match (bookmark, at) {
        (Some(b), None) => Ok(b.to_owned()),
        (None, Some(text)) => Ok(handle.bookmark_for_time(parse_time_ms(text, now_ms())?)?),
        _ => Err(Error::msg("give a BOOKMARK or --at TIME (one of them)")),
    }
}

/// Runs `durable restore OBJECT (BOOKMARK | --at TIME)`: schedules the restore, applies
/// it by reopening the object, and prints the bookmark that undoes it.
pub fn restore(
    env: &mut Env,
    object: &str,
    bookmark: Option<&str>,
    at: Option<&str>,
) -> Result<()> {
    let ns = env.namespace()?;
    let handle = env.existing(&ns, object)?;
    let target = target(&handle, bookmark, at)?;
    let undo = handle.on_next_session_restore_bookmark(&target)?;
    drop(handle);
    let current = with_spinner(format!("restoring {object}"), || {
        let reopened = reopen(&ns, object)?;
        Ok(reopened.current_bookmark()?)
    })?;
    if env.out.json {
        return env.out.json(&json!({
            "object": object,
            "restored_to": target,
            "undo": undo,
            "current": current,
        }));
    }
    env.out.line(format!("restored {object:?} to {target}"))?;
    env.out.line(format!("undo with: durable restore {object:?} {undo}"))
}

/// Opens `object` again once its previous handle has closed.
fn reopen(ns: &Namespace, object: &str) -> Result<StorageHandle> {
    Ok(ns.storage(object)?)
}

/// Runs `durable archive ...`.
pub fn archive(env: &mut Env, command: ArchiveCommand) -> Result<()> {
    let ns = env.namespace()?;
    let names = |object: Option<String>| -> Result<Vec<String>> {
        match object {
            Some(name) => {
                env.existing(&ns, &name)?;
                Ok(vec![name])
            }
            None => Ok(ns.names()?),
        }
    };
    match command {
        ArchiveCommand::Status { object } => {
            let names = names(object)?;
            let rows = per_object(&names, |name| Ok(ns.storage(name)?.archive_status()))?;
            if env.out.json {
                let docs: Vec<_> = rows
                    .iter()
                    .map(|(name, s)| match s {
                        None => json!({ "object": name, "archived": false }),
                        Some(s) => json!({
                            "object": name,
                            "archived": true,
                            "epoch": s.epoch,
                            "seq": s.seq,
                            "local_segments": s.local_segments,
                            "archived_segments": s.archived_segments,
                            "snapshots": s.snapshots,
                            "open_segment_bytes": s.open_segment_bytes,
                        }),
                    })
                    .collect();
                return env.out.json(&serde_json::Value::Array(docs));
            }
            let header =
                ["object", "epoch", "commits", "local segments", "archived segments", "snapshots"]
                    .map(String::from);
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|(name, s)| match s {
                    None => vec![name.clone(), "-".into(), "no archive".into()],
                    Some(s) => vec![
                        name.clone(),
                        s.epoch.to_string(),
                        s.seq.to_string(),
                        s.local_segments.to_string(),
                        s.archived_segments.to_string(),
                        s.snapshots.to_string(),
                    ],
                })
                .collect();
            env.out.table(&header, &cells)
        }
        ArchiveCommand::Prune { object } => {
            let names = names(object)?;
            let done = per_object(&names, |name| Ok(ns.storage(name)?.maintain_archive()?))?;
            if env.out.json {
                let list: Vec<&String> = done.iter().map(|(n, _)| n).collect();
                return env.out.json(&json!({ "maintained": list }));
            }
            env.out.line(format!(
                "uploaded, merged and pruned the history of {} object(s)",
                done.len()
            ))
        }
    }
}
