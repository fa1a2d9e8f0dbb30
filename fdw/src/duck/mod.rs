//! The embedded DuckDB runtime: how an instance is opened, locked down, interrupted,
//! which threads run its work, and how SQL text for it is quoted. Nothing in here
//! calls Postgres from a DuckDB thread.

pub mod cancel;
pub mod change_feed;
pub mod extensions;
pub mod instance;
pub mod signals;
pub mod spill;
pub mod sql;
pub mod stream;
pub mod workers;
