//! A streaming DuckDB query whose Arrow batches fill Postgres tuple slots.

use std::rc::Rc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::pg_sys;

use crate::catalog::cache::{Bindings, Lake};
use crate::duck::stream::Stream;
use crate::error::{LakeError, LakeResult};
use crate::scan::model::OutputSource;
use crate::types::decode::Decoder;

/// One attribute the scan fills: its slot index, where its value comes from and how
/// it is decoded (for averages: the decoder of the numeric sum).
pub struct OutputColumn {
    pub slot_index: usize,
    pub source: OutputSource,
    pub decoder: Decoder,
}

pub struct Cursor {
    // Field order matters: `stream` borrows from `lake`'s connection and must be
    // dropped first.
    stream: Option<Rc<Stream>>,
    batch: Option<RecordBatch>,
    row: usize,
    exhausted: bool,
    columns: Vec<OutputColumn>,
    rowid_column: Option<usize>,
    table: String,
    lake: Rc<Lake>,
}

impl Cursor {
    pub fn new(lake: Rc<Lake>, table: String, columns: Vec<OutputColumn>, rowid_column: Option<usize>) -> Cursor {
        Cursor { stream: None, batch: None, row: 0, exhausted: false, columns, rowid_column, table, lake }
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// (Re)start with `sql`, its parameters bound as `bindings` says.
    pub fn start(&mut self, sql: &str, bindings: Bindings) -> LakeResult<()> {
        self.close();
        let stream = self.lake.stream(sql, bindings).map_err(|e| self.explain_error(e))?;
        self.stream = Some(stream);
        Ok(())
    }

    fn explain_error(&self, e: LakeError) -> LakeError {
        match e {
            LakeError::DuckDb(message)
                if message.contains("Table with name") && message.contains("does not exist") =>
            {
                LakeError::MissingLakeTable { server: self.lake.server_name.clone(), table: self.table.clone() }
            }
            // The lake table lost (or renamed) a column the foreign table reads.
            LakeError::DuckDb(message) if message.contains("Referenced column \"") => {
                let column = message.split("Referenced column \"").nth(1).and_then(|rest| rest.split('"').next());
                match column {
                    Some(column) => LakeError::MissingLakeColumn {
                        server: self.lake.server_name.clone(),
                        table: self.table.clone(),
                        column: column.to_owned(),
                    },
                    None => LakeError::DuckDb(message),
                }
            }
            other => other,
        }
    }

    /// Release DuckDB's result early (the cursor itself lives until its memory context goes).
    pub fn close(&mut self) {
        self.batch = None;
        if let Some(stream) = self.stream.take() {
            self.lake.release(&stream);
        }
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
        let Some(stream) = self.stream.as_ref() else {
            self.exhausted = true;
            return Ok(());
        };
        match stream.next_batch(&self.lake.instance.interrupt)? {
            Some(batch) => {
                self.batch = Some(batch);
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
            for column in &self.columns {
                let value = match column.source {
                    OutputSource::Column(i) => column.decoder.decode(batch.column(i).as_ref(), row)?,
                    OutputSource::Average { sum, count } => {
                        average(&column.decoder, batch.column(sum).as_ref(), batch.column(count).as_ref(), row)?
                    }
                };
                if let Some(datum) = value {
                    values[column.slot_index] = datum;
                    nulls[column.slot_index] = false;
                }
            }
            if let Some(i) = self.rowid_column {
                let rowids = batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| LakeError::DuckDb("rowid arrived in an unexpected Arrow type".into()))?;
                crate::modify::rowid::encode(rowids.value(row), &mut (*slot).tts_tid)?;
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        Ok(())
    }
}

/// avg() as Postgres computes it for integers and numerics: numeric sum / count,
/// with numeric_div's scale rules; NULL over no rows.
fn average(sum_decoder: &Decoder, sum: &dyn Array, count: &dyn Array, row: usize) -> LakeResult<Option<pg_sys::Datum>> {
    let Some(sum) = sum_decoder.decode(sum, row)? else { return Ok(None) };
    let count = count
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| LakeError::DuckDb(format!("count arrived as Arrow {}", count.data_type())))?
        .value(row);
    if count == 0 {
        return Ok(None);
    }
    // SAFETY: numeric_div and int8_numeric are Postgres builtins taking these datums.
    unsafe {
        let count = direct_function_call_as_datum(pg_sys::int8_numeric, &[Some(pg_sys::Datum::from(count))]);
        Ok(direct_function_call_as_datum(pg_sys::numeric_div, &[Some(sum), count]))
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.close();
    }
}
