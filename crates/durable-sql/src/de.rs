//! Typed rows: [`FromRow`], and the serde `Deserializer`s over a row (column names as keys)
//! and over one value.
//!
//! A row reads as a map from its column names to its values, with the runtime's rule for
//! repeated names (each name once, the value of its last column), so a struct with a field
//! per column reads it; it reads as a sequence of its values in column order (tuples,
//! `Vec<SqlValue>`); and a row of one column reads as that column's value (`i64` for
//! `SELECT count(*)`). A value reads as its storage class: NULL as `None` or `()`, INTEGER as
//! any integer type that holds it (range checked) or a float, REAL as a float, TEXT as a
//! string, a unit enum variant, or, for a struct, map or sequence, as the JSON it holds, BLOB
//! as bytes.

use serde::de::value::{SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use crate::cursor::Row;
use crate::error::{Error, Result};
use crate::value::{SqlValue, to_f32};

/// Types a row can be read as: [`Row`] itself, and every serde [`DeserializeOwned`] type
/// (a struct with a field per column, a tuple of the columns in order, `serde_json::Value`,
/// or a plain value for a row of one column). [`Cursor::to_array`](crate::Cursor::to_array),
/// [`Cursor::one`](crate::Cursor::one) and [`Cursor::rows_as`](crate::Cursor::rows_as) take
/// any of them.
///
/// ```
/// use durable_sql::{Database, Options, Row};
/// use serde::Deserialize;
///
/// #[derive(Deserialize, Debug, PartialEq)]
/// struct User {
///     id: u32,
///     name: String,
///     email: Option<String>,
/// }
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path().join("db.sqlite"), Options::default())?;
/// db.exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT)", &[])?;
/// db.exec("INSERT INTO users VALUES (1, 'ada', NULL), (2, 'grace', 'g@x')", &[])?;
///
/// let users: Vec<User> = db.exec("SELECT * FROM users ORDER BY id", &[])?.to_array()?;
/// assert_eq!(users[1], User { id: 2, name: "grace".into(), email: Some("g@x".into()) });
///
/// let count: i64 = db.exec("SELECT count(*) FROM users", &[])?.one()?;
/// let (id, name): (i64, String) = db.exec("SELECT id, name FROM users", &[])?.rows_as().next().unwrap()?;
/// let row: Row = db.exec("SELECT name FROM users WHERE id = 1", &[])?.one()?;
/// assert_eq!((count, id, name.as_str(), row.get::<String>("name")?.as_str()), (2, 1, "ada", "ada"));
/// Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait FromRow: Sized {
    /// Reads the row, or says why it cannot be read (naming the column at fault).
    fn from_row(row: Row) -> Result<Self>;
}

impl FromRow for Row {
    fn from_row(row: Row) -> Result<Row> {
        Ok(row)
    }
}

impl<T: DeserializeOwned> FromRow for T {
    fn from_row(row: Row) -> Result<T> {
        T::deserialize(RowDeserializer { row: &row })
    }
}

/// A row as serde sees it (see the module's overview).
struct RowDeserializer<'a> {
    row: &'a Row,
}

impl<'a> RowDeserializer<'a> {
    /// The only column of a row of one column (its name, and its value to read as a plain
    /// value).
    fn single(&self, what: &str) -> Result<(&'a str, ValueDeserializer<'a>)> {
        match (self.row.column_names(), self.row.values()) {
            ([name], [value]) => Ok((name, ValueDeserializer { value })),
            (names, _) => Err(Error::Decode {
                message: format!(
                    "cannot read a row of {} columns as {what}; only a row of one column can be",
                    names.len()
                ),
            }),
        }
    }

    /// The row's entries as the runtime's row object has them: each name once, where it
    /// first appears, with the value of its last column.
    fn entries(&self) -> Vec<(&'a str, &'a SqlValue)> {
        let row: &'a Row = self.row;
        row.entries()
    }
}

macro_rules! forward_single {
    ($($method:ident => $what:literal),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let (name, value) = self.single($what)?;
            value.$method(visitor).map_err(|e| e.in_column(name))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for RowDeserializer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let entries = self.entries();
        visitor.visit_map(RowMap { entries: entries.into_iter(), current: None })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let columns = self.row.column_names().iter();
        visitor.visit_seq(RowSeq { columns, values: self.row.values().iter() })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    /// A row is always there: `Some(row)`, except that a row of one NULL column is `None`
    /// (`SELECT max(x)` over no rows, read as `Option<i64>`).
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.row.values() {
            [SqlValue::Null] => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let (column, value) = self.single("an enum")?;
        value.deserialize_enum(name, variants, visitor).map_err(|e| e.in_column(column))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        let (column, value) = self.single("a unit struct")?;
        value.deserialize_unit_struct(name, visitor).map_err(|e| e.in_column(column))
    }

    forward_single! {
        deserialize_bool => "a bool",
        deserialize_i8 => "an i8",
        deserialize_i16 => "an i16",
        deserialize_i32 => "an i32",
        deserialize_i64 => "an i64",
        deserialize_i128 => "an i128",
        deserialize_u8 => "a u8",
        deserialize_u16 => "a u16",
        deserialize_u32 => "a u32",
        deserialize_u64 => "a u64",
        deserialize_u128 => "a u128",
        deserialize_f32 => "an f32",
        deserialize_f64 => "an f64",
        deserialize_char => "a char",
        deserialize_str => "a string",
        deserialize_string => "a string",
        deserialize_bytes => "bytes",
        deserialize_byte_buf => "bytes",
        deserialize_unit => "()",
        deserialize_identifier => "an identifier",
    }
}

/// The row as a map: column names to values.
struct RowMap<'a> {
    entries: std::vec::IntoIter<(&'a str, &'a SqlValue)>,
    current: Option<(&'a str, &'a SqlValue)>,
}

impl<'de> de::MapAccess<'de> for RowMap<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some((name, value)) = self.entries.next() else { return Ok(None) };
        self.current = Some((name, value));
        let key: StrDeserializer<'_, Error> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let (name, value) = self.current.take().ok_or_else(|| Error::Decode {
            message: "a row's value was asked for before its column name".into(),
        })?;
        seed.deserialize(ValueDeserializer { value }).map_err(|e| e.in_column(name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The row as a sequence of its values, in column order.
struct RowSeq<'a> {
    columns: std::slice::Iter<'a, String>,
    values: std::slice::Iter<'a, SqlValue>,
}

impl<'de> de::SeqAccess<'de> for RowSeq<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let (Some(name), Some(value)) = (self.columns.next(), self.values.next()) else {
            return Ok(None);
        };
        seed.deserialize(ValueDeserializer { value }).map(Some).map_err(|e| e.in_column(name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len())
    }
}

/// One value as serde sees it (see the module's overview).
#[derive(Clone, Copy)]
struct ValueDeserializer<'a> {
    value: &'a SqlValue,
}

impl ValueDeserializer<'_> {
    fn mismatch<T>(&self, to: &'static str) -> Result<T> {
        Err(Error::Conversion { from: self.value.type_name(), to })
    }

    fn integer(&self, to: &'static str) -> Result<i64> {
        match self.value {
            SqlValue::Integer(i) => Ok(*i),
            _ => self.mismatch(to),
        }
    }

    fn float(&self, to: &'static str) -> Result<f64> {
        match self.value {
            SqlValue::Integer(i) => Ok(*i as f64),
            SqlValue::Real(f) => Ok(*f),
            _ => self.mismatch(to),
        }
    }

    /// TEXT holding JSON, read as a struct, map, sequence or enum.
    fn json<'de, V: Visitor<'de>>(
        &self,
        to: &'static str,
        read: impl FnOnce(serde_json::Value, V) -> serde_json::Result<V::Value>,
        visitor: V,
    ) -> Result<V::Value> {
        let SqlValue::Text(text) = self.value else { return self.mismatch(to) };
        serde_json::from_str(text)
            .and_then(|json| read(json, visitor))
            .map_err(|e| Error::Decode { message: format!("text is not the JSON of {to}: {e}") })
    }
}

macro_rules! int_methods {
    ($($method:ident, $visit:ident, $t:ty);* $(;)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let i = self.integer(stringify!($t))?;
            let narrow = <$t>::try_from(i).map_err(|_| Error::OutOfRange {
                value: i.to_string(),
                to: stringify!($t),
            })?;
            visitor.$visit(narrow)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Null => visitor.visit_unit(),
            SqlValue::Integer(i) => visitor.visit_i64(*i),
            SqlValue::Real(f) => visitor.visit_f64(*f),
            SqlValue::Text(s) => visitor.visit_str(s),
            SqlValue::Blob(b) => visitor.visit_bytes(b),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(self.integer("bool")? != 0)
    }

    int_methods! {
        deserialize_i8, visit_i8, i8;
        deserialize_i16, visit_i16, i16;
        deserialize_i32, visit_i32, i32;
        deserialize_i64, visit_i64, i64;
        deserialize_i128, visit_i128, i128;
        deserialize_u8, visit_u8, u8;
        deserialize_u16, visit_u16, u16;
        deserialize_u32, visit_u32, u32;
        deserialize_u64, visit_u64, u64;
        deserialize_u128, visit_u128, u128;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(to_f32(self.float("f32")?)?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(self.float("f64")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Text(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => visitor.visit_char(c),
                    _ => Err(Error::Decode {
                        message: format!("text of {} characters is not a char", s.chars().count()),
                    }),
                }
            }
            _ => self.mismatch("char"),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Text(s) => visitor.visit_str(s),
            _ => self.mismatch("String"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Blob(b) => visitor.visit_bytes(b),
            SqlValue::Text(s) => visitor.visit_bytes(s.as_bytes()),
            _ => self.mismatch("bytes"),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Null => visitor.visit_unit(),
            _ => self.mismatch("()"),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    /// A BLOB is a sequence of bytes (`Vec<u8>` asks for a sequence); TEXT holds JSON.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            SqlValue::Blob(b) => {
                let mut bytes = SeqDeserializer::<_, Error>::new(b.iter().copied());
                let value = visitor.visit_seq(&mut bytes)?;
                bytes.end()?;
                Ok(value)
            }
            _ => self.json("a sequence", |j, v| serde_json::Value::deserialize_seq(j, v), visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.json("a tuple", |j, v| serde_json::Value::deserialize_tuple(j, len, v), visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.json(
            "a tuple struct",
            |j, v| serde_json::Value::deserialize_tuple_struct(j, name, len, v),
            visitor,
        )
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.json("a map", |j, v| serde_json::Value::deserialize_map(j, v), visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.json(
            "a struct",
            |j, v| serde_json::Value::deserialize_struct(j, name, fields, v),
            visitor,
        )
    }

    /// TEXT naming a unit variant (`'active'`), or the JSON of any variant
    /// (`'{"Moved":{"to":3}}'`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            SqlValue::Text(s) if s.trim_start().starts_with(['{', '"']) => self.json(
                "an enum",
                |j, v| serde_json::Value::deserialize_enum(j, name, variants, v),
                visitor,
            ),
            SqlValue::Text(s) => {
                let variant: StrDeserializer<'_, Error> = s.as_str().into_deserializer();
                visitor.visit_enum(variant)
            }
            _ => self.mismatch("an enum"),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}
