//! Where lakes keep their files by default, under the cluster's data directory.

use std::ffi::CStr;

use pgrx::pg_sys;

pub fn data_directory() -> String {
    // SAFETY: DataDir is set (absolute) before any backend runs queries.
    unsafe { CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned() }
}

/// Where an embedded lake keeps its files: one directory per database and catalog,
/// so that two databases' lakes of one name never share files (each would take the
/// other's for unreferenced ones).
pub fn embedded_data_path(alias: &str) -> String {
    // SAFETY: MyDatabaseId is set in every backend connected to a database.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    format!("{}/ducklake/{database}/{alias}/", data_directory())
}
