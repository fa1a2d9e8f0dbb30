//! Planner callbacks for a foreign table scan.
//!
//! `GetForeignRelSize` splits the table's conditions into those DuckDB evaluates
//! (see `deparse`) and those Postgres keeps, and estimates rows from the lake's own
//! statistics. `GetForeignPaths` offers a plain path and, where the query's order
//! can be produced by DuckDB, a sorted path (with the LIMIT when that is safe).
//! `GetForeignPlan` freezes the decision into a `ScanPlan`, serialized into the
//! plan as text so cached plans can be copied and executed any number of times.

use pgrx::pg_sys::{self, Index, Node, Oid};
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgRelation};
use serde::{Deserialize, Serialize};

use crate::catalog::cache::lake_for;
use crate::error::OrRaise;
use crate::options::{TableOptions, lake_column_name};
use crate::pg_nodes::{attribute_numbers, list_nodes};
use crate::scan::deparse::Deparser;
use crate::scan::model::{
    Bound, BoundValue, ColumnInfo, Output, OutputSource, RelPlan, ScanPlan, params_list, rel_plan, strip_relabel,
};
use crate::scan::{aggregate, ordering};

/// Rows assumed when the lake gives no estimate (a change feed, or a missing table).
const DEFAULT_ROWS: f64 = 1000.0;
/// Cost model: DuckDB is far cheaper per row than a Postgres sort or aggregate, and a
/// row crossing into Postgres costs about one cpu_tuple_cost.
const STARTUP_COST: f64 = 25.0;
const PER_ROW_COST: f64 = 0.01;

impl RelPlan {
    unsafe fn new(baserel: *mut pg_sys::RelOptInfo, relid: Oid) -> RelPlan {
        unsafe {
            let relation = PgRelation::open(relid);
            let columns = relation
                .tuple_desc()
                .iter()
                .map(|attr| {
                    (!attr.is_dropped()).then(|| ColumnInfo {
                        attno: attr.attnum,
                        pg_name: attr.name().to_owned(),
                        lake_name: lake_column_name(relid, attr.attnum, attr.name()),
                        type_oid: attr.type_oid().value(),
                        typmod: attr.type_mod(),
                    })
                })
                .collect();
            let mut plan = RelPlan {
                relid,
                varno: (*baserel).relid,
                table: TableOptions::of(relid),
                columns,
                remote_sql: Vec::new(),
                remote: Vec::new(),
                local: Vec::new(),
                params: Vec::new(),
                lower: Vec::new(),
                upper: Vec::new(),
                range_params: Vec::new(),
            };
            let mut deparser = Deparser {
                varno: plan.varno,
                columns: &|attno| plan.column_ref(attno),
                params: Vec::new(),
            };
            let mut remote_sql = Vec::new();
            let mut remote = Vec::new();
            let mut local = Vec::new();
            for rinfo in list_nodes((*baserel).baserestrictinfo) {
                let rinfo = rinfo as *mut pg_sys::RestrictInfo;
                match deparser.condition((*rinfo).clause.cast()) {
                    Some(sql) => {
                        remote_sql.push(sql);
                        remote.push(rinfo);
                    }
                    None => local.push(rinfo),
                }
            }
            let params = deparser.params;
            plan.remote_sql = remote_sql;
            plan.remote = remote;
            plan.local = local;
            plan.params = params;
            if plan.table.changes {
                plan.collect_snapshot_range((*baserel).baserestrictinfo);
            }
            plan
        }
    }

    /// Bounds on `snapshot_id` in a change feed's conditions become the snapshot
    /// range handed to DuckLake, so a small delta never reads the whole table.
    unsafe fn collect_snapshot_range(&mut self, restrictinfo: *mut pg_sys::List) {
        unsafe {
            let Some(snapshot_attno) = self
                .columns
                .iter()
                .flatten()
                .find(|c| c.lake_name == "snapshot_id")
                .map(|c| c.attno)
            else {
                return;
            };
            let clauses: Vec<*mut Node> = list_nodes(restrictinfo)
                .into_iter()
                .map(|rinfo| (*(rinfo as *mut pg_sys::RestrictInfo)).clause as *mut Node)
                .collect();
            let (lower, upper) = snapshot_bounds(&clauses, self.varno, snapshot_attno, |node| self.bound_value(node));
            self.lower.extend(lower);
            self.upper.extend(upper);
        }
    }

    unsafe fn bound_value(&mut self, node: *mut Node) -> Option<BoundValue> {
        unsafe {
            let node = strip_relabel(node);
            match (*node).type_ {
                pg_sys::NodeTag::T_Const => constant_bound(node),
                pg_sys::NodeTag::T_Param
                    if matches!(pg_sys::exprType(node), pg_sys::INT8OID | pg_sys::INT4OID | pg_sys::INT2OID) =>
                {
                    self.range_params.push(node.cast());
                    Some(BoundValue::Param(self.range_params.len() - 1))
                }
                _ => None,
            }
        }
    }
}

/// An integer constant as a snapshot bound (a NULL one bounds nothing).
pub unsafe fn constant_bound(node: *mut Node) -> Option<BoundValue> {
    unsafe {
        let node = strip_relabel(node);
        if (*node).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull {
            return None;
        }
        let v = match (*c).consttype {
            pg_sys::INT8OID => (*c).constvalue.value() as i64,
            pg_sys::INT4OID => (*c).constvalue.value() as i32 as i64,
            pg_sys::INT2OID => (*c).constvalue.value() as i16 as i64,
            _ => return None,
        };
        Some(BoundValue::Const(v))
    }
}

/// The lower and upper bounds that `clauses` (conditions all rows satisfy) put on
/// column `attno` of range-table entry `varno`: `snapshot_id <op> value` or `value <op>
/// snapshot_id` with `=`, `<`, `<=`, `>`, `>=`, where `bound_value` accepts the value.
pub unsafe fn snapshot_bounds(
    clauses: &[*mut Node],
    varno: Index,
    attno: i16,
    mut bound_value: impl FnMut(*mut Node) -> Option<BoundValue>,
) -> (Vec<Bound>, Vec<Bound>) {
    unsafe {
        let (mut lower, mut upper) = (Vec::new(), Vec::new());
        for &clause in clauses {
            if (*clause).type_ != pg_sys::NodeTag::T_OpExpr {
                continue;
            }
            let op = clause as *mut pg_sys::OpExpr;
            let args = list_nodes((*op).args);
            let [left, right] = args.as_slice() else { continue };
            let name = std::ffi::CStr::from_ptr(pg_sys::get_opname((*op).opno)).to_string_lossy().into_owned();
            let is_snapshot_var = |n: *mut Node| {
                (*n).type_ == pg_sys::NodeTag::T_Var
                    && (*(n as *mut pg_sys::Var)).varno as Index == varno
                    && (*(n as *mut pg_sys::Var)).varattno == attno
                    && (*(n as *mut pg_sys::Var)).varlevelsup == 0
            };
            // Normalise to `snapshot_id <op> value`.
            let (value, op_name) = if is_snapshot_var(*left) {
                (*right, name.clone())
            } else if is_snapshot_var(*right) {
                let flipped = match name.as_str() {
                    "<" => ">",
                    "<=" => ">=",
                    ">" => "<",
                    ">=" => "<=",
                    other => other,
                };
                (*left, flipped.to_owned())
            } else {
                continue;
            };
            let Some(bound_value) = bound_value(value) else { continue };
            match op_name.as_str() {
                "=" => {
                    lower.push(Bound { value: bound_value, offset: 0 });
                    upper.push(Bound { value: bound_value, offset: 0 });
                }
                ">" => lower.push(Bound { value: bound_value, offset: 1 }),
                ">=" => lower.push(Bound { value: bound_value, offset: 0 }),
                "<" => upper.push(Bound { value: bound_value, offset: -1 }),
                "<=" => upper.push(Bound { value: bound_value, offset: 0 }),
                _ => {}
            }
        }
        (lower, upper)
    }
}

/// How long a row estimate is reused: asking DuckLake costs a catalog round trip
/// (about as much as planning everything else), and estimates need not be exact.
const ESTIMATE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    static ESTIMATES: std::cell::RefCell<std::collections::HashMap<(Oid, String, String), (f64, std::time::Instant)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Rows in the lake table according to the lake's statistics.
fn lake_rows(relid: Oid, table: &TableOptions) -> f64 {
    // SAFETY: catalog lookup of an existing foreign table.
    let server_oid = unsafe { (*pg_sys::GetForeignTable(relid)).serverid };
    let key = (server_oid, table.schema.clone(), table.table.clone());
    let cached = ESTIMATES.with(|e| e.borrow().get(&key).copied());
    if let Some((rows, _)) = cached.filter(|(_, at)| at.elapsed() < ESTIMATE_TTL) {
        return rows;
    }
    let rows = lake_rows_uncached(server_oid, table);
    ESTIMATES.with(|e| e.borrow_mut().insert(key, (rows, std::time::Instant::now())));
    rows
}

fn lake_rows_uncached(server_oid: Oid, table: &TableOptions) -> f64 {
    let lake = lake_for(server_oid).or_raise();
    lake.connection()
        .or_raise()
        .query_row(
            "SELECT estimated_size FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? AND table_name = ?",
            [lake.instance.alias.as_str(), table.schema.as_str(), table.table.as_str()],
            |row| row.get::<_, i64>(0),
        )
        .map(|rows| rows as f64)
        .unwrap_or(DEFAULT_ROWS)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_rel_size(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    foreigntableid: pg_sys::Oid,
) {
    unsafe {
        let plan = RelPlan::new(baserel, foreigntableid);
        let total = if plan.table.changes { DEFAULT_ROWS } else { lake_rows(foreigntableid, &plan.table) };
        let selectivity = pg_sys::clauselist_selectivity(
            root,
            (*baserel).baserestrictinfo,
            (*baserel).relid as i32,
            pg_sys::JoinType::JOIN_INNER,
            std::ptr::null_mut(),
        );
        (*baserel).rows = pg_sys::clamp_row_est(total.max(1.0) * selectivity);
        (*baserel).fdw_private = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(plan).cast();
    }
}

/// Choices of a path, in `ForeignPath.fdw_private`: ORDER BY items and LIMIT.
#[derive(Serialize, Deserialize, Default)]
pub struct PathChoice {
    pub order_by: Vec<String>,
    pub limit: Option<i64>,
}

impl PathChoice {
    unsafe fn to_list(&self) -> *mut pg_sys::List {
        let json = std::ffi::CString::new(serde_json::to_string(self).expect("serializable")).expect("no NUL");
        unsafe { pg_sys::lappend(std::ptr::null_mut(), pg_sys::makeString(pg_sys::pstrdup(json.as_ptr())).cast()) }
    }

    unsafe fn from_list(list: *mut pg_sys::List) -> PathChoice {
        unsafe {
            if list.is_null() {
                return PathChoice::default();
            }
            let node = (*(*list).elements).ptr_value as *mut pg_sys::String;
            serde_json::from_str(&std::ffi::CStr::from_ptr((*node).sval).to_string_lossy()).unwrap_or_default()
        }
    }
}

unsafe fn add_scan_path(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    rows: f64,
    pathkeys: *mut pg_sys::List,
    choice: &PathChoice,
) {
    unsafe {
        let total_cost = STARTUP_COST + rows * PER_ROW_COST;
        let path = pg_sys::create_foreignscan_path(
            root,
            baserel,
            std::ptr::null_mut(),
            rows,
            #[cfg(feature = "pg18")]
            0,
            STARTUP_COST,
            total_cost,
            pathkeys,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            std::ptr::null_mut(),
            choice.to_list(),
        );
        pg_sys::add_path(baserel, path.cast());
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
) {
    unsafe {
        let plan = rel_plan(baserel).expect("get_foreign_rel_size ran");
        let rows = (*baserel).rows;
        let limit = ordering::pushable_limit(root, plan);
        let query_sorted = !(*(*root).parse).sortClause.is_null();

        // Unordered: may carry the LIMIT only when the query has no ORDER BY.
        let plain_limit = if query_sorted { None } else { limit };
        let plain_rows = plain_limit.map_or(rows, |n| rows.min(n as f64));
        add_scan_path(root, baserel, plain_rows, std::ptr::null_mut(), &PathChoice {
            order_by: Vec::new(),
            limit: plain_limit,
        });

        // Sorted by DuckDB, when every key of the query's order can be.
        if let Some(order_by) = ordering::order_by_sql(plan, (*root).query_pathkeys) {
            let sorted_limit = if query_sorted { limit } else { None };
            let sorted_rows = sorted_limit.map_or(rows, |n| rows.min(n as f64));
            add_scan_path(root, baserel, sorted_rows, (*root).query_pathkeys, &PathChoice {
                order_by,
                limit: sorted_limit,
            });
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    root: *mut pg_sys::PlannerInfo,
    foreignrel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
    best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    unsafe {
        if (*foreignrel).reloptkind == pg_sys::RelOptKind::RELOPT_UPPER_REL {
            return aggregate::plan_aggregate_scan(root, foreignrel, best_path, tlist, outer_plan);
        }
        let plan = rel_plan(foreignrel).expect("get_foreign_rel_size ran");
        let choice = PathChoice::from_list((*best_path).fdw_private);

        // Postgres evaluates the conditions DuckDB does not.
        let mut local_quals: *mut pg_sys::List = std::ptr::null_mut();
        for rinfo in list_nodes(scan_clauses) {
            let rinfo = rinfo as *mut pg_sys::RestrictInfo;
            if !plan.remote.contains(&rinfo) {
                local_quals = pg_sys::lappend(local_quals, (*rinfo).clause.cast());
            }
        }

        let (attnos, want_rowid) = needed_attributes(foreignrel, local_quals, plan);
        let outputs = attnos
            .iter()
            .enumerate()
            .map(|(i, attno)| {
                let c = plan.column(*attno).expect("a column of the scanned relation");
                Output {
                    slot_index: (*attno - 1) as usize,
                    type_oid: c.type_oid.to_u32(),
                    typmod: c.typmod,
                    name: c.pg_name.clone(),
                    source: OutputSource::Column(i),
                }
            })
            .collect();
        let mut select: Vec<String> = attnos.iter().map(|a| plan.projection(*a)).collect();
        let rowid_column = want_rowid.then(|| {
            select.push("rowid".to_owned());
            select.len() - 1
        });
        let scan_plan = ScanPlan {
            relid: plan.relid.to_u32(),
            source: plan.source(),
            select,
            rowid_column,
            filter: plan.remote_sql.clone(),
            group_by: Vec::new(),
            order_by: choice.order_by,
            limit: choice.limit,
            outputs,
            sql_params: plan.params.len(),
            lower: plan.lower.clone(),
            upper: plan.upper.clone(),
            assignments: Vec::new(),
            not_whole: crate::refusal::current(),
        };
        pg_sys::make_foreignscan(
            tlist,
            local_quals,
            (*foreignrel).relid,
            params_list(plan),
            scan_plan.to_list(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

/// Attribute numbers the scan must fill: those in the target list and in the
/// conditions Postgres evaluates (a whole-row reference needs every column), and
/// whether the ctid (the row identity of UPDATE and DELETE) is needed.
unsafe fn needed_attributes(
    baserel: *mut pg_sys::RelOptInfo,
    local_quals: *mut pg_sys::List,
    plan: &RelPlan,
) -> (Vec<i16>, bool) {
    unsafe {
        let relid = (*baserel).relid;
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos((*(*baserel).reltarget).exprs.cast(), relid, &mut attrs);
        pg_sys::pull_varattnos(local_quals.cast(), relid, &mut attrs);
        let mut attnos = Vec::new();
        let mut whole_row = false;
        let mut want_rowid = false;
        for attno in attribute_numbers(attrs) {
            match attno {
                0 => whole_row = true,
                a if a == pg_sys::SelfItemPointerAttributeNumber => want_rowid = true,
                a if a > 0 => attnos.push(a as i16),
                _ => {}
            }
        }
        if whole_row {
            attnos = plan.columns.iter().flatten().map(|c| c.attno).collect();
        }
        (attnos, want_rowid)
    }
}
