//! Bad input of every kind: a bad command line gets clap's whole message and status 2; a
//! failure after it is one line on stderr and status 1; never a panic.

use crate::support::Data;

#[test]
fn a_bad_command_line_gets_clap_s_message_with_usage_and_status_2() {
    let data = Data::new();
    for args in [
        &["--bogus"][..],
        &["sql", "o"],
        &["kv", "frob", "o"],
        &["kv", "get", "o"],
        &["kv", "put", "o", "k"],
        &["kv", "list", "o", "--limit", "many"],
        &["-v", "-q", "objects"],
    ] {
        data.usage_error(args);
    }
    // What is missing or unexpected comes with the usage of the command.
    let err = data.usage_error(&["kv", "get", "o"]);
    assert!(err.contains("Usage: durable kv get <OBJECT> <KEYS>..."), "{err}");
    // A missing subcommand: the help, on stderr, with status 2.
    for args in [&["kv"][..], &["archive"]] {
        let run = data.run(args);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains("Usage: durable"), "{run:?}");
        assert!(run.stderr.contains("Commands:"), "{run:?}");
    }
}

#[test]
fn typos_get_clap_s_suggestion() {
    let data = Data::new();
    let err = data.usage_error(&["objcts"]);
    assert!(err.contains("unrecognized subcommand 'objcts'"), "{err}");
    assert!(err.contains("similar subcommand exists: 'objects'"), "{err}");
    let err = data.usage_error(&["kv", "lst", "o"]);
    assert!(err.contains("similar subcommand exists: 'list'"), "{err}");
    assert!(err.contains("Usage: durable kv"), "{err}");
    let err = data.usage_error(&["kv", "list", "o", "--prefx", "a"]);
    assert!(err.contains("similar argument exists: '--prefix'"), "{err}");
    let err = data.usage_error(&["--jsn", "objects"]);
    assert!(err.contains("'--json'"), "{err}");
    // A value that looks like an option: clap's tip says how to pass it.
    let err = data.usage_error(&["sql", "o", "--weird"]);
    assert!(err.contains("tip:") && err.contains("-- --weird"), "{err}");
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let data = Data::new();
    data.ok(&["kv", "put", "o", "k", "1"]);
    for args in [
        &["kv", "put", "o", "k", "v", "dangling"][..],
        &["kv", "put", "o", "k", r#"{"$bytes": "zz"}"#],
        &["kv", "put", "o", "k", r#"{"$nope": 1}"#],
        &["sql", "o", ""],
        &["sql", "o", "SELECT 1;;"],
        &["sql", "o", "BEGIN"],
        &["sql", "o", "SELECT ?"],
        &["sql", "o", "SELECT 1", r#"{"a": 1}"#],
        &["--archive", "ftp://host/x", "objects"],
    ] {
        data.fails(args);
    }
}

#[test]
fn malformed_hex_bytes_say_what_is_wrong() {
    let data = Data::new();
    let put = |value: &str| data.fails(&["kv", "put", "o", "k", value]);
    assert!(put(r#"{"$bytes": "abc"}"#).contains(r#"$bytes: odd number of hex digits in "abc""#));
    for digits in ["zz", "+f", "é", "0 "] {
        let line = put(&format!(r#"{{"$bytes": "{digits}"}}"#));
        assert!(line.contains(&format!("$bytes: {digits:?} is not hex")), "{line}");
    }
    // Either case is read; bytes are always written in lowercase.
    data.ok(&["kv", "put", "o", "k", r#"{"$bytes": "0AfF"}"#]);
    assert_eq!(data.ok(&["kv", "get", "o", "k"]), "{\"$bytes\":\"0aff\"}\n");
}

#[test]
fn a_locked_namespace_is_refused() {
    let data = Data::new();
    data.ok(&["kv", "put", "o", "k", "1"]);
    // A shell holds the namespace while it waits for input; a second command is refused.
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_durable"))
        .arg("--data")
        .arg(data.path())
        .args(["shell", "o"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The shell answers a line only once it has opened the namespace: from then on it holds
    // the lock, whatever the two processes' start-up times were.
    use std::io::{BufRead, Write};
    writeln!(shell.stdin.as_mut().unwrap(), ".help").unwrap();
    let mut answer = String::new();
    // Kept open to the end: a shell whose stdout closes stops at its next line.
    let mut stdout = std::io::BufReader::new(shell.stdout.take().unwrap());
    stdout.read_line(&mut answer).unwrap();
    assert!(!answer.is_empty(), "the shell answered .help");
    let run = data.run(&["kv", "get", "o", "k"]);
    let lock_held = run.code != 0 && run.stderr.contains("locked");
    drop(shell.stdin.take());
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    assert!(shell.wait().unwrap().success());
    assert!(lock_held, "a second process opened the locked namespace: {}", run.stderr);
    assert_eq!(data.ok(&["kv", "get", "o", "k"]), "1\n");
}

#[test]
fn help_and_version_succeed() {
    let data = Data::new();
    let help = data.ok(&["--help"]);
    for command in ["objects", "sql", "kv", "shell", "tour"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(data.ok(&["--version"]).starts_with("durable "));
}
