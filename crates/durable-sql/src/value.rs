//! `SqlValue`, the five SQLite storage classes, and conversions from and to Rust types.

use crate::error::{Error, Result};

/// One SQL value: SQLite's five storage classes.
///
/// A parameter binds as its Rust type: an integer binds as INTEGER, a float as REAL, a string
/// as TEXT, bytes as BLOB, `None` as NULL.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SqlValue {
    /// SQL NULL.
    #[default]
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float (NaN never comes out of SQLite; it stores NULL instead).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl SqlValue {
    /// The storage class name as SQL's `typeof()` spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            SqlValue::Null => "null",
            SqlValue::Integer(_) => "integer",
            SqlValue::Real(_) => "real",
            SqlValue::Text(_) => "text",
            SqlValue::Blob(_) => "blob",
        }
    }

    /// True for NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }

    /// Converts to a Rust type.
    pub fn get<T: FromSqlValue>(&self) -> Result<T> {
        T::from_sql_value(self)
    }
}

/// Types that can be read out of a [`SqlValue`].
pub trait FromSqlValue: Sized {
    /// Converts, or explains why not.
    fn from_sql_value(value: &SqlValue) -> Result<Self>;
}

fn mismatch<T>(value: &SqlValue, to: &'static str) -> Result<T> {
    Err(Error::Conversion { from: value.type_name(), to })
}

impl FromSqlValue for SqlValue {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        Ok(value.clone())
    }
}

/// Integers read from INTEGER values only (a REAL is refused rather than truncated), range
/// checked: a value that does not fit is [`Error::OutOfRange`].
macro_rules! to_int {
    ($($t:ty),*) => {$(
        impl FromSqlValue for $t {
            fn from_sql_value(value: &SqlValue) -> Result<Self> {
                match value {
                    SqlValue::Integer(i) => <$t>::try_from(*i).map_err(|_| Error::OutOfRange {
                        value: i.to_string(),
                        to: stringify!($t),
                    }),
                    other => mismatch(other, stringify!($t)),
                }
            }
        }
    )*};
}
to_int!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

/// A REAL outside `f32`'s range is [`Error::OutOfRange`]; one inside it is rounded to the
/// nearest `f32`.
impl FromSqlValue for f32 {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        let wide = f64::from_sql_value(value).or_else(|_| mismatch(value, "f32"))?;
        to_f32(wide)
    }
}

pub(crate) fn to_f32(wide: f64) -> Result<f32> {
    let narrow = wide as f32;
    if narrow.is_infinite() && wide.is_finite() {
        return Err(Error::OutOfRange { value: wide.to_string(), to: "f32" });
    }
    Ok(narrow)
}

/// A JSON column: TEXT is parsed as JSON ([`Error::Decode`] when it is not JSON); NULL,
/// INTEGER and REAL become the JSON null and numbers. A BLOB is refused, and so is an
/// infinite REAL, which JSON cannot hold.
impl FromSqlValue for serde_json::Value {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Null => Ok(serde_json::Value::Null),
            SqlValue::Integer(i) => Ok((*i).into()),
            SqlValue::Real(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| Error::OutOfRange { value: f.to_string(), to: "a JSON number" }),
            SqlValue::Text(text) => serde_json::from_str(text)
                .map_err(|e| Error::Decode { message: format!("not JSON: {e}") }),
            other => mismatch(other, "serde_json::Value"),
        }
    }
}

impl FromSqlValue for f64 {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Integer(i) => Ok(*i as f64),
            SqlValue::Real(f) => Ok(*f),
            other => mismatch(other, "f64"),
        }
    }
}

impl FromSqlValue for bool {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Integer(i) => Ok(*i != 0),
            other => mismatch(other, "bool"),
        }
    }
}

impl FromSqlValue for String {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Text(s) => Ok(s.clone()),
            other => mismatch(other, "String"),
        }
    }
}

impl FromSqlValue for Vec<u8> {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Blob(b) => Ok(b.clone()),
            SqlValue::Text(s) => Ok(s.as_bytes().to_vec()),
            other => mismatch(other, "Vec<u8>"),
        }
    }
}

impl<T: FromSqlValue> FromSqlValue for Option<T> {
    fn from_sql_value(value: &SqlValue) -> Result<Self> {
        match value {
            SqlValue::Null => Ok(None),
            other => T::from_sql_value(other).map(Some),
        }
    }
}

/// Any SQL value, as the [`SqlValue`] of its storage class (for a field of a typed row that
/// takes whatever the column holds).
impl<'de> serde::Deserialize<'de> for SqlValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SqlValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an SQL value")
            }
            fn visit_unit<E>(self) -> Result<SqlValue, E> {
                Ok(SqlValue::Null)
            }
            fn visit_none<E>(self) -> Result<SqlValue, E> {
                Ok(SqlValue::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<SqlValue, D::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<SqlValue, E> {
                Ok(SqlValue::Integer(i64::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SqlValue, E> {
                Ok(SqlValue::Integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SqlValue, E> {
                i64::try_from(v)
                    .map(SqlValue::Integer)
                    .map_err(|_| E::custom(format!("{v} is out of range for an SQL integer")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<SqlValue, E> {
                Ok(SqlValue::Real(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<SqlValue, E> {
                Ok(SqlValue::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<SqlValue, E> {
                Ok(SqlValue::Text(v))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<SqlValue, E> {
                Ok(SqlValue::Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<SqlValue, E> {
                Ok(SqlValue::Blob(v))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for SqlValue {
            fn from(v: $t) -> Self {
                SqlValue::Integer(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, bool);

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}

impl From<f32> for SqlValue {
    fn from(v: f32) -> Self {
        SqlValue::Real(f64::from(v))
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        SqlValue::Text(v.clone())
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> Self {
        SqlValue::Blob(v)
    }
}

impl From<&[u8]> for SqlValue {
    fn from(v: &[u8]) -> Self {
        SqlValue::Blob(v.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for SqlValue {
    fn from(v: [u8; N]) -> Self {
        SqlValue::Blob(v.to_vec())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl From<()> for SqlValue {
    fn from(_: ()) -> Self {
        SqlValue::Null
    }
}

/// Builds a parameter list, converting each item with `SqlValue::from`.
///
/// ```
/// let p = durable_sql::params![1, "two", 3.0, None::<i64>];
/// assert_eq!(p.len(), 4);
/// ```
#[macro_export]
macro_rules! params {
    () => { [] as [$crate::SqlValue; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::SqlValue::from($v)),+] };
}
