//! The scan's data model, shared by the planner callbacks (`plan`, `ordering`,
//! `aggregate`), the executor (`exec`, `cursor`, `snapshot`) and direct modification:
//! what the planner knows of a foreign table while planning (`RelPlan`) and what it
//! freezes into the plan (`ScanPlan`, serialized as text so cached plans can be
//! copied and executed any number of times).

use pgrx::pg_sys::{self, Index, Node, Oid};
use serde::{Deserialize, Serialize};

use crate::catalog::config::catalog_alias;
use crate::options::TableOptions;
use crate::scan::deparse::ColumnRef;
use crate::types::kind::{Kind, comparable_expression};

/// Where a scan reads from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The lake table (honouring time travel settings).
    Table,
    /// `ducklake_table_changes` of the lake table, over a snapshot range.
    Changes,
}

/// One bound of a change-feed snapshot range.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub enum BoundValue {
    Const(i64),
    /// Index into the plan's range parameters.
    Param(usize),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Bound {
    pub value: BoundValue,
    /// Adjustment that makes the bound inclusive: -1 for `<`, +1 for `>`, else 0.
    pub offset: i64,
}

/// How one output attribute of the scan tuple is produced.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum OutputSource {
    /// A column of the DuckDB result.
    Column(usize),
    /// avg() of integers or numerics, computed as Postgres does: numeric sum / count.
    Average { sum: usize, count: usize },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Output {
    pub slot_index: usize,
    pub type_oid: u32,
    pub typmod: i32,
    pub name: String,
    pub source: OutputSource,
}

/// Everything the executor needs, fixed at plan time.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ScanPlan {
    /// The foreign table (also for aggregate scans, whose scanrelid is 0).
    pub relid: u32,
    pub source: Source,
    /// DuckDB select-list expressions.
    pub select: Vec<String>,
    pub filter: Vec<String>,
    pub group_by: Vec<String>,
    pub order_by: Vec<String>,
    pub limit: Option<i64>,
    pub outputs: Vec<Output>,
    /// Select position of DuckLake's rowid, returned in the ctid (for UPDATE/DELETE).
    #[serde(default)]
    pub rowid_column: Option<usize>,
    /// Number of `fdw_exprs` bound as `$1..$n` in the SQL; the rest are range parameters.
    pub sql_params: usize,
    pub lower: Vec<Bound>,
    pub upper: Vec<Bound>,
    /// The new values of a direct UPDATE (see modify/direct.rs).
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    /// Why the query this scan belongs to does not run whole in DuckDB (see `refusal`).
    #[serde(default)]
    pub not_whole: Option<String>,
}

/// `"lake column" = <DuckDB expression>` in a direct UPDATE.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Assignment {
    pub column: String,
    pub value: String,
    /// A literal (checked against the lake column before the UPDATE runs), rather
    /// than an expression over the row.
    pub constant: bool,
}

impl ScanPlan {
    pub unsafe fn to_list(&self) -> *mut pg_sys::List {
        let json = serde_json::to_string(self).expect("a ScanPlan serializes");
        let text = std::ffi::CString::new(json).expect("JSON without NUL");
        unsafe {
            let node = pg_sys::makeString(pg_sys::pstrdup(text.as_ptr()));
            pg_sys::lappend(std::ptr::null_mut(), node.cast())
        }
    }

    pub unsafe fn from_list(list: *mut pg_sys::List) -> ScanPlan {
        unsafe {
            let node = (*(*list).elements).ptr_value as *mut pg_sys::String;
            let json = std::ffi::CStr::from_ptr((*node).sval).to_string_lossy();
            serde_json::from_str(&json).expect("a ScanPlan written by get_foreign_plan")
        }
    }

    /// `SELECT ... FROM <from> [WHERE ...] [GROUP BY ...] [ORDER BY ...] [LIMIT n]`.
    pub fn sql(&self, from: &str) -> String {
        let mut sql = format!(
            "SELECT {} FROM {from}",
            if self.select.is_empty() { "NULL".to_owned() } else { self.select.join(", ") }
        );
        if !self.filter.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.filter.join(" AND "));
        }
        if !self.group_by.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&self.group_by.join(", "));
        }
        if !self.order_by.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&self.order_by.join(", "));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }
}

/// A column of the foreign table.
#[derive(Clone, Debug)]
pub struct ColumnInfo {
    pub attno: i16,
    pub pg_name: String,
    pub lake_name: String,
    pub type_oid: Oid,
    pub typmod: i32,
}

/// Planner state of one foreign table, in `baserel->fdw_private` while planning.
pub struct RelPlan {
    pub relid: Oid,
    pub varno: Index,
    pub table: TableOptions,
    pub columns: Vec<Option<ColumnInfo>>,
    /// Conditions DuckDB evaluates (SQL), and the RestrictInfos they came from.
    pub remote_sql: Vec<String>,
    pub remote: Vec<*mut pg_sys::RestrictInfo>,
    /// Conditions Postgres evaluates.
    pub local: Vec<*mut pg_sys::RestrictInfo>,
    /// Parameters of `remote_sql`, bound as `$1..$n`.
    pub params: Vec<*mut pg_sys::Expr>,
    /// Change feeds: snapshot range bounds and their parameters.
    pub lower: Vec<Bound>,
    pub upper: Vec<Bound>,
    pub range_params: Vec<*mut pg_sys::Expr>,
}

impl RelPlan {
    pub fn column(&self, attno: i16) -> Option<&ColumnInfo> {
        self.columns.get(usize::try_from(attno - 1).ok()?)?.as_ref()
    }

    /// How conditions see a column: the value as Postgres reads it, in DuckDB.
    pub fn column_ref(&self, attno: i16) -> Option<ColumnRef> {
        let c = self.column(attno)?;
        Some(ColumnRef { expr: comparable_expression(&c.lake_name, c.type_oid, c.typmod) })
    }

    pub fn source(&self) -> Source {
        if self.table.changes { Source::Changes } else { Source::Table }
    }

    /// Projection of a column: DuckDB expression reading it as its Postgres type.
    pub fn projection(&self, attno: i16) -> String {
        let c = self.column(attno).expect("a column of the scanned relation");
        Kind::of(c.type_oid, c.typmod).duck_expression(&c.lake_name)
    }

}

pub unsafe fn strip_relabel(mut node: *mut Node) -> *mut Node {
    unsafe {
        while !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_RelabelType {
            node = (*(node as *mut pg_sys::RelabelType)).arg.cast();
        }
        node
    }
}

/// The planner state stored by `get_foreign_rel_size`.
pub unsafe fn rel_plan<'a>(rel: *mut pg_sys::RelOptInfo) -> Option<&'a RelPlan> {
    unsafe { ((*rel).fdw_private as *const RelPlan).as_ref() }
}

/// `fdw_exprs`: SQL parameters first, then change-feed range parameters.
pub unsafe fn params_list(plan: &RelPlan) -> *mut pg_sys::List {
    unsafe {
        let mut list: *mut pg_sys::List = std::ptr::null_mut();
        for expr in plan.params.iter().chain(plan.range_params.iter()) {
            list = pg_sys::lappend(list, (*expr).cast());
        }
        list
    }
}

/// `"catalog"."schema"."table"` of the scanned table.
pub fn table_reference(relid: Oid) -> (String, TableOptions) {
    // SAFETY: catalog lookup of an existing foreign table.
    let server_oid = unsafe { (*pg_sys::GetForeignTable(relid)).serverid };
    // SAFETY: as above.
    (catalog_alias(server_oid), unsafe { TableOptions::of(relid) })
}
