//! Layering and tidy checks: dependency edges point down the layer table, durable-sql and
//! durable-kv stay free of tokio, libraries do not print, and every Rust file opens with a
//! `//!` line.
//!
//! Dependencies are read from `cargo metadata`, so every way of writing a dependency table
//! (inline, dotted, `[dependencies.x]`, target-specific) counts the same.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

/// What each workspace crate may depend on inside the workspace (ARCHITECTURE.md, "Bird's
/// eye view").
const ALLOWED: &[(&str, &[&str])] = &[
    ("durable-sql", &[]),
    ("durable-kv", &["durable-sql"]),
    ("durable-backend", &["durable-sql", "durable-kv"]),
    ("durable-txn", &["durable-sql", "durable-kv", "durable-backend"]),
    ("durable-pitr", &["durable-sql"]),
    (
        "durable-storage",
        &["durable-sql", "durable-kv", "durable-backend", "durable-txn", "durable-pitr"],
    ),
    ("durable-cli", &["durable-storage"]),
    // Example programs: users of the facade, like any program outside the workspace.
    ("durable-chat-server", &["durable-storage"]),
    // Test infrastructure: an S3 server for the tests, depending on no layer.
    ("durable-s3-server", &[]),
    (
        "durable-conformance",
        &[
            "durable-sql",
            "durable-kv",
            "durable-backend",
            "durable-txn",
            "durable-pitr",
            "durable-storage",
        ],
    ),
    ("xtask", &[]),
];

/// Test infrastructure any crate may depend on, optionally (turned on only by a test feature
/// such as `s3-tests`), without that being a layer edge.
const TEST_INFRA: &[&str] = &["durable-s3-server"];

/// The crates that know nothing of tokio (DESIGN.md): they do not depend on it in any
/// table, and nothing they link (their normal dependencies, transitively) does.
const NO_TOKIO: &[&str] = &["durable-sql", "durable-kv"];

/// Runs `cargo metadata --format-version 1` with `args` in `root` (the cargo that runs xtask,
/// from `CARGO`); its parsed output.
pub fn cargo_metadata(root: &Path, args: &[&str]) -> Result<Json, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("cargo metadata failed ({}): {}", out.status, stderr.trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: bad JSON: {e}"))
}

fn str_of<'a>(v: &'a Json, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn array_of<'a>(v: &'a Json, key: &str) -> &'a [Json] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

/// The workspace's packages in `metadata` (`cargo metadata` output, with or without
/// `--no-deps`).
fn workspace_packages(metadata: &Json) -> Vec<&Json> {
    let members: Vec<&str> =
        array_of(metadata, "workspace_members").iter().filter_map(Json::as_str).collect();
    array_of(metadata, "packages").iter().filter(|p| members.contains(&str_of(p, "id"))).collect()
}

/// The problems with the direct dependencies (normal, dev and build) of the workspace's
/// packages in `metadata`: edges inside the workspace that the layer table does not allow,
/// packages missing from the table, and tokio under a crate of [`NO_TOKIO`].
pub fn dependency_problems(metadata: &Json) -> Vec<String> {
    let packages = workspace_packages(metadata);
    let internal: Vec<&str> = packages.iter().map(|p| str_of(p, "name")).collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = str_of(package, "name");
        let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
            problems.push(format!("{name}: not in the layer table (xtask/src/tidy.rs)"));
            continue;
        };
        for dep in array_of(package, "dependencies") {
            let dep_name = str_of(dep, "name");
            let kind = match dep["kind"].as_str() {
                Some(kind) => format!(" ({kind})"),
                None => String::new(),
            };
            // A dev-dependency on itself only turns on the crate's own test features.
            let itself = dep_name == name && kind == " (dev)";
            let test_infra =
                TEST_INFRA.contains(&dep_name) && dep["optional"].as_bool() == Some(true);
            if internal.contains(&dep_name)
                && !allowed.contains(&dep_name)
                && !itself
                && !test_infra
            {
                problems
                    .push(format!("{name} depends on {dep_name}{kind}, a layer it may not use"));
            }
            if dep_name == "tokio" && NO_TOKIO.contains(&name) {
                problems.push(format!("{name} depends on tokio{kind}; it knows nothing of tokio"));
            }
        }
    }
    problems
}

/// The crates of [`NO_TOKIO`] that reach tokio through other crates' normal dependencies, in
/// `metadata` from `cargo metadata` with its dependency graph resolved (`resolve`). Direct
/// edges are [`dependency_problems`]' to report. Features are those of the whole workspace,
/// so an optional dependency that another crate turns on counts too.
pub fn tokio_problems(metadata: &Json) -> Vec<String> {
    let names: HashMap<&str, &str> = array_of(metadata, "packages")
        .iter()
        .map(|p| (str_of(p, "id"), str_of(p, "name")))
        .collect();
    // Each package's normal dependencies (a dependency may be normal and dev at once).
    let normal: HashMap<&str, Vec<&str>> = array_of(&metadata["resolve"], "nodes")
        .iter()
        .map(|node| {
            let deps = array_of(node, "deps")
                .iter()
                .filter(|d| array_of(d, "dep_kinds").iter().any(|k| k["kind"].is_null()))
                .map(|d| str_of(d, "pkg"))
                .collect();
            (str_of(node, "id"), deps)
        })
        .collect();
    let mut problems = Vec::new();
    for root in workspace_packages(metadata) {
        let root_name = str_of(root, "name");
        if !NO_TOKIO.contains(&root_name) {
            continue;
        }
        // Breadth first, so the path reported is a shortest one.
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([str_of(root, "id")]);
        while let Some(id) = queue.pop_front() {
            for &dep in normal.get(id).map_or(&[][..], Vec::as_slice) {
                if parent.contains_key(dep) || dep == str_of(root, "id") {
                    continue;
                }
                parent.insert(dep, id);
                if names.get(dep) != Some(&"tokio") {
                    queue.push_back(dep);
                    continue;
                }
                let mut path = vec![dep];
                while let Some(&up) = parent.get(path[path.len() - 1]) {
                    path.push(up);
                }
                if path.len() > 2 {
                    let shown: Vec<&str> =
                        path.iter().rev().map(|&id| names.get(id).copied().unwrap_or(id)).collect();
                    problems.push(format!(
                        "{root_name} reaches tokio through its dependencies ({}); it knows \
                         nothing of tokio",
                        shown.join(" -> ")
                    ));
                }
            }
        }
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && n != "cases") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The problems in the Rust files under the package folders `dirs` (shown relative to
/// `root`): a file that does not open with a `//!` line, a library that prints.
pub fn source_problems(root: &Path, dirs: &[PathBuf]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(dir, &mut files);
    }
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{shown}: does not open with a //! line"));
        }
        let is_library = shown.starts_with("crates/")
            && shown.contains("/src/")
            && !shown.ends_with("main.rs")
            && !shown.contains("/bin/")
            && !shown.starts_with("crates/durable-cli/");
        if is_library {
            for (i, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for mac in ["println!", "print!(", "eprintln!", "eprint!(", "dbg!("] {
                    if code.contains(mac) {
                        problems.push(format!("{shown}:{}: libraries do not print ({mac})", i + 1));
                    }
                }
            }
        }
    }
    problems
}

/// Every problem found in the workspace at `root`, one line each.
pub fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut dirs = Vec::new();
    match cargo_metadata(root, &["--no-deps"]) {
        Ok(metadata) => {
            problems.extend(dependency_problems(&metadata));
            for package in workspace_packages(&metadata) {
                if let Some(dir) = Path::new(str_of(package, "manifest_path")).parent() {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        Err(e) => problems.push(e),
    }
    // The resolved graph, for this machine's platform only: cargo then needs no other
    // platform's packages.
    let resolved =
        host_triple().and_then(|host| cargo_metadata(root, &["--filter-platform", &host]));
    match resolved {
        Ok(metadata) => problems.extend(tokio_problems(&metadata)),
        Err(e) => problems.push(e),
    }
    problems.extend(source_problems(root, &dirs));
    problems
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().map_err(|e| format!("rustc -vV: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV: no host line".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_workspace_keeps_its_layers_and_tidiness() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let problems = check(root);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// A dependency: its name and its kind (`None` for a normal one).
    type Dep<'a> = (&'a str, Option<&'a str>);

    /// `cargo metadata --no-deps` output for packages given as (name, dependencies).
    fn no_deps(packages: &[(&str, &[Dep<'_>])]) -> Json {
        let packages: Vec<Json> = packages
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Json> =
                    deps.iter().map(|(dep, kind)| json!({"name": dep, "kind": kind})).collect();
                json!({"name": name, "id": format!("{name} 0.1.0"), "dependencies": deps})
            })
            .collect();
        let members: Vec<&Json> = packages.iter().map(|p| &p["id"]).collect();
        json!({"packages": packages, "workspace_members": members})
    }

    #[test]
    fn a_wrong_edge_in_any_table_is_reported() {
        let metadata = no_deps(&[
            ("durable-sql", &[("durable-kv", Some("dev")), ("rusqlite", None)]),
            ("durable-kv", &[("durable-sql", None), ("tokio", Some("dev"))]),
            ("durable-txn", &[("durable-storage", Some("build")), ("tokio", None)]),
            ("durable-storage", &[("durable-txn", None)]),
            ("durable-extra", &[]),
        ]);
        assert_eq!(
            dependency_problems(&metadata),
            [
                "durable-sql depends on durable-kv (dev), a layer it may not use",
                "durable-kv depends on tokio (dev); it knows nothing of tokio",
                "durable-txn depends on durable-storage (build), a layer it may not use",
                "durable-extra: not in the layer table (xtask/src/tidy.rs)",
            ]
        );
    }

    #[test]
    fn tokio_reached_through_normal_dependencies_is_reported() {
        // durable-kv -> durable-sql -> helper -> tokio (normal all the way): reported.
        // durable-sql's route is reported too; dev and build edges are not followed.
        let node = |id: &str, deps: &[(&str, &[Option<&str>])]| {
            let deps: Vec<Json> = deps
                .iter()
                .map(|(pkg, kinds)| {
                    let kinds: Vec<Json> =
                        kinds.iter().map(|k| json!({"kind": k, "target": null})).collect();
                    json!({"name": pkg, "pkg": pkg, "dep_kinds": kinds})
                })
                .collect();
            json!({"id": id, "deps": deps})
        };
        let packages: Vec<Json> = ["durable-sql", "durable-kv", "helper", "tester", "tokio"]
            .iter()
            .map(|n| json!({"id": n, "name": n}))
            .collect();
        let metadata = json!({
            "packages": packages,
            "workspace_members": ["durable-sql", "durable-kv"],
            "resolve": {"nodes": [
                node("durable-kv", &[("durable-sql", &[None])]),
                node("durable-sql", &[("helper", &[None]), ("tester", &[Some("dev")])]),
                node("helper", &[("tokio", &[Some("build"), None])]),
                node("tester", &[("tokio", &[None])]),
                node("tokio", &[]),
            ]},
        });
        assert_eq!(
            tokio_problems(&metadata),
            [
                "durable-sql reaches tokio through its dependencies (durable-sql -> helper -> \
                 tokio); it knows nothing of tokio",
                "durable-kv reaches tokio through its dependencies (durable-kv -> durable-sql -> \
                 helper -> tokio); it knows nothing of tokio",
            ]
        );
        // Once the edge to tokio is a build dependency only, nothing is reported.
        let mut build_only = metadata.clone();
        build_only["resolve"]["nodes"][2] = node("helper", &[("tokio", &[Some("build")])]);
        assert_eq!(tokio_problems(&build_only), Vec::<String>::new());
    }

    #[test]
    fn printing_libraries_and_files_without_an_overview_are_reported() {
        let dir = tempdir();
        let krate = dir.join("crates/durable-sql");
        std::fs::create_dir_all(krate.join("src")).unwrap();
        std::fs::write(krate.join("src/lib.rs"), "//! x\npub fn f() { println!(\"hi\"); }\n")
            .unwrap();
        std::fs::write(krate.join("src/quiet.rs"), "pub fn g() {}\n").unwrap();
        let problems = source_problems(&dir, &[krate]);
        assert_eq!(
            problems.iter().filter(|p| p.contains("libraries do not print")).count(),
            1,
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("quiet.rs: does not open")), "{problems:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
