//! Settings of the stream-table engine.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

static LAUNCHER_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static REFRESH_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static REFRESH_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(0);
static ADAPTIVE_REFRESH: GucSetting<bool> = GucSetting::<bool>::new(true);
static FRONTIER_SNAPSHOT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The setting a refresh puts its frontier's lake snapshot in: the sources' states
/// before the changes it applies are foreign tables whose `snapshot_id_setting` names it.
pub const FRONTIER_SNAPSHOT_SETTING: &str = "pgtrickle.frontier_snapshot_id";

/// `preloading`: the library is loaded by shared_preload_libraries. Only then may a
/// postmaster setting be defined (Postgres refuses it later), and only then does the
/// launcher that reads it run.
pub fn register(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"pgtrickle.launcher_database",
            c"Database the pgtrickle launcher connects to in order to list databases.",
            c"Any database that accepts connections; schedulers run in every database with ducklake_ivm installed.",
            &LAUNCHER_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_string_guc(
        c"pgtrickle.frontier_snapshot_id",
        c"Set by a refresh, for its own statements: the lake snapshot of the stream table's frontier.",
        c"The sources as they were at the frontier are read at this snapshot (see ivm/README.md).",
        &FRONTIER_SNAPSHOT_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pgtrickle.adaptive_refresh",
        c"Whether a differential refresh rebuilds instead when that was cheaper.",
        c"A stream table whose last differential refresh took longer than its last full one is rebuilt \
          at the sources' current state instead (see ivm/README.md, Refresh semantics).",
        &ADAPTIVE_REFRESH,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgtrickle.refresh_lock_timeout",
        c"Longest wait of a scheduled refresh for a lock (0: no limit).",
        c"A refresh that waits longer fails (status ERROR, retried with backoff), so a table locked by another \
          session does not hold up the refreshes of every other stream table of the database.",
        &REFRESH_LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgtrickle.refresh_timeout",
        c"Longest run of a scheduled refresh (0: no limit).",
        c"A refresh that runs longer is canceled (status ERROR, retried with backoff).",
        &REFRESH_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
}

pub fn launcher_database() -> String {
    LAUNCHER_DATABASE
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_else(|| "postgres".into())
}

pub fn adaptive_refresh() -> bool {
    ADAPTIVE_REFRESH.get()
}

pub fn refresh_lock_timeout_ms() -> i32 {
    REFRESH_LOCK_TIMEOUT.get()
}

pub fn refresh_timeout_ms() -> i32 {
    REFRESH_TIMEOUT.get()
}
