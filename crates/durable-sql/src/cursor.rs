//! `Cursor` over the last statement of an `exec`, and `Row`, a row with its column names.

use std::sync::Arc;

use crate::db::{Database, Started, State};
use crate::de::FromRow;
use crate::error::{Error, Result};
use crate::value::{FromSqlValue, SqlValue};

thread_local! {
    /// Shared by every cursor without result columns, so a write allocates no column list.
    static NO_COLUMNS: Arc<[String]> = Arc::from(Vec::new());
}

/// The rows of the last statement of an [`exec`](Database::exec), read on demand.
///
/// Like the runtime's cursor it reads one row ahead: after handing out a row it steps to the
/// next, so [`rows_read`](Cursor::rows_read) runs one ahead of the rows delivered until the
/// end. Rows can be taken as [`Row`]s (iteration), as any type that implements [`FromRow`]
/// ([`to_array`](Cursor::to_array), [`one`](Cursor::one), [`rows_as`](Cursor::rows_as): a
/// `Row`, or any serde `Deserialize` type, such as a struct with a field per column) or as
/// plain value lists ([`raw`](Cursor::raw)); all consume the same stream. There is no snapshot isolation: a cursor read after other writes sees them
/// as SQLite's rules for a running scan allow.
pub struct Cursor {
    db: Database,
    slot: Option<usize>,
    generation: u64,
    columns: Arc<[String]>,
    pending: Option<Vec<SqlValue>>,
    rows_read: u64,
    rows_written: u64,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("columns", &self.columns)
            .field("rows_read", &self.rows_read)
            .field("rows_written", &self.rows_written)
            .finish_non_exhaustive()
    }
}

impl Cursor {
    pub(crate) fn new(db: Database, started: Started) -> Cursor {
        Cursor {
            db,
            slot: started.slot,
            generation: started.generation,
            columns: if started.columns.is_empty() {
                NO_COLUMNS.with(Arc::clone)
            } else {
                started.columns.into()
            },
            pending: started.first,
            rows_read: started.rows_read,
            rows_written: started.rows_written,
        }
    }

    /// The result's column names, in order (empty for statements without result columns).
    pub fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// Rows read so far by this execution, as SQLite counts them (index and schema work
    /// included).
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Rows written so far by this execution (each index entry counts as a row).
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Takes the next row's values, stepping ahead, with the database already locked.
    fn advance(&mut self, state: &mut State) -> Option<Result<Vec<SqlValue>>> {
        if let Some(slot) = self.slot {
            match state.step_slot(slot, self.generation) {
                Ok(stepped) => {
                    if let Some((read, written)) = stepped.counters {
                        self.rows_read = read;
                        self.rows_written = written;
                    }
                    if stepped.finished {
                        self.slot = None;
                    }
                    let row = self.pending.take();
                    self.pending = stepped.row;
                    if row.is_none() && self.pending.is_some() {
                        return self.pending.take().map(Ok);
                    }
                    row.map(Ok)
                }
                Err(e) => {
                    if !matches!(e, Error::Canceled) {
                        self.slot = None;
                    }
                    self.pending = None;
                    Some(Err(e))
                }
            }
        } else {
            self.pending.take().map(Ok)
        }
    }

    fn next_values(&mut self) -> Option<Result<Vec<SqlValue>>> {
        if self.slot.is_none() {
            return self.pending.take().map(Ok);
        }
        let db = self.db.clone();
        let mut state = db.shared.lock();
        self.advance(&mut state)
    }

    fn row(&self, values: Vec<SqlValue>) -> Row {
        Row { columns: self.columns.clone(), values }
    }

    /// All remaining rows, each read as a `T` (`toArray()`): a [`Row`], or any serde
    /// `Deserialize` type ([`FromRow`]). A row that cannot be read as a `T` fails the whole
    /// call, with an error that names its column; the cursor is exhausted either way.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = durable_sql::Database::open(dir.path().join("d"), Default::default())?;
    /// #[derive(serde::Deserialize)]
    /// struct Msg { id: i64, body: String }
    ///
    /// db.exec("CREATE TABLE msgs(id INTEGER PRIMARY KEY, body TEXT)", &[])?;
    /// db.exec("INSERT INTO msgs(body) VALUES ('hi'), ('there')", &[])?;
    /// let msgs: Vec<Msg> = db.exec("SELECT * FROM msgs", &[])?.to_array()?;
    /// assert_eq!((msgs[1].id, msgs[1].body.as_str()), (2, "there"));
    /// let rows = db.exec("SELECT * FROM msgs", &[])?.to_array::<durable_sql::Row>()?;
    /// assert_eq!(rows[0].get::<String>("body")?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_array<T: FromRow>(&mut self) -> Result<Vec<T>> {
        self.collect_values()?.into_iter().map(|v| T::from_row(self.row(v))).collect()
    }

    /// All remaining rows as value lists, in column order.
    pub fn to_raw_array(&mut self) -> Result<Vec<Vec<SqlValue>>> {
        self.collect_values()
    }

    fn collect_values(&mut self) -> Result<Vec<Vec<SqlValue>>> {
        let mut out = Vec::new();
        if self.slot.is_none() {
            out.extend(self.pending.take());
            return Ok(out);
        }
        let db = self.db.clone();
        let mut state = db.shared.lock();
        while let Some(next) = self.advance(&mut state) {
            out.push(next?);
        }
        Ok(out)
    }

    /// Exactly one remaining row, read as a `T` (`one()`): none or several are errors with
    /// the runtime's messages ([`Error::NoResults`], [`Error::MultipleResults`]). The cursor
    /// is exhausted afterwards. With a row of one column, `T` can be that column's type:
    /// `let n: i64 = db.exec("SELECT count(*) FROM t", &[])?.one()?;`.
    pub fn one<T: FromRow>(&mut self) -> Result<T> {
        let first = match self.next_values() {
            None => return Err(Error::NoResults),
            Some(result) => result?,
        };
        if self.pending.is_some() {
            self.close();
            return Err(Error::MultipleResults);
        }
        T::from_row(self.row(first))
    }

    /// An iterator over the remaining rows, each read as a `T` ([`FromRow`]); it consumes
    /// the same rows as iterating the cursor. A row that cannot be read as a `T` is an
    /// `Err` item, and iteration may go on past it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = durable_sql::Database::open(dir.path().join("d"), Default::default())?;
    /// let mut total = 0;
    /// for pair in db.exec("SELECT 1, 'a' UNION ALL SELECT 2, 'b'", &[])?.rows_as::<(u8, String)>() {
    ///     let (n, _letter) = pair?;
    ///     total += n;
    /// }
    /// assert_eq!(total, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rows_as<T: FromRow>(&mut self) -> RowsAs<'_, T> {
        RowsAs { cursor: self, _type: std::marker::PhantomData }
    }

    /// An iterator over the remaining rows as value lists, in column order; it consumes the
    /// same rows as iterating the cursor.
    pub fn raw(&mut self) -> Raw<'_> {
        Raw { cursor: self }
    }

    /// Ends the statement now; later reads find no rows.
    pub fn close(&mut self) {
        self.pending = None;
        if let Some(slot) = self.slot.take() {
            self.db.shared.lock().close_slot(slot, self.generation);
        }
    }
}

impl Iterator for Cursor {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        self.next_values().map(|r| r.map(|values| self.row(values)))
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.close();
    }
}

/// Iterator over a cursor's rows as value lists; see [`Cursor::raw`].
pub struct Raw<'a> {
    cursor: &'a mut Cursor,
}

impl Iterator for Raw<'_> {
    type Item = Result<Vec<SqlValue>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next_values()
    }
}

/// Iterator over a cursor's rows read as `T`; see [`Cursor::rows_as`].
pub struct RowsAs<'a, T> {
    cursor: &'a mut Cursor,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T: FromRow> Iterator for RowsAs<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let values = self.cursor.next_values()?;
        Some(values.and_then(|v| T::from_row(self.cursor.row(v))))
    }
}

impl<T> std::fmt::Debug for RowsAs<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsAs").field("cursor", &self.cursor).finish()
    }
}

/// One row: values with their column names.
///
/// Looking a value up by name finds the *last* column of that name, as the runtime's row
/// objects do when names repeat (`SELECT * FROM a, b` with a column in both).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<SqlValue>,
}

impl Row {
    /// Column names, in order (may repeat).
    pub fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// Values, in column order.
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// The values, in column order.
    pub fn into_values(self) -> Vec<SqlValue> {
        self.values
    }

    /// The value of the last column named `name`.
    pub fn value(&self, name: &str) -> Option<&SqlValue> {
        self.columns.iter().rposition(|c| c == name).map(|i| &self.values[i])
    }

    /// The last column named `name`, converted. A value that does not convert is an
    /// [`Error::Column`] that names the column (`column "age": 300 is out of range for u8`).
    pub fn get<T: FromSqlValue>(&self, name: &str) -> Result<T> {
        let value = self.value(name).ok_or_else(|| Error::NoSuchColumn(name.to_owned()))?;
        value.get().map_err(|e| e.in_column(name))
    }

    /// The column at `index`, converted (errors as [`get`](Row::get)'s).
    pub fn get_index<T: FromSqlValue>(&self, index: usize) -> Result<T> {
        let value = self.values.get(index).ok_or_else(|| Error::NoSuchColumn(index.to_string()))?;
        value.get().map_err(|e| e.in_column(&self.columns[index]))
    }

    /// The whole row read as a `T` ([`FromRow`]): a struct with a field per column, a
    /// tuple of the columns, `serde_json::Value`...
    pub fn read<T: FromRow>(self) -> Result<T> {
        T::from_row(self)
    }

    /// The row as the runtime's row object: each distinct name once, where it first
    /// appears, with the value of its last column.
    pub fn entries(&self) -> Vec<(&str, &SqlValue)> {
        let mut out: Vec<(&str, &SqlValue)> = Vec::with_capacity(self.values.len());
        for (name, value) in self.columns.iter().zip(&self.values) {
            match out.iter_mut().find(|(n, _)| *n == name.as_str()) {
                Some(entry) => entry.1 = value,
                None => out.push((name, value)),
            }
        }
        out
    }
}
