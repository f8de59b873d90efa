//! The command's environment: `DURABLE_DATA` and `DURABLE_ARCHIVE` for `--data` and
//! `--archive`, and the library's warnings on stderr (`-v`, `-q`, `RUST_LOG`).

use crate::support::Data;

#[test]
fn durable_data_and_durable_archive_stand_for_the_options() {
    let data = Data::new();
    let dir = data.path();
    let archive = data.root().join("history");
    let vars =
        [("DURABLE_DATA", dir.to_str().unwrap()), ("DURABLE_ARCHIVE", archive.to_str().unwrap())];
    let run = data.run_env(&["kv", "put", "o", "k", "1"], &vars);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(dir.join("o.sqlite").exists(), "DURABLE_DATA chose the data directory");
    assert!(archive.join("o.sqlite").is_dir(), "DURABLE_ARCHIVE chose the archive");
    assert!(!dir.join("archive").exists());
    // --data still works, and the default (./durable-data, under the current folder) is not
    // used when the variable is set.
    assert_eq!(data.ok(&["--archive", archive.to_str().unwrap(), "kv", "get", "o", "k"]), "1\n");
    assert!(!data.root().join("durable-data").exists());
    // An option on the command line wins over its variable.
    let other = data.root().join("other");
    let run = data.run_env(&["--data", other.to_str().unwrap(), "kv", "put", "p", "k", "2"], &vars);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(other.join("p.sqlite").exists());
    assert!(!dir.join("p.sqlite").exists());
    // `--help` names the variables.
    let help = data.ok(&["--help"]);
    assert!(
        help.contains("[env: DURABLE_DATA=") && help.contains("[env: DURABLE_ARCHIVE="),
        "{help}"
    );
}

/// A data directory whose archive holds a file that is none of the archive's: each open of
/// the object warns about it.
fn foreign_object_in_the_archive() -> Data {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    let seg = data.path().join("archive").join("o.sqlite").join("seg");
    std::fs::create_dir_all(&seg).unwrap();
    std::fs::write(seg.join("not-a-segment"), b"?").unwrap();
    data
}

const WARNING: &str = "ignoring a foreign object in the archive's seg/";
const DEBUG: &str = "object opened";

#[test]
fn the_library_s_warnings_reach_stderr_by_default_and_quiet_hides_them() {
    let data = foreign_object_in_the_archive();
    let run = data.run(&["archive", "status", "o"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("WARN") && run.stderr.contains(WARNING), "{run:?}");
    assert!(run.stderr.contains("not-a-segment"), "the event's fields are shown: {run:?}");
    assert!(!run.stderr.contains(DEBUG), "{run:?}");
    let run = data.run(&["-q", "archive", "status", "o"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "-q shows errors only");
    assert!(run.stdout.contains("o "), "{run:?}");
}

#[test]
fn verbose_and_rust_log_show_more() {
    let data = foreign_object_in_the_archive();
    let run = data.run(&["-v", "archive", "status", "o"]);
    assert!(run.stderr.contains(WARNING) && !run.stderr.contains(DEBUG), "{run:?}");
    let run = data.run(&["-vv", "archive", "status", "o"]);
    assert!(run.stderr.contains(WARNING) && run.stderr.contains(DEBUG), "{run:?}");
    // RUST_LOG refines the level: debug for one crate only.
    let dir = data.path();
    let args = ["--data", dir.to_str().unwrap(), "archive", "status", "o"];
    let run = data.run_env(&args, &[("RUST_LOG", "durable_storage=debug")]);
    assert!(run.stderr.contains(DEBUG) && run.stderr.contains(WARNING), "{run:?}");
    let run = data.run_env(&args, &[("RUST_LOG", "durable_pitr=error")]);
    assert!(!run.stderr.contains(WARNING), "{run:?}");
    let run = data.run_env(&args, &[("RUST_LOG", "debug")]);
    assert!(run.stderr.contains(DEBUG), "{run:?}");
    let run = data
        .run_env(&["-q", args[0], args[1], args[2], args[3], args[4]], &[("RUST_LOG", "debug")]);
    assert!(run.stderr.contains(DEBUG), "RUST_LOG's directives come after -q's level: {run:?}");
    // Without anything to say, stderr stays empty: no noise at the default level.
    assert_eq!(data.run(&["sql", "p", "SELECT 1"]).stderr, "");
}
