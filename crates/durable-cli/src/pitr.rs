//! Point-in-time recovery on the command line: `bookmark`, `history`, `restore` and
//! `archive`.

use std::time::Duration;

use clap::Subcommand;
use durable_storage::{Archive, ArchiveStore, ImageAt, Namespace, StorageHandle, pitr};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::Env;
use crate::error::{Error, Result};
use crate::time::{TimeArg, format_ms, now_ms};

/// An archive subcommand.
#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// What is archived for each object (or one): epoch, newest commit, segments, snapshots.
    Status {
        /// Only this object.
        object: Option<String>,
    },
    /// Rebuilds retained points of each object's history (or one object's) and runs SQLite's
    /// `PRAGMA integrity_check` on each rebuilt database. With more retained points than
    /// `--sample`, checks a sample: the newest, the oldest and evenly spaced points between;
    /// `--all` checks every one. Also reads each object's archive listing: history a later
    /// lease term superseded is counted (expected after a takeover), while positions missing
    /// from the chain (gaps) and segments straddling a later term's start fail the object.
    /// An object another live node holds (or that this data folder never held) is checked
    /// from the archive alone, without its lease: its listing and its newest archived point.
    /// Exits non-zero when any point or object fails.
    Verify {
        /// Only this object.
        object: Option<String>,
        /// Check every retained point, however many.
        #[arg(long)]
        all: bool,
        /// How many points to check per object without `--all`.
        #[arg(long, value_name = "N", default_value_t = 64)]
        sample: usize,
    },
    /// Uploads sealed history, merges old segments and drops what the 30-day window no
    /// longer needs, for each object (or one).
    Prune {
        /// Only this object.
        object: Option<String>,
    },
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
pub fn bookmark(env: &mut Env, object: &str, at: Option<TimeArg>) -> Result<()> {
    let ns = env.namespace()?;
    let handle = env.existing(&ns, object)?;
    let (bookmark, at_ms) = match at {
        None => (handle.current_bookmark()?, None),
        Some(at) => {
            let t = at.resolve_ms(now_ms());
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

/// Runs `durable history OBJECT [--limit N] [--before BOOKMARK]`.
pub fn history(env: &mut Env, object: &str, limit: usize, before: Option<&str>) -> Result<()> {
    let ns = env.namespace()?;
    let handle = env.existing(&ns, object)?;
    let entries = handle.history(before, limit)?;
    // One more point exists when the oldest shown is not the start of what is retained.
    let more = match entries.last() {
        Some(last) => !handle.history(Some(&last.bookmark), 1)?.is_empty(),
        None => false,
    };
    if env.out.json {
        let points: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "epoch": e.epoch,
                    "time": format_ms(e.time_ms as i64),
                    "time_ms": e.time_ms,
                    "bookmark": e.bookmark,
                    "size": e.db_bytes,
                    "kind": e.kind.as_str(),
                })
            })
            .collect();
        let next = if more { entries.last().map(|e| e.bookmark.clone()) } else { None };
        return env.out.json(&json!({ "object": object, "commits": points, "next": next }));
    }
    let header = ["seq", "time", "size", "kind", "bookmark"].map(String::from);
    let cells: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                format_ms(e.time_ms as i64),
                HumanBytes(e.db_bytes).to_string(),
                e.kind.as_str().to_owned(),
                e.bookmark.clone(),
            ]
        })
        .collect();
    env.out.table(&header, &cells)?;
    if more && let Some(last) = entries.last() {
        env.out.line(format!(
            "more: durable history {object:?} --limit {limit} --before {}",
            last.bookmark
        ))?;
    }
    Ok(())
}

/// The points `verify` checks out of `n` (newest first): all of them, or `sample` spread
/// evenly from the newest (index 0) to the oldest (index `n - 1`).
fn sample_points(n: usize, sample: usize, all: bool) -> Vec<usize> {
    if all || n <= sample {
        return (0..n).collect();
    }
    if sample <= 1 {
        return vec![0];
    }
    let mut out: Vec<usize> = (0..sample).map(|i| i * (n - 1) / (sample - 1)).collect();
    out.dedup();
    out
}

/// Opens a rebuilt database image in memory and runs `PRAGMA integrity_check`.
fn integrity_check(image: &[u8]) -> std::result::Result<(), String> {
    use durable_storage::sql::rusqlite::{Connection, MAIN_DB};
    if image.is_empty() {
        return Ok(()); // an empty database
    }
    let mut bytes = image.to_vec();
    // Bytes 18 and 19 say WAL mode; an in-memory copy reads as a rollback-journal database.
    if bytes.len() >= 20 && bytes[18] == 2 && bytes[19] == 2 {
        bytes[18] = 1;
        bytes[19] = 1;
    }
    let mut conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    conn.deserialize_read_exact(MAIN_DB, &bytes[..], bytes.len(), true)
        .map_err(|e| format!("does not open: {e}"))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<std::result::Result<Vec<String>, _>>())
        .map_err(|e| e.to_string())?;
    if rows.len() == 1 && rows[0] == "ok" { Ok(()) } else { Err(rows.join("; ")) }
}

/// One point that failed verification.
struct Failure {
    object: String,
    seq: u64,
    bookmark: String,
    reason: String,
}

/// What the archive listing of one object says (`Namespace::archive_check`).
#[derive(Default)]
struct Listing {
    /// Superseded history: counted, not a failure.
    superseded: usize,
    /// Segments straddling the start of a later lease term: failures.
    straddling: Vec<String>,
    /// Positions missing from the chain: failures.
    gaps: Vec<std::ops::RangeInclusive<u64>>,
}

impl Listing {
    fn read(ns: &Namespace, name: &str) -> std::result::Result<Listing, String> {
        let check = ns.archive_check(name).map_err(|e| format!("archive does not read: {e}"))?;
        Ok(Listing {
            superseded: check.superseded.len(),
            straddling: check.straddling,
            gaps: check.gaps,
        })
    }

    /// One line per problem.
    fn problems(&self) -> Vec<String> {
        let gaps = self.gaps.iter().map(|g| {
            let seqs = if g.start() == g.end() {
                format!("seq {}", g.start())
            } else {
                format!("seqs {}-{}", g.start(), g.end())
            };
            format!("{seqs} missing from the archive (a gap in the chain of segments)")
        });
        let straddling = self
            .straddling
            .iter()
            .map(|k| format!("{k} straddles the start of a later lease term (a broken chain)"));
        gaps.chain(straddling).collect()
    }
}

/// Verifies an object from the archive alone, without opening it (no lease is taken): its
/// listing, and its newest archived point rebuilt and checked.
fn verify_from_archive(
    ns: &Namespace,
    name: &str,
    listings: &mut std::collections::HashMap<String, Listing>,
) -> std::result::Result<(), String> {
    listings.insert(name.to_owned(), Listing::read(ns, name)?);
    let (_, image) = ns.archived_image(name, None).map_err(|e| format!("does not rebuild: {e}"))?;
    integrity_check(&image)
}

/// Runs `durable archive verify [OBJECT] [--all] [--sample N]`.
fn verify(env: &mut Env, ns: &Namespace, names: &[String], all: bool, sample: usize) -> Result<()> {
    // First the plan: every object's retained points and the ones to check.
    let mut plan = Vec::new();
    let mut failures = Vec::new();
    let mut listings = std::collections::HashMap::new();
    // Objects checked from the archive alone, with why.
    let mut archive_only = std::collections::HashMap::new();
    for name in names {
        // An object this data folder does not hold, or that another live node holds, is
        // checked from the archive alone: no lease is taken, nothing is written.
        let opened = match ns.exists(name) {
            false => Err(match ns.owner(name)? {
                Some(owner) if owner.live => format!("node {} holds it", owner.node),
                _ => "not in this data folder".to_owned(),
            }),
            true => match ns.storage(name) {
                Ok(handle) => Ok(handle),
                Err(durable_storage::Error::Pitr(pitr::Error::Archive(
                    pitr::ArchiveError::LeaseHeld { node, .. },
                ))) => Err(format!("node {node} holds it")),
                Err(e) => return Err(e.into()),
            },
        };
        let handle = match opened {
            Ok(handle) => handle,
            Err(why) => {
                if let Err(reason) = verify_from_archive(ns, name, &mut listings) {
                    failures.push(Failure {
                        object: name.clone(),
                        seq: 0,
                        bookmark: "-".into(),
                        reason,
                    });
                }
                archive_only.insert(name.clone(), why);
                continue;
            }
        };
        if handle.archive_status().is_none() {
            plan.push((name.clone(), 0, Vec::new()));
            continue;
        }
        match Listing::read(ns, name) {
            Ok(listing) => {
                listings.insert(name.clone(), listing);
            }
            Err(reason) => failures.push(Failure {
                object: name.clone(),
                seq: 0,
                bookmark: "-".into(),
                reason,
            }),
        }
        let entries = match handle.history(None, usize::MAX) {
            Ok(entries) => entries,
            Err(e) => {
                // The history itself does not read: that object fails as a whole.
                failures.push(Failure {
                    object: name.clone(),
                    seq: 0,
                    bookmark: "-".into(),
                    reason: format!("history does not read: {e}"),
                });
                plan.push((name.clone(), 0, Vec::new()));
                continue;
            }
        };
        let picked: Vec<_> = sample_points(entries.len(), sample, all)
            .into_iter()
            .map(|i| (entries[i].seq, entries[i].bookmark.clone()))
            .collect();
        plan.push((name.clone(), entries.len(), picked));
    }
    let total: u64 = plan.iter().map(|(_, _, p)| p.len() as u64).sum();
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed}") {
        bar.set_style(style);
    }
    let mut reports: Vec<(String, usize, usize)> =
        archive_only.keys().map(|name| (name.clone(), 1, 1)).collect();
    for (name, retained, points) in &plan {
        let handle = ns.storage(name)?;
        for (seq, bookmark) in points {
            bar.set_message(format!("{name} #{seq}"));
            let outcome = match handle.image_at(bookmark) {
                Ok(image) => integrity_check(&image),
                Err(e) => Err(format!("does not rebuild: {e}")),
            };
            if let Err(reason) = outcome {
                failures.push(Failure {
                    object: name.clone(),
                    seq: *seq,
                    bookmark: bookmark.clone(),
                    reason,
                });
            }
            bar.inc(1);
        }
        reports.push((name.clone(), *retained, points.len()));
    }
    bar.finish_and_clear();
    // In the order the objects were named, wherever they were checked.
    reports.sort_by_key(|(name, _, _)| names.iter().position(|n| n == name));
    let none = Listing::default();
    let listing = |name: &String| listings.get(name).unwrap_or(&none);
    let object_ok = |name: &String| {
        let l = listing(name);
        l.gaps.is_empty() && l.straddling.is_empty() && failures.iter().all(|f| f.object != *name)
    };
    let failed_objects = reports.iter().filter(|(name, _, _)| !object_ok(name)).count();
    if env.out.json {
        let objects: Vec<_> = reports
            .iter()
            .map(|(name, retained, checked)| {
                let failed: Vec<_> = failures
                    .iter()
                    .filter(|f| f.object == *name)
                    .map(|f| json!({ "seq": f.seq, "bookmark": f.bookmark, "error": f.reason }))
                    .collect();
                let l = listing(name);
                let gaps: Vec<_> = l
                    .gaps
                    .iter()
                    .map(|g| json!({ "first_seq": g.start(), "last_seq": g.end() }))
                    .collect();
                json!({
                    "object": name,
                    "archive_only": archive_only.get(name),
                    "retained": retained,
                    "checked": checked,
                    "ok": object_ok(name),
                    "failures": failed,
                    "superseded": l.superseded,
                    "straddling": l.straddling,
                    "gaps": gaps,
                })
            })
            .collect();
        env.out.json(&json!({ "objects": objects, "ok": failed_objects == 0 }))?;
    } else {
        let header = ["object", "retained", "checked", "superseded", "result"].map(String::from);
        let cells: Vec<Vec<String>> = reports
            .iter()
            .map(|(name, retained, checked)| {
                let bad = failures.iter().filter(|f| f.object == *name).count();
                let l = listing(name);
                let mut result = Vec::new();
                if !l.gaps.is_empty() {
                    result.push(format!("{} gap(s)", l.gaps.len()));
                }
                if !l.straddling.is_empty() {
                    result.push(format!("{} straddling", l.straddling.len()));
                }
                if bad > 0 {
                    result.push(format!("{bad} failed"));
                }
                let result = match (retained, result.is_empty()) {
                    (_, false) => result.join(", "),
                    (_, true) if archive_only.contains_key(name) => {
                        format!("ok (newest archived point; {})", archive_only[name])
                    }
                    (0, true) => "no archive".to_owned(),
                    _ => "ok".to_owned(),
                };
                let superseded = match listings.get(name) {
                    Some(l) => l.superseded.to_string(),
                    None => "-".to_owned(),
                };
                vec![name.clone(), retained.to_string(), checked.to_string(), superseded, result]
            })
            .collect();
        env.out.table(&header, &cells)?;
        for (name, _, _) in &reports {
            for problem in listing(name).problems() {
                env.out.line(format!("{name}: {problem}"))?;
            }
        }
        for f in &failures {
            env.out.line(format!("{} #{} {}: {}", f.object, f.seq, f.bookmark, f.reason))?;
        }
    }
    if failed_objects == 0 {
        return Ok(());
    }
    let mut what = Vec::new();
    if !failures.is_empty() {
        what.push(format!("{} of {total} checked point(s)", failures.len()));
    }
    let gaps: usize = listings.values().map(|l| l.gaps.len()).sum();
    if gaps > 0 {
        what.push(format!("{gaps} gap(s) in the archived history"));
    }
    let straddling: usize = listings.values().map(|l| l.straddling.len()).sum();
    if straddling > 0 {
        what.push(format!("{straddling} segment(s) straddling a later lease term"));
    }
    Err(Error::msg(format!("{failed_objects} object(s) failed verification: {}", what.join(", "))))
}

fn target(handle: &StorageHandle, bookmark: Option<&str>, at: Option<TimeArg>) -> Result<String> {
    match (bookmark, at) {
        (Some(b), None) => Ok(b.to_owned()),
        (None, Some(at)) => Ok(handle.bookmark_for_time(at.resolve_ms(now_ms()))?),
        _ => Err(Error::msg("give a BOOKMARK or --at TIME (one of them)")),
    }
}

/// Runs `durable restore OBJECT (BOOKMARK | --at TIME)`: schedules the restore, applies
/// it by reopening the object, and prints the bookmark that undoes it.
pub fn restore(
    env: &mut Env,
    object: &str,
    bookmark: Option<&str>,
    at: Option<TimeArg>,
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

/// Runs `durable export OBJECT [--at TIME | --bookmark B] --to FILE` (and `restore ...
/// --to FILE`): rebuilds the state from the archive alone and writes it to `to`.
pub fn export(
    env: &mut Env,
    object: &str,
    bookmark: Option<&str>,
    at: Option<TimeArg>,
    to: &std::path::Path,
) -> Result<()> {
    let store = match &env.archive {
        Archive::Store(store) => store.clone(),
        _ => ArchiveStore::folder(env.data.join("archive"))?,
    };
    let at = match (bookmark, at) {
        (Some(b), _) => ImageAt::Bookmark(b),
        (None, Some(t)) => ImageAt::Time(t.resolve_ms(now_ms())),
        (None, None) => ImageAt::Latest,
    };
    let (bookmark, image) =
        with_spinner(format!("rebuilding {object}"), || Ok(store.read_image(object, at)?))?;
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, &image)
        .and_then(|()| std::fs::rename(&tmp, to))
        .map_err(|e| Error::msg(format!("{}: {e}", to.display())))?;
    if env.out.json {
        return env.out.json(&json!({
            "object": object,
            "bookmark": bookmark,
            "file": to.display().to_string(),
            "size": image.len(),
        }));
    }
    env.out.line(format!(
        "wrote {} ({}): {object:?} at {bookmark}",
        to.display(),
        HumanBytes(image.len() as u64)
    ))
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
            // An object another node holds (or held last) is that node's to report:
            // opening it here would take it over.
            let rows = per_object(&names, |name| {
                Ok(match crate::objects::held_elsewhere(&ns, name)? {
                    Some(owner) => Err(owner),
                    None => Ok(ns.storage(name)?.archive_status()),
                })
            })?;
            if env.out.json {
                let docs: Vec<_> = rows
                    .iter()
                    .map(|(name, s)| match s {
                        Err(owner) => json!({ "object": name, "archived": true, "owner": owner }),
                        Ok(None) => json!({ "object": name, "archived": false }),
                        Ok(Some(s)) => json!({
                            "object": name,
                            "archived": true,
                            "epoch": s.epoch,
                            "seq": s.seq,
                            "local_segments": s.local_segments,
                            "archived_segments": s.archived_segments,
                            "snapshots": s.snapshots,
                            "open_segment_bytes": s.open_segment_bytes,
                            "uploaded_seq": s.uploaded_seq,
                            "pending": s.pending,
                            "lag_ms": s.lag_ms,
                            "last_error": s.last_error,
                            "term": s.term,
                        }),
                    })
                    .collect();
                return env.out.json(&serde_json::Value::Array(docs));
            }
            let header = [
                "object",
                "epoch",
                "commits",
                "local segments",
                "archived segments",
                "snapshots",
                "open segment",
                "not uploaded",
            ]
            .map(String::from);
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|(name, s)| match s {
                    Err(owner) => vec![name.clone(), "-".into(), format!("held by {owner}")],
                    Ok(None) => vec![name.clone(), "-".into(), "no archive".into()],
                    Ok(Some(s)) => vec![
                        name.clone(),
                        s.epoch.to_string(),
                        s.seq.to_string(),
                        s.local_segments.to_string(),
                        s.archived_segments.to_string(),
                        s.snapshots.to_string(),
                        HumanBytes(s.open_segment_bytes).to_string(),
                        match s.pending {
                            0 => "0".into(),
                            n => format!("{n} commits, {:.1} s", s.lag_ms as f64 / 1000.0),
                        },
                    ],
                })
                .collect();
            env.out.table(&header, &cells)
        }
        ArchiveCommand::Verify { object, all, sample } => {
            // An object of the archive that this data folder never held is verified too,
            // from the archive alone.
            let names = match object {
                Some(name) if !ns.exists(&name) && ns.owner(&name)?.is_some() => vec![name],
                object => names(object)?,
            };
            verify(env, &ns, &names, all, sample)
        }
        ArchiveCommand::Prune { object } => {
            let names = names(object)?;
            // Another node's objects are its to maintain (it does, in the background).
            let done = per_object(&names, |name| {
                Ok(match crate::objects::held_elsewhere(&ns, name)? {
                    Some(owner) => Some(owner),
                    None => {
                        ns.storage(name)?.maintain_archive()?;
                        None
                    }
                })
            })?;
            let maintained: Vec<&String> =
                done.iter().filter(|(_, o)| o.is_none()).map(|(n, _)| n).collect();
            let skipped: Vec<String> = done
                .iter()
                .filter_map(|(n, o)| o.as_ref().map(|o| format!("{n} (held by {o})")))
                .collect();
            if env.out.json {
                let elsewhere: serde_json::Map<String, serde_json::Value> = done
                    .iter()
                    .filter_map(|(n, o)| Some((n.clone(), json!(o.as_ref()?))))
                    .collect();
                return env
                    .out
                    .json(&json!({ "maintained": maintained, "held_elsewhere": elsewhere }));
            }
            env.out.line(format!(
                "uploaded, merged and pruned the history of {} object(s)",
                maintained.len()
            ))?;
            if !skipped.is_empty() {
                env.out.line(format!("left to their owners: {}", skipped.join(", ")))?;
            }
            Ok(())
        }
    }
}
