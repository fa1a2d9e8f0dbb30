//! Executor callbacks of the scan.

use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgRelation, pg_sys};

use crate::catalog::cache::lake_for;
use crate::error::OrRaise;
use crate::options::{TableOptions, lake_column_name};
use crate::scan::cursor::{Cursor, OutputColumn};
use crate::scan::plan::ScanPlan;
use crate::types::decode::Decoder;

/// Lives in the executor's per-query memory context and is dropped with it, also
/// when the query fails: no DuckDB result outlives its query.
struct ScanState {
    sql: String,
    cursor: Option<Cursor>,
}

unsafe fn state<'a>(node: *mut pg_sys::ForeignScanState) -> Option<&'a mut ScanState> {
    unsafe { ((*node).fdw_state as *mut ScanState).as_mut() }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(node: *mut pg_sys::ForeignScanState, eflags: std::ffi::c_int) {
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let ScanPlan { sql, attnos } = ScanPlan::from_list((*plan).fdw_private);
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        let cursor = if explain_only {
            None
        } else {
            let relation = PgRelation::from_pg((*node).ss.ss_currentRelation);
            let relid = relation.oid();
            let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
            let tupdesc = relation.tuple_desc();
            let columns = attnos
                .iter()
                .map(|attno| {
                    let attr = tupdesc.get((*attno - 1) as usize).expect("scanned attribute");
                    let name = lake_column_name(relid, *attno, attr.name());
                    OutputColumn {
                        slot_index: (*attno - 1) as usize,
                        decoder: Decoder::new(&name, attr.type_oid().value(), attr.type_mod()),
                    }
                })
                .collect();
            let lake = lake_for(server_oid).or_raise();
            let mut cursor = Cursor::new(lake, sql.clone(), TableOptions::of(relid).display(), columns);
            cursor.start().or_raise();
            Some(cursor)
        };
        let state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(ScanState { sql, cursor });
        (*node).fdw_state = state.cast();
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        if let Some(cursor) = state(node).and_then(|s| s.cursor.as_mut()) {
            cursor.next_into(slot).or_raise();
        }
        slot
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        if let Some(cursor) = state(node).and_then(|s| s.cursor.as_mut()) {
            cursor.start().or_raise();
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        if let Some(cursor) = state(node).and_then(|s| s.cursor.as_mut()) {
            cursor.close();
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn explain_foreign_scan(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    unsafe {
        if let Some(state) = state(node) {
            if (*es).verbose {
                let sql = std::ffi::CString::new(state.sql.as_str()).expect("SQL without NUL");
                pg_sys::ExplainPropertyText(c"DuckDB SQL".as_ptr(), sql.as_ptr(), es);
            }
        }
    }
}
