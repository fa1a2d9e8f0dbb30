//! A Postgres table as it was at the frontier, for the terms that read a source as it
//! was (a source after a term's own in the telescoping sum, a subquery expression's
//! value before the change, an outer join's match before it, an aggregating
//! sub-select's groups before it). A lake table travels in time; a Postgres table is
//! replayed from its change log (see `maintenance::capture`):
//!
//!   as it was = as it is now + the rows deleted since − the rows inserted since
//!
//! as Z-sets (weights), "since" meaning by transactions the frontier's `pg_snapshot`
//! did not see, all read in the refresh's one read snapshot, which sees the log rows
//! of exactly the transactions it sees in the table. A row inserted and deleted again
//! since the frontier cancels out; an update is its old row deleted and its new one
//! inserted. Rows are equal when their columns print the same (`::text`), not by the
//! types' equality, which would merge `1.0` with `1.00` or `0` with `-0` (any type
//! prints); each kept row is one of its equals, repeated its weight times. A TRUNCATE
//! since the frontier leaves nothing to replay: the refresh rebuilds instead.
//!
//! Columns the log does not have (added to the table after the stream table was made,
//! which the query cannot read) are NULL, as are dropped ones, so the replay has the
//! table's attribute numbers and every Var of the query stays valid.

use crate::error::{IvmError, IvmResult};
use crate::sql::{ident, literal};
use pgrx::pg_sys;
use pgrx::{PgList, PgRelation};
use std::ffi::CStr;

/// A column of a relation: its name and type (None where dropped).
struct Column {
    name: String,
    type_oid: pg_sys::Oid,
    typmod: i32,
}

unsafe fn columns_of(relid: pg_sys::Oid) -> Vec<Option<Column>> {
    unsafe {
        let relation = PgRelation::open(relid);
        let descriptor = relation.tuple_desc();
        descriptor
            .iter()
            .map(|a| {
                (!a.attisdropped).then(|| Column {
                    name: CStr::from_ptr(a.attname.data.as_ptr()).to_string_lossy().into_owned(),
                    type_oid: a.atttypid,
                    typmod: a.atttypmod,
                })
            })
            .collect()
    }
}

unsafe fn type_name(column: &Column) -> String {
    unsafe { CStr::from_ptr(pg_sys::format_type_with_typemod(column.type_oid, column.typmod)).to_string_lossy().into_owned() }
}

/// SQL for table `source` as it was when the frontier saw `seen`, from its change log
/// `log`: a SELECT of the table's columns, by attribute number.
pub fn replay_sql(source: pg_sys::Oid, log: pg_sys::Oid, seen: &str) -> String {
    // SAFETY: catalog reads of a table and its log, which the refresh locks.
    unsafe {
        let table = columns_of(source);
        let logged = columns_of(log);
        let mut shared = Vec::new();
        let mut outputs = Vec::new();
        for (i, column) in table.iter().enumerate() {
            let in_log = column.as_ref().zip(logged.get(i).and_then(Option::as_ref)).filter(|(t, l)| {
                t.name == l.name && t.type_oid == l.type_oid && t.typmod == l.typmod
            });
            match (column, in_log) {
                (Some(c), Some(_)) => {
                    shared.push(ident(&c.name));
                    outputs.push(format!("g.{0} AS {0}", ident(&c.name)));
                }
                (Some(c), None) => outputs.push(format!("NULL::{} AS {}", type_name(c), ident(&c.name))),
                (None, _) => outputs.push(format!("NULL::integer AS {}", ident(&format!("__pgt_dropped_{}", i + 1)))),
            }
        }
        let columns: String = shared.iter().map(|c| format!("{c}, ")).collect();
        let partition: Vec<String> = shared.iter().map(|c| format!("c.{c}::text")).collect();
        let partition = if partition.is_empty() { String::new() } else { format!("PARTITION BY {}", partition.join(", ")) };
        let unseen = format!("NOT pg_catalog.pg_visible_in_snapshot(__pgt_xid, {}::pg_catalog.pg_snapshot)", literal(seen));
        format!(
            "SELECT {outputs} FROM (\
               SELECT c.*, pg_catalog.sum(c.__pgt_w) OVER w AS __pgt_n, pg_catalog.row_number() OVER w AS __pgt_r \
               FROM (SELECT {columns}1 AS __pgt_w FROM ONLY {table_name} \
                     UNION ALL SELECT {columns}CASE WHEN change_type = 'delete' THEN 1 ELSE -1 END FROM {log_name} \
                     WHERE change_type IN ('insert', 'delete') AND {unseen}) c \
               WINDOW w AS ({partition})) g, pg_catalog.generate_series(1, g.__pgt_n) \
             WHERE g.__pgt_r = 1",
            outputs = outputs.join(", "),
            table_name = crate::sql::relation_name(source),
            log_name = crate::sql::relation_name(log),
        )
    }
}

/// Make range-table entry `rte`, which reads Postgres table `source`, read it as it
/// was (see `replay_sql`): a sub-select with the table's column names.
pub unsafe fn read_replayed(rte: *mut pg_sys::RangeTblEntry, source: pg_sys::Oid, log: pg_sys::Oid, seen: &str) -> IvmResult<()> {
    unsafe {
        let query = super::parse::analyze(&replay_sql(source, log, seen))?;
        let names: Vec<String> = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList)
            .iter_ptr()
            .map(|t| CStr::from_ptr((*t).resname).to_string_lossy().into_owned())
            .collect();
        let width = PgList::<pg_sys::Node>::from_pg((*(*rte).eref).colnames).len();
        if names.len() != width {
            return Err(IvmError::invalid(format!(
                "table {} changed its columns during the refresh",
                crate::sql::relation_name(source)
            )));
        }
        let refname = CStr::from_ptr((*(*rte).eref).aliasname).to_string_lossy().into_owned();
        (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
        (*rte).subquery = query;
        (*rte).relid = pg_sys::InvalidOid;
        (*rte).relkind = 0;
        (*rte).inh = false;
        (*rte).tablesample = std::ptr::null_mut();
        #[cfg(not(feature = "pg15"))]
        {
            (*rte).perminfoindex = 0;
        }
        (*rte).eref = super::sublinks::alias(&refname, &names);
        Ok(())
    }
}
