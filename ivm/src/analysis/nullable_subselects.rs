//! Sub-selects on an outer join's nullable side that filter one table and select its
//! columns, merged into the join.
//!
//! The padding of an outer join is maintained for a nullable side that is one table
//! (see `outer_joins`). A sub-select there that only filters a table and selects some
//! of its columns is that table, its filter moved into the join's condition:
//!
//!   L ⟕ (SELECT a, b FROM T WHERE p) s ON θ(s)  ≡  L ⟕ T s ON θ(T) AND p
//!
//! Both sides pair each row of L with the rows of T satisfying p and θ, and pad the
//! rows of L that have none; a reference to `s.a` is `T.a`, NULL on a padded row either
//! way. Only plain columns qualify: a computed output such as `coalesce(a, 0)` is NULL on
//! a padded row of the sub-select but 0 when computed over the padded table. On a FULL
//! JOIN the rows of T failing p would come out padded, so the sub-select must not filter.

use super::join_entries;
use super::manip::{change_var_nodes, increment_var_sublevels_up, replace_vars};
use super::tree::{joins_of, nullable_sides_of, rt_fetch};
use crate::error::IvmResult;
use pgrx::{PgList, pg_sys};

/// Merge every such sub-select of `query`, at any depth, into its join.
pub unsafe fn merge_nullable_subselects(query: *mut pg_sys::Query) -> IvmResult<()> {
    unsafe {
        // Found first (as the join's and the sub-select's range-table indexes): each
        // merge makes a new copy of the query's tree.
        let mut mergeable_sides = Vec::new();
        for join in joins_of((*query).jointree as *mut pg_sys::Node) {
            let full = (*join).jointype == pg_sys::JoinType::JOIN_FULL;
            for side in nullable_sides_of(join) {
                if let Some(index) = subselect_at(query, side).filter(|&index| {
                    let rte = rt_fetch(query, index);
                    mergeable((*rte).subquery, full, (*rte).lateral)
                }) {
                    mergeable_sides.push(((*join).rtindex, index));
                }
            }
        }
        if !mergeable_sides.is_empty() {
            join_entries::flatten_join_vars(query);
            for (join, index) in mergeable_sides {
                merge(query, join, index);
            }
            join_entries::rebuild_join_entries(query);
        }
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY {
                merge_nullable_subselects((*rte).subquery)?;
            }
        }
        Ok(())
    }
}

/// The range-table index of the sub-select that FROM item `side` of `query` is, if it
/// is one.
unsafe fn subselect_at(query: *mut pg_sys::Query, side: *mut pg_sys::Node) -> Option<i32> {
    unsafe {
        if !pgrx::is_a(side, pg_sys::NodeTag::T_RangeTblRef) {
            return None;
        }
        let index = (*(side as *mut pg_sys::RangeTblRef)).rtindex;
        ((*rt_fetch(query, index)).rtekind == pg_sys::RTEKind::RTE_SUBQUERY).then_some(index)
    }
}

/// Whether sub-select `s` only filters one table (not on a FULL JOIN) and selects
/// plain columns of it, without LATERAL references to the items beside it.
unsafe fn mergeable(s: *mut pg_sys::Query, full: bool, lateral: bool) -> bool {
    unsafe {
        let q = &*s;
        let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable);
        let from = PgList::<pg_sys::Node>::from_pg((*q.jointree).fromlist);
        let one_table = rtable.len() == 1
            && from.len() == 1
            && pgrx::is_a(from.get_ptr(0).unwrap_or(std::ptr::null_mut()), pg_sys::NodeTag::T_RangeTblRef)
            && rtable.get_ptr(0).is_some_and(|rte| (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION && (*rte).tablesample.is_null());
        let plain = q.setOperations.is_null()
            && !q.hasAggs
            && !q.hasWindowFuncs
            && !q.hasTargetSRFs
            && !q.hasSubLinks
            && q.groupClause.is_null()
            && q.groupingSets.is_null()
            && q.havingQual.is_null()
            && q.distinctClause.is_null()
            && q.limitCount.is_null()
            && q.limitOffset.is_null()
            && q.rowMarks.is_null()
            && q.cteList.is_null();
        let columns = PgList::<pg_sys::TargetEntry>::from_pg(q.targetList).iter_ptr().all(|t| {
            let expr = (*t).expr as *mut pg_sys::Node;
            pgrx::is_a(expr, pg_sys::NodeTag::T_Var) && {
                let var = expr as *mut pg_sys::Var;
                (*var).varno == 1 && (*var).varlevelsup == 0 && (*var).varattno > 0
            }
        });
        one_table && plain && columns && !lateral && !(full && !(*q.jointree).quals.is_null())
    }
}

/// Replace the sub-select at range-table entry `index` of `query`, a nullable side of
/// join `join`, by its table under the sub-select's alias, the sub-select's filter
/// ANDed to the join's condition and the references to its outputs made references to
/// the table's columns.
unsafe fn merge(query: *mut pg_sys::Query, join: i32, index: i32) {
    unsafe {
        let rte = rt_fetch(query, index);
        let s = (*rte).subquery;
        let targets = pg_sys::copyObjectImpl((*s).targetList as *const std::ffi::c_void) as *mut pg_sys::List;
        let filter = pg_sys::copyObjectImpl((*(*s).jointree).quals as *const std::ffi::c_void) as *mut pg_sys::Node;
        change_var_nodes(targets as *mut pg_sys::Node, 1, index);
        change_var_nodes(filter, 1, index);
        // References to the queries around it reach one level less far from the join.
        increment_var_sublevels_up(filter, -1, 1);
        let inner = PgList::<pg_sys::RangeTblEntry>::from_pg((*s).rtable).get_ptr(0).expect("one table");
        let table = pg_sys::copyObjectImpl(inner as *const std::ffi::c_void) as *mut pg_sys::RangeTblEntry;
        // The table under the sub-select's name; its columns print by their own names.
        let name = (*(*rte).eref).aliasname;
        (*table).alias = pg_sys::makeAlias(name, std::ptr::null_mut());
        (*(*table).eref).aliasname = name;
        #[cfg(not(feature = "pg15"))]
        {
            (*table).perminfoindex = 0;
        }
        // Every reference to the sub-select's columns, at any depth (a new tree).
        *query = *replace_vars(query, index, rte, targets);
        (*(*(*query).rtable).elements.add(index as usize - 1)).ptr_value = table.cast();
        if !filter.is_null() {
            let join = super::outer_joins::join_expr(query, join);
            // A NATURAL join without common columns has no condition.
            let condition = [(*join).quals, filter].into_iter().filter(|c| !c.is_null()).collect();
            (*join).quals = super::sublinks::and(condition);
        }
    }
}
