//! One read snapshot for the statements of a refresh that read Postgres sources.
//!
//! Under READ COMMITTED every statement sees the database anew, so a refresh whose
//! statements each took their own snapshot could count a commit that lands between
//! them in one and miss it in another. The statements that read sources (which
//! changes are unseen, the changes themselves, groups recomputed, a rebuild) and the
//! frontier recorded (`pg_current_snapshot()` in it) all use this one snapshot.
//! Lake tables are read as DuckLake's own snapshot pins them, whatever this is.

use crate::error::{IvmError, IvmResult};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

pub struct ReadSnapshot(pg_sys::Snapshot);

impl ReadSnapshot {
    /// The latest snapshot, registered (as a private copy, whose command id this
    /// module moves forward) until dropped.
    pub fn take() -> ReadSnapshot {
        // SAFETY: GetLatestSnapshot returns a static snapshot, which registering copies.
        unsafe { ReadSnapshot(pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot())) }
    }

    /// Run `sql` in this snapshot, seeing this transaction's own earlier writes (to
    /// the refresh's work tables). Returns the rows processed, and the first column of
    /// the first row as text when there is one.
    fn execute(&self, sql: &str, read_only: bool) -> IvmResult<(u64, Option<String>)> {
        let text = CString::new(sql).map_err(|_| IvmError::invalid("generated SQL contains a NUL character"))?;
        // SAFETY: SPI is connected by Spi::connect; the plan and tuple table live in
        // the SPI procedure's memory context until it finishes, after the copy below.
        Spi::connect(|_| unsafe {
            (*self.0).curcid = pg_sys::GetCurrentCommandId(false);
            let plan = pg_sys::SPI_prepare(text.as_ptr(), 0, std::ptr::null_mut());
            if plan.is_null() {
                return Err(IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("could not prepare: {sql}")));
            }
            let code = pg_sys::SPI_execute_snapshot(
                plan,
                std::ptr::null_mut(),
                std::ptr::null(),
                self.0,
                std::ptr::null_mut(),
                read_only,
                true,
                0,
            );
            if code < 0 {
                return Err(IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("SPI error {code}: {sql}")));
            }
            let processed = pg_sys::SPI_processed;
            let table = pg_sys::SPI_tuptable;
            let first = if table.is_null() || processed == 0 {
                None
            } else {
                let value = pg_sys::SPI_getvalue(*(*table).vals, (*table).tupdesc, 1);
                (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
            };
            Ok((processed, first))
        })
    }

    /// Run a statement that writes (a work table) in this snapshot.
    pub fn run(&self, sql: &str) -> IvmResult<u64> {
        super::timing::timed(sql, || Ok(self.execute(sql, false)?.0))
    }

    /// A boolean query's answer in this snapshot.
    pub fn exists(&self, sql: &str) -> IvmResult<bool> {
        super::timing::timed(sql, || Ok(self.execute(sql, true)?.1.as_deref() == Some("t")))
    }

    /// This snapshot as `pg_snapshot` text, for the frontier, with the current
    /// transaction (if it has an id) as still running. A snapshot counts its own
    /// transaction as neither running nor (until a later one completes) visible;
    /// recorded as is, it could count this transaction's own later writes to a
    /// source as seen once a later transaction completed. (A refresh of a stream
    /// table whose source this transaction wrote before is refused: nothing of it
    /// was counted.)
    pub fn text(&self) -> IvmResult<String> {
        const SQL: &str = "WITH n AS (SELECT pg_catalog.pg_current_snapshot() AS s, pg_catalog.pg_current_xact_id_if_assigned() AS x) \
             SELECT CASE WHEN x IS NULL THEN s::text ELSE pg_catalog.format('%s:%s:%s', \
                      LEAST(pg_catalog.pg_snapshot_xmin(s), x), \
                      GREATEST(pg_catalog.pg_snapshot_xmax(s), ((x::text)::numeric + 1)::text::pg_catalog.xid8), \
                      (SELECT pg_catalog.string_agg(v::text, ',' ORDER BY v) \
                         FROM (SELECT pg_catalog.pg_snapshot_xip(s) AS v UNION SELECT x) u)) END FROM n";
        self.execute(SQL, true)?
            .1
            .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "pg_current_snapshot() returned nothing"))
    }
}

impl Drop for ReadSnapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: registered in `take`; an ERROR's abort releases it instead.
            unsafe { pg_sys::UnregisterSnapshot(self.0) };
        }
    }
}
