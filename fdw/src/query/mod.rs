//! Whole-query pushdown: a SELECT whose relations are all lake tables of one server
//! runs as one DuckDB query, when DuckDB computes exactly Postgres' answer.
//!
//! - `hook`: the planner hook; Postgres plans the query as usual (permissions, plan
//!   invalidation, parameters), then the plan tree is replaced by one custom scan.
//! - `translate` (query structure) and `expr` (expressions): Postgres' analyzed
//!   `Query` to DuckDB SQL, refusing (`None`) anything whose meaning could differ;
//!   the query then runs as before, each lake table scanned on its own.
//! - `typed`: what a translated expression is (its SQL, Postgres type, numeric scale).
//! - `numeric`: Postgres' numeric display scales and division, computed in DuckDB;
//!   `magnitude`: bounds that let sums add 64-bit decimals where they cannot overflow.
//! - `model`: what the plan keeps (`PushedQuery`), and the one place its SQL is printed.
//! - `top`: the outermost select list: DuckDB outputs and what Postgres computes over them.
//! - `postgres_rows`: small Postgres tables read into a pushed query as their rows.
//! - `refusal_reason`: why a query stays in Postgres, in words for EXPLAIN.
//! - `split`: a query mixing lake and Postgres tables runs its lake-only inner join in
//!   DuckDB as one sub-select.
//! - `exec`: the custom scan's executor, streaming DuckDB's result into tuple slots.

pub mod exec;
pub mod expr;
pub mod hook;
pub mod magnitude;
pub mod model;
pub mod numeric;
pub mod postgres_rows;
pub mod refusal_reason;
pub mod split;
pub mod top;
pub mod translate;
pub mod typed;

pub use hook::install;
