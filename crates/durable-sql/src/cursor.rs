//! `Cursor` over the last statement of an `exec`, and `Row`, a row with its column names.

use std::sync::Arc;

use crate::db::{Database, Started, State};
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
/// end. Rows can be taken as [`Row`]s (iteration, [`to_array`](Cursor::to_array),
/// [`one`](Cursor::one)) or as plain value lists ([`raw`](Cursor::raw)); all consume the
/// same stream. There is no snapshot isolation: a cursor read after other writes sees them
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

    /// All remaining rows.
    pub fn to_array(&mut self) -> Result<Vec<Row>> {
        Ok(self.collect_values()?.into_iter().map(|v| self.row(v)).collect())
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

    /// Exactly one remaining row; none or several are errors with the runtime's messages.
    /// The cursor is exhausted afterwards.
    pub fn one(&mut self) -> Result<Row> {
        let first = match self.next_values() {
            None => return Err(Error::NoResults),
            Some(result) => result?,
        };
        if self.pending.is_some() {
            self.close();
            return Err(Error::MultipleResults);
        }
        Ok(self.row(first))
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

    /// The last column named `name`, converted.
    pub fn get<T: FromSqlValue>(&self, name: &str) -> Result<T> {
        self.value(name).ok_or_else(|| Error::NoSuchColumn(name.to_owned()))?.get()
    }

    /// The column at `index`, converted.
    pub fn get_index<T: FromSqlValue>(&self, index: usize) -> Result<T> {
        self.values.get(index).ok_or_else(|| Error::NoSuchColumn(index.to_string()))?.get()
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
