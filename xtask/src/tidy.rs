//! Layering and tidy checks: dependency edges point down the layer table, libraries do not
//! print, and every Rust file opens with a `//!` line.

use std::path::{Path, PathBuf};

/// What each internal crate may depend on (ARCHITECTURE.md, "Layers").
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
];

/// The internal crates a manifest depends on, in any dependency table (dev and build too).
pub fn internal_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
            // `[dependencies.durable-x]` tables name the crate in the header.
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']'))
                && let Some((_, dep)) = name.rsplit_once('.')
                && in_deps
                && dep.starts_with("durable-")
            {
                out.push(dep.to_owned());
            }
            continue;
        }
        if in_deps {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("");
            if name.starts_with("durable-") {
                out.push(name.to_owned());
            }
        }
    }
    out
}

fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            return Some(rest.trim_start_matches([' ', '=']).trim().trim_matches('"').into());
        }
    }
    None
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

/// Every problem found under `root`, one line each.
pub fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut packages = Vec::new();
    let crates = std::fs::read_dir(root.join("crates")).into_iter().flatten().flatten();
    for dir in crates.map(|e| e.path()).chain([root.join("tests")]) {
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let Some(name) = package_name(&manifest) else { continue };
        packages.push((dir.clone(), name.clone()));
        match ALLOWED.iter().find(|(n, _)| *n == name) {
            None => problems.push(format!("{name}: not in the layer table (xtask/src/tidy.rs)")),
            Some((_, allowed)) => {
                // A dev-dependency on itself only turns on the crate's own test features.
                for dep in internal_dependencies(&manifest).into_iter().filter(|d| *d != name) {
                    if !allowed.contains(&dep.as_str()) {
                        problems.push(format!("{name} depends on {dep}, a layer it may not use"));
                    }
                }
            }
        }
    }
    let mut files = Vec::new();
    for (dir, _) in &packages {
        rust_files(dir, &mut files);
    }
    rust_files(&root.join("xtask"), &mut files);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_keeps_its_layers_and_tidiness() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let problems = check(root);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn an_upward_edge_is_caught() {
        let dir = tempdir();
        let krate = dir.join("crates/durable-sql");
        std::fs::create_dir_all(krate.join("src")).unwrap();
        std::fs::write(
            krate.join("Cargo.toml"),
            "[package]\nname = \"durable-sql\"\n\n[dependencies]\ndurable-kv.workspace = true\n",
        )
        .unwrap();
        std::fs::write(krate.join("src/lib.rs"), "//! x\npub fn f() { println!(\"hi\"); }\n")
            .unwrap();
        let problems = check(&dir);
        assert!(
            problems.iter().any(|p| p.contains("durable-sql depends on durable-kv")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("libraries do not print")), "{problems:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dependency_tables_are_read_in_every_form() {
        let manifest = "[package]\nname = \"x\"\n[dependencies]\ndurable-sql.workspace = true\n\
                        serde = \"1\"\n[dev-dependencies]\ndurable-kv = { path = \"../kv\" }\n\
                        [dependencies.durable-txn]\npath = \"../txn\"\n";
        assert_eq!(internal_dependencies(manifest), ["durable-sql", "durable-kv", "durable-txn"]);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
