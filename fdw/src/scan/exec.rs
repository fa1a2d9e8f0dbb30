//! Executor callbacks of the scan.

use pgrx::prelude::*;
use pgrx::{FromDatum, PgMemoryContexts, pg_sys};

use crate::catalog::cache::{Bindings, lake_for};
use crate::error::{LakeResult, OrRaise};
use crate::options::TableOptions;
use crate::scan::cursor::{Cursor, OutputColumn};
use crate::pg_nodes::list_nodes;
use crate::scan::model::{OutputSource, ScanPlan};
use crate::scan::snapshot::from_clause;
use crate::types::decode::Decoder;

/// Lives in the executor's per-query memory context and is dropped with it, also
/// when the query fails: no DuckDB result outlives its query.
struct ScanState {
    plan: ScanPlan,
    /// The SQL of the latest (re)scan, for EXPLAIN.
    sql: String,
    params: Vec<(*mut pg_sys::ExprState, pg_sys::Oid)>,
    cursor: Option<Cursor>,
    /// The query starts at the first row fetched, not in BeginForeignScan: the values of
    /// InitPlan parameters (`WHERE EXISTS (...)`, `x = (SELECT ...)`) exist only once
    /// the executor has initialised the node's InitPlans, after BeginForeignScan.
    pending_start: bool,
}

unsafe fn state<'a>(node: *mut pg_sys::ForeignScanState) -> Option<&'a mut ScanState> {
    unsafe { ((*node).fdw_state as *mut ScanState).as_mut() }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(node: *mut pg_sys::ForeignScanState, eflags: std::ffi::c_int) {
    unsafe {
        let plan_node = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let plan = ScanPlan::from_list((*plan_node).fdw_private);
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        let exprs = list_nodes((*plan_node).fdw_exprs);
        let states = pg_sys::ExecInitExprList((*plan_node).fdw_exprs, node.cast());
        let params = list_nodes(states)
            .into_iter()
            .zip(exprs)
            .map(|(state, expr)| (state as *mut pg_sys::ExprState, pg_sys::exprType(expr)))
            .collect();
        let relid = pg_sys::Oid::from(plan.relid);
        let mut state = ScanState { plan, sql: String::new(), params, cursor: None, pending_start: false };
        if explain_only {
            state.sql = state.plan.sql(&from_clause(&state.plan, &[], None).or_raise());
        } else {
            let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
            let columns = state
                .plan
                .outputs
                .iter()
                .map(|output| {
                    let (type_oid, typmod) = match output.source {
                        OutputSource::Column(_) => (pg_sys::Oid::from(output.type_oid), output.typmod),
                        OutputSource::Average { .. } => (pg_sys::NUMERICOID, -1),
                    };
                    OutputColumn {
                        slot_index: output.slot_index,
                        source: output.source.clone(),
                        decoder: Decoder::new(&output.name, type_oid, typmod),
                    }
                })
                .collect();
            let lake = lake_for(server_oid).or_raise();
            state.cursor = Some(Cursor::new(lake, TableOptions::of(relid).display(), columns, state.plan.rowid_column));
            state.sql = state.plan.sql(&from_clause(&state.plan, &[], None).or_raise());
            state.pending_start = true;
        }
        let state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state);
        (*node).fdw_state = state.cast();
    }
}

/// Evaluate the parameters (a prepared statement's, or the outer row's in a nested
/// loop), then run the query from the start.
unsafe fn restart(state: &mut ScanState, node: *mut pg_sys::ForeignScanState) -> LakeResult<()> {
    unsafe {
        let econtext = (*node).ss.ps.ps_ExprContext;
        let mut sql_params = Vec::with_capacity(state.plan.sql_params);
        let mut range_params = Vec::new();
        for (i, (expr_state, type_oid)) in state.params.iter().enumerate() {
            let mut isnull = false;
            let evaluate = (**expr_state).evalfunc.expect("an initialised expression");
            let datum = evaluate(*expr_state, econtext, &mut isnull);
            if i < state.plan.sql_params {
                sql_params.push(duck_value(datum, isnull, *type_oid));
            } else {
                range_params.push(if isnull { None } else { integer_value(datum, *type_oid) });
            }
        }
        let cursor = state.cursor.as_mut().expect("a cursor outside EXPLAIN");
        state.sql = state.plan.sql(&from_clause(&state.plan, &range_params, Some(cursor.lake()))?);
        cursor.start(&state.sql, Bindings::Placeholders(sql_params))
    }
}

unsafe fn integer_value(datum: pg_sys::Datum, type_oid: pg_sys::Oid) -> Option<i64> {
    Some(match type_oid {
        pg_sys::INT8OID => datum.value() as i64,
        pg_sys::INT4OID => datum.value() as i32 as i64,
        pg_sys::INT2OID => datum.value() as i16 as i64,
        _ => return None,
    })
}

/// A parameter's value for DuckDB; the SQL casts it to the column's DuckDB type
/// (see `deparse::param_duck_type`).
pub unsafe fn duck_value(datum: pg_sys::Datum, isnull: bool, type_oid: pg_sys::Oid) -> duckdb::types::Value {
    use duckdb::types::{TimeUnit, Value};
    if isnull {
        return Value::Null;
    }
    unsafe {
        match type_oid {
            pg_sys::BOOLOID => Value::Boolean(datum.value() != 0),
            pg_sys::INT2OID => Value::SmallInt(datum.value() as i16),
            pg_sys::INT4OID => Value::Int(datum.value() as i32),
            pg_sys::INT8OID => Value::BigInt(datum.value() as i64),
            pg_sys::FLOAT8OID => Value::Double(f64::from_datum(datum, false).unwrap_or(f64::NAN)),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Value::Text(String::from_datum(datum, false).unwrap_or_default()),
            pg_sys::DATEOID => Value::Date32((datum.value() as i32).saturating_add(10_957)),
            pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                let micros = datum.value() as i64;
                let unix = match micros {
                    i64::MAX | i64::MIN => micros,
                    m => m.saturating_add(946_684_800_000_000),
                };
                Value::Timestamp(TimeUnit::Microsecond, unix)
            }
            pg_sys::UUIDOID => {
                let uuid = pgrx::Uuid::from_datum(datum, false).expect("a uuid datum");
                Value::Text(uuid.to_string())
            }
            _ => Value::Null,
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        if let Some(state) = state(node) {
            if state.pending_start {
                state.pending_start = false;
                restart(state, node).or_raise();
            }
            if let Some(cursor) = state.cursor.as_mut() {
                cursor.next_into(slot).or_raise();
            }
        }
        slot
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        if let Some(state) = state(node) {
            if state.cursor.is_some() {
                state.pending_start = true;
            }
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
                if let Some(reason) = &state.plan.not_whole {
                    let reason = std::ffi::CString::new(reason.as_str()).unwrap_or_default();
                    pg_sys::ExplainPropertyText(c"Not Run Whole In DuckDB".as_ptr(), reason.as_ptr(), es);
                }
            }
        }
    }
}
