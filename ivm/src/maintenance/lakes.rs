//! The lakes a stream table reads, each with its own position. A lake's snapshot ids
//! are one sequence for all its tables, but two lakes (two servers) count apart: a
//! refresh reads each lake's changes from its frontier snapshot to its current one,
//! pins each lake at its own snapshot (the FDW takes a JSON object of ids by server
//! name, see its `ducklake.snapshot_id`), and records each source's snapshot.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::context::RefreshContext;
use crate::analysis::parse::LakeSource;
use crate::catalog::frontier_snapshot;
use crate::error::{IvmError, IvmResult};

/// The sources of one server and where a refresh takes them from and to.
pub struct Lake {
    pub server: pg_sys::Oid,
    pub server_name: String,
    pub sources: Vec<LakeSource>,
    /// The frontier's snapshot of this lake (None: not refreshed yet, or set to null).
    pub from: Option<i64>,
    /// The lake's current snapshot.
    pub to: i64,
}

impl Lake {
    pub fn keys(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.key.clone()).collect()
    }

    /// Is `snapshot` older than the lake's oldest remaining snapshot?
    pub fn expired(&self, snapshot: i64) -> IvmResult<bool> {
        let oldest: Option<i64> =
            Spi::get_one_with_args("SELECT min(snapshot_id) FROM ducklake.snapshots($1)", &[self.server_name.as_str().into()])?;
        Ok(oldest.is_some_and(|oldest| snapshot < oldest))
    }
}

/// The lakes of a stream table's sources, in the order the query first reads them.
pub struct Lakes(pub Vec<Lake>);

impl Lakes {
    /// Group `sources` by server: each lake's frontier snapshot (its sources must agree)
    /// and current one. `frontier` is the stream table's, `table` its name for errors.
    pub fn of(sources: &[LakeSource], frontier: &serde_json::Value, table: &str) -> IvmResult<Lakes> {
        Ok(Lakes::unless_unchanged(sources, frontier, table, false)?.0)
    }

    /// `of`, except that, `may_assume` and nothing committed to any lake since the
    /// frontier, each lake's current snapshot is taken to be its frontier's without
    /// asking DuckDB (a millisecond per lake, most of an empty refresh); then also
    /// true. Only for learning that there is nothing to read: a refresh that reads
    /// anything asks `of` (DuckDB's transaction may see an older snapshot than the
    /// catalog does, and the changes are read through it).
    pub fn unless_unchanged(
        sources: &[LakeSource],
        frontier: &serde_json::Value,
        table: &str,
        may_assume: bool,
    ) -> IvmResult<(Lakes, bool)> {
        let mut lakes: Vec<Lake> = Vec::new();
        for source in sources {
            match lakes.iter_mut().find(|lake| lake.server == source.server) {
                Some(lake) => lake.sources.push(source.clone()),
                None => lakes.push(Lake {
                    server: source.server,
                    server_name: source.server_name.clone(),
                    sources: vec![source.clone()],
                    from: None,
                    to: 0,
                }),
            }
        }
        // A frontier of one source is read even when its key differs (the foreign
        // table was renamed): only when the table has one lake source in all.
        let single = sources.len() == 1;
        let several = lakes.len() > 1;
        for lake in &mut lakes {
            lake.from = frontier_snapshot(frontier, &lake.keys(), single, table)?;
        }
        let mut unchanged = may_assume;
        for lake in &lakes {
            unchanged = unchanged && lake.from.is_some() && lake.from == Some(last_committed_snapshot(&lake.sources[0])?);
        }
        for lake in &mut lakes {
            lake.to = match lake.from {
                Some(from) if unchanged => from,
                _ => latest_snapshot(&lake.sources[0])?,
            };
            if let Some(from) = lake.from.filter(|from| *from > lake.to) {
                let (to, which) = (lake.to, if several { format!("server {}'s lake", lake.server_name) } else { "the lake".into() });
                return Err(IvmError::invalid(format!(
                    "frontier of {table} is snapshot {from} of {which}, but its current snapshot is {to}"
                ))
                .with_hint("Set the frontier to an existing snapshot (see ducklake.snapshots()) or to null."));
            }
        }
        Ok((Lakes(lakes), unchanged))
    }

    /// Whether every lake is at its current snapshot already.
    pub fn up_to_date(&self) -> bool {
        self.0.iter().all(|lake| lake.from == Some(lake.to))
    }

    /// Whether every lake has a frontier snapshot to read changes from.
    pub fn all_have_frontier(&self) -> bool {
        self.0.iter().all(|lake| lake.from.is_some())
    }

    pub fn lake_of(&self, source: pg_sys::Oid) -> Option<&Lake> {
        self.0.iter().find(|lake| lake.sources.iter().any(|s| s.relid == source))
    }

    /// Each lake at its frontier snapshot, or its current one when it has none: what
    /// a FULL refresh rebuilds from.
    pub fn at_frontier(&self) -> Vec<(&Lake, i64)> {
        self.0.iter().map(|lake| (lake, lake.from.unwrap_or(lake.to))).collect()
    }

    /// Each lake at its current snapshot: where a differential refresh goes to.
    pub fn at_latest(&self) -> Vec<(&Lake, i64)> {
        self.0.iter().map(|lake| (lake, lake.to)).collect()
    }

    /// Read the sources as the lakes were at `positions` (see `pin_value`).
    pub fn pin(context: &RefreshContext, positions: &[(&Lake, i64)]) {
        if let Some(value) = pin_value(positions) {
            context.pin_snapshot(&value);
        }
    }

    /// Read the mirrors of the sources as of the lakes' frontiers (lakes without one
    /// have no terms that read them).
    pub fn pin_frontier(&self, context: &RefreshContext) {
        let positions: Vec<(&Lake, i64)> = self.0.iter().filter_map(|lake| Some((lake, lake.from?))).collect();
        if let Some(value) = pin_value(&positions) {
            context.pin_frontier(&value);
        }
    }

    /// The frontier's lake entries: each source's key with its lake's snapshot.
    pub fn frontier_entries(positions: &[(&Lake, i64)]) -> Vec<(String, i64)> {
        positions.iter().flat_map(|(lake, at)| lake.keys().into_iter().map(move |key| (key, *at))).collect()
    }
}

/// A pin for the FDW's snapshot settings: a JSON object of ids by server name (a
/// plain id would pin every server, also one whose table the query reads unseen,
/// behind a view, at another lake's id).
fn pin_value(positions: &[(&Lake, i64)]) -> Option<String> {
    if positions.is_empty() {
        return None;
    }
    let ids: serde_json::Map<String, serde_json::Value> =
        positions.iter().map(|(lake, at)| (lake.server_name.clone(), serde_json::Value::from(*at))).collect();
    Some(serde_json::Value::Object(ids).to_string())
}

/// The newest snapshot `source`'s lake has committed (see the FDW's
/// `last_committed_snapshot_id`: read from the catalog itself when it can be).
fn last_committed_snapshot(source: &LakeSource) -> IvmResult<i64> {
    Spi::get_one_with_args::<i64>("SELECT ducklake.last_committed_snapshot_id($1::oid::regclass)", &[source.relid.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_FDW_ERROR, "the lake reported no committed snapshot"))
}

/// The current snapshot of `source`'s lake.
pub fn latest_snapshot(source: &LakeSource) -> IvmResult<i64> {
    Spi::get_one_with_args::<i64>("SELECT ducklake.ducklake_latest_snapshot_id($1::oid::regclass)", &[source.relid.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_FDW_ERROR, "the lake reported no current snapshot"))
}
