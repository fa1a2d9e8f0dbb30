//! A streaming DuckDB result that can be buffered on demand.
//!
//! DuckDB keeps one open streaming result per connection: running anything else on
//! the connection closes it. Every lake has one connection (so one transaction and
//! one snapshot per Postgres transaction), yet a query may scan it several times at
//! once (joins, subqueries). So before the connection is used for anything else,
//! the result still streaming on it is read to the end into a buffer (see
//! `Lake::connection`; `spill`: memory up to `work_mem`, then a temporary file), and
//! its scan continues from the buffer.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use duckdb::InterruptHandle;

use crate::duck::cancel;
use crate::duck::spill::Buffer;
use crate::duck::workers::Lent;
use crate::error::LakeResult;

pub struct Stream {
    /// Borrows the lake's connection; see `Cursor::start` for why 'static is sound.
    /// With it, the threads lent to DuckDB while it runs (dropped after it).
    statement: RefCell<Option<(duckdb::Statement<'static>, Lent)>>,
    buffered: RefCell<Option<Buffer>>,
}

impl Stream {
    pub fn new(statement: duckdb::Statement<'static>, lent: Lent) -> Stream {
        Stream { statement: RefCell::new(Some((statement, lent))), buffered: RefCell::new(None) }
    }

    /// The next batch: from the buffer if the result was buffered, else from DuckDB.
    pub fn next_batch(&self, interrupt: &Arc<InterruptHandle>) -> LakeResult<Option<RecordBatch>> {
        if let Some(buffer) = self.buffered.borrow_mut().as_mut() {
            return buffer.pop();
        }
        let mut statement = self.statement.borrow_mut();
        let Some((active, lent)) = statement.as_ref() else { return Ok(None) };
        lent.wake();
        match cancel::interruptible(interrupt, || active.step())? {
            Some(chunk) => Ok(Some(RecordBatch::from(&chunk))),
            None => {
                *statement = None;
                Ok(None)
            }
        }
    }

    /// Read the rest of the result into a buffer (spilling into `directory`) and
    /// release the connection.
    pub fn buffer_rest(&self, interrupt: &Arc<InterruptHandle>, directory: &Path) -> LakeResult<()> {
        let mut statement = self.statement.borrow_mut();
        if let Some((active, lent)) = statement.as_ref() {
            let mut buffer = Buffer::new(Buffer::work_mem_limit());
            while let Some(chunk) = cancel::interruptible(interrupt, || {
                lent.wake();
                active.step()
            })? {
                buffer.push(RecordBatch::from(&chunk), directory)?;
            }
            buffer.finish()?;
            *self.buffered.borrow_mut() = Some(buffer);
        }
        *statement = None;
        Ok(())
    }
}
