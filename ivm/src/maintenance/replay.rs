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
//! inserted. A refresh fills the replay once into a work table laid out like the
//! table (its attribute numbers, dropped columns included, as the log is), which the
//! terms then read in the table's place, as they read a lake table's time-travel
//! mirror. A TRUNCATE since the frontier leaves nothing to replay: the refresh
//! rebuilds instead.
//!
//! Rows are equal when their columns are equal byte for byte: text-like columns by
//! their text under the "C" collation (and `character(n)` by its length too), others
//! by their type's binary send form, which settings such as TimeZone or
//! extra_float_digits do not change and which keeps `1.0` and `1.00` (or `0` and `-0`)
//! apart, as the type's own equality would not.
//! Each kept row is one of its equals, repeated its weight times. Only the columns the
//! query reads are replayed (the owner may be granted no others); the work table has
//! the others as integer columns, NULL (their own types might refuse NULL: a domain).

use crate::error::IvmResult;
use crate::sql::{ident, literal};
use pgrx::prelude::*;
use pgrx::pg_sys;

/// The column at attribute number `attno` of `relid`: its quoted name, and how rows
/// compare on it (see `key`). None where it is dropped or missing.
fn column(relid: pg_sys::Oid, attno: i16) -> IvmResult<Option<(String, Key)>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT pg_catalog.quote_ident(a.attname), \
                    CASE WHEN t.typcollation <> 0 OR t.typsend = 0 \
                           OR p.proname IN ('json_send', 'jsonb_send', 'xml_send', 'record_send', 'range_send', \
                                            'multirange_send', 'array_send') \
                         THEN NULL ELSE pg_catalog.format('%I.%I', n.nspname, p.proname) END, \
                    'pg_catalog.bpchar'::pg_catalog.regtype IN (a.atttypid, t.typbasetype) \
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
               LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.typsend \
               LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
              WHERE a.attrelid = $1 AND a.attnum = $2 AND NOT a.attisdropped",
            None,
            &[relid.into(), attno.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let name: String = row.get(1)?.unwrap_or_default();
        let key = match (row.get::<String>(2)?, row.get::<bool>(3)?.unwrap_or(false)) {
            (_, true) => Key::PaddedText,
            (Some(send), false) => Key::Send(send),
            (None, false) => Key::Text,
        };
        Ok(Some((name, key)))
    })
}

/// How rows compare on a column: byte for byte, never by settings or collations.
enum Key {
    /// The type's binary send form (not for types whose send form is text converted
    /// to the client's encoding: JSON, XML, arrays, records, ranges).
    Send(String),
    /// The text under the "C" collation.
    Text,
    /// `character(n)` text, whose cast to text drops its trailing spaces: the text
    /// and its length in bytes.
    PaddedText,
}

impl Key {
    fn sql(&self, value: &str) -> String {
        match self {
            Key::Send(function) => format!("{function}({value})"),
            Key::Text => format!("({value}::text) COLLATE pg_catalog.\"C\""),
            Key::PaddedText => format!("({value}::text) COLLATE pg_catalog.\"C\", pg_catalog.octet_length({value})"),
        }
    }
}

/// SQL filling work table `was` (empty) with table `source` as it was when the
/// frontier saw `seen`, replayed from its change log `log`; `read` are the attribute
/// numbers the query reads of it (columns of the same number and type in the table,
/// the log and the work table, which the log's capture and the query's dependencies
/// keep).
pub fn fill_sql(source: pg_sys::Oid, log: pg_sys::Oid, was: pg_sys::Oid, seen: &str, read: &[i16]) -> IvmResult<String> {
    let mut from_table = Vec::new();
    let mut from_log = Vec::new();
    let mut targets = Vec::new();
    let mut outputs = Vec::new();
    let mut keys = Vec::new();
    for &attno in read {
        let (Some((table_name, key)), Some((log_name, _)), Some((was_name, _))) =
            (column(source, attno)?, column(log, attno)?, column(was, attno)?)
        else {
            return Err(crate::error::IvmError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "column {attno} of {}, which the query reads, is missing from its change log or replay table",
                    crate::sql::relation_name(source)
                ),
            )
            .with_hint("Drop the stream table and create it again."));
        };
        let alias = ident(&format!("__pgt_c{attno}"));
        from_table.push(format!("{table_name} AS {alias}"));
        from_log.push(format!("{log_name} AS {alias}"));
        targets.push(was_name);
        outputs.push(format!("g.{alias}"));
        keys.push(key.sql(&format!("c.{alias}")));
    }
    let columns = |list: &[String]| list.iter().map(|c| format!("{c}, ")).collect::<String>();
    let partition = if keys.is_empty() { String::new() } else { format!("PARTITION BY {}", keys.join(", ")) };
    let unseen = format!("NOT pg_catalog.pg_visible_in_snapshot(__pgt_xid, {}::pg_catalog.pg_snapshot)", literal(seen));
    let replay = format!(
        "FROM (SELECT c.*, pg_catalog.sum(c.__pgt_w) OVER w AS __pgt_n, pg_catalog.row_number() OVER w AS __pgt_r \
               FROM (SELECT {table}1 AS __pgt_w FROM ONLY {source_name} \
                     UNION ALL SELECT {logged}CASE WHEN change_type = 'delete' THEN 1 ELSE -1 END FROM {log_name} \
                     WHERE change_type IN ('insert', 'delete') AND {unseen}) c \
               WINDOW w AS ({partition})) g, pg_catalog.generate_series(1, g.__pgt_n) \
         WHERE g.__pgt_r = 1",
        table = columns(&from_table),
        logged = columns(&from_log),
        source_name = crate::sql::relation_name(source),
        log_name = crate::sql::relation_name(log),
    );
    let was_name = crate::sql::relation_name(was);
    Ok(if targets.is_empty() {
        // No column read: as many rows of NULLs as the table had.
        format!("INSERT INTO {was_name} SELECT FROM (SELECT 1 {replay}) r")
    } else {
        format!("INSERT INTO {was_name} ({}) SELECT {} {replay}", targets.join(", "), outputs.join(", "))
    })
}
