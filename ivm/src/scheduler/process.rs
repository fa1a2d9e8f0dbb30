//! What the launcher and the schedulers are as Postgres processes: how they end, and
//! how a scheduler claims its database.

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;

/// Reload on SIGHUP, and end on SIGTERM the way every Postgres backend does
/// (`die`): the pending interrupt ends the process at its next check, also in the
/// middle of a refresh (whose transaction then rolls back) and of DuckDB work (which
/// the FDW's watchdog interrupts), so a fast shutdown never waits for a refresh.
pub fn attach_signal_handlers() {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: installs Postgres' own handler for a signal of this process.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(libc_sigterm(), Some(die));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(libc_sigterm(), Some(die));
    }
}

unsafe extern "C-unwind" {
    /// Postgres' SIGTERM handler of backends (`tcop/tcopprot.h`); pgrx binds it only
    /// as a guarded Rust function, not as the signal handler itself.
    fn die(signal: std::ffi::c_int);
}

fn libc_sigterm() -> i32 {
    pg_sys::SIGTERM as i32
}

/// Act on a pending interrupt (a SIGTERM ends the process here).
pub fn check_for_interrupts() {
    pgrx::check_for_interrupts!();
}

/// The key space of the scheduler's lock among advisory locks: the SQL functions
/// use 1 and 2 and the FDW 3 and 4, so no SQL call can take it.
const SCHEDULER_SPACE: u16 = 5;

/// Claim the scheduling of the current database for this process's lifetime; false
/// when another scheduler holds it.
pub fn claim_database() -> bool {
    // SAFETY: LOCKTAG is plain data; every field is set below. A session lock of the
    // user lock method, released when the process exits.
    unsafe {
        let mut tag: pg_sys::LOCKTAG = std::mem::zeroed();
        tag.locktag_field1 = pg_sys::MyDatabaseId.to_u32();
        tag.locktag_field2 = 0;
        tag.locktag_field3 = 0;
        tag.locktag_field4 = SCHEDULER_SPACE;
        tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
        tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
        let result = pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true, true);
        result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}
