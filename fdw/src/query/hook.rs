//! The planner hook. Postgres plans every query as usual (that gives permission
//! checks, plan invalidation on DDL and the parameters' types); when the query can
//! run whole in DuckDB, the plan tree is then replaced by one custom scan.
//!
//! Taken over: SELECTs translated completely (see `translate`, and `top` for what the
//! outermost select list may leave to Postgres), except a plain scan of one lake table
//! without aggregates, sub-selects or DISTINCT, which the single-table scan already
//! runs in DuckDB (with its filters, order and limit). When the whole query is not
//! translated, its lake-only join may still be, and so may the SELECT of an
//! `INSERT ... SELECT` (see `split`).

use std::ffi::CString;

use pgrx::pg_sys::{self, Node, NodeTag};
use pgrx::prelude::*;

use crate::gucs;
use crate::pg_nodes::list_nodes;
use crate::query::exec;
use crate::query::refusal_reason;
use crate::query::split;
use crate::refusal::RefusalScope;
use crate::query::top::{Top, translate_top};

static mut PREVIOUS_PLANNER: pg_sys::planner_hook_type = None;

pub fn install() {
    // SAFETY: _PG_init runs once per backend, before any planning.
    unsafe {
        PREVIOUS_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan_query);
    }
    exec::register();
    split::install();
}

#[pg_guard]
unsafe extern "C-unwind" fn plan_query(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    unsafe {
        let enabled = gucs::query_pushdown() && cursor_options & pg_sys::CURSOR_OPT_SCROLL as i32 == 0;
        let worth = worth_pushing(parse);
        // The planner rewrites the tree it is given; translate a copy of its own.
        let copy = if enabled && worth { pg_sys::copyObjectImpl(parse.cast()) as *mut pg_sys::Query } else { parse };
        let pushed = if enabled && worth { translate_top(copy) } else { None };
        // Why it stays in Postgres, for EXPLAIN of the foreign scans planned below
        // (None when it reads no lake table).
        let reason = match (worth && pushed.is_none(), enabled) {
            (false, _) => None,
            (true, true) => refusal_reason::why_not_whole(copy),
            (true, false) if !gucs::query_pushdown() => Some("ducklake.query_pushdown is off".to_owned()),
            (true, false) => Some("a scrollable cursor (DuckDB's results are read once)".to_owned()),
        };
        let _reason = RefusalScope::new(reason);
        // Else the lake-only part of the query may still run in DuckDB (see `split`).
        let _scope = split::PendingScope::new();
        let rewritten = match pushed {
            None if enabled => split::split(parse).or_else(|| split::insert_source(parse)),
            _ => None,
        };
        // A hook's function pointer is not guarded by pgrx: an ERROR in it must unwind
        // through this frame (dropping `_scope`), not jump over it.
        let plan = |parse: *mut pg_sys::Query| match PREVIOUS_PLANNER {
            Some(previous) => pg_sys::ffi::pg_guard_ffi_boundary(|| previous(parse, query_string, cursor_options, bound_params)),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        };
        let stmt = match rewritten {
            Some(rewritten) => {
                let stmt = plan(rewritten);
                // A rewritten sub-select the planner did not give to DuckDB: the query
                // as written.
                if _scope.all_used() { stmt } else { plan(parse) }
            }
            None => plan(parse),
        };
        if let Some(top) = pushed {
            let estimate = (*stmt).planTree;
            (*stmt).planTree = top.plan(estimate);
            (*stmt).subplans = std::ptr::null_mut();
            (*stmt).rewindPlanIDs = std::ptr::null_mut();
            (*stmt).parallelModeNeeded = false;
        }
        stmt
    }
}

/// Whether the query does more than the single-table scan already runs in DuckDB.
unsafe fn worth_pushing(q: *mut pg_sys::Query) -> bool {
    unsafe {
        if (*q).commandType != pg_sys::CmdType::CMD_SELECT || !(*q).utilityStmt.is_null() {
            return false;
        }
        let relations = list_nodes((*q).rtable)
            .into_iter()
            .filter(|rte| (*(*rte as *mut pg_sys::RangeTblEntry)).rtekind != pg_sys::RTEKind::RTE_RESULT)
            .count();
        relations > 1
            || (*q).hasAggs
            || (*q).hasWindowFuncs
            || !(*q).setOperations.is_null()
            || list_nodes((*q).rtable).into_iter().any(|rte| {
                let rte = rte as *mut pg_sys::RangeTblEntry;
                (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY && worth_pushing((*rte).subquery)
            })
            || (*q).hasSubLinks
            || !(*q).cteList.is_null()
            || !(*q).groupClause.is_null()
            || !(*q).distinctClause.is_null()
    }
}

impl Top {
    /// The custom scan node, with `estimate` (Postgres' own plan) for its costs.
    unsafe fn plan(self, estimate: *mut pg_sys::Plan) -> *mut pg_sys::Plan {
        unsafe {
            let scan = pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomScan>()) as *mut pg_sys::CustomScan;
            (*scan).scan.plan.type_ = NodeTag::T_CustomScan;
            if !estimate.is_null() {
                (*scan).scan.plan.startup_cost = (*estimate).startup_cost;
                (*scan).scan.plan.total_cost = (*estimate).total_cost;
                (*scan).scan.plan.plan_rows = (*estimate).plan_rows;
                (*scan).scan.plan.plan_width = (*estimate).plan_width;
            }
            let mut tlist: *mut pg_sys::List = std::ptr::null_mut();
            for (i, target) in self.targets.iter().enumerate() {
                let name = if target.name.is_null() { std::ptr::null_mut() } else { pg_sys::pstrdup(target.name) };
                let tle = pg_sys::makeTargetEntry(target.expr.cast(), (i + 1) as i16, name, target.junk);
                (*tle).ressortgroupref = target.sortgroupref;
                tlist = pg_sys::lappend(tlist, tle.cast());
            }
            (*scan).scan.plan.targetlist = tlist;
            let mut scan_tlist: *mut pg_sys::List = std::ptr::null_mut();
            for (i, output) in self.query.outputs.iter().enumerate() {
                // The outputs' Postgres expressions may name joins, sub-selects and
                // outer levels that the final plan's range table cannot print; EXPLAIN
                // VERBOSE shows the DuckDB query instead, and typed NULLs here.
                let expr: *mut Node =
                    pg_sys::makeNullConst(pg_sys::Oid::from(output.type_oid), output.typmod, pg_sys::InvalidOid).cast();
                let name = CString::new(output.name.as_str()).expect("no NUL");
                let tle = pg_sys::makeTargetEntry(expr.cast(), (i + 1) as i16, pg_sys::pstrdup(name.as_ptr()), false);
                scan_tlist = pg_sys::lappend(scan_tlist, tle.cast());
            }
            (*scan).custom_scan_tlist = scan_tlist;
            let mut params: *mut pg_sys::List = std::ptr::null_mut();
            for p in &self.params {
                params = pg_sys::lappend(params, pg_sys::copyObjectImpl((*p).cast()));
            }
            (*scan).custom_exprs = params;
            (*scan).custom_private = self.query.to_list();
            (*scan).methods = exec::scan_methods();
            match self.postgres_sort {
                Some(q) => sort_and_limit(q, scan.cast(), estimate),
                None => scan.cast(),
            }
        }
    }
}

/// Postgres' Sort (and Limit) over the scan, for an ORDER BY DuckDB cannot apply
/// exactly. Plans built here skip the planner's final pass, so the upper nodes'
/// target lists are written as it would: each column a Var of the node below.
unsafe fn sort_and_limit(q: *mut pg_sys::Query, scan: *mut pg_sys::Plan, estimate: *mut pg_sys::Plan) -> *mut pg_sys::Plan {
    unsafe {
        let sort = pg_sys::make_sort_from_sortclauses((*q).sortClause, scan) as *mut pg_sys::Plan;
        (*sort).targetlist = outer_references((*scan).targetlist);
        let mut top = sort;
        if !(*q).limitCount.is_null() || !(*q).limitOffset.is_null() {
            top = pg_sys::make_limit(
                sort,
                (*q).limitOffset,
                (*q).limitCount,
                (*q).limitOption,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ) as *mut pg_sys::Plan;
            (*top).targetlist = outer_references((*sort).targetlist);
        }
        for node in [sort, top] {
            (*node).startup_cost = (*scan).total_cost;
            (*node).total_cost = (*scan).total_cost;
            (*node).plan_rows = if estimate.is_null() { (*scan).plan_rows } else { (*estimate).plan_rows };
            (*node).plan_width = (*scan).plan_width;
        }
        top
    }
}

unsafe fn outer_references(tlist: *mut pg_sys::List) -> *mut pg_sys::List {
    unsafe {
        let mut result: *mut pg_sys::List = std::ptr::null_mut();
        for tle in list_nodes(tlist) {
            let tle = tle as *mut pg_sys::TargetEntry;
            let expr = (*tle).expr as *mut Node;
            let var = pg_sys::makeVar(
                pg_sys::OUTER_VAR as i32,
                (*tle).resno,
                pg_sys::exprType(expr),
                pg_sys::exprTypmod(expr),
                pg_sys::exprCollation(expr),
                0,
            );
            let copy = pg_sys::flatCopyTargetEntry(tle);
            (*copy).expr = var.cast();
            result = pg_sys::lappend(result, copy.cast());
        }
        result
    }
}
