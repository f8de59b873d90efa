//! durable-kv's integration tests: the KV APIs, list options against a model, the codec
//! (format 2's round trips and evolution in `kv/format2.rs`, format 1's vectors in
//! `kv/format1.rs`).

#[path = "kv/format1.rs"]
mod format1;
#[path = "kv/format2.rs"]
mod format2;

use std::collections::{BTreeMap, BTreeSet};

use durable_kv::{Error, Kv, KvLimits, ListOptions, Value, codec};
use durable_sql::{Database, Limits, Options};
use proptest::prelude::*;

fn kv() -> Kv {
    Kv::new(Database::open_in_memory(Options::default()).unwrap())
}

fn keys(entries: &[(String, Value)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

fn opts(f: impl FnOnce(&mut ListOptions)) -> ListOptions {
    let mut o = ListOptions::default();
    f(&mut o);
    o
}

/// Issue 19: `ListOptions` is built method by method (it is `#[non_exhaustive]`); each
/// method sets its one field, and `new()` is `default()`.
#[test]
fn list_options_build_one_field_per_method() {
    assert_eq!(ListOptions::new(), ListOptions::default());
    let o = ListOptions::new().prefix("user:").start("user:1").end(String::from("user:9")).limit(5);
    assert_eq!(o.prefix.as_deref(), Some("user:"));
    assert_eq!(
        (o.start.as_deref(), o.end.as_deref(), o.limit),
        (Some("user:1"), Some("user:9"), Some(5))
    );
    assert!(!o.reverse && o.start_after.is_none());
    let o = ListOptions::new().start_after("a").reverse(true);
    assert_eq!((o.start_after.as_deref(), o.reverse), (Some("a"), true));
    // Built options compile as literals did: the runtime's checks still apply.
    assert!(matches!(ListOptions::new().limit(0).compile(), Err(Error::LimitNotPositive)));
    assert!(matches!(
        ListOptions::new().start("a").start_after("b").compile(),
        Err(Error::StartAndStartAfter)
    ));
}

#[test]
fn get_put_delete_round_trip_and_report_existence() {
    let kv = kv();
    assert_eq!(kv.get::<Value>("foo").unwrap(), None);
    kv.put("foo", &Value::Float(123.0)).unwrap();
    assert_eq!(kv.get::<Value>("foo").unwrap(), Some(Value::Float(123.0)));
    kv.put("foo", &"replaced").unwrap();
    assert_eq!(kv.get::<String>("foo").unwrap().as_deref(), Some("replaced"));
    assert!(kv.delete("foo").unwrap());
    assert!(!kv.delete("foo").unwrap());
    assert!(!kv.delete("never").unwrap());
}

#[test]
fn the_kv_table_is_created_on_first_write_and_hidden_from_user_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("o.sqlite"), Options::default()).unwrap();
    let kv = Kv::new(db.clone());
    assert!(kv.list::<Value>(&ListOptions::default()).unwrap().is_empty());
    assert_eq!(db.database_size().unwrap(), 4096, "reads do not create the table");
    kv.put("k", &1i64).unwrap();
    assert_eq!(db.database_size().unwrap(), 8192);
    let err = db.exec("SELECT * FROM _cf_KV", &[]).unwrap_err();
    assert_eq!(err.to_string(), "access to _cf_KV.key is prohibited: SQLITE_AUTH");
}

#[test]
fn runtime_list_examples() {
    // Spec section 9, items 100-103: keys bar, baz, foo, qux.
    let kv = kv();
    for k in ["bar", "baz", "foo", "qux"] {
        kv.put(k, &Value::Null).unwrap();
    }
    let check = |o: ListOptions, want: &[&str]| {
        let got = kv.list::<Value>(&o).unwrap();
        assert_eq!(keys(&got), want, "{o:?}");
        let iter: Vec<String> = kv.list_iter::<Value>(&o).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(iter, want, "sync iterator {o:?}");
    };
    let s = |v: &str| Some(v.to_owned());
    check(opts(|o| o.start = s("cat")), &["foo", "qux"]);
    check(opts(|o| o.start = s("foo")), &["foo", "qux"]);
    check(opts(|o| o.start = s("fop")), &["qux"]);
    check(opts(|o| o.start = s("foo ")), &["qux"]);
    check(opts(|o| o.end = s("cat")), &["bar", "baz"]);
    check(opts(|o| o.end = s("foo")), &["bar", "baz"]);
    check(opts(|o| o.end = s("fop")), &["bar", "baz", "foo"]);
    check(opts(|o| o.limit = Some(2)), &["bar", "baz"]);
    check(opts(|o| (o.start, o.limit) = (s("baz"), Some(2))), &["baz", "foo"]);
    check(opts(|o| o.reverse = true), &["qux", "foo", "baz", "bar"]);
    check(opts(|o| (o.start, o.reverse) = (s("foo"), true)), &["qux", "foo"]);
    check(opts(|o| (o.end, o.reverse) = (s("foo"), true)), &["baz", "bar"]);
    check(opts(|o| (o.limit, o.reverse) = (Some(2), true)), &["qux", "foo"]);
    check(opts(|o| (o.end, o.limit, o.reverse) = (s("foo"), Some(1), true)), &["baz"]);
    check(opts(|o| o.prefix = s("ba")), &["bar", "baz"]);
    check(opts(|o| (o.start_after, o.end) = (s("bar"), s("c"))), &["baz"]);
    check(opts(|o| (o.start, o.end) = (s("z"), s("a"))), &[]);
    check(opts(|o| o.end = s("")), &[]);
}

#[test]
fn list_option_errors_carry_the_runtime_messages() {
    let kv = kv();
    let both = opts(|o| (o.start, o.start_after) = (Some("a".into()), Some("a".into())));
    let e = kv.list::<Value>(&both).unwrap_err();
    assert_eq!(e.to_string(), "list() cannot be called with both start and startAfter values.");
    assert_eq!(e.js_name(), "TypeError");
    for limit in [0, -1] {
        let e = kv.list_iter::<Value>(&opts(|o| o.limit = Some(limit))).err().unwrap();
        assert_eq!(e.to_string(), "List limit must be positive.");
    }
}

#[test]
fn a_second_list_invalidates_the_first_iterator() {
    let kv = kv();
    for k in ["a", "b"] {
        kv.put(k, &1i64).unwrap();
    }
    let mut first = kv.list_iter::<i64>(&ListOptions::default()).unwrap();
    let second = kv.list_iter::<i64>(&ListOptions::default()).unwrap();
    let err = first.next().unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "kv.list() iterator was invalidated because a new call to kv.list() was started. Only \
         one kv.list() iterator can exist at a time."
    );
    assert_eq!(second.count(), 2);
    // A provably empty list does not take the slot.
    let mut third = kv.list_iter::<i64>(&ListOptions::default()).unwrap();
    let empty = kv.list_iter::<i64>(&opts(|o| o.end = Some(String::new()))).unwrap();
    assert_eq!(empty.count(), 0);
    assert_eq!(third.next().unwrap().unwrap(), ("a".to_owned(), 1));
}

#[test]
fn multi_key_forms_sort_dedup_and_count() {
    let kv = kv();
    kv.put_multiple(&[("b", Value::Bool(true)), ("a", Value::Null), ("c", Value::Float(1.5))])
        .unwrap();
    let got = kv.get_multiple::<Value>(&["c", "missing", "a", "a"]).unwrap();
    assert_eq!(keys(&got), ["a", "c"]);
    assert_eq!(kv.delete_multiple(&["a", "a", "zz"]).unwrap(), 1);
    assert_eq!(kv.delete_multiple(&[]).unwrap(), 0);
}

#[test]
fn put_multiple_is_all_or_nothing_and_spares_earlier_writes() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    let kv = Kv::new(db.clone());
    kv.put("earlier", &1i64).unwrap();
    let big = vec![0u8; 2_000_001];
    let err = kv.put_multiple(&[("x", Value::Null), ("y", Value::Bytes(big))]).unwrap_err();
    assert_eq!(err.to_string(), "string or blob too big: SQLITE_TOOBIG");
    assert_eq!(kv.get::<Value>("x").unwrap(), None);
    db.commit().unwrap();
    assert_eq!(kv.get::<i64>("earlier").unwrap(), Some(1));
}

#[test]
fn a_rolled_back_table_creation_is_redone_by_the_next_write() {
    // Spec 1.2: the transaction that created `_cf_KV` rolls back; cached statements must not
    // assume the table is still there.
    let kv = kv();
    let db = kv.database().clone();
    let r: Result<(), durable_kv::Error> = db.transaction_sync(|| {
        kv.put("a", &1i64)?;
        assert_eq!(kv.get::<i64>("a")?, Some(1));
        Err(durable_kv::Error::LimitNotPositive)
    });
    assert!(r.is_err());
    assert_eq!(kv.get::<i64>("a").unwrap(), None);
    assert!(!kv.delete("a").unwrap());
    assert!(kv.list::<i64>(&ListOptions::default()).unwrap().is_empty());
    kv.put("b", &2i64).unwrap();
    assert_eq!(kv.get::<i64>("b").unwrap(), Some(2));
}

#[test]
fn legacy_limits_refuse_with_the_runtime_messages() {
    let kv =
        Kv::with_limits(Database::open_in_memory(Options::default()).unwrap(), KvLimits::legacy());
    kv.put(&"k".repeat(2048), &1i64).unwrap();
    let e = kv.put(&"k".repeat(2049), &1i64).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided."
    );
    assert_eq!(e.js_name(), "RangeError");
    // Measured as the runtime measures it (the V8 serialization, 34 bytes of slack): a
    // Uint8Array serializes to its length plus 13 bytes.
    kv.put("v", &Value::Bytes(vec![0; 131_093])).unwrap();
    let e = kv.put("v", &Value::Bytes(vec![0; 131_094])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Values cannot be larger than 131072 bytes. A value of size 131107 was provided."
    );
    kv.put("s", &"a".repeat(131_072)).unwrap();
    let many: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let e = kv.get_multiple::<Value>(&refs).unwrap_err();
    assert_eq!(e.to_string(), "Maximum number of key value pairs is 128. 129 pairs were provided.");
}

#[test]
fn sqlite_backend_bounds_values_by_the_sqlite_limit() {
    let kv = kv();
    kv.put("ok", &Value::Bytes(vec![0; 1_900_000])).unwrap();
    let e = kv.put("big", &Value::Bytes(vec![0; 2_000_001])).unwrap_err();
    assert_eq!(e.to_string(), "string or blob too big: SQLITE_TOOBIG");
}

#[test]
fn after_a_critical_error_kv_reads_and_writes_fail_with_it() {
    const FULL: &str = "database or disk is full: SQLITE_FULL";
    let limits = Limits { max_database_size: 16 * 4096, ..Limits::default() };
    let db = Database::open_in_memory(Options::new().limits(limits)).unwrap();
    let kv = Kv::new(db.clone());
    kv.put("a", &1i64).unwrap();
    db.commit().unwrap();
    kv.put("b", &2i64).unwrap();
    let big = "x".repeat(100_000);
    assert_eq!(kv.put("big", &big).unwrap_err().to_string(), FULL);
    // Spec sqlite-storage 5.2: every later write and KV read throws the same error.
    let errors = [
        kv.get::<i64>("a").map(drop),
        kv.get_raw("a").map(drop),
        kv.get_multiple::<i64>(&["a", "b"]).map(drop),
        kv.list::<i64>(&ListOptions::default()).map(drop),
        kv.list_iter::<i64>(&ListOptions::default()).and_then(|mut l| l.next().unwrap()).map(drop),
        kv.put("c", &3i64),
        kv.delete("a").map(drop),
    ];
    for e in errors {
        assert_eq!(e.unwrap_err().to_string(), FULL);
    }
    // Read-only SQL is not checked, in the runtime either.
    assert!(db.exec("SELECT 1", &[]).is_ok());
}

#[test]
fn delete_all_resets_everything_and_discards_uncommitted_writes() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    let kv = Kv::new(db.clone());
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    kv.put("kept?", &1i64).unwrap();
    kv.delete_all().unwrap();
    assert_eq!(kv.get::<i64>("kept?").unwrap(), None);
    assert!(db.exec("SELECT * FROM t", &[]).is_err());
    assert!(db.database_size().unwrap() <= 4096);
}

#[test]
fn garbage_and_unknown_versions_are_typed_errors() {
    assert!(matches!(codec::decode::<Value>(&[]), Err(Error::Decode { .. })));
    assert!(matches!(codec::decode::<Value>(&[9, 1, 2]), Err(Error::UnknownFormat { version: 9 })));
    assert!(matches!(codec::decode::<Value>(&[0]), Err(Error::UnknownFormat { version: 0 })));
    // A string that claims 4 GiB must not allocate them.
    let huge = [codec::FORMAT_VERSION, 0x0d, 0xff, 0xff, 0xff, 0xff, b'a'];
    assert!(matches!(codec::decode::<Value>(&huge), Err(Error::Decode { .. })));
    let mut trailing = codec::encode(&Value::Null).unwrap();
    trailing.push(0);
    assert!(matches!(codec::decode::<Value>(&trailing), Err(Error::Decode { .. })));
}

#[test]
fn stored_bytes_are_a_version_then_tagged_fixed_width_little_endian() {
    assert_eq!(codec::encode(&Value::Integer(1)).unwrap(), [2, 0x03, 1]);
    assert_eq!(
        codec::encode(&Value::Integer(-1 << 40)).unwrap(),
        [2, 0x06, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]
    );
    assert_eq!(codec::encode(&Value::Bool(true)).unwrap(), [2, 0x02]);
    assert_eq!(codec::encode("hi").unwrap(), [2, 0x0d, 2, 0, 0, 0, b'h', b'i']);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
        Just(Value::Float(f64::NAN)),
        Just(Value::Float(-0.0)),
        Just(Value::Float(f64::NEG_INFINITY)),
        ".*".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        any::<f64>().prop_map(Value::Date),
        any::<u64>().prop_map(|bits| Value::Date(f64::from_bits(bits))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((".*", inner.clone()), 0..6).prop_map(Value::Object),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::AnyMap),
            proptest::collection::vec(inner, 0..6).prop_map(Value::Set),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{0,3}",
        "[a-c\u{0}\u{7f}\u{80}é\u{ffff}\u{10000}😀]{0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_value_round_trips_exactly(v in arb_value()) {
        let bytes = codec::encode(&v).unwrap();
        prop_assert_eq!(codec::decode::<Value>(&bytes).unwrap(), v);
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = codec::decode::<Value>(&bytes);
    }

    #[test]
    fn list_agrees_with_a_btreemap_model(
        stored in proptest::collection::btree_set(arb_key(), 0..12),
        prefix in proptest::option::of(arb_key()),
        start in proptest::option::of(arb_key()),
        start_after in proptest::option::of(arb_key()),
        end in proptest::option::of(arb_key()),
        limit in proptest::option::of(-1i64..6),
        reverse in any::<bool>(),
    ) {
        let kv = kv();
        for k in &stored {
            kv.put(k, &Value::Null).unwrap();
        }
        let o = opts(|o| {
            (o.prefix, o.start, o.start_after) = (prefix.clone(), start.clone(), start_after.clone());
            (o.end, o.limit, o.reverse) = (end.clone(), limit, reverse);
        });
        let got = kv.list::<Value>(&o);
        if start.is_some() && start_after.is_some() {
            prop_assert!(matches!(got, Err(Error::StartAndStartAfter)));
            return Ok(());
        }
        if limit.is_some_and(|l| l <= 0) {
            prop_assert!(matches!(got, Err(Error::LimitNotPositive)));
            return Ok(());
        }
        let model: BTreeMap<&str, ()> = stored.iter().map(|k| (k.as_str(), ())).collect();
        let mut want: Vec<&str> = model
            .keys()
            .copied()
            .filter(|k| prefix.as_deref().is_none_or(|p| k.starts_with(p)))
            .filter(|k| start.as_deref().is_none_or(|s| *k >= s))
            .filter(|k| start_after.as_deref().is_none_or(|s| *k > s))
            .filter(|k| end.as_deref().is_none_or(|e| *k < e))
            .collect();
        if reverse {
            want.reverse();
        }
        if let Some(l) = limit {
            want.truncate(l as usize);
        }
        let got = got.unwrap();
        prop_assert_eq!(keys(&got), want.clone());
        let iter: Vec<String> = kv.list_iter::<Value>(&o).unwrap().map(|r| r.unwrap().0).collect();
        prop_assert_eq!(iter, want);
    }
}

/// Fuzz (issue 10): the value decoder and list options on hostile input, at large case
/// counts. `PROPTEST_CASES` overrides the count.
mod fuzz {
    use super::*;

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// One edit of an encoding: overwrite, insert, delete or truncate at a position.
    fn edit(bytes: &mut Vec<u8>, (op, at, byte): (u8, usize, u8)) {
        let at = at % (bytes.len() + 1);
        match op % 4 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }

    /// A decoded value must survive its own round trip.
    fn decoded_is_sound(bytes: &[u8]) -> Result<(), TestCaseError> {
        match codec::decode::<Value>(bytes) {
            Ok(v) => {
                let again = codec::encode(&v).unwrap();
                prop_assert_eq!(codec::decode::<Value>(&again).unwrap(), v);
            }
            Err(e) => {
                let typed = matches!(e, Error::Decode { .. } | Error::UnknownFormat { .. });
                prop_assert!(typed, "{}", e);
            }
        }
        Ok(())
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c]{0,4}", "[ab\u{0}\u{7f}\u{80}\u{ff}é\u{ffff}\u{10000}]{0,5}", ".{0,8}",]
    }

    /// The naive reading of list options over `keys`: filter, order, limit.
    fn naive<'a>(keys: &'a BTreeSet<String>, o: &ListOptions) -> Vec<&'a str> {
        let mut out: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| o.prefix.as_deref().is_none_or(|p| k.starts_with(p)))
            .filter(|k| o.start.as_deref().is_none_or(|s| *k >= s))
            .filter(|k| o.start_after.as_deref().is_none_or(|s| *k > s))
            .filter(|k| o.end.as_deref().is_none_or(|e| *k < e))
            .collect();
        if o.reverse {
            out.reverse();
        }
        if let Some(l) = o.limit {
            out.truncate(l as usize);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(20_000), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn decoding_arbitrary_bytes_gives_a_value_or_a_typed_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            version in prop_oneof![Just(None), Just(Some(codec::FORMAT_1)), Just(Some(codec::FORMAT_VERSION))],
        ) {
            let mut bytes = bytes;
            if let (Some(version), Some(first)) = (version, bytes.first_mut()) {
                *first = version;
            }
            decoded_is_sound(&bytes)?;
        }

        #[test]
        fn decoding_mutated_encodings_gives_a_value_or_a_typed_error(
            v in arb_value(),
            edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = codec::encode(&v).unwrap();
            for e in edits {
                edit(&mut bytes, e);
            }
            decoded_is_sound(&bytes)?;
        }

        #[test]
        fn arbitrary_values_round_trip(v in arb_value()) {
            let bytes = codec::encode(&v).unwrap();
            prop_assert_eq!(codec::decode::<Value>(&bytes).unwrap(), v);
        }

        #[test]
        fn compiled_list_ranges_agree_with_a_naive_filter(
            keys in proptest::collection::btree_set(arb_text(), 0..16),
            prefix in proptest::option::of(arb_text()),
            start in proptest::option::of(arb_text()),
            start_after in proptest::option::of(arb_text()),
            end in proptest::option::of(arb_text()),
            limit in proptest::option::of(prop_oneof![any::<i64>(), -2i64..8]),
            reverse in any::<bool>(),
        ) {
            let o = opts(|o| {
                (o.prefix, o.start, o.start_after) = (prefix, start, start_after);
                (o.end, o.limit, o.reverse) = (end, limit, reverse);
            });
            match o.compile() {
                Err(Error::StartAndStartAfter) => {
                    prop_assert!(o.start.is_some() && o.start_after.is_some());
                }
                Err(Error::LimitNotPositive) => {
                    prop_assert!(o.start.is_none() || o.start_after.is_none());
                    prop_assert!(o.limit.is_some_and(|l| l <= 0));
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
                Ok(range) => {
                    prop_assert!(!(o.start.is_some() && o.start_after.is_some()));
                    prop_assert!(o.limit.is_none_or(|l| l > 0));
                    let mut got: Vec<&str> = match &range {
                        None => Vec::new(),
                        Some(r) => keys
                            .iter()
                            .map(String::as_str)
                            .filter(|k| k.as_bytes() >= r.start.as_slice())
                            .filter(|k| r.end.as_deref().is_none_or(|e| k.as_bytes() < e))
                            .collect(),
                    };
                    if let Some(r) = &range {
                        prop_assert_eq!(r.reverse, o.reverse);
                        if r.reverse {
                            got.reverse();
                        }
                        if let Some(l) = r.limit {
                            got.truncate(usize::try_from(l).unwrap_or(usize::MAX));
                        }
                    }
                    prop_assert_eq!(got, naive(&keys, &o));
                }
            }
        }
    }
}

#[test]
fn crafted_deep_nesting_is_a_typed_error_not_a_stack_overflow() {
    use durable_kv::{MAX_DEPTH, codec};
    // Build the bytes of `depth` nested one-element arrays around a null, from a shallow
    // value's encoding, without ever building (or dropping) the deep value itself.
    let one = codec::encode(&Value::Array(vec![Value::Null])).unwrap();
    let null = codec::encode(&Value::Null).unwrap();
    // `one` = version byte, array prefix, then the null's body.
    let prefix = &one[1..one.len() - (null.len() - 1)];
    let nest = |depth: usize| {
        let mut bytes = vec![one[0]];
        for _ in 0..depth {
            bytes.extend_from_slice(prefix);
        }
        bytes.extend_from_slice(&null[1..]);
        bytes
    };
    let ok: Value = codec::decode(&nest(MAX_DEPTH)).unwrap();
    let mut depth = 0;
    let mut v = &ok;
    while let Value::Array(items) = v {
        depth += 1;
        v = &items[0];
    }
    assert_eq!(depth, MAX_DEPTH);
    for deep in [MAX_DEPTH + 1, 1_000, 100_000] {
        let err = codec::decode::<Value>(&nest(deep)).unwrap_err();
        assert!(err.to_string().contains("nest more than 128 levels"), "{err}");
    }
    // The guard resets: a shallow value decodes after a refused deep one.
    assert_eq!(
        codec::decode::<Value>(&nest(2)).unwrap(),
        Value::Array(vec![Value::Array(vec![Value::Null])])
    );
}
