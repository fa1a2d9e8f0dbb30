//! The scan path of the foreign data wrapper, installed over supabase-wrappers' own
//! (whose plan keeps a pointer to state freed at the end of each execution, and
//! whose per-row `Cell` conversion covers too few types).
//!
//! - `deparse`: Postgres conditions to DuckDB SQL, where the meaning is the same;
//!   `collation`: which collations DuckDB compares text under exactly.
//! - `model`: what the planner knows of a foreign table and what it freezes into
//!   the plan (kept as text, so cached plans can be executed any number of times).
//! - `plan`: planner callbacks, which decide what DuckDB does.
//! - `ordering`: ORDER BY / LIMIT pushdown; `aggregate`: GROUP BY pushdown.
//! - `snapshot`: time travel and change-feed ranges, resolved at execution.
//! - `exec`: executor callbacks; `cursor`: a streaming DuckDB query whose Arrow
//!   batches fill tuple slots.

pub mod aggregate;
pub mod collation;
pub mod cursor;
pub mod deparse;
pub mod exec;
pub mod model;
pub mod ordering;
pub mod plan;
pub mod snapshot;

use supabase_wrappers::FdwRoutine;

/// Replace the scan callbacks of `routine` with ours.
pub fn install(routine: &mut FdwRoutine<pgrx::AllocatedByRust>) {
    routine.GetForeignRelSize = Some(plan::get_foreign_rel_size);
    routine.GetForeignPaths = Some(plan::get_foreign_paths);
    routine.GetForeignPlan = Some(plan::get_foreign_plan);
    routine.ExplainForeignScan = Some(exec::explain_foreign_scan);
    routine.BeginForeignScan = Some(exec::begin_foreign_scan);
    routine.IterateForeignScan = Some(exec::iterate_foreign_scan);
    routine.ReScanForeignScan = Some(exec::rescan_foreign_scan);
    routine.EndForeignScan = Some(exec::end_foreign_scan);
    routine.GetForeignUpperPaths = Some(aggregate::get_foreign_upper_paths);

}
