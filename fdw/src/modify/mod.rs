//! Writes through foreign tables.
//!
//! INSERT: rows are converted as they arrive and appended in bulk to a DuckDB temp
//! staging table that has the lake table's own column types; when the statement
//! ends, one `INSERT INTO <lake table> SELECT ... FROM <staging>` writes them. The
//! write happens inside the lake's DuckDB transaction, so it becomes a DuckLake
//! snapshot when the Postgres transaction commits, and nothing when it aborts.
//! UPDATE and DELETE are not implemented yet; Postgres refuses them.

pub mod insert;

use supabase_wrappers::FdwRoutine;

pub fn install(routine: &mut FdwRoutine<pgrx::AllocatedByRust>) {
    routine.AddForeignUpdateTargets = None;
    routine.PlanForeignModify = None;
    routine.BeginForeignModify = Some(insert::begin_foreign_modify);
    routine.ExecForeignInsert = Some(insert::exec_foreign_insert);
    routine.ExecForeignUpdate = None;
    routine.ExecForeignDelete = None;
    routine.EndForeignModify = Some(insert::end_foreign_modify);
    routine.BeginForeignInsert = Some(insert::begin_foreign_insert);
    routine.EndForeignInsert = Some(insert::end_foreign_insert);
}
