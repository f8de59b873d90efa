//! `durable tour`: every step runs, and the object it leaves behind is usable.

use crate::support::Data;

#[test]
fn tour_runs_every_step_and_leaves_the_object() {
    let data = Data::new();
    let out = data.ok(&["tour"]);
    for section in [
        "== SQL API",
        "== transactionSync",
        "== Synchronous KV API",
        "== Async KV API",
        "== Storage options",
        "== Write coalescing and sync",
        "== Async transactions",
        "== Alarms",
        "== The object runtime",
        "== Point-in-time recovery",
    ] {
        assert!(out.contains(section), "missing {section}: {out}");
    }
    assert!(out.contains("-> [1, 2, 3]"), "{out}");
    assert!(out.contains("-> rolled back; balance 40"), "{out}");
    // The restore to the bookmark taken before the deletion brought the three users back.
    assert!(out.contains("-> users left: 0") && out.contains("-> users: 3"), "{out}");
    // Run again: the tour starts from an empty object (delete_all) and gives the same answers.
    let again = data.ok(&["tour"]);
    assert_eq!(again.lines().count(), out.lines().count());
    let doc = data.json(&["sql", "tour", "SELECT count(*) AS n FROM users"]);
    assert_eq!(doc["rows"][0]["n"], 3);
    // The JSON form: one document per step.
    let json = data.ok(&["--json", "tour"]);
    let steps: Vec<serde_json::Value> =
        json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(steps.len() > 30);
    assert_eq!(steps[0]["step"], 1);
}
