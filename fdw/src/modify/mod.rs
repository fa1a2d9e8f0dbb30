//! Writes through foreign tables.
//!
//! INSERT (`insert`): rows are converted as they arrive and appended in bulk to a
//! DuckDB temp staging table that has the lake table's own column types; when the
//! statement ends, one `INSERT INTO <lake table> SELECT ... FROM <staging>` writes
//! them. UPDATE and DELETE (`change`): rows are identified by DuckLake's rowid,
//! carried in the ctid (`rowid`), staged likewise, and applied by one statement.
//! All of it happens inside the lake's DuckDB transaction, so it becomes a DuckLake
//! snapshot when the Postgres transaction commits, and nothing when it aborts.

pub mod change;
pub mod direct;
pub mod insert;
pub mod rowid;
pub mod staging;

use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, pg_sys};
use supabase_wrappers::FdwRoutine;

use crate::error::{LakeError, OrRaise, raise};

pub fn install(routine: &mut FdwRoutine<pgrx::AllocatedByRust>) {
    routine.AddForeignUpdateTargets = Some(change::add_foreign_update_targets);
    routine.PlanForeignModify = Some(change::plan_foreign_modify);
    routine.BeginForeignModify = Some(begin_foreign_modify);
    routine.ExecForeignInsert = Some(exec_foreign_insert);
    routine.ExecForeignUpdate = Some(exec_foreign_change);
    routine.ExecForeignDelete = Some(exec_foreign_change);
    routine.EndForeignModify = Some(end_foreign_modify);
    routine.BeginForeignInsert = Some(begin_foreign_insert);
    routine.EndForeignInsert = Some(end_foreign_modify);
    routine.PlanDirectModify = Some(direct::plan_direct_modify);
    routine.BeginDirectModify = Some(direct::begin_direct_modify);
    routine.IterateDirectModify = Some(direct::iterate_direct_modify);
    routine.EndDirectModify = Some(direct::end_direct_modify);
    routine.ExplainDirectModify = Some(direct::explain_direct_modify);
}

/// What `ri_FdwState` points to; lives in the executor's per-query memory context.
enum ModifyState {
    Insert(insert::InsertState),
    Change(change::ChangeState),
}

unsafe fn state<'a>(rinfo: *mut pg_sys::ResultRelInfo) -> Option<&'a mut ModifyState> {
    unsafe { ((*rinfo).ri_FdwState as *mut ModifyState).as_mut() }
}

unsafe fn keep(rinfo: *mut pg_sys::ResultRelInfo, state: ModifyState) {
    unsafe {
        (*rinfo).ri_FdwState = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state).cast();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin_foreign_modify(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
    fdw_private: *mut pg_sys::List,
    _subplan_index: std::ffi::c_int,
    eflags: std::ffi::c_int,
) {
    unsafe {
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0 {
            return;
        }
        let state = match (*mtstate).operation {
            pg_sys::CmdType::CMD_INSERT => ModifyState::Insert(insert::InsertState::new((*rinfo).ri_RelationDesc).or_raise()),
            pg_sys::CmdType::CMD_UPDATE | pg_sys::CmdType::CMD_DELETE => {
                ModifyState::Change(change::ChangeState::new(mtstate, rinfo, fdw_private).or_raise())
            }
            _ => raise(LakeError::NotSupported("MERGE is not supported on DuckLake tables".into())),
        };
        keep(rinfo, state);
    }
}

/// COPY FROM and tuple routing into a foreign table.
#[pg_guard]
unsafe extern "C-unwind" fn begin_foreign_insert(_mtstate: *mut pg_sys::ModifyTableState, rinfo: *mut pg_sys::ResultRelInfo) {
    unsafe { keep(rinfo, ModifyState::Insert(insert::InsertState::new((*rinfo).ri_RelationDesc).or_raise())) }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_insert(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        if let Some(ModifyState::Insert(state)) = state(rinfo) {
            state.add(slot).or_raise();
        }
        slot
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn exec_foreign_change(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        if let Some(ModifyState::Change(state)) = state(rinfo) {
            state.add(slot, plan_slot).or_raise();
        }
        slot
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn end_foreign_modify(_estate: *mut pg_sys::EState, rinfo: *mut pg_sys::ResultRelInfo) {
    unsafe {
        match state(rinfo) {
            Some(ModifyState::Insert(state)) => state.finish().or_raise(),
            Some(ModifyState::Change(state)) => state.finish().or_raise(),
            None => {}
        }
    }
}
