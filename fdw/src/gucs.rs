//! Settings of the extension (`ducklake.*`). Only this file touches the statics;
//! everything else reads them through the typed getters.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static EXTENSION_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static INSTALL_EXTENSIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
static QUERY_PUSHDOWN: GucSetting<bool> = GucSetting::<bool>::new(true);
static MEMORY_LIMIT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1GB"));
static THREADS: GucSetting<i32> = GucSetting::<i32>::new(2);
static SNAPSHOT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AS_OF: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static COMMIT_AUTHOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static COMMIT_MESSAGE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ALLOWED_DATA_PATHS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ALLOWED_ENDPOINTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SAVEPOINT_REPLAY_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"ducklake.query_pushdown",
        c"Run a whole query in DuckDB when it reads only lake tables of one server and DuckDB computes exactly Postgres' answer.",
        c"Off: each lake table is scanned on its own and Postgres does the rest.",
        &QUERY_PUSHDOWN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.commit_author",
        c"Author recorded on the DuckLake snapshot a writing transaction creates (default: the Postgres user).",
        c"",
        &COMMIT_AUTHOR,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.commit_message",
        c"Commit message recorded on the DuckLake snapshot a writing transaction creates.",
        c"SET LOCAL sets it for one transaction.",
        &COMMIT_MESSAGE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.snapshot_id",
        c"Read DuckLake tables as of this snapshot id (empty: the latest).",
        c"SET LOCAL pins one transaction. A JSON object such as {\"lake_a\": 12, \"lake_b\": 7} pins each server's lake by server name (others read their latest). A foreign table's snapshot_id/as_of options take precedence.",
        &SNAPSHOT_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.as_of",
        c"Read DuckLake tables as of this time (a timestamptz; empty: the latest).",
        c"The snapshot current at that time is read. Set only one of ducklake.snapshot_id and ducklake.as_of.",
        &AS_OF,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.extension_directory",
        c"Directory holding ducklake.duckdb_extension and postgres_scanner.duckdb_extension.",
        c"Defaults to <sharedir>/ducklake_fdw, where the setup script installs them.",
        &EXTENSION_DIRECTORY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.allowed_data_paths",
        c"Directories and object-store prefixes under which servers owned by roles that are not superusers may keep their lakes' data.",
        c"A comma-separated list of absolute directories and prefixes such as s3://bucket/prefix/. Servers owned by superusers may use any data path.",
        &ALLOWED_DATA_PATHS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.allowed_endpoints",
        c"Object-store endpoints (host[:port]) that servers owned by roles that are not superusers may name in their endpoint option.",
        c"A comma-separated list. Without an endpoint option a server reaches its store's public endpoint (e.g. AWS S3).",
        &ALLOWED_ENDPOINTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"ducklake.install_extensions",
        c"Fetch the DuckDB extensions with INSTALL instead of loading them from a directory.",
        c"Needs network access to DuckDB's extension repository.",
        &INSTALL_EXTENSIONS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ducklake.memory_limit",
        c"Memory limit of each embedded DuckDB instance (one per backend and server).",
        c"Any DuckDB memory_limit value, e.g. '512MB' or '2GB'.",
        &MEMORY_LIMIT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ducklake.threads",
        c"Threads that run a statement's DuckDB work: the backend's own, plus this many minus one lent to DuckDB while a scan, a write reaching the lake as its statement runs, or a maintenance step runs.",
        c"Commits (with the small writes deferred to them) and catalog lookups always run on the backend's thread alone.",
        &THREADS,
        1,
        256,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ducklake.savepoint_replay_memory",
        c"Memory a transaction may use to keep the rows it wrote, so that rolling back a savepoint can replay them.",
        c"DuckDB has no savepoints: rolling one back after its writes reached the lake restarts the lake's \
          transaction and replays the writes made before it, which needs their rows. 0 keeps none.",
        &SAVEPOINT_REPLAY_MEMORY,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
}

fn string_setting(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

pub fn extension_directory() -> Option<String> {
    string_setting(&EXTENSION_DIRECTORY)
}

pub fn allowed_data_paths() -> Option<String> {
    string_setting(&ALLOWED_DATA_PATHS)
}

pub fn allowed_endpoints() -> Vec<String> {
    string_setting(&ALLOWED_ENDPOINTS)
        .map(|list| list.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()).collect())
        .unwrap_or_default()
}

pub fn install_extensions() -> bool {
    INSTALL_EXTENSIONS.get()
}

pub fn memory_limit() -> String {
    string_setting(&MEMORY_LIMIT).unwrap_or_else(|| "1GB".to_owned())
}

pub fn threads() -> i32 {
    THREADS.get()
}

/// In bytes.
pub fn savepoint_replay_memory() -> usize {
    SAVEPOINT_REPLAY_MEMORY.get().max(0) as usize * 1024
}

pub fn query_pushdown() -> bool {
    QUERY_PUSHDOWN.get()
}

pub fn snapshot_id() -> Option<String> {
    string_setting(&SNAPSHOT_ID)
}

pub fn as_of() -> Option<String> {
    string_setting(&AS_OF)
}

pub fn commit_author() -> Option<String> {
    string_setting(&COMMIT_AUTHOR)
}

pub fn commit_message() -> Option<String> {
    string_setting(&COMMIT_MESSAGE)
}
