//! `pgtrickle.pgt_stream_tables`: one row per stream table, read and written through
//! SPI as the extension's owner (see `privileges`): callers reach only the stream
//! tables they own, which `resolve` checks.

use crate::error::{IvmError, IvmResult};
use crate::privileges::{as_extension_owner, require_owner};
use ducklake_formats::refresh_cost::{Ran, RefreshCosts};
use pgrx::prelude::*;
use pgrx::{JsonB, pg_sys};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    Differential,
    Full,
}

impl RefreshMode {
    pub fn parse(text: &str) -> IvmResult<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "DIFFERENTIAL" => Ok(RefreshMode::Differential),
            "FULL" => Ok(RefreshMode::Full),
            _ => Err(IvmError::invalid(format!(
                "invalid refresh mode \"{text}\": expected 'DIFFERENTIAL' or 'FULL'"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Differential => "DIFFERENTIAL",
            RefreshMode::Full => "FULL",
        }
    }
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // id and schedule are part of the row, kept for diagnostics
pub struct StreamTable {
    pub id: i64,
    pub relid: pg_sys::Oid,
    pub name: String,
    pub query: String,
    pub schedule: String,
    pub mode: RefreshMode,
    pub status: String,
    pub frontier: Value,
    pub consecutive_errors: i32,
    /// Settings every refresh runs under (see `settings`).
    pub settings: Value,
    /// The views its query read at its last refresh, with digests of their definitions
    /// (see `view_definitions`).
    pub view_definitions: Value,
    /// How long its last refreshes took (see `refresh_cost`).
    pub costs: RefreshCosts,
}

const COLUMNS: &str = "pgt_id, pgt_relid, pgt_schema || '.' || pgt_name, defining_query, schedule, refresh_mode, \
                       status, frontier, consecutive_errors, settings, view_definitions, \
                       full_refresh_ms, differential_refresh_ms, rebuilds_chosen";

/// Lock modes for reading a catalog row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// Wait for a concurrent refresh of the same table.
    Wait,
    /// Give up (None) when another session is refreshing it.
    SkipLocked,
    /// Wait for a running refresh, and keep others from committing until this
    /// transaction ends (a consistent frontier and result for readers).
    Share,
}

/// Lock stream table `id`'s result table in `mode` before its catalog row is locked:
/// DROP TABLE locks the table first and then deletes the row (from its event trigger),
/// so the other order deadlocks with a concurrent DROP. A table dropped meanwhile
/// leaves no catalog row, which the caller's `load` then finds.
pub fn lock_result_table(id: i64, mode: u32) -> IvmResult<()> {
    let relid = as_extension_owner(|| {
        Ok(Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT pgt_relid FROM pgtrickle.pgt_stream_tables WHERE pgt_id = $1",
            &[id.into()],
        )?)
    })?;
    if let Some(relid) = relid {
        crate::sql::lock_relation(relid, mode);
    }
    Ok(())
}

pub fn load(id: i64, lock: Lock) -> IvmResult<Option<StreamTable>> {
    let suffix = match lock {
        Lock::None => "",
        Lock::Wait => " FOR UPDATE",
        Lock::SkipLocked => " FOR UPDATE SKIP LOCKED",
        Lock::Share => " FOR SHARE",
    };
    let query = format!("SELECT {COLUMNS} FROM pgtrickle.pgt_stream_tables WHERE pgt_id = $1{suffix}");
    // Not read-only: FOR UPDATE.
    as_extension_owner(|| Spi::connect_mut(|client| {
        let rows = client.update(&query, Some(1), &[id.into()])?;
        for row in rows {
            let frontier: Option<JsonB> = row.get(8)?;
            let settings: Option<JsonB> = row.get(10)?;
            let view_definitions: Option<JsonB> = row.get(11)?;
            return Ok::<_, IvmError>(Some(StreamTable {
                id: row.get(1)?.unwrap_or_default(),
                relid: row.get(2)?.unwrap_or(pg_sys::InvalidOid),
                name: row.get(3)?.unwrap_or_default(),
                query: row.get(4)?.unwrap_or_default(),
                schedule: row.get(5)?.unwrap_or_default(),
                mode: RefreshMode::parse(&row.get::<String>(6)?.unwrap_or_default()).unwrap_or(RefreshMode::Full),
                status: row.get(7)?.unwrap_or_default(),
                frontier: frontier.map(|j| j.0).unwrap_or(Value::Null),
                consecutive_errors: row.get(9)?.unwrap_or_default(),
                settings: settings.map(|j| j.0).unwrap_or(Value::Null),
                view_definitions: view_definitions.map(|j| j.0).unwrap_or(Value::Null),
                costs: RefreshCosts {
                    full_ms: row.get(12)?,
                    differential_ms: row.get(13)?,
                    rebuilds_chosen: row.get(14)?.unwrap_or_default(),
                },
            }));
        }
        Ok(None)
    }))
}

/// The stream table called `name`, which the current user must own: a
/// (schema-qualified) table name resolved on the caller's search_path, or else a
/// unique pgt_name among the caller's stream tables.
pub fn resolve(name: &str) -> IvmResult<i64> {
    let relid: Option<pg_sys::Oid> = Spi::get_one_with_args("SELECT pg_catalog.to_regclass($1)::oid", &[name.into()])
        .ok()
        .flatten();
    let found = as_extension_owner(|| {
        Ok(Spi::get_two_with_args::<i64, pg_sys::Oid>(
            "SELECT t.pgt_id, t.pgt_relid FROM (SELECT coalesce( \
               (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = $1), \
               (SELECT min(pgt_id) FROM pgtrickle.pgt_stream_tables WHERE pgt_name = $2 \
                  AND pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = pgt_relid), 'USAGE') \
                HAVING count(*) = 1)) AS id) found \
             LEFT JOIN pgtrickle.pgt_stream_tables t ON t.pgt_id = found.id",
            &[relid.into(), name.into()],
        )?)
    })?;
    match found {
        (Some(id), Some(relid)) => {
            require_owner(relid, name)?;
            Ok(id)
        }
        _ => Err(IvmError::no_such_stream_table(name)),
    }
}

/// Every stream table of the current user when `names` is NULL, else the named ones
/// (each must exist and be the user's).
pub fn resolve_all(names: Option<Vec<Option<String>>>) -> IvmResult<Vec<i64>> {
    match names {
        None => as_extension_owner(|| Spi::connect(|client| {
            let mut ids = Vec::new();
            for row in client.select(
                "SELECT pgt_id FROM pgtrickle.pgt_stream_tables \
                  WHERE pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = pgt_relid), 'USAGE') \
                  ORDER BY pgt_id",
                None,
                &[],
            )? {
                ids.push(row.get::<i64>(1)?.unwrap_or_default());
            }
            Ok::<_, IvmError>(ids)
        })),
        Some(names) => names.into_iter().flatten().map(|n| resolve(&n)).collect(),
    }
}

/// Run a statement on the catalog as the extension's owner.
pub fn write(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> IvmResult<()> {
    as_extension_owner(|| Ok(Spi::run_with_args(sql, args)?))
}

pub fn set_status(id: i64, status: &str) -> IvmResult<()> {
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET status = $2, last_error = CASE WHEN $2 = 'ERROR' THEN last_error END, \
         consecutive_errors = CASE WHEN $2 = 'ERROR' THEN consecutive_errors ELSE 0 END WHERE pgt_id = $1",
        &[id.into(), status.into()],
    )
}

/// Record a refresh: its frontier, its note (why it rebuilt, when not asked to), how
/// it ran and how long that took (`elapsed_ms`; None: a differential refresh that
/// read no change, whose time says nothing of what changes cost).
pub fn record_refresh(id: i64, frontier: &Value, note: Option<&str>, ran: Ran, elapsed_ms: Option<f64>) -> IvmResult<()> {
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier = $2, last_refreshed_at = clock_timestamp(), \
         status = CASE WHEN status = 'PAUSED' THEN status ELSE 'ACTIVE' END, \
         last_error = $3, consecutive_errors = 0, last_refresh_mode = $4, \
         full_refresh_ms = CASE WHEN $4 = 'FULL' THEN coalesce($5, full_refresh_ms) ELSE full_refresh_ms END, \
         differential_refresh_ms = CASE WHEN $4 = 'DIFFERENTIAL' THEN coalesce($5, differential_refresh_ms) \
                                   ELSE differential_refresh_ms END, \
         rebuilds_chosen = CASE WHEN $6 THEN rebuilds_chosen + 1 \
                           WHEN $4 = 'DIFFERENTIAL' AND $5 IS NOT NULL THEN 0 ELSE rebuilds_chosen END \
         WHERE pgt_id = $1",
        &[
            id.into(),
            JsonB(frontier.clone()).into(),
            note.into(),
            ran.mode().into(),
            elapsed_ms.into(),
            matches!(ran, Ran::Rebuilt { chosen: true }).into(),
        ],
    )
}

/// The definitions of `views` as they are now: a digest of each one's query (its rule,
/// by object ids: renaming what it reads changes nothing) and options (which say whose
/// privileges it reads with), by oid. A view replaced by `CREATE OR REPLACE VIEW` gets
/// another digest.
pub fn view_definitions(views: &[pg_sys::Oid]) -> IvmResult<Value> {
    if views.is_empty() {
        return Ok(serde_json::json!({}));
    }
    let digests: Option<JsonB> = Spi::get_one_with_args(
        "SELECT pg_catalog.jsonb_object_agg(c.oid::pg_catalog.text, \
                pg_catalog.md5(r.ev_action::pg_catalog.text || coalesce(c.reloptions::pg_catalog.text, ''))) \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN' \
          WHERE c.oid = ANY ($1)",
        &[views.to_vec().into()],
    )?;
    Ok(digests.map_or_else(|| serde_json::json!({}), |j| j.0))
}

/// Record the definitions of the views stream table `id`'s query reads (see
/// `view_definitions`) that its last refresh read.
pub fn record_view_definitions(id: i64, definitions: &Value) -> IvmResult<()> {
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET view_definitions = $2 WHERE pgt_id = $1",
        &[id.into(), JsonB(definitions.clone()).into()],
    )
}

/// Record a failed scheduled refresh: status ERROR (unless paused) and the message.
pub fn record_error(id: i64, message: &str) -> IvmResult<()> {
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET status = CASE WHEN status = 'PAUSED' THEN status ELSE 'ERROR' END, \
         last_error = $2, consecutive_errors = consecutive_errors + 1 WHERE pgt_id = $1",
        &[id.into(), message.into()],
    )
}

/// Mark a healthy table again after an error, without a refresh having changed anything.
pub fn clear_error(id: i64) -> IvmResult<()> {
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET status = CASE WHEN status = 'PAUSED' THEN status ELSE 'ACTIVE' END, \
         last_error = NULL, consecutive_errors = 0 WHERE pgt_id = $1 AND (status IN ('ERROR', 'INITIALIZING') OR consecutive_errors > 0)",
        &[id.into()],
    )
}

/// The frontier's snapshot of sources `keys`, the lake sources of one server, whose
/// entries must agree (they share one snapshot sequence). A source without an entry
/// (renamed since) takes the others'; when the stream table has one lake source in all
/// (`only_source`) and the frontier one lake entry, that entry is its own, whatever
/// its key.
pub fn frontier_snapshot(frontier: &Value, keys: &[String], only_source: bool, table: &str) -> IvmResult<Option<i64>> {
    let sources = match frontier.get("sources") {
        Some(Value::Object(map)) => map,
        None | Some(Value::Null) => return Ok(None),
        Some(_) => return Err(IvmError::invalid(format!("frontier of {table}: \"sources\" must be a JSON object"))),
    };
    let lake_entries: Vec<(&String, &Value)> = sources.iter().filter(|(key, _)| !key.starts_with("postgres:")).collect();
    let entries: Vec<(&str, &Value)> = match keys.iter().filter_map(|k| sources.get(k).map(|e| (k.as_str(), e))).collect::<Vec<_>>() {
        found if !found.is_empty() => found,
        _ if only_source && lake_entries.len() == 1 => vec![(lake_entries[0].0.as_str(), lake_entries[0].1)],
        _ => return Ok(None),
    };
    let snapshot_of = |key: &str, entry: &Value| -> IvmResult<Option<i64>> {
        match entry.get("snapshot_id") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v >= 0) => Ok(n.as_i64()),
            Some(other) => Err(IvmError::invalid(format!(
                "frontier of {table}: snapshot_id of \"{key}\" must be a non-negative integer, found {other}"
            ))),
        }
    };
    let mut common: Option<(&str, Option<i64>)> = None;
    for (key, entry) in entries {
        let snapshot = snapshot_of(key, entry)?;
        match &common {
            None => common = Some((key, snapshot)),
            Some((first, at)) if *at != snapshot => {
                let show = |s: &Option<i64>| s.map_or("null".to_string(), |v| v.to_string());
                return Err(IvmError::invalid(format!(
                    "frontier of {table} puts its sources at different snapshots: \"{first}\" at {}, \"{key}\" at {}",
                    show(at),
                    show(&snapshot)
                ))
                .with_hint("The sources of one lake share one snapshot sequence: give them all the same snapshot_id (pgtrickle.rewind(name, snapshot_id) sets every one of a table reading one lake)."));
            }
            Some(_) => {}
        }
    }
    Ok(common.and_then(|(_, at)| at))
}

/// A frontier: lake sources each at its lake's snapshot (`lake`: key and snapshot id),
/// Postgres sources each at its `pg_snapshot` (see `maintenance::capture`).
pub fn frontier_of(lake: &[(String, i64)], postgres: &[(String, String)]) -> Value {
    let mut sources: serde_json::Map<String, Value> = serde_json::Map::new();
    for (key, snapshot) in lake {
        sources.insert(key.clone(), json!({ "snapshot_id": snapshot }));
    }
    for (key, seen) in postgres {
        sources.insert(key.clone(), json!({ "snapshot": seen }));
    }
    json!({ "sources": sources })
}

/// The `pg_snapshot` text up to which the frontier has seen Postgres source `key`.
pub fn frontier_seen(frontier: &Value, key: &str, table: &str) -> IvmResult<Option<String>> {
    match frontier.get("sources").and_then(|s| s.get(key)).and_then(|e| e.get("snapshot")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(IvmError::invalid(format!(
            "frontier of {table}: snapshot of \"{key}\" must be a pg_snapshot string, found {other}"
        ))),
    }
}

/// The stream-table graph: (stream table, a stream table whose result its defining
/// query reads), from the views' dependencies, for every owner's tables.
pub fn dependencies() -> IvmResult<Vec<(i64, i64)>> {
    crate::privileges::as_extension_owner(|| {
        Spi::connect(|client| {
            let mut edges = Vec::new();
            for row in client.select(
                "SELECT DISTINCT a.pgt_id, b.pgt_id FROM pgtrickle.pgt_stream_tables a \
                   CROSS JOIN LATERAL pgtrickle.view_reads(pg_catalog.to_regclass('pgtrickle_state.query_' || a.pgt_id)) d \
                   JOIN pgtrickle.pgt_stream_tables b ON b.pgt_relid = d.relid",
                None,
                &[],
            )? {
                edges.push((row.get::<i64>(1)?.unwrap_or_default(), row.get::<i64>(2)?.unwrap_or_default()));
            }
            Ok::<_, pgrx::spi::Error>(edges)
        })
        .map_err(IvmError::from)
    })
}

/// Refuse a definition of stream table `id` that reads its own result, directly or
/// through other stream tables.
pub fn refuse_cycle(id: i64, name: &str) -> IvmResult<()> {
    let edges = dependencies()?;
    let mut stack = vec![id];
    let mut seen = std::collections::HashSet::new();
    while let Some(current) = stack.pop() {
        for (_, upstream) in edges.iter().filter(|(from, _)| *from == current) {
            if *upstream == id {
                return Err(IvmError::new(
                    PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                    format!("stream table {name} would read its own result (a cycle of stream tables)"),
                ));
            }
            if seen.insert(*upstream) {
                stack.push(*upstream);
            }
        }
    }
    Ok(())
}

/// Whether another stream table reads result table `relid` (lists it in `upstream`).
pub fn read_by_stream_tables(relid: pg_sys::Oid) -> IvmResult<bool> {
    as_extension_owner(|| {
        Ok(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pgtrickle.pgt_stream_tables WHERE $1::pg_catalog.regclass = ANY (upstream))",
            &[relid.into()],
        )?
        .unwrap_or(false))
    })
}

/// Record which stream tables `id` reads (column `upstream`).
pub fn record_upstream(id: i64) -> IvmResult<()> {
    let upstream: Vec<i64> = dependencies()?.into_iter().filter(|(from, _)| *from == id).map(|(_, to)| to).collect();
    write(
        "UPDATE pgtrickle.pgt_stream_tables SET upstream = coalesce((SELECT pg_catalog.array_agg(pgt_relid::pg_catalog.regclass \
         ORDER BY pgt_id) FROM pgtrickle.pgt_stream_tables WHERE pgt_id = ANY($2)), '{}') WHERE pgt_id = $1",
        &[id.into(), upstream.into()],
    )
}

/// `ids` ordered so that every stream table comes after those it reads (otherwise
/// keeping their order).
pub fn in_dependency_order(ids: &[i64], edges: &[(i64, i64)]) -> Vec<i64> {
    let mut ordered: Vec<i64> = Vec::with_capacity(ids.len());
    let mut visiting = std::collections::HashSet::new();
    fn visit(id: i64, ids: &[i64], edges: &[(i64, i64)], ordered: &mut Vec<i64>, visiting: &mut std::collections::HashSet<i64>) {
        if ordered.contains(&id) || !visiting.insert(id) {
            return; // placed, or a cycle (refused at definition) being walked
        }
        for (_, upstream) in edges.iter().filter(|(from, to)| *from == id && from != to) {
            if ids.contains(upstream) {
                visit(*upstream, ids, edges, ordered, visiting);
            }
        }
        ordered.push(id);
    }
    for id in ids {
        visit(*id, ids, edges, &mut ordered, &mut visiting);
    }
    ordered
}
