//! Format 2, the self-describing value format (issue 19, item 1): arbitrary serde types and
//! `Value`s round-trip bit for bit, any stored value reads as `Value` and `serde_json::Value`,
//! serde's evolution rules hold, and hostile bytes are typed errors.

use std::collections::BTreeMap;

use durable_kv::{Error, Kv, Value, codec};
use durable_sql::{Database, Options};
use proptest::prelude::*;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Writes `value` and reads it back as `T`.
#[track_caller]
fn reread<T: DeserializeOwned>(value: &(impl Serialize + ?Sized)) -> T {
    codec::decode(&codec::encode(value).unwrap()).unwrap()
}

/// Bytes that serialize with `serialize_bytes` (what `serde_bytes` does).
#[derive(Debug, Clone, PartialEq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Marker;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Wrapper(Box<Node>);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    name: String,
    nested: Option<Box<Node>>,
    items: Vec<Node>,
    ratio: f64,
}

/// A universe of serde shapes: every kind of the data model, nested.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Node {
    Unit,
    Flag(bool),
    Small(i8, u16),
    Int(i64),
    UInt(u64),
    Wide { signed: i128, unsigned: u128 },
    Single(f32),
    Double(f64),
    Letter(char),
    Text(String),
    Bytes(Blob),
    Maybe(Option<Box<Node>>),
    List(Vec<Node>),
    Named(BTreeMap<String, Node>),
    Keyed(BTreeMap<(i32, bool), Node>),
    Tuple((u8, String, Option<bool>)),
    Record(Record),
    Newtype(Wrapper),
    Marker(Marker),
    Nothing(()),
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), any::<u64>().prop_map(f64::from_bits), Just(-0.0), Just(f64::NAN)]
}

fn arb_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Node::Unit),
        any::<bool>().prop_map(Node::Flag),
        (any::<i8>(), any::<u16>()).prop_map(|(a, b)| Node::Small(a, b)),
        any::<i64>().prop_map(Node::Int),
        any::<u64>().prop_map(Node::UInt),
        (any::<i128>(), any::<u128>())
            .prop_map(|(signed, unsigned)| Node::Wide { signed, unsigned }),
        any::<u32>().prop_map(|b| Node::Single(f32::from_bits(b))),
        arb_float().prop_map(Node::Double),
        any::<char>().prop_map(Node::Letter),
        ".{0,12}".prop_map(Node::Text),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| Node::Bytes(Blob(b))),
        Just(Node::Marker(Marker)),
        Just(Node::Nothing(())),
        Just(Node::Maybe(None)),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Maybe(Some(Box::new(n)))),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Node::List),
            proptest::collection::btree_map(".{0,6}", inner.clone(), 0..5).prop_map(Node::Named),
            proptest::collection::btree_map((any::<i32>(), any::<bool>()), inner.clone(), 0..4)
                .prop_map(Node::Keyed),
            (any::<u8>(), ".{0,4}", any::<Option<bool>>()).prop_map(Node::Tuple),
            (
                ".{0,8}",
                proptest::option::of(inner.clone()),
                proptest::collection::vec(inner.clone(), 0..3),
                arb_float()
            )
                .prop_map(|(name, nested, items, ratio)| Node::Record(Record {
                    name,
                    nested: nested.map(Box::new),
                    items,
                    ratio
                })),
            inner.prop_map(|n| Node::Newtype(Wrapper(Box::new(n)))),
        ]
    })
}

/// A typed value with only what `Value` keeps exactly: integers within `i64`, `f64`s,
/// strings, bytes, options without `Some(None)`, sequences, structs, maps and enums.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Plain {
    Off,
    Number(i64),
    Real(f64),
    Word(String),
    Raw(Blob),
    Many(Vec<Plain>),
    Pair(u8, String),
    Entry { key: String, value: Option<Box<Plain>> },
    Lookup(BTreeMap<String, Plain>),
    ByNumber(BTreeMap<i16, Plain>),
}

fn arb_plain() -> impl Strategy<Value = Plain> {
    let leaf = prop_oneof![
        Just(Plain::Off),
        any::<i64>().prop_map(Plain::Number),
        any::<f64>().prop_filter("NaN is not PartialEq", |f| !f.is_nan()).prop_map(Plain::Real),
        ".{0,8}".prop_map(Plain::Word),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Plain::Raw(Blob(b))),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Plain::Many),
            (any::<u8>(), ".{0,4}").prop_map(|(a, b)| Plain::Pair(a, b)),
            (".{0,4}", proptest::option::of(inner.clone()))
                .prop_map(|(key, value)| Plain::Entry { key, value: value.map(Box::new) }),
            proptest::collection::btree_map(".{0,4}", inner.clone(), 0..4).prop_map(Plain::Lookup),
            proptest::collection::btree_map(any::<i16>(), inner, 0..4).prop_map(Plain::ByNumber),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any serde value round-trips, bit for bit (the second encoding equals the first, which
    /// compares floats by their bits), and reads as `Value` and as nothing in particular.
    #[test]
    fn arbitrary_serde_values_round_trip(node in arb_node()) {
        let bytes = codec::encode(&node).unwrap();
        prop_assert_eq!(bytes[0], codec::FORMAT_VERSION);
        let back: Node = codec::decode(&bytes).unwrap();
        prop_assert_eq!(codec::encode(&back).unwrap(), bytes.clone());
        prop_assert_eq!(format!("{back:?}"), format!("{node:?}"));
        let value: Value = codec::decode(&bytes).unwrap();
        let _: IgnoredAny = codec::decode(&bytes).unwrap();
        // Read as `Value`, written and read again: the same `Value`.
        prop_assert_eq!(reread::<Value>(&value), value);
    }

    /// A typed value read as `Value`, written again and read as its type is unchanged.
    #[test]
    fn typed_values_survive_a_trip_through_value(plain in arb_plain()) {
        let value: Value = reread(&plain);
        prop_assert_eq!(reread::<Plain>(&value), plain);
    }

    /// Every truncation of a valid encoding is a typed error (or, cut at a value's end, a
    /// trailing-bytes error), never a panic.
    #[test]
    fn truncated_encodings_are_typed_errors(node in arb_node()) {
        let bytes = codec::encode(&node).unwrap();
        for end in 0..bytes.len() {
            let truncated = &bytes[..end];
            let typed = matches!(codec::decode::<Node>(truncated), Err(Error::Decode { .. }));
            let untyped = matches!(codec::decode::<Value>(truncated), Err(Error::Decode { .. }));
            prop_assert!(typed && untyped, "cut at {}", end);
        }
    }
}

#[test]
fn a_struct_reads_as_value_with_its_field_names() {
    #[derive(Serialize)]
    struct User {
        name: &'static str,
        age: u8,
        tags: Vec<&'static str>,
        photo: Blob,
        manager: Option<&'static str>,
        scores: BTreeMap<u8, f32>,
    }
    let user = User {
        name: "ada",
        age: 36,
        tags: vec!["x"],
        photo: Blob(vec![1, 2]),
        manager: None,
        scores: [(1, 0.5)].into(),
    };
    assert_eq!(
        reread::<Value>(&user),
        Value::Object(vec![
            ("name".into(), "ada".into()),
            ("age".into(), Value::Integer(36)),
            ("tags".into(), Value::Array(vec!["x".into()])),
            ("photo".into(), Value::Bytes(vec![1, 2])),
            ("manager".into(), Value::Null),
            ("scores".into(), Value::AnyMap(vec![(Value::Integer(1), Value::Float(0.5))])),
        ])
    );
}

#[test]
fn enums_read_as_value_as_serde_json_writes_them() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum E {
        A,
        B(i8),
        C(u8, u8),
        D { x: bool },
    }
    let cases = [
        (E::A, Value::String("A".into())),
        (E::B(-1), Value::Object(vec![("B".into(), Value::Integer(-1))])),
        (
            E::C(1, 2),
            Value::Object(vec![(
                "C".into(),
                Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
            )]),
        ),
        (
            E::D { x: true },
            Value::Object(vec![("D".into(), Value::Object(vec![("x".into(), true.into())]))]),
        ),
    ];
    for (e, want) in cases {
        let value: Value = reread(&e);
        assert_eq!(value, want);
        // And back: a string names a unit variant, a one-entry object any other.
        assert_eq!(reread::<E>(&value), e);
        assert_eq!(reread::<serde_json::Value>(&e), serde_json::to_value(&e).unwrap());
    }
}

#[test]
fn serde_json_values_round_trip() {
    let doc = json!({
        "null": null,
        "flag": true,
        "small": -3,
        "big": u64::MAX,
        "min": i64::MIN,
        "float": 2.5,
        "text": "héllo",
        "list": [1, "two", [3.0], {"four": 4}],
        "empty": {},
        "nested": {"a": {"b": {"c": []}}},
    });
    assert_eq!(reread::<serde_json::Value>(&doc), doc);
    // JSON read as `Value` keeps the map's order (serde_json's: sorted) and kinds.
    let value: Value = reread(&json!({"b": 1, "a": [null, 1.5]}));
    assert_eq!(
        value,
        Value::Object(vec![
            ("a".into(), Value::Array(vec![Value::Null, Value::Float(1.5)])),
            ("b".into(), Value::Integer(1)),
        ])
    );
    // A `Value` read as JSON.
    let value = Value::Object(vec![
        ("n".into(), Value::Integer(-7)),
        ("s".into(), Value::Set(vec![Value::Bool(true)])),
        ("d".into(), Value::Date(5.0)),
        ("u".into(), Value::Undefined),
    ]);
    assert_eq!(
        reread::<serde_json::Value>(&value),
        json!({"n": -7, "s": [true], "d": 5.0, "u": null})
    );
}

#[test]
fn a_new_field_with_a_default_reads_old_values() {
    #[derive(Serialize)]
    struct V1 {
        id: u32,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct V2 {
        id: u32,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default = "ten")]
        limit: u8,
        note: Option<String>,
    }
    fn ten() -> u8 {
        10
    }
    assert_eq!(reread::<V2>(&V1 { id: 4 }), V2 { id: 4, tags: vec![], limit: 10, note: None });
}

#[test]
fn a_removed_field_is_ignored() {
    #[derive(Serialize)]
    struct V1 {
        id: u32,
        gone: BTreeMap<String, Vec<Option<(u8, String)>>>,
        also_gone: Node,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct V2 {
        id: u32,
    }
    let gone = [("k".to_string(), vec![Some((1, "x".to_string())), None])].into();
    let old = V1 { id: 9, gone, also_gone: Node::List(vec![Node::Unit, Node::Int(3)]) };
    assert_eq!(reread::<V2>(&old), V2 { id: 9 });
}

#[test]
fn fields_change_type_within_what_serde_accepts() {
    #[derive(Serialize)]
    struct V1 {
        count: u8,
        ratio: i32,
        name: String,
        state: String,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum State {
        Open,
        Closed,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct V2 {
        count: u64,
        ratio: f64,
        name: Option<String>,
        state: State,
    }
    let old = V1 { count: 200, ratio: -3, name: "n".into(), state: "Closed".into() };
    assert_eq!(
        reread::<V2>(&old),
        V2 { count: 200, ratio: -3.0, name: Some("n".into()), state: State::Closed }
    );
}

#[test]
fn skip_serializing_if_and_default_round_trip() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sparse {
        id: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<u8>,
    }
    for s in [
        Sparse { id: 1, note: None, tags: vec![] },
        Sparse { id: 2, note: Some("x".into()), tags: vec![] },
        Sparse { id: 3, note: None, tags: vec![7] },
    ] {
        assert_eq!(reread::<Sparse>(&s), s);
    }
    let value: Value = reread(&Sparse { id: 1, note: None, tags: vec![] });
    assert_eq!(value, Value::Object(vec![("id".into(), Value::Integer(1))]));
}

#[test]
fn untagged_and_internally_tagged_enums_round_trip() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        // Before `Text`: a unit variant reads untyped as its name, as in JSON.
        Kind(Shape),
        Text(String),
        Point { x: f64, y: f64 },
        List(Vec<Loose>),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Dot,
        Circle(u8),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "type")]
    enum Event {
        Created { id: u32 },
        Renamed { id: u32, to: String },
        Cleared,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "t", content = "c")]
    enum Adjacent {
        One(u8),
        Two(String, bool),
    }
    let loose = Loose::List(vec![
        Loose::Number(-4),
        Loose::Text("t".into()),
        Loose::Point { x: 1.0, y: -0.5 },
        Loose::Kind(Shape::Dot),
        Loose::Kind(Shape::Circle(2)),
    ]);
    assert_eq!(reread::<Loose>(&loose), loose);
    for e in [Event::Created { id: 1 }, Event::Renamed { id: 2, to: "x".into() }, Event::Cleared] {
        assert_eq!(reread::<Event>(&e), e);
    }
    for a in [Adjacent::One(1), Adjacent::Two("s".into(), true)] {
        assert_eq!(reread::<Adjacent>(&a), a);
    }
}

#[test]
fn flatten_round_trips_and_collects_unknown_fields() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Meta {
        created: u64,
        by: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Doc {
        id: u32,
        #[serde(flatten)]
        meta: Meta,
        #[serde(flatten)]
        extra: BTreeMap<String, Value>,
    }
    let doc = Doc {
        id: 1,
        meta: Meta { created: 99, by: "ada".into() },
        extra: [
            ("color".to_string(), Value::String("red".into())),
            ("sizes".to_string(), Value::Array(vec![Value::Integer(1), Value::Float(2.5)])),
        ]
        .into(),
    };
    assert_eq!(reread::<Doc>(&doc), doc);

    // An older, wider struct read into the flattened one: unknown fields land in `extra`.
    #[derive(Serialize)]
    struct Wide {
        id: u32,
        created: u64,
        by: &'static str,
        legacy: bool,
    }
    let read: Doc = reread(&Wide { id: 2, created: 3, by: "x", legacy: true });
    assert_eq!(read.extra, [("legacy".to_string(), Value::Bool(true))].into());
}

#[test]
fn renamed_variants_and_fields_read_through_alias() {
    #[derive(Serialize)]
    enum Old {
        Pending,
        Shipped { tracking: String },
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum New {
        #[serde(rename = "Waiting", alias = "Pending")]
        Waiting,
        #[serde(alias = "Shipped")]
        Sent {
            #[serde(alias = "tracking")]
            code: String,
        },
    }
    assert_eq!(reread::<New>(&Old::Pending), New::Waiting);
    assert_eq!(
        reread::<New>(&Old::Shipped { tracking: "z".into() }),
        New::Sent { code: "z".into() }
    );
}

#[test]
fn values_read_as_typed_data() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
        y: Option<f32>,
        tags: Vec<String>,
    }
    let value = Value::Object(vec![
        ("x".into(), Value::Integer(3)),
        ("tags".into(), Value::Array(vec!["a".into()])),
        ("y".into(), Value::Float(0.25)),
    ]);
    assert_eq!(reread::<Point>(&value), Point { x: 3, y: Some(0.25), tags: vec!["a".into()] });
    let map: BTreeMap<i64, String> =
        reread(&Value::AnyMap(vec![(Value::Integer(2), "two".into())]));
    assert_eq!(map, [(2, "two".to_string())].into());
}

#[test]
fn integers_beyond_i64_read_as_the_nearest_float() {
    assert_eq!(reread::<Value>(&u64::MAX), Value::Float(u64::MAX as f64));
    assert_eq!(reread::<Value>(&i128::MIN), Value::Float(i128::MIN as f64));
    assert_eq!(reread::<Value>(&(i64::MAX as u64)), Value::Integer(i64::MAX));
}

#[test]
fn the_kv_api_reads_typed_values_as_value() {
    #[derive(Serialize)]
    struct Item {
        sku: &'static str,
        qty: u16,
    }
    let kv = Kv::new(Database::open_in_memory(Options::default()).unwrap());
    kv.put("a", &Item { sku: "x1", qty: 2 }).unwrap();
    kv.put("b", &(1u8, "two")).unwrap();
    kv.put("c", &json!({"k": [true]})).unwrap();
    let listed: Vec<(String, Value)> = kv.list(&Default::default()).unwrap();
    assert_eq!(
        listed,
        [
            (
                "a".to_string(),
                Value::Object(vec![("sku".into(), "x1".into()), ("qty".into(), Value::Integer(2))])
            ),
            ("b".to_string(), Value::Array(vec![Value::Integer(1), "two".into()])),
            (
                "c".to_string(),
                Value::Object(vec![("k".into(), Value::Array(vec![Value::Bool(true)]))])
            ),
        ]
    );
    let json: Option<serde_json::Value> = kv.get("a").unwrap();
    assert_eq!(json, Some(json!({"sku": "x1", "qty": 2})));
}

#[test]
fn hostile_length_prefixes_allocate_nothing_and_are_typed_errors() {
    let claims: [&[u8]; 6] = [
        &[0x0d, 0xff, 0xff, 0xff, 0xff],             // a string of 4 GiB
        &[0x0e, 0xff, 0xff, 0xff, 0x7f, 1, 2],       // bytes of 2 GiB
        &[0x11, 0xff, 0xff, 0xff, 0xff, 0, 0, 0],    // 4 billion elements
        &[0x12, 0x00, 0x00, 0x00, 0x80, 0, 0],       // 2 billion entries
        &[0x13, 0xff, 0xff, 0xff, 0xff, b'A'],       // a variant name of 4 GiB
        &[0x16, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00], // a set of 16 with 2 bytes left
    ];
    for claim in claims {
        let mut bytes = vec![codec::FORMAT_VERSION];
        bytes.extend_from_slice(claim);
        for result in [
            codec::decode::<Value>(&bytes).map(drop),
            codec::decode::<Node>(&bytes).map(drop),
            codec::decode::<IgnoredAny>(&bytes).map(drop),
            codec::decode::<serde_json::Value>(&bytes).map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{claim:?}: {err}");
        }
    }
}

#[test]
fn deep_nesting_of_any_kind_is_refused_for_any_type() {
    // 200 nested maps {"a": {"a": ...}}, 200 nested variants, 200 nested options.
    let mut maps = vec![codec::FORMAT_VERSION];
    for _ in 0..200 {
        maps.extend_from_slice(&[0x12, 1, 0, 0, 0, 0x0d, 1, 0, 0, 0, b'a']);
    }
    maps.push(0x00);
    let mut variants = vec![codec::FORMAT_VERSION];
    for _ in 0..200 {
        variants.extend_from_slice(&[0x13, 1, 0, 0, 0, b'A']);
    }
    variants.push(0x00);
    let mut options = vec![codec::FORMAT_VERSION];
    options.extend(std::iter::repeat_n(0x10, 200));
    options.push(0x00);
    for bytes in [&maps, &variants, &options] {
        for err in [
            codec::decode::<Value>(bytes).unwrap_err(),
            codec::decode::<serde_json::Value>(bytes).unwrap_err(),
            codec::decode::<IgnoredAny>(bytes).unwrap_err(),
        ] {
            assert!(err.to_string().contains("nest more than 128 levels"), "{err}");
        }
    }
}
