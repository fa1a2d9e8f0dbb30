//! Questions about a lake table's changes that the DuckLake catalog's own tables
//! answer (its snapshots' change lists, delete files and data files), without reading
//! a data file. Each is one query that the catalog's Postgres runs (DuckDB's
//! `postgres_query`): DuckDB's own scans of the catalog tables cost a round trip each,
//! 15 ms for the seven that `only_insertions` reads, more than the feed of an append.

use crate::catalog::cache::Lake;
use crate::duck::sql;
use crate::error::LakeResult;
use crate::import::{pg_ident, pg_literal};

/// Whether a snapshot after `after`, up to `up_to`, changed `schema.table`, as the
/// catalog's change lists record it (`inserted_into_table:<id>`,
/// `deleted_from_table:<id>`, ...). Conservative: any entry naming one of the ids the
/// table's name ever had counts, so a snapshot that only compacted or altered it counts
/// too; so do a table the catalog does not know and a range missing a snapshot up to
/// the latest one (an expired snapshot, whose changes the catalog no longer lists:
/// reading the feed then reports the expiry). Snapshots after the latest one do not
/// exist yet and change nothing (the latest one is never expired). Never "unchanged"
/// for a range whose change feed has rows.
pub fn table_changed(lake: &Lake, schema: &str, table: &str, after: i64, up_to: i64) -> LakeResult<bool> {
    if up_to <= after {
        return Ok(false);
    }
    let snapshots = meta(lake, "ducklake_snapshot");
    ask(
        lake,
        &format!(
            "{changes}, \
                  present AS (SELECT count(*) AS n, max(snapshot_id) AS last FROM {snapshots} \
                              WHERE snapshot_id BETWEEN {after} AND {up_to}), \
                  reaches AS (SELECT EXISTS (SELECT 1 FROM {snapshots} WHERE snapshot_id >= {up_to}) AS up_to_exists) \
             SELECT NOT EXISTS (SELECT 1 FROM ids) \
                 OR (SELECT last IS NULL OR n <> CASE WHEN up_to_exists THEN {up_to} ELSE last END - {after} + 1 \
                     FROM present, reaches) \
                 OR EXISTS (SELECT 1 FROM items JOIN ids USING (id))",
            changes = table_changes(lake, schema, table, after + 1, up_to),
        ),
    )
}

/// Whether the catalog lists nothing but insertions into `schema.table` in snapshots
/// `lower..=upper`, so that its change feed there has no deletions side (see
/// `duck::change_feed::INSERTIONS_MACRO`). Conservative: every snapshot of the range
/// must still exist, the lake's schema must be the same from before the range to its
/// end (no table created, dropped, renamed or altered, so the name is one table
/// throughout and every entry naming it is by id), and each entry naming one of the
/// ids the name ever had must be `inserted_into_table` or `inlined_insert`; a
/// deletion, an update, a compaction, a flush of inlined rows (anything else) reads
/// both sides. And no delete file may begin, nor data file end, in the range: a
/// transaction that deletes or updates rows it inserted itself records only
/// `inserted_into_table`, yet writes a delete file for its new data file, whose rows
/// DuckLake's feed then reports on both sides. (Its inlined rows are written as they
/// are at commit.)
pub fn only_insertions(lake: &Lake, schema: &str, table: &str, lower: i64, upper: i64) -> LakeResult<bool> {
    if lower < 1 || upper < lower {
        return Ok(false);
    }
    ask(
        lake,
        &format!(
            "{changes} \
             SELECT EXISTS (SELECT 1 FROM ids) \
                AND (SELECT count(*) FROM {snapshots} WHERE snapshot_id BETWEEN {lower} AND {upper}) = {count} \
                AND coalesce((SELECT schema_version FROM {snapshots} WHERE snapshot_id = {before}) = \
                             (SELECT schema_version FROM {snapshots} WHERE snapshot_id = {upper}), false) \
                AND NOT EXISTS (SELECT 1 FROM items JOIN ids USING (id) \
                                WHERE items.kind NOT IN ('inserted_into_table', 'inlined_insert')) \
                AND NOT EXISTS (SELECT 1 FROM {delete_files} f JOIN ids ON f.table_id::text = ids.id \
                                WHERE f.begin_snapshot BETWEEN {lower} AND {upper}) \
                AND NOT EXISTS (SELECT 1 FROM {data_files} f JOIN ids ON f.table_id::text = ids.id \
                                WHERE f.end_snapshot BETWEEN {lower} AND {upper})",
            changes = table_changes(lake, schema, table, lower, upper),
            snapshots = meta(lake, "ducklake_snapshot"),
            delete_files = meta(lake, "ducklake_delete_file"),
            data_files = meta(lake, "ducklake_data_file"),
            count = upper - lower + 1,
            before = lower - 1,
        ),
    )
}

/// `WITH ids AS (...), items AS (...)`: the ids `schema.table`'s name ever had, as
/// text, and the entries (`kind`, `id`) of the change lists of snapshots
/// `lower..=upper`.
fn table_changes(lake: &Lake, schema: &str, table: &str, lower: i64, upper: i64) -> String {
    format!(
        "WITH ids AS (SELECT DISTINCT t.table_id::text AS id FROM {tables} t JOIN {schemas} s ON s.schema_id = t.schema_id \
                      WHERE s.schema_name = {schema} AND t.table_name = {table}), \
              items AS (SELECT split_part(item, ':', 1) AS kind, split_part(item, ':', 2) AS id \
                        FROM {lists} c CROSS JOIN LATERAL unnest(string_to_array(c.changes_made, ',')) AS item \
                        WHERE c.snapshot_id BETWEEN {lower} AND {upper})",
        tables = meta(lake, "ducklake_table"),
        schemas = meta(lake, "ducklake_schema"),
        lists = meta(lake, "ducklake_snapshot_changes"),
        schema = pg_literal(schema),
        table = pg_literal(table),
    )
}

/// The catalog's table `name`, as the catalog's Postgres names it.
fn meta(lake: &Lake, name: &str) -> String {
    format!("{}.{name}", pg_ident(lake.instance.metadata_location().1))
}

/// The one boolean the catalog's Postgres answers to `query`.
fn ask(lake: &Lake, query: &str) -> LakeResult<bool> {
    let catalog = lake.instance.metadata_location().0;
    let query = format!("SELECT * FROM postgres_query({}, {})", sql::literal(catalog), sql::literal(query));
    let conn = lake.connection()?;
    crate::duck::cancel::interruptible(&lake.instance.interrupt, || -> LakeResult<bool> {
        Ok(conn.query_row(&query, [], |row| row.get(0))?)
    })
}
