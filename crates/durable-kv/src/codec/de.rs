//! Format 2's decoder: a `serde::Deserializer` over the stored slice, with `deserialize_any`.
//!
//! Every `deserialize_*` hint is answered from the stored tag: a hint that matches reads the
//! value as asked (an `u8` field gets `visit_u8`), anything else falls back to
//! `deserialize_any`, so the visitor either accepts the stored kind (an integer into an `f64`
//! field, a bare value into an `Option`) or reports serde's usual "invalid type" error.

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{CodecError, Depth, names, tag};

type Result<T> = std::result::Result<T, CodecError>;

/// Reads one format-2 value from a slice.
pub(super) struct Decoder<'de> {
    input: &'de [u8],
    /// The body's length, to say where an error is.
    len: usize,
    /// Levels open around the value being read (as [`super::ser::Encoder`] counts them).
    depth: Depth,
}

/// A stored integer, as the visitor that takes it without loss would want it.
#[derive(Clone, Copy)]
enum Int {
    /// A negative value that fits `i64`.
    Neg(i64),
    /// A non-negative value that fits `u64`.
    Pos(u64),
    /// Below `i64::MIN`.
    WideNeg(i128),
    /// Above `u64::MAX`.
    WidePos(u128),
}

impl Int {
    #[inline]
    fn from_i64(v: i64) -> Int {
        if v < 0 { Int::Neg(v) } else { Int::Pos(v as u64) }
    }

    #[inline]
    fn from_i128(v: i128) -> Int {
        if let Ok(v) = i64::try_from(v) {
            Int::from_i64(v)
        } else if let Ok(v) = u64::try_from(v) {
            Int::Pos(v)
        } else if v < 0 {
            Int::WideNeg(v)
        } else {
            Int::WidePos(v as u128)
        }
    }

    #[inline]
    fn from_u128(v: u128) -> Int {
        match u64::try_from(v) {
            Ok(v) => Int::Pos(v),
            Err(_) => Int::WidePos(v),
        }
    }

    /// The value as `T`, if it fits.
    #[inline]
    fn to<T>(self) -> Option<T>
    where
        T: TryFrom<i64> + TryFrom<u64> + TryFrom<i128> + TryFrom<u128>,
    {
        match self {
            Int::Neg(v) => T::try_from(v).ok(),
            Int::Pos(v) => T::try_from(v).ok(),
            Int::WideNeg(v) => T::try_from(v).ok(),
            Int::WidePos(v) => T::try_from(v).ok(),
        }
    }

    /// Hands the value to `visitor` as `deserialize_any` does (as serde_json does: `u64` for
    /// non-negative values, `i64` for negative ones, 128 bits only beyond).
    #[inline]
    fn visit<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self {
            Int::Neg(v) => visitor.visit_i64(v),
            Int::Pos(v) => visitor.visit_u64(v),
            Int::WideNeg(v) => visitor.visit_i128(v),
            Int::WidePos(v) => visitor.visit_u128(v),
        }
    }
}

impl<'de> Decoder<'de> {
    pub(super) fn new(input: &'de [u8]) -> Self {
        Decoder { input, len: input.len(), depth: Depth::default() }
    }

    /// Succeeds if the whole body was read.
    pub(super) fn finish(&self) -> Result<()> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(CodecError(format!("{} trailing bytes after the value", self.input.len())))
        }
    }

    #[inline]
    fn at(&self) -> usize {
        self.len - self.input.len()
    }

    #[cold]
    fn eof(&self) -> CodecError {
        CodecError(format!("the value ends early (at byte {})", self.at()))
    }

    #[inline]
    fn peek(&self) -> Result<u8> {
        self.input.first().copied().ok_or_else(|| self.eof())
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or_else(|| self.eof())?;
        self.input = rest;
        Ok(b)
    }

    /// Drops the tag just peeked.
    #[inline]
    fn bump(&mut self) {
        self.input = &self.input[1..];
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(self.eof());
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        match self.input.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.input = rest;
                Ok(*head)
            }
            None => Err(self.eof()),
        }
    }

    #[inline]
    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A length prefix followed by that many bytes, which must be there: a hostile length
    /// is refused before anything is allocated.
    #[inline]
    fn prefixed(&mut self) -> Result<&'de [u8]> {
        let n = self.u32()? as usize;
        if n > self.input.len() {
            return Err(CodecError(format!(
                "a length of {n} bytes at byte {} exceeds the {} bytes left",
                self.at() - 4,
                self.input.len()
            )));
        }
        self.take(n)
    }

    #[inline]
    fn str(&mut self) -> Result<&'de str> {
        let at = self.at();
        let bytes = self.prefixed()?;
        std::str::from_utf8(bytes)
            .map_err(|e| CodecError(format!("invalid UTF-8 in the string at byte {at}: {e}")))
    }

    /// A count of `per`-value entries: each value takes at least one byte, so a count the
    /// rest of the input cannot hold is refused (and size hints stay honest).
    #[inline]
    fn count(&mut self, per: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(per) > self.input.len() {
            return Err(CodecError(format!(
                "a count of {n} at byte {} exceeds the {} bytes left",
                self.at() - 4,
                self.input.len()
            )));
        }
        Ok(n)
    }

    #[inline]
    fn open(&mut self) -> Result<()> {
        self.depth.enter()
    }

    #[inline]
    fn close(&mut self) {
        self.depth.leave();
    }

    /// The integer next in the input, if the next tag is an integer's (`I8` read inline).
    #[inline]
    fn next_int(&mut self) -> Result<Option<Int>> {
        match *self.input {
            [tag::I8, b, ..] => {
                self.input = &self.input[2..];
                Ok(Some(Int::from_i64((b as i8).into())))
            }
            [t, ..] if (tag::I16..=tag::U128).contains(&t) => {
                self.bump();
                self.int(t).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The integer after an integer tag.
    fn int(&mut self, tag: u8) -> Result<Int> {
        Ok(match tag {
            tag::I8 => Int::from_i64(i8::from_le_bytes(self.array()?).into()),
            tag::I16 => Int::from_i64(i16::from_le_bytes(self.array()?).into()),
            tag::I32 => Int::from_i64(i32::from_le_bytes(self.array()?).into()),
            tag::I64 => Int::from_i64(i64::from_le_bytes(self.array()?)),
            tag::U64 => Int::Pos(u64::from_le_bytes(self.array()?)),
            tag::I128 => Int::from_i128(i128::from_le_bytes(self.array()?)),
            _ => Int::from_u128(u128::from_le_bytes(self.array()?)),
        })
    }

    #[inline]
    fn f64(&mut self) -> Result<f64> {
        self.array().map(|b| f64::from_bits(u64::from_le_bytes(b)))
    }

    #[inline]
    fn f32(&mut self) -> Result<f32> {
        self.array().map(|b| f32::from_bits(u32::from_le_bytes(b)))
    }

    #[cold]
    fn unknown(&self, tag: u8) -> CodecError {
        CodecError(format!("unknown tag {tag:#04x} at byte {}", self.at() - 1))
    }

    /// The elements after a `SEQ` (or `SET`) tag.
    #[inline]
    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let left = self.count(1)?;
        self.open()?;
        let mut access = Elements { de: self, left };
        let value = visitor.visit_seq(&mut access)?;
        if access.left > 0 {
            return Err(de::Error::invalid_length(left, &"fewer elements in the sequence"));
        }
        self.close();
        Ok(value)
    }

    /// The entries after a `MAP` (or `ANY_MAP`) tag.
    #[inline]
    fn map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let left = self.count(2)?;
        self.open()?;
        let mut access = Entries { de: self, left, value_next: false };
        let value = visitor.visit_map(&mut access)?;
        if access.left > 0 || access.value_next {
            return Err(de::Error::invalid_length(left, &"fewer entries in the map"));
        }
        self.close();
        Ok(value)
    }

    /// Reads past one value without looking at it (an ignored field).
    fn skip(&mut self) -> Result<()> {
        let tag = self.byte()?;
        match tag {
            tag::UNIT | tag::UNDEFINED | tag::FALSE | tag::TRUE | tag::NONE => {}
            tag::I8 => drop(self.take(1)?),
            tag::I16 => drop(self.take(2)?),
            tag::I32 | tag::F32 | tag::CHAR => drop(self.take(4)?),
            tag::I64 | tag::U64 | tag::F64 | tag::DATE => drop(self.take(8)?),
            tag::I128 | tag::U128 => drop(self.take(16)?),
            tag::STR | tag::BYTES => drop(self.prefixed()?),
            tag::SOME => {
                self.open()?;
                self.skip()?;
                self.close();
            }
            tag::SEQ | tag::SET => {
                let n = self.count(1)?;
                self.open()?;
                for _ in 0..n {
                    self.skip()?;
                }
                self.close();
            }
            tag::MAP | tag::ANY_MAP => {
                let n = self.count(2)?;
                self.open()?;
                for _ in 0..2 * n {
                    self.skip()?;
                }
                self.close();
            }
            tag::VARIANT => {
                self.prefixed()?;
                self.open()?;
                self.skip()?;
                self.close();
            }
            _ => return Err(self.unknown(tag)),
        }
        Ok(())
    }
}

/// The `deserialize_*` method of one integer type: the stored integer as that type if it
/// fits, else as `deserialize_any` hands it over (so the visitor reports the range error).
macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            match self.next_int()? {
                Some(n) => match n.to::<$ty>() {
                    Some(v) => visitor.$visit(v),
                    None => n.visit(visitor),
                },
                None => self.deserialize_any(visitor),
            }
        }
    };
}

impl<'de> Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let tag = self.byte()?;
        match tag {
            tag::UNIT | tag::UNDEFINED => visitor.visit_unit(),
            tag::FALSE => visitor.visit_bool(false),
            tag::TRUE => visitor.visit_bool(true),
            tag::I8..=tag::U128 => self.int(tag)?.visit(visitor),
            tag::F32 => visitor.visit_f32(self.f32()?),
            tag::F64 | tag::DATE => visitor.visit_f64(self.f64()?),
            tag::CHAR => {
                let at = self.at();
                let n = self.u32()?;
                let c = char::from_u32(n).ok_or_else(|| {
                    CodecError(format!("{n:#x} at byte {at} is not a Unicode scalar value"))
                })?;
                visitor.visit_char(c)
            }
            tag::STR => visitor.visit_borrowed_str(self.str()?),
            tag::BYTES => visitor.visit_borrowed_bytes(self.prefixed()?),
            tag::NONE => visitor.visit_none(),
            tag::SOME => {
                self.open()?;
                let value = visitor.visit_some(&mut *self)?;
                self.close();
                Ok(value)
            }
            tag::SEQ | tag::SET => self.seq(visitor),
            tag::MAP | tag::ANY_MAP => self.map(visitor),
            // An enum read without its type: a unit variant as its name, any other as a
            // one-entry map from its name to its payload (serde_json's reading).
            tag::VARIANT => {
                let name = self.str()?;
                self.open()?;
                let value = if self.peek()? == tag::UNIT {
                    self.bump();
                    visitor.visit_borrowed_str(name)?
                } else {
                    let mut access = VariantEntry { de: &mut *self, name: Some(name), value: true };
                    let value = visitor.visit_map(&mut access)?;
                    if access.value {
                        return Err(de::Error::invalid_length(0, &"a variant's name and payload"));
                    }
                    value
                };
                self.close();
                Ok(value)
            }
            _ => Err(self.unknown(tag)),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_i128, visit_i128, i128);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);
    int_method!(deserialize_u128, visit_u128, u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            tag::F32 => {
                self.bump();
                visitor.visit_f32(self.f32()?)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            tag::F32 => {
                self.bump();
                visitor.visit_f64(self.f32()?.into())
            }
            _ => self.deserialize_any(visitor),
        }
    }

    /// `NONE`, and `UNIT` (a stored `null`), are `None`; `SOME` is `Some`; any other value is
    /// `Some` of itself, so a field can become optional without losing its stored values.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            tag::NONE | tag::UNIT | tag::UNDEFINED => {
                self.bump();
                visitor.visit_none()
            }
            tag::SOME => {
                self.bump();
                self.open()?;
                let value = visitor.visit_some(&mut *self)?;
                self.close();
                Ok(value)
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    /// Transparent; `Value` asks under a reserved name and gets its flavoured kinds (`Set`,
    /// `Date` ...) as enum variants, everything else as `deserialize_any` gives it.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name != names::VALUE {
            return visitor.visit_newtype_struct(self);
        }
        match self.peek()? {
            tag::UNDEFINED | tag::DATE | tag::SET | tag::ANY_MAP => {
                visitor.visit_enum(Flavoured { de: self })
            }
            _ => self.deserialize_any(visitor),
        }
    }

    /// A stored variant by name; also a string (a unit variant) and a one-entry map from a
    /// name to a payload, which is how an enum reads from untyped data.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? {
            tag::VARIANT => {
                self.bump();
                let name = self.str()?;
                self.open()?;
                let value = visitor.visit_enum(Named { de: &mut *self, name })?;
                self.close();
                Ok(value)
            }
            tag::STR => {
                self.bump();
                let name = self.str()?;
                visitor.visit_enum(StrDeserializer::<CodecError>::new(name))
            }
            tag::MAP | tag::ANY_MAP if self.input.get(1..5) == Some(&1u32.to_le_bytes()) => {
                self.bump();
                self.u32()?;
                self.open()?;
                let value = visitor.visit_enum(Keyed { de: &mut *self })?;
                self.close();
                Ok(value)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool char str string bytes byte_buf seq tuple tuple_struct map struct identifier
    }
}

/// The elements of a `SEQ`.
struct Elements<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The entries of a `MAP`.
struct Entries<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    value_next: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 || self.value_next {
            return Ok(None);
        }
        self.left -= 1;
        self.value_next = true;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        if !self.value_next {
            return Err(de::Error::custom("a map value was read before its key"));
        }
        self.value_next = false;
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A variant read without its type: one entry, from its name to its payload.
struct VariantEntry<'a, 'de> {
    de: &'a mut Decoder<'de>,
    name: Option<&'de str>,
    /// The payload is still to be read.
    value: bool,
}

impl<'de> MapAccess<'de> for VariantEntry<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.name.take() {
            Some(name) => seed.deserialize(Name(name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        if !self.value || self.name.is_some() {
            return Err(de::Error::custom("a variant's payload was read out of order"));
        }
        self.value = false;
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.name.is_some()))
    }
}

/// A variant's name as a map key or identifier. Unlike serde's string deserializer it reads
/// as a string even when asked for an enum (`Value` keys ask through their reserved name).
struct Name<'de>(&'de str);

impl<'de> Deserializer<'de> for Name<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == names::VALUE {
            visitor.visit_borrowed_str(self.0)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(StrDeserializer::<CodecError>::new(self.0))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A `VARIANT`: the name is read, the payload follows.
struct Named<'a, 'de> {
    de: &'a mut Decoder<'de>,
    name: &'de str,
}

impl<'a, 'de> EnumAccess<'de> for Named<'a, 'de> {
    type Error = CodecError;
    type Variant = Payload<'a, 'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self::Variant)> {
        let variant = seed.deserialize(Name(self.name))?;
        Ok((variant, Payload { de: self.de }))
    }
}

/// A one-entry `MAP` read as an enum: the key names the variant, the value is its payload.
struct Keyed<'a, 'de> {
    de: &'a mut Decoder<'de>,
}

impl<'a, 'de> EnumAccess<'de> for Keyed<'a, 'de> {
    type Error = CodecError;
    type Variant = Payload<'a, 'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self::Variant)> {
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, Payload { de: self.de }))
    }
}

/// A variant's payload, next in the input.
struct Payload<'a, 'de> {
    de: &'a mut Decoder<'de>,
}

impl<'de> VariantAccess<'de> for Payload<'_, 'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<()> {
        de::Deserialize::deserialize(self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.de.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.de.deserialize_struct("", fields, visitor)
    }
}

/// One of `Value`'s flavoured kinds, offered to `Value`'s visitor as a variant named
/// `$undefined`, `$date`, `$set` or `$map`. The payload is read from the flavoured value
/// itself (the decoder reads `DATE` as an `f64`, `SET` as a sequence, `ANY_MAP` as a map).
struct Flavoured<'a, 'de> {
    de: &'a mut Decoder<'de>,
}

impl<'a, 'de> EnumAccess<'de> for Flavoured<'a, 'de> {
    type Error = CodecError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self)> {
        let name = match self.de.peek()? {
            tag::UNDEFINED => "$undefined",
            tag::DATE => "$date",
            tag::SET => "$set",
            _ => "$map",
        };
        let variant = seed.deserialize(name.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for Flavoured<'_, 'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<()> {
        match self.de.byte()? {
            tag::UNDEFINED => Ok(()),
            _ => Err(de::Error::custom("only Undefined is a unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(de::Error::custom("Value has no tuple variants"))
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value> {
        Err(de::Error::custom("Value has no struct variants"))
    }
}
