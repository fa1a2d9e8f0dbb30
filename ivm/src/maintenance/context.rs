//! The execution context of a refresh: run as the stream table's owner (like REFRESH
//! MATERIALIZED VIEW), under the settings recorded with its query (see `settings`),
//! with lake time-travel settings scoped to the refresh, and subtransactions for the
//! steps whose failure is handled.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// While alive: current user is the owner, in a security-restricted operation, the
/// recorded settings apply, and all of them (and those set through `pin_snapshot`)
/// revert when it is dropped.
pub struct RefreshContext {
    saved_user: pg_sys::Oid,
    saved_security: i32,
    nest_level: i32,
}

impl RefreshContext {
    pub fn enter(owner: pg_sys::Oid, settings: &serde_json::Value) -> crate::error::IvmResult<Self> {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_security = 0;
        // SAFETY: plain backend state; restored in Drop or by transaction abort.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_security);
            let nest_level = pg_sys::NewGUCNestLevel();
            pg_sys::SetUserIdAndSecContext(
                owner,
                saved_security
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            let context = RefreshContext { saved_user, saved_security, nest_level };
            crate::settings::apply(settings)?;
            // A session's own time-travel settings must not leak into maintenance.
            context.set("ducklake.snapshot_id", "");
            context.set("ducklake.as_of", "");
            Ok(context)
        }
    }

    fn set(&self, name: &str, value: &str) {
        let _ = Spi::run_with_args("SELECT pg_catalog.set_config($1, $2, true)", &[name.into(), value.into()]);
    }

    /// Read the lakes as of `pin` (a snapshot id, or a JSON object of ids by server
    /// name: see `lakes`) for the rest of this refresh.
    pub fn pin_snapshot(&self, pin: &str) {
        self.set("ducklake.snapshot_id", pin);
    }

    /// Read the sources' states before the refresh's changes (see `objects::create_mirror`)
    /// as of `pin`.
    pub fn pin_frontier(&self, pin: &str) {
        self.set(crate::gucs::FRONTIER_SNAPSHOT_SETTING, pin);
    }

    pub fn unpin_snapshot(&self) {
        self.set("ducklake.snapshot_id", "");
        self.set(crate::gucs::FRONTIER_SNAPSHOT_SETTING, "");
    }
}

impl Drop for RefreshContext {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // An ERROR is propagating: the (sub)transaction abort restores both.
            return;
        }
        // SAFETY: undoes `enter`.
        unsafe {
            pg_sys::AtEOXact_GUC(true, self.nest_level);
            pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_security);
        }
    }
}

/// Run `body` in a subtransaction: on error it is rolled back and the error returned,
/// leaving the enclosing transaction usable (like an exception block in PL/pgSQL).
pub fn in_subtransaction<T>(body: impl FnOnce() -> T) -> Result<T, CaughtError> {
    // SAFETY: the standard internal-subtransaction protocol used by PL handlers.
    unsafe {
        let memory_context = pg_sys::CurrentMemoryContext;
        let resource_owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(memory_context);
        let body = std::panic::AssertUnwindSafe(body);
        PgTryBuilder::new(std::panic::AssertUnwindSafe(move || {
            let body = body;
            let value = (body.0)();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(memory_context);
            pg_sys::CurrentResourceOwner = resource_owner;
            Ok(value)
        }))
        .catch_others(move |error| {
            pg_sys::MemoryContextSwitchTo(memory_context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(memory_context);
            pg_sys::CurrentResourceOwner = resource_owner;
            Err(error)
        })
        .execute()
    }
}

/// SQLSTATE and message of a caught error.
pub fn describe(error: &CaughtError) -> (PgSqlErrorCode, String) {
    let report = report_of(error);
    (report.sql_error_code(), report.message().to_string())
}

/// A caught error as an error of ours, with its SQLSTATE, message, detail and hint.
pub fn to_ivm_error(error: &CaughtError) -> crate::error::IvmError {
    let report = report_of(error);
    let mut ivm = crate::error::IvmError::new(report.sql_error_code(), report.message());
    ivm.detail = report.detail().map(str::to_owned);
    ivm.hint = report.hint().map(str::to_owned);
    ivm
}

fn report_of(error: &CaughtError) -> &pgrx::pg_sys::panic::ErrorReportWithLevel {
    match error {
        CaughtError::PostgresError(report)
        | CaughtError::ErrorReport(report)
        | CaughtError::RustPanic { ereport: report, .. } => report,
    }
}
