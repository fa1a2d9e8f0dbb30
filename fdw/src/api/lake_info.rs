//! Snapshot list, per-table file statistics and the current snapshot of a lake:
//! the Postgres forms of DuckLake's `ducklake_snapshots`, `ducklake_table_info`
//! and `current_snapshot()`.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::api::servers::{require_usage, server_by_name};
use std::rc::Rc;

use crate::catalog::cache::{Lake, lake_for};
use crate::duck::sql;
use crate::error::{LakeResult, OrRaise};

const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn lake_named(server: &str) -> LakeResult<std::rc::Rc<Lake>> {
    let server_oid = server_by_name(server)?;
    require_usage(server_oid)?;
    lake_for(server_oid)
}

fn timestamptz(unix_micros: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unix_micros - PG_EPOCH_MICROS)
        .unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}

type SnapshotRow = (
    i64,
    TimestampWithTimeZone,
    i64,
    JsonB,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One row per snapshot of the lake, oldest first.
#[pg_extern]
fn snapshots(
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(snapshot_id, i64),
        name!(snapshot_time, TimestampWithTimeZone),
        name!(schema_version, i64),
        name!(changes, JsonB),
        name!(author, Option<String>),
        name!(commit_message, Option<String>),
        name!(commit_extra_info, Option<String>),
    ),
> {
    let lake = lake_named(server).or_raise();
    let query = format!(
        "SELECT snapshot_id, epoch_us(CAST(snapshot_time AS TIMESTAMP)), schema_version, \
         CAST(to_json(changes) AS VARCHAR), author, commit_message, CAST(commit_extra_info AS VARCHAR) \
         FROM ducklake_snapshots({}) ORDER BY snapshot_id",
        sql::literal(&lake.instance.alias)
    );
    let rows: LakeResult<Vec<SnapshotRow>> = (|| {
        let mut statement = lake.connection()?.prepare(&query)?;
        let rows = statement.query_map([], |row| {
            let changes: String = row.get(3)?;
            Ok((
                row.get::<_, i64>(0)?,
                timestamptz(row.get::<_, i64>(1)?),
                row.get::<_, i64>(2)?,
                JsonB(serde_json::from_str(&changes).unwrap_or(serde_json::Value::Null)),
                row.get::<_, Option<String>>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })();
    TableIterator::new(rows.or_raise())
}

/// Data and delete files per table of the lake.
#[pg_extern]
fn table_info(
    server: &str,
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(schema_id, i64),
        name!(table_id, i64),
        name!(table_uuid, pgrx::Uuid),
        name!(file_count, i64),
        name!(file_size_bytes, i64),
        name!(delete_file_count, i64),
        name!(delete_file_size_bytes, i64),
    ),
> {
    let lake = lake_named(server).or_raise();
    let query = format!(
        "SELECT table_name, schema_id, table_id, CAST(table_uuid AS VARCHAR), file_count, file_size_bytes, \
         delete_file_count, delete_file_size_bytes FROM ducklake_table_info({}) ORDER BY table_name",
        sql::literal(&lake.instance.alias)
    );
    type Row = (String, i64, i64, pgrx::Uuid, i64, i64, i64, i64);
    let rows: LakeResult<Vec<Row>> = (|| {
        let mut statement = lake.connection()?.prepare(&query)?;
        let rows = statement.query_map([], |row| {
            let uuid: String = row.get(3)?;
            let bytes = crate::types::decode::parse_uuid(&uuid).unwrap_or_default();
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                pgrx::Uuid::from_bytes(bytes),
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })();
    TableIterator::new(rows.or_raise())
}

/// The lake's current snapshot id, as seen by this transaction.
#[pg_extern]
fn current_snapshot(server: &str) -> i64 {
    let lake = lake_named(server).or_raise();
    crate::scan::snapshot::current_snapshot(&lake).or_raise()
}

/// The lake of a foreign table, after checking the caller may read the table.
fn lake_of_table(relid: pg_sys::Oid) -> LakeResult<(std::rc::Rc<Lake>, crate::options::TableOptions)> {
    let server_oid = server_of_table(relid)?;
    // SAFETY: server_of_table checked that `relid` is a foreign table.
    Ok((lake_for(server_oid)?, unsafe { crate::options::TableOptions::of(relid) }))
}

/// The server of a foreign table, after checking the caller may read the table.
fn server_of_table(relid: pg_sys::Oid) -> LakeResult<pg_sys::Oid> {
    // SAFETY: catalog lookups; pg_class_aclcheck raises nothing for an existing relation.
    unsafe {
        if pg_sys::get_rel_relkind(relid) != pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char {
            return Err(crate::error::LakeError::NotSupported(format!(
                "relation with OID {} is not a foreign table",
                relid.to_u32()
            )));
        }
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            return Err(crate::error::LakeError::PermissionDenied(format!(
                "permission denied for foreign table {}",
                std::ffi::CStr::from_ptr(pg_sys::get_rel_name(relid)).to_string_lossy()
            )));
        }
        Ok((*pg_sys::GetForeignTable(relid)).serverid)
    }
}

/// The lake's current snapshot id, for the lake behind a foreign table (the name
/// pg_trickle's DuckLake change-feed adapter calls). Declared in lib.rs (regclass).
#[pg_extern(sql = false)]
fn ducklake_latest_snapshot_id(foreign_table: pg_sys::Oid) -> i64 {
    let run = || -> LakeResult<i64> {
        let (lake, _) = lake_of_table(foreign_table)?;
        crate::scan::snapshot::current_snapshot(&lake)
    };
    run().or_raise()
}

/// The lake's newest snapshot as its catalog has committed it, as this statement sees
/// the catalog. `ducklake_latest_snapshot_id` is the snapshot this transaction's lake
/// reads: DuckDB fixes it at the transaction's first read, by a query over its own
/// connection to the catalog, which costs about a millisecond. When the catalog lies in
/// this database and DuckDB reaches it as the current user, this reads the catalog's
/// snapshot table directly instead (microseconds), and never opens the lake. So it may
/// be newer than what this transaction's lake reads; it answers "has anything been
/// committed since snapshot N" (the question of an empty refresh), and the caller reads
/// changes through DuckDB's snapshot. Any other catalog (another database, another
/// role, a catalog table the current user may not read): `ducklake_latest_snapshot_id`.
/// Declared in lib.rs (regclass).
#[pg_extern(sql = false)]
fn last_committed_snapshot_id(foreign_table: pg_sys::Oid) -> i64 {
    let run = || -> LakeResult<i64> {
        let server_oid = server_of_table(foreign_table)?;
        let config = crate::catalog::config::LakeConfig::resolve(server_oid)?;
        if config.catalog_in_this_database {
            if let Some(id) = committed_in_this_database(&config.metadata_schema) {
                return Ok(id);
            }
        }
        crate::scan::snapshot::current_snapshot(&*lake_for(server_oid)?)
    };
    run().or_raise()
}

/// The newest snapshot id in table `ducklake_snapshot` of schema `schema` of this
/// database, or None when the table does not exist, has no row, or the current user
/// may not read it (DuckDB's answer then decides, or raises the real error), and in a
/// transaction whose snapshot is its first statement's (REPEATABLE READ and
/// SERIALIZABLE): there this query would see the catalog as of that statement, older
/// than DuckDB's connection, which reads it at the lake's first read.
fn committed_in_this_database(schema: &str) -> Option<i64> {
    // SAFETY: reads the transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return None;
    }
    // Looked up without to_regclass, which raises for a schema the user may not use.
    let relid = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) 'ducklake_snapshot' \
           AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')",
        &[schema.into()],
    )
    .ok()
    .flatten()
    .filter(|oid| *oid != pg_sys::InvalidOid)?;
    // SAFETY: an ACL lookup of an existing relation; check_enable_rls raises nothing
    // for one either.
    let readable = unsafe {
        pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _) == pg_sys::AclResult::ACLCHECK_OK
            && pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true) != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
    };
    if !readable {
        return None;
    }
    let query =
        format!("SELECT pg_catalog.max(snapshot_id)::pg_catalog.int8 FROM {}.ducklake_snapshot", crate::import::pg_ident(schema));
    Spi::get_one::<i64>(&query).ok().flatten()
}

/// Whether a snapshot after `after_snapshot`, up to `up_to_snapshot`, changed the
/// lake table behind a foreign table, from the catalog's change lists alone (see
/// `catalog::change_lists::table_changed`), where reading the feed would scan the data
/// files of every deletion. Declared in lib.rs (regclass).
#[pg_extern(sql = false)]
fn table_changed(foreign_table: pg_sys::Oid, after_snapshot: i64, up_to_snapshot: i64) -> bool {
    let run = || -> LakeResult<bool> {
        let (lake, table) = lake_of_table(foreign_table)?;
        crate::catalog::change_lists::table_changed(&lake, &table.schema, &table.table, after_snapshot, up_to_snapshot)
    };
    run().or_raise()
}

/// The snapshots in `from_snapshot..=to_snapshot` whose changes DuckLake 1.5.5 reports
/// ambiguously for the lake table behind a foreign table (a transaction changed a row
/// twice, see `duck::change_feed`); this backend reads them by time travel from now on.
/// Returns those it did not know of yet. Declared in lib.rs (regclass).
#[pg_extern(sql = false)]
fn resolve_changes(foreign_table: pg_sys::Oid, from_snapshot: i64, to_snapshot: i64) -> Vec<i64> {
    let run = || -> LakeResult<Vec<i64>> {
        let (lake, table) = lake_of_table(foreign_table)?;
        crate::scan::snapshot::resolve_ambiguous(&lake, &table.schema, &table.table, from_snapshot, to_snapshot)
    };
    run().or_raise()
}

type ChangeRow = (i64, i64, String, JsonB);

/// Changes of lake table `schema.table` in snapshots `from..=to`, each row as a JSON
/// object of `fields` (output key, lake column), streamed from DuckDB as the caller
/// fetches them.
fn changes_as_json(
    lake: Rc<Lake>,
    schema: &str,
    table: &str,
    fields: &[(String, String)],
    from_snapshot: i64,
    to_snapshot: i64,
) -> LakeResult<ChangeRows> {
    let to_snapshot = crate::scan::snapshot::readable_upper(&lake, Some(to_snapshot))?;
    let from_snapshot = from_snapshot.max(0);
    if from_snapshot > to_snapshot {
        return Ok(ChangeRows { lake, stream: None, batch: None, row: 0 });
    }
    let fields: Vec<String> =
        fields.iter().map(|(key, column)| format!("{}: {}", sql::literal(key), sql::ident(column))).collect();
    // A stable order for callers that print or diff the feed: an update's preimage
    // comes before its postimage.
    let query = format!(
        "SELECT snapshot_id, rowid, change_type, CAST(to_json({{{}}}) AS VARCHAR) \
         FROM {} c ORDER BY snapshot_id, rowid, change_type = 'update_postimage'",
        fields.join(", "),
        crate::scan::snapshot::feed_between(&lake, &lake.instance.alias, schema, table, from_snapshot, to_snapshot)?,
    );
    let stream = lake.stream(&query, crate::catalog::cache::Bindings::none())?;
    Ok(ChangeRows { lake, stream: Some(stream), batch: None, row: 0 })
}

/// The rows of `changes_as_json`, read batch by batch (a result DuckDB still streams
/// when the lake is needed for something else is buffered, see `duck::stream`).
struct ChangeRows {
    lake: Rc<Lake>,
    stream: Option<Rc<crate::duck::stream::Stream>>,
    batch: Option<arrow::array::RecordBatch>,
    row: usize,
}

impl ChangeRows {
    fn next_row(&mut self) -> LakeResult<Option<ChangeRow>> {
        use arrow::array::AsArray;
        use arrow::datatypes::Int64Type;
        loop {
            if let Some(batch) = &self.batch {
                if self.row < batch.num_rows() {
                    let row = self.row;
                    self.row += 1;
                    let int = |i: usize| {
                        batch.column(i).as_primitive_opt::<Int64Type>().map(|a| a.value(row)).ok_or_else(unexpected)
                    };
                    let data = text_at(batch.column(3).as_ref(), row)?;
                    return Ok(Some((
                        int(0)?,
                        int(1)?,
                        text_at(batch.column(2).as_ref(), row)?,
                        JsonB(serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)),
                    )));
                }
            }
            let Some(stream) = &self.stream else { return Ok(None) };
            match stream.next_batch(&self.lake.instance.interrupt)? {
                Some(batch) => {
                    self.batch = Some(batch);
                    self.row = 0;
                }
                None => {
                    self.close();
                    return Ok(None);
                }
            }
        }
    }

    fn close(&mut self) {
        self.batch = None;
        if let Some(stream) = self.stream.take() {
            self.lake.release(&stream);
        }
    }
}

impl Iterator for ChangeRows {
    type Item = ChangeRow;

    fn next(&mut self) -> Option<ChangeRow> {
        self.next_row().or_raise()
    }
}

impl Drop for ChangeRows {
    fn drop(&mut self) {
        self.close();
    }
}

fn unexpected() -> crate::error::LakeError {
    crate::error::LakeError::DuckDb("a change row arrived in an unexpected Arrow type".into())
}

fn text_at(array: &dyn arrow::array::Array, row: usize) -> LakeResult<String> {
    use arrow::array::AsArray;
    if let Some(a) = array.as_string_opt::<i32>() {
        return Ok(a.value(row).to_owned());
    }
    if let Some(a) = array.as_string_opt::<i64>() {
        return Ok(a.value(row).to_owned());
    }
    array.as_string_view_opt().map(|a| a.value(row).to_owned()).ok_or_else(unexpected)
}

/// Rows inserted, deleted and updated in the table behind `foreign_table` in the
/// snapshots `from_snapshot..=to_snapshot`, each row as jsonb keyed by the foreign
/// table's column names. For typed rows, use a foreign table with `changes 'true'`.
/// Declared in lib.rs (regclass).
#[pg_extern(sql = false)]
fn table_changes(foreign_table: pg_sys::Oid, from_snapshot: i64, to_snapshot: i64) -> TableIterator<
    'static,
    (name!(snapshot_id, i64), name!(rowid, i64), name!(change_type, String), name!(row_data, JsonB)),
> {
    let run = || -> LakeResult<ChangeRows> {
        let (lake, table) = lake_of_table(foreign_table)?;
        // SAFETY: catalog lookup of an existing relation.
        let relation = unsafe { pgrx::PgRelation::open(foreign_table) };
        let fields: Vec<(String, String)> = relation
            .tuple_desc()
            .iter()
            .filter(|a| !a.is_dropped())
            // SAFETY: an existing column of the relation.
            .map(|a| (a.name().to_owned(), unsafe { crate::options::lake_column_name(foreign_table, a.attnum, a.name()) }))
            .collect();
        changes_as_json(lake, &table.schema, &table.table, &fields, from_snapshot, to_snapshot)
    };
    TableIterator::new(run().or_raise())
}

/// The seed playbook's `ducklake_table_changes('analytics', 'main', 'users', 0, 10)`:
/// changes of a lake table named by catalog (or server), schema and table.
#[pg_extern]
fn ducklake_table_changes(
    catalog: &str,
    schema: &str,
    table: &str,
    from_snapshot: i64,
    to_snapshot: i64,
) -> TableIterator<
    'static,
    (name!(snapshot_id, i64), name!(rowid, i64), name!(change_type, String), name!(row_data, JsonB)),
> {
    let run = || -> LakeResult<ChangeRows> {
        let lake = lake_named(catalog)?;
        let columns = lake.table_columns(schema, table)?;
        if columns.is_empty() {
            return Err(crate::error::LakeError::MissingLakeTable {
                server: lake.server_name.clone(),
                table: format!("{schema}.{table}"),
            });
        }
        let fields: Vec<(String, String)> = columns.into_iter().map(|c| (c.name.clone(), c.name)).collect();
        changes_as_json(lake, schema, table, &fields, from_snapshot, to_snapshot)
    };
    TableIterator::new(run().or_raise())
}
