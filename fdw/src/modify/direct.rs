//! A DELETE or UPDATE whose whole condition DuckDB evaluates runs as one DuckDB
//! statement (`DELETE FROM t WHERE ...`, `UPDATE t SET c = <value> WHERE ...`)
//! instead of sending every row's rowid through Postgres.
//!
//! Taken only when the scan below the ModifyTable node is our plain table scan with
//! no condition left to Postgres, no parameters, no RETURNING and no row triggers;
//! an UPDATE also needs every new value to be a constant of a pushable type or an
//! expression DuckDB computes exactly as Postgres (integer arithmetic, text `||`).

use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgRelation, pg_sys};

use crate::catalog::cache::{Lake, lake_for};
use crate::catalog::lake_transaction::in_subtransaction;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult, OrRaise, raise};
use crate::modify::rowid::LOCAL_ROWID_START;
use crate::options::{TableOptions, lake_column_name};
use crate::pg_nodes::list_nodes;
use crate::scan::deparse::Deparser;
use crate::scan::model::{Assignment, ScanPlan, Source, rel_plan};

#[pg_guard]
pub unsafe extern "C-unwind" fn plan_direct_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: std::ffi::c_int,
) -> bool {
    unsafe {
        let operation = (*plan).operation;
        if !matches!(operation, pg_sys::CmdType::CMD_DELETE | pg_sys::CmdType::CMD_UPDATE)
            || !(*plan).returningLists.is_null()
        {
            return false;
        }
        let subplan = (*plan).plan.lefttree;
        if subplan.is_null() || (*subplan).type_ != pg_sys::NodeTag::T_ForeignScan {
            return false;
        }
        let fscan = subplan as *mut pg_sys::ForeignScan;
        if (*fscan).scan.scanrelid != result_relation
            || !(*fscan).scan.plan.qual.is_null()
            || !(*fscan).fdw_exprs.is_null()
        {
            return false;
        }
        let mut scan = ScanPlan::from_list((*fscan).fdw_private);
        let relid = pg_sys::Oid::from(scan.relid);
        let table = TableOptions::of(relid);
        if scan.source != Source::Table
            || !matches!(crate::scan::snapshot::reads_the_past(&table), Ok(false))
            || scan.limit.is_some()
            || has_row_triggers(relid, operation)
        {
            return false;
        }
        if operation == pg_sys::CmdType::CMD_UPDATE {
            // Only the plain case: the result relation is the query's own (no inheritance).
            if (*(*root).parse).resultRelation as pg_sys::Index != result_relation {
                return false;
            }
            match assignments(root, result_relation, relid) {
                Some(assignments) if !assignments.is_empty() => scan.assignments = assignments,
                _ => return false,
            }
            (*fscan).fdw_private = scan.to_list();
        }
        (*fscan).operation = operation;
        (*fscan).resultRelation = result_relation;
        true
    }
}

/// Row triggers must see every row, so such tables keep the row-by-row path.
unsafe fn has_row_triggers(relid: pg_sys::Oid, operation: pg_sys::CmdType::Type) -> bool {
    unsafe {
        let relation = pg_sys::RelationIdGetRelation(relid);
        if relation.is_null() {
            return true;
        }
        let triggers = (*relation).trigdesc;
        let found = !triggers.is_null()
            && match operation {
                pg_sys::CmdType::CMD_UPDATE => {
                    (*triggers).trig_update_before_row || (*triggers).trig_update_after_row || (*triggers).trig_update_instead_row
                }
                _ => {
                    (*triggers).trig_delete_before_row || (*triggers).trig_delete_after_row || (*triggers).trig_delete_instead_row
                }
            };
        pg_sys::RelationClose(relation);
        found
    }
}

/// The new value of each column the UPDATE sets, or None when one is not a constant
/// or an expression DuckDB computes as Postgres would (see `Deparser::assigned_value`).
unsafe fn assignments(
    root: *mut pg_sys::PlannerInfo,
    result_relation: pg_sys::Index,
    relid: pg_sys::Oid,
) -> Option<Vec<Assignment>> {
    unsafe {
        let targets: Vec<*mut pg_sys::TargetEntry> = list_nodes((*root).processed_tlist)
            .into_iter()
            .map(|n| n as *mut pg_sys::TargetEntry)
            .filter(|t| !(**t).resjunk)
            .collect();
        let columns = (*root).update_colnos;
        if columns.is_null() || (*columns).length as usize != targets.len() {
            return None;
        }
        let rel_plan = rel_plan(*(*root).simple_rel_array.add(result_relation as usize))?;
        let mut deparser = Deparser { varno: result_relation, columns: &|attno| rel_plan.column_ref(attno), params: Vec::new() };
        let mut result = Vec::with_capacity(targets.len());
        for (i, target) in targets.into_iter().enumerate() {
            let attnum = *(*columns).elements.add(i).cast::<i32>() as i16;
            if attnum <= 0 {
                return None;
            }
            let mut expr = (*target).expr as *mut pg_sys::Node;
            while (*expr).type_ == pg_sys::NodeTag::T_RelabelType {
                expr = (*(expr as *mut pg_sys::RelabelType)).arg.cast();
            }
            let constant = (*expr).type_ == pg_sys::NodeTag::T_Const;
            // NULL fits a column of any type, pushable or not.
            let value = if constant && (*(expr as *mut pg_sys::Const)).constisnull {
                "NULL".to_owned()
            } else {
                deparser.assigned_value(expr)?
            };
            let name = std::ffi::CStr::from_ptr(pg_sys::get_attname(relid, attnum, false)).to_string_lossy().into_owned();
            result.push(Assignment { column: lake_column_name(relid, attnum, &name), value, constant });
        }
        Some(result)
    }
}

struct DirectState {
    sql: String,
    changed: u64,
    reported: bool,
}

/// The DuckDB statement, a query counting the rows it changes, and one counting
/// those of them the current transaction inserted.
unsafe fn statement_sql(node: *mut pg_sys::ForeignScanState) -> (String, String, String) {
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let scan = ScanPlan::from_list((*plan).fdw_private);
        let (alias, table) = crate::scan::model::table_reference(pg_sys::Oid::from(scan.relid));
        let target = sql::qualified(&alias, &table.schema, &table.table);
        let mut sql = if (*plan).operation == pg_sys::CmdType::CMD_UPDATE {
            let assignments: Vec<String> =
                scan.assignments.iter().map(|a| format!("{} = {}", sql::ident(&a.column), a.value)).collect();
            format!("UPDATE {target} SET {}", assignments.join(", "))
        } else {
            format!("DELETE FROM {target}")
        };
        let mut count = format!("SELECT count(*) FROM {target}");
        if !scan.filter.is_empty() {
            let condition = format!(" WHERE {}", scan.filter.join(" AND "));
            sql.push_str(&condition);
            count.push_str(&condition);
        }
        let own_rows = format!(
            "{count} {} rowid >= {LOCAL_ROWID_START}",
            if scan.filter.is_empty() { "WHERE" } else { "AND" }
        );
        (sql, count, own_rows)
    }
}

/// DuckLake (1.5.5) renumbers rows a transaction inserted when it updates them, so
/// that two can share a rowid, and a later DELETE or UPDATE of one also removes the
/// other: the transaction would silently lose rows.
const UPDATE_OF_OWN_ROWS: &str = "cannot UPDATE rows inserted by the same transaction: DuckLake renumbers them, \
     and a later change in the transaction could then remove other rows; commit first, or write the new values \
     in the INSERT";

#[pg_guard]
pub unsafe extern "C-unwind" fn begin_direct_modify(node: *mut pg_sys::ForeignScanState, eflags: std::ffi::c_int) {
    unsafe {
        let (sql, count, own_rows) = statement_sql(node);
        let mut state = DirectState { sql, changed: 0, reported: false };
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0 {
            let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
            // A prepared statement planned before the settings pinned the lake.
            let relation = PgRelation::from_pg((*(*node).resultRelInfo).ri_RelationDesc);
            if crate::scan::snapshot::reads_the_past(&TableOptions::of(relation.oid())).or_raise() {
                raise(LakeError::NotSupported(format!("cannot change \"{}\": {}", relation.name(), crate::modify::change::PINNED)));
            }
            let lake = lake_for((*plan).fs_server).or_raise();
            check_assignments(&lake, &ScanPlan::from_list((*plan).fdw_private)).or_raise();
            let conn = lake.connection().or_raise();
            let interrupt = &lake.instance.interrupt;
            if (*plan).operation == pg_sys::CmdType::CMD_UPDATE && lake.wrote() {
                let own: i64 =
                    crate::duck::cancel::interruptible(interrupt, || conn.query_row(&own_rows, [], |row| row.get(0)))
                        .or_raise();
                if own > 0 {
                    raise(LakeError::NotSupported(UPDATE_OF_OWN_ROWS.into()));
                }
            }
            state.changed = if in_subtransaction() {
                // Deferred like every write inside a savepoint, so rolling it back
                // undoes it; the rows it will change are counted now.
                let changed: i64 =
                    crate::duck::cancel::interruptible(interrupt, || conn.query_row(&count, [], |row| row.get(0))).or_raise();
                lake.write(state.sql.clone(), None).or_raise();
                changed as u64
            } else {
                lake.run_write(&state.sql, |conn, sql| conn.execute(sql, [])).or_raise() as u64
            };
        }
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state).cast();
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_direct_modify(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let state = &mut *((*node).fdw_state as *mut DirectState);
        if !state.reported {
            state.reported = true;
            (*(*node).ss.ps.state).es_processed += state.changed;
        }
        let slot = (*node).ss.ss_ScanTupleSlot;
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        slot
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn end_direct_modify(_node: *mut pg_sys::ForeignScanState) {}

#[pg_guard]
pub unsafe extern "C-unwind" fn explain_direct_modify(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    unsafe {
        if (*es).verbose {
            let sql = std::ffi::CString::new(statement_sql(node).0).expect("SQL without NUL");
            pg_sys::ExplainPropertyText(c"DuckDB SQL".as_ptr(), sql.as_ptr(), es);
        }
    }
}

/// An UPDATE's constant that its lake column refuses (NULL into NOT NULL, a value
/// the type cannot hold) is reported like a row-by-row write would, naming the
/// column, and before the statement runs: a failed DuckDB statement aborts the lake
/// transaction, which then has to be restarted and its writes replayed (see
/// `catalog::cache`).
fn check_assignments(lake: &Lake, scan: &ScanPlan) -> LakeResult<()> {
    if !scan.assignments.iter().any(|a| a.constant) {
        return Ok(());
    }
    let (_, table) = crate::scan::model::table_reference(pg_sys::Oid::from(scan.relid));
    let conn = lake.connection()?;
    for column in lake.table_columns(&table.schema, &table.table)? {
        let Some(value) = scan.assignments.iter().find(|a| a.constant && a.column == column.name).map(|a| &a.value)
        else {
            continue;
        };
        if value == "NULL" && !column.nullable {
            return Err(LakeError::NullValue { column: column.name, table: table.display() });
        }
        let refused: bool = conn.query_row(
            &format!("SELECT {value} IS NOT NULL AND TRY_CAST({value} AS {}) IS NULL", column.lake_type),
            [],
            |row| row.get(0),
        )?;
        if refused {
            return Err(column.refused(conn, &format!("SELECT CAST({value} AS {})", column.lake_type), []));
        }
    }
    Ok(())
}
