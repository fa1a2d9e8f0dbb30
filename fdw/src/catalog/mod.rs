//! Lakes as this backend sees them: the configuration a foreign server resolves to,
//! the per-backend cache of attached DuckDB instances, and how their DuckDB
//! transactions follow the Postgres transaction.

pub mod access;
pub mod cache;
pub mod columns;
pub mod lake_locks;
pub mod config;
pub mod replay;
pub mod transaction;
pub mod writes;
