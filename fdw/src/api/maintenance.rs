//! Lake maintenance from SQL: keeps many small commits (the demo's 50-row batches)
//! from degrading the lake. Each step is its own DuckLake commit, so the function
//! does not follow the calling transaction; it can be scheduled like any function
//! (e.g. with pg_cron).

use pgrx::prelude::*;

use crate::api::servers::{require_owner, server_by_name};
use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::error::{LakeResult, OrRaise};
use crate::scan::deparse;

/// Flush inlined rows to Parquet, merge adjacent small files, expire snapshots older
/// than `older_than`, and delete files that expired snapshots no longer need and that
/// were scheduled for deletion more than `older_than` ago. One row per step with the
/// number of tables, files or snapshots it touched.
#[pg_extern]
fn maintain(
    server: &str,
    older_than: default!(Interval, "'7 days'"),
    flush_inlined: default!(bool, true),
    merge_files: default!(bool, true),
) -> TableIterator<'static, (name!(step, String), name!(affected, i64))> {
    TableIterator::new(run(server, older_than, flush_inlined, merge_files).or_raise())
}

fn run(server: &str, older_than: Interval, flush_inlined: bool, merge_files: bool) -> LakeResult<Vec<(String, i64)>> {
    let server_oid = server_by_name(server)?;
    require_owner(server_oid)?;
    let lake = lake_for(server_oid)?;
    let alias = sql::literal(&lake.instance.alias);
    // SAFETY: an interval datum.
    let retention = unsafe {
        deparse::literal(pgrx::IntoDatum::into_datum(older_than).expect("interval datum"), pg_sys::INTERVALOID)
    }
    .expect("intervals always have a DuckDB literal");
    let cutoff = format!("now() - {retention}");
    let expire_before = match held_snapshot(server_oid) {
        None => cutoff.clone(),
        Some(held) => {
            // Snapshots at or after the oldest one a stream table still needs stay.
            let query = format!(
                "SELECT CAST(least({cutoff}, (SELECT min(snapshot_time) FROM ducklake_snapshots({alias}) \
                 WHERE snapshot_id >= {held})) AS VARCHAR)"
            );
            let at: Option<String> = lake.connection()?.query_row(&query, [], |row| row.get(0))?;
            at.map(|t| format!("CAST({} AS TIMESTAMPTZ)", sql::literal(&t))).unwrap_or_else(|| cutoff.clone())
        }
    };
    let mut steps = Vec::new();
    if flush_inlined {
        steps.push(("flush_inlined_data", format!("CALL ducklake_flush_inlined_data({alias})")));
    }
    if merge_files {
        steps.push(("merge_adjacent_files", format!("CALL ducklake_merge_adjacent_files({alias})")));
    }
    steps.push(("expire_snapshots", format!("CALL ducklake_expire_snapshots({alias}, older_than => {expire_before})")));
    steps.push(("cleanup_old_files", format!("CALL ducklake_cleanup_old_files({alias}, older_than => {cutoff})")));
    steps
        .into_iter()
        .map(|(name, call)| Ok((name.to_owned(), lake.run_own_transaction(&call)? as i64)))
        .collect()
}

/// The oldest snapshot of this server's lake that a stream table's frontier needs,
/// when the ducklake_ivm extension is installed in this database (it publishes them
/// through `pgtrickle.snapshot_holds()`).
fn held_snapshot(server_oid: pg_sys::Oid) -> Option<i64> {
    let installed = Spi::get_one::<bool>("SELECT to_regprocedure('pgtrickle.snapshot_holds()') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false);
    if !installed {
        return None;
    }
    Spi::get_one_with_args::<i64>(
        "SELECT min(snapshot_id) FROM pgtrickle.snapshot_holds() WHERE server_oid = $1",
        &[server_oid.into()],
    )
    .ok()
    .flatten()
}
