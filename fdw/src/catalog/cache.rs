//! One attached DuckDB instance per (server, user) and backend, created on first use
//! and reused across statements; re-attached when the server's options or the user
//! mapping change.
//!
//! Within one Postgres transaction every statement on a lake runs inside one DuckDB
//! transaction, so all reads of the lake see one snapshot.
//!
//! Lake DDL runs at once, also inside a subtransaction. Other writes are deferred
//! in two cases; their rows (if any) wait in their staging table, and
//! the statement that moves them into the lake runs when the lake is next read or
//! the transaction commits:
//! - Inside a Postgres subtransaction (a savepoint, an exception block, psql's
//!   ON_ERROR_ROLLBACK), since DuckDB has no savepoints: a subtransaction rolled back
//!   before its write is applied simply drops it. One rolled back after its write
//!   reached the lake (or after a failed DuckDB statement aborted the lake's
//!   transaction, or a cancel cut a write short) restarts the DuckDB transaction and replays the surviving writes
//!   in order, from copies of their staged rows, on the same DuckLake snapshot (see
//!   `restart`).
//! - Small writes (together at most `SMALL_WRITE_ROWS` rows in at most
//!   `SMALL_WRITES` statements) of a transaction that has not read the lake yet.
//!   They are applied at commit, under the commit lock, so the
//!   DuckLake transaction reads the latest snapshot only then. Applied earlier, its
//!   snapshot would be stale by the time the lock is granted whenever other backends
//!   commit meanwhile, and DuckLake's first commit attempt would fail and be retried
//!   with a conflict check: under many concurrent writers, that doubles the time
//!   each commit holds the lock. Until the lake is read, such a transaction takes
//!   lake columns from a per-backend cache (filled on a sibling connection, outside
//!   its own DuckDB transaction, since a lookup there costs a catalog transaction of
//!   its own). When the write is applied, and before a value is reported as refused,
//!   the columns it was staged for are compared with the table's current columns; a
//!   difference (another session altered the table) refreshes the cache and fails
//!   with a serialization error (40001), so a retry succeeds.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use arrow::record_batch::RecordBatch;
use pgrx::pg_sys;

use crate::catalog::commit_lock;
use crate::catalog::config::LakeConfig;
use crate::duck::{cancel, sql};
use crate::duck::instance::LakeInstance;
use crate::duck::stream::Stream;
use crate::error::{LakeError, LakeResult};

pub struct Lake {
    /// The result still streaming on the connection, if any, and the subtransaction
    /// whose statement opened it. Declared before `instance`: it borrows the
    /// connection and must be dropped first.
    streaming: RefCell<Option<(Rc<Stream>, pg_sys::SubTransactionId)>>,
    pub instance: LakeInstance,
    pub server_name: String,
    fingerprint: String,
    commit_lock_key: u64,
    in_transaction: Cell<bool>,
    /// Whether the DuckDB transaction has used the lake (and so holds a DuckLake
    /// snapshot), rather than only staging tables.
    touched: Cell<bool>,
    /// The DuckLake snapshot the DuckDB transaction reads, once touched.
    snapshot: Cell<Option<u64>>,
    /// Writes applied to the DuckDB transaction, in order.
    applied: RefCell<Vec<Write>>,
    /// Writes not yet applied, in statement order.
    deferred: RefCell<Vec<Write>>,
    /// Set when a rolled-back subtransaction undid writes the DuckDB transaction
    /// holds, or a failed statement aborted it: the next use restarts it.
    restart_pending: Cell<bool>,
    /// Set when the lake transaction can no longer commit.
    doomed: RefCell<Option<Doom>>,
    /// Columns of lake tables as last looked up, by (schema, table).
    known_columns: RefCell<HashMap<(String, String), Vec<LakeColumn>>>,
}

type Key = (pg_sys::Oid, pg_sys::Oid);

/// How much a transaction which has not read the lake defers to its commit (see the
/// module comment): at most one staging batch of rows, in at most this many
/// statements. Beyond that, writes are applied at once, so that writing their
/// Parquet files does not hold the commit lock.
const SMALL_WRITE_ROWS: usize = crate::modify::staging::BATCH_ROWS;
const SMALL_WRITES: usize = 64;

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

/// A write of the current transaction: the statement that changes the lake (and
/// drops the staging table it reads, if any).
struct Write {
    subxact: pg_sys::SubTransactionId,
    statement: String,
    staged: Option<StagedRows>,
}

impl Write {
    fn rows(&self) -> usize {
        self.staged.as_ref().map_or(0, |s| s.rows)
    }

    fn kept_bytes(&self) -> usize {
        self.staged.as_ref().and_then(|s| s.copy.as_ref()).map_or(0, |c| c.bytes)
    }

    /// Whether it can be replayed (its staged rows, if any, were kept).
    fn replayable(&self) -> bool {
        self.staged.as_ref().is_none_or(|s| s.copy.is_some())
    }
}

/// Why the lake transaction can no longer commit.
enum Doom {
    Failed(String),
    /// Another session committed between the snapshot the transaction read and its
    /// restart: a retry of the whole transaction succeeds.
    Overtaken(String),
}

thread_local! {
    static LAKES: RefCell<HashMap<Key, Rc<Lake>>> = RefCell::new(HashMap::new());
}

impl Lake {
    /// The DuckDB connection, free for a new statement: a result still streaming on
    /// it is first buffered (see `duck::stream`).
    pub fn connection(&self) -> LakeResult<&duckdb::Connection> {
        let streaming = self.streaming.borrow_mut().take();
        if let Some((stream, _)) = streaming {
            stream.buffer_rest(&self.instance.interrupt)?;
        }
        Ok(&self.instance.conn)
    }

    /// Record `stream` as the result now streaming on the connection.
    pub fn set_streaming(&self, stream: Rc<Stream>) {
        *self.streaming.borrow_mut() = Some((stream, current_subtransaction()));
    }

    /// Forget `stream` if it is the one streaming (its scan ended).
    pub fn release(&self, stream: &Rc<Stream>) {
        let mut streaming = self.streaming.borrow_mut();
        if streaming.as_ref().is_some_and(|(s, _)| Rc::ptr_eq(s, stream)) {
            *streaming = None;
        }
    }

    /// Run `sql` in a DuckDB transaction of its own, committed at once, and return the
    /// number of rows it produced. Refused when this transaction already wrote to
    /// the lake, whose changes would otherwise be committed early.
    pub fn run_own_transaction(&self, sql: &str) -> LakeResult<usize> {
        if !self.applied.borrow().is_empty() {
            return Err(LakeError::NotSupported(
                "lake maintenance commits on its own; run it outside a transaction that wrote to the lake".into(),
            ));
        }
        let conn = self.connection()?;
        if self.in_transaction.replace(false) {
            conn.execute_batch("COMMIT")?;
        }
        let outcome = cancel::interruptible(&self.instance.interrupt, || -> LakeResult<usize> {
            conn.execute_batch("BEGIN TRANSACTION")?;
            let mut statement = conn.prepare(sql)?;
            let rows = statement.query_map([], |_| Ok(()))?.count();
            conn.execute_batch("COMMIT")?;
            Ok(rows)
        });
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Back inside a transaction, as the rest of this Postgres transaction expects;
        // a new one, which reads the lake's snapshot afresh.
        self.touched.set(false);
        self.snapshot.set(None);
        self.begin()?;
        outcome
    }

    /// Run a statement that returns nothing, interruptibly.
    pub fn execute_batch(&self, sql: &str) -> LakeResult<()> {
        let conn = self.connection()?;
        cancel::interruptible(&self.instance.interrupt, || conn.execute_batch(sql))?;
        Ok(())
    }

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

    /// Note that the DuckDB transaction reads the lake from now on.
    fn touch(&self) {
        self.touched.set(true);
    }

    /// `touch`, and record the snapshot the DuckDB transaction reads (its first access
    /// takes it): a restart must find it again to replay the transaction's writes.
    /// Done once the transaction writes, so transactions that only read never pay it.
    fn record_snapshot(&self) -> LakeResult<()> {
        self.touch();
        if self.snapshot.get().is_some() {
            return Ok(());
        }
        let id = self.current_snapshot(self.connection()?)?;
        self.snapshot.set(Some(id));
        Ok(())
    }

    /// The DuckLake snapshot the DuckDB transaction on `conn` reads (taken by its
    /// first access to the lake, which this may be).
    fn current_snapshot(&self, conn: &duckdb::Connection) -> LakeResult<u64> {
        let query = format!("SELECT id FROM ducklake_current_snapshot({})", sql::literal(&self.instance.alias));
        Ok(cancel::interruptible(&self.instance.interrupt, || conn.query_row(&query, [], |row| row.get(0)))?)
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

    /// Apply a write: `statement` changes the lake (reading the rows `staged`, whose
    /// table it drops). It runs now, or is deferred inside a subtransaction or when
    /// small (see the module comment).
    pub fn write(&self, statement: String, staged: Option<StagedRows>) -> LakeResult<()> {
        let small = staged.as_ref().is_some_and(|s| {
            let deferred = self.deferred.borrow();
            deferred.len() < SMALL_WRITES && s.rows + deferred.iter().map(Write::rows).sum::<usize>() <= SMALL_WRITE_ROWS
        });
        let write = Write { subxact: current_subtransaction(), statement, staged };
        if in_subtransaction() || (small && !self.touched.get()) {
            if self.touched.get() {
                self.record_snapshot()?;
            }
            self.deferred.borrow_mut().push(write);
            return Ok(());
        }
        self.apply_deferred()?;
        self.record_snapshot()?;
        if let Some(staged) = &write.staged {
            self.check_unchanged(&staged.target)?;
        }
        self.changing(|| {
            self.execute_batch(&write.statement)?;
            self.applied.borrow_mut().push(write);
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
            let result = cancel::interruptible(&self.instance.interrupt, || run(conn, statement))?;
            self.applied.borrow_mut().push(Write { subxact: current_subtransaction(), statement: statement.to_owned(), staged: None });
            Ok(result)
        })
    }

    /// Run `work`, which changes the DuckDB transaction and records the change in
    /// `applied`. Cut short (a failed statement, or a cancel raised as a Postgres
    /// ERROR once DuckDB returned, which unwinds past the recording), the DuckDB
    /// transaction may hold a change the records lack: it is then restarted when next
    /// used, which rebuilds it from the records alone.
    fn changing<T>(&self, work: impl FnOnce() -> LakeResult<T>) -> LakeResult<T> {
        self.restart_pending.set(true);
        let outcome = work()?;
        self.restart_pending.set(false);
        Ok(outcome)
    }

    /// Whether the DuckDB transaction holds writes (and so may hold rows it inserted).
    pub fn wrote(&self) -> bool {
        !self.applied.borrow().is_empty()
    }

    /// Bytes of staged rows this transaction keeps to replay its writes.
    pub fn kept_bytes(&self) -> usize {
        self.applied.borrow().iter().chain(self.deferred.borrow().iter()).map(Write::kept_bytes).sum()
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
    fn apply_deferred_recording(&self, record: bool) -> LakeResult<()> {
        self.restart_if_pending()?;
        if self.deferred.borrow().is_empty() {
            return Ok(());
        }
        self.touch();
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
                    if let Ok(mut deferred) = self.lake.deferred.try_borrow_mut() {
                        deferred.splice(0..0, self.writes.drain(..));
                    }
                }
            }
            let mut unapplied = Unapplied { lake: self, writes: std::mem::take(&mut *self.deferred.borrow_mut()).into() };
            // All of them see one snapshot: each table's columns are read once.
            let mut columns: HashMap<(String, String), Vec<LakeColumn>> = HashMap::new();
            while let Some(write) = unapplied.writes.front() {
                self.apply(write, &mut columns)?;
                let write = unapplied.writes.pop_front().expect("just applied");
                self.applied.borrow_mut().push(write);
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

    /// After a rolled-back subtransaction undid writes the DuckDB transaction holds
    /// (or a failed statement aborted it, or a write was cut short: see `changing`):
    /// roll the DuckDB transaction back, begin a
    /// new one, and replay the surviving writes into it, in order. They are replayed
    /// only on the snapshot the old transaction read, on which they were computed
    /// (an UPDATE's rows, a DELETE's condition); if another session committed since,
    /// the transaction fails with 40001. With nothing to replay, later reads may see
    /// a newer snapshot.
    ///
    /// The flag is cleared only once the restart is done: one cut short (a cancel
    /// raised as a Postgres ERROR) is started over at the next use. Until then the
    /// records it works from (`applied`, `deferred`, `snapshot`, `touched`) are left
    /// as they are, so starting over finds the same snapshot to check.
    fn restart_if_pending(&self) -> LakeResult<()> {
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

    fn doomed_error(&self) -> Option<LakeError> {
        self.doomed.borrow().as_ref().map(|doom| match doom {
            Doom::Failed(reason) => LakeError::TransactionDoomed(reason.clone()),
            Doom::Overtaken(reason) => LakeError::ConcurrentChange(reason.clone()),
        })
    }

    fn begin(&self) -> LakeResult<()> {
        if let Some(e) = self.doomed_error() {
            return Err(e);
        }
        if !self.in_transaction.get() {
            self.connection()?.execute_batch("BEGIN TRANSACTION")?;
            self.in_transaction.set(true);
        }
        Ok(())
    }

    fn finish(&self, commit: bool) -> LakeResult<()> {
        // Applied by commit_all before a commit; a rollback drops them with the transaction.
        self.deferred.borrow_mut().clear();
        let wrote = !std::mem::take(&mut *self.applied.borrow_mut()).is_empty();
        let doomed = self.doomed_error();
        self.doomed.borrow_mut().take();
        self.touched.set(false);
        self.snapshot.set(None);
        self.restart_pending.set(false);
        if !self.in_transaction.replace(false) {
            return Ok(());
        }
        if let Some(e) = doomed {
            // A doomed transaction may have no DuckDB transaction left (a restart
            // that failed to begin one).
            let _ = self.instance.conn.execute_batch("ROLLBACK");
            return if commit { Err(e) } else { Ok(()) };
        }
        // Scans of this transaction are over; their results need no buffering.
        self.streaming.borrow_mut().take();
        if commit {
            if wrote {
                self.instance.conn.execute_batch(&commit_message_call(&self.instance.alias))?;
            }
            cancel::interruptible(&self.instance.interrupt, || self.instance.conn.execute_batch("COMMIT"))?;
        } else {
            // Not interruptible: a cancel that is still pending while Postgres aborts
            // must not leave DuckDB inside the transaction.
            self.instance.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }
}

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

/// Whether the current statement runs inside a savepoint or exception block, where
/// writes are deferred (see `Lake::write`).
pub fn in_subtransaction() -> bool {
    // SAFETY: reads backend transaction state.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() > 1 }
}

/// The lake of `server_oid` for the current user, inside a DuckDB transaction that
/// ends with the current Postgres transaction, with the writes deferred by
/// subtransactions applied (so what follows sees them).
pub fn lake_for(server_oid: pg_sys::Oid) -> LakeResult<Rc<Lake>> {
    let lake = lake_for_write(server_oid)?;
    lake.apply_deferred()?;
    lake.touch();
    Ok(lake)
}

/// `lake_for` for a statement that only adds a write (an INSERT): deferred writes
/// stay deferred, since it reads nothing they could change, and the DuckDB
/// transaction does not read the lake's snapshot yet (unless a pending restart
/// replays writes, which reads it).
pub fn lake_for_write(server_oid: pg_sys::Oid) -> LakeResult<Rc<Lake>> {
    let config = LakeConfig::resolve(server_oid)?;
    // SAFETY: GetUserId only reads backend state.
    let key = (server_oid, unsafe { pg_sys::GetUserId() });
    let fingerprint = config.fingerprint();

    let cached = LAKES.with(|lakes| lakes.borrow().get(&key).cloned());
    let lake = match cached {
        Some(lake) if lake.fingerprint == fingerprint => lake,
        stale => {
            if let Some(old) = stale {
                // Re-attaching mid-transaction would silently drop what the old
                // attachment wrote and change the snapshot reads see.
                if old.in_transaction.get() {
                    return Err(LakeError::NotSupported(format!(
                        "the options of server \"{}\" (or the user mapping) changed during this transaction; \
                         finish the transaction first",
                        old.server_name
                    )));
                }
                LAKES.with(|lakes| lakes.borrow_mut().remove(&key));
            }
            let instance = LakeInstance::open(&config)?;
            let lake = Rc::new(Lake {
                streaming: RefCell::new(None),
                instance,
                server_name: config.server_name.clone(),
                fingerprint,
                commit_lock_key: config.commit_lock_key,
                in_transaction: Cell::new(false),
                touched: Cell::new(false),
                snapshot: Cell::new(None),
                applied: RefCell::new(Vec::new()),
                deferred: RefCell::new(Vec::new()),
                restart_pending: Cell::new(false),
                doomed: RefCell::new(None),
                known_columns: RefCell::new(HashMap::new()),
            });
            LAKES.with(|lakes| lakes.borrow_mut().insert(key, lake.clone()));
            lake
        }
    };
    lake.begin().map_err(|e| match e {
        LakeError::TransactionDoomed(_) | LakeError::ConcurrentChange(_) => e,
        other => LakeError::AttachFailed { server: lake.server_name.clone(), message: config.scrub(&other.to_string()) },
    })?;
    lake.restart_if_pending()?;
    Ok(lake)
}

fn lakes_in_transaction() -> Vec<Rc<Lake>> {
    LAKES.with(|lakes| lakes.borrow().values().filter(|l| l.in_transaction.get()).cloned().collect())
}

/// Commit every lake transaction of this backend; the first failure is returned
/// (the Postgres transaction then aborts and the rest roll back). Deferred writes
/// are applied under the commit lock (see the module comment).
pub fn commit_all() -> LakeResult<()> {
    let lakes = lakes_in_transaction();
    let keys: Vec<u64> = lakes
        .iter()
        .filter(|l| !l.applied.borrow().is_empty() || !l.deferred.borrow().is_empty())
        .map(|l| l.commit_lock_key)
        .collect();
    // A doomed lake fails the commit before any lake commits (or applies writes).
    if let Some(e) = lakes.iter().find_map(|l| l.doomed_error()) {
        return Err(e);
    }
    let _locks = commit_lock::acquire(keys);
    for lake in &lakes {
        lake.apply_deferred_recording(false)?;
    }
    for lake in lakes {
        lake.finish(true)?;
    }
    Ok(())
}

/// Roll back every lake transaction; failures are only logged, since this runs
/// while Postgres is already aborting.
pub fn rollback_all() {
    for lake in lakes_in_transaction() {
        if let Err(e) = lake.finish(false) {
            pgrx::warning!("rolling back DuckLake transaction on server \"{}\": {e}", lake.server_name);
        }
    }
}

pub fn any_in_transaction() -> bool {
    !lakes_in_transaction().is_empty()
}

/// Close every instance (joins DuckDB's threads) before the process exits.
pub fn close_all() {
    LAKES.with(|lakes| lakes.borrow_mut().clear());
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
                    let _ = stream.buffer_rest(&lake.instance.interrupt);
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

fn current_subtransaction() -> pg_sys::SubTransactionId {
    // SAFETY: reads backend transaction state.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}

/// Author (the setting, else the Postgres user) and message of the snapshot a
/// writing transaction creates.
fn commit_message_call(alias: &str) -> String {
    let author = crate::gucs::commit_author().unwrap_or_else(|| {
        // SAFETY: reads the current user's name from the catalog.
        unsafe {
            std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
                .to_string_lossy()
                .into_owned()
        }
    });
    let message = crate::gucs::commit_message().map_or_else(|| "NULL".to_owned(), |m| sql::literal(&m));
    format!("CALL ducklake_set_commit_message({}, {}, {message})", sql::literal(alias), sql::literal(&author))
}
