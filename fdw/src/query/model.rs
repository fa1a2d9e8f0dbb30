//! The pushed query as the plan keeps it: DuckDB SQL in which each lake table is a
//! slot, filled at execution (so time travel settings and foreign table options are
//! read when the query runs, as for a single-table scan), plus what each output is.

use ducklake_formats::run_query::parameter_variable;
use serde::{Deserialize, Serialize};

use crate::catalog::cache::Lake;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult};
use crate::options::TableOptions;
use crate::query::postgres_rows::{PostgresColumn, rows_source};
use crate::scan::model::{Bound, table_reference};
use crate::scan::snapshot::{at_clause, changes_source};

/// Marks a slot in `PushedQuery::sql`, a table or a parameter: the two bytes cannot
/// occur in the literals and lake column names the translator writes (it refuses
/// those containing them); its other identifiers are its own.
pub const SLOT_OPEN: char = '\u{1}';
pub const SLOT_CLOSE: char = '\u{2}';

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PushedOutput {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PushedQuery {
    pub server_oid: u32,
    /// DuckDB SQL with `SLOT_OPEN <n> SLOT_CLOSE` where lake table `tables[n]` is read,
    /// and `SLOT_OPEN $<n> SLOT_CLOSE` where parameter n (from 1) is.
    pub sql: String,
    /// The foreign tables read, by slot.
    pub tables: Vec<PushedTable>,
    pub outputs: Vec<PushedOutput>,
    /// Number of parameters (`custom_exprs`).
    pub params: usize,
    /// For the lake part of a query that does not run whole in DuckDB: why not (see
    /// `refusal`).
    #[serde(default)]
    pub not_whole: Option<String>,
}

/// A table a pushed query reads: a lake table, a change feed over the snapshot range
/// that the conditions of its query level bound (constants only), or the rows of a
/// small Postgres table.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PushedTable {
    pub relid: u32,
    /// Its alias in the DuckDB query (DuckDB's binder errors name it).
    pub alias: String,
    pub changes: Option<(Vec<Bound>, Vec<Bound>)>,
    /// For a small Postgres table read into the query: the columns it reads.
    #[serde(default)]
    pub postgres: Option<Vec<PostgresColumn>>,
}

/// The pushed query's SQL with its slots filled: as it runs, reading its parameters
/// from DuckDB variables (see `ducklake_formats::run_query`), and as EXPLAIN shows it,
/// with `$n` in their place.
pub struct Rendered {
    pub run: String,
    pub shown: String,
}

impl PushedQuery {
    pub fn slot(n: usize) -> String {
        format!("{SLOT_OPEN}{n}{SLOT_CLOSE}")
    }

    /// Where parameter `n` (from 1) is read.
    pub fn parameter_slot(n: usize) -> String {
        format!("{SLOT_OPEN}${n}{SLOT_CLOSE}")
    }

    /// The DuckDB query, each table read at the snapshot its options and the
    /// `ducklake.snapshot_id`/`ducklake.as_of` settings select, each change feed up to
    /// the lake's current snapshot at most. `lake` is absent for EXPLAIN without
    /// execution. Each table's SQL is made once for both forms: a small Postgres
    /// table's is its rows, read by a query.
    pub fn render(&self, lake: Option<&Lake>) -> LakeResult<Rendered> {
        let capacity = self.sql.len() + 64 * self.tables.len();
        let (mut run, mut shown) = (String::with_capacity(capacity), String::with_capacity(capacity));
        let mut rest = self.sql.as_str();
        while let Some(start) = rest.find(SLOT_OPEN) {
            run.push_str(&rest[..start]);
            shown.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find(SLOT_CLOSE).ok_or_else(|| bad_slot(after))?;
            let slot = &after[..end];
            match slot.strip_prefix('$') {
                Some(n) => {
                    let n = n.parse::<usize>().ok().filter(|n| (1..=self.params).contains(n)).ok_or_else(|| bad_slot(slot))?;
                    run.push_str(&format!("getvariable({})", sql::literal(&parameter_variable(n))));
                    shown.push_str(slot);
                }
                None => {
                    let table = slot.parse::<usize>().ok().and_then(|n| self.tables.get(n)).ok_or_else(|| bad_slot(slot))?;
                    let source = table_source(table, lake)?;
                    run.push_str(&source);
                    shown.push_str(&source);
                }
            }
            rest = &after[end + 1..];
        }
        run.push_str(rest);
        shown.push_str(rest);
        Ok(Rendered { run, shown })
    }
}

/// A slot the translator did not write: its SQL would read something else.
fn bad_slot(text: &str) -> LakeError {
    LakeError::DuckDb(format!("a pushed query has a malformed slot near {:?}", text.chars().take(20).collect::<String>()))
}

fn table_source(pushed: &PushedTable, lake: Option<&Lake>) -> LakeResult<String> {
    if let Some(columns) = &pushed.postgres {
        return rows_source(pgrx::pg_sys::Oid::from(pushed.relid), columns, lake.is_some());
    }
    let (alias, table): (String, TableOptions) = table_reference(pgrx::pg_sys::Oid::from(pushed.relid));
    if let Some((lower, upper)) = &pushed.changes {
        return changes_source(&alias, &table, lower, upper, &[], lake);
    }
    let qualified = sql::qualified(&alias, &table.schema, &table.table);
    // DuckDB takes no alias after an AT clause: time travel reads through a sub-select.
    Ok(match at_clause(&table, lake.is_some())? {
        at if at.is_empty() => qualified,
        at => format!("(SELECT * FROM {qualified}{at})"),
    })
}

impl PushedQuery {
    pub unsafe fn to_list(&self) -> *mut pgrx::pg_sys::List {
        let json = serde_json::to_string(self).expect("a PushedQuery serializes");
        let text = std::ffi::CString::new(json).expect("JSON without NUL");
        unsafe {
            let node = pgrx::pg_sys::makeString(pgrx::pg_sys::pstrdup(text.as_ptr()));
            pgrx::pg_sys::lappend(std::ptr::null_mut(), node.cast())
        }
    }

    pub unsafe fn from_list(list: *mut pgrx::pg_sys::List) -> PushedQuery {
        unsafe {
            let node = (*(*list).elements).ptr_value as *mut pgrx::pg_sys::String;
            let json = std::ffi::CStr::from_ptr((*node).sval).to_string_lossy();
            serde_json::from_str(&json).expect("a PushedQuery written by the planner hook")
        }
    }
}
