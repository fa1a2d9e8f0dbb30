//! `ducklake_ivm`: stream tables (the `pgtrickle` API) maintained incrementally from
//! DuckLake change feeds read through `ducklake_fdw`.
//!
//! This first slice only provides the schema and a version function; maintenance
//! arrives with the stream-table work.

use pgrx::prelude::*;

::pgrx::pg_module_magic!();

/// Version of the installed extension library.
#[pg_extern]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
