//! The scan path of the foreign data wrapper, installed over supabase-wrappers' own
//! (whose plan keeps a pointer to state freed at the end of each execution, and
//! whose per-row `Cell` conversion covers too few types).
//!
//! - `plan`: planner callbacks; the DuckDB SQL is fixed at plan time and kept in the
//!   plan as plain nodes, so cached plans can be executed any number of times.
//! - `exec`: executor callbacks.
//! - `cursor`: a streaming DuckDB query whose Arrow batches fill tuple slots.

pub mod cursor;
pub mod exec;
pub mod plan;

use supabase_wrappers::FdwRoutine;

/// Replace the scan callbacks of `routine` with ours. Write and aggregate-pushdown
/// callbacks are removed until they are implemented, so Postgres refuses those
/// statements instead of silently doing nothing.
pub fn install(routine: &mut FdwRoutine<pgrx::AllocatedByRust>) {
    routine.GetForeignRelSize = Some(plan::get_foreign_rel_size);
    routine.GetForeignPaths = Some(plan::get_foreign_paths);
    routine.GetForeignPlan = Some(plan::get_foreign_plan);
    routine.ExplainForeignScan = Some(exec::explain_foreign_scan);
    routine.BeginForeignScan = Some(exec::begin_foreign_scan);
    routine.IterateForeignScan = Some(exec::iterate_foreign_scan);
    routine.ReScanForeignScan = Some(exec::rescan_foreign_scan);
    routine.EndForeignScan = Some(exec::end_foreign_scan);
    routine.GetForeignUpperPaths = None;

    routine.AddForeignUpdateTargets = None;
    routine.PlanForeignModify = None;
    routine.BeginForeignModify = None;
    routine.ExecForeignInsert = None;
    routine.ExecForeignUpdate = None;
    routine.ExecForeignDelete = None;
    routine.EndForeignModify = None;
}
