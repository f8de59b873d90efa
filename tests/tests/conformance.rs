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
