//! The relations behind a stream table: the result table, its definition (see
//! `definition`), and for DIFFERENTIAL ones the state table, the affected-groups work
//! table, the change buffer and the change-feed foreign table. Internal relations are
//! created by the extension's owner (nobody else may create anything in the internal
//! schemas), handed to the stream table's owner, whose refreshes use them, and
//! depend on the result table (dropped with it).

use super::statements::{Objects, Statements, state_from_source};
use crate::analysis::parse::LakeSource;
use crate::analysis::shape::Shape;
use crate::error::{IvmError, IvmResult};
use crate::privileges::as_extension_owner;
use crate::sql::{qualified, regclass};
use pgrx::pg_sys;
use pgrx::prelude::*;

pub const STATE_SCHEMA: &str = "pgtrickle_state";
pub const CHANGES_SCHEMA: &str = "pgtrickle_changes";

/// Names of the relations of the stream table whose result table is `result_relid`.
pub fn objects_for(result_relid: pg_sys::Oid, source: Option<&LakeSource>) -> Objects {
    let id = result_relid.to_u32();
    Objects {
        result: crate::sql::relation_name(result_relid),
        state: qualified(STATE_SCHEMA, &format!("state_{id}")),
        affected: qualified(STATE_SCHEMA, &format!("affected_{id}")),
        buffer: qualified(CHANGES_SCHEMA, &format!("changes_{id}")),
        feed: qualified(CHANGES_SCHEMA, &format!("feed_{id}")),
        source: source.map(|s| crate::sql::relation_name(s.relid)).unwrap_or_default(),
    }
}

fn run(sql: &str) -> IvmResult<()> {
    Spi::run(sql).map_err(|e| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{e}: {sql}")))
}

fn record_dependency(dependent: pg_sys::Oid, referenced: pg_sys::Oid, kind: pg_sys::DependencyType::Type) {
    let depender = pg_sys::ObjectAddress { classId: pg_sys::RelationRelationId, objectId: dependent, objectSubId: 0 };
    let target = pg_sys::ObjectAddress { classId: pg_sys::RelationRelationId, objectId: referenced, objectSubId: 0 };
    // SAFETY: both relations exist; recordDependencyOn inserts one pg_depend row.
    unsafe { pg_sys::recordDependencyOn(&depender, &target, kind) };
}

/// `ALTER TABLE name OWNER TO` the owner of `result_relid`.
fn hand_over(kind: &str, name: &str, result_relid: pg_sys::Oid) -> IvmResult<()> {
    let role: String = Spi::get_one_with_args(
        "SELECT pg_catalog.quote_ident(r.rolname::text) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_roles r ON r.oid = c.relowner WHERE c.oid = $1",
        &[result_relid.into()],
    )?
    .unwrap_or_default();
    run(&format!("ALTER {kind} {name} OWNER TO {role}"))
}

/// Create the state, work, buffer and feed relations of a DIFFERENTIAL stream table.
pub fn create_internals(result_relid: pg_sys::Oid, shape: &Shape, objects: &Objects) -> IvmResult<()> {
    as_extension_owner(|| {
        // WITH NO DATA: the query is analyzed, never run, by the extension's owner.
        run(&format!("CREATE TABLE {} AS {} WITH NO DATA", objects.state, state_from_source(shape, &objects.source, None)))?;
        // The result expressions are deparsed against the state table, so it comes first.
        let statements = Statements::new(shape, objects)?;
        run(&statements.state_index())?;
        run(&format!("CREATE UNLOGGED TABLE {} (LIKE {})", objects.affected, objects.state))?;
        if let Some(index) = statements.result_index() {
            run(&index)?;
        }
        for name in [&objects.state, &objects.affected] {
            record_dependency(regclass(name)?, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
            hand_over("TABLE", name, result_relid)?;
        }
        create_change_relations(result_relid, objects)
    })
}

/// The feed (a foreign table reading the source's change feed) and the buffer its
/// rows are fetched into, both with the source's current columns.
fn create_change_relations(result_relid: pg_sys::Oid, objects: &Objects) -> IvmResult<()> {
    let source = regclass(&objects.source)?;
    create_feed(source, &objects.feed)?;
    run(&format!(
        "CREATE TABLE {} (__pgt_snapshot_id bigint NOT NULL, __pgt_rowid bigint, __pgt_change text NOT NULL, \
         __pgt_weight integer NOT NULL, LIKE {})",
        objects.buffer, objects.source
    ))?;
    record_dependency(regclass(&objects.feed)?, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
    record_dependency(regclass(&objects.buffer)?, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
    hand_over("FOREIGN TABLE", &objects.feed, result_relid)?;
    hand_over("TABLE", &objects.buffer, result_relid)
}

/// The source's columns as the feed and buffer mirror them: name, type and column
/// options, in order.
const COLUMN_SIGNATURE: &str = "SELECT pg_catalog.array_agg(pg_catalog.format('%I %s %s', attname, \
       pg_catalog.format_type(atttypid, atttypmod), coalesce(attfdwoptions::text, '')) ORDER BY attnum)::text \
       FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
       AND attname NOT IN ('snapshot_id', 'rowid', 'change_type')";

/// Re-create the feed and buffer when the source's columns changed since they were
/// made (a column added, renamed or given another `column_name`), so the refresh
/// reads what the source now is.
pub fn refresh_change_relations(result_relid: pg_sys::Oid, objects: &Objects) -> IvmResult<()> {
    let source = regclass(&objects.source)?;
    let feed = regclass(&objects.feed)?;
    let signature = |oid: pg_sys::Oid| Spi::get_one_with_args::<String>(COLUMN_SIGNATURE, &[oid.into()]);
    if signature(source)? == signature(feed)? {
        return Ok(());
    }
    as_extension_owner(|| {
        run(&format!("DROP TABLE {}", objects.buffer))?;
        run(&format!("DROP FOREIGN TABLE {}", objects.feed))?;
        create_change_relations(result_relid, objects)
    })
}

/// Drop the internal relations (used when the defining query changes).
pub fn drop_internals(objects: &Objects) -> IvmResult<()> {
    as_extension_owner(|| {
        for name in [&objects.state, &objects.affected, &objects.buffer] {
            run(&format!("DROP TABLE IF EXISTS {name}"))?;
        }
        run(&format!("DROP FOREIGN TABLE IF EXISTS {}", objects.feed))
    })
}

/// A foreign table with `changes 'true'` over the same lake table as `source`, with the
/// same columns (and column options) plus snapshot_id, rowid and change_type. The lake
/// table is named explicitly: a source without a `table` option reads the lake table
/// of its own name, which the feed's name is not.
fn create_feed(source: pg_sys::Oid, feed: &str) -> IvmResult<()> {
    let reserved: Option<String> = Spi::get_one_with_args(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(attname), ', ') FROM pg_catalog.pg_attribute \
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
           AND (attname IN ('snapshot_id', 'rowid', 'change_type') OR attname LIKE '\\_\\_pgt\\_%')",
        &[source.into()],
    )?;
    if let Some(columns) = reserved {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
            format!("source column(s) {columns} collide with the change feed's own columns"),
        ));
    }
    // Postgres' format() quotes every identifier and option value.
    let ddl: String = Spi::get_one_with_args(
        r#"
        WITH opts(o) AS (SELECT pg_catalog.unnest(coalesce(ft.ftoptions, '{}')) FROM pg_catalog.pg_foreign_table ft
                          WHERE ft.ftrelid = $1)
        SELECT pg_catalog.format('CREATE FOREIGN TABLE %s (snapshot_id bigint, rowid bigint, change_type text%s) SERVER %I OPTIONS (%s)',
            $2,
            (SELECT coalesce(pg_catalog.string_agg(pg_catalog.format(', %I %s%s', a.attname,
                    pg_catalog.format_type(a.atttypid, a.atttypmod),
                    CASE WHEN a.attfdwoptions IS NULL THEN '' ELSE
                      (SELECT pg_catalog.format(' OPTIONS (%s)', pg_catalog.string_agg(pg_catalog.format('%I %L',
                              pg_catalog.split_part(x, '=', 1), pg_catalog.substr(x, pg_catalog.strpos(x, '=') + 1)), ', '))
                         FROM pg_catalog.unnest(a.attfdwoptions) x) END),
                    '' ORDER BY a.attnum), '')
               FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped),
            (SELECT s.srvname FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
              WHERE ft.ftrelid = $1),
            (SELECT pg_catalog.string_agg(pg_catalog.format('%I %L', pg_catalog.split_part(o, '=', 1),
                    pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1)), ', ')
               FROM (SELECT o FROM opts
                     UNION ALL SELECT 'changes=true'
                     UNION ALL SELECT 'table=' || c.relname FROM pg_catalog.pg_class c
                      WHERE c.oid = $1 AND NOT EXISTS (SELECT 1 FROM opts WHERE o LIKE 'table=%')) x))
        "#,
        &[source.into(), feed.into()],
    )?
    .unwrap_or_default();
    run(&ddl)
}
