//! Query cancel and statement_timeout for long DuckDB calls.
//!
//! While DuckDB runs on the backend's thread, Postgres' SIGINT handler (which also
//! serves statement_timeout) can only set `QueryCancelPending`. A watchdog thread,
//! started with signals blocked, polls that flag while a DuckDB call is in progress
//! and interrupts the DuckDB connection. Once DuckDB returns, the backend thread runs
//! CHECK_FOR_INTERRUPTS itself, which raises the proper Postgres error.
//!
//! The watchdog reads two `sig_atomic_t` flags and calls DuckDB's interrupt; it never
//! calls into Postgres.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use duckdb::InterruptHandle;
use parking_lot::{Condvar, Mutex};

use super::signals::SignalsBlocked;

const POLL: Duration = Duration::from_millis(20);

struct Watchdog {
    active: Mutex<Option<Arc<InterruptHandle>>>,
    wake: Condvar,
}

static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();

fn watchdog() -> &'static Watchdog {
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog =
            Box::leak(Box::new(Watchdog { active: Mutex::new(None), wake: Condvar::new() }));
        let _blocked = SignalsBlocked::new();
        std::thread::Builder::new()
            .name("ducklake-cancel".into())
            .spawn(move || watch(dog))
            .expect("spawning the cancel watchdog thread");
        dog
    })
}

fn cancel_requested() -> bool {
    // SAFETY: plain reads of volatile sig_atomic_t flags that the backend's signal
    // handlers set; no Postgres function is called.
    unsafe {
        std::ptr::read_volatile(&raw const pgrx::pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pgrx::pg_sys::ProcDiePending) != 0
    }
}

fn watch(dog: &'static Watchdog) {
    let mut active = dog.active.lock();
    loop {
        match active.as_ref() {
            None => dog.wake.wait(&mut active),
            Some(handle) => {
                if cancel_requested() {
                    handle.interrupt();
                }
                dog.wake.wait_for(&mut active, POLL);
            }
        }
    }
}

/// Run `work` (a DuckDB call on `handle`'s connection) so that a cancel request
/// interrupts it, then let Postgres act on any pending interrupt.
pub fn interruptible<T>(handle: &Arc<InterruptHandle>, work: impl FnOnce() -> T) -> T {
    let dog = watchdog();
    {
        *dog.active.lock() = Some(handle.clone());
        dog.wake.notify_one();
    }
    struct Deactivate(&'static Watchdog);
    impl Drop for Deactivate {
        fn drop(&mut self) {
            *self.0.active.lock() = None;
        }
    }
    let result = {
        let _deactivate = Deactivate(dog);
        work()
    };
    pgrx::check_for_interrupts!();
    result
}
