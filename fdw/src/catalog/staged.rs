//! What a write statement hands to its lake's transaction: the rows it staged, the
//! lake columns they were checked against, and a copy to replay them from. Shared by
//! the writers (`modify`) and the transaction that applies their writes (`writes`,
//! `replay`), and depending on neither.

use arrow::record_batch::RecordBatch;

use crate::error::LakeError;

/// Rows appended to a staging table at a time; also what a transaction that has not
/// read the lake defers to its commit at most (see `writes`).
pub const BATCH_ROWS: usize = 32_768;

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

/// Rows a write statement staged: the DuckDB table holding them, how many, the
/// lake columns they were checked against, and a copy to replay them from.
pub struct StagedRows {
    pub table: String,
    pub rows: usize,
    pub target: StagedFor,
    /// None when the transaction's copies outgrew `ducklake.savepoint_replay_memory`.
    pub copy: Option<StagedCopy>,
}

/// The staged rows as Arrow batches, and how to re-create their staging table from
/// them in a fresh DuckDB transaction (which a ROLLBACK of the old one dropped).
pub struct StagedCopy {
    /// The staging table's name in DuckDB's `temp.main`.
    pub name: String,
    pub create: String,
    pub batches: Vec<RecordBatch>,
    pub bytes: usize,
}

/// The lake table rows were staged for, with the columns they were checked against.
pub struct StagedFor {
    pub schema: String,
    pub table: String,
    /// As named in errors.
    pub display: String,
    pub columns: Vec<LakeColumn>,
}
