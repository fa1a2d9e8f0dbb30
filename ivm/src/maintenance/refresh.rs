//! One refresh of one stream table, inside the caller's transaction: DIFFERENTIAL
//! folds the lake's changes since the frontier into the result; FULL rebuilds it from
//! the lake as of the frontier's snapshot. Result, state and frontier change together
//! or not at all.

use super::context::{RefreshContext, describe, in_subtransaction};
use super::objects::{objects_for, refresh_change_relations};
use super::statements::{Objects, Statements};
use crate::analysis::parse::{LakeSource, analyze, lake_sources};
use crate::analysis::rows::Feed;
use crate::analysis::shape::{Kind, Shape, shape_of};
use crate::catalog::{self, Lock, RefreshMode, StreamTable, frontier_at, frontier_snapshot};
use crate::definition;
use crate::error::{IvmError, IvmResult};
use crate::privileges::owner_of;
use pgrx::prelude::*;
use pgrx::pg_sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Advance to the lake's current snapshot (differentially when the query allows).
    Differential,
    /// Rebuild at the frontier's snapshot (the current one when there is none).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: the frontier is the lake's current snapshot.
    UpToDate,
    Refreshed { snapshot: Option<i64>, changes: i64 },
}

fn run(sql: &str) -> IvmResult<u64> {
    Spi::connect_mut(|client| client.update(sql, None, &[]).map(|t| t.len() as u64)).map_err(IvmError::from)
}

fn exists(sql: &str) -> IvmResult<bool> {
    Ok(Spi::get_one::<bool>(sql)?.unwrap_or(false))
}

pub fn latest_snapshot(source: &LakeSource) -> IvmResult<i64> {
    Spi::get_one_with_args::<i64>("SELECT ducklake.ducklake_latest_snapshot_id($1::oid::regclass)", &[source.relid.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_FDW_ERROR, "the lake reported no current snapshot"))
}

/// The plan for maintaining `table`: its shape (None for FULL-mode tables), sources and objects.
pub struct Plan {
    pub shape: Option<Shape>,
    pub sources: Vec<LakeSource>,
    pub objects: Objects,
}

/// The plan of `table`, from its definition as the current search path spells it
/// (inside a `RefreshContext`: the recorded one), so that every expression deparsed
/// from it resolves to the objects the view is bound to.
pub fn plan_for(table: &StreamTable) -> IvmResult<Plan> {
    let query = analyze(&definition::query_text(table.id)?)?;
    let sources = lake_sources(query)?;
    let shape = match table.mode {
        RefreshMode::Differential => Some(shape_of(query)?),
        RefreshMode::Full => None,
    };
    let objects = objects_for(table.relid, &sources);
    Ok(Plan { shape, sources, objects })
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
    let (outcome, frontier, note) = {
        let context = RefreshContext::enter(owner, &table.settings)?;
        let plan = plan_for(&table)?;
        let keys: Vec<String> = plan.sources.iter().map(|s| s.key.clone()).collect();
        let Some(source) = plan.sources.first() else {
            // No lake source: nothing to track, every refresh is a rebuild.
            rebuild(&table, &plan, &context, None)?;
            drop(context);
            catalog::record_refresh(id, &serde_json::json!({"sources": {}}), None)?;
            return Ok(Some(Outcome::Refreshed { snapshot: None, changes: 0 }));
        };
        let frontier = frontier_snapshot(&table.frontier, &keys, &table.name)?;
        let latest = latest_snapshot(source)?;
        if let Some(f) = frontier {
            if f > latest {
                return Err(IvmError::invalid(format!(
                    "frontier of {} is snapshot {f}, but the lake's current snapshot is {latest}",
                    table.name
                ))
                .with_hint("Set the frontier to an existing snapshot (see ducklake.snapshots()) or to null."));
            }
        }
        match (requested, table.mode, frontier, plan.shape.as_ref()) {
            (Requested::Full, _, _, _) => {
                let at = frontier.unwrap_or(latest);
                rebuild(&table, &plan, &context, Some(at))?;
                (Outcome::Refreshed { snapshot: Some(at), changes: 0 }, frontier_at(&keys, at), None)
            }
            (Requested::Differential, _, Some(f), _) if f == latest => {
                drop(context);
                if table.status != "ACTIVE" || table.consecutive_errors > 0 {
                    catalog::clear_error(id)?;
                }
                return Ok(Some(Outcome::UpToDate));
            }
            (Requested::Differential, RefreshMode::Differential, Some(f), Some(shape)) => {
                match differential(table.relid, shape, &plan.objects, &plan.sources, f, latest, &context)? {
                    Some(changes) => (Outcome::Refreshed { snapshot: Some(latest), changes }, frontier_at(&keys, latest), None),
                    None => {
                        rebuild(&table, &plan, &context, Some(latest))?;
                        let note = format!(
                            "frontier snapshot {f} has expired from the lake; rebuilt in full at snapshot {latest}"
                        );
                        pgrx::warning!("stream table {}: {note}", table.name);
                        (Outcome::Refreshed { snapshot: Some(latest), changes: 0 }, frontier_at(&keys, latest), Some(note))
                    }
                }
            }
            (Requested::Differential, _, _, _) => {
                rebuild(&table, &plan, &context, Some(latest))?;
                (Outcome::Refreshed { snapshot: Some(latest), changes: 0 }, frontier_at(&keys, latest), None)
            }
        }
    };
    catalog::record_refresh(id, &frontier, note.as_deref())?;
    Ok(Some(outcome))
}

/// Replace the result (and state) with the query's result as of `snapshot`.
fn rebuild(table: &StreamTable, plan: &Plan, context: &RefreshContext, snapshot: Option<i64>) -> IvmResult<()> {
    if let Some(at) = snapshot {
        context.pin_snapshot(at);
    }
    match &plan.shape {
        Some(shape) => {
            let statements = Statements::new(shape, &plan.objects)?;
            let columns = shape.state_columns().iter().map(|c| crate::sql::ident(c)).collect::<Vec<_>>().join(", ");
            run(&format!("DELETE FROM {}", plan.objects.state))?;
            run(&format!("INSERT INTO {} ({columns}) {}", plan.objects.state, statements.state_from_source(None)))?;
            run(&format!("DELETE FROM {}", plan.objects.result))?;
            run(&statements.insert_all_results())?;
        }
        None => {
            run(&format!("DELETE FROM {}", plan.objects.result))?;
            run(&format!("INSERT INTO {} {}", plan.objects.result, definition::select_all(table.id)))?;
        }
    }
    context.unpin_snapshot();
    Ok(())
}

/// Fold changes `(from, to]` into state and result. Ok(None) when `from` has expired
/// from the lake (the caller rebuilds instead).
fn differential(
    result_relid: pg_sys::Oid,
    shape: &Shape,
    objects: &Objects,
    sources: &[LakeSource],
    from: i64,
    to: i64,
    context: &RefreshContext,
) -> IvmResult<Option<i64>> {
    refresh_change_relations(result_relid, objects)?;
    let statements = Statements::new(shape, objects)?;
    run(&format!("DELETE FROM {}", objects.buffer))?;
    // The rows' changes into the buffer; in a subtransaction, so that a frontier that
    // has expired from the lake (22023) leads to a rebuild instead.
    let fill = || -> IvmResult<u64> {
        let mut feeds = Vec::new();
        for (source, feed) in &objects.feeds {
            // With several sources, only those that changed have terms (see `rows`).
            let changed = objects.feeds.len() == 1
                || exists(&format!("SELECT EXISTS (SELECT FROM {feed} WHERE snapshot_id > {from} AND snapshot_id <= {to})"))?;
            if changed {
                feeds.push(Feed { source: *source, relid: crate::sql::regclass(feed)?, from });
            }
        }
        let Some(delta) = shape.rows.delta_sql(&feeds, to) else {
            return Ok(0);
        };
        // Every term reads the sources whose changes it does not take at `to`.
        context.pin_snapshot(to);
        let fill = format!("INSERT INTO {} {delta}", objects.buffer);
        pgrx::debug1!("pgtrickle: changes since snapshot {from}: {fill}");
        let fetched = run(&fill)?;
        context.unpin_snapshot();
        Ok(fetched)
    };
    let fetched = match in_subtransaction(fill) {
        Ok(result) => result?,
        Err(error) => {
            let (code, _) = describe(&error);
            if code == PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE {
                for source in sources {
                    if frontier_expired(source, from)? {
                        return Ok(None);
                    }
                }
            }
            // As it was raised: SQLSTATE, message, detail and hint.
            return Err(super::context::to_ivm_error(&error));
        }
    };
    if fetched == 0 {
        return Ok(Some(0));
    }
    run(&format!("DELETE FROM {}", objects.affected))?;
    run(&statements.apply_delta())?;
    if exists(&statements.needs_rescan())? {
        context.pin_snapshot(to);
        run(&statements.rescan())?;
        context.unpin_snapshot();
    }
    let with_nulls = shape.kind != Kind::Scalar && exists(&statements.affected_has_null_key())?;
    run(&statements.delete_affected_results(false))?;
    if with_nulls {
        run(&statements.delete_affected_results(true))?;
    }
    run(&statements.insert_affected_results())?;
    if shape.kind != Kind::Scalar {
        run(&statements.delete_empty_groups(false))?;
        if with_nulls {
            run(&statements.delete_empty_groups(true))?;
        }
    }
    Ok(Some(fetched as i64))
}

/// Is `snapshot` older than the lake's oldest remaining snapshot?
fn frontier_expired(source: &LakeSource, snapshot: i64) -> IvmResult<bool> {
    let oldest: Option<i64> = Spi::get_one_with_args(
        "SELECT min(snapshot_id) FROM ducklake.snapshots((SELECT srvname FROM pg_foreign_server WHERE oid = $1))",
        &[source.server.into()],
    )?;
    Ok(oldest.is_some_and(|oldest| snapshot < oldest))
}
