//! `durable shell`: SQL lines, kv commands, history, and failures on a script.

use crate::support::Data;

#[test]
fn runs_sql_and_kv_lines_with_history() {
    let data = Data::new();
    let script = "CREATE TABLE t (x)\n\
                  INSERT INTO t VALUES (1), (2)\n\
                  kv put greeting {\"hi\": \"there\"}\n\
                  kv get greeting\n\
                  kv list --prefix gr\n\
                  SELECT sum(x) AS s FROM t\n\
                  !6\n\
                  .history\n";
    let run = data.run_with_input(&["shell", "room"], script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    let out = &run.stdout;
    assert!(out.contains("put 1 key\n{\"hi\":\"there\"}\ngreeting\t{\"hi\":\"there\"}\n"), "{out}");
    assert_eq!(out.matches("s\n-\n3\n").count(), 2, "{out}");
    assert!(out.contains("    7  SELECT sum(x) AS s FROM t\n    8  .history"), "{out}");
    // History is kept in the data directory, and the writes were committed.
    let history = std::fs::read_to_string(data.path().join(".durable_history")).unwrap();
    assert_eq!(history.lines().count(), 8);
    assert_eq!(data.ok(&["kv", "get", "room", "greeting"]), "{\"hi\":\"there\"}\n");
}

#[test]
fn a_failing_line_is_reported_and_the_script_fails() {
    let data = Data::new();
    let run = data.run_with_input(
        &["shell", "o"],
        "SELEC 1\nkv frob\nkv put 'my key' 5\n!99\nkv get 'my key'\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{run:?}");
    assert!(errors[0].contains("syntax error"), "{run:?}");
    assert!(errors[1].contains("frob"), "{run:?}");
    assert!(errors[2].contains("no such history entry"), "{run:?}");
    assert!(run.stdout.ends_with("5\n"), "{run:?}");
}
