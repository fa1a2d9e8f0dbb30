//! The `pgtrickle` SQL API.

use crate::analysis::parse::{analyze, lake_sources};
use crate::analysis::shape::shape_of;
use crate::catalog::{self, Lock, RefreshMode};
use crate::error::{IvmError, IvmResult, OrRaise};
use crate::maintenance::objects::{self, create_internals, depend_on_sources, drop_internals, objects_for};
use crate::maintenance::refresh::{self, Requested};
use crate::scheduler::schedule::parse_schedule;
use crate::sql::qualified;
use pgrx::prelude::*;
use pgrx::{JsonB, pg_sys};

/// Schema and table of a possibly qualified name, parsed by Postgres' parse_ident.
fn split_name(name: &str) -> IvmResult<(String, String)> {
    let parts: Vec<String> = Spi::get_one_with_args::<Vec<String>>("SELECT parse_ident($1)", &[name.into()])
        .map_err(|_| IvmError::invalid(format!("invalid stream table name \"{name}\"")))?
        .unwrap_or_default();
    match parts.as_slice() {
        [table] => {
            let schema: Option<String> = Spi::get_one("SELECT current_schema()::text")?;
            let schema = schema.ok_or_else(|| {
                IvmError::new(PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME, "no schema on the search_path to create the stream table in")
            })?;
            Ok((schema, table.clone()))
        }
        [schema, table] => Ok((schema.clone(), table.clone())),
        _ => Err(IvmError::invalid(format!("invalid stream table name \"{name}\": expected [schema.]table"))),
    }
}

/// Check the query and mode before anything is created: errors name the construct.
fn validate(query: &str, mode: RefreshMode) -> IvmResult<()> {
    let tree = analyze(query)?;
    lake_sources(tree)?;
    if mode == RefreshMode::Differential {
        shape_of(tree)?;
    }
    Ok(())
}

/// Create the result table (empty) from the query's output columns.
fn create_result(schema: &str, table: &str, query: &str) -> IvmResult<pg_sys::Oid> {
    let name = qualified(schema, table);
    Spi::run(&format!("CREATE TABLE {name} AS {} WITH NO DATA", refresh::embeddable(query)))?;
    objects::regclass(&name)
}

/// Internal relations and dependencies for the stream table `id`.
fn build_internals(id: i64) -> IvmResult<()> {
    let table = catalog::load(id, Lock::None)?.ok_or_else(|| IvmError::no_such_stream_table(&id.to_string()))?;
    let plan = refresh::plan_for(&table)?;
    depend_on_sources(table.relid, &plan.sources);
    if let Some(shape) = &plan.shape {
        create_internals(table.relid, shape, &plan.objects)?;
    }
    Ok(())
}

/// Create a stream table holding `query`'s result, kept current on `schedule`.
#[pg_extern]
fn create_stream_table(
    name: &str,
    query: &str,
    schedule: default!(&str, "'1s'"),
    refresh_mode: default!(&str, "'DIFFERENTIAL'"),
    initialize: default!(bool, true),
) {
    let run = || -> IvmResult<()> {
        parse_schedule(schedule)?;
        let mode = RefreshMode::parse(refresh_mode)?;
        validate(query, mode)?;
        let (schema, table) = split_name(name)?;
        let relid = create_result(&schema, &table, query)?;
        let id: i64 = Spi::get_one_with_args(
            "INSERT INTO pgtrickle.pgt_stream_tables (pgt_relid, pgt_name, pgt_schema, defining_query, schedule, refresh_mode) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING pgt_id",
            &[relid.into(), table.clone().into(), schema.clone().into(), query.into(), schedule.trim().into(), mode.as_str().into()],
        )?
        .expect("INSERT RETURNING gives a row");
        build_internals(id)?;
        if initialize {
            refresh::refresh(id, Requested::Full, Lock::Wait)?;
        }
        crate::scheduler::launcher::wake_scheduler();
        Ok(())
    };
    run().or_raise()
}

fn drop_behaviour(cascade: bool) -> &'static str {
    if cascade { " CASCADE" } else { "" }
}

/// Drop a stream table: its result table and everything behind it. With `cascade`,
/// also the views and other objects that depend on the result table.
#[pg_extern]
fn drop_stream_table(name: &str, cascade: default!(bool, false)) {
    let run = || -> IvmResult<()> {
        let id = catalog::resolve(name)?;
        let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
        Spi::run_with_args("DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = $1", &[id.into()])?;
        Spi::run(&format!("DROP TABLE {}{}", crate::sql::relation_name(table.relid), drop_behaviour(cascade)))?;
        Ok(())
    };
    run().or_raise()
}

/// Change a stream table's query, schedule or refresh mode. A new query or mode
/// rebuilds it at the lake's current snapshot. A query with other columns recreates
/// the result table; `cascade` lets that drop the views on it.
#[pg_extern]
fn alter_stream_table(
    name: &str,
    query: default!(Option<&str>, "NULL"),
    schedule: default!(Option<&str>, "NULL"),
    refresh_mode: default!(Option<&str>, "NULL"),
    cascade: default!(bool, false),
) {
    let run = || -> IvmResult<()> {
        let id = catalog::resolve(name)?;
        let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
        if let Some(schedule) = schedule {
            parse_schedule(schedule)?;
            Spi::run_with_args(
                "UPDATE pgtrickle.pgt_stream_tables SET schedule = $2 WHERE pgt_id = $1",
                &[id.into(), schedule.trim().into()],
            )?;
        }
        let mode = match refresh_mode {
            Some(m) => RefreshMode::parse(m)?,
            None => table.mode,
        };
        let new_query = query.unwrap_or(&table.query);
        if new_query == table.query && mode == table.mode {
            return Ok(());
        }
        validate(new_query, mode)?;
        // Internals of the old definition go; the result table stays when the new
        // query has the same columns, else it is recreated (views on it must be dropped first).
        let old_plan_objects = objects_for(table.relid, None);
        drop_internals(&old_plan_objects)?;
        let (schema, table_name) = crate::sql::relation_parts(table.relid);
        let mut relid = table.relid;
        if !same_columns(relid, new_query)? {
            // Detach the row first, or the drop event trigger would forget the stream table.
            Spi::run_with_args("UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = 0 WHERE pgt_id = $1", &[id.into()])?;
            Spi::run(&format!("DROP TABLE {}{}", qualified(&schema, &table_name), drop_behaviour(cascade)))?;
            relid = create_result(&schema, &table_name, new_query)?;
        } else {
            // Old indexes may not fit the new keys; the new plan creates its own.
            drop_result_indexes(relid)?;
        }
        Spi::run_with_args(
            "UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = $2, defining_query = $3, refresh_mode = $4, \
             frontier = '{\"sources\": {}}' WHERE pgt_id = $1",
            &[id.into(), relid.into(), new_query.into(), mode.as_str().into()],
        )?;
        Spi::run_with_args(
            "DELETE FROM pg_depend WHERE classid = 'pg_class'::regclass AND objid = $1 AND deptype = 'n' \
             AND refclassid = 'pg_class'::regclass AND refobjid IN (SELECT ftrelid FROM pg_foreign_table)",
            &[relid.into()],
        )?;
        build_internals(id)?;
        refresh::refresh(id, Requested::Full, Lock::Wait)?;
        Ok(())
    };
    run().or_raise()
}

fn same_columns(relid: pg_sys::Oid, query: &str) -> IvmResult<bool> {
    Spi::run(&format!("CREATE TEMP VIEW __pgt_probe AS {}", refresh::embeddable(query)))?;
    let same: bool = Spi::get_one_with_args(
        "SELECT (SELECT array_agg((attname, atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped)::text \
              = (SELECT array_agg((attname, atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = 'pg_temp.__pgt_probe'::regclass AND attnum > 0)::text",
        &[relid.into()],
    )?
    .unwrap_or(false);
    Spi::run("DROP VIEW pg_temp.__pgt_probe")?;
    Ok(same)
}

fn drop_result_indexes(relid: pg_sys::Oid) -> IvmResult<()> {
    let names: Vec<String> = Spi::connect(|client| {
        let mut names = Vec::new();
        for row in client.select(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indrelid = $1",
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

/// Refresh now. 'DIFFERENTIAL' advances to the lake's current snapshot; 'FULL'
/// rebuilds at the frontier's snapshot (the rewind step of the time-travel demo).
#[pg_extern]
fn refresh(name: &str, mode: default!(&str, "'DIFFERENTIAL'")) {
    let run = || -> IvmResult<()> {
        let requested = match RefreshMode::parse(mode)? {
            RefreshMode::Differential => Requested::Differential,
            RefreshMode::Full => Requested::Full,
        };
        let id = catalog::resolve(name)?;
        refresh::refresh(id, requested, Lock::Wait)?;
        Ok(())
    };
    run().or_raise()
}

/// `refresh(name, 'DIFFERENTIAL')`.
#[pg_extern]
fn refresh_stream_table(name: &str) {
    refresh(name, "DIFFERENTIAL")
}

/// Stop scheduled refreshes of the named stream tables (all when NULL). Persistent.
#[pg_extern]
fn pause_scheduler(names: default!(Option<Vec<Option<String>>>, "NULL")) {
    let run = || -> IvmResult<()> {
        for id in catalog::resolve_all(names)? {
            catalog::set_status(id, "PAUSED")?;
        }
        Ok(())
    };
    run().or_raise()
}

/// Resume scheduled refreshes; the next one replays from the frontier.
#[pg_extern]
fn resume_scheduler(names: default!(Option<Vec<Option<String>>>, "NULL")) {
    let run = || -> IvmResult<()> {
        for id in catalog::resolve_all(names)? {
            Spi::run_with_args(
                "UPDATE pgtrickle.pgt_stream_tables SET status = 'ACTIVE', consecutive_errors = 0 \
                 WHERE pgt_id = $1 AND status = 'PAUSED'",
                &[id.into()],
            )?;
        }
        crate::scheduler::launcher::wake_scheduler();
        Ok(())
    };
    run().or_raise()
}

/// Pause, move the frontier to `snapshot_id` and rebuild there, in one call.
#[pg_extern]
fn rewind(name: &str, snapshot_id: i64) {
    let run = || -> IvmResult<()> {
        let id = catalog::resolve(name)?;
        let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
        let plan = refresh::plan_for(&table)?;
        let keys: Vec<String> = plan.sources.iter().map(|s| s.key.clone()).collect();
        catalog::set_status(id, "PAUSED")?;
        Spi::run_with_args(
            "UPDATE pgtrickle.pgt_stream_tables SET frontier = $2 WHERE pgt_id = $1",
            &[id.into(), JsonB(catalog::frontier_at(&keys, snapshot_id)).into()],
        )?;
        refresh::refresh(id, Requested::Full, Lock::Wait)?;
        Ok(())
    };
    run().or_raise()
}


/// Rows where the stream table differs from its defining query evaluated at the
/// table's frontier snapshot: `missing` (in the query's result only) or `extra` (in
/// the table only), each as jsonb. No rows: the table is exactly its query's result.
#[pg_extern]
fn verify_stream_table(
    name: &str,
) -> TableIterator<'static, (name!(difference, String), name!(row_data, JsonB))> {
    let run = || -> IvmResult<Vec<crate::maintenance::verify::Difference>> {
        crate::maintenance::verify::differences(catalog::resolve(name)?)
    };
    TableIterator::new(run().or_raise())
}
