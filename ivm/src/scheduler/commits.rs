//! Lake commits wake the scheduler: ducklake_fdw announces every commit that wrote to
//! a lake with `NOTIFY ducklake_commit`, and the scheduler LISTENs, so a commit by a
//! backend of its database makes the tables it may concern due at once instead of at
//! their next poll. (Commits by other clusters or clients are still found by polling.)

use std::ffi::{CStr, c_char, c_int};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;

const CHANNEL: &CStr = c"ducklake_commit";

// `commands/async.h`, which pgrx does not bind.
unsafe extern "C-unwind" {
    fn Async_Listen(channel: *const c_char);
    fn ProcessNotifyInterrupt(flush: bool);
    /// `volatile sig_atomic_t` (an int here), set by the SIGUSR1 handler: mutable
    /// from outside Rust, so declared `mut` and only read volatile.
    static mut notifyInterruptPending: c_int;
}

/// Listen for lake commits, from the scheduler's start (LISTEN takes effect when the
/// transaction commits).
pub fn listen() {
    BackgroundWorker::transaction(|| {
        // SAFETY: inside a transaction; an ERROR becomes a panic at the guarded boundary.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| Async_Listen(CHANNEL.as_ptr())) }
    });
}

/// Whether a notification arrived since the last call. Reading the queue (in a
/// transaction of Postgres' own, so outside one here) frees its entries; the
/// payloads are not needed. Another channel's notification in this database may
/// also answer true: that only makes the scheduler look once more.
pub fn arrived() -> bool {
    // SAFETY: a sig_atomic_t the SIGUSR1 handler sets; read once, volatile.
    let pending = unsafe { std::ptr::read_volatile(&raw const notifyInterruptPending) } != 0;
    if pending {
        // SAFETY: called between transactions, as Postgres' idle loop does.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| ProcessNotifyInterrupt(false)) };
    }
    pending
}
