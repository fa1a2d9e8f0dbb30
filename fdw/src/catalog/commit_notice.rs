//! Every commit that wrote to a lake is announced with `NOTIFY ducklake_commit, '<server>'`:
//! the stream-table scheduler of the database LISTENs and refreshes at once instead of
//! at its next poll, and applications may listen too. A notification is delivered only
//! if the transaction commits, once per server and transaction.

use std::ffi::{CString, c_char};

use pgrx::pg_sys;

/// The channel lake commits of a database are announced on.
pub const CHANNEL: &str = "ducklake_commit";

unsafe extern "C-unwind" {
    /// `commands/async.h`, which pgrx does not bind: queues a notification that is
    /// sent when the transaction commits (identical ones once).
    fn Async_Notify(channel: *const c_char, payload: *const c_char);
}

/// Announce, when the current transaction commits, that it wrote to the lake of `server`.
pub fn announce(server: &str) {
    let channel = CString::new(CHANNEL).expect("no NUL");
    // Server names are identifiers: no NUL, at most 63 bytes (payloads may have 7999).
    let payload = CString::new(server).unwrap_or_default();
    // SAFETY: called from the pre-commit callback, which runs before PreCommit_Notify
    // queues the transaction's notifications; Async_Notify copies both strings, and an
    // ERROR it raises becomes a Rust panic at the guarded boundary.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| Async_Notify(channel.as_ptr(), payload.as_ptr())) };
}
