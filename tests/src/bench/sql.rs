//! SQL workloads: (e) parameterised INSERTs in one `transaction_sync`, (f) a SELECT of every
//! row with `to_array()` and with `raw()`. Ours opens its objects through a
//! `durable_storage::Namespace` with durable-sql's default options and no archive.

use durable_sql::{Options, SqlValue};
use rusqlite::params;

use super::{BenchResult, Config, Row, keep, open_object, pair, raw_open, row, tempdir, time};

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS bench(id INTEGER PRIMARY KEY, name TEXT, score REAL)";
const INSERT: &str = "INSERT INTO bench(id, name, score) VALUES (?, ?, ?)";

/// Fills `bench` with `n` rows with raw rusqlite.
fn fill(path: &std::path::Path, n: usize) -> BenchResult<()> {
    let mut conn = raw_open(path, false)?;
    let tx = conn.transaction()?;
    tx.execute(CREATE, [])?;
    {
        let mut insert = tx.prepare(INSERT)?;
        for i in 0..n {
            insert.execute(params![i as i64, format!("name{i}"), i as f64 * 0.5])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Runs the SQL workloads.
pub fn run(config: &Config, rows: &mut Vec<Row>) -> BenchResult<()> {
    let n = config.size(100_000, 10_000);
    let runs = config.runs;
    if config.wants("e") {
        let e = pair(
            runs,
            || {
                let dir = tempdir()?;
                let storage = open_object(dir.path(), "ours", Options::default())?;
                storage.sql()?.exec(CREATE, &[])?;
                storage.end_turn()?;
                time(|| {
                    let sql = storage.sql()?;
                    storage.transaction_sync(|| {
                        for i in 0..n {
                            let params: [SqlValue; 3] = [
                                (i as i64).into(),
                                format!("name{i}").into(),
                                (i as f64 * 0.5).into(),
                            ];
                            sql.exec(INSERT, &params)?;
                        }
                        Ok::<(), durable_txn::Error>(())
                    })?;
                    storage.end_turn()?;
                    Ok(())
                })
            },
            || {
                let dir = tempdir()?;
                let mut conn = raw_open(&dir.path().join("raw.sqlite"), false)?;
                conn.execute(CREATE, [])?;
                time(|| {
                    let tx = conn.transaction()?;
                    {
                        let mut insert = tx.prepare(INSERT)?;
                        for i in 0..n {
                            insert.execute(params![
                                i as i64,
                                format!("name{i}"),
                                i as f64 * 0.5
                            ])?;
                        }
                    }
                    tx.commit()?;
                    Ok(())
                })
            },
        )?;
        rows.push(row("e", "exec INSERT (3 params) in one transaction_sync", n, Some(0.7), e));
    }
    if config.wants("f") {
        let dir = tempdir()?;
        let path = dir.path().join("select.sqlite");
        fill(&path, n)?;
        let raw_select = || {
            let conn = raw_open(&path, false)?;
            let mut select = conn.prepare("SELECT * FROM bench")?;
            time(|| {
                let all = select
                    .query_map([], |r| {
                        Ok(vec![
                            r.get::<_, rusqlite::types::Value>(0)?,
                            r.get::<_, rusqlite::types::Value>(1)?,
                            r.get::<_, rusqlite::types::Value>(2)?,
                        ])
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                assert_eq!(all.len(), n);
                keep(all);
                Ok(())
            })
        };
        // Ours: the rows through `to_array()`, or through `raw()` (f').
        let select = |raw: bool| {
            let storage = open_object(dir.path(), "select", Options::default())?;
            let sql = storage.sql()?;
            sql.exec("SELECT * FROM bench LIMIT 1", &[])?.to_array::<durable_storage::Row>()?;
            time(|| {
                let mut cursor = sql.exec("SELECT * FROM bench", &[])?;
                if raw {
                    let all = cursor.raw().collect::<Result<Vec<_>, _>>()?;
                    assert_eq!(all.len(), n);
                    keep(all);
                } else {
                    let all = cursor.to_array::<durable_storage::Row>()?;
                    assert_eq!(all.len(), n);
                    keep(all);
                }
                Ok(())
            })
        };
        let f = pair(runs, || select(false), raw_select)?;
        rows.push(row("f", "SELECT * of 100k rows, to_array() (rows/s)", n, Some(0.7), f));
        let f2 = pair(runs, || select(true), raw_select)?;
        rows.push(row("f'", "SELECT * of 100k rows, raw() (rows/s)", n, Some(0.7), f2));
    }
    Ok(())
}
