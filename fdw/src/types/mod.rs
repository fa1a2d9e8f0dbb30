//! Type mapping between DuckLake (as DuckDB sees it) and Postgres.
//!
//! - `kind`: how a Postgres column type is read: the DuckDB expression that yields
//!   an Arrow array of a known shape, and the decoder for that shape.
//! - `decode`: Arrow values to Postgres datums, column-wise per batch.
//! - `lake_types`: DuckDB type names to Postgres type names (IMPORT FOREIGN SCHEMA)
//!   and back (creating lake tables from Postgres definitions).

pub mod decode;
pub mod encode;
pub mod kind;
pub mod lake_types;
