//! Settings of the stream-table engine.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

static LAUNCHER_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

pub fn register() {
    GucRegistry::define_string_guc(
        c"pgtrickle.launcher_database",
        c"Database the pgtrickle launcher connects to in order to list databases.",
        c"Any database that accepts connections; schedulers run in every database with ducklake_ivm installed.",
        &LAUNCHER_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

pub fn launcher_database() -> String {
    LAUNCHER_DATABASE
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_else(|| "postgres".into())
}
