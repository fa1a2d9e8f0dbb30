//! Where the DuckDB extensions come from: DuckLake, Postgres and ICU for every
//! instance, httpfs (and aws) or azure for lakes kept in object stores.
//!
//! The setup script copies them out of their PyPI wheels into `<sharedir>/ducklake_fdw`;
//! an operator may point `ducklake.extension_directory` elsewhere, or let DuckDB
//! `INSTALL` them when the server has network access.

use std::ffi::CStr;
use std::path::PathBuf;

use crate::duck::sql;
use crate::error::{LakeError, LakeResult};
use crate::gucs;

/// File names as DuckDB expects them: the Postgres extension's entry point is
/// `postgres_scanner_*`, so it must be loaded under that name. ICU provides time zones
/// (TIMESTAMPTZ arithmetic), which the DuckDB bundled by duckdb-rs lacks.
const EXTENSION_FILES: [&str; 3] =
    ["ducklake.duckdb_extension", "postgres_scanner.duckdb_extension", "icu.duckdb_extension"];

pub fn default_directory() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pgrx::pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is set at backend start; get_share_path writes at most
    // MAXPGPATH bytes into buf.
    let share = unsafe {
        pgrx::pg_sys::get_share_path(&raw const pgrx::pg_sys::my_exec_path as *const _, buf.as_mut_ptr());
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    };
    PathBuf::from(share).join("ducklake_fdw")
}

/// The statements that make the extensions every instance needs available.
pub fn load_statements() -> LakeResult<Vec<String>> {
    statements(&EXTENSION_FILES, &["ducklake", "postgres", "icu"])
}

/// The statements that let an instance reach the object store of `scheme`: azure for
/// Azure Blob Storage; httpfs for S3 and GCS, with aws when credentials come from the
/// server's credential chain.
pub fn object_store_statements(scheme: &str, credential_chain: bool) -> LakeResult<Vec<String>> {
    match (scheme, credential_chain) {
        ("az" | "abfss", _) => statements(&["azure.duckdb_extension"], &["azure"]),
        (_, true) => statements(&["httpfs.duckdb_extension", "aws.duckdb_extension"], &["httpfs", "aws"]),
        (_, false) => statements(&["httpfs.duckdb_extension"], &["httpfs"]),
    }
}

fn statements(files: &[&str], names: &[&str]) -> LakeResult<Vec<String>> {
    if gucs::install_extensions() {
        return Ok(names.iter().flat_map(|name| [format!("INSTALL {name}"), format!("LOAD {name}")]).collect());
    }
    let directory = gucs::extension_directory().map(PathBuf::from).unwrap_or_else(default_directory);
    files
        .iter()
        .map(|file| {
            let path = directory.join(file);
            if !path.is_file() {
                return Err(LakeError::MissingExtensionFile {
                    path: path.display().to_string(),
                    hint: format!(
                        "Install it with scripts/install-duckdb-extensions.sh (it copies {file} out of the \
                         PyPI wheels duckdb-extension-ducklake, -postgres, -icu, -httpfs, -aws and -azure, version 1.5.5), \
                         point ducklake.extension_directory at a directory that has it, \
                         or set ducklake.install_extensions = on where DuckDB can reach its repository."
                    ),
                });
            }
            Ok(format!("LOAD {}", sql::literal(&path.display().to_string())))
        })
        .collect()
}
