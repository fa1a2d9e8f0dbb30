//! Aggregate pushdown: `GROUP BY` with COUNT(*), COUNT(col), SUM, AVG, MIN, MAX.
//!
//! Pushed when every condition on the table is evaluated by DuckDB, there are no
//! grouping sets or HAVING, each grouping key is a column compared the same way in
//! DuckDB (text under a deterministic collation), and every grouped output is a
//! grouping column or one of the aggregates below over a column. Results have
//! Postgres' types and values:
//! - count → bigint;
//! - sum(smallint|integer) → bigint; sum(bigint|numeric) → numeric (DuckDB's
//!   128-bit/decimal sum, read as text, exact); sum(double) → double;
//! - avg(smallint|integer|bigint|numeric) → numeric, computed here from DuckDB's
//!   exact sum and count with Postgres' own numeric division (same scale rules);
//!   avg(double) → double;
//! - min/max of any pushable type (text only under a bytewise collation, see `scan::collation`) → that type.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Node};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::pg_nodes::list_nodes;
use crate::scan::collation::{collation_is_deterministic, collation_sorts_bytewise};
use crate::scan::deparse::is_pushable_type;
use crate::scan::model::{Output, OutputSource, RelPlan, ScanPlan, params_list, rel_plan, strip_relabel};
use crate::types::kind::Kind;

/// The pushed aggregation, in the grouped relation's `fdw_private`.
struct UpperPlan {
    base: *const RelPlan,
    select: Vec<String>,
    group_by: Vec<String>,
    outputs: Vec<Output>,
    /// What the scan returns (`fdw_scan_tlist`): grouping keys, then aggregates.
    scan_tlist: *mut pg_sys::List,
}

const STARTUP_COST: f64 = 25.0;

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_upper_paths(
    root: *mut pg_sys::PlannerInfo,
    stage: pg_sys::UpperRelationKind::Type,
    input_rel: *mut pg_sys::RelOptInfo,
    output_rel: *mut pg_sys::RelOptInfo,
    _extra: *mut std::ffi::c_void,
) {
    unsafe {
        if stage != pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG
            || (*input_rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
            || !(*output_rel).fdw_private.is_null()
        {
            return;
        }
        let Some(base) = rel_plan(input_rel) else { return };
        let Some(upper) = plan_grouping(root, base) else { return };
        let target = (*root).upper_targets[pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG as usize];
        let rows = if upper.group_by.is_empty() {
            1.0
        } else {
            let mut group_exprs: *mut pg_sys::List = std::ptr::null_mut();
            for clause in list_nodes((*(*root).parse).groupClause) {
                let sgc = clause as *mut pg_sys::SortGroupClause;
                let tle = pg_sys::get_sortgroupref_tle((*sgc).tleSortGroupRef, (*(*root).parse).targetList);
                group_exprs = pg_sys::lappend(group_exprs, (*tle).expr.cast());
            }
            pg_sys::estimate_num_groups(root, group_exprs, (*input_rel).rows, std::ptr::null_mut(), std::ptr::null_mut())
        };
        let total_cost = STARTUP_COST + rows * 0.01;
        let path = pg_sys::create_foreign_upper_path(
            root,
            output_rel,
            target,
            rows,
            #[cfg(feature = "pg18")]
            0,
            STARTUP_COST,
            total_cost,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pg_sys::add_path(output_rel, path.cast());
        (*output_rel).fdw_private = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(upper).cast();
    }
}

/// The DuckDB aggregation for the query's grouping target, if it can be pushed.
///
/// The scan returns a flat list: the grouping keys, then each distinct aggregate.
/// Target expressions over those (`count(*) + 1`, `sum(x)::text`) are computed by
/// Postgres from the scan's output, as the planner matches them to the list.
unsafe fn plan_grouping(root: *mut pg_sys::PlannerInfo, base: &RelPlan) -> Option<UpperPlan> {
    unsafe {
        let parse = (*root).parse;
        if !base.local.is_empty() || !(*parse).groupingSets.is_null() || !(*parse).havingQual.is_null() {
            return None;
        }
        let mut upper = UpperPlan {
            base,
            select: Vec::new(),
            group_by: Vec::new(),
            outputs: Vec::new(),
            scan_tlist: std::ptr::null_mut(),
        };
        let mut aggregates: Vec<*mut pg_sys::Aggref> = Vec::new();
        let add_entry = |upper: &mut UpperPlan, expr: *mut Node, sortgroupref: pg_sys::Index| {
            let position = pg_sys::list_length(upper.scan_tlist) + 1;
            let tle = pg_sys::makeTargetEntry(expr.cast(), position as pg_sys::AttrNumber, std::ptr::null_mut(), false);
            (*tle).ressortgroupref = sortgroupref;
            upper.scan_tlist = pg_sys::lappend(upper.scan_tlist, tle.cast());
            (position - 1) as usize
        };

        // GROUP BY keys: each a column compared the same way in DuckDB.
        for clause in list_nodes((*parse).groupClause) {
            let sgc = clause as *mut pg_sys::SortGroupClause;
            let tle = pg_sys::get_sortgroupref_tle((*sgc).tleSortGroupRef, (*parse).targetList);
            let var = base_var(base, (*tle).expr.cast())?;
            let collation = (*var).varcollid;
            if !collation_is_deterministic(collation) {
                return None;
            }
            let key_sql = base.column_ref((*var).varattno)?.expr?;
            let column = base.column((*var).varattno)?;
            let slot_index = add_entry(&mut upper, (*tle).expr.cast(), (*sgc).tleSortGroupRef);
            upper.select.push(Kind::of(column.type_oid, column.typmod).duck_expression_of(&key_sql));
            upper.outputs.push(Output {
                slot_index,
                type_oid: column.type_oid.to_u32(),
                typmod: column.typmod,
                name: column.pg_name.clone(),
                source: OutputSource::Column(upper.select.len() - 1),
            });
            upper.group_by.push(key_sql);
        }

        // Aggregates used anywhere in the grouping target; other Vars there must be
        // grouping keys, which the scan already returns.
        let target = (*root).upper_targets[pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG as usize];
        for (i, expr) in list_nodes((*target).exprs).into_iter().enumerate() {
            let sortgroupref =
                if (*target).sortgrouprefs.is_null() { 0 } else { *(*target).sortgrouprefs.add(i) };
            if sortgroupref != 0 && !pg_sys::get_sortgroupref_clause_noerr(sortgroupref, (*parse).groupClause).is_null() {
                continue;
            }
            let pulled = pg_sys::pull_var_clause(expr, pg_sys::PVC_INCLUDE_AGGREGATES as i32);
            for node in list_nodes(pulled) {
                if (*node).type_ != pg_sys::NodeTag::T_Aggref {
                    continue;
                }
                let aggref = node as *mut pg_sys::Aggref;
                if aggregates.iter().any(|a| pg_sys::equal((*a).cast(), aggref.cast())) {
                    continue;
                }
                let (items, source) = aggregate_sql(base, aggref, upper.select.len())?;
                let slot_index = add_entry(&mut upper, aggref.cast(), 0);
                upper.select.extend(items);
                upper.outputs.push(Output {
                    slot_index,
                    type_oid: (*aggref).aggtype.to_u32(),
                    typmod: -1,
                    name: function_name((*aggref).aggfnoid),
                    source,
                });
                aggregates.push(aggref);
            }
        }
        Some(upper)
    }
}

/// A Var of the scanned table (under binary-compatible casts) with a pushable type.
unsafe fn base_var(base: &RelPlan, node: *mut Node) -> Option<*mut pg_sys::Var> {
    unsafe {
        let node = strip_relabel(node);
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_Var {
            return None;
        }
        let var = node as *mut pg_sys::Var;
        ((*var).varno as pg_sys::Index == base.varno
            && (*var).varlevelsup == 0
            && (*var).varattno > 0
            && is_pushable_type((*var).vartype))
        .then_some(var)
    }
}

fn function_name(oid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookup of an existing function.
    unsafe {
        let name = pg_sys::get_func_name(oid);
        if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() }
    }
}

/// DuckDB select items for one aggregate (starting at select position `first`),
/// and how the output is formed from them.
unsafe fn aggregate_sql(base: &RelPlan, aggref: *mut pg_sys::Aggref, first: usize) -> Option<(Vec<String>, OutputSource)> {
    unsafe {
        let plain = (*aggref).aggorder.is_null()
            && (*aggref).aggdistinct.is_null()
            && (*aggref).aggfilter.is_null()
            && !(*aggref).aggvariadic
            && (*aggref).aggkind == b'n' as std::ffi::c_char
            && (*aggref).agglevelsup == 0
            && (*aggref).aggsplit == pg_sys::AggSplit::AGGSPLIT_SIMPLE
            && (*aggref).aggfnoid.to_u32() < pg_sys::FirstNormalObjectId;
        if !plain {
            return None;
        }
        let name = function_name((*aggref).aggfnoid);
        let result = (*aggref).aggtype;
        let single = |sql: String| Some((vec![sql], OutputSource::Column(first)));
        if (*aggref).aggstar {
            return (name == "count").then(|| (vec!["count(*)".to_owned()], OutputSource::Column(first)));
        }
        let args = list_nodes((*aggref).args);
        let [arg] = args.as_slice() else { return None };
        let var = base_var(base, (*(*arg as *mut pg_sys::TargetEntry)).expr.cast())?;
        let arg_sql = base.column_ref((*var).varattno)?.expr?;
        let arg_type = (*var).vartype;
        use pg_sys::{FLOAT8OID, INT2OID, INT4OID, INT8OID, NUMERICOID};
        match name.as_str() {
            "count" => single(format!("count({arg_sql})")),
            "sum" => match arg_type {
                INT2OID | INT4OID => single(format!("CAST(sum({arg_sql}) AS BIGINT)")),
                INT8OID | NUMERICOID => single(format!("CAST(sum({arg_sql}) AS VARCHAR)")),
                FLOAT8OID => single(format!("CAST(sum({arg_sql}) AS DOUBLE)")),
                _ => None,
            },
            "avg" => match arg_type {
                INT2OID | INT4OID | INT8OID | NUMERICOID => Some((
                    vec![format!("CAST(sum({arg_sql}) AS VARCHAR)"), format!("count({arg_sql})")],
                    OutputSource::Average { sum: first, count: first + 1 },
                )),
                FLOAT8OID => single(format!("CAST(avg({arg_sql}) AS DOUBLE)")),
                _ => None,
            },
            "min" | "max" => {
                let collation = (*aggref).inputcollid;
                if !collation_sorts_bytewise(collation) {
                    return None;
                }
                single(Kind::of(result, -1).duck_expression_of(&format!("{name}({arg_sql})")))
            }
            _ => None,
        }
    }
}

/// GetForeignPlan for the grouped relation: the scan returns the grouping target.
pub unsafe fn plan_aggregate_scan(
    _root: *mut pg_sys::PlannerInfo,
    foreignrel: *mut pg_sys::RelOptInfo,
    _best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    unsafe {
        let upper = &*((*foreignrel).fdw_private as *const UpperPlan);
        let base = &*upper.base;
        let scan_tlist = upper.scan_tlist;
        let scan_plan = ScanPlan {
            relid: base.relid.to_u32(),
            source: base.source(),
            select: upper.select.clone(),
            filter: base.remote_sql.clone(),
            group_by: upper.group_by.clone(),
            order_by: Vec::new(),
            limit: None,
            outputs: upper.outputs.clone(),
            rowid_column: None,
            sql_params: base.params.len(),
            lower: base.lower.clone(),
            upper: base.upper.clone(),
            assignments: Vec::new(),
            not_whole: crate::refusal::current(),
        };
        pg_sys::make_foreignscan(
            tlist,
            std::ptr::null_mut(),
            0,
            params_list(base),
            scan_plan.to_list(),
            scan_tlist,
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}
