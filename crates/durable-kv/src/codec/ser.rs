//! Format 2's encoder: a `serde::Serializer` that writes tags and payloads straight into the
//! output buffer.

use serde::ser::{self, Serialize};

use super::{CodecError, Depth, names, tag};

type Result<T> = std::result::Result<T, CodecError>;

/// Writes one value in format 2.
pub(super) struct Encoder {
    out: Vec<u8>,
    /// Levels open around the value being written (see [`Encoder::open`]).
    depth: Depth,
}

impl Encoder {
    /// An encoder whose output starts with the version byte.
    pub(super) fn new(version: u8) -> Self {
        let mut out = Vec::with_capacity(32);
        out.push(version);
        Encoder { out, depth: Depth::default() }
    }

    /// The bytes written.
    pub(super) fn finish(self) -> Vec<u8> {
        self.out
    }

    /// Enters one level (the inside of a `SOME`, `VARIANT`, `SEQ` or `MAP`); the decoder
    /// counts the same levels and refuses the same depths.
    #[inline]
    fn open(&mut self) -> Result<()> {
        self.depth.enter()
    }

    #[inline]
    fn close(&mut self) {
        self.depth.leave();
    }

    /// A length or count as the `u32` the format stores.
    #[inline]
    fn u32(&mut self, n: usize) -> Result<()> {
        let n = u32::try_from(n)
            .map_err(|_| CodecError(format!("a length of {n} does not fit the format's u32")))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }

    /// A tag, then a length and bytes (`STR`, `BYTES`, a variant's name).
    #[inline]
    fn text(&mut self, tag: u8, bytes: &[u8]) -> Result<()> {
        self.out.push(tag);
        self.u32(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// A signed integer in the narrowest tag that holds it, as one fixed-size write.
    #[inline]
    fn int(&mut self, v: i64) {
        if v as i8 as i64 == v {
            self.out.extend_from_slice(&[tag::I8, v as u8]);
        } else if v as i16 as i64 == v {
            let [a, b] = (v as i16).to_le_bytes();
            self.out.extend_from_slice(&[tag::I16, a, b]);
        } else if v as i32 as i64 == v {
            let [a, b, c, d] = (v as i32).to_le_bytes();
            self.out.extend_from_slice(&[tag::I32, a, b, c, d]);
        } else {
            let mut buf = [tag::I64; 9];
            buf[1..].copy_from_slice(&v.to_le_bytes());
            self.out.extend_from_slice(&buf);
        }
    }

    /// A variant's tag and name; its payload follows.
    #[inline]
    fn variant(&mut self, name: &str) -> Result<()> {
        self.text(tag::VARIANT, name.as_bytes())?;
        self.open()
    }

    /// Opens a `SEQ` or `MAP` whose count is written when it ends. Counting here rather than
    /// trusting the length hint keeps `skip_serializing_if` and hand-written impls honest.
    #[inline]
    fn begin(&mut self, tag: u8, variant_levels: usize) -> Result<Compound<'_>> {
        self.open()?;
        self.out.push(tag);
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        Ok(Compound { enc: self, at, count: 0, variant_levels })
    }
}

/// A `SEQ` or `MAP` being written: where its count goes, and how many entries so far.
pub(super) struct Compound<'a> {
    enc: &'a mut Encoder,
    at: usize,
    count: usize,
    /// 1 when the container is a variant's payload (the variant's level closes with it).
    variant_levels: usize,
}

impl Compound<'_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.count += 1;
        self.enc.text(tag::STR, key.as_bytes())?;
        value.serialize(&mut *self.enc)
    }

    #[inline]
    fn end(self) -> Result<()> {
        let count = u32::try_from(self.count).map_err(|_| {
            CodecError(format!("{} entries do not fit the format's u32", self.count))
        })?;
        self.enc.out[self.at..self.at + 4].copy_from_slice(&count.to_le_bytes());
        for _ in 0..=self.variant_levels {
            self.enc.close();
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    /// Format 2 is self-describing: types with a readable form (addresses, UUIDs) use it.
    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(if v { tag::TRUE } else { tag::FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<()> {
        self.int(v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        if let Ok(v) = i64::try_from(v) {
            self.int(v);
        } else if let Ok(v) = u64::try_from(v) {
            self.out.push(tag::U64);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else if v < 0 {
            self.out.push(tag::I128);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            self.out.push(tag::U128);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<()> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<()> {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => {
                self.out.push(tag::U64);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => {
                self.out.push(tag::U128);
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
        }
    }

    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.push(tag::F32);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.push(tag::F64);
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        self.out.push(tag::CHAR);
        self.out.extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<()> {
        self.text(tag::STR, v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.text(tag::BYTES, v)
    }

    fn serialize_none(self) -> Result<()> {
        self.out.push(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.open()?;
        self.out.push(tag::SOME);
        value.serialize(&mut *self)?;
        self.close();
        Ok(())
    }

    fn serialize_unit(self) -> Result<()> {
        self.out.push(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<()> {
        self.out.push(if name == names::UNDEFINED { tag::UNDEFINED } else { tag::UNIT });
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.variant(variant)?;
        self.out.push(tag::UNIT);
        self.close();
        Ok(())
    }

    /// Transparent, except for `Value`'s reserved names, whose inner value's tag is replaced
    /// by its flavour (same layout).
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        let (plain, flavour) = match name {
            names::DATE => (tag::F64, tag::DATE),
            names::SET => (tag::SEQ, tag::SET),
            names::ANY_MAP => (tag::MAP, tag::ANY_MAP),
            _ => return value.serialize(self),
        };
        let at = self.out.len();
        value.serialize(&mut *self)?;
        match self.out.get_mut(at) {
            Some(t) if *t == plain => {
                *t = flavour;
                Ok(())
            }
            _ => Err(CodecError(format!("{name} must wrap a value of tag {plain:#04x}"))),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant(variant)?;
        value.serialize(&mut *self)?;
        self.close();
        Ok(())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>> {
        self.begin(tag::SEQ, 0)
    }

    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>> {
        self.begin(tag::SEQ, 0)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>> {
        self.begin(tag::SEQ, 0)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>> {
        self.variant(variant)?;
        self.begin(tag::SEQ, 1)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>> {
        self.begin(tag::MAP, 0)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>> {
        self.begin(tag::MAP, 0)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>> {
        self.variant(variant)?;
        self.begin(tag::MAP, 1)
    }
}

/// The sequence-like compound traits: each call appends one element.
macro_rules! elements {
    ($($name:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$name for Compound<'_> {
            type Ok = ();
            type Error = CodecError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }

            fn end(self) -> Result<()> {
                Compound::end(self)
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.element(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.enc)
    }

    fn end(self) -> Result<()> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        Compound::end(self)
    }
}
