//! The changes of a Postgres table that a differential stream table reads. Statement
//! triggers with transition tables append each statement's deleted and inserted rows
//! to a change log, `pgtrickle_changes.log_<stream table oid>_<source oid>`, tagged
//! with the writing transaction's id (`xid8`); TRUNCATE appends its transaction's id
//! to a table of its own, `pgtrickle_changes.truncated_<...>` (a row of the log would
//! need values for its columns, which a NOT NULL domain refuses to leave NULL).
//! A refresh reads the rows of transactions its frontier's snapshot (`pg_snapshot`)
//! did not see, all in one read snapshot that also reads the tables themselves, and
//! then deletes the rows its new frontier has seen.
//!
//! The log mirrors the table's attribute numbers, dropped columns included, so the
//! defining query's Vars address it as they address the table (see `analysis::rows`).
//! The capture function matches columns by attribute number, type and typmod at each
//! statement (never the log's own columns), so a column added to, dropped from or
//! retyped in the table later (one the query does not read: the view keeps those)
//! does not break writes to it.
//!
//! Each stream table has its own log and triggers: nothing is shared, and dropping
//! the stream table drops them (they depend on its result table).

use crate::analysis::parse::PostgresSource;
use crate::error::{IvmError, IvmResult};
use crate::sql::{ident, qualified};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::schemas::CHANGES_SCHEMA;

/// The change log of `source` for the stream table whose result table is `result_relid`.
pub fn log_name(result_relid: pg_sys::Oid, source: pg_sys::Oid) -> String {
    qualified(CHANGES_SCHEMA, &format!("log_{}_{}", result_relid.to_u32(), source.to_u32()))
}

/// The transactions that truncated `source` (see the module's comment), named after
/// its log: `log_<r>_<s>` → `truncated_<r>_<s>`.
pub fn truncations_of(log: &str) -> String {
    log.replacen("log_", "truncated_", 1)
}

/// That table of truncations, unless the stream table was made before it existed.
fn truncations_table(log: &str) -> IvmResult<Option<String>> {
    let name = truncations_of(log);
    Ok(crate::sql::try_regclass(&name)?.map(|_| name))
}

/// SQL: whether a transaction satisfying `condition` (on `__pgt_xid`) truncated the
/// source of `log`, by its table of truncations or, for a stream table made before
/// that table existed (whose capture function is older), a `truncate` row of the log.
pub fn truncated_sql(log: &str, condition: &str) -> IvmResult<String> {
    let in_log = format!("EXISTS (SELECT FROM {log} WHERE ({condition}) AND change_type = 'truncate')");
    Ok(match truncations_table(log)? {
        Some(table) => format!("({in_log} OR EXISTS (SELECT FROM {table} WHERE {condition}))"),
        None => in_log,
    })
}

fn function_name(result_relid: pg_sys::Oid, source: pg_sys::Oid) -> String {
    qualified(CHANGES_SCHEMA, &format!("capture_{}_{}", result_relid.to_u32(), source.to_u32()))
}

fn trigger_name(result_relid: pg_sys::Oid, event: &str) -> String {
    format!("pgtrickle_{}_{event}", result_relid.to_u32())
}

/// Whether the changes of `source` can be captured for the current user: a table
/// outside any partition or inheritance hierarchy (a statement trigger does not see
/// writes made through another table of one), on which the user may create triggers.
pub fn check_capturable(source: &PostgresSource) -> IvmResult<()> {
    let name = crate::sql::relation_name(source.relid);
    if in_hierarchy(source.relid)? {
        return Err(IvmError::unsupported(format!(
            "reading table {name}, which is part of a partition or inheritance hierarchy (its changes cannot be captured)"
        )));
    }
    let reserved: Option<String> = Spi::get_one_with_args(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(attname), ', ') FROM pg_catalog.pg_attribute \
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND (attname IN ('change_type') OR attname LIKE '\\_\\_pgt\\_%')",
        &[source.relid.into()],
    )?;
    if let Some(columns) = reserved {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
            format!("column(s) {columns} of table {name} collide with the change log's own columns"),
        ));
    }
    let allowed = Spi::get_one_with_args::<bool>("SELECT pg_catalog.has_table_privilege($1, 'TRIGGER')", &[source.relid.into()])?
        .unwrap_or(false);
    if allowed {
        return Ok(());
    }
    Err(IvmError::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied to capture the changes of table {}: a differential stream table over it needs the TRIGGER privilege on it",
            name
        ),
    )
    .with_hint("Grant TRIGGER on the table, or use refresh_mode => 'FULL'."))
}

fn run(sql: &str) -> IvmResult<()> {
    Spi::run(sql).map_err(|e| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{e}: {sql}")))
}

/// The log, its table of truncations, the capture function and the triggers for
/// `source` (run as the extension's owner). Returns the two tables' names, the
/// function's and the triggers' oids.
pub fn create_capture(
    result_relid: pg_sys::Oid,
    source: &PostgresSource,
) -> IvmResult<([String; 2], pg_sys::Oid, Vec<pg_sys::Oid>)> {
    let log = log_name(result_relid, source.relid);
    create_laid_out_like(&log, source.relid, "TABLE", "__pgt_xid pg_catalog.xid8 NOT NULL, change_type text NOT NULL", None)?;
    let truncations = truncations_of(&log);
    run(&format!("CREATE TABLE {truncations} (__pgt_xid pg_catalog.xid8 NOT NULL)"))?;
    let function = function_name(result_relid, source.relid);
    let log_literal = crate::sql::literal(&log);
    // Columns by attribute number, of the same type in the table and in the log.
    run(&format!(
        r#"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS $capture$
        DECLARE
          names text;
          values_ text;
          reader oid;
        BEGIN
          -- Rows the stream table's owner may no longer read (its privilege revoked,
          -- row-level security enabled since) are not copied into its log, which it
          -- reads: the change counts as a truncation, which makes the next refresh
          -- (once it may read the table again) a rebuild. Nor are columns it may not
          -- read (left NULL: a query that read them could not be refreshed).
          SELECT c.relowner INTO reader FROM pg_class c WHERE c.oid = {log_literal}::regclass;
          IF TG_OP = 'TRUNCATE' OR NOT has_any_column_privilege(reader, TG_RELID, 'SELECT')
             OR pgtrickle.row_security_applies(TG_RELID, reader) THEN
            INSERT INTO {truncations} (__pgt_xid) VALUES (pg_current_xact_id());
            RETURN NULL;
          END IF;
          SELECT coalesce(string_agg(quote_ident(l.attname) || ', ', '' ORDER BY l.attnum), ''),
                 coalesce(string_agg('r.' || quote_ident(a.attname) || ', ', '' ORDER BY l.attnum), '')
            INTO names, values_
            FROM pg_attribute a
            JOIN pg_attribute l ON l.attrelid = {log_literal}::regclass AND l.attnum = a.attnum
                               AND NOT l.attisdropped AND l.atttypid = a.atttypid AND l.atttypmod = a.atttypmod
                               AND l.attname NOT IN ('__pgt_xid', 'change_type')
           WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
             AND has_column_privilege(reader, TG_RELID, a.attnum, 'SELECT');
          IF TG_OP IN ('UPDATE', 'DELETE') THEN
            EXECUTE format('INSERT INTO %s (%s__pgt_xid, change_type) SELECT %spg_current_xact_id(), ''delete'' FROM __pgt_old r',
                           {log_literal}, names, values_);
          END IF;
          IF TG_OP IN ('UPDATE', 'INSERT') THEN
            EXECUTE format('INSERT INTO %s (%s__pgt_xid, change_type) SELECT %spg_current_xact_id(), ''insert'' FROM __pgt_new r',
                           {log_literal}, names, values_);
          END IF;
          RETURN NULL;
        END
        $capture$"#
    ))?;
    let table = crate::sql::relation_name(source.relid);
    let mut triggers = Vec::new();
    for (event, referencing) in [
        ("insert", "REFERENCING NEW TABLE AS __pgt_new"),
        ("update", "REFERENCING OLD TABLE AS __pgt_old NEW TABLE AS __pgt_new"),
        ("delete", "REFERENCING OLD TABLE AS __pgt_old"),
        ("truncate", ""),
    ] {
        let name = trigger_name(result_relid, event);
        run(&format!(
            "CREATE TRIGGER {} AFTER {} ON {table} {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
            ident(&name),
            event.to_uppercase()
        ))?;
        let oid = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT oid FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
            &[source.relid.into(), name.into()],
        )?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "a capture trigger just created is missing"))?;
        triggers.push(oid);
    }
    let function_oid = regprocedure(&format!("{function}()"))?;
    Ok(([log, truncations], function_oid, triggers))
}

/// The work table a refresh replays `source` as it was into (see `replay`).
pub fn was_name(result_relid: pg_sys::Oid, source: pg_sys::Oid) -> String {
    qualified(CHANGES_SCHEMA, &format!("was_{}_{}", result_relid.to_u32(), source.to_u32()))
}

/// Create work table `name` for `source` (run as the extension's owner), unlogged: it
/// holds one refresh's replay of the columns `read`; the others are integer columns,
/// NULL there, which their own types might refuse (a NOT NULL domain).
pub fn create_was(name: &str, source: pg_sys::Oid, read: &[i16]) -> IvmResult<()> {
    create_laid_out_like(name, source, "UNLOGGED TABLE", "", Some(read))
}

/// Create `kind` `name` with the columns of table `source` at its attribute numbers
/// (a dropped column of it is dropped here too; one not in `typed`, when given, is an
/// integer column), then `extra` columns.
fn create_laid_out_like(name: &str, source: pg_sys::Oid, kind: &str, extra: &str, typed: Option<&[i16]>) -> IvmResult<()> {
    let typed: Option<Vec<i32>> = typed.map(|t| t.iter().map(|a| *a as i32).collect());
    let columns: String = Spi::get_one_with_args(
        "SELECT coalesce(pg_catalog.string_agg(CASE WHEN a.attisdropped \
                THEN pg_catalog.format('%I integer, ', '__pgt_dropped_' || a.attnum) \
                WHEN $2::int4[] IS NOT NULL AND NOT a.attnum = ANY ($2::int4[]) \
                THEN pg_catalog.format('%I integer, ', a.attname) \
                ELSE pg_catalog.format('%I %s%s, ', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                     CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
                          THEN ' COLLATE ' || a.attcollation::pg_catalog.regcollation::text ELSE '' END) END, \
                '' ORDER BY a.attnum), '') \
           FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
          WHERE a.attrelid = $1 AND a.attnum > 0",
        &[source.into(), typed.into()],
    )?
    .unwrap_or_default();
    let columns = format!("{columns}{extra}");
    run(&format!("CREATE {kind} {name} ({})", columns.trim_end().trim_end_matches(',')))?;
    drop_placeholders("TABLE", name, source)
}

/// Drop the placeholder columns `__pgt_dropped_<n>` of relation `name` (an `ALTER`
/// `kind`), made where `source` has dropped columns, so that both have them dropped at
/// the same attribute numbers.
pub(super) fn drop_placeholders(kind: &str, name: &str, source: pg_sys::Oid) -> IvmResult<()> {
    let dropped: Option<String> = Spi::get_one_with_args(
        "SELECT pg_catalog.string_agg(pg_catalog.format('DROP COLUMN %I', '__pgt_dropped_' || attnum), ', ') \
         FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND attisdropped",
        &[source.into()],
    )?;
    if let Some(drops) = dropped {
        run(&format!("ALTER {kind} {name} {drops}"))?;
    }
    Ok(())
}

fn regprocedure(signature: &str) -> IvmResult<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regprocedure($1)::oid", &[signature.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, format!("function {signature} does not exist")))
}

/// Whether table `relid` is a partition, has children or inherits from another table.
fn in_hierarchy(relid: pg_sys::Oid) -> IvmResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT c.relispartition OR c.relhassubclass OR EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) \
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[relid.into()],
    )?
    .unwrap_or(false))
}

/// Refuse a source that joined a partition or inheritance hierarchy after the stream
/// table was made: writes through the other tables would not be captured.
pub fn still_capturable(source: &PostgresSource) -> IvmResult<()> {
    if in_hierarchy(source.relid)? {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "table {} is now part of a partition or inheritance hierarchy, whose changes cannot be captured",
                crate::sql::relation_name(source.relid)
            ),
        )
        .with_hint("Detach it, or recreate the stream table with refresh_mode => 'FULL'."));
    }
    Ok(())
}

/// Whether the log (or its truncations) holds rows of the current transaction:
/// changes a refresh in this transaction would count now and, the transaction not
/// being visible in its own snapshot, again once it commits.
pub fn written_by_this_transaction(log: &str) -> IvmResult<bool> {
    let this = "__pgt_xid = pg_catalog.pg_current_xact_id_if_assigned()";
    Ok(Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT FROM {log} WHERE {this}) OR {}", truncated_sql(log, this)?))?
        .unwrap_or(false))
}

/// Delete the rows of the log and its truncations that `seen` (a frontier's
/// `pg_snapshot`) has seen.
pub fn forget_seen(log: &str, seen: &str) -> IvmResult<()> {
    for table in std::iter::once(log.to_owned()).chain(truncations_table(log)?) {
        Spi::run_with_args(
            &format!("DELETE FROM {table} WHERE pg_catalog.pg_visible_in_snapshot(__pgt_xid, $1::pg_catalog.pg_snapshot)"),
            &[seen.into()],
        )?;
    }
    Ok(())
}
