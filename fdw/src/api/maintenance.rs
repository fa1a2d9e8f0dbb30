//! Lake maintenance from SQL: keeps many small commits (the demo's 50-row batches),
//! deletes and killed writers from degrading the lake. Each step is its own DuckLake
//! commit, so the function does not follow the calling transaction; it can be
//! scheduled like any function (e.g. with pg_cron).

use pgrx::prelude::*;

use crate::api::servers::{require_owner, server_by_name};
use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult, OrRaise};
use crate::scan::deparse;

/// Delete files older than `older_than` that no snapshot references (left by writers
/// that were killed before committing), flush inlined rows to Parquet, rewrite data
/// files of which more than `delete_threshold` of the rows are deleted, merge
/// adjacent small files, expire snapshots older than `older_than`, and delete files
/// that expired snapshots no longer need and that were scheduled for deletion more
/// than `older_than` ago. One row per step with the number of tables, files or
/// snapshots it touched.
#[pg_extern]
fn maintain(
    server: &str,
    older_than: default!(Interval, "'7 days'"),
    flush_inlined: default!(bool, true),
    merge_files: default!(bool, true),
    delete_threshold: default!(f64, 0.95),
    delete_unreferenced_files: default!(bool, true),
) -> TableIterator<'static, (name!(step, String), name!(affected, i64))> {
    let steps = Steps { flush_inlined, merge_files, delete_threshold, delete_unreferenced_files };
    TableIterator::new(run(server, older_than, steps).or_raise())
}

struct Steps {
    flush_inlined: bool,
    merge_files: bool,
    /// Above 1: rewrite nothing.
    delete_threshold: f64,
    delete_unreferenced_files: bool,
}

fn run(server: &str, older_than: Interval, steps: Steps) -> LakeResult<Vec<(String, i64)>> {
    if !(steps.delete_threshold >= 0.0) {
        return Err(LakeError::InvalidArgument {
            name: "delete_threshold".into(),
            reason: format!("{} is not a fraction of rows (0 to 1; above 1 rewrites nothing)", steps.delete_threshold),
        });
    }
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
    let mut done = Vec::new();
    if steps.delete_unreferenced_files {
        // Until they commit, the files of this cluster's writers are unreferenced too.
        let before = lake.unreferenced_files_cutoff(older_than)?;
        let call = format!("CALL ducklake_delete_orphaned_files({alias}, older_than => {before})");
        done.push(("delete_unreferenced_files".to_owned(), lake.run_own_transaction(&call)? as i64));
    }
    let mut calls = Vec::new();
    if steps.flush_inlined {
        calls.push(("flush_inlined_data", format!("CALL ducklake_flush_inlined_data({alias})")));
    }
    if steps.delete_threshold <= 1.0 {
        calls.push((
            "rewrite_data_files",
            format!("CALL ducklake_rewrite_data_files({alias}, delete_threshold => {})", steps.delete_threshold),
        ));
    }
    if steps.merge_files {
        calls.push(("merge_adjacent_files", format!("CALL ducklake_merge_adjacent_files({alias})")));
    }
    calls.push(("expire_snapshots", format!("CALL ducklake_expire_snapshots({alias}, older_than => {expire_before})")));
    calls.push(("cleanup_old_files", format!("CALL ducklake_cleanup_old_files({alias}, older_than => {cutoff})")));
    for (name, call) in calls {
        done.push((name.to_owned(), lake.run_own_transaction(&call)? as i64));
    }
    Ok(done)
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
