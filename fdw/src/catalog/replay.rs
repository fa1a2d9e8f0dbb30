//! Savepoint rollbacks after writes reached the lake. DuckDB has no savepoints, so a
//! rolled-back subtransaction that undid writes the DuckDB transaction holds (or a
//! failed DuckDB statement that aborted it, or a cancel that cut a write short)
//! marks the lake for a restart: its next use rolls the DuckDB transaction back,
//! begins a new one and replays the surviving writes in order, from copies of their
//! staged rows, on the same DuckLake snapshot. What cannot be replayed dooms the
//! lake's transaction, and its commit fails.

use pgrx::pg_sys;

use crate::catalog::cache::{Lake, LAKES};
use crate::catalog::writes::Write;
use crate::duck::cancel;
use crate::error::{LakeError, LakeResult};

/// Why the lake transaction can no longer commit.
pub(super) enum Doom {
    Failed(String),
    /// Another session committed between the snapshot the transaction read and its
    /// restart: a retry of the whole transaction succeeds.
    Overtaken(String),
}

impl Lake {
    /// After a rolled-back subtransaction undid writes the DuckDB transaction holds
    /// (or a failed statement aborted it, or a write was cut short: see
    /// `Lake::changing`): roll the DuckDB transaction back, begin a new one, and
    /// replay the surviving writes into it, in order. They are replayed only on the
    /// snapshot the old transaction read, on which they were computed (an UPDATE's
    /// rows, a DELETE's condition); if another session committed since, the
    /// transaction fails with 40001. With nothing to replay, later reads may see a
    /// newer snapshot.
    ///
    /// The flag is cleared only once the restart is done: one cut short (a cancel
    /// raised as a Postgres ERROR) is started over at the next use. Until then the
    /// records it works from (`applied`, `deferred`, `snapshot`, `touched`) are left
    /// as they are, so starting over finds the same snapshot to check.
    pub(super) fn restart_if_pending(&self) -> LakeResult<()> {
        if !self.restart_pending.get() {
            return Ok(());
        }
        if let Err(doom) = self.restart() {
            *self.doomed.borrow_mut() = Some(doom);
            self.restart_pending.set(false);
            return Err(self.doomed_error().expect("just doomed"));
        }
        self.restart_pending.set(false);
        Ok(())
    }

    fn restart(&self) -> Result<(), Doom> {
        let conn = &self.instance.conn;
        // A cursor still streaming keeps what it can read (a failed statement may have
        // broken it; it then fails when read).
        let _ = self.connection();
        let survivors = !self.applied.borrow().is_empty() || !self.deferred.borrow().is_empty();
        let read_snapshot = self.snapshot.get();
        let server = &self.server_name;
        if survivors {
            if !self.applied.borrow().iter().chain(self.deferred.borrow().iter()).all(Write::replayable) {
                return Err(Doom::Failed(format!(
                    "a rolled-back savepoint or exception block undid part of this transaction's writes to DuckLake \
                     server \"{server}\", and replaying the rest needs their rows, which outgrew \
                     ducklake.savepoint_replay_memory ({} kB)",
                    crate::gucs::savepoint_replay_memory() / 1024
                )));
            }
            if self.touched.get() && read_snapshot.is_none() {
                return Err(Doom::Failed(format!(
                    "a rolled-back savepoint or exception block undid part of this transaction's writes to DuckLake \
                     server \"{server}\", and the snapshot the rest were made on is unknown"
                )));
            }
        }
        let failed = |e: LakeError| {
            Doom::Failed(format!("replaying this transaction's writes to DuckLake server \"{server}\" failed: {e}"))
        };
        let _ = conn.execute_batch("ROLLBACK");
        // Lake DDL may be among what is undone or replayed.
        self.forget_columns();
        // On failure the lake stays in the transaction, doomed: the commit reports it.
        conn.execute_batch("BEGIN TRANSACTION").map_err(|e| failed(e.into()))?;
        if let (true, Some(read)) = (survivors, read_snapshot) {
            let now = self.current_snapshot(conn).map_err(failed)?;
            if now != read {
                return Err(Doom::Overtaken(format!(
                    "a rolled-back savepoint or exception block undid part of this transaction's writes to DuckLake \
                     server \"{server}\", and the rest cannot be replayed: they were made on snapshot {read}, and \
                     another session has committed since (snapshot {now}); retry the transaction"
                )));
            }
        }
        for write in self.deferred.borrow().iter() {
            self.restage(write).map_err(failed)?;
        }
        for write in self.applied.borrow().iter() {
            self.restage(write).map_err(failed)?;
            self.execute_batch(&write.statement).map_err(failed)?;
        }
        if !survivors {
            // Nothing was replayed on the old snapshot: later reads may see a newer one.
            self.touched.set(false);
            self.snapshot.set(None);
        }
        Ok(())
    }

    /// Re-create the staging table of `write` from its copy.
    fn restage(&self, write: &Write) -> LakeResult<()> {
        let Some(copy) = write.staged.as_ref().and_then(|s| s.copy.as_ref()) else { return Ok(()) };
        self.execute_batch(&copy.create)?;
        let conn = self.connection()?;
        cancel::interruptible(&self.instance.interrupt, || -> LakeResult<()> {
            let mut appender = conn.appender_to_catalog_and_db(&copy.name, "temp", "main")?;
            for batch in &copy.batches {
                appender.append_record_batch(batch.clone())?;
            }
            appender.flush()?;
            Ok(())
        })
    }

    pub(super) fn doomed_error(&self) -> Option<LakeError> {
        self.doomed.borrow().as_ref().map(|doom| match doom {
            Doom::Failed(reason) => LakeError::TransactionDoomed(reason.clone()),
            Doom::Overtaken(reason) => LakeError::ConcurrentChange(reason.clone()),
        })
    }
}

/// A subtransaction was rolled back. Its deferred writes are dropped. A lake holding
/// writes it (or a child) applied, or whose DuckDB transaction a failed statement
/// aborted, is restarted when next used (see `Lake::restart_if_pending`), so it stays
/// usable after an exception block or ROLLBACK TO.
pub fn subtransaction_aborted(subxact: pg_sys::SubTransactionId) {
    LAKES.with(|lakes| {
        for lake in lakes.borrow().values() {
            if !lake.in_transaction.get() || lake.doomed.borrow().is_some() {
                continue;
            }
            // The aborted statement's scan is gone, and its result needs no buffering;
            // a cursor of an enclosing (sub)transaction keeps its rows before the
            // connection runs anything else.
            let streaming = lake.streaming.borrow_mut().take();
            if let Some((stream, opened_in)) = streaming {
                if opened_in < subxact {
                    let _ = stream.buffer_rest(&lake.instance.interrupt, lake.instance.temp_directory());
                }
            }
            let undone: Vec<Write> = {
                let mut deferred = lake.deferred.borrow_mut();
                let (undone, kept) = std::mem::take(&mut *deferred).into_iter().partition(|w| w.subxact >= subxact);
                *deferred = kept;
                undone
            };
            let conn = &lake.instance.conn;
            for staged in undone.into_iter().filter_map(|w| w.staged) {
                let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", staged.table));
            }
            let undid_applied = {
                let mut applied = lake.applied.borrow_mut();
                let before = applied.len();
                applied.retain(|w| w.subxact < subxact);
                applied.len() < before
            };
            if undid_applied || lake.restart_pending.get() || conn.execute_batch("SELECT 1").is_err() {
                lake.restart_pending.set(true);
            }
        }
    });
}

/// A subtransaction committed: its writes now belong to its parent.
pub fn subtransaction_committed(subxact: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    LAKES.with(|lakes| {
        for lake in lakes.borrow().values() {
            for w in lake.applied.borrow_mut().iter_mut().chain(lake.deferred.borrow_mut().iter_mut()) {
                if w.subxact >= subxact {
                    w.subxact = parent;
                }
            }
        }
    });
}
