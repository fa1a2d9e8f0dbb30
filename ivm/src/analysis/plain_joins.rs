//! Joins written with USING or NATURAL, or given an alias, spelled out as plain joins
//! with ON.
//!
//! The analysis makes an outer join's padded rows by replacing its condition with
//! false (see `outer_joins`) and prints every query it derives with ruleutils, which
//! prints a USING join as `USING (k)`: there is no condition to replace. What USING
//! means is an ON condition, which Postgres' analyzer has already built (`l.k = r.k`
//! for each column, in the JoinExpr's quals), plus merged columns: each an expression
//! of the two sides, recorded in the join's range-table entry (the left side's column
//! for LEFT JOIN, the right side's for RIGHT JOIN, `COALESCE(l.k, r.k)` for FULL JOIN,
//! with the casts the columns' types need). Once every reference to a join's column is
//! replaced by that expression, nothing in the query reads the merged columns, and the
//! join means exactly what it means with its condition written with ON. A padded row
//! has NULLs in the padded side's columns, so the merged column's expression gives the
//! value Postgres gives it there too.
//!
//! An alias (`(a JOIN b ON ...) AS j`) hides the names of the join's tables, which the
//! delta terms' conditions on each table's changes use. Once `j.x` is replaced by the
//! column it is, the alias names nothing and is dropped; ruleutils gives the tables
//! names that are unique in the printed query.

use super::join_entries;
use super::tree::{each_subquery_expression, joins_of, rt_fetch};
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};

/// Rewrite every join with USING, NATURAL or an alias in `query`, at any depth, as a
/// plain join with ON.
pub unsafe fn spell_out_joins(query: *mut pg_sys::Query) -> IvmResult<()> {
    unsafe {
        let joins = joins_of((*query).jointree as *mut pg_sys::Node);
        if joins.iter().any(|j| !(**j).usingClause.is_null() || (**j).isNatural || !(**j).alias.is_null()) {
            // A lateral item may read the join's columns; it is not rewritten below.
            let lateral = PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr().any(|r| (*r).lateral);
            if lateral {
                return Err(IvmError::unsupported(
                    "a LATERAL item beside a join with USING, NATURAL or an alias (write the join's condition with ON, without AS)",
                ));
            }
            join_entries::flatten_join_vars(query);
            for join in joins_of((*query).jointree as *mut pg_sys::Node) {
                (*join).usingClause = std::ptr::null_mut();
                (*join).join_using_alias = std::ptr::null_mut();
                (*join).isNatural = false;
                (*join).alias = std::ptr::null_mut();
                (*rt_fetch(query, (*join).rtindex)).alias = std::ptr::null_mut();
            }
            join_entries::rebuild_join_entries(query);
        }
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY {
                spell_out_joins((*rte).subquery)?;
            }
        }
        each_subquery_expression(query, &mut |sub| spell_out_joins(sub))
    }
}
