//! The public conformance cases as a test: every vendored case passes or is a listed skip.

use durable_conformance::{check_dir, load_skips, skip_file, vendored_cases};

#[test]
fn every_public_case_passes_or_is_a_listed_skip() {
    let skips = load_skips(&skip_file()).expect("the skip file parses");
    let summary = check_dir(&vendored_cases(), &skips).expect("the cases load");
    let report: Vec<String> =
        summary.failed.iter().map(|(name, diff)| format!("FAIL {name}\n{diff}")).collect();
    assert!(summary.failed.is_empty(), "{}\n{}", report.join("\n"), summary.line());
    assert!(summary.passed >= 40, "{}", summary.line());
}

#[test]
fn a_wrong_answer_is_reported_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let case = durable_conformance::Case {
        name: "made_up".into(),
        script: serde_json::json!({"class": "sql", "ops": [{"op": "sql", "query": "SELECT 2 AS x", "mode": "one"}]}),
        expected: serde_json::json!({"class": "sql", "requests": [{"results": [
            {"op": "sql", "ok": {"result": {"x": 3}, "columnNames": ["x"], "rowsRead": 0, "rowsWritten": 0}}
        ]}]}),
    };
    match durable_conformance::check_case(&case, &[], dir.path()) {
        durable_conformance::Verdict::Fail(diff) => {
            assert!(diff.contains("expected 3, got 2"), "{diff}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_pending_skip_fails_once_its_op_passes() {
    let dir = tempfile::tempdir().unwrap();
    let case = durable_conformance::Case {
        name: "made_up".into(),
        script: serde_json::json!({"class": "sql", "ops": [{"op": "sql", "label": "two", "query": "SELECT 2 AS x", "mode": "one"}]}),
        expected: serde_json::json!({"class": "sql", "requests": [{"results": [
            {"op": "sql", "label": "two", "ok": {"result": {"x": 2}, "columnNames": ["x"], "rowsRead": 0, "rowsWritten": 0}}
        ]}]}),
    };
    let skip = durable_conformance::Skip {
        case: "made_up".into(),
        class: None,
        request: None,
        label: Some("two".into()),
        index: None,
        op: None,
        compare: None,
        reason: "waits on something".into(),
        pending: Some(99),
    };
    match durable_conformance::check_case(&case, std::slice::from_ref(&skip), dir.path()) {
        durable_conformance::Verdict::Fail(why) => assert!(why.contains("issue 99"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let settled = durable_conformance::Skip { pending: None, ..skip.clone() };
    assert_eq!(
        durable_conformance::check_case(&case, &[settled], dir.path()),
        durable_conformance::Verdict::Pass
    );
    // An op-kind entry masks ops of that kind only.
    let by_kind = durable_conformance::Skip {
        label: None,
        op: Some("sql".into()),
        pending: Some(98),
        ..skip.clone()
    };
    match durable_conformance::check_case(&case, &[by_kind], dir.path()) {
        durable_conformance::Verdict::Fail(why) => assert!(why.contains("issue 98"), "{why}"),
        other => panic!("an op-kind skip of a passing op must fail as stale, got {other:?}"),
    }
    let other_kind = durable_conformance::Skip {
        label: None,
        op: Some("bookmark".into()),
        pending: None,
        ..skip
    };
    assert_eq!(
        durable_conformance::check_case(&case, &[other_kind], dir.path()),
        durable_conformance::Verdict::Pass,
        "an entry for another op kind masks nothing, so its case just passes"
    );
}

#[test]
fn compare_bookmark_keeps_only_that_bookmarks_exist_and_go_forward() {
    let dir = tempfile::tempdir().unwrap();
    let case = |second: &str| durable_conformance::Case {
        name: "bookmarks".into(),
        script: serde_json::json!({"class": "sql", "ops": [
            {"op": "bookmark"}, {"op": "put", "key": "k", "value": 1}, {"op": "bookmark"}
        ]}),
        expected: serde_json::json!({"class": "sql", "requests": [{"results": [
            {"op": "bookmark", "ok": "00000000-00000001-00000000-00000000000000000000000000000000"},
            {"op": "put", "ok": {"$undefined": true}},
            {"op": "bookmark", "ok": second}
        ]}]}),
    };
    let skip = durable_conformance::Skip {
        case: "bookmarks".into(),
        class: Some("sql".into()),
        request: None,
        label: None,
        index: None,
        op: Some("bookmark".into()),
        compare: Some("bookmark".into()),
        reason: "fake bookmarks".into(),
        pending: None,
    };
    let forward = case("00000000-00000002-00000000-00000000000000000000000000000000");
    assert_eq!(
        durable_conformance::check_case(&forward, std::slice::from_ref(&skip), dir.path()),
        durable_conformance::Verdict::Pass
    );
    // A runtime answer that went backwards no longer matches ours, which go forward.
    let backwards = case("00000000-00000000-00000000-00000000000000000000000000000000");
    match durable_conformance::check_case(&backwards, &[skip], dir.path()) {
        durable_conformance::Verdict::Fail(why) => assert!(why.contains("went backwards"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Fuzz: the op-script runner on random scripts (any op name it knows, odd field types,
/// random keys, values and SQL): never a panic, always an answer in the oracle's shape.
#[test]
fn random_op_scripts_never_panic_the_runner() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{Value as Json, json};
    let kinds = [
        "put",
        "get",
        "list",
        "delete",
        "deleteAll",
        "sync",
        "getAlarm",
        "setAlarm",
        "deleteAlarm",
        "rollback",
        "kv.get",
        "kv.put",
        "kv.delete",
        "kv.list",
        "sql",
        "databaseSize",
        "transactionSync",
        "transaction",
        "throw",
        "abort",
        "awaitPending",
        "bookmark",
        "getBookmarkForTime",
        "onNextSessionRestoreBookmark",
        "hasSql",
        "nonsense",
    ];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Json::String),
        Just(json!({"$undefined": true})),
        Just(json!({"$num": "NaN"})),
        Just(json!({"$bytes": "00ff"})),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(".{0,4}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    let sql = prop_oneof![
        Just("CREATE TABLE IF NOT EXISTS t (x)".to_string()),
        Just("INSERT INTO t VALUES (?)".to_string()),
        Just("SELECT * FROM t".to_string()),
        ".{0,30}",
    ];
    let op = (0..kinds.len(), value.clone(), value.clone(), sql, any::<bool>()).prop_map(
        move |(k, a, b, query, flag)| {
            json!({
                "op": kinds[k], "key": a, "value": b, "keys": [a, "k"], "query": query,
                "params": [b], "mode": if flag { "raw" } else { "next" }, "limit": a,
                "time": b, "ops": [{"op": "put", "key": "k", "value": 1}],
                "rollback": flag, "throw": !flag, "await": flag, "entries": {"e": b},
            })
        },
    );
    let script = (prop::collection::vec(op, 0..8), any::<bool>(), any::<bool>()).prop_map(
        |(ops, kv, restart)| {
            let class = if kv { "kv" } else { "sql" };
            if restart {
                json!({"class": class, "requests": [ops.clone(), "restart", ops]})
            } else {
                json!({"class": class, "ops": ops})
            }
        },
    );
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    runner
        .run(&script, |script| {
            let dir = tempfile::tempdir().unwrap();
            let answer = durable_conformance::run_script(&script, dir.path());
            prop_assert!(
                answer.get("requests").is_some() || answer.get("error").is_some(),
                "{answer}"
            );
            Ok(())
        })
        .unwrap();
}
