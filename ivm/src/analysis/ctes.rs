//! WITH. A non-recursive common table expression of a SELECT means what a sub-select
//! in FROM with its query means wherever it is referenced (Postgres' planner inlines
//! it the same way unless told not to, and MATERIALIZED changes only how it runs: the
//! query has no volatile functions). The differential analysis therefore replaces
//! every reference by a copy of its query, and a CTE that filters and computes columns
//! is maintained like such a sub-select; one that aggregates is refused like one.

use super::tree::each_subquery_expression;
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};
use std::ffi::CStr;

/// Replace every CTE reference of `query`, at any depth, by a sub-select in FROM.
pub unsafe fn inline_ctes(query: *mut pg_sys::Query) -> IvmResult<()> {
    unsafe { inline_level(query, &mut Vec::new()) }
}

/// `stack`: the CTE lists of the levels above `query`, outermost first.
unsafe fn inline_level(query: *mut pg_sys::Query, stack: &mut Vec<*mut pg_sys::List>) -> IvmResult<()> {
    unsafe {
        let q = &mut *query;
        if q.hasRecursive {
            return Err(IvmError::unsupported("WITH RECURSIVE"));
        }
        if q.hasModifyingCTE {
            return Err(IvmError::unsupported("a data-modifying statement in WITH"));
        }
        stack.push(q.cteList);
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr() {
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_CTE => {
                    let Some(level) = stack.len().checked_sub(1 + (*rte).ctelevelsup as usize) else {
                        return Err(IvmError::unsupported("this WITH reference"));
                    };
                    let name = CStr::from_ptr((*rte).ctename);
                    let cte = PgList::<pg_sys::CommonTableExpr>::from_pg(stack[level])
                        .iter_ptr()
                        .find(|c| CStr::from_ptr((**c).ctename) == name)
                        .ok_or_else(|| IvmError::unsupported("this WITH reference"))?;
                    // Referenced deeper than it is defined, its references to outer
                    // queries would need their levels moved.
                    if (*rte).ctelevelsup > 0
                        && (1..=stack.len() as i32).any(|l| pg_sys::contain_vars_of_level((*cte).ctequery, l))
                    {
                        return Err(IvmError::unsupported("a WITH query that refers to an outer query, read at a deeper level"));
                    }
                    let copy = pg_sys::copyObjectImpl((*cte).ctequery as *const std::ffi::c_void) as *mut pg_sys::Query;
                    // Its own references resolve among the CTEs of its defining level
                    // and those above; all of them are replaced, so their level
                    // numbers never need to match the new position.
                    let mut defining = stack[..=level].to_vec();
                    inline_level(copy, &mut defining)?;
                    (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
                    (*rte).subquery = copy;
                    // ruleutils prints a sub-select's column names only from its alias:
                    // those of `WITH x(a, b)` are how the query reads its columns.
                    if (*rte).alias.is_null() {
                        (*rte).alias = pg_sys::makeAlias(
                            (*(*rte).eref).aliasname,
                            pg_sys::copyObjectImpl((*(*rte).eref).colnames as *const std::ffi::c_void) as *mut pg_sys::List,
                        );
                    }
                    (*rte).ctename = std::ptr::null_mut();
                    (*rte).ctelevelsup = 0;
                    (*rte).self_reference = false;
                    (*rte).coltypes = std::ptr::null_mut();
                    (*rte).coltypmods = std::ptr::null_mut();
                    (*rte).colcollations = std::ptr::null_mut();
                }
                pg_sys::RTEKind::RTE_SUBQUERY => inline_level((*rte).subquery, stack)?,
                _ => {}
            }
        }
        each_subquery_expression(query, &mut |sub| inline_level(sub, stack))?;
        stack.pop();
        q.cteList = std::ptr::null_mut();
        Ok(())
    }
}
