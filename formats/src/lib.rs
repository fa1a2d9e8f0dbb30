//! The text forms `ducklake_fdw` and `ducklake_ivm` read and write, as pure functions:
//! no Postgres and no DuckDB, so `cargo test -p ducklake_formats` checks them in
//! seconds, edge values included.
//!
//! - `duck_sql`: quoting identifiers and literals for DuckDB
//! - `conninfo`: libpq connection strings (both forms), their secrets and options
//! - `paths`: lexical normalization of data paths and the roots they must lie under
//! - `object_store`: a lake's object store (S3, GCS) as a DuckDB secret
//! - `rowid`: DuckLake's 64-bit rowid packed into a Postgres tuple id
//! - `calendar`: days and microseconds since an epoch as ISO dates and times
//! - `decimal`: a DECIMAL's unscaled value as numeric text
//! - `run_query`: running a query's text through a statement prepared without it
//! - `schedule`: stream-table schedules ('500ms', '5s') and the backoff after failures
//! - `refresh_cost`: when a stream table's refresh rebuilds because that is cheaper

pub mod calendar;
pub mod conninfo;
pub mod decimal;
pub mod duck_sql;
pub mod object_store;
pub mod paths;
pub mod refresh_cost;
pub mod rowid;
pub mod run_query;
pub mod schedule;
