//! Postgres' own rewriting of analyzed trees (rewriteManip.c): renumbering range-table
//! entries and replacing references to one, at every query level below. pgrx does not
//! bind them; each runs behind pgrx's FFI guard, so a Postgres error becomes a panic
//! at the guarded boundary instead of a longjmp over Rust frames.

use pgrx::pg_sys;
use std::ffi::c_int;

/// `query` with each Var of entry `index` replaced by its output in `targets`.
pub unsafe fn replace_vars(query: *mut pg_sys::Query, index: i32, rte: *mut pg_sys::RangeTblEntry, targets: *mut pg_sys::List) -> *mut pg_sys::Query {
    let mut sublinks = false;
    // SAFETY: Postgres' function over a valid tree; its errors (none expected: every
    // Var has an output) become Rust panics at the guarded boundary.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            #[cfg(not(feature = "pg18"))]
            let replaced = rewrite::ReplaceVarsFromTargetList(query.cast(), index, 0, rte, targets, REPLACEVARS_REPORT_ERROR, 0, &mut sublinks);
            #[cfg(feature = "pg18")]
            let replaced = rewrite::ReplaceVarsFromTargetList(query.cast(), index, 0, rte, targets, 0, REPLACEVARS_REPORT_ERROR, 0, &mut sublinks);
            replaced as *mut pg_sys::Query
        })
    }
}

/// Renumber the Vars of entry `old` of the level of `node` to entry `new`.
pub unsafe fn change_var_nodes(node: *mut pg_sys::Node, old: i32, new: i32) {
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| rewrite::ChangeVarNodes(node, old, new, 0)) }
}

/// Move the Vars of `node` reaching `min` levels up or further by `delta` levels.
pub unsafe fn increment_var_sublevels_up(node: *mut pg_sys::Node, delta: i32, min: i32) {
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| rewrite::IncrementVarSublevelsUp(node, delta, min)) }
}

/// Whether `node` contains a subquery expression (at its own level).
pub unsafe fn has_sublink(node: *mut pg_sys::Node) -> bool {
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| rewrite::checkExprHasSubLink(node)) }
}

/// Remove the entries `gone` (which nothing refers to any more) from `query`'s range
/// table, renumbering the others over the gaps.
pub unsafe fn drop_entries(query: *mut pg_sys::Query, gone: &[i32]) {
    unsafe {
        let old = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable);
        let mut kept = pgrx::PgList::<pg_sys::RangeTblEntry>::new();
        let mut moves = Vec::new();
        for (position, rte) in old.iter_ptr().enumerate() {
            let index = position as i32 + 1;
            if !gone.contains(&index) {
                kept.push(rte);
                moves.push((index, kept.len() as i32));
            }
        }
        (*query).rtable = kept.into_pg();
        // Ascending, each to a lower or equal number: no renumbered index is one
        // still to be renumbered.
        for (index, new) in moves {
            if new != index {
                change_var_nodes(query as *mut pg_sys::Node, index, new);
            }
        }
    }
}

/// `ReplaceVarsNoMatchOption`: raise an error for a Var without an output.
const REPLACEVARS_REPORT_ERROR: c_int = 0;

/// Postgres' rewriteManip.h, which pgrx does not bind.
mod rewrite {
    use pgrx::pg_sys::{List, Node, RangeTblEntry};
    use std::ffi::c_int;

    unsafe extern "C-unwind" {
        pub fn ChangeVarNodes(node: *mut Node, rt_index: c_int, new_index: c_int, sublevels_up: c_int);
        pub fn checkExprHasSubLink(node: *mut Node) -> bool;
        pub fn IncrementVarSublevelsUp(node: *mut Node, delta_sublevels_up: c_int, min_sublevels_up: c_int);
        pub fn ReplaceVarsFromTargetList(
            node: *mut Node,
            target_varno: c_int,
            sublevels_up: c_int,
            target_rte: *mut RangeTblEntry,
            targetlist: *mut List,
            // PostgreSQL 18 added it (for RETURNING OLD/NEW; 0 here).
            #[cfg(feature = "pg18")] result_relation: c_int,
            nomatch_option: c_int,
            nomatch_varno: c_int,
            outer_has_sublinks: *mut bool,
        ) -> *mut Node;
    }
}
