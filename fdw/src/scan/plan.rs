//! Planner callbacks.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::duck::sql;
use crate::catalog::config::catalog_alias;
use crate::options::{TableOptions, lake_column_name};
use crate::types::kind::Kind;

/// Rows assumed for a lake table until statistics are read from the lake.
const DEFAULT_ROWS: f64 = 1000.0;

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_rel_size(
    _root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
) {
    unsafe {
        (*baserel).rows = DEFAULT_ROWS;
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
) {
    unsafe {
        let rows = (*baserel).rows;
        let startup_cost = 10.0;
        let total_cost = startup_cost + rows * 0.01;
        let path = pg_sys::create_foreignscan_path(
            root,
            baserel,
            std::ptr::null_mut(),
            rows,
            #[cfg(feature = "pg18")]
            0,
            startup_cost,
            total_cost,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pg_sys::add_path(baserel, path.cast());
    }
}

/// What the executor needs, stored in `ForeignScan.fdw_private` as
/// `(String sql, IntList attnos)`.
pub struct ScanPlan {
    pub sql: String,
    pub attnos: Vec<i16>,
}

impl ScanPlan {
    unsafe fn to_list(&self) -> *mut pg_sys::List {
        unsafe {
            let sql = pg_sys::makeString(pg_sys::pstrdup(
                std::ffi::CString::new(self.sql.as_str()).expect("SQL without NUL").as_ptr(),
            ));
            let mut attnos: *mut pg_sys::List = std::ptr::null_mut();
            for attno in &self.attnos {
                attnos = pg_sys::lappend_int(attnos, *attno as i32);
            }
            let list = pg_sys::lappend(std::ptr::null_mut(), sql.cast());
            pg_sys::lappend(list, attnos.cast())
        }
    }

    pub unsafe fn from_list(list: *mut pg_sys::List) -> ScanPlan {
        unsafe {
            let sql_node = (*(*list).elements.add(0)).ptr_value as *mut pg_sys::String;
            let sql = std::ffi::CStr::from_ptr((*sql_node).sval).to_string_lossy().into_owned();
            let attno_list = (*(*list).elements.add(1)).ptr_value as *mut pg_sys::List;
            let attnos = if attno_list.is_null() {
                Vec::new()
            } else {
                (0..(*attno_list).length as usize)
                    .map(|i| (*(*attno_list).elements.add(i)).int_value as i16)
                    .collect()
            };
            ScanPlan { sql, attnos }
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    _root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    foreigntableid: pg_sys::Oid,
    _best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    unsafe {
        // Every qual is checked locally; none is sent to DuckDB yet.
        let local_quals = pg_sys::extract_actual_clauses(scan_clauses, false);
        let relation = PgRelation::open(foreigntableid);
        let attnos = needed_attributes(baserel, local_quals, &relation);
        let plan = ScanPlan { sql: select_sql(&relation, &attnos), attnos };
        pg_sys::make_foreignscan(
            tlist,
            local_quals,
            (*baserel).relid,
            std::ptr::null_mut(),
            plan.to_list(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

/// Attribute numbers the scan must fill: those in the target list and in the quals
/// evaluated locally. A whole-row reference needs every column.
unsafe fn needed_attributes(
    baserel: *mut pg_sys::RelOptInfo,
    local_quals: *mut pg_sys::List,
    relation: &PgRelation,
) -> Vec<i16> {
    unsafe {
        let relid = (*baserel).relid;
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos((*(*baserel).reltarget).exprs.cast(), relid, &mut attrs);
        pg_sys::pull_varattnos(local_quals.cast(), relid, &mut attrs);
        let offset = pg_sys::FirstLowInvalidHeapAttributeNumber;
        let mut attnos = Vec::new();
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(attrs, member);
            if member < 0 {
                break;
            }
            let attno = member + offset;
            if attno == 0 {
                return relation
                    .tuple_desc()
                    .iter()
                    .filter(|a| !a.is_dropped())
                    .map(|a| a.attnum)
                    .collect();
            }
            if attno > 0 {
                attnos.push(attno as i16);
            }
        }
        attnos
    }
}

/// `SELECT <casted columns> FROM "catalog"."schema"."table"`.
unsafe fn select_sql(relation: &PgRelation, attnos: &[i16]) -> String {
    unsafe {
        let relid = relation.oid();
        let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
        let alias = catalog_alias(server_oid);
        let table = TableOptions::of(relid);
        let tupdesc = relation.tuple_desc();
        let exprs: Vec<String> = attnos
            .iter()
            .map(|attno| {
                let attr = tupdesc.get((*attno - 1) as usize).expect("attribute of the scanned relation");
                let column = lake_column_name(relid, *attno, attr.name());
                Kind::of(attr.type_oid().value(), attr.type_mod()).duck_expression(&column)
            })
            .collect();
        let projection = if exprs.is_empty() { "NULL".to_owned() } else { exprs.join(", ") };
        format!("SELECT {projection} FROM {}", sql::qualified(&alias, &table.schema, &table.table))
    }
}
