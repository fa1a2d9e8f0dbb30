//! LEFT and RIGHT JOINs. `L ⟕ R ON θ` is the matched pairs plus each row of L without
//! a match, padded with NULLs. Both are linear in L: a changed row of L brings its own
//! pairs or padding, so L's change is the query with L replaced by its changes, like
//! any join's. For R, the pairs are linear too (the query with the join made inner and
//! R replaced by its changes), and the padding of a row r of L changes exactly when
//! whether r has a match changes:
//!
//!   Δpadding = { r padded : EXISTS (R' θ r) ≠ EXISTS (R θ r) }
//!
//! +1 where the match went away, −1 where one appeared, with R read as it was by time
//! travel. As with subquery expressions (see `sublinks`), only rows that a changed row
//! of R matches can change, which an EXISTS over R's change feed keeps the comparison
//! to. The padded rows themselves are the query with the join's condition made false,
//! so everything above the join (other joins, WHERE, the select list) sees them as the
//! query does. R must be one table: the nullable side of the join.
//!
//! A FULL JOIN pads both sides: a change of either side X gives the pairs and X's own
//! padded rows (linear in X: the join preserving X alone, X replaced by its changes)
//! and the padding changes of the other side's rows, as above. Both sides must be
//! one table.

use super::tree::{joins_of, rt_fetch};
use crate::error::IvmResult;
use pgrx::pg_sys;

/// The JoinExpr with range-table index `rtindex` in the FROM items of `query`.
pub unsafe fn join_expr(query: *mut pg_sys::Query, rtindex: i32) -> *mut pg_sys::JoinExpr {
    unsafe {
        joins_of((*query).jointree as *mut pg_sys::Node)
            .into_iter()
            .find(|join| (**join).rtindex == rtindex)
            .unwrap_or_else(|| panic!("join {rtindex} is in the query's FROM items"))
    }
}

/// Set the type of join `rtindex` of `query`.
unsafe fn set_join_type(query: *mut pg_sys::Query, rtindex: i32, jointype: pg_sys::JoinType::Type) {
    unsafe {
        (*join_expr(query, rtindex)).jointype = jointype;
        (*rt_fetch(query, rtindex)).jointype = jointype;
    }
}

/// Whether table `table` is the left side of join `rtindex`.
unsafe fn is_left(query: *mut pg_sys::Query, rtindex: i32, table: i32) -> bool {
    unsafe {
        let left = (*join_expr(query, rtindex)).larg;
        pgrx::is_a(left, pg_sys::NodeTag::T_RangeTblRef) && (*(left as *mut pg_sys::RangeTblRef)).rtindex == table
    }
}

/// Make outer join `rtindex` of `query` give what is linear in its side `table`: the
/// matched pairs (LEFT/RIGHT, `table` being the nullable side: an inner join), and for
/// a FULL JOIN also `table`'s own padded rows (a join preserving `table` alone).
pub unsafe fn keep_linear_part(query: *mut pg_sys::Query, rtindex: i32, table: i32) {
    unsafe {
        let jointype = match (*join_expr(query, rtindex)).jointype {
            pg_sys::JoinType::JOIN_FULL if is_left(query, rtindex, table) => pg_sys::JoinType::JOIN_LEFT,
            pg_sys::JoinType::JOIN_FULL => pg_sys::JoinType::JOIN_RIGHT,
            _ => pg_sys::JoinType::JOIN_INNER,
        };
        set_join_type(query, rtindex, jointype);
    }
}

/// Make outer join `rtindex` of `query` give the other side's rows, each padded as if
/// `table` had no match: the join preserving the other side alone, its condition
/// false. Returns the condition it had.
pub unsafe fn pad_other_side(query: *mut pg_sys::Query, rtindex: i32, table: i32) -> *mut pg_sys::Node {
    unsafe {
        if (*join_expr(query, rtindex)).jointype == pg_sys::JoinType::JOIN_FULL {
            let jointype = if is_left(query, rtindex, table) { pg_sys::JoinType::JOIN_RIGHT } else { pg_sys::JoinType::JOIN_LEFT };
            set_join_type(query, rtindex, jointype);
        }
        let join = join_expr(query, rtindex);
        let condition = (*join).quals;
        (*join).quals = pg_sys::makeBoolConst(false, false);
        condition
    }
}

/// `EXISTS (SELECT 1 FROM <table> WHERE θ AND extra)`: whether the row of `query`
/// has a match in the table at range-table index `nullable` (which the join condition
/// `condition` reads), placed in `query`'s WHERE, the table read as `read` makes a copy
/// of its entry read it (as it is, as it was, its changes). `extra` are conditions on
/// it as range-table entry 1 of the subquery.
pub unsafe fn has_match(
    query: *mut pg_sys::Query,
    condition: *mut pg_sys::Node,
    nullable: i32,
    read: impl FnOnce(*mut pg_sys::RangeTblEntry) -> IvmResult<()>,
    extra: Vec<*mut pg_sys::Node>,
) -> IvmResult<*mut pg_sys::Node> {
    unsafe {
        let original = rt_fetch(query, nullable);
        let rte = pg_sys::copyObjectImpl(original as *const std::ffi::c_void) as *mut pg_sys::RangeTblEntry;
        #[cfg(not(feature = "pg15"))]
        {
            (*rte).perminfoindex = 0;
        }
        read(rte)?;
        // One level down: the table becomes entry 1 there, everything else reaches
        // one level further up.
        let mut lower = |node: *mut pg_sys::Node| -> Option<*mut pg_sys::Node> {
            if !pgrx::is_a(node, pg_sys::NodeTag::T_Var) {
                return None;
            }
            let var = pg_sys::copyObjectImpl(node as *const std::ffi::c_void) as *mut pg_sys::Var;
            if (*var).varlevelsup == 0 && (*var).varno == nullable {
                (*var).varno = 1;
                (*var).varnosyn = 1;
            } else {
                (*var).varlevelsup += 1;
            }
            Some(var as *mut pg_sys::Node)
        };
        let mut parts = super::sublinks::conjuncts(super::tree::mutate(condition, &mut lower));
        parts.extend(extra);
        Ok(super::sublinks::exists_over(rte, parts))
    }
}
