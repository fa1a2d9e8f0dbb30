//! One attached DuckDB instance per (server, user) and backend, created on first use
//! and reused across statements; re-attached when the server's options or the user
//! mapping change.
//!
//! Within one Postgres transaction every statement on a lake runs inside one DuckDB
//! transaction, so all reads of the lake see one snapshot. Its state is a
//! `LakeTransaction` (see there for its phases); what it writes is recorded and
//! applied as `writes` describes, and rebuilt after a savepoint rollback as `replay`
//! describes; the DuckDB transaction commits at the Postgres pre-commit, after every
//! lake has applied its pending writes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use ducklake_formats::run_query::{RUN_QUERY_TEXT, parameter_variable};
use pgrx::pg_sys;

use crate::catalog::column_cache::ColumnCache;
use crate::catalog::commit_notice;
use crate::catalog::config::LakeConfig;
use crate::catalog::feed_snapshots::FeedSnapshots;
use crate::catalog::lake_locks;
use crate::catalog::lake_transaction::{LakeTransaction, current_subtransaction};
use crate::duck::instance::LakeInstance;
use crate::duck::stream::Stream;
use crate::duck::{cancel, sql};
use crate::error::{LakeError, LakeResult};

pub struct Lake {
    /// The result still streaming on the connection, if any, and the subtransaction
    /// whose statement opened it. Declared before `instance`: it borrows the
    /// connection and must be dropped first.
    pub(super) streaming: RefCell<Option<(Rc<Stream>, pg_sys::SubTransactionId)>>,
    pub instance: LakeInstance,
    pub server_name: String,
    fingerprint: String,
    /// Identifies the lake for `lake_locks`.
    pub(super) lock_key: u64,
    /// This lake's part in the current Postgres transaction. Borrowed only for the
    /// length of a transition, never across a DuckDB call.
    pub(super) tx: RefCell<LakeTransaction>,
    /// Lake columns as last looked up.
    pub(super) columns: ColumnCache,
    /// Snapshots whose changes are read by time travel (see `duck::change_feed`).
    pub feed_snapshots: FeedSnapshots,
    /// When this backend last used the lake (see `evict_idle`).
    last_used: Cell<u64>,
}

type Key = (pg_sys::Oid, pg_sys::Oid);

thread_local! {
    pub(super) static LAKES: RefCell<HashMap<Key, Rc<Lake>>> = RefCell::new(HashMap::new());
    /// Counts uses of lakes, to find the least recently used one.
    static USES: Cell<u64> = const { Cell::new(0) };
}

/// Instances a backend keeps between transactions. Each holds a DuckDB database (up
/// to `ducklake.memory_limit`) and connections to its catalog, and a session that
/// reaches many lakes, or many roles' lakes (the scheduler refreshes stream tables as
/// their owners), would otherwise keep all of them for its lifetime.
const CACHED_INSTANCES: usize = 8;

impl Lake {
    /// The DuckDB connection, free for a new statement: a result still streaming on
    /// it is first buffered (see `duck::stream`).
    pub fn connection(&self) -> LakeResult<&duckdb::Connection> {
        let streaming = self.streaming.borrow_mut().take();
        if let Some((stream, _)) = streaming {
            stream.buffer_rest(&self.instance.interrupt, self.instance.temp_directory())?;
        }
        Ok(&self.instance.conn)
    }

    /// Start `sql`, its parameters bound as `bindings` says, as the result streaming
    /// on the connection; it lends threads to DuckDB while it runs and is buffered
    /// when the connection is next needed for something else.
    pub fn stream(self: &Rc<Self>, sql: &str, bindings: Bindings) -> LakeResult<Rc<Stream>> {
        let conn = self.connection()?;
        // SAFETY: the connection lives inside this Lake (an Rc whose contents never
        // move); the statement lives in a Stream that is dropped before the Lake: by
        // its holders, which keep the Lake alive and release the stream first, and by
        // the Lake itself (its `streaming` field is declared before its instance).
        let conn: &'static duckdb::Connection = unsafe { &*(conn as *const duckdb::Connection) };
        let (statement, lent) = cancel::interruptible(&self.instance.interrupt, || -> LakeResult<_> {
            let (mut statement, params) = match bindings {
                Bindings::Placeholders(params) => prepare_for_one_run(conn, sql, params)?,
                Bindings::Variables(values) => {
                    // Set right before the query is bound, which reads them: nothing
                    // else runs on the connection in between.
                    set_variables(conn, values)?;
                    prepare_for_one_run(conn, sql, Vec::new())?
                }
            };
            // Lent before the query runs: aggregates run to completion before the first
            // batch. DuckDB binds a lake scan as it runs (see `prepare_for_one_run`), so
            // DuckLake's catalog reads for the binding run with the threads lent.
            let lent = self.instance.lend_threads();
            drop(statement.stream_arrow(duckdb::params_from_iter(params))?);
            Ok((statement, lent))
        })?;
        let stream = Rc::new(Stream::new(statement, lent));
        self.set_streaming(stream.clone());
        Ok(stream)
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
        self.refuse_after_writes()?;
        self.mark_writer();
        let conn = self.connection()?;
        if self.tx.borrow_mut().closed_early() {
            conn.execute_batch("COMMIT")?;
        }
        let outcome = cancel::interruptible(&self.instance.interrupt, || -> LakeResult<usize> {
            conn.execute_batch("BEGIN TRANSACTION")?;
            let mut statement = conn.prepare(sql)?;
            let rows = {
                // Not for the commit, a chain of catalog round trips (see `duck::workers`).
                let _lent = self.instance.lend_threads();
                statement.query_map([], |_| Ok(()))?.count()
            };
            conn.execute_batch("COMMIT")?;
            Ok(rows)
        });
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Back inside a transaction, as the rest of this Postgres transaction expects;
        // a new one, which reads the lake's snapshot afresh.
        self.begin()?;
        outcome
    }

    /// The time before which a file of the lake that no snapshot references can be
    /// deleted (see `lake_locks::unreferenced_files_cutoff`).
    pub fn unreferenced_files_cutoff(&self, retention: pgrx::datum::Interval) -> LakeResult<String> {
        lake_locks::unreferenced_files_cutoff(self.lock_key, retention)
    }

    fn refuse_after_writes(&self) -> LakeResult<()> {
        if self.tx.borrow().has_writes() {
            return Err(LakeError::NotSupported(
                "lake maintenance commits on its own; run it outside a transaction that wrote to the lake".into(),
            ));
        }
        Ok(())
    }

    /// Run a statement that returns nothing, interruptibly.
    pub fn execute_batch(&self, sql: &str) -> LakeResult<()> {
        let conn = self.connection()?;
        cancel::interruptible(&self.instance.interrupt, || conn.execute_batch(sql))?;
        Ok(())
    }

    /// The error a doomed lake transaction fails with.
    pub(super) fn doomed_error(&self) -> Option<LakeError> {
        self.tx.borrow().doom().map(|doom| doom.error())
    }

    /// Idle → Staging.
    fn begin(&self) -> LakeResult<()> {
        if let Some(e) = self.doomed_error() {
            return Err(e);
        }
        if !self.tx.borrow().is_open() {
            self.connection()?.execute_batch("BEGIN TRANSACTION")?;
            self.tx.borrow_mut().began();
        }
        Ok(())
    }

    /// Any phase → Idle: commit or roll back the DuckDB transaction. Deferred writes
    /// were applied by `commit_all` before a commit; a rollback drops them. The writer
    /// mark is released by Postgres with the transaction.
    fn finish(&self, commit: bool) -> LakeResult<()> {
        let ended = self.tx.borrow_mut().finish();
        if !ended.open {
            return Ok(());
        }
        if let Some(doom) = ended.doom {
            // A doomed transaction may have no DuckDB transaction left (a restart
            // that failed to begin one).
            let _ = self.instance.conn.execute_batch("ROLLBACK");
            return if commit { Err(doom.error()) } else { Ok(()) };
        }
        let wrote = ended.wrote;
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

/// The lake of `server_oid` for the current user, inside a DuckDB transaction that
/// ends with the current Postgres transaction, with the writes deferred by
/// subtransactions applied (so what follows sees them).
pub fn lake_for(server_oid: pg_sys::Oid) -> LakeResult<Rc<Lake>> {
    let lake = lake_for_write(server_oid)?;
    lake.apply_deferred()?;
    lake.tx.borrow_mut().read();
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
                if old.tx.borrow().is_open() {
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
                lock_key: lake_locks::key(&instance.data_path),
                instance,
                server_name: config.server_name.clone(),
                fingerprint,
                tx: RefCell::new(LakeTransaction::default()),
                columns: ColumnCache::default(),
                feed_snapshots: FeedSnapshots::default(),
                last_used: Cell::new(0),
            });
            LAKES.with(|lakes| lakes.borrow_mut().insert(key, lake.clone()));
            lake
        }
    };
    lake.last_used.set(USES.with(|uses| {
        uses.set(uses.get() + 1);
        uses.get()
    }));
    lake.begin().map_err(|e| match e {
        LakeError::TransactionDoomed(_) | LakeError::ConcurrentChange(_) => e,
        other => LakeError::AttachFailed { server: lake.server_name.clone(), message: config.scrub(&other.to_string()) },
    })?;
    lake.restart_if_pending()?;
    Ok(lake)
}

fn lakes_in_transaction() -> Vec<Rc<Lake>> {
    LAKES.with(|lakes| lakes.borrow().values().filter(|l| l.tx.borrow().is_open()).cloned().collect())
}

/// Commit every lake transaction of this backend; the first failure is returned
/// (the Postgres transaction then aborts and the rest roll back). Deferred writes
/// are applied under the commit lock (see `writes`).
pub fn commit_all() -> LakeResult<()> {
    let lakes = lakes_in_transaction();
    let keys: Vec<u64> = lakes
        .iter()
        .filter(|l| l.tx.borrow().has_writes())
        .map(|l| l.lock_key)
        .collect();
    // A doomed lake fails the commit before any lake commits (or applies writes).
    if let Some(e) = lakes.iter().find_map(|l| l.doomed_error()) {
        return Err(e);
    }
    // Queued before any lake commits: a notification is sent only if the Postgres
    // transaction commits, and queueing one may fail, which must abort everything.
    for lake in lakes.iter().filter(|l| l.tx.borrow().has_writes()) {
        commit_notice::announce(&lake.server_name);
    }
    let _locks = lake_locks::acquire_commit(keys);
    for lake in &lakes {
        lake.apply_deferred_recording(false)?;
    }
    for lake in lakes {
        lake.finish(true)?;
    }
    evict_idle();
    Ok(())
}

/// Close the least recently used instances beyond `CACHED_INSTANCES`, between
/// transactions (an instance in a transaction is never closed).
fn evict_idle() {
    LAKES.with(|lakes| {
        let mut lakes = lakes.borrow_mut();
        while lakes.len() > CACHED_INSTANCES {
            let oldest = lakes
                .iter()
                .filter(|(_, lake)| !lake.tx.borrow().is_open())
                .min_by_key(|(_, lake)| lake.last_used.get())
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => drop(lakes.remove(&key)),
                None => break,
            }
        }
    });
}

/// Roll back every lake transaction; failures are only logged, since this runs
/// while Postgres is already aborting.
pub fn rollback_all() {
    for lake in lakes_in_transaction() {
        if let Err(e) = lake.finish(false) {
            pgrx::warning!("rolling back DuckLake transaction on server \"{}\": {e}", lake.server_name);
        }
    }
    evict_idle();
}

pub fn any_in_transaction() -> bool {
    !lakes_in_transaction().is_empty()
}

/// Close every instance (joins DuckDB's threads) before the process exits.
pub fn close_all() {
    LAKES.with(|lakes| lakes.borrow_mut().clear());
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

/// `sql` prepared to run once with `params`: without parameters, through
/// `RUN_QUERY_TEXT`, so that DuckDB binds it once, not twice (TPC-H 1's SQL takes 7 ms
/// to bind, for 150 ms to run).
fn prepare_for_one_run(
    conn: &'static duckdb::Connection,
    sql: &str,
    params: Vec<duckdb::types::Value>,
) -> LakeResult<(duckdb::Statement<'static>, Vec<duckdb::types::Value>)> {
    if params.is_empty() {
        let statement = conn.prepare(RUN_QUERY_TEXT)?;
        return Ok((statement, vec![duckdb::types::Value::Text(sql.to_owned())]));
    }
    Ok((conn.prepare(sql)?, params))
}

/// The parameter values of a query, and how its SQL reads them.
pub enum Bindings {
    /// As `$1..$n` of a prepared statement.
    Placeholders(Vec<duckdb::types::Value>),
    /// As DuckDB variables (`ducklake_formats::run_query::parameter_variable`), set
    /// just before the query is bound: `values[i]` is parameter i + 1.
    Variables(Vec<duckdb::types::Value>),
}

impl Bindings {
    pub fn none() -> Bindings {
        Bindings::Placeholders(Vec::new())
    }
}

/// Set the variables of `values` (see `Bindings::Variables`), each by a prepared
/// `SET VARIABLE`, which reads no lake.
fn set_variables(conn: &duckdb::Connection, values: Vec<duckdb::types::Value>) -> LakeResult<()> {
    for (i, value) in values.into_iter().enumerate() {
        let variable = sql::ident(&parameter_variable(i + 1));
        conn.prepare(&format!("SET VARIABLE {variable} = $1"))?.execute([value])?;
    }
    Ok(())
}
