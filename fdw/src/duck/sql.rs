//! Quoting for SQL text sent to DuckDB (see `ducklake_formats::duck_sql`). Every
//! identifier and literal that reaches a generated statement goes through one of these.

pub use ducklake_formats::duck_sql::{ident, literal, qualified};
