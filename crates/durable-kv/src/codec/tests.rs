//! Unit tests of format 2's bytes: the layouts `docs/storage-format.md` promises, checked
//! byte for byte, and the decoder's refusals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DECODE_LIMIT, FORMAT_VERSION, decode, encode, tag};
use crate::{Error, MAX_DEPTH, Value};

/// Checks that `value` encodes as the version byte followed by `body`, and decodes back.
#[track_caller]
fn check<T>(value: T, body: &[u8])
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let bytes = encode(&value).unwrap();
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(&bytes[1..], body, "encoding of {value:?}");
    assert_eq!(decode::<T>(&bytes).unwrap(), value);
}

/// The decode error message of `body` read as `T`.
#[track_caller]
fn refused<T: for<'de> Deserialize<'de> + std::fmt::Debug>(body: &[u8]) -> String {
    let mut bytes = vec![FORMAT_VERSION];
    bytes.extend_from_slice(body);
    match decode::<T>(&bytes) {
        Err(Error::Decode { message }) => message,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn scalars_have_one_tag_and_a_fixed_width_payload() {
    check((), &[tag::UNIT]);
    check(false, &[tag::FALSE]);
    check(true, &[tag::TRUE]);
    check('é', &[tag::CHAR, 0xe9, 0, 0, 0]);
    check(1.5f32, &[tag::F32, 0, 0, 0xc0, 0x3f]);
    check(-0.0f64, &[tag::F64, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    check("hé".to_string(), &[tag::STR, 3, 0, 0, 0, b'h', 0xc3, 0xa9]);
    check(None::<u8>, &[tag::NONE]);
    check(Some(()), &[tag::SOME, tag::UNIT]);
}

#[test]
fn integers_take_the_narrowest_tag_whatever_their_type() {
    check(5u64, &[tag::I8, 5]);
    check(-1i128, &[tag::I8, 0xff]);
    check(200u8, &[tag::I16, 200, 0]);
    check(-40_000i32, &[tag::I32, 0xc0, 0x63, 0xff, 0xff]);
    check(1i64 << 40, &[tag::I64, 0, 0, 0, 0, 0, 1, 0, 0]);
    check(u64::MAX, &[tag::U64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let mut wide = vec![tag::I128];
    wide.extend_from_slice(&i128::MIN.to_le_bytes());
    check(i128::MIN, &wide);
    let mut wide = vec![tag::U128];
    wide.extend_from_slice(&u128::MAX.to_le_bytes());
    check(u128::MAX, &wide);
    // Any width reads into any type that holds the value.
    assert_eq!(decode::<u8>(&encode(&7i64).unwrap()).unwrap(), 7);
    assert_eq!(decode::<i128>(&encode(&u64::MAX).unwrap()).unwrap(), u64::MAX.into());
    assert!(decode::<u8>(&encode(&300u16).unwrap()).is_err());
    assert!(decode::<u32>(&encode(&-1i8).unwrap()).is_err());
}

#[test]
fn fixed_width_fields_are_laid_out_as_bincode_writes_them() {
    // Format 2 uses bincode (the format-1 configuration) as its byte layer: each payload
    // field is what bincode writes for that Rust type.
    fn bincode_bytes<T: Serialize>(v: T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, super::format_1_config()).unwrap()
    }
    assert_eq!(&encode(&-2i16.pow(14)).unwrap()[2..], bincode_bytes(-2i16.pow(14)));
    assert_eq!(&encode(&i64::MIN).unwrap()[2..], bincode_bytes(i64::MIN));
    assert_eq!(&encode(&f64::NAN).unwrap()[2..], bincode_bytes(f64::NAN));
    assert_eq!(&encode(&'x').unwrap()[2..], bincode_bytes(u32::from('x')));
    assert_eq!(&encode("abc").unwrap()[2..6], bincode_bytes(3u32));
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Point {
    x: i16,
    label: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
enum Shape {
    Empty,
    Dot(u8),
    Line(u8, u8),
    Box { w: u8 },
}

#[test]
fn structs_are_maps_with_field_names() {
    #[rustfmt::skip]
    check(Point { x: 1, label: "a".into() }, &[
        tag::MAP, 2, 0, 0, 0,
        tag::STR, 1, 0, 0, 0, b'x', tag::I8, 1,
        tag::STR, 5, 0, 0, 0, b'l', b'a', b'b', b'e', b'l', tag::STR, 1, 0, 0, 0, b'a',
    ]);
    let map: BTreeMap<u8, bool> = [(1, true)].into();
    check(map, &[tag::MAP, 1, 0, 0, 0, tag::I8, 1, tag::TRUE]);
    check((1u8, 'a'), &[tag::SEQ, 2, 0, 0, 0, tag::I8, 1, tag::CHAR, b'a', 0, 0, 0]);
    check(vec![Some(1u8)], &[tag::SEQ, 1, 0, 0, 0, tag::SOME, tag::I8, 1]);
    check(Value::Bytes(vec![0, 0xff]), &[tag::BYTES, 2, 0, 0, 0, 0, 0xff]);
}

#[test]
fn variants_are_stored_by_name_with_one_payload() {
    check(Shape::Empty, &[tag::VARIANT, 5, 0, 0, 0, b'E', b'm', b'p', b't', b'y', tag::UNIT]);
    check(Shape::Dot(3), &[tag::VARIANT, 3, 0, 0, 0, b'D', b'o', b't', tag::I8, 3]);
    #[rustfmt::skip]
    check(Shape::Line(1, 2), &[
        tag::VARIANT, 4, 0, 0, 0, b'L', b'i', b'n', b'e',
        tag::SEQ, 2, 0, 0, 0, tag::I8, 1, tag::I8, 2,
    ]);
    #[rustfmt::skip]
    check(Shape::Box { w: 9 }, &[
        tag::VARIANT, 3, 0, 0, 0, b'B', b'o', b'x',
        tag::MAP, 1, 0, 0, 0, tag::STR, 1, 0, 0, 0, b'w', tag::I8, 9,
    ]);
}

#[test]
fn value_kinds_outside_serde_use_flavoured_tags() {
    check(Value::Undefined, &[tag::UNDEFINED]);
    check(Value::Null, &[tag::UNIT]);
    check(Value::Date(0.0), &[tag::DATE, 0, 0, 0, 0, 0, 0, 0, 0]);
    check(Value::Set(vec![Value::Null]), &[tag::SET, 1, 0, 0, 0, tag::UNIT]);
    check(Value::Array(vec![Value::Null]), &[tag::SEQ, 1, 0, 0, 0, tag::UNIT]);
    check(
        Value::AnyMap(vec![(Value::Integer(1), Value::Null)]),
        &[tag::ANY_MAP, 1, 0, 0, 0, tag::I8, 1, tag::UNIT],
    );
    check(
        Value::Object(vec![("k".into(), Value::Null)]),
        &[tag::MAP, 1, 0, 0, 0, tag::STR, 1, 0, 0, 0, b'k', tag::UNIT],
    );
    // Other readers see the plain kinds.
    assert_eq!(decode::<Vec<()>>(&encode(&Value::Set(vec![Value::Null])).unwrap()).unwrap(), [()]);
    assert_eq!(decode::<f64>(&encode(&Value::Date(2.5)).unwrap()).unwrap(), 2.5);
    assert_eq!(decode::<()>(&encode(&Value::Undefined).unwrap()).unwrap(), ());
}

#[test]
fn counts_are_written_from_what_was_serialized_not_the_hint() {
    #[derive(Serialize)]
    struct Sparse {
        a: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<u8>,
    }
    let bytes = encode(&Sparse { a: 1, b: None }).unwrap();
    assert_eq!(&bytes[1..6], &[tag::MAP, 1, 0, 0, 0]);
    // An iterator without a length: the count is patched in when the sequence ends.
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..3u8).filter(|_| true))
        }
    }
    assert_eq!(&encode(&Unsized).unwrap()[1..6], &[tag::SEQ, 3, 0, 0, 0]);
}

#[test]
fn hostile_bodies_are_typed_errors() {
    assert!(refused::<Value>(&[]).contains("ends early"));
    assert!(refused::<Value>(&[0xee]).contains("unknown tag 0xee"));
    assert!(refused::<Value>(&[tag::I64, 1, 2]).contains("ends early"));
    assert!(refused::<Value>(&[tag::STR, 0xff, 0xff, 0xff, 0xff, b'a']).contains("exceeds"));
    assert!(refused::<Value>(&[tag::SEQ, 0xff, 0xff, 0xff, 0xff, 0]).contains("exceeds"));
    assert!(refused::<Value>(&[tag::MAP, 2, 0, 0, 0, 0, 0, 0]).contains("exceeds"));
    assert!(refused::<Value>(&[tag::STR, 1, 0, 0, 0, 0xff]).contains("UTF-8"));
    assert!(refused::<Value>(&[tag::CHAR, 0, 0xd8, 0, 0]).contains("scalar"));
    assert!(refused::<Value>(&[tag::UNIT, tag::UNIT]).contains("trailing"));
    // A struct variant's name must be text too.
    assert!(refused::<Shape>(&[tag::VARIANT, 1, 0, 0, 0, 0xff, tag::UNIT]).contains("UTF-8"));
    // A tuple with more elements than the type reads.
    let triple = encode(&(1u8, 2u8, 3u8)).unwrap();
    assert!(decode::<(u8, u8)>(&triple).is_err());
}

#[test]
fn nesting_is_limited_in_both_directions_for_every_kind_of_level() {
    fn nested_some(levels: usize) -> Vec<u8> {
        let mut body = vec![tag::SOME; levels];
        body.push(tag::UNIT);
        body
    }
    let deep = nested_some(MAX_DEPTH + 1);
    assert!(refused::<Value>(&deep).contains("nest more than 128"));
    assert!(refused::<serde::de::IgnoredAny>(&deep).contains("nest more than 128"));
    let mut ok = vec![FORMAT_VERSION];
    ok.extend(nested_some(MAX_DEPTH));
    assert_eq!(decode::<Value>(&ok).unwrap(), Value::Null);

    // Variants nest too; the encoder refuses what the decoder would.
    #[derive(Serialize, Deserialize, Debug)]
    enum Chain {
        End,
        Link(Box<Chain>),
    }
    let chain = |n: usize| (0..n).fold(Chain::End, |c, _| Chain::Link(Box::new(c)));
    let bytes = encode(&chain(MAX_DEPTH - 1)).unwrap();
    assert!(decode::<Chain>(&bytes).is_ok());
    let err = encode(&chain(MAX_DEPTH)).unwrap_err();
    assert!(matches!(&err, Error::Encode { message } if message.contains("nest")), "{err}");
}

#[test]
fn values_over_the_limit_are_refused() {
    let mut huge = vec![FORMAT_VERSION];
    huge.resize(DECODE_LIMIT + 2, 0);
    assert!(matches!(decode::<Value>(&huge), Err(Error::Decode { .. })));
    let big = vec![0u8; DECODE_LIMIT];
    assert!(matches!(encode(&Value::Bytes(big)), Err(Error::Encode { .. })));
}
