//! What a transaction writes to a lake: each write statement is recorded (with a copy
//! of its staged rows, for `replay`) and applied to the DuckDB transaction, at once
//! or later.
//!
//! Lake DDL runs at once, also inside a subtransaction. Other writes are deferred
//! in two cases; their rows (if any) wait in their staging table, and the statement
//! that moves them into the lake runs when the lake is next read or the transaction
//! commits:
//! - Inside a Postgres subtransaction (a savepoint, an exception block, psql's
//!   ON_ERROR_ROLLBACK), since DuckDB has no savepoints: a subtransaction rolled back
//!   before its write is applied simply drops it (one rolled back after: see
//!   `replay`).
//! - Small writes (together at most `SMALL_WRITE_ROWS` rows in at most
//!   `SMALL_WRITES` statements) of a transaction that has not read the lake yet.
//!   They are applied at commit, under the commit lock, so the
//!   DuckLake transaction reads the latest snapshot only then. Applied earlier, its
//!   snapshot would be stale by the time the lock is granted whenever other backends
//!   commit meanwhile, and DuckLake's first commit attempt would fail and be retried
//!   with a conflict check: under many concurrent writers, that doubles the time
//!   each commit holds the lock. Until the lake is read, such a transaction takes
//!   lake columns from a per-backend cache (see `columns`). When the write is
//!   applied, and before a value is reported as refused, the columns it was staged
//!   for are compared with the table's current columns; a difference (another
//!   session altered the table) refreshes the cache and fails with a serialization
//!   error (40001), so a retry succeeds.

use std::collections::{HashMap, VecDeque};

use crate::catalog::cache::Lake;
use crate::catalog::lake_locks;
use crate::catalog::lake_transaction::{Write, current_subtransaction, in_subtransaction};
use crate::catalog::staged::{BATCH_ROWS, LakeColumn, StagedFor, StagedRows};
use crate::duck::{cancel, sql};
use crate::error::{LakeError, LakeResult};

/// How much a transaction which has not read the lake defers to its commit (see the
/// module comment): at most one staging batch of rows, in at most this many
/// statements. Beyond that, writes are applied at once, so that writing their
/// Parquet files does not hold the commit lock.
const SMALL_WRITE_ROWS: usize = BATCH_ROWS;
const SMALL_WRITES: usize = 64;

impl Lake {
    /// Read the lake, and record the snapshot the DuckDB transaction reads (its first
    /// access takes it): a restart must find it again to replay the transaction's
    /// writes. Done once the transaction writes, so transactions that only read never
    /// pay it.
    fn record_snapshot(&self) -> LakeResult<()> {
        self.tx.borrow_mut().read();
        if self.tx.borrow().snapshot().is_some() {
            return Ok(());
        }
        let id = self.current_snapshot(self.connection()?)?;
        self.tx.borrow_mut().record_snapshot(id);
        Ok(())
    }

    /// The DuckLake snapshot the DuckDB transaction on `conn` reads (taken by its
    /// first access to the lake, which this may be).
    pub(super) fn current_snapshot(&self, conn: &duckdb::Connection) -> LakeResult<u64> {
        let query = format!("SELECT id FROM ducklake_current_snapshot({})", sql::literal(&self.instance.alias));
        Ok(cancel::interruptible(&self.instance.interrupt, || conn.query_row(&query, [], |row| row.get(0)))?)
    }

    /// Apply a write: `statement` changes the lake (reading the rows `staged`, whose
    /// table it drops). It runs now, or is deferred inside a subtransaction or when
    /// small (see the module comment).
    pub fn write(&self, statement: String, staged: Option<StagedRows>) -> LakeResult<()> {
        let small = staged.as_ref().is_some_and(|s| {
            let tx = self.tx.borrow();
            let deferred = tx.deferred();
            deferred.len() < SMALL_WRITES && s.rows + deferred.iter().map(Write::rows).sum::<usize>() <= SMALL_WRITE_ROWS
        });
        let write = Write { subxact: current_subtransaction(), statement, staged };
        let has_read = self.tx.borrow().has_read();
        if in_subtransaction() || (small && !has_read) {
            if has_read {
                self.record_snapshot()?;
            }
            self.tx.borrow_mut().defer(write);
            return Ok(());
        }
        self.apply_deferred()?;
        self.record_snapshot()?;
        if let Some(staged) = &write.staged {
            self.check_unchanged(&staged.target)?;
        }
        self.changing(|| {
            // The lake was read above (`record_snapshot`): DuckLake's catalog reads are
            // done, and the threads go to writing the files. A scan still streaming is
            // buffered first, ending its own lending.
            self.connection()?;
            let _lent = self.instance.lend_threads();
            self.execute_batch(&write.statement)?;
            self.tx.borrow_mut().applied_one(write);
            Ok(())
        })
    }

    /// Run `statement`, a change to the lake that reads no staged rows (a one-statement
    /// UPDATE or DELETE, DDL), now, with `run`; it counts as a write of the current
    /// (sub)transaction.
    pub fn run_write<T>(
        &self,
        statement: &str,
        run: impl FnOnce(&duckdb::Connection, &str) -> duckdb::Result<T>,
    ) -> LakeResult<T> {
        self.apply_deferred()?;
        self.record_snapshot()?;
        let conn = self.connection()?;
        self.changing(|| {
            let _lent = self.instance.lend_threads();
            let result = cancel::interruptible(&self.instance.interrupt, || run(conn, statement))?;
            self.tx.borrow_mut().applied_one(Write {
                subxact: current_subtransaction(),
                statement: statement.to_owned(),
                staged: None,
            });
            Ok(result)
        })
    }

    /// Run `work`, which changes the DuckDB transaction and records the change.
    /// Cut short (a failed statement, or a cancel raised as a Postgres ERROR once
    /// DuckDB returned, which unwinds past the recording), the transaction stays
    /// Restarting: its DuckDB transaction may hold a change the records lack, so the
    /// next use rebuilds it from the records alone.
    fn changing<T>(&self, work: impl FnOnce() -> LakeResult<T>) -> LakeResult<T> {
        self.mark_writer();
        self.tx.borrow_mut().change_starts();
        let outcome = work()?;
        self.tx.borrow_mut().change_done();
        Ok(outcome)
    }

    /// Mark this transaction as a writer of the lake until it ends: a change may
    /// write files that only its commit will reference (see `lake_locks`).
    pub(super) fn mark_writer(&self) {
        if self.tx.borrow_mut().mark_writer() {
            lake_locks::mark_writer(self.lock_key);
        }
    }

    /// Whether the DuckDB transaction holds writes (and so may hold rows it inserted).
    pub fn wrote(&self) -> bool {
        !self.tx.borrow().applied().is_empty()
    }

    /// Bytes of staged rows this transaction keeps to replay its writes.
    pub fn kept_bytes(&self) -> usize {
        self.tx.borrow().kept_bytes()
    }

    /// Fail with 40001 if the lake columns `target` was staged for are not the
    /// table's current ones (another session altered it since they were looked up).
    pub fn check_unchanged(&self, target: &StagedFor) -> LakeResult<()> {
        let current = self.current_columns(&target.schema, &target.table)?;
        unchanged(target, &current)
    }

    /// Run the deferred writes, in order (after a pending restart).
    pub fn apply_deferred(&self) -> LakeResult<()> {
        self.apply_deferred_recording(true)
    }

    /// `apply_deferred`; the snapshot is recorded unless `record` is false (at commit,
    /// when nothing can be rolled back to any more).
    pub(super) fn apply_deferred_recording(&self, record: bool) -> LakeResult<()> {
        self.restart_if_pending()?;
        if self.tx.borrow().deferred().is_empty() {
            return Ok(());
        }
        self.tx.borrow_mut().read();
        if record {
            self.record_snapshot()?;
        }
        self.changing(|| {
            // What is not applied stays deferred, with its subtransactions, however
            // the apply ends: rolling those back drops it, and otherwise the next use
            // tries it again, in a restarted DuckDB transaction.
            struct Unapplied<'a> {
                lake: &'a Lake,
                writes: VecDeque<Write>,
            }
            impl Drop for Unapplied<'_> {
                fn drop(&mut self) {
                    if let Ok(mut tx) = self.lake.tx.try_borrow_mut() {
                        tx.return_unapplied(self.writes.drain(..));
                    }
                }
            }
            let taken = self.tx.borrow_mut().take_deferred();
            let mut unapplied = Unapplied { lake: self, writes: taken.into() };
            // All of them see one snapshot: each table's columns are read once.
            let mut columns: HashMap<(String, String), Vec<LakeColumn>> = HashMap::new();
            while let Some(write) = unapplied.writes.front() {
                self.apply(write, &mut columns)?;
                let write = unapplied.writes.pop_front().expect("just applied");
                self.tx.borrow_mut().applied_one(write);
            }
            Ok(())
        })
    }

    /// Apply one deferred write, checking first that the lake columns its rows were
    /// staged for are current (`columns` caches them for the one snapshot).
    fn apply(&self, write: &Write, columns: &mut HashMap<(String, String), Vec<LakeColumn>>) -> LakeResult<()> {
        if let Some(target) = write.staged.as_ref().map(|s| &s.target) {
            let key = (target.schema.clone(), target.table.clone());
            if !columns.contains_key(&key) {
                let current = self.current_columns(&target.schema, &target.table)?;
                columns.insert(key.clone(), current);
            }
            unchanged(target, &columns[&key])?;
        }
        self.execute_batch(&write.statement)
    }
}

/// Fail with 40001 if a lake column `target` was staged for differs in `current`.
fn unchanged(target: &StagedFor, current: &[LakeColumn]) -> LakeResult<()> {
    let Some(expected) = target.columns.iter().find(|expected| !current.contains(expected)) else {
        return Ok(());
    };
    let now = current.iter().find(|c| c.name == expected.name).map_or_else(
        || "no longer exists".to_owned(),
        |c| format!("is now {}{}", c.lake_type, if c.nullable { "" } else { " NOT NULL" }),
    );
    Err(LakeError::ConcurrentChange(format!(
        "DuckLake table {} was altered by another session: column \"{}\" {now}; retry the transaction",
        target.display, expected.name
    )))
}
