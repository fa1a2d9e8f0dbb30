//! The `pgtrickle` SQL API. Every function that changes a stream table requires its
//! caller to own it (see `privileges`); `verify_stream_table` is in
//! `maintenance::verify`.

use crate::analysis::parse::{analyze, lake_sources};
use crate::analysis::shape::shape_of;
use crate::catalog::{self, Lock, RefreshMode};
use crate::definition;
use crate::error::{IvmError, IvmResult, OrRaise};
use crate::maintenance::capture::check_capturable;
use crate::maintenance::context::RefreshContext;
use crate::maintenance::objects::{create_internals, drop_internals, drop_result_indexes};
use crate::maintenance::refresh::{self, Requested};
use crate::privileges::{as_extension_owner, owner_of};
use crate::sql::qualified;
use pgrx::prelude::*;
use pgrx::{JsonB, pg_sys};

/// Schema and table of a possibly qualified name, parsed by Postgres' parse_ident.
fn split_name(name: &str) -> IvmResult<(String, String)> {
    let parts: Vec<String> = Spi::get_one_with_args::<Vec<String>>("SELECT pg_catalog.parse_ident($1)", &[name.into()])
        .map_err(|_| IvmError::invalid(format!("invalid stream table name \"{name}\"")))?
        .unwrap_or_default();
    match parts.as_slice() {
        [table] => {
            let schema: Option<String> = Spi::get_one("SELECT pg_catalog.current_schema()::text")?;
            let schema = schema.ok_or_else(|| {
                IvmError::new(PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME, "no schema on the search_path to create the stream table in")
            })?;
            Ok((schema, table.clone()))
        }
        [schema, table] => Ok((schema.clone(), table.clone())),
        _ => Err(IvmError::invalid(format!("invalid stream table name \"{name}\": expected [schema.]table"))),
    }
}

fn parse_schedule(text: &str) -> IvmResult<std::time::Duration> {
    crate::scheduler::schedule::parse(text)
}

/// Check the query and mode before anything is created, as the caller (who must be
/// able to resolve every name in it): errors name the construct.
fn validate(query: &str, mode: RefreshMode) -> IvmResult<()> {
    let tree = analyze(query)?;
    if mode == RefreshMode::Differential {
        crate::analysis::views::expand_views(tree)?;
    }
    lake_sources(tree)?;
    if mode == RefreshMode::Differential {
        for source in shape_of(tree)?.postgres_sources() {
            check_capturable(&source)?;
        }
    }
    Ok(())
}

/// Create the result table (empty) with the columns of stream table `id`'s definition,
/// as the caller (who needs CREATE on the schema).
fn create_result(schema: &str, table: &str, id: i64) -> IvmResult<pg_sys::Oid> {
    let name = qualified(schema, table);
    Spi::run(&format!("CREATE TABLE {name} AS {} WITH NO DATA", definition::select_all(id)))?;
    crate::sql::regclass(&name)
}

/// Internal relations of stream table `id`, built under its recorded settings.
fn build_internals(id: i64) -> IvmResult<()> {
    let table = catalog::load(id, Lock::None)?.ok_or_else(|| IvmError::no_such_stream_table(&id.to_string()))?;
    let _context = RefreshContext::enter(owner_of(table.relid)?, &table.settings)?;
    let plan = refresh::plan_for(&table)?;
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
        let settings = crate::settings::capture()?;
        let id: i64 = as_extension_owner(|| {
            Ok(Spi::get_one::<i64>("SELECT pg_catalog.nextval('pgtrickle.pgt_stream_tables_pgt_id_seq')")?
                .expect("nextval gives a value"))
        })?;
        // SAFETY: reads the current user.
        let view = definition::define(id, query, unsafe { pg_sys::GetUserId() })?;
        let relid = create_result(&schema, &table, id)?;
        definition::bind(view, relid);
        catalog::write(
            "INSERT INTO pgtrickle.pgt_stream_tables \
             (pgt_id, pgt_relid, pgt_name, pgt_schema, defining_query, schedule, refresh_mode, settings) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                id.into(),
                relid.into(),
                table.clone().into(),
                schema.clone().into(),
                query.into(),
                schedule.trim().into(),
                mode.as_str().into(),
                JsonB(settings).into(),
            ],
        )?;
        catalog::record_upstream(id)?;
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
        catalog::lock_result_table(id, pg_sys::AccessExclusiveLock)?;
        let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
        catalog::write("DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = $1", &[id.into()])?;
        Spi::run(&format!("DROP TABLE {}{}", crate::sql::relation_name(table.relid), drop_behaviour(cascade)))?;
        Ok(())
    };
    run().or_raise()
}

/// Change a stream table's query, schedule or refresh mode. A new query or mode
/// rebuilds it at the lake's current snapshot, under the settings of the calling
/// session (recorded anew, as for a new stream table). A query with other columns
/// recreates the result table; `cascade` lets that drop the views on it.
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
        if query.is_some() || refresh_mode.is_some() {
            // a rebuild, or a new result table; the sources first, as a refresh does
            definition::lock_sources(id)?;
            catalog::lock_result_table(id, pg_sys::AccessExclusiveLock)?;
        }
        let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
        if let Some(schedule) = schedule {
            parse_schedule(schedule)?;
            catalog::write(
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
        let settings = crate::settings::capture()?;
        // Internals of the old definition go; the result table stays when the new
        // query has the same columns, else it is recreated (views on it must be dropped first).
        drop_internals(table.relid)?;
        definition::drop_definition(id, table.relid)?;
        let view = definition::define(id, new_query, owner_of(table.relid)?)?;
        catalog::refuse_cycle(id, &table.name)?;
        let (schema, table_name) = crate::sql::relation_parts(table.relid);
        let mut relid = table.relid;
        if !definition::same_columns_as(id, relid)? {
            // Detach the row first, or the drop event trigger would forget the stream table.
            catalog::write("UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = 0 WHERE pgt_id = $1", &[id.into()])?;
            Spi::run(&format!("DROP TABLE {}{}", qualified(&schema, &table_name), drop_behaviour(cascade)))?;
            relid = create_result(&schema, &table_name, id)?;
        } else {
            // Old indexes may not fit the new keys; the new plan creates its own.
            drop_result_indexes(relid)?;
        }
        definition::bind(view, relid);
        // The old query's refresh timings say nothing of the new one's.
        catalog::write(
            "UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = $2, defining_query = $3, refresh_mode = $4, \
             frontier = '{\"sources\": {}}', settings = $5, \
             full_refresh_ms = NULL, differential_refresh_ms = NULL, rebuilds_chosen = 0 WHERE pgt_id = $1",
            &[id.into(), relid.into(), new_query.into(), mode.as_str().into(), JsonB(settings).into()],
        )?;
        catalog::record_upstream(id)?;
        build_internals(id)?;
        refresh::refresh(id, Requested::Full, Lock::Wait)?;
        Ok(())
    };
    run().or_raise()
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

/// Stop scheduled refreshes of the named stream tables (all the caller's when NULL). Persistent.
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
            catalog::write(
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
    rewind_to(name, |sources, servers| {
        // Snapshot ids count each lake's commits apart: one id cannot place two lakes.
        if servers.len() > 1 {
            return Err(IvmError::invalid(format!(
                "stream table {name} reads the lakes of servers {}, whose snapshot ids are separate sequences",
                servers.join(", ")
            ))
            .with_hint(format!(
                "Name each lake's snapshot: pgtrickle.rewind_lakes('{name}', '{{\"{}\": 42, ...}}').",
                servers[0]
            )));
        }
        Ok(sources.iter().map(|s| (s.key.clone(), snapshot_id)).collect())
    })
    .or_raise()
}

/// `rewind` of a stream table over the lakes of several servers: `snapshot_ids` is a
/// JSON object of snapshot ids by server name, naming each of them. (Not an overload
/// of `rewind`: `rewind('t', '42')` would no longer know which to call.)
#[pg_extern]
fn rewind_lakes(name: &str, snapshot_ids: JsonB) {
    rewind_to(name, |sources, servers| {
        let serde_json::Value::Object(ids) = &snapshot_ids.0 else {
            return Err(IvmError::invalid("snapshot_ids must be a JSON object of snapshot ids by server name"));
        };
        if let Some(other) = ids.keys().find(|server| !servers.contains(&server.as_str())) {
            return Err(IvmError::invalid(format!(
                "stream table {name} reads no lake of server \"{other}\" (its lakes: {})",
                servers.join(", ")
            )));
        }
        let mut entries = Vec::new();
        for source in sources {
            let server = source.server_name.as_str();
            let at = match ids.get(server) {
                None => return Err(IvmError::invalid(format!("snapshot_ids names no snapshot of server \"{server}\""))),
                Some(id) => id.as_i64().filter(|id| *id >= 0).ok_or_else(|| {
                    IvmError::invalid(format!("snapshot_ids: {id} of server \"{server}\" is not a snapshot id (a non-negative integer)"))
                })?,
            };
            entries.push((source.key.clone(), at));
        }
        Ok(entries)
    })
    .or_raise()
}

/// Pause stream table `name`, set its frontier to the entries `entries_for` gives
/// its lake sources (and the names of their servers, sorted), and rebuild there.
fn rewind_to(
    name: &str,
    entries_for: impl FnOnce(&[crate::analysis::parse::LakeSource], &[&str]) -> IvmResult<Vec<(String, i64)>>,
) -> IvmResult<()> {
    let id = catalog::resolve(name)?;
    let table = catalog::load(id, Lock::Wait)?.ok_or_else(|| IvmError::no_such_stream_table(name))?;
    let sources = {
        let _context = RefreshContext::enter(owner_of(table.relid)?, &table.settings)?;
        refresh::plan_for(&table)?.sources
    };
    let mut servers: Vec<&str> = sources.iter().map(|s| s.server_name.as_str()).collect();
    servers.sort_unstable();
    servers.dedup();
    let entries = entries_for(&sources, &servers)?;
    catalog::set_status(id, "PAUSED")?;
    catalog::write(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier = $2 WHERE pgt_id = $1",
        &[id.into(), JsonB(catalog::frontier_of(&entries, &[])).into()],
    )?;
    refresh::refresh(id, Requested::Full, Lock::Wait)?;
    Ok(())
}
