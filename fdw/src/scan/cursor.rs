//! A streaming DuckDB query whose Arrow batches fill Postgres tuple slots.

use std::rc::Rc;

use arrow::array::{Array, RecordBatch};
use pgrx::pg_sys;

use crate::catalog::cache::Lake;
use crate::duck::cancel;
use crate::error::{LakeError, LakeResult};
use crate::types::decode::Decoder;

/// One column the scan fills: its slot index and how to decode it.
pub struct OutputColumn {
    pub slot_index: usize,
    pub decoder: Decoder,
}

pub struct Cursor {
    // Field order matters: `statement` borrows from `lake`'s connection and must be
    // dropped first.
    statement: Option<duckdb::Statement<'static>>,
    batch: Option<RecordBatch>,
    row: usize,
    exhausted: bool,
    columns: Vec<OutputColumn>,
    sql: String,
    table: String,
    lake: Rc<Lake>,
}

impl Cursor {
    pub fn new(lake: Rc<Lake>, sql: String, table: String, columns: Vec<OutputColumn>) -> Cursor {
        Cursor { statement: None, batch: None, row: 0, exhausted: false, columns, sql, table, lake }
    }

    /// (Re)start the query from its first row.
    pub fn start(&mut self) -> LakeResult<()> {
        self.close();
        // SAFETY: the connection lives inside `self.lake` (an Rc that this cursor keeps
        // alive and never moves), and `statement` is dropped before `lake` (field
        // order, and `close`), so the extended borrow never outlives the connection.
        let conn: &'static duckdb::Connection =
            unsafe { &*(&self.lake.instance.conn as *const duckdb::Connection) };
        let interrupt = self.lake.instance.interrupt.clone();
        let statement = cancel::interruptible(&interrupt, || -> LakeResult<duckdb::Statement<'static>> {
            let mut statement = conn.prepare(&self.sql)?;
            drop(statement.stream_arrow([])?);
            Ok(statement)
        })
        .map_err(|e| self.explain_error(e))?;
        self.statement = Some(statement);
        Ok(())
    }

    fn explain_error(&self, e: LakeError) -> LakeError {
        match e {
            LakeError::DuckDb(message)
                if message.contains("Table with name") && message.contains("does not exist") =>
            {
                LakeError::MissingLakeTable { server: self.lake.server_name.clone(), table: self.table.clone() }
            }
            other => other,
        }
    }

    /// Release DuckDB's result early (the cursor itself lives until its memory context goes).
    pub fn close(&mut self) {
        self.batch = None;
        self.statement = None;
        self.row = 0;
        self.exhausted = false;
    }

    /// Fill `slot` with the next row; false at the end of the result.
    ///
    /// # Safety
    /// `slot` must be the scan's virtual tuple slot, with a descriptor covering every
    /// `slot_index`.
    pub unsafe fn next_into(&mut self, slot: *mut pg_sys::TupleTableSlot) -> LakeResult<bool> {
        loop {
            if let Some(batch) = &self.batch {
                if self.row < batch.num_rows() {
                    let row = self.row;
                    self.row += 1;
                    unsafe { self.fill(slot, row)? };
                    return Ok(true);
                }
            }
            if self.exhausted {
                return Ok(false);
            }
            self.fetch()?;
        }
    }

    fn fetch(&mut self) -> LakeResult<()> {
        let Some(statement) = self.statement.as_ref() else {
            self.exhausted = true;
            return Ok(());
        };
        let chunk = cancel::interruptible(&self.lake.instance.interrupt, || statement.step())?;
        match chunk {
            Some(array) => {
                self.batch = Some(RecordBatch::from(&array));
                self.row = 0;
            }
            None => {
                self.batch = None;
                self.exhausted = true;
            }
        }
        Ok(())
    }

    unsafe fn fill(&self, slot: *mut pg_sys::TupleTableSlot, row: usize) -> LakeResult<()> {
        let batch = self.batch.as_ref().expect("a current batch");
        unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            for (i, column) in self.columns.iter().enumerate() {
                let array: &dyn Array = batch.column(i).as_ref();
                if let Some(datum) = column.decoder.decode(array, row)? {
                    values[column.slot_index] = datum;
                    nulls[column.slot_index] = false;
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        Ok(())
    }
}
