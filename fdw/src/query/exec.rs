//! The custom scan running a pushed query: one DuckDB query whose Arrow batches fill
//! the scan tuple, projected by Postgres into the plan's target list.

use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, pg_sys};

use crate::catalog::cache::{Bindings, lake_for};
use crate::error::{LakeError, LakeResult, OrRaise};
use crate::options::TableOptions;
use crate::pg_nodes::list_nodes;
use crate::query::model::PushedQuery;
use crate::scan::cursor::{Cursor, OutputColumn};
use crate::scan::exec::duck_value;
use crate::scan::model::OutputSource;
use crate::types::decode::Decoder;

#[repr(C)]
struct PushedScanState {
    css: pg_sys::CustomScanState,
    run: *mut RunState,
}

/// Lives in the executor's per-query memory context and is dropped with it.
struct RunState {
    query: PushedQuery,
    sql: String,
    params: Vec<(*mut pg_sys::ExprState, pg_sys::Oid)>,
    cursor: Option<Cursor>,
    /// The query starts at the first row fetched, once parameters can be evaluated.
    pending_start: bool,
}

static mut SCAN_METHODS: pg_sys::CustomScanMethods =
    pg_sys::CustomScanMethods { CustomName: c"DuckLake Query".as_ptr(), CreateCustomScanState: Some(create_state) };

static mut EXEC_METHODS: pg_sys::CustomExecMethods = pg_sys::CustomExecMethods {
    CustomName: c"DuckLake Query".as_ptr(),
    BeginCustomScan: Some(begin),
    ExecCustomScan: Some(exec),
    EndCustomScan: Some(end),
    ReScanCustomScan: Some(rescan),
    MarkPosCustomScan: None,
    RestrPosCustomScan: None,
    EstimateDSMCustomScan: None,
    InitializeDSMCustomScan: None,
    ReInitializeDSMCustomScan: None,
    InitializeWorkerCustomScan: None,
    ShutdownCustomScan: None,
    ExplainCustomScan: Some(explain),
};

pub fn register() {
    // SAFETY: registered once per backend from _PG_init; the methods are static.
    unsafe { pg_sys::RegisterCustomScanMethods(&raw const SCAN_METHODS) }
}

pub fn scan_methods() -> *const pg_sys::CustomScanMethods {
    &raw const SCAN_METHODS
}

#[pg_guard]
unsafe extern "C-unwind" fn create_state(_scan: *mut pg_sys::CustomScan) -> *mut pg_sys::Node {
    unsafe {
        let state = pg_sys::palloc0(std::mem::size_of::<PushedScanState>()) as *mut PushedScanState;
        (*state).css.ss.ps.type_ = pg_sys::NodeTag::T_CustomScanState;
        (*state).css.methods = &raw const EXEC_METHODS;
        state.cast()
    }
}

unsafe fn run<'a>(node: *mut pg_sys::CustomScanState) -> Option<&'a mut RunState> {
    unsafe { (*(node as *mut PushedScanState)).run.as_mut() }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(node: *mut pg_sys::CustomScanState, _estate: *mut pg_sys::EState, eflags: i32) {
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::CustomScan;
        let query = PushedQuery::from_list((*plan).custom_private);
        let exprs = list_nodes((*plan).custom_exprs);
        let states = pg_sys::ExecInitExprList((*plan).custom_exprs, node.cast());
        let params = list_nodes(states)
            .into_iter()
            .zip(exprs)
            .map(|(state, expr)| (state as *mut pg_sys::ExprState, pg_sys::exprType(expr)))
            .collect();
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        // What EXPLAIN shows; the query run is made again when it starts.
        let sql = query.render(None).or_raise().shown;
        let cursor = if explain_only {
            None
        } else {
            let columns = query
                .outputs
                .iter()
                .enumerate()
                .map(|(i, output)| OutputColumn {
                    slot_index: i,
                    source: OutputSource::Column(i),
                    decoder: Decoder::new(&output.name, pg_sys::Oid::from(output.type_oid), output.typmod),
                })
                .collect();
            let lake = lake_for(pg_sys::Oid::from(query.server_oid)).or_raise();
            Some(Cursor::new(lake, "a pushed query".to_owned(), columns, None))
        };
        let pending_start = cursor.is_some();
        let run = RunState { query, sql, params, cursor, pending_start };
        (*(node as *mut PushedScanState)).run = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(run);
    }
}

unsafe fn restart(run: &mut RunState, node: *mut pg_sys::CustomScanState) -> LakeResult<()> {
    unsafe {
        let econtext = (*node).ss.ps.ps_ExprContext;
        let mut values = Vec::with_capacity(run.params.len());
        for (expr_state, type_oid) in &run.params {
            let mut isnull = false;
            let evaluate = (**expr_state).evalfunc.expect("an initialised expression");
            let datum = evaluate(*expr_state, econtext, &mut isnull);
            values.push(duck_value(datum, isnull, *type_oid));
        }
        let cursor = run.cursor.as_mut().expect("a cursor outside EXPLAIN");
        if values.len() != run.query.params {
            return Err(LakeError::DuckDb(format!(
                "a pushed query of {} parameters was given {}",
                run.query.params,
                values.len()
            )));
        }
        // The parameters as variables, not placeholders: DuckDB binds a prepared
        // statement that reads a lake again when it runs, and this way the query is
        // bound once (see `ducklake_formats::run_query`). EXPLAIN ANALYZE shows the
        // query with its placeholders.
        let rendered = run.query.render(Some(cursor.lake()))?;
        run.sql = rendered.shown;
        let server = cursor.lake().server_name.clone();
        cursor.start(&rendered.run, Bindings::Variables(values)).map_err(|e| missing_column(&run.query, &server, e))
    }
}

/// DuckDB's binder error for a column that a foreign table reads and its lake table
/// no longer has (`Table "t3" does not have a column named "x"`), as the error a scan
/// of that table gives: the lake table named, with a hint.
fn missing_column(query: &PushedQuery, server: &str, error: LakeError) -> LakeError {
    let LakeError::DuckDb(message) = &error else { return error };
    let Some((before, after)) = message.split_once("\" does not have a column named \"") else { return error };
    let alias = before.rsplit('"').next().unwrap_or_default();
    let column = after.split('"').next().unwrap_or_default();
    match query.tables.iter().find(|t| t.alias == alias) {
        Some(table) => LakeError::MissingLakeColumn {
            server: server.to_owned(),
            // SAFETY: a catalog lookup of a foreign table the plan reads.
            table: unsafe { TableOptions::of(pg_sys::Oid::from(table.relid)) }.display(),
            column: column.to_owned(),
        },
        None => error,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn next(node: *mut pg_sys::ScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let node = node as *mut pg_sys::CustomScanState;
        let slot = (*node).ss.ss_ScanTupleSlot;
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        if let Some(run) = run(node) {
            if run.pending_start {
                run.pending_start = false;
                restart(run, node).or_raise();
            }
            if let Some(cursor) = run.cursor.as_mut() {
                cursor.next_into(slot).or_raise();
            }
        }
        slot
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn recheck(_node: *mut pg_sys::ScanState, _slot: *mut pg_sys::TupleTableSlot) -> bool {
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn exec(node: *mut pg_sys::CustomScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe { pg_sys::ExecScan(&raw mut (*node).ss, Some(next), Some(recheck)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn end(node: *mut pg_sys::CustomScanState) {
    unsafe {
        if let Some(cursor) = run(node).and_then(|r| r.cursor.as_mut()) {
            cursor.close();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::CustomScanState) {
    unsafe {
        if let Some(run) = run(node) {
            run.pending_start = run.cursor.is_some();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn explain(node: *mut pg_sys::CustomScanState, _ancestors: *mut pg_sys::List, es: *mut pg_sys::ExplainState) {
    unsafe {
        if let Some(run) = run(node) {
            if (*es).verbose {
                let sql = std::ffi::CString::new(run.sql.as_str()).expect("SQL without NUL");
                pg_sys::ExplainPropertyText(c"DuckDB Query".as_ptr(), sql.as_ptr(), es);
                if let Some(reason) = &run.query.not_whole {
                    let reason = std::ffi::CString::new(reason.as_str()).unwrap_or_default();
                    pg_sys::ExplainPropertyText(c"Not Run Whole In DuckDB".as_ptr(), reason.as_ptr(), es);
                }
            }
        }
    }
}
