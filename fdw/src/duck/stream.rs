//! A streaming DuckDB result that can be buffered on demand.
//!
//! DuckDB keeps one open streaming result per connection: running anything else on
//! the connection closes it. Every lake has one connection (so one transaction and
//! one snapshot per Postgres transaction), yet a query may scan it several times at
//! once (joins, subqueries). So before the connection is used for anything else,
//! the result still streaming on it is read to the end into memory (see
//! `Lake::connection`), and its scan continues from the buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use duckdb::InterruptHandle;

use crate::duck::cancel;
use crate::duck::workers::Lent;
use crate::error::LakeResult;

pub struct Stream {
    /// Borrows the lake's connection; see `Cursor::start` for why 'static is sound.
    /// With it, the threads lent to DuckDB while it runs (dropped after it).
    statement: RefCell<Option<(duckdb::Statement<'static>, Lent)>>,
    buffered: RefCell<VecDeque<RecordBatch>>,
}

impl Stream {
    pub fn new(statement: duckdb::Statement<'static>, lent: Lent) -> Stream {
        Stream { statement: RefCell::new(Some((statement, lent))), buffered: RefCell::new(VecDeque::new()) }
    }

    /// The next batch: from the buffer if the result was buffered, else from DuckDB.
    pub fn next_batch(&self, interrupt: &Arc<InterruptHandle>) -> LakeResult<Option<RecordBatch>> {
        if let Some(batch) = self.buffered.borrow_mut().pop_front() {
            return Ok(Some(batch));
        }
        let mut statement = self.statement.borrow_mut();
        let Some((active, _)) = statement.as_ref() else { return Ok(None) };
        match cancel::interruptible(interrupt, || active.step())? {
            Some(chunk) => Ok(Some(RecordBatch::from(&chunk))),
            None => {
                *statement = None;
                Ok(None)
            }
        }
    }

    /// Read the rest of the result into memory and release the connection.
    pub fn buffer_rest(&self, interrupt: &Arc<InterruptHandle>) -> LakeResult<()> {
        let mut statement = self.statement.borrow_mut();
        if let Some((active, _)) = statement.as_ref() {
            let mut buffered = self.buffered.borrow_mut();
            while let Some(chunk) = cancel::interruptible(interrupt, || active.step())? {
                buffered.push_back(RecordBatch::from(&chunk));
            }
        }
        *statement = None;
        Ok(())
    }
}
