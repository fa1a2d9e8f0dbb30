//! A DuckDB temp table that collects the rows of one write statement.
//!
//! Rows are converted as they arrive into Arrow column builders (see
//! `types::encode`) and appended a batch at a time. When the statement ends, the
//! staged values are checked against the lake columns (types and NOT NULL) without
//! touching the lake, and only then does one statement (which reads the table)
//! write to it. A value the lake refuses is therefore reported before the lake's
//! DuckDB transaction has seen any of the statement, so a savepoint around a
//! failed write leaves the transaction usable.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use pgrx::pg_sys::Datum;

use crate::catalog::cache::Lake;
use crate::catalog::staged::{LakeColumn, StagedCopy, StagedFor, StagedRows, UNCONVERTIBLE};
use crate::duck::{cancel, sql};
use crate::error::{LakeError, LakeResult};
use crate::options::TableOptions;
use crate::types::encode::{ColumnBuilder, Encoder};

pub use crate::catalog::staged::BATCH_ROWS;

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// One column of the staging table.
pub struct StagedColumn {
    /// Its name in the staging table: the lake column's, or e.g. `__rowid`.
    pub name: String,
    pub encoder: Encoder,
    /// The lake column the value is written to (None for rowids).
    pub lake: Option<LakeColumn>,
}

impl StagedColumn {
    /// The column holding values (of `encoder`'s type) for lake column `name`, one
    /// of `lake_columns` of `table` on `server`.
    pub fn for_lake(
        name: String,
        encoder: Encoder,
        lake_columns: &[LakeColumn],
        server: &str,
        table: &str,
    ) -> LakeResult<StagedColumn> {
        let lake = lake_columns.iter().find(|c| c.name == name).cloned().ok_or_else(|| {
            if lake_columns.is_empty() {
                LakeError::MissingLakeTable { server: server.to_owned(), table: table.to_owned() }
            } else {
                LakeError::MissingLakeColumn { server: server.to_owned(), table: table.to_owned(), column: name.clone() }
            }
        })?;
        Ok(StagedColumn { name, encoder, lake: Some(lake) })
    }

    /// The staged value as the lake column's type, read from `<qualifier>.<name>`.
    pub fn value(&self, qualifier: &str) -> String {
        self.converted(qualifier, "CAST")
    }

    fn converted(&self, qualifier: &str, cast: &str) -> String {
        self.convert(self.staged(qualifier), cast)
    }

    /// The staged value, as a value of the encoder's `staged_type()`.
    fn staged(&self, qualifier: &str) -> String {
        self.encoder.staged_value(&format!("{qualifier}.{}", sql::ident(&self.name)))
    }

    /// `column`, a value of the staged type, as the lake column's type.
    fn convert(&self, column: String, cast: &str) -> String {
        match &self.lake {
            Some(lake) if self.encoder.via_json() && !matches!(lake.lake_type.as_str(), "VARCHAR" | "JSON") => {
                format!("{cast}({cast}({column} AS JSON) AS {})", lake.lake_type)
            }
            Some(lake) if self.needs_cast() => format!("{cast}({column} AS {})", lake.lake_type),
            _ => column,
        }
    }

    fn needs_cast(&self) -> bool {
        self.lake.as_ref().is_some_and(|lake| lake.lake_type != self.encoder.staged_type())
    }

    /// A condition true for a staged value the lake column refuses.
    fn refused(&self, qualifier: &str) -> Option<String> {
        let lake = self.lake.as_ref()?;
        let column = self.staged(qualifier);
        let mut conditions = Vec::new();
        if !lake.nullable {
            conditions.push(format!("{column} IS NULL"));
        }
        if self.needs_cast() {
            conditions.push(format!("({column} IS NOT NULL AND {} IS NULL)", self.converted(qualifier, "TRY_CAST")));
        }
        (!conditions.is_empty()).then(|| conditions.join(" OR "))
    }
}

pub struct Staging {
    lake: Rc<Lake>,
    name: String,
    /// The lake table.
    schema_name: String,
    table_name: String,
    /// The lake table, as named in errors.
    table: String,
    columns: Vec<StagedColumn>,
    schema: Arc<Schema>,
    builders: Vec<ColumnBuilder>,
    buffered: usize,
    rows: usize,
    /// The appended batches, kept (within `ducklake.savepoint_replay_memory` for the
    /// whole transaction) so that the write can be replayed after a savepoint rollback.
    copy: Option<StagedCopy>,
    done: bool,
}

impl Staging {
    pub fn create(lake: Rc<Lake>, target: &TableOptions, columns: Vec<StagedColumn>) -> LakeResult<Staging> {
        let name = COUNTER.with(|c| {
            c.set(c.get() + 1);
            format!("__ducklake_staging_{}", c.get())
        });
        let definitions: Vec<String> =
            columns.iter().map(|c| format!("{} {}", sql::ident(&c.name), c.encoder.staging_column_type())).collect();
        let create = format!("CREATE TEMP TABLE {} ({})", sql::ident(&name), definitions.join(", "));
        lake.execute_batch(&create)?;
        let copy = Some(StagedCopy { name: name.clone(), create, batches: Vec::new(), bytes: 0 });
        let schema = Arc::new(Schema::new(columns.iter().map(|c| c.encoder.field(&c.name)).collect::<Vec<_>>()));
        let builders = columns.iter().map(|c| c.encoder.builder(BATCH_ROWS)).collect();
        Ok(Staging {
            lake,
            name,
            schema_name: target.schema.clone(),
            table_name: target.table.clone(),
            table: target.display(),
            columns,
            schema,
            builders,
            buffered: 0,
            rows: 0,
            copy,
            done: false,
        })
    }

    /// `temp.main."<name>"`, for the final statement.
    pub fn table(&self) -> String {
        format!("temp.main.{}", sql::ident(&self.name))
    }

    pub fn columns(&self) -> &[StagedColumn] {
        &self.columns
    }

    /// Add a row: one (datum, isnull) per staged column, in order.
    ///
    /// # Safety
    /// Each datum must be a value of its column's Postgres type.
    pub unsafe fn push(&mut self, row: impl IntoIterator<Item = (Datum, bool)>) -> LakeResult<()> {
        for ((column, builder), (datum, isnull)) in self.columns.iter().zip(self.builders.iter_mut()).zip(row) {
            unsafe { column.encoder.append(builder, datum, isnull) };
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= BATCH_ROWS {
            self.append_buffered()?;
        }
        Ok(())
    }

    fn append_buffered(&mut self) -> LakeResult<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        self.buffered = 0;
        let arrays = self.builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| LakeError::DuckDb(format!("staging rows: {e}")))?;
        if let Some(copy) = &mut self.copy {
            let bytes = batch.get_array_memory_size();
            if self.lake.kept_bytes() + copy.bytes + bytes <= crate::gucs::savepoint_replay_memory() {
                copy.batches.push(batch.clone());
                copy.bytes += bytes;
            } else {
                self.copy = None;
            }
        }
        let conn = self.lake.connection()?;
        cancel::interruptible(&self.lake.instance.interrupt, || -> LakeResult<()> {
            let mut appender = conn.appender_to_catalog_and_db(&self.name, "temp", "main")?;
            appender.append_record_batch(batch)?;
            appender.flush()?;
            Ok(())
        })
    }

    /// Check the staged rows against the lake columns; the first refused value as an
    /// error naming its column. Reads only the staging table.
    fn check(&self) -> LakeResult<()> {
        let checks: Vec<(usize, String)> =
            self.columns.iter().enumerate().filter_map(|(i, c)| c.refused("s").map(|cond| (i, cond))).collect();
        if checks.is_empty() {
            return Ok(());
        }
        let probes: Vec<String> = checks.iter().map(|(_, cond)| format!("min(CASE WHEN {cond} THEN s.rowid END)")).collect();
        let conn = self.lake.connection()?;
        let query = format!("SELECT {} FROM {} AS s", probes.join(", "), self.table());
        let found: Vec<Option<i64>> = cancel::interruptible(&self.lake.instance.interrupt, || {
            // Threads help beyond one batch; small writes (and so their commits) never
            // start one.
            let _lent = (self.rows > BATCH_ROWS).then(|| self.lake.instance.lend_threads());
            conn.query_row(&query, [], |row| (0..checks.len()).map(|i| row.get(i)).collect())
        })?;
        let Some(((index, _), row)) = checks.iter().zip(found).find_map(|(check, row)| row.map(|r| (check, r))) else {
            return Ok(());
        };
        // The columns may come from a cache that another session's ALTER outdated.
        self.lake.check_unchanged(&self.target())?;
        Err(self.explain_refused(&self.columns[*index], row))
    }

    /// The lake table and the columns the rows are checked against.
    fn target(&self) -> StagedFor {
        StagedFor {
            schema: self.schema_name.clone(),
            table: self.table_name.clone(),
            display: self.table.clone(),
            columns: self.columns.iter().filter_map(|c| c.lake.clone()).collect(),
        }
    }

    fn explain_refused(&self, column: &StagedColumn, row: i64) -> LakeError {
        let lake = column.lake.as_ref().expect("only lake columns are checked");
        let fallback = || LakeError::ValueRejected {
            column: column.name.clone(),
            lake_type: lake.lake_type.clone(),
            reason: UNCONVERTIBLE.into(),
        };
        let Ok(conn) = self.lake.connection() else { return fallback() };
        let text: Option<String> = match conn.query_row(
            &format!("SELECT CAST({} AS VARCHAR) FROM {} AS s WHERE rowid = ?", column.staged("s"), self.table()),
            [row],
            |r| r.get(0),
        ) {
            Ok(text) => text,
            Err(_) => return fallback(),
        };
        let Some(text) = text else {
            return LakeError::NullValue { column: column.name.clone(), table: self.table.clone() };
        };
        let query = format!(
            "SELECT {} FROM (SELECT CAST(? AS {}) AS v) AS p",
            column.convert("p.v".into(), "CAST"),
            column.encoder.staged_type()
        );
        lake.refused(conn, &query, [&text])
    }

    /// Append what is left, check it, and hand `statement` (which reads `table()`)
    /// to the lake to apply, now or at the end of the savepoint (see `Lake::write`).
    pub fn finish(&mut self, statement: &str) -> LakeResult<()> {
        self.append_buffered()?;
        self.check()?;
        self.done = true;
        let staged = StagedRows { table: self.table(), rows: self.rows, target: self.target(), copy: self.copy.take() };
        self.lake.write(format!("{statement}; DROP TABLE {}", self.table()), Some(staged))
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
