//! The relations behind a stream table: the result table, its definition (see
//! `definition`), and for DIFFERENTIAL ones the state table, the affected-groups work
//! table, the change buffer, a change-feed foreign table per lake source and a change
//! log and replay work table per Postgres source. Internal
//! relations are created by the extension's owner (nobody else may create anything in
//! the internal schemas), handed to the stream table's owner, whose refreshes use
//! them, and depend on the result table (dropped with it).

use super::capture::{create_capture, create_was, drop_placeholders, log_name, was_name};
use super::statements::{Objects, Statements, state_from_source};
use crate::analysis::parse::{LakeSource, PostgresSource};
use crate::analysis::shape::Shape;
use crate::error::{IvmError, IvmResult};
use crate::privileges::as_extension_owner;
use crate::sql::{qualified, regclass};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::schemas::{CHANGES_SCHEMA, STATE_SCHEMA};

/// Names of the relations of the stream table whose result table is `result_relid`,
/// reading lake `sources` and (differentially) Postgres tables `postgres`.
pub fn objects_for(result_relid: pg_sys::Oid, sources: &[LakeSource], postgres: &[PostgresSource]) -> Objects {
    let id = result_relid.to_u32();
    Objects {
        result: crate::sql::relation_name(result_relid),
        state: qualified(STATE_SCHEMA, &format!("state_{id}")),
        affected: qualified(STATE_SCHEMA, &format!("affected_{id}")),
        buffer: qualified(CHANGES_SCHEMA, &format!("changes_{id}")),
        feeds: sources
            .iter()
            .map(|s| (s.relid, qualified(CHANGES_SCHEMA, &format!("feed_{id}_{}", s.relid.to_u32()))))
            .collect(),
        olds: sources
            .iter()
            .map(|s| (s.relid, qualified(CHANGES_SCHEMA, &format!("old_{id}_{}", s.relid.to_u32()))))
            .collect(),
        logs: postgres.iter().map(|s| (s.relid, log_name(result_relid, s.relid))).collect(),
        was: postgres.iter().map(|s| (s.relid, was_name(result_relid, s.relid))).collect(),
    }
}

fn run(sql: &str) -> IvmResult<()> {
    Spi::run(sql).map_err(|e| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{e}: {sql}")))
}

fn record_dependency(dependent: pg_sys::Oid, referenced: pg_sys::Oid, kind: pg_sys::DependencyType::Type) {
    record_dependency_of(pg_sys::RelationRelationId, dependent, referenced, kind)
}

/// `dependent` (an object of catalog `class`) depends on relation `referenced`.
fn record_dependency_of(class: pg_sys::Oid, dependent: pg_sys::Oid, referenced: pg_sys::Oid, kind: pg_sys::DependencyType::Type) {
    let depender = pg_sys::ObjectAddress { classId: class, objectId: dependent, objectSubId: 0 };
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

/// An internal relation: dropped with the result table, owned by its owner.
fn adopt(kind: &str, name: &str, result_relid: pg_sys::Oid) -> IvmResult<()> {
    record_dependency(regclass(name)?, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
    hand_over(kind, name, result_relid)
}

/// Create the state, work, buffer and feed relations of a DIFFERENTIAL stream table.
pub fn create_internals(result_relid: pg_sys::Oid, shape: &Shape, objects: &Objects) -> IvmResult<()> {
    as_extension_owner(|| {
        // The buffer holds the rows' changes: their columns and a weight. The calls of
        // recomputed aggregates are deparsed against it, so it comes first.
        run(&format!(
            "CREATE TABLE {} AS SELECT c.*, 0 AS __pgt_weight FROM ({}) c WITH NO DATA",
            objects.buffer,
            shape.rows.sql()
        ))?;
        let calls = shape.aggregate_calls(regclass(&objects.buffer)?);
        // WITH NO DATA: the query is analyzed, never run, by the extension's owner.
        run(&format!("CREATE TABLE {} AS {} WITH NO DATA", objects.state, state_from_source(shape, &calls, None)))?;
        // The result expressions are deparsed against the state table, so it comes next.
        let statements = Statements::new(shape, objects)?;
        run(&statements.state_index())?;
        run(&format!("CREATE UNLOGGED TABLE {} (LIKE {})", objects.affected, objects.state))?;
        if let Some(index) = statements.result_index() {
            run(&index)?;
        }
        for name in [&objects.state, &objects.affected, &objects.buffer] {
            adopt("TABLE", name, result_relid)?;
        }
        for (kind, mirrors) in [(Mirror::Feed, &objects.feeds), (Mirror::Old, &objects.olds)] {
            for (source, name) in mirrors {
                create_mirror(*source, name, kind)?;
                adopt("FOREIGN TABLE", name, result_relid)?;
            }
        }
        for source in shape.postgres_sources() {
            let (tables, function, triggers) = create_capture(result_relid, &source)?;
            for table in &tables {
                adopt("TABLE", table, result_relid)?;
            }
            record_dependency_of(pg_sys::ProcedureRelationId, function, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
            for trigger in triggers {
                record_dependency_of(pg_sys::TriggerRelationId, trigger, result_relid, pg_sys::DependencyType::DEPENDENCY_AUTO);
            }
        }
        Ok(())
    })
}

/// The source's columns as its feed mirrors them: position, name, type and column
/// options.
const COLUMN_SIGNATURE: &str = "SELECT pg_catalog.array_agg(pg_catalog.format('%s %I %s %s', attnum, attname, \
       pg_catalog.format_type(atttypid, atttypmod), coalesce(attfdwoptions::text, '')) ORDER BY attnum)::text \
       FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
       AND attname NOT IN ('snapshot_id', 'rowid', 'change_type')";

/// The lake table a foreign table reads: its server, schema and table.
const TARGET_SIGNATURE: &str = "SELECT pg_catalog.format('%s %s %s', ft.ftserver, \
       coalesce((SELECT pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1) FROM pg_catalog.unnest(ft.ftoptions) o \
                 WHERE o LIKE 'schema=%'), 'main'), \
       coalesce((SELECT pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1) FROM pg_catalog.unnest(ft.ftoptions) o \
                 WHERE o LIKE 'table=%'), c.relname::text)) \
       FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_class c ON c.oid = ft.ftrelid WHERE ft.ftrelid = $1";

/// Re-create the feeds and old states whose source's columns changed since they were
/// made (a column added, dropped, renamed or given another `column_name`), or that
/// read another lake table than the source now does (its server or `schema`/`table`
/// options changed), so that a refresh reads what the source now is; create those a
/// stream table made before they existed. The frontier's positions are positions in
/// the lake tables the sources read: when a source now reads another one, they mean
/// nothing for it, and the reason is returned for the caller to rebuild.
pub fn refresh_change_relations(result_relid: pg_sys::Oid, objects: &Objects) -> IvmResult<Option<String>> {
    let columns = |oid: pg_sys::Oid| Spi::get_one_with_args::<String>(COLUMN_SIGNATURE, &[oid.into()]);
    let target = |oid: pg_sys::Oid| Spi::get_one_with_args::<String>(TARGET_SIGNATURE, &[oid.into()]);
    let mut retargeted = None;
    for ((source, feed), (_, old)) in objects.feeds.iter().zip(&objects.olds) {
        // The source's signatures, read once for both of its mirrors.
        let (source_columns, source_target) = (columns(*source)?, target(*source)?);
        for (kind, name) in [(Mirror::Feed, feed), (Mirror::Old, old)] {
            let Some(relid) = crate::sql::try_regclass(name)? else {
                as_extension_owner(|| {
                    create_mirror(*source, name, kind)?;
                    adopt("FOREIGN TABLE", name, result_relid)
                })?;
                continue;
            };
            let moved = source_target != target(relid)?;
            if !moved && source_columns == columns(relid)? {
                continue;
            }
            if moved {
                retargeted = Some(format!("{} now reads another lake table", crate::sql::relation_name(*source)));
            }
            as_extension_owner(|| {
                run(&format!("DROP FOREIGN TABLE {name}"))?;
                create_mirror(*source, name, kind)?;
                adopt("FOREIGN TABLE", name, result_relid)
            })?;
        }
    }
    Ok(retargeted)
}

/// The replay work table of each Postgres source of `sources`, made at the first
/// refresh that replays it (see `replay`) with the columns `read` of each (source,
/// attribute number): its oid by source.
pub fn replay_tables(
    result_relid: pg_sys::Oid,
    objects: &Objects,
    sources: &[pg_sys::Oid],
    read: &[(pg_sys::Oid, i16)],
) -> IvmResult<Vec<(pg_sys::Oid, pg_sys::Oid)>> {
    let mut tables = Vec::new();
    for (source, name) in objects.was.iter().filter(|(source, _)| sources.contains(source)) {
        if crate::sql::try_regclass(name)?.is_none() {
            let columns: Vec<i16> = read.iter().filter(|(relid, _)| relid == source).map(|(_, attno)| *attno).collect();
            as_extension_owner(|| {
                create_was(name, *source, &columns)?;
                adopt("TABLE", name, result_relid)
            })?;
        }
        tables.push((*source, regclass(name)?));
    }
    Ok(tables)
}

/// Drop the internal relations, capture functions and triggers (used when the
/// defining query changes).
pub fn drop_internals(result_relid: pg_sys::Oid) -> IvmResult<()> {
    let objects = objects_for(result_relid, &[], &[]);
    let named = |sql: &str, prefix: &str| {
        Spi::get_one_with_args::<Vec<String>>(sql, &[CHANGES_SCHEMA.into(), format!("{prefix}\\_{}\\_%", result_relid.to_u32()).into()])
            .map(Option::unwrap_or_default)
    };
    let relations = "SELECT pg_catalog.array_agg(c.oid::regclass::text) FROM pg_catalog.pg_class c \
                     WHERE c.relnamespace = $1::regnamespace AND c.relname LIKE $2";
    let mut feeds = named(relations, "feed")?;
    feeds.extend(named(relations, "old")?);
    let mut logs = named(relations, "log")?;
    logs.extend(named(relations, "truncated")?);
    logs.extend(named(relations, "was")?);
    let functions = named(
        "SELECT pg_catalog.array_agg(p.oid::regprocedure::text) FROM pg_catalog.pg_proc p \
         WHERE p.pronamespace = $1::regnamespace AND p.proname LIKE $2",
        "capture",
    )?;
    as_extension_owner(|| {
        for name in [&objects.state, &objects.affected, &objects.buffer] {
            run(&format!("DROP TABLE IF EXISTS {name}"))?;
        }
        for feed in &feeds {
            run(&format!("DROP FOREIGN TABLE IF EXISTS {feed}"))?;
        }
        for function in &functions {
            run(&format!("DROP FUNCTION {function} CASCADE"))?; // with its triggers
        }
        for log in &logs {
            run(&format!("DROP TABLE IF EXISTS {log}"))?;
        }
        Ok(())
    })
}

/// Drop the indexes of the result table `relid` (built for a definition's keys).
pub fn drop_result_indexes(relid: pg_sys::Oid) -> IvmResult<()> {
    let names: Vec<String> = Spi::connect(|client| {
        let mut names = Vec::new();
        for row in client.select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.indrelid = $1",
            None,
            &[relid.into()],
        )? {
            names.push(row.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(names)
    })?;
    for name in names {
        Spi::run(&format!("DROP INDEX {name}"))?;
    }
    Ok(())
}

/// What a mirror of a lake source reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mirror {
    /// Its change feed (`changes 'true'`): the rows' columns, then snapshot_id, rowid
    /// and change_type.
    Feed,
    /// Its rows as of the frontier: the snapshot in setting
    /// `pgtrickle.frontier_snapshot_id` (`snapshot_id_setting`).
    Old,
}

/// A foreign table over the same lake table as `source`: the source's columns (and
/// column options) at the source's own attribute numbers, so that the defining query's
/// Vars address it as they address the source (see `rows`). A dropped column of the
/// source leaves a dropped column in it. The lake table is named explicitly: a source
/// without a `table` option reads the lake table of its own name, which the mirror's
/// name is not; the source's own snapshot pins are not copied.
fn create_mirror(source: pg_sys::Oid, feed: &str, kind: Mirror) -> IvmResult<()> {
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
    let (columns, option) = match kind {
        Mirror::Feed => ("snapshot_id bigint, rowid bigint, change_type text", "changes=true".to_owned()),
        Mirror::Old => ("", format!("snapshot_id_setting={}", crate::gucs::FRONTIER_SNAPSHOT_SETTING)),
    };
    // Postgres' format() quotes every identifier and option value.
    let ddl: String = Spi::get_one_with_args(
        r#"
        WITH opts(o) AS (SELECT pg_catalog.unnest(coalesce(ft.ftoptions, '{}')) FROM pg_catalog.pg_foreign_table ft
                          WHERE ft.ftrelid = $1)
        SELECT pg_catalog.format('CREATE FOREIGN TABLE %s (%s) SERVER %I OPTIONS (%s)',
            $2,
            (SELECT pg_catalog.rtrim(coalesce(pg_catalog.string_agg(CASE WHEN a.attisdropped
                    THEN pg_catalog.format('%I integer, ', '__pgt_dropped_' || a.attnum)
                    ELSE pg_catalog.format('%I %s%s%s, ', a.attname,
                    pg_catalog.format_type(a.atttypid, a.atttypmod),
                    (SELECT ' COLLATE ' || a.attcollation::pg_catalog.regcollation::text FROM pg_catalog.pg_type t
                      WHERE t.oid = a.atttypid AND a.attcollation <> 0 AND a.attcollation <> t.typcollation),
                    CASE WHEN a.attfdwoptions IS NULL THEN '' ELSE
                      (SELECT pg_catalog.format(' OPTIONS (%s)', pg_catalog.string_agg(pg_catalog.format('%I %L',
                              pg_catalog.split_part(x, '=', 1), pg_catalog.substr(x, pg_catalog.strpos(x, '=') + 1)), ', '))
                         FROM pg_catalog.unnest(a.attfdwoptions) x) END) END,
                    '' ORDER BY a.attnum), '') || $3, ', ')
               FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0),
            (SELECT s.srvname FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
              WHERE ft.ftrelid = $1),
            (SELECT pg_catalog.string_agg(pg_catalog.format('%I %L', pg_catalog.split_part(o, '=', 1),
                    pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1)), ', ')
               FROM (SELECT o FROM opts WHERE pg_catalog.split_part(o, '=', 1)
                                              NOT IN ('changes', 'snapshot_id', 'as_of', 'snapshot_id_setting')
                     UNION ALL SELECT $4
                     UNION ALL SELECT 'table=' || c.relname FROM pg_catalog.pg_class c
                      WHERE c.oid = $1 AND NOT EXISTS (SELECT 1 FROM opts WHERE o LIKE 'table=%')) x))
        "#,
        &[source.into(), feed.into(), columns.into(), option.into()],
    )?
    .unwrap_or_default();
    run(&ddl)?;
    drop_placeholders("FOREIGN TABLE", feed, source)
}
