//! The relations behind a stream table: the result table, and for DIFFERENTIAL ones the
//! state table, the affected-groups work table, the change buffer and the change-feed
//! foreign table. Internal relations depend on the result table (dropped with it); the
//! result table depends on its lake source (which then cannot be dropped under it).

use super::statements::{Objects, Statements, state_from_source};
use crate::analysis::shape::Shape;
use crate::analysis::parse::LakeSource;
use crate::error::{IvmError, IvmResult};
use crate::sql::qualified;
use pgrx::prelude::*;
use pgrx::pg_sys;

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

pub fn regclass(name: &str) -> IvmResult<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[name.into()])
        .ok()
        .flatten()
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation {name} does not exist")))
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

/// The result table depends on its lake sources: DROP FOREIGN TABLE needs CASCADE.
pub fn depend_on_sources(result_relid: pg_sys::Oid, sources: &[LakeSource]) {
    for source in sources {
        record_dependency(result_relid, source.relid, pg_sys::DependencyType::DEPENDENCY_NORMAL);
    }
}

/// Create the state, work, buffer and feed relations of a DIFFERENTIAL stream table.
pub fn create_internals(result_relid: pg_sys::Oid, shape: &Shape, objects: &Objects) -> IvmResult<()> {
    run(&format!("CREATE TABLE {} AS {} WITH NO DATA", objects.state, state_from_source(shape, &objects.source, None)))?;
    // The result expressions are deparsed against the state table, so it comes first.
    let statements = Statements::new(shape, objects)?;
    run(&statements.state_index())?;
    run(&format!("CREATE UNLOGGED TABLE {} (LIKE {})", objects.affected, objects.state))?;
    if let Some(index) = statements.result_index() {
        run(&index)?;
    }
    let source = regclass(&objects.source)?;
    create_feed(source, &objects.feed)?;
    run(&format!(
        "CREATE TABLE {} (__pgt_snapshot_id bigint NOT NULL, __pgt_rowid bigint, __pgt_change text NOT NULL, \
         __pgt_weight integer NOT NULL, LIKE {})",
        objects.buffer, objects.source
    ))?;
    for name in [&objects.state, &objects.affected, &objects.feed, &objects.buffer] {
        record_dependency(regclass(name)?, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
    }
    Ok(())
}

/// Drop the internal relations (used when the defining query changes).
pub fn drop_internals(objects: &Objects) -> IvmResult<()> {
    for name in [&objects.state, &objects.affected, &objects.buffer] {
        run(&format!("DROP TABLE IF EXISTS {name}"))?;
    }
    run(&format!("DROP FOREIGN TABLE IF EXISTS {}", objects.feed))
}

/// A foreign table with `changes 'true'` over the same lake table as `source`, with the
/// same columns (and column options) plus snapshot_id, rowid and change_type.
fn create_feed(source: pg_sys::Oid, feed: &str) -> IvmResult<()> {
    let reserved: Option<String> = Spi::get_one_with_args(
        "SELECT string_agg(quote_ident(attname), ', ') FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 \
         AND NOT attisdropped AND (attname IN ('snapshot_id', 'rowid', 'change_type') OR attname LIKE '\\_\\_pgt\\_%')",
        &[source.into()],
    )
    ?;
    if let Some(columns) = reserved {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
            format!("source column(s) {columns} collide with the change feed's own columns"),
        ));
    }
    // Postgres' format() quotes every identifier and option value.
    let ddl: String = Spi::get_one_with_args(
        r#"
        WITH opts(o) AS (SELECT unnest(coalesce(ft.ftoptions, '{}')) FROM pg_foreign_table ft WHERE ft.ftrelid = $1)
        SELECT format('CREATE FOREIGN TABLE %s (snapshot_id bigint, rowid bigint, change_type text%s) SERVER %I OPTIONS (%s)',
            $2,
            (SELECT coalesce(string_agg(format(', %I %s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                    CASE WHEN a.attfdwoptions IS NULL THEN '' ELSE
                      (SELECT format(' OPTIONS (%s)', string_agg(format('%I %L', split_part(x, '=', 1),
                              substr(x, strpos(x, '=') + 1)), ', ')) FROM unnest(a.attfdwoptions) x) END),
                    '' ORDER BY a.attnum), '')
               FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped),
            (SELECT s.srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = $1),
            (SELECT string_agg(format('%I %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), ', ')
               FROM (SELECT o FROM opts UNION ALL SELECT 'changes=true') x))
        "#,
        &[source.into(), feed.into()],
    )
    ?
    .unwrap_or_default();
    run(&ddl)
}

