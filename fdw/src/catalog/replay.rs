//! Savepoint rollbacks after writes reached the lake. DuckDB has no savepoints, so a
//! rolled-back subtransaction that undid writes the DuckDB transaction holds (or a
//! failed DuckDB statement that aborted it, or a cancel that cut a write short)
//! marks the lake for a restart: its next use rolls the DuckDB transaction back,
//! begins a new one and replays the surviving writes in order, from copies of their
//! staged rows, on the same DuckLake snapshot. What cannot be replayed dooms the
//! lake's transaction, and its commit fails.

use pgrx::pg_sys;

use crate::catalog::cache::{Lake, LAKES};
use crate::catalog::lake_transaction::{Doom, Write};
use crate::duck::cancel;
use crate::error::{LakeError, LakeResult};

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
    /// The transaction leaves Restarting only once the restart is done: one cut short
    /// (a cancel raised as a Postgres ERROR) is started over at the next use. Until
    /// then the records it works from (the writes, the snapshot, whether the lake was
    /// read) are left as they are, so starting over finds the same snapshot to check.
    pub(super) fn restart_if_pending(&self) -> LakeResult<()> {
        if !self.tx.borrow().restart_pending() {
            return Ok(());
        }
        match self.restart() {
            Ok(replayed) => {
                self.tx.borrow_mut().restarted(replayed);
                Ok(())
            }
            Err(doom) => {
                let error = doom.error();
                self.tx.borrow_mut().doomed(doom);
                Err(error)
            }
        }
    }

    /// Roll back, begin anew and replay the records; whether anything was replayed.
    fn restart(&self) -> Result<bool, Doom> {
        let conn = &self.instance.conn;
        // A cursor still streaming keeps what it can read (a failed statement may have
        // broken it; it then fails when read).
        let _ = self.connection();
        let (survivors, read_snapshot, had_read) = {
            let tx = self.tx.borrow();
            (tx.has_writes(), tx.snapshot(), tx.has_read())
        };
        let server = &self.server_name;
        if survivors {
            let tx = self.tx.borrow();
            if !tx.applied().iter().chain(tx.deferred().iter()).all(Write::replayable) {
                return Err(Doom::Failed(format!(
                    "a rolled-back savepoint or exception block undid part of this transaction's writes to DuckLake \
                     server \"{server}\", and replaying the rest needs their rows, which outgrew \
                     ducklake.savepoint_replay_memory ({} kB)",
                    crate::gucs::savepoint_replay_memory() / 1024
                )));
            }
            if had_read && read_snapshot.is_none() {
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
        // Borrowed across the replay: nothing it calls changes the records.
        let tx = self.tx.borrow();
        for write in tx.deferred() {
            self.restage(write).map_err(failed)?;
        }
        for write in tx.applied() {
            self.restage(write).map_err(failed)?;
            self.execute_batch(&write.statement).map_err(failed)?;
        }
        // Nothing replayed on the old snapshot: later reads may see a newer one.
        Ok(survivors)
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

}

/// A subtransaction was rolled back. Its deferred writes are dropped. A lake holding
/// writes it (or a child) applied, or whose DuckDB transaction a failed statement
/// aborted, is restarted when next used (see `Lake::restart_if_pending`), so it stays
/// usable after an exception block or ROLLBACK TO.
pub fn subtransaction_aborted(subxact: pg_sys::SubTransactionId) {
    LAKES.with(|lakes| {
        for lake in lakes.borrow().values() {
            {
                let tx = lake.tx.borrow();
                if !tx.is_open() || tx.doom().is_some() {
                    continue;
                }
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
            let (undone, undid_applied) = lake.tx.borrow_mut().roll_back_subtransaction(subxact);
            let conn = &lake.instance.conn;
            for staged in undone.into_iter().filter_map(|w| w.staged) {
                let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", staged.table));
            }
            // The DuckDB transaction lost writes it holds, or a failed statement
            // aborted it (it then refuses even `SELECT 1`).
            if undid_applied || conn.execute_batch("SELECT 1").is_err() {
                lake.tx.borrow_mut().needs_restart();
            }
        }
    });
}

/// A subtransaction committed: its writes now belong to its parent.
pub fn subtransaction_committed(subxact: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    LAKES.with(|lakes| {
        for lake in lakes.borrow().values() {
            lake.tx.borrow_mut().commit_subtransaction(subxact, parent);
        }
    });
}
