//! A database's scheduler: refreshes each due, non-paused stream table in its own
//! transaction: every interval, and at once when a lake commit lands (see `commits`). A failing table is marked ERROR with the message and retried with
//! backoff; it turns ACTIVE again by itself once a refresh succeeds.

use super::{commits, process};
use super::schedule::{backoff, parse};
use crate::catalog::{self, Lock};
use crate::error::OrRaise;
use crate::maintenance::context::{describe, in_subtransaction};
use crate::maintenance::refresh::{Outcome, Requested, refresh};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::pg_sys;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Longest sleep between catalog reads: new and resumed tables are noticed this fast.
const MAX_IDLE: Duration = Duration::from_millis(500);

/// Shortest time between two looks at a table that commits start. A commit wakes the
/// scheduler whichever lake it wrote, and a look that finds nothing costs a few
/// milliseconds: under a stream of commits to other lakes, a table is looked at no
/// more often than this.
const COMMIT_LOOK_GAP: Duration = Duration::from_millis(100);

struct Due {
    id: i64,
    interval: Duration,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgtrickle_scheduler_main(argument: pg_sys::Datum) {
    let database = pg_sys::Oid::from(argument.value() as u32);
    process::attach_signal_handlers();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // One scheduler per database: a session lock no SQL function can take decides.
    let claimed = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'ducklake_ivm')")
            .ok()
            .flatten()
            .unwrap_or(false);
        installed && process::claim_database()
    });
    if !claimed {
        return;
    }
    commits::listen();
    // When each table was last refreshed, and last refreshed with changes (or failed):
    // a table is polled once per interval, and a lake commit makes it due at once,
    // but never sooner than an interval after its last change. Refreshes that find
    // nothing do not count, so a commit after a quiet interval shows at once.
    let mut last_attempt: HashMap<i64, Instant> = HashMap::new();
    let mut last_change: HashMap<i64, Instant> = HashMap::new();
    let mut commit_seen: HashSet<i64> = HashSet::new();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file from the worker's main loop.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let Some(tables) = BackgroundWorker::transaction(active_tables) else {
            return; // the extension was dropped
        };
        if commits::arrived() {
            commit_seen.extend(tables.iter().map(|t| t.id));
        }
        let now = Instant::now();
        let mut next_wake = now + MAX_IDLE;
        for table in &tables {
            let after_change = last_change.get(&table.id).map(|t| *t + table.interval);
            let next_poll = last_attempt.get(&table.id).map(|t| *t + table.interval);
            let next_look = last_attempt.get(&table.id).map(|t| *t + COMMIT_LOOK_GAP.min(table.interval));
            let due_at = if commit_seen.contains(&table.id) {
                after_change.max(next_look)
            } else {
                after_change.max(next_poll)
            }
            .unwrap_or(now);
            if due_at <= Instant::now() {
                last_attempt.insert(table.id, Instant::now());
                match refresh_one(table.id) {
                    Look::Changed => {
                        last_change.insert(table.id, Instant::now());
                        commit_seen.remove(&table.id);
                    }
                    Look::Unchanged => {
                        commit_seen.remove(&table.id);
                    }
                    // Another session holds the table (a manual refresh): a commit
                    // it may not have read is looked at again.
                    Look::Skipped => {}
                }
                process::check_for_interrupts();
                next_wake = next_wake.min(Instant::now() + table.interval);
            } else {
                next_wake = next_wake.min(due_at);
            }
        }
        let present = |id: &i64| tables.iter().any(|t| t.id == *id);
        last_attempt.retain(|id, _| present(id));
        last_change.retain(|id, _| present(id));
        commit_seen.retain(present);
        let wait = next_wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            return; // the postmaster died
        }
        process::check_for_interrupts();
    }
}

/// Non-paused stream tables with their effective interval, each after the stream
/// tables it reads; None when the catalog is gone.
fn active_tables() -> Option<Vec<Due>> {
    Spi::connect(|client| {
        let present = client
            .select("SELECT to_regclass('pgtrickle.pgt_stream_tables') IS NOT NULL", None, &[])?
            .first()
            .get_one::<bool>()?
            .unwrap_or(false);
        if !present {
            return Ok(None);
        }
        let mut tables = Vec::new();
        for row in client.select(
            "SELECT pgt_id, schedule, consecutive_errors FROM pgtrickle.pgt_stream_tables \
             WHERE status <> 'PAUSED' ORDER BY pgt_id",
            None,
            &[],
        )? {
            let id: i64 = row.get(1)?.unwrap_or_default();
            let schedule: String = row.get(2)?.unwrap_or_default();
            let errors: i32 = row.get(3)?.unwrap_or_default();
            let interval = parse(&schedule).unwrap_or(Duration::from_secs(60));
            tables.push(Due { id, interval: backoff(interval, errors) });
        }
        Ok::<_, pgrx::spi::Error>(Some(tables))
    })
    .unwrap_or(None)
    .map(|tables| {
        // Stream tables over stream tables: the ones read first, so that a pass
        // refreshes a table after those whose results it reads.
        let ids: Vec<i64> = tables.iter().map(|t| t.id).collect();
        let order = catalog::in_dependency_order(&ids, &catalog::dependencies().unwrap_or_default());
        let mut tables = tables;
        tables.sort_by_key(|t| order.iter().position(|id| *id == t.id));
        tables
    })
}

/// One scheduled refresh, in a transaction of its own, bounded by
/// `pgtrickle.refresh_lock_timeout` (a table locked by another session fails this
/// refresh instead of stalling every stream table of the database) and
/// `pgtrickle.refresh_timeout`.
fn refresh_one(id: i64) -> Look {
    BackgroundWorker::transaction(|| {
        let activity = std::ffi::CString::new(format!("pgtrickle: refresh of stream table {id}")).expect("no NUL");
        // SAFETY: reports this worker's activity in pg_stat_activity.
        unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr()) };
        let _ = Spi::run_with_args(
            "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
            &[format!("{}ms", crate::gucs::refresh_lock_timeout_ms()).into()],
        );
        let _timeout = RefreshTimeout::start(crate::gucs::refresh_timeout_ms());
        let result = in_subtransaction(|| refresh(id, Requested::Differential, Lock::SkipLocked).or_raise());
        let look = match result {
            Ok(Some(Outcome::Refreshed { changes, .. })) if changes != 0 => Look::Changed,
            Ok(Some(Outcome::Rebuilt)) => Look::Changed,
            Ok(Some(_)) => Look::Unchanged,
            Ok(None) => Look::Skipped,
            Err(error) => {
                let (_, message) = describe(&error);
                pgrx::log!("pgtrickle: refresh of stream table {id} failed: {message}");
                let _ = catalog::record_error(id, &message);
                // Retried after the (backed-off) interval, not at the next commit.
                Look::Changed
            }
        };
        // SAFETY: as above.
        unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null()) };
        look
    })
}

/// What one look at a table did.
enum Look {
    /// Changed the table, or failed: the next waits for the schedule.
    Changed,
    /// Found nothing to apply.
    Unchanged,
    /// The table was locked by another session.
    Skipped,
}

/// Postgres' statement timeout, which no client statement arms in a background
/// worker, armed for the length of one refresh (0: none).
struct RefreshTimeout(bool);

/// `utils/timeout.h`, which pgrx does not bind. `STATEMENT_TIMEOUT` is the fourth
/// `TimeoutId` in PostgreSQL 15 to 18.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

unsafe extern "C-unwind" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

impl RefreshTimeout {
    fn start(milliseconds: i32) -> RefreshTimeout {
        if milliseconds <= 0 {
            return RefreshTimeout(false);
        }
        // SAFETY: the timeout is registered by InitPostgres for every backend.
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, milliseconds) };
        RefreshTimeout(true)
    }
}

impl Drop for RefreshTimeout {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: disarms the timeout armed in `start`.
            unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
        }
    }
}
