//! The change feed every lake instance reads: a DuckDB table macro defined once per
//! instance, in place of DuckLake 1.5.5's own `ducklake_table_changes`.
//!
//! DuckLake's macro joins `ducklake_table_insertions` and `ducklake_table_deletions`
//! on (snapshot_id, rowid) to label updates. That is right when each snapshot holds at
//! most one version of a row on each side, which is what a transaction that changes a
//! row once commits. A transaction that changes a row twice (two UPDATEs, an UPDATE and
//! then a DELETE, an INSERT and then an UPDATE) commits more: DuckLake reports the row's
//! intermediate versions as inserted and deleted, and a deletion once per delete file
//! the transaction wrote. The join then multiplies them, and the feed's net change
//! (inserts and postimages minus deletes and preimages) is no longer the difference
//! between the table before and after the snapshot: seen on this machine in most
//! ranges of a random history of multi-statement transactions.
//!
//! This macro reads each side once (the join read both twice) and counts, per
//! snapshot and rowid, the versions on each side. One deletion and one insertion are
//! an update, one alone an insert or a delete: DuckLake's labels, exact whenever no
//! side has two versions. When a side does, which version came first is not in the
//! feed, so the macro raises an error (`error()` in a filter, so that no projection
//! prunes it away) instead of answering: the row, the snapshot and the table are named
//! (see `AMBIGUOUS`). `ducklake.resolve_changes` finds every such snapshot of a range
//! (`AMBIGUOUS_MACRO`), and the backend reads them `by_time_travel` from then on
//! (`scan::snapshot::feed_between`); stream tables call it and refresh again.
//!
//! Filters of the caller must stay above the macro (see `scan::snapshot::changes_between`):
//! a filter that reached the scans would also change the counts.

/// The macro's name; its arguments are DuckLake's: catalog, schema, table, first and
/// last snapshot.
pub const MACRO: &str = "ducklake_fdw_changes";

/// The same macro without the deletions side, for a range in which the catalog lists
/// only insertions into the table (see `scan::snapshot::only_insertions`): there its
/// result is the same, and DuckLake 1.5.5's `ducklake_table_deletions` is not asked.
/// That function reads every data file of the table that has a delete file, at any
/// snapshot, building a per-row filter for the whole file, even when the range deleted
/// nothing: 80 ms for a 6-million-row file, where the insertions of an append take 5.
pub const INSERTIONS_MACRO: &str = "ducklake_fdw_insertions";

/// The start of the message of the error raised for a snapshot the feed cannot label.
pub const AMBIGUOUS: &str = "ambiguous change feed";

/// The statements that define the macros (temporary ones: they belong to the
/// instance, not to the lake).
pub fn definitions() -> [String; 2] {
    [definition(MACRO, &both_sides(true)), definition(INSERTIONS_MACRO, &insertions(true))]
}

/// The feed macro `name` over `sides` (see `both_sides`).
fn definition(name: &str, sides: &str) -> String {
    format!(
        "CREATE OR REPLACE TEMP MACRO {name}({PARAMETERS}) AS TABLE
SELECT __fdw_snapshot AS snapshot_id, __fdw_rowid AS rowid,
    CASE WHEN __fdw_images = 1 THEN CASE WHEN __fdw_inserted THEN 'insert' ELSE 'delete' END
         WHEN __fdw_inserted THEN 'update_postimage' ELSE 'update_preimage' END AS change_type,
    * EXCLUDE (__fdw_snapshot, __fdw_rowid, __fdw_inserted, __fdw_images, __fdw_versions)
FROM (
    SELECT count(*) OVER (PARTITION BY __fdw_snapshot, __fdw_rowid) AS __fdw_images,
           count(*) OVER (PARTITION BY __fdw_snapshot, __fdw_rowid, __fdw_inserted) AS __fdw_versions, *
    FROM ({}))
WHERE CASE WHEN __fdw_versions > 1
    THEN error('{AMBIGUOUS}: DuckLake reports ' || __fdw_versions || ' versions of row ' || __fdw_rowid
               || ' of ' || __fdw_schema || '.' || __fdw_table || ' in snapshot ' || __fdw_snapshot
               || ', which a transaction changed more than once; DuckLake 1.5.5 does not say which came first')
    ELSE true END",
        sides
    )
}

/// The macros' parameters: DuckLake's catalog, schema, table, first and last snapshot.
const PARAMETERS: &str = "__fdw_catalog, __fdw_schema, __fdw_table, __fdw_from, __fdw_to";

/// DuckLake's insertions and deletions of the macros' range as one relation:
/// `__fdw_snapshot`, `__fdw_rowid`, `__fdw_inserted` and, `with_columns`, the table's
/// columns.
fn both_sides(with_columns: bool) -> String {
    let deleted = if with_columns { ", d.*" } else { "" };
    format!(
        "{}
          UNION ALL
          SELECT d.snapshot_id, d.rowid, false{deleted}
          FROM ducklake_table_deletions({PARAMETERS}) AS d",
        insertions(with_columns)
    )
}

/// The insertions side of `both_sides` alone.
fn insertions(with_columns: bool) -> String {
    let inserted = if with_columns { ", i.*" } else { "" };
    format!(
        "SELECT i.snapshot_id AS __fdw_snapshot, i.rowid AS __fdw_rowid, true AS __fdw_inserted{inserted}
          FROM ducklake_table_insertions({PARAMETERS}) AS i"
    )
}

/// The snapshots in `from..=to` of a lake table whose changes the macro refuses (one
/// row each), found from the row ids alone (no data column is read).
pub const AMBIGUOUS_MACRO: &str = "ducklake_fdw_ambiguous_snapshots";

pub fn ambiguous_definition() -> String {
    format!(
        "CREATE OR REPLACE TEMP MACRO {AMBIGUOUS_MACRO}({PARAMETERS}) AS TABLE
SELECT DISTINCT __fdw_snapshot AS snapshot_id FROM ({})
GROUP BY __fdw_snapshot, __fdw_rowid, __fdw_inserted HAVING count(*) > 1",
        both_sides(false)
    )
}

/// The changes of snapshot `snapshot` of `qualified` (a lake table, quoted) as the
/// difference of the table before and after it, with the macro's columns: exact
/// whatever DuckLake reports, at the price of reading both versions of the table
/// (restricted to the row ids DuckLake says the snapshot touched; every row that
/// differs between the versions is among them). Rows are matched by row id and
/// content as multisets, so even rows sharing a row id count right. An update is a
/// row id with a row on each side.
pub fn by_time_travel(catalog: &str, schema: &str, table: &str, qualified: &str, snapshot: i64) -> String {
    let args = format!(
        "{}, {}, {}, {snapshot}, {snapshot}",
        super::sql::literal(catalog),
        super::sql::literal(schema),
        super::sql::literal(table)
    );
    let before = snapshot - 1;
    format!(
        "(WITH __fdw_touched AS (SELECT * FROM (SELECT i.rowid AS __fdw_rowid FROM ducklake_table_insertions({args}) AS i OFFSET 0)
                               UNION SELECT * FROM (SELECT d.rowid FROM ducklake_table_deletions({args}) AS d OFFSET 0)),
      __fdw_before AS (SELECT rowid AS __fdw_rowid, * FROM {qualified} AT (VERSION => {before})
                       WHERE rowid IN (SELECT __fdw_rowid FROM __fdw_touched)),
      __fdw_after AS (SELECT rowid AS __fdw_rowid, * FROM {qualified} AT (VERSION => {snapshot})
                      WHERE rowid IN (SELECT __fdw_rowid FROM __fdw_touched)),
      __fdw_net AS (SELECT false AS __fdw_inserted, * FROM (FROM __fdw_before EXCEPT ALL FROM __fdw_after)
                    UNION ALL SELECT true, * FROM (FROM __fdw_after EXCEPT ALL FROM __fdw_before))
  SELECT CAST({snapshot} AS BIGINT) AS snapshot_id, __fdw_rowid AS rowid,
      CASE WHEN count(*) OVER (PARTITION BY __fdw_rowid) = 1
           THEN CASE WHEN __fdw_inserted THEN 'insert' ELSE 'delete' END
           WHEN __fdw_inserted THEN 'update_postimage' ELSE 'update_preimage' END AS change_type,
      * EXCLUDE (__fdw_rowid, __fdw_inserted)
  FROM __fdw_net)"
    )
}
