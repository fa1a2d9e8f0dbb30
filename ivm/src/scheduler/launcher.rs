//! The launcher: one static background worker that keeps a scheduler running in every
//! database that accepts connections. Schedulers exit at once where the extension is
//! not installed, and are restarted on the next round.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use pgrx::pg_sys;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set in the postmaster when the library is in shared_preload_libraries; inherited by backends.
pub static PRELOADED: AtomicBool = AtomicBool::new(false);

const LAUNCHER_ROUND: Duration = Duration::from_secs(10);

pub fn register_launcher() {
    PRELOADED.store(true, Ordering::SeqCst);
    BackgroundWorkerBuilder::new("pgtrickle launcher")
        .set_type("pgtrickle launcher")
        .set_library("ducklake_ivm")
        .set_function("pgtrickle_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Start the scheduler of `database` (a duplicate exits at once).
pub fn start_scheduler(database: pg_sys::Oid) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new("pgtrickle scheduler")
        .set_type("pgtrickle scheduler")
        .set_library("ducklake_ivm")
        .set_function("pgtrickle_scheduler_main")
        .set_argument(Some(pg_sys::Datum::from(database.to_u32())))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic()
        .ok()
}

/// Make sure this database's scheduler runs (after a stream table is created or resumed).
pub fn wake_scheduler() {
    if PRELOADED.load(Ordering::SeqCst) {
        // SAFETY: MyDatabaseId is set in every backend connected to a database.
        start_scheduler(unsafe { pg_sys::MyDatabaseId });
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgtrickle_launcher_main(_argument: pg_sys::Datum) {
    super::process::attach_signal_handlers();
    let database = crate::gucs::launcher_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let mut schedulers: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
    loop {
        let databases: Vec<pg_sys::Oid> = BackgroundWorker::transaction(|| {
            Spi::connect(|client| {
                let mut oids = Vec::new();
                for row in client.select("SELECT oid FROM pg_database WHERE datallowconn AND NOT datistemplate", None, &[])? {
                    if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                        oids.push(oid);
                    }
                }
                Ok::<_, pgrx::spi::Error>(oids)
            })
            .unwrap_or_default()
        });
        for database in databases {
            let running = schedulers.get(&database.to_u32()).is_some_and(|worker| {
                matches!(worker.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted))
            });
            if !running {
                if let Some(worker) = start_scheduler(database) {
                    schedulers.insert(database.to_u32(), worker);
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(LAUNCHER_ROUND)) {
            break; // the postmaster died
        }
        super::process::check_for_interrupts();
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file from the worker's main loop.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
}
