//! A DELETE whose whole condition DuckDB evaluates runs as one DuckDB statement
//! (`DELETE FROM t WHERE ...`) instead of sending every row's rowid through Postgres.
//!
//! Taken only when the scan below the ModifyTable node is our plain table scan with
//! no condition left to Postgres, no parameters and no RETURNING.

use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, pg_sys};

use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::error::OrRaise;
use crate::options::TableOptions;
use crate::scan::plan::{ScanPlan, Source};

#[pg_guard]
pub unsafe extern "C-unwind" fn plan_direct_modify(
    _root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: std::ffi::c_int,
) -> bool {
    unsafe {
        if (*plan).operation != pg_sys::CmdType::CMD_DELETE || !(*plan).returningLists.is_null() {
            return false;
        }
        let subplan = (*plan).plan.lefttree;
        if subplan.is_null() || (*subplan).type_ != pg_sys::NodeTag::T_ForeignScan {
            return false;
        }
        let fscan = subplan as *mut pg_sys::ForeignScan;
        if (*fscan).scan.scanrelid != result_relation
            || !(*fscan).scan.plan.qual.is_null()
            || !(*fscan).fdw_exprs.is_null()
        {
            return false;
        }
        let scan = ScanPlan::from_list((*fscan).fdw_private);
        let table = TableOptions::of(pg_sys::Oid::from(scan.relid));
        if scan.source != Source::Table || table.snapshot_id.is_some() || table.as_of.is_some() || scan.limit.is_some() {
            return false;
        }
        (*fscan).operation = pg_sys::CmdType::CMD_DELETE;
        (*fscan).resultRelation = result_relation;
        true
    }
}

struct DirectState {
    sql: String,
    deleted: u64,
    reported: bool,
}

unsafe fn delete_sql(node: *mut pg_sys::ForeignScanState) -> String {
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let scan = ScanPlan::from_list((*plan).fdw_private);
        let (alias, table) = crate::scan::plan::table_reference(pg_sys::Oid::from(scan.relid));
        let mut sql = format!("DELETE FROM {}", sql::qualified(&alias, &table.schema, &table.table));
        if !scan.filter.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&scan.filter.join(" AND "));
        }
        sql
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn begin_direct_modify(node: *mut pg_sys::ForeignScanState, eflags: std::ffi::c_int) {
    unsafe {
        let sql = delete_sql(node);
        let mut state = DirectState { sql, deleted: 0, reported: false };
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0 {
            let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
            let lake = lake_for((*plan).fs_server).or_raise();
            lake.note_write();
            let conn = lake.connection().or_raise();
            let deleted = crate::duck::cancel::interruptible(&lake.instance.interrupt, || conn.execute(&state.sql, []))
                .map_err(crate::error::LakeError::from)
                .or_raise();
            state.deleted = deleted as u64;
        }
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state).cast();
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_direct_modify(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let state = &mut *((*node).fdw_state as *mut DirectState);
        if !state.reported {
            state.reported = true;
            (*(*node).ss.ps.state).es_processed += state.deleted;
        }
        let slot = (*node).ss.ss_ScanTupleSlot;
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        slot
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn end_direct_modify(_node: *mut pg_sys::ForeignScanState) {}

#[pg_guard]
pub unsafe extern "C-unwind" fn explain_direct_modify(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    unsafe {
        if (*es).verbose {
            let sql = std::ffi::CString::new(delete_sql(node)).expect("SQL without NUL");
            pg_sys::ExplainPropertyText(c"DuckDB SQL".as_ptr(), sql.as_ptr(), es);
        }
    }
}
