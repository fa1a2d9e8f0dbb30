//! A DuckDB temp table that collects the rows of one write statement.
//!
//! Rows are converted as they arrive, kept in memory up to `BATCH_ROWS`, and
//! appended in bulk; the statement's final SQL reads the table and drops it. A
//! statement that fails drops its table without touching the lake.

use std::cell::Cell;
use std::rc::Rc;

use duckdb::types::Value;

use crate::catalog::cache::Lake;
use crate::duck::{cancel, sql};
use crate::error::{LakeError, LakeResult};

const BATCH_ROWS: usize = 100_000;

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

pub struct Staging {
    lake: Rc<Lake>,
    name: String,
    rows: Vec<Vec<Value>>,
    done: bool,
}

impl Staging {
    /// A staging table with the columns of `SELECT <columns> FROM <source> LIMIT 0`,
    /// so it has the lake table's own types.
    pub fn create(lake: Rc<Lake>, columns: &str, source: &str) -> LakeResult<Staging> {
        let name = COUNTER.with(|c| {
            c.set(c.get() + 1);
            format!("__ducklake_staging_{}", c.get())
        });
        lake.execute_batch(&format!("CREATE TEMP TABLE {} AS SELECT {columns} FROM {source} LIMIT 0", sql::ident(&name)))?;
        Ok(Staging { lake, name, rows: Vec::with_capacity(1024), done: false })
    }

    /// `temp.main."<name>"`, for the final statement.
    pub fn table(&self) -> String {
        format!("temp.main.{}", sql::ident(&self.name))
    }

    pub fn push(&mut self, row: Vec<Value>) -> LakeResult<()> {
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            self.append_buffered()?;
        }
        Ok(())
    }

    fn append_buffered(&mut self) -> LakeResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let conn = self.lake.connection()?;
        let rows = std::mem::take(&mut self.rows);
        cancel::interruptible(&self.lake.instance.interrupt, || -> LakeResult<()> {
            let mut appender = conn.appender_to_catalog_and_db(&self.name, "temp", "main")?;
            for row in &rows {
                if let Err(e) = appender.append_row(duckdb::appender_params_from_iter(row.iter())) {
                    return Err(self.explain_rejected_row(conn, row).unwrap_or_else(|| e.into()));
                }
            }
            appender.flush()?;
            Ok(())
        })
    }

    /// Which value of a row DuckDB refused, and why: each value is cast on its own to
    /// its column's type (only on this error path).
    fn explain_rejected_row(&self, conn: &duckdb::Connection, row: &[Value]) -> Option<LakeError> {
        let mut statement = conn
            .prepare(&format!("SELECT column_name, column_type FROM (DESCRIBE {})", self.table()))
            .ok()?;
        let columns: Vec<(String, String)> =
            statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ok()?.collect::<Result<_, _>>().ok()?;
        columns.iter().zip(row).find_map(|((name, lake_type), value)| {
            let cast = conn.query_row(&format!("SELECT CAST(? AS {lake_type})"), [value], |_| Ok(()));
            cast.err().map(|e| LakeError::ValueRejected {
                column: name.clone(),
                lake_type: lake_type.clone(),
                reason: e.to_string(),
            })
        })
    }

    /// Append what is left, run `statement` (which reads `table()`), drop the table.
    pub fn finish(&mut self, statement: &str) -> LakeResult<()> {
        self.append_buffered()?;
        self.done = true;
        self.lake.execute_batch(&format!("{statement}; DROP TABLE {}", self.table()))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(conn) = self.lake.connection() {
                let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", self.table()));
            }
        }
    }
}
