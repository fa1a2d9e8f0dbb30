//! Lake table columns as DuckDB describes them, and the per-backend cache of them
//! that a transaction uses until it reads the lake (a lookup inside its own DuckDB
//! transaction would take the lake's snapshot; see `writes`). The cache is filled
//! on a sibling connection, outside that transaction.

use crate::catalog::cache::Lake;
use crate::duck::{cancel, sql};
use crate::error::{LakeError, LakeResult};

/// A column of a lake table as DuckDB describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LakeColumn {
    pub name: String,
    /// DuckDB's type name, e.g. `DECIMAL(12,3)` or `TIMESTAMP WITH TIME ZONE`.
    pub lake_type: String,
    pub nullable: bool,
}

/// Why DuckDB cannot convert a value when nothing better is known.
pub const UNCONVERTIBLE: &str = "DuckDB cannot convert the value";

impl LakeColumn {
    /// The error for a value this column refuses, with DuckDB's reason: the message
    /// of `failing_cast` (a query casting the value to this column's type), run on a
    /// sibling of `conn`, since a failed statement would abort the lake transaction.
    pub fn refused<P: duckdb::Params>(&self, conn: &duckdb::Connection, failing_cast: &str, params: P) -> LakeError {
        let reason = conn
            .try_clone()
            .ok()
            .and_then(|sibling| sibling.query_row(failing_cast, params, |_| Ok(())).err())
            .map_or_else(|| UNCONVERTIBLE.to_owned(), |e| e.to_string());
        LakeError::ValueRejected { column: self.name.clone(), lake_type: self.lake_type.clone(), reason }
    }
}

impl Lake {
    /// A lake table's columns, in order; empty if it does not exist. Read as of the
    /// transaction's snapshot once it has one; before that, from the cache (see the
    /// module comment).
    pub fn table_columns(&self, schema: &str, table: &str) -> LakeResult<Vec<LakeColumn>> {
        if !self.touched.get() {
            if let Some(known) = self.known_columns.borrow().get(&(schema.to_owned(), table.to_owned())) {
                return Ok(known.clone());
            }
        }
        self.current_columns(schema, table)
    }

    /// Empty the column cache (before DDL this backend runs on the lake).
    pub fn forget_columns(&self) {
        self.known_columns.borrow_mut().clear();
    }

    /// `table_columns`, never from the cache (which it refreshes).
    pub fn current_columns(&self, schema: &str, table: &str) -> LakeResult<Vec<LakeColumn>> {
        let columns = if self.touched.get() {
            self.table_columns_on(self.connection()?, schema, table)?
        } else {
            // On a sibling, so the transaction does not take its snapshot yet.
            let sibling = self.instance.conn.try_clone()?;
            let interrupt = std::sync::Arc::new(sibling.interrupt_handle());
            cancel::interruptible(&interrupt, || self.table_columns_on(&sibling, schema, table))?
        };
        self.known_columns.borrow_mut().insert((schema.to_owned(), table.to_owned()), columns.clone());
        Ok(columns)
    }

    /// `table_columns` read on `conn`, a connection to this lake's DuckDB instance.
    pub fn table_columns_on(&self, conn: &duckdb::Connection, schema: &str, table: &str) -> LakeResult<Vec<LakeColumn>> {
        // pragma_table_info looks up one table; duckdb_columns() would list every
        // column of every attached catalog first (several ms per write statement).
        let mut statement = conn.prepare("SELECT name, type, \"notnull\" FROM pragma_table_info(?) ORDER BY cid")?;
        let qualified = sql::qualified(&self.instance.alias, schema, table);
        let rows = statement.query_map([qualified.as_str()], |row| {
            Ok(LakeColumn { name: row.get(0)?, lake_type: row.get(1)?, nullable: !row.get::<_, bool>(2)? })
        });
        match rows.and_then(|rows| rows.collect::<Result<Vec<_>, _>>()) {
            Ok(columns) => Ok(columns),
            // A missing table or schema (a catalog error leaves the DuckDB transaction usable).
            Err(e) if e.to_string().starts_with("Catalog Error") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}
