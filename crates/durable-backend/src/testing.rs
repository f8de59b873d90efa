//! The generic test suite of the [`KvBackend`] contract, written once for every implementation.
//!
//! [`run_suite`] checks each point of the contract on fresh backends and panics, naming the
//! check, at the first broken promise. It is a public module (not behind a feature) so that
//! backends outside this crate can run it from their own tests; it adds no dependency.
//!
//! ```
//! use std::sync::Arc;
//! use durable_backend::{KvBackend, MemoryBackend, testing};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! testing::run_suite(|| Arc::new(MemoryBackend::new()) as Arc<dyn KvBackend>).await;
//! # });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{KeyRange, KvBackend, WriteBatch};

/// Runs every check of the contract, each on a backend fresh from `make` (which must return an
/// empty backend each time). Panics with the check's name and the difference on a failure.
pub async fn run_suite<F>(make: F)
where
    F: Fn() -> Arc<dyn KvBackend>,
{
    empty_backend(&*make()).await;
    get_answers_in_request_order(&*make()).await;
    put_overwrites_and_keeps_the_last_duplicate(&*make()).await;
    keys_order_by_utf8_bytes(&*make()).await;
    ranges_limits_and_reverse(&*make()).await;
    range_bounds_need_not_be_utf8(&*make()).await;
    delete_counts_existing_keys_once(&*make()).await;
    write_batches_apply_delete_all_then_deletes_then_puts(&*make()).await;
    a_failed_batch_applies_nothing(&*make()).await;
    delete_all_empties_the_backend(&*make()).await;
    empty_requests_change_nothing(&*make()).await;
    empty_and_large_values_round_trip(&*make()).await;
    large_batches_stay_whole(&*make()).await;
    random_operations_match_a_model(&*make()).await;
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn range(start: &str, end: Option<&str>, limit: Option<u64>, reverse: bool) -> KeyRange {
    KeyRange {
        start: start.as_bytes().to_vec(),
        end: end.map(|e| e.as_bytes().to_vec()),
        limit,
        reverse,
    }
}

/// The most keys one get/put/delete may carry on `b`.
fn chunk(b: &dyn KvBackend) -> usize {
    b.max_keys_per_call().unwrap_or(usize::MAX).max(1)
}

async fn get(b: &dyn KvBackend, keys: &[String]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for part in keys.chunks(chunk(b)) {
        let values = b.get(part).await.expect("get");
        assert_eq!(values.len(), part.len(), "get answers one value per key");
        out.extend(values);
    }
    out
}

async fn put(b: &dyn KvBackend, entries: &[(&str, &[u8])]) {
    let entries: Vec<(String, Vec<u8>)> =
        entries.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect();
    for part in entries.chunks(chunk(b)) {
        b.put(part.to_vec()).await.expect("put");
    }
}

async fn list_keys(b: &dyn KvBackend, r: &KeyRange) -> Vec<String> {
    b.list(r).await.expect("list").into_iter().map(|(k, _)| k).collect()
}

async fn all(b: &dyn KvBackend) -> Vec<(String, Vec<u8>)> {
    b.list(&range("", None, None, false)).await.expect("list everything")
}

async fn empty_backend(b: &dyn KvBackend) {
    assert_eq!(get(b, &strings(&["a", ""])).await, vec![None, None], "empty: get");
    assert!(all(b).await.is_empty(), "empty: list");
    assert_eq!(b.delete(strings(&["a"])).await.expect("delete"), 0, "empty: delete");
}

async fn get_answers_in_request_order(b: &dyn KvBackend) {
    put(b, &[("a", b"1"), ("c", b"3")]).await;
    let got = get(b, &strings(&["c", "zzz", "a", "a"])).await;
    assert_eq!(
        got,
        vec![Some(b"3".to_vec()), None, Some(b"1".to_vec()), Some(b"1".to_vec())],
        "get: request order, missing as None, duplicates repeated"
    );
}

async fn put_overwrites_and_keeps_the_last_duplicate(b: &dyn KvBackend) {
    put(b, &[("k", b"one")]).await;
    put(b, &[("k", b"two")]).await;
    assert_eq!(get(b, &strings(&["k"])).await, vec![Some(b"two".to_vec())], "put overwrites");
    b.put(vec![("d".into(), b"x".to_vec()), ("d".into(), b"y".to_vec())]).await.expect("put");
    assert_eq!(get(b, &strings(&["d"])).await, vec![Some(b"y".to_vec())], "last duplicate wins");
}

async fn keys_order_by_utf8_bytes(b: &dyn KvBackend) {
    let keys = ["😀", "\u{FFFF}", "é", "z", "Z", "a\u{0}", "a", "", "ab", "\u{0}"];
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, k.as_bytes())).collect();
    put(b, &entries).await;
    let expected = strings(&["", "\u{0}", "Z", "a", "a\u{0}", "ab", "z", "é", "\u{FFFF}", "😀"]);
    assert_eq!(list_keys(b, &range("", None, None, false)).await, expected, "UTF-8 byte order");
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(list_keys(b, &range("", None, None, true)).await, reversed, "reverse order");
    for (key, value) in all(b).await {
        assert_eq!(value, key.as_bytes(), "list pairs each key with its value");
    }
}

async fn ranges_limits_and_reverse(b: &dyn KvBackend) {
    let keys = ["a", "a\u{0}", "ab", "abc", "b", "ba", "c"];
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, k.as_bytes())).collect();
    put(b, &entries).await;
    let cases: &[(KeyRange, &[&str])] = &[
        (range("a", Some("b"), None, false), &["a", "a\u{0}", "ab", "abc"]),
        (range("a", Some("b"), None, true), &["abc", "ab", "a\u{0}", "a"]),
        (range("a\u{0}", None, None, false), &["a\u{0}", "ab", "abc", "b", "ba", "c"]),
        (range("b", None, None, false), &["b", "ba", "c"]),
        (range("", Some("b"), None, false), &["a", "a\u{0}", "ab", "abc"]),
        (range("", None, Some(2), true), &["c", "ba"]),
        (range("", None, Some(2), false), &["a", "a\u{0}"]),
        (range("abb", Some("b"), None, false), &["abc"]),
        (range("c", Some("a"), None, false), &[]),
        (range("c", Some("a"), None, true), &[]),
        (range("b", Some("b"), None, false), &[]),
        (range("", None, Some(0), false), &[]),
        (range("", None, Some(100), false), &["a", "a\u{0}", "ab", "abc", "b", "ba", "c"]),
        (range("d", None, None, false), &[]),
        (range("ab", Some("ba"), Some(2), true), &["b", "abc"]),
    ];
    for (r, expected) in cases {
        assert_eq!(list_keys(b, r).await, strings(expected), "list {r:?}");
    }
}

async fn range_bounds_need_not_be_utf8(b: &dyn KvBackend) {
    put(b, &[("é", b"1"), ("éa", b"2"), ("ê", b"3"), ("a", b"4"), ("b", b"5")]).await;
    // The successor of the prefix "é" (C3 A9) is C3 AA, which is "ê": the prefix's range.
    let prefix_end = durable_kv::prefix_successor("é".as_bytes());
    let r =
        KeyRange { start: "é".as_bytes().to_vec(), end: prefix_end, limit: None, reverse: false };
    assert_eq!(list_keys(b, &r).await, strings(&["é", "éa"]), "prefix range of é");
    // 0xFF never occurs in UTF-8: [a, a\xFF) holds every key that starts with "a".
    let r =
        KeyRange { start: b"a".to_vec(), end: Some(vec![b'a', 0xff]), limit: None, reverse: true };
    assert_eq!(list_keys(b, &r).await, strings(&["a"]), "end bound with a 0xFF byte");
    let r =
        KeyRange { start: vec![0xc3], end: Some(vec![0xc3, 0xff]), limit: None, reverse: false };
    assert_eq!(list_keys(b, &r).await, strings(&["é", "éa", "ê"]), "bounds splitting a character");
}

async fn delete_counts_existing_keys_once(b: &dyn KvBackend) {
    put(b, &[("a", b"1"), ("b", b"2"), ("c", b"3")]).await;
    let n = b.delete(strings(&["a", "zzz", "b", "b"])).await.expect("delete");
    assert_eq!(n, 2, "delete counts keys that existed, a repeated key once");
    assert_eq!(b.delete(strings(&["c"])).await.expect("delete"), 1);
    assert_eq!(b.delete(strings(&["c"])).await.expect("delete"), 0, "a second delete finds none");
    assert!(all(b).await.is_empty(), "every key deleted");
}

async fn write_batches_apply_delete_all_then_deletes_then_puts(b: &dyn KvBackend) {
    put(b, &[("a", b"1"), ("b", b"2"), ("c", b"3")]).await;
    let batch = WriteBatch {
        delete_all: false,
        deletes: strings(&["a", "b"]),
        puts: vec![("b".into(), b"new".to_vec()), ("d".into(), b"4".to_vec())],
    };
    b.write(batch).await.expect("write");
    let expected = vec![
        ("b".to_owned(), b"new".to_vec()),
        ("c".to_owned(), b"3".to_vec()),
        ("d".to_owned(), b"4".to_vec()),
    ];
    assert_eq!(all(b).await, expected, "deletes before puts: a key in both ends up put");
    let batch = WriteBatch {
        delete_all: true,
        deletes: strings(&["x"]),
        puts: vec![("e".into(), b"5".to_vec())],
    };
    b.write(batch).await.expect("write with delete_all");
    assert_eq!(all(b).await, vec![("e".to_owned(), b"5".to_vec())], "delete_all comes first");
}

async fn a_failed_batch_applies_nothing(b: &dyn KvBackend) {
    put(b, &[("keep", b"old")]).await;
    // 3 MB exceeds some stores' value limit (SQLite's 2 MB here); either way the batch is
    // all or nothing.
    let batch = WriteBatch {
        delete_all: false,
        deletes: strings(&["keep"]),
        puts: vec![("small".into(), b"s".to_vec()), ("huge".into(), vec![7; 3_000_000])],
    };
    let keys = strings(&["keep", "small", "huge"]);
    match b.write(batch).await {
        Ok(()) => {
            let got = get(b, &keys).await;
            assert_eq!(got[0], None, "accepted batch: delete applied");
            assert_eq!(got[1].as_deref(), Some(&b"s"[..]), "accepted batch: small put applied");
            assert_eq!(got[2].as_ref().map(Vec::len), Some(3_000_000), "accepted: huge put");
        }
        Err(_) => {
            let got = get(b, &keys).await;
            assert_eq!(got, vec![Some(b"old".to_vec()), None, None], "failed batch: nothing");
        }
    }
}

async fn delete_all_empties_the_backend(b: &dyn KvBackend) {
    b.delete_all().await.expect("delete_all on an empty backend");
    put(b, &[("a", b"1"), ("b", b"2")]).await;
    b.delete_all().await.expect("delete_all");
    assert!(all(b).await.is_empty(), "delete_all deletes every key");
    put(b, &[("c", b"3")]).await;
    assert_eq!(all(b).await, vec![("c".to_owned(), b"3".to_vec())], "writes after delete_all");
}

async fn empty_requests_change_nothing(b: &dyn KvBackend) {
    put(b, &[("a", b"1")]).await;
    assert!(b.get(&[]).await.expect("get []").is_empty(), "get of no keys");
    b.put(Vec::new()).await.expect("put of no entries");
    assert_eq!(b.delete(Vec::new()).await.expect("delete []"), 0, "delete of no keys");
    b.write(WriteBatch::default()).await.expect("empty write");
    assert_eq!(all(b).await, vec![("a".to_owned(), b"1".to_vec())], "nothing changed");
}

async fn empty_and_large_values_round_trip(b: &dyn KvBackend) {
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    put(b, &[("empty", b""), ("large", &large), ("legacy-max", &[1; 131_072])]).await;
    let got = get(b, &strings(&["empty", "large", "legacy-max"])).await;
    assert_eq!(got[0], Some(Vec::new()), "an empty value is present, not absent");
    assert_eq!(got[1].as_deref(), Some(large.as_slice()), "a 1 MB value round-trips");
    assert_eq!(got[2].as_ref().map(Vec::len), Some(131_072), "a 128 KiB value round-trips");
}

async fn large_batches_stay_whole(b: &dyn KvBackend) {
    let puts: Vec<(String, Vec<u8>)> =
        (0..300).map(|i| (format!("k{i:03}"), vec![(i % 256) as u8; 100])).collect();
    b.write(WriteBatch { puts, ..WriteBatch::default() }).await.expect("300-key write");
    let listed = all(b).await;
    assert_eq!(listed.len(), 300, "a 300-key batch is written whole");
    assert_eq!(listed[299].0, "k299");
    let deletes = (0..300).step_by(2).map(|i| format!("k{i:03}")).collect();
    b.write(WriteBatch { deletes, ..WriteBatch::default() }).await.expect("150-key delete");
    assert_eq!(all(b).await.len(), 150, "a 150-key delete batch is written whole");
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn key(&mut self) -> String {
        const PARTS: [&str; 6] = ["a", "b", "\u{0}", "é", "😀", "Z"];
        let len = self.next(3) + 1;
        (0..len).map(|_| PARTS[self.next(PARTS.len() as u64) as usize]).collect()
    }
}

async fn random_operations_match_a_model(b: &dyn KvBackend) {
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for step in 0..300u32 {
        match rng.next(10) {
            0..=4 => {
                let mut batch = WriteBatch::default();
                for _ in 0..rng.next(4) {
                    batch.deletes.push(rng.key());
                }
                for _ in 0..rng.next(5) {
                    batch.puts.push((rng.key(), step.to_le_bytes().to_vec()));
                }
                for k in &batch.deletes {
                    model.remove(k);
                }
                for (k, v) in &batch.puts {
                    model.insert(k.clone(), v.clone());
                }
                b.write(batch).await.expect("write");
            }
            5 => {
                let keys: Vec<String> = (0..rng.next(4)).map(|_| rng.key()).collect();
                let mut unique = keys.clone();
                unique.sort();
                unique.dedup();
                let expected = unique.iter().filter(|k| model.remove(*k).is_some()).count();
                assert_eq!(b.delete(keys).await.expect("delete"), expected, "step {step}: count");
            }
            6 if rng.next(8) == 0 => {
                model.clear();
                b.delete_all().await.expect("delete_all");
            }
            _ => {
                let (mut lo, mut hi) = (rng.key(), rng.key());
                if lo > hi {
                    std::mem::swap(&mut lo, &mut hi);
                }
                let limit = rng.next(4);
                let reverse = rng.next(2) == 1;
                let r = range(
                    &lo,
                    (rng.next(3) > 0).then_some(hi.as_str()),
                    (limit > 0).then_some(limit),
                    reverse,
                );
                let end = r.end.clone();
                let mut expected: Vec<(String, Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| {
                        k.as_bytes() >= r.start.as_slice()
                            && end.as_deref().is_none_or(|e| k.as_bytes() < e)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    expected.reverse();
                }
                if limit > 0 {
                    expected.truncate(limit as usize);
                }
                assert_eq!(b.list(&r).await.expect("list"), expected, "step {step}: list {r:?}");
            }
        }
    }
    let keys: Vec<String> = model.keys().cloned().collect();
    let values = get(b, &keys).await;
    let expected: Vec<Option<Vec<u8>>> = model.values().cloned().map(Some).collect();
    assert_eq!(values, expected, "final state matches the model");
}
