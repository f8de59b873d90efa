//! `durable sql`: one `exec` on an object, its rows and its row counters.

use durable_storage::{SqlValue, Storage};
use serde_json::{Map, Value as Json, json};

use crate::Env;
use crate::error::{Error, Result};
use crate::out::Out;
use crate::values::{sql_param, sql_to_cell, sql_to_json};

/// What one `exec` returned.
pub struct SqlResult {
    /// The result's column names.
    pub columns: Vec<String>,
    /// Every row, values in column order.
    pub rows: Vec<Vec<SqlValue>>,
    /// The cursor's `rows_read`.
    pub rows_read: u64,
    /// The cursor's `rows_written`.
    pub rows_written: u64,
}

/// Runs `query` as one `exec`, reads every row and commits. A failing query changes
/// nothing: it runs inside `transaction_sync`, whose error rolls it back.
pub fn exec(storage: &Storage, query: &str, params: &[SqlValue]) -> Result<SqlResult> {
    let result = storage.transaction_sync(|| {
        let mut cursor = storage.sql()?.exec(query, params)?;
        let columns = cursor.column_names().to_vec();
        let rows = cursor.to_raw_array()?;
        Ok::<_, Error>(SqlResult {
            columns,
            rows,
            rows_read: cursor.rows_read(),
            rows_written: cursor.rows_written(),
        })
    });
    storage.sync().wait()?;
    result
}

/// Prints a result as a table and a counter line, or as one JSON document.
pub fn print(out: &mut Out, result: &SqlResult) -> Result<()> {
    if out.json {
        let rows: Vec<Json> = result
            .rows
            .iter()
            .map(|row| {
                let map: Map<String, Json> =
                    result.columns.iter().cloned().zip(row.iter().map(sql_to_json)).collect();
                Json::Object(map)
            })
            .collect();
        return out.json(&json!({
            "columns": result.columns,
            "rows": rows,
            "rows_read": result.rows_read,
            "rows_written": result.rows_written,
        }));
    }
    if !result.columns.is_empty() {
        let cells: Vec<Vec<String>> =
            result.rows.iter().map(|r| r.iter().map(sql_to_cell).collect()).collect();
        out.table(&result.columns, &cells)?;
    }
    let n = result.rows.len();
    out.line(format!(
        "({n} row{}; rows read: {}, rows written: {})",
        if n == 1 { "" } else { "s" },
        result.rows_read,
        result.rows_written
    ))
}

/// Runs `durable sql OBJECT QUERY [PARAM...]`.
pub fn run(env: &mut Env, object: &str, query: &str, params: &[String]) -> Result<()> {
    let params: Vec<SqlValue> = params.iter().map(|p| sql_param(p)).collect::<Result<_>>()?;
    let ns = env.namespace()?;
    let storage = ns.storage(object)?;
    let result = exec(&storage, query, &params)?;
    print(&mut env.out, &result)
}
