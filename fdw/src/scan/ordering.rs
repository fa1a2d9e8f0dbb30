//! ORDER BY and LIMIT pushdown.
//!
//! A sorted path is offered only when DuckDB can produce the query's exact order:
//! every sort key is a column of the table with a type whose ordering is the same
//! in DuckDB (text only under a bytewise collation, see `scan::collation`), with explicit NULLS FIRST/LAST.
//! The LIMIT is pushed only when nothing between the scan and the Limit node could
//! remove or add rows: a single-table query without grouping, aggregates, window
//! functions, DISTINCT, set-returning functions or row locks, and with every
//! condition evaluated by DuckDB. OFFSET stays with Postgres (DuckDB returns
//! LIMIT + OFFSET rows).

use pgrx::pg_sys::{self, Node};
use pgrx::FromDatum;

use crate::pg_nodes::list_nodes;
use crate::scan::collation::{collation_is_deterministic, collation_sorts_bytewise};
use crate::scan::deparse::is_pushable_type;
use crate::scan::model::{RelPlan, strip_relabel};

/// DuckDB ORDER BY items for `pathkeys`, or `None` if any key cannot be sorted by DuckDB.
pub unsafe fn order_by_sql(plan: &RelPlan, pathkeys: *mut pg_sys::List) -> Option<Vec<String>> {
    unsafe {
        let keys = list_nodes(pathkeys);
        if keys.is_empty() {
            return None;
        }
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let pathkey = key as *mut pg_sys::PathKey;
            if (*pathkey).pk_opfamily.to_u32() >= pg_sys::FirstNormalObjectId {
                return None; // a user-defined ordering
            }
            let eclass = (*pathkey).pk_eclass;
            if (*eclass).ec_has_volatile {
                return None;
            }
            let collation = (*eclass).ec_collation;
            let expr = list_nodes((*eclass).ec_members).into_iter().find_map(|member| {
                let member = member as *mut pg_sys::EquivalenceMember;
                if (*member).em_is_const || (*member).em_is_child {
                    return None;
                }
                let node = strip_relabel((*member).em_expr.cast());
                if (*node).type_ != pg_sys::NodeTag::T_Var {
                    return None;
                }
                let var = node as *mut pg_sys::Var;
                if (*var).varno as pg_sys::Index != plan.varno || (*var).varlevelsup != 0 || !is_pushable_type((*var).vartype)
                {
                    return None;
                }
                // Both are true for non-collatable types (InvalidOid).
                if !(collation_sorts_bytewise(collation) && collation_is_deterministic(collation)) {
                    return None;
                }
                plan.column_ref((*var).varattno)?.expr
            })?;
            let direction = if descending(pathkey) { "DESC" } else { "ASC" };
            let nulls = if (*pathkey).pk_nulls_first { "NULLS FIRST" } else { "NULLS LAST" };
            items.push(format!("{expr} {direction} {nulls}"));
        }
        Some(items)
    }
}

#[cfg(feature = "pg18")]
unsafe fn descending(pathkey: *mut pg_sys::PathKey) -> bool {
    unsafe { (*pathkey).pk_cmptype == pg_sys::CompareType::COMPARE_GT }
}

#[cfg(not(feature = "pg18"))]
unsafe fn descending(pathkey: *mut pg_sys::PathKey) -> bool {
    unsafe { (*pathkey).pk_strategy == pg_sys::BTGreaterStrategyNumber as i32 }
}

/// Rows DuckDB may stop after (LIMIT + OFFSET), when pushing the limit is safe.
pub unsafe fn pushable_limit(root: *mut pg_sys::PlannerInfo, plan: &RelPlan) -> Option<i64> {
    unsafe {
        let parse = (*root).parse;
        let simple = (*parse).commandType == pg_sys::CmdType::CMD_SELECT
            && pg_sys::bms_num_members((*root).all_baserels) == 1
            && (*parse).groupClause.is_null()
            && (*parse).groupingSets.is_null()
            && !(*parse).hasAggs
            && (*parse).havingQual.is_null()
            && !(*parse).hasWindowFuncs
            && !(*parse).hasTargetSRFs
            && (*parse).distinctClause.is_null()
            && (*parse).setOperations.is_null()
            && (*parse).rowMarks.is_null()
            && (*parse).limitOption == pg_sys::LimitOption::LIMIT_OPTION_COUNT
            && plan.local.is_empty();
        if !simple {
            return None;
        }
        let count = constant_i64((*parse).limitCount)?;
        let offset = if (*parse).limitOffset.is_null() { 0 } else { constant_i64((*parse).limitOffset)? };
        (count >= 0 && offset >= 0).then(|| count.saturating_add(offset))
    }
}

unsafe fn constant_i64(node: *mut Node) -> Option<i64> {
    unsafe {
        let node = strip_relabel(node);
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull || (*c).consttype != pg_sys::INT8OID {
            return None;
        }
        i64::from_datum((*c).constvalue, false)
    }
}
