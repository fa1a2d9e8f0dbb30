//! Looking up lake table columns: as of the transaction's snapshot once it has read
//! the lake, else from the per-backend `ColumnCache` (a lookup inside its own DuckDB
//! transaction would take the lake's snapshot; see `writes`), which is filled on a
//! sibling connection, outside that transaction.

use crate::catalog::cache::Lake;
use crate::catalog::staged::LakeColumn;
use crate::duck::{cancel, sql};
use crate::error::LakeResult;

impl Lake {
    /// A lake table's columns, in order; empty if it does not exist. Read as of the
    /// transaction's snapshot once it has one; before that, from the cache (see the
    /// module comment).
    pub fn table_columns(&self, schema: &str, table: &str) -> LakeResult<Vec<LakeColumn>> {
        if !self.tx.borrow().has_read() {
            if let Some(known) = self.columns.get(schema, table) {
                return Ok(known);
            }
        }
        self.current_columns(schema, table)
    }

    /// Empty the column cache (before DDL this backend runs on the lake).
    pub fn forget_columns(&self) {
        self.columns.clear();
    }

    /// `table_columns`, never from the cache (which it refreshes).
    pub fn current_columns(&self, schema: &str, table: &str) -> LakeResult<Vec<LakeColumn>> {
        let columns = if self.tx.borrow().has_read() {
            self.table_columns_on(self.connection()?, schema, table)?
        } else {
            // On a sibling, so the transaction does not take its snapshot yet.
            let sibling = self.instance.conn.try_clone()?;
            let interrupt = std::sync::Arc::new(sibling.interrupt_handle());
            cancel::interruptible(&interrupt, || self.table_columns_on(&sibling, schema, table))?
        };
        self.columns.put(schema, table, columns.clone());
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
