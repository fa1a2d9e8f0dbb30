//! One refresh of one stream table, inside the caller's transaction: DIFFERENTIAL
//! folds the sources' changes since the frontier into the result (or rebuilds it at
//! the lakes' current snapshots when that was the cheaper way, see `refresh_cost`);
//! FULL rebuilds it from the lake as of the frontier's snapshot (Postgres tables as
//! they are: they cannot travel in time). Result, state and frontier change together
//! or not at all.

use super::capture::{forget_seen, still_capturable, written_by_this_transaction};
use super::context::{RefreshContext, describe, in_subtransaction};
use super::lakes::{Lake, Lakes};
use super::objects::{objects_for, refresh_change_relations, replay_tables};
use super::snapshot::ReadSnapshot;
use super::timing::timed;
use super::statements::{Objects, Statements};
use crate::analysis::parse::{LakeSource, PostgresSource, analyze, lake_sources, relations_read};
use crate::analysis::rows::{Feed, Unseen};
use crate::analysis::shape::{Kind, Shape, shape_of};
use crate::analysis::views::expand_views;
use crate::catalog::{self, Lock, RefreshMode, StreamTable, frontier_seen};
use crate::definition;
use crate::error::{IvmError, IvmResult};
use crate::privileges::owner_of;
use ducklake_formats::refresh_cost::Ran;
use pgrx::prelude::*;
use pgrx::pg_sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Advance to the lake's current snapshot (differentially when the query allows and
    /// that is not the costlier way).
    Differential,
    /// Rebuild at the frontier's snapshot (the current one when there is none).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: the frontier is the lake's current snapshot.
    UpToDate,
    /// This many change rows folded in.
    Refreshed { changes: i64 },
    /// Rebuilt: every row of the result written again.
    Rebuilt,
}

fn run(sql: &str) -> IvmResult<u64> {
    timed(sql, || Spi::connect_mut(|client| client.update(sql, None, &[]).map(|t| t.len() as u64)).map_err(IvmError::from))
}

fn exists(sql: &str) -> IvmResult<bool> {
    timed(sql, || Ok(Spi::get_one::<bool>(sql)?.unwrap_or(false)))
}

/// The plan for maintaining `table`: its shape (None for FULL-mode tables), sources and objects.
pub struct Plan {
    pub shape: Option<Shape>,
    /// Every lake table the query reads.
    pub sources: Vec<LakeSource>,
    /// The Postgres tables a differential stream table reads (their changes are captured).
    pub postgres: Vec<PostgresSource>,
    /// Whether the query reads relations other than lake tables.
    pub reads_other: bool,
    /// The views a differential table's query reads, at any depth (expanded).
    pub views: Vec<pg_sys::Oid>,
    pub objects: Objects,
}

/// The plan of `table`, from its definition as the current search path spells it
/// (inside a `RefreshContext`: the recorded one), so that every expression deparsed
/// from it resolves to the objects the view is bound to.
pub fn plan_for(table: &StreamTable) -> IvmResult<Plan> {
    let query = analyze(&definition::query_text(table.id)?)?;
    // A differential table reads a view's tables as sources (a FULL one reads the view).
    let views = if table.mode == RefreshMode::Differential { expand_views(query)? } else { Vec::new() };
    let sources = lake_sources(query)?;
    let shape = match table.mode {
        RefreshMode::Differential => Some(shape_of(query)?),
        RefreshMode::Full => None,
    };
    let postgres: Vec<PostgresSource> = shape.as_ref().map(Shape::postgres_sources).unwrap_or_default();
    let objects = objects_for(table.relid, &sources, &postgres);
    let reads_other = relations_read(query).len() > sources.len();
    Ok(Plan { shape, sources, postgres, reads_other, views, objects })
}

/// Where a refresh starts from and goes to.
struct Positions {
    /// Each lake's snapshot in the frontier, and its current one (assumed, see
    /// `Lakes::unless_unchanged`, when `lakes_assumed`).
    lakes: Lakes,
    lakes_assumed: bool,
    /// Per Postgres source, with its log: the `pg_snapshot` the frontier has seen it up to.
    seen: Vec<(PostgresSource, String, Option<String>)>,
}

/// Refresh stream table `id`. With `Lock::SkipLocked` returns Ok(None) when another
/// session is refreshing it.
pub fn refresh(id: i64, requested: Requested, lock: Lock) -> IvmResult<Option<Outcome>> {
    if !matches!(lock, Lock::None) {
        // Sources before the result table: DROP of a source locks it, then the view,
        // then the result table (which depends on the view).
        definition::lock_sources(id)?;
        catalog::lock_result_table(id, pg_sys::RowExclusiveLock)?;
    }
    let Some(table) = catalog::load(id, lock)? else {
        return Ok(None);
    };
    // Paused (or rewound) since the scheduler listed it: the row, now locked, is current.
    if matches!(lock, Lock::SkipLocked) && table.status == "PAUSED" {
        return Ok(None);
    }
    let owner = owner_of(table.relid)?;
    let context = RefreshContext::enter(owner, &table.settings)?;
    let plan = plan_for(&table)?;
    // A view redefined since the last refresh changes what the query means, though no
    // source changed: the result is rebuilt (see `analysis::views`).
    let (views_now, redefined) = view_redefinition(&table, &plan)?;
    let record_views = views_now != table.view_definitions;
    if redefined.is_some() {
        // A view may now read the stream table's own result, or another stream table's.
        catalog::refuse_cycle(id, &table.name)?;
        catalog::record_upstream(id)?;
    }
    require_captured(&table, &plan)?;
    if plan.sources.is_empty() && plan.postgres.is_empty() {
        // No source to track: every refresh is a rebuild.
        let started = std::time::Instant::now();
        let read = ReadSnapshot::take();
        rebuild(&table, &plan, &context, &read, &[])?;
        drop(context);
        let ran = Ran::Rebuilt { chosen: false };
        catalog::record_refresh(id, &serde_json::json!({"sources": {}}), None, ran, Some(elapsed_ms(started)))?;
        if record_views {
            catalog::record_view_definitions(id, &views_now)?;
        }
        return Ok(Some(Outcome::Rebuilt));
    }
    let mut positions = positions(&table, &plan)?;
    for (source, log, _) in &positions.seen {
        still_capturable(source)?;
        if written_by_this_transaction(log)? {
            return Err(IvmError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "stream table {} cannot be refreshed in the transaction that changed its source {}",
                    table.name,
                    crate::sql::relation_name(source.relid)
                ),
            )
            .with_hint("Refresh it after this transaction commits (the scheduler does)."));
        }
    }
    let lakes = &positions.lakes;
    let all_seen = positions.seen.iter().all(|(_, _, seen)| seen.is_some());
    // A FULL-mode table reading anything but lake tables is rebuilt every time: what
    // else it reads has no position to compare.
    let only_lake = table.mode == RefreshMode::Differential || !plan.reads_other;
    if requested == Requested::Differential
        && only_lake
        && redefined.is_none()
        && lakes.up_to_date()
        && all_seen
        && !any_unseen(&positions)?
    {
        drop(context);
        if table.status != "ACTIVE" || table.consecutive_errors > 0 {
            catalog::clear_error(id)?;
        }
        return Ok(Some(Outcome::UpToDate));
    }
    if positions.lakes_assumed {
        positions.lakes = Lakes::of(&plan.sources, &table.frontier, &table.name)?;
    }
    let lakes = &positions.lakes;
    let read = ReadSnapshot::take();
    let differential_possible = table.mode == RefreshMode::Differential && lakes.all_have_frontier() && all_seen;
    // Each way of refreshing timed on its own (see `refresh_cost`): a rebuild that
    // follows a differential attempt that gave up costs what the rebuild took.
    let rebuild_timed = |at: &[(&Lake, i64)]| -> IvmResult<f64> {
        let started = std::time::Instant::now();
        rebuild(&table, &plan, &context, &read, at)?;
        Ok(elapsed_ms(started))
    };
    // A rebuild at the lakes' current snapshots, noted with its reason when it stands
    // in for a differential refresh that could not be made.
    let rebuild_at_latest = |reason: Option<String>, chosen: bool| -> IvmResult<_> {
        let at = lakes.at_latest();
        let elapsed = rebuild_timed(&at)?;
        let note = reason.map(|reason| format!("{reason}; rebuilt in full"));
        if let Some(note) = &note {
            pgrx::warning!("stream table {}: {note}", table.name);
        }
        Ok((Outcome::Rebuilt, at, note, Ran::Rebuilt { chosen }, Some(elapsed)))
    };
    let (outcome, at, note, ran, elapsed) = match (requested, plan.shape.as_ref()) {
        (Requested::Full, _) => {
            let at = lakes.at_frontier();
            let elapsed = rebuild_timed(&at)?;
            (Outcome::Rebuilt, at, None, Ran::Rebuilt { chosen: false }, Some(elapsed))
        }
        (Requested::Differential, _) if redefined.is_some() => rebuild_at_latest(redefined, false)?,
        (Requested::Differential, Some(_)) if differential_possible && rebuild_is_cheaper(&table, &plan, &positions, &read)? => {
            rebuild_at_latest(None, true)?
        }
        (Requested::Differential, Some(shape)) if differential_possible => {
            let started = std::time::Instant::now();
            match differential(table.id, table.relid, shape, &plan, &positions, &read, &context)? {
                // One that had no change to read says nothing of what changes cost.
                Applied::Changes { rows: changes, read } => {
                    let elapsed = read.then(|| elapsed_ms(started));
                    (Outcome::Refreshed { changes }, lakes.at_latest(), None, Ran::Differential, elapsed)
                }
                Applied::Rebuild(reason) => rebuild_at_latest(Some(reason), false)?,
            }
        }
        (Requested::Differential, _) => rebuild_at_latest(None, false)?,
    };
    let seen_now = read.text()?;
    drop(read);
    for (_, log, _) in &positions.seen {
        forget_seen(log, &seen_now)?;
    }
    drop(context);
    let postgres: Vec<(String, String)> = plan.postgres.iter().map(|p| (p.key.clone(), seen_now.clone())).collect();
    let frontier = catalog::frontier_of(&Lakes::frontier_entries(&at), &postgres);
    catalog::record_refresh(id, &frontier, note.as_deref(), ran, elapsed)?;
    if record_views {
        catalog::record_view_definitions(id, &views_now)?;
    }
    Ok(Some(outcome))
}

/// Whether a refresh that could fold changes in differentially should rebuild instead:
/// adaptive refreshes are on, its last differential refresh took longer than its last
/// rebuild (see `refresh_cost`), no other stream table reads it (a rebuild rewrites
/// every row of the result, which each of them would then read as changes), and one
/// of its own sources changed (a commit to another table of a lake moves the lake's
/// snapshot too, and a differential refresh finds that out cheaply).
fn rebuild_is_cheaper(table: &StreamTable, plan: &Plan, positions: &Positions, read: &ReadSnapshot) -> IvmResult<bool> {
    if !(crate::gucs::adaptive_refresh() && table.costs.rebuild_is_cheaper()) || catalog::read_by_stream_tables(table.relid)? {
        return Ok(false);
    }
    for (source, _) in &plan.objects.feeds {
        let Some(lake) = positions.lakes.lake_of(*source) else { continue };
        let Some(from) = lake.from else { continue };
        if lake_source_changed(read, *source, from, lake.to)? {
            return Ok(true);
        }
    }
    any_unseen(positions)
}

/// Whether lake source `source` changed after snapshot `from`, up to `to`: the lake's
/// catalog says, without reading its changes.
fn lake_source_changed(read: &ReadSnapshot, source: pg_sys::Oid, from: i64, to: i64) -> IvmResult<bool> {
    read.exists(&format!("SELECT ducklake.table_changed({}::pg_catalog.oid::pg_catalog.regclass, {from}, {to})", source.to_u32()))
}

fn elapsed_ms(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Refuse a refresh of `table` whose query reads a Postgres table whose changes it does
/// not capture: one a view reads since it was redefined. (Its triggers would take
/// locks a refresh does not take, in an order that could deadlock with other
/// refreshes.) The other internals stay valid when a view is redefined: a view's
/// columns keep their types, so the query's keys and aggregates keep theirs, and a new
/// lake source gets its mirrors at the next differential refresh.
fn require_captured(table: &StreamTable, plan: &Plan) -> IvmResult<()> {
    for source in &plan.postgres {
        let log = plan.objects.logs.iter().find(|(relid, _)| *relid == source.relid).map(|(_, log)| log.as_str()).unwrap_or_default();
        if crate::sql::regclass(log).is_err() {
            return Err(IvmError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "stream table {} reads {}, whose changes it does not capture (a view it reads was redefined to read it)",
                    table.name,
                    crate::sql::relation_name(source.relid)
                ),
            )
            .with_hint("Drop the stream table and create it again."));
        }
    }
    Ok(())
}

/// The definitions of the views `table`'s query reads as they are now (see
/// `catalog::view_definitions`), and which one was redefined since its last refresh,
/// if any. (Nothing recorded: the table was never refreshed, or before views were
/// recorded.)
pub fn view_redefinition(table: &StreamTable, plan: &Plan) -> IvmResult<(serde_json::Value, Option<String>)> {
    let now = catalog::view_definitions(&plan.views)?;
    let recorded = table.view_definitions.as_object().is_some_and(|views| !views.is_empty());
    let redefined = (recorded && now != table.view_definitions).then(|| redefined_view(&table.view_definitions, &now));
    Ok((now, redefined))
}

/// Which view `now` (digests by oid, see `catalog::view_definitions`) has that `before`
/// has not, or has otherwise: the reason a refresh rebuilds.
fn redefined_view(before: &serde_json::Value, now: &serde_json::Value) -> String {
    let changed = now.as_object().and_then(|now| {
        now.iter().find(|(oid, digest)| before.get(oid.as_str()) != Some(digest)).map(|(oid, _)| oid.clone())
    });
    match changed.and_then(|oid| oid.parse::<u32>().ok()) {
        Some(oid) => format!("view {} was redefined", crate::sql::relation_name(pg_sys::Oid::from(oid))),
        // Not reached: `now` has every view the query reads (the query is fixed).
        None => "a view the query reads was redefined".into(),
    }
}

/// The frontier's and the lakes' current positions of `table`'s sources.
fn positions(table: &StreamTable, plan: &Plan) -> IvmResult<Positions> {
    let (lakes, lakes_assumed) = Lakes::unless_unchanged(&plan.sources, &table.frontier, &table.name, true)?;
    Ok(Positions { lakes, lakes_assumed, seen: postgres_seen(table, plan)? })
}

/// Per Postgres source, with its log: the `pg_snapshot` the frontier has seen it up to.
fn postgres_seen(table: &StreamTable, plan: &Plan) -> IvmResult<Vec<(PostgresSource, String, Option<String>)>> {
    let mut seen = Vec::new();
    for source in &plan.postgres {
        let log = plan.objects.logs.iter().find(|(relid, _)| *relid == source.relid).map(|(_, l)| l.clone()).unwrap_or_default();
        seen.push((source.clone(), log, frontier_seen(&table.frontier, &source.key, &table.name)?));
    }
    Ok(seen)
}

/// Has any Postgres source a change its frontier has not seen?
fn any_unseen(positions: &Positions) -> IvmResult<bool> {
    Ok(first_unseen(&positions.seen)?.is_some())
}

/// The first Postgres source with a change its frontier has not seen.
fn first_unseen(seen: &[(PostgresSource, String, Option<String>)]) -> IvmResult<Option<&PostgresSource>> {
    for (source, log, seen) in seen {
        let Some(seen) = seen else { return Ok(Some(source)) };
        let condition = "NOT pg_catalog.pg_visible_in_snapshot(__pgt_xid, $1::pg_catalog.pg_snapshot)";
        let unseen = Spi::get_one_with_args::<bool>(
            &format!("SELECT EXISTS (SELECT FROM {log} WHERE {condition}) OR {}", super::capture::truncated_sql(log, condition)?),
            &[seen.as_str().into()],
        )?;
        if unseen.unwrap_or(false) {
            return Ok(Some(source));
        }
    }
    Ok(None)
}

/// A Postgres source of `table` changed since its frontier, which a check of the
/// table against its query cannot take into account (Postgres tables are read as
/// they are now): the source's name.
pub fn changed_postgres_source(table: &StreamTable, plan: &Plan) -> IvmResult<Option<String>> {
    let seen = postgres_seen(table, plan)?;
    Ok(first_unseen(&seen)?.map(|s| crate::sql::relation_name(s.relid)))
}

/// Replace the result (and state) with the query's result: each lake as of its
/// snapshot in `at`, Postgres tables as `read` sees them.
fn rebuild(table: &StreamTable, plan: &Plan, context: &RefreshContext, read: &ReadSnapshot, at: &[(&Lake, i64)]) -> IvmResult<()> {
    Lakes::pin(context, at);
    match &plan.shape {
        Some(shape) if shape.kind != Kind::Windowed => {
            let statements = Statements::new(shape, &plan.objects)?;
            let columns = shape.state_columns().iter().map(|c| crate::sql::ident(c)).collect::<Vec<_>>().join(", ");
            run(&format!("DELETE FROM {}", plan.objects.state))?;
            read.run(&format!("INSERT INTO {} ({columns}) {}", plan.objects.state, statements.state_from_source(None)))?;
            run(&format!("DELETE FROM {}", plan.objects.result))?;
            // HAVING's subqueries may read Postgres tables: in the snapshot of the frontier.
            read.run(&statements.insert_all_results())?;
        }
        // FULL-mode tables and windowed ones, whose result the query computes itself.
        _ => {
            run(&format!("DELETE FROM {}", plan.objects.result))?;
            read.run(&format!("INSERT INTO {} {}", plan.objects.result, definition::select_all(table.id)))?;
        }
    }
    context.unpin_snapshot();
    Ok(())
}

/// More changed sources than this and a refresh rebuilds instead.
const MAX_CHANGED_SOURCES: usize = 8;

/// What a differential refresh did.
enum Applied {
    /// The changes were folded in: this many change rows, and whether any source had
    /// changes to read (none: a commit to another table of the lake).
    Changes { rows: i64, read: bool },
    /// They cannot be (the reason): the caller rebuilds.
    Rebuild(String),
}

/// Fold the changes since the frontier into state and result: lake changes up to the
/// lake's current snapshot, Postgres changes up to `read`.
fn differential(
    table_id: i64,
    result_relid: pg_sys::Oid,
    shape: &Shape,
    plan: &Plan,
    positions: &Positions,
    read: &ReadSnapshot,
    context: &RefreshContext,
) -> IvmResult<Applied> {
    let objects = &plan.objects;
    if let Some(reason) = refresh_change_relations(result_relid, objects)? {
        return Ok(Applied::Rebuild(reason));
    }
    let statements = Statements::new(shape, objects)?;
    let sources = objects.feeds.len() + objects.logs.len();
    let lakes = &positions.lakes;
    run(&format!("DELETE FROM {}", objects.buffer))?;
    // The rows' changes into the buffer; in a subtransaction, so that a frontier that
    // has expired from the lake (22023) leads to a rebuild instead.
    // Ok(None): no source had changes to read.
    let fill = || -> IvmResult<Result<Option<u64>, String>> {
        let mut feeds = Vec::new();
        for ((source, feed), (_, old)) in objects.feeds.iter().zip(&objects.olds) {
            let Some(lake) = lakes.lake_of(*source) else { continue };
            let (Some(from), to) = (lake.from, lake.to) else { continue };
            // With several sources, only those that changed have terms (see `rows`);
            // the lake's catalog says which, without reading their feeds.
            let changed = sources == 1 || lake_source_changed(read, *source, from, to)?;
            if changed {
                feeds.push(Feed {
                    source: *source,
                    relid: crate::sql::regclass(feed)?,
                    unseen: Unseen::Between(from, to),
                    old: Some(crate::sql::regclass(old)?),
                });
            }
        }
        for (source, log, seen) in &positions.seen {
            let seen = seen.clone().unwrap_or_default();
            let unseen = format!("NOT pg_catalog.pg_visible_in_snapshot(__pgt_xid, {}::pg_catalog.pg_snapshot)", crate::sql::literal(&seen));
            if read.exists(&format!("SELECT {}", super::capture::truncated_sql(log, &unseen)?))? {
                return Ok(Err(format!("{} was truncated", crate::sql::relation_name(source.relid))));
            }
            if read.exists(&format!("SELECT EXISTS (SELECT FROM {log} WHERE {unseen})"))? {
                feeds.push(Feed { source: source.relid, relid: crate::sql::regclass(log)?, unseen: Unseen::NotVisibleIn(seen), old: None });
            }
        }
        if feeds.len() > MAX_CHANGED_SOURCES {
            // 2^n - 1 delta terms: a rebuild is cheaper.
            return Ok(Err(format!("{} sources changed at once", feeds.len())));
        }
        // Postgres tables as they were, where a term may read them so (see `replay`).
        if shape.rows.reads_as_it_was() {
            let read_columns = definition::read_columns(table_id)?;
            // The changed Postgres tables that terms read (one only HAVING reads is no term's).
            let occurring = shape.rows.all_occurrences();
            let replayed: Vec<pg_sys::Oid> = feeds
                .iter()
                .filter(|f| matches!(f.unseen, Unseen::NotVisibleIn(_)) && occurring.iter().any(|o| o.source.relid() == f.source))
                .map(|f| f.source)
                .collect();
            for (source, was) in replay_tables(result_relid, objects, &replayed, &read_columns)? {
                let Some(feed) = feeds.iter_mut().find(|f| f.source == source) else { continue };
                let Unseen::NotVisibleIn(seen) = &feed.unseen else { continue };
                let columns: Vec<i16> = read_columns.iter().filter(|(relid, _)| *relid == source).map(|(_, attno)| *attno).collect();
                run(&format!("TRUNCATE {}", crate::sql::relation_name(was)))?;
                read.run(&super::replay::fill_sql(source, feed.relid, was, seen, &columns)?)?;
                feed.old = Some(was);
            }
        }
        let Some(delta) = shape.rows.delta_sql(&feeds)? else {
            return Ok(Ok(None));
        };
        // Every term reads the sources whose changes it does not take as they are now.
        Lakes::pin(context, &lakes.at_latest());
        lakes.pin_frontier(context);
        let fill = format!("INSERT INTO {} {delta}", objects.buffer);
        pgrx::debug1!("pgtrickle: changes since the frontier: {fill}");
        let fetched = read.run(&fill)?;
        context.unpin_snapshot();
        Ok(Ok(Some(fetched)))
    };
    // The FDW's refusal of a snapshot whose changes DuckLake cannot order (a
    // transaction changed rows twice, see its duck/change_feed.rs): its message.
    let refusal = |error: &pgrx::pg_sys::panic::CaughtError| {
        let (code, message) = describe(error);
        (code == PgSqlErrorCode::ERRCODE_DATA_EXCEPTION && message.starts_with("ambiguous change feed")).then_some(message)
    };
    let mut attempt = in_subtransaction(&fill);
    if let Err(error) = &attempt {
        // Once the FDW knows those snapshots, it reads them by time travel.
        if let Some(refused) = refusal(error) {
            let resolve = || -> IvmResult<bool> {
                let mut found = false;
                for (source, _) in &objects.feeds {
                    let Some(lake) = lakes.lake_of(*source) else { continue };
                    let Some(from) = lake.from else { continue };
                    found |= exists(&format!(
                        "SELECT pg_catalog.cardinality(ducklake.resolve_changes({}::pg_catalog.oid::pg_catalog.regclass, {}, {})) > 0",
                        source.to_u32(),
                        from + 1,
                        lake.to
                    ))?;
                }
                Ok(found)
            };
            // If they cannot be found, the rows as they are now are still exact; a
            // cancel is not a reason to rebuild.
            match in_subtransaction(resolve) {
                Ok(Ok(true)) => attempt = in_subtransaction(&fill),
                Err(caught) if describe(&caught).0 == PgSqlErrorCode::ERRCODE_QUERY_CANCELED => {
                    return Err(super::context::to_ivm_error(&caught));
                }
                _ => return Ok(Applied::Rebuild(refused)),
            }
        }
    }
    let read_changes = matches!(attempt, Ok(Ok(Ok(Some(_)))));
    let fetched = match attempt {
        Ok(result) => match result? {
            Ok(fetched) => fetched.unwrap_or(0),
            Err(reason) => return Ok(Applied::Rebuild(reason)),
        },
        Err(error) => {
            // Still refused: the rows as they are now are exact.
            if let Some(refused) = refusal(&error) {
                return Ok(Applied::Rebuild(refused));
            }
            let (code, message) = describe(&error);
            // A source read as it was at the frontier (see `rows`) that a lake rename has
            // since changed: its table or column is not there under the name it has now.
            // The sources as they are now are what a rebuild reads.
            if matches!(
                code,
                PgSqlErrorCode::ERRCODE_FDW_COLUMN_NAME_NOT_FOUND | PgSqlErrorCode::ERRCODE_FDW_TABLE_NOT_FOUND
            ) {
                return Ok(Applied::Rebuild(format!("{message} (reading a source as of the frontier)")));
            }
            if code == PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE {
                for lake in &lakes.0 {
                    let Some(from) = lake.from else { continue };
                    if lake.expired(from)? {
                        let which = if lakes.0.len() > 1 { format!("the lake of server {}", lake.server_name) } else { "the lake".into() };
                        return Ok(Applied::Rebuild(format!("frontier snapshot {from} has expired from {which}")));
                    }
                }
            }
            // A term reads some sources as they are and others as they were: a
            // combination that never existed, where `1 / (SELECT count(*) ...)` can
            // divide by zero or a scalar subquery find two rows although neither the
            // old nor the new data does. The rebuild reads one state (and raises the
            // error if that state has it too).
            if matches!(
                code,
                PgSqlErrorCode::ERRCODE_DIVISION_BY_ZERO
                    | PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
                    | PgSqlErrorCode::ERRCODE_INVALID_ARGUMENT_FOR_LOG
                    | PgSqlErrorCode::ERRCODE_INVALID_ARGUMENT_FOR_POWER_FUNCTION
                    | PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW
                    | PgSqlErrorCode::ERRCODE_SUBSTRING_ERROR
                    | PgSqlErrorCode::ERRCODE_CARDINALITY_VIOLATION
            ) {
                return Ok(Applied::Rebuild(format!("{message} (in the change of the sources' rows)")));
            }
            // As it was raised: SQLSTATE, message, detail and hint.
            return Err(super::context::to_ivm_error(&error));
        }
    };
    // Statements that read the sources read them at the snapshot the refresh goes to.
    let read_sources = |sql: &str| -> IvmResult<u64> {
        Lakes::pin(context, &lakes.at_latest());
        let processed = read.run(sql)?;
        context.unpin_snapshot();
        Ok(processed)
    };
    if shape.kind == Kind::Windowed {
        if fetched > 0 {
            run(&statements.delete_touched_partitions(false))?;
            if exists(&statements.buffer_has_null_key())? {
                run(&statements.delete_touched_partitions(true))?;
            }
            read_sources(&statements.insert_touched_partitions()?)?;
        }
        return Ok(Applied::Changes { rows: fetched as i64, read: read_changes });
    }
    // A subquery of HAVING over a changed source can change the result without a row.
    if fetched == 0 && !shape.reprojects_all() {
        return Ok(Applied::Changes { rows: 0, read: read_changes });
    }
    run(&format!("DELETE FROM {}", objects.affected))?;
    run(&statements.apply_delta())?;
    if exists(&statements.needs_rescan())? {
        read_sources(&statements.rescan())?;
    }
    let with_nulls = shape.kind != Kind::Scalar && exists(&statements.affected_has_null_key())?;
    if shape.reprojects_all() {
        // A changed group can move any other into or out of the first rows; a changed
        // subquery in HAVING, any group in or out of the result.
        run(&statements.delete_all_results())?;
        read_sources(&statements.insert_all_results())?;
    } else {
        run(&statements.delete_affected_results(false))?;
        if with_nulls {
            run(&statements.delete_affected_results(true))?;
        }
        run(&statements.insert_affected_results())?;
    }
    if shape.kind != Kind::Scalar {
        run(&statements.delete_empty_groups(false))?;
        if with_nulls {
            run(&statements.delete_empty_groups(true))?;
        }
    }
    Ok(Applied::Changes { rows: fetched as i64, read: read_changes })
}
