//! One attached DuckDB instance per (server, user) and backend, created on first use
//! and reused across statements; re-attached when the server's options or the user
//! mapping change.
//!
//! Within one Postgres transaction every statement on a lake runs inside one DuckDB
//! transaction, so all reads of the lake see one snapshot.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys;

use crate::catalog::config::LakeConfig;
use crate::duck::cancel;
use crate::duck::instance::LakeInstance;
use crate::duck::stream::Stream;
use crate::error::{LakeError, LakeResult};

pub struct Lake {
    /// The result still streaming on the connection, if any. Declared before
    /// `instance`: it borrows the connection and must be dropped first.
    streaming: RefCell<Option<Rc<Stream>>>,
    pub instance: LakeInstance,
    pub server_name: String,
    fingerprint: String,
    in_transaction: Cell<bool>,
}

type Key = (pg_sys::Oid, pg_sys::Oid);

thread_local! {
    static LAKES: RefCell<HashMap<Key, Rc<Lake>>> = RefCell::new(HashMap::new());
}

impl Lake {
    /// The DuckDB connection, free for a new statement: a result still streaming on
    /// it is first buffered (see `duck::stream`).
    pub fn connection(&self) -> LakeResult<&duckdb::Connection> {
        let streaming = self.streaming.borrow_mut().take();
        if let Some(stream) = streaming {
            stream.buffer_rest(&self.instance.interrupt)?;
        }
        Ok(&self.instance.conn)
    }

    /// Record `stream` as the result now streaming on the connection.
    pub fn set_streaming(&self, stream: Rc<Stream>) {
        *self.streaming.borrow_mut() = Some(stream);
    }

    /// Forget `stream` if it is the one streaming (its scan ended).
    pub fn release(&self, stream: &Rc<Stream>) {
        let mut streaming = self.streaming.borrow_mut();
        if streaming.as_ref().is_some_and(|s| Rc::ptr_eq(s, stream)) {
            *streaming = None;
        }
    }

    /// Run a statement that returns nothing, interruptibly.
    pub fn execute_batch(&self, sql: &str) -> LakeResult<()> {
        let conn = self.connection()?;
        cancel::interruptible(&self.instance.interrupt, || conn.execute_batch(sql))?;
        Ok(())
    }

    fn begin(&self) -> LakeResult<()> {
        if !self.in_transaction.get() {
            self.connection()?.execute_batch("BEGIN TRANSACTION")?;
            self.in_transaction.set(true);
        }
        Ok(())
    }

    fn finish(&self, commit: bool) -> LakeResult<()> {
        if !self.in_transaction.replace(false) {
            return Ok(());
        }
        // Scans of this transaction are over; their results need no buffering.
        self.streaming.borrow_mut().take();
        if commit {
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
/// ends with the current Postgres transaction.
pub fn lake_for(server_oid: pg_sys::Oid) -> LakeResult<Rc<Lake>> {
    let config = LakeConfig::resolve(server_oid)?;
    // SAFETY: GetUserId only reads backend state.
    let key = (server_oid, unsafe { pg_sys::GetUserId() });
    let fingerprint = config.fingerprint();

    let cached = LAKES.with(|lakes| lakes.borrow().get(&key).cloned());
    let lake = match cached {
        Some(lake) if lake.fingerprint == fingerprint => lake,
        stale => {
            if let Some(old) = stale {
                // Options changed: abandon the old attachment (its transaction, if
                // any, has no writes that could still be committed consistently).
                let _ = old.finish(false);
                LAKES.with(|lakes| lakes.borrow_mut().remove(&key));
            }
            let instance = LakeInstance::open(&config)?;
            let lake = Rc::new(Lake {
                streaming: RefCell::new(None),
                instance,
                server_name: config.server_name.clone(),
                fingerprint,
                in_transaction: Cell::new(false),
            });
            LAKES.with(|lakes| lakes.borrow_mut().insert(key, lake.clone()));
            lake
        }
    };
    lake.begin().map_err(|e| LakeError::AttachFailed {
        server: lake.server_name.clone(),
        message: config.scrub(&e.to_string()),
    })?;
    Ok(lake)
}

fn lakes_in_transaction() -> Vec<Rc<Lake>> {
    LAKES.with(|lakes| lakes.borrow().values().filter(|l| l.in_transaction.get()).cloned().collect())
}

/// Commit every lake transaction of this backend; the first failure is returned
/// (the Postgres transaction then aborts and the rest roll back).
pub fn commit_all() -> LakeResult<()> {
    for lake in lakes_in_transaction() {
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
