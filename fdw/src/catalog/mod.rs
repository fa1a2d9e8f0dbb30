//! Lakes as this backend sees them: the configuration a foreign server resolves to
//! (and the rules for roles that are not superusers), the per-backend cache of
//! attached DuckDB instances, the state of each lake's part in the current
//! transaction, and how it follows the Postgres transaction.
//!
//! Leaves: `staged` (what writers hand over), `lake_transaction` (states and
//! records), `column_cache`, `locations`. `cache` holds the `Lake`; `writes`,
//! `replay` and `columns` extend it.

pub mod access;
pub mod cache;
pub mod change_lists;
pub mod column_cache;
pub mod columns;
pub mod commit_notice;
pub mod config;
pub mod feed_snapshots;
pub mod lake_locks;
pub mod lake_transaction;
pub mod locations;
pub mod replay;
pub mod staged;
pub mod transaction;
pub mod writes;
