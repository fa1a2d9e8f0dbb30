//! The range-table entries of a query level's joins, after a rewrite changed what the
//! joins read (`plain_joins`, `nullable_subselects`).
//!
//! A join's entry records its columns: for each, the input column it comes from (or
//! the expression merging two, for USING) and its name. Queries derived from the
//! definition are printed by ruleutils, which names a join's columns from that record
//! and its inputs' columns, and reads past its arrays when they disagree. So a rewrite
//! first replaces every reference to a join's column by what the column is
//! (`flatten_join_vars`), changes the joins, then makes each entry what the parser
//! makes of the join as it now reads (`rebuild_join_entries`): the left input's columns
//! followed by the right's, none merged.

use super::tree::rt_fetch;
use pgrx::{PgList, pg_sys};

/// Replace every reference to a join's column at `query`'s level (from its own
/// expressions or its subquery expressions) by what the column is.
pub unsafe fn flatten_join_vars(query: *mut pg_sys::Query) {
    unsafe {
        let q = &mut *query;
        q.targetList = flatten(query, q.targetList as *mut pg_sys::Node) as *mut pg_sys::List;
        q.jointree = flatten(query, q.jointree as *mut pg_sys::Node) as *mut pg_sys::FromExpr;
        q.havingQual = flatten(query, q.havingQual);
        #[cfg(feature = "pg18")]
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_GROUP {
                (*rte).groupexprs = flatten(query, (*rte).groupexprs as *mut pg_sys::Node) as *mut pg_sys::List;
            }
        }
    }
}

unsafe fn flatten(query: *mut pg_sys::Query, node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        if node.is_null() {
            return node;
        }
        #[cfg(feature = "pg15")]
        return pg_sys::flatten_join_alias_vars(query, node);
        // Without a planner, as Postgres' own parser calls it; the nulling marks it
        // cannot place do not matter to the SQL printed from the tree.
        #[cfg(not(feature = "pg15"))]
        return pg_sys::flatten_join_alias_vars(std::ptr::null_mut(), query, node);
    }
}

/// Make the entry of every join of `query`'s FROM tree list its inputs' columns, as
/// the parser does for a join written with ON. Nothing may refer to a join's columns
/// (see `flatten_join_vars`).
pub unsafe fn rebuild_join_entries(query: *mut pg_sys::Query) {
    unsafe {
        for item in PgList::<pg_sys::Node>::from_pg((*(*query).jointree).fromlist).iter_ptr() {
            rebuild(query, item);
        }
        forget_join_referents(query);
    }
}

/// Make every Var of `query` (at any depth) name its column as itself. A Var that
/// stood for a join's column keeps that column as its syntactic referent when it is
/// replaced (`varnosyn`, `varattnosyn`), and ruleutils prints a Var by its referent:
/// by the join's old column numbers, another column once the entry is rebuilt.
unsafe fn forget_join_referents(query: *mut pg_sys::Query) {
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        unsafe {
            if node.is_null() {
                return false;
            }
            match (*node).type_ {
                pg_sys::NodeTag::T_Query => pg_sys::query_tree_walker(node as *mut pg_sys::Query, Some(walker), context, 0),
                pg_sys::NodeTag::T_Var => {
                    let var = node as *mut pg_sys::Var;
                    (*var).varnosyn = (*var).varno as pg_sys::Index;
                    (*var).varattnosyn = (*var).varattno;
                    false
                }
                _ => pg_sys::expression_tree_walker(node, Some(walker), context),
            }
        }
    }
    unsafe {
        pg_sys::query_tree_walker(query, Some(walker), std::ptr::null_mut(), 0);
    }
}

/// Rebuild the joins of FROM item `node`, inputs first; returns its range-table index.
unsafe fn rebuild(query: *mut pg_sys::Query, node: *mut pg_sys::Node) -> i32 {
    unsafe {
        if pgrx::is_a(node, pg_sys::NodeTag::T_RangeTblRef) {
            return (*(node as *mut pg_sys::RangeTblRef)).rtindex;
        }
        let join = node as *mut pg_sys::JoinExpr;
        let left = rebuild(query, (*join).larg);
        let right = rebuild(query, (*join).rarg);
        let (left_names, left_vars) = columns(query, left);
        let (right_names, right_vars) = columns(query, right);
        let rte = rt_fetch(query, (*join).rtindex);
        let attnos = |vars: *mut pg_sys::List| {
            let mut list: *mut pg_sys::List = std::ptr::null_mut();
            for var in PgList::<pg_sys::Var>::from_pg(vars).iter_ptr() {
                list = pg_sys::lappend_int(list, (*var).varattno as i32);
            }
            list
        };
        (*rte).joinmergedcols = 0;
        (*rte).joinleftcols = attnos(left_vars);
        (*rte).joinrightcols = attnos(right_vars);
        (*rte).joinaliasvars = pg_sys::list_concat(left_vars, right_vars);
        (*(*rte).eref).colnames = pg_sys::list_concat(left_names, right_names);
        (*join).rtindex
    }
}

/// The names and Vars of the columns of range-table entry `index`.
pub unsafe fn columns(query: *mut pg_sys::Query, index: i32) -> (*mut pg_sys::List, *mut pg_sys::List) {
    unsafe {
        let rte = rt_fetch(query, index);
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        let mut vars: *mut pg_sys::List = std::ptr::null_mut();
        #[cfg(feature = "pg18")]
        pg_sys::expandRTE(rte, index, 0, pg_sys::VarReturningType::VAR_RETURNING_DEFAULT, -1, false, &mut names, &mut vars);
        #[cfg(not(feature = "pg18"))]
        pg_sys::expandRTE(rte, index, 0, -1, false, &mut names, &mut vars);
        (names, vars)
    }
}
