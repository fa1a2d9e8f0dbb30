//! Which snapshot a scan reads, decided at execution time (so prepared statements
//! follow the current settings):
//! - a table reads the latest snapshot, or the one pinned by the foreign table's
//!   `snapshot_id`/`as_of` options (or the setting its `snapshot_id_setting` names),
//!   or else by the `ducklake.snapshot_id` /
//!   `ducklake.as_of` settings (`SET LOCAL` pins one transaction);
//! - a change feed reads the lake table's changes over the range its `snapshot_id`
//!   conditions allow, defaulting to everything up to the current snapshot.

use std::ffi::CString;

use pgrx::pg_sys;

use crate::catalog::cache::Lake;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult};
use crate::gucs;
use crate::options::TableOptions;
use crate::scan::deparse;
use crate::scan::model::{Bound, BoundValue, ScanPlan, Source, table_reference};

/// The FROM item of the scan. `lake` is absent for EXPLAIN without execution.
pub fn from_clause(plan: &ScanPlan, range_params: &[Option<i64>], lake: Option<&Lake>) -> LakeResult<String> {
    let (alias, table) = table_reference(pg_sys::Oid::from(plan.relid));
    let qualified = sql::qualified(&alias, &table.schema, &table.table);
    match plan.source {
        Source::Table => Ok(format!("{qualified}{}", at_clause(&table, lake.is_some())?)),
        Source::Changes => changes_source(&alias, &table, &plan.lower, &plan.upper, range_params, lake),
    }
}

/// The change feed of `table` over the range its bounds allow, as a FROM item.
/// `lake` is absent for EXPLAIN without execution.
pub fn changes_source(
    alias: &str,
    table: &TableOptions,
    lower: &[Bound],
    upper: &[Bound],
    range_params: &[Option<i64>],
    lake: Option<&Lake>,
) -> LakeResult<String> {
    let lower = resolve(lower, range_params, Side::Lower);
    let requested = resolve(upper, range_params, Side::Upper);
    let upper = match lake {
        Some(lake) => Some(readable_upper(lake, requested)?),
        None => requested,
    };
    let lower = lower.unwrap_or(0).max(0);
    if upper.is_some_and(|u| lower > u) {
        // An empty range still has the feed's columns (and an aggregate over
        // it still returns its one row), without asking DuckLake for it.
        let qualified = sql::qualified(alias, &table.schema, &table.table);
        return Ok(format!(
            "(SELECT CAST(NULL AS BIGINT) AS snapshot_id, CAST(NULL AS BIGINT) AS rowid, \
             CAST(NULL AS VARCHAR) AS change_type, * FROM {qualified} LIMIT 0)"
        ));
    }
    let (Some(lake), Some(upper)) = (lake, upper) else {
        let upper = upper.map_or_else(|| "<current snapshot>".to_owned(), |u| u.to_string());
        return Ok(changes_between(alias, &table.schema, &table.table, &lower.to_string(), &upper));
    };
    feed_between(lake, alias, &table.schema, &table.table, lower, upper)
}

/// The change feed of `schema.table` in snapshots `lower..=upper`: the macro, except
/// for the snapshots this backend knows it refuses (see `resolve_ambiguous`), which are
/// read by time travel. Each piece looks the table up by name at its own snapshots, so
/// the range is split only when the lake's schema is the same from before the first
/// such snapshot to `upper` (no table created, dropped, renamed or altered: the name is
/// the same table with the same columns throughout); otherwise the macro reads the
/// whole range, and refuses.
pub fn feed_between(lake: &Lake, alias: &str, schema: &str, table: &str, lower: i64, upper: i64) -> LakeResult<String> {
    let feed = if crate::catalog::change_lists::only_insertions(lake, schema, table, lower, upper)? {
        crate::duck::change_feed::INSERTIONS_MACRO
    } else {
        crate::duck::change_feed::MACRO
    };
    let between = |from: i64, to: i64| changes_from(feed, alias, schema, table, &from.to_string(), &to.to_string());
    let exact = lake.feed_snapshots.in_range(schema, table, lower, upper);
    let Some(first) = exact.first() else {
        return Ok(between(lower, upper));
    };
    let snapshots = lake.instance.metadata_table("ducklake_snapshot");
    let same_schema: bool = lake.connection()?.query_row(
        &format!(
            "SELECT coalesce((SELECT schema_version FROM {snapshots} WHERE snapshot_id = ?) = \
                             (SELECT schema_version FROM {snapshots} WHERE snapshot_id = ?), false)"
        ),
        duckdb::params![first - 1, upper],
        |row| row.get(0),
    )?;
    if !same_schema {
        return Ok(between(lower, upper));
    }
    let qualified = sql::qualified(alias, schema, table);
    let mut parts = Vec::new();
    let mut from = lower;
    for snapshot in exact.iter().copied().chain(std::iter::once(upper + 1)) {
        if from < snapshot {
            parts.push(format!("SELECT * FROM {}", between(from, snapshot - 1)));
        }
        if snapshot <= upper {
            let exact = crate::duck::change_feed::by_time_travel(alias, schema, table, &qualified, snapshot);
            parts.push(format!("SELECT * FROM {exact}"));
        }
        from = snapshot + 1;
    }
    Ok(format!("({} OFFSET 0)", parts.join(" UNION ALL ")))
}

/// The snapshots of `schema.table` in `lower..=upper` that the feed's macro refuses and
/// this backend did not know of yet; read by time travel from now on.
pub fn resolve_ambiguous(lake: &Lake, schema: &str, table: &str, lower: i64, upper: i64) -> LakeResult<Vec<i64>> {
    // As the feed reads a range: snapshots after the current one have no changes.
    let (lower, upper) = (lower.max(0), readable_upper(lake, Some(upper))?);
    if lower > upper {
        return Ok(Vec::new());
    }
    let known = lake.feed_snapshots.in_range(schema, table, lower, upper);
    let query = format!(
        "SELECT snapshot_id FROM {}({}, {}, {}, {lower}, {upper}) ORDER BY 1",
        crate::duck::change_feed::AMBIGUOUS_MACRO,
        sql::literal(&lake.instance.alias),
        sql::literal(schema),
        sql::literal(table),
    );
    let found: Vec<i64> = {
        let conn = lake.connection()?;
        crate::duck::cancel::interruptible(&lake.instance.interrupt, || -> LakeResult<Vec<i64>> {
            let mut statement = conn.prepare(&query)?;
            let rows = statement.query_map([], |row| row.get::<_, i64>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?
    };
    let new: Vec<i64> = found.into_iter().filter(|s| !known.contains(s)).collect();
    lake.feed_snapshots.add(schema, table, new.iter().copied());
    Ok(new)
}

/// The change feed of `schema.table` in snapshots `lower..=upper` (see
/// `duck::change_feed`), as a FROM item that no condition of the enclosing query
/// reaches into.
///
/// DuckDB pushes a condition on a table macro's result into the scans it reads, and
/// DuckLake 1.5.5's change scans answer wrongly under a pushed filter once a data file
/// has a delete file (the deletions with `snapshot_id > n` return nothing, the
/// insertions filtered on a data column lose rows); a filter below the feed's window
/// counts would also change which versions it counts. The snapshot range, given as
/// arguments, is no filter. DuckDB never moves a filter below a LIMIT or OFFSET (it
/// would change the result), so `OFFSET 0` keeps every condition above the macro while
/// columns are still pruned and rows still stream (a streaming limit).
pub fn changes_between(alias: &str, schema: &str, table: &str, lower: &str, upper: &str) -> String {
    changes_from(crate::duck::change_feed::MACRO, alias, schema, table, lower, upper)
}

/// `changes_between` read through feed macro `feed`.
fn changes_from(feed: &str, alias: &str, schema: &str, table: &str, lower: &str, upper: &str) -> String {
    format!(
        "(SELECT * FROM {feed}({}, {}, {}, {lower}, {upper}) OFFSET 0)",
        sql::literal(alias),
        sql::literal(schema),
        sql::literal(table),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Lower,
    Upper,
}

/// The tightest of `bounds` (the largest lower or the smallest upper bound).
/// `snapshot_id` compared with a NULL parameter matches no row, so such a bound
/// empties the range.
fn resolve(bounds: &[Bound], params: &[Option<i64>], side: Side) -> Option<i64> {
    let mut result: Option<i64> = None;
    for bound in bounds {
        let value = match bound.value {
            BoundValue::Const(v) => v,
            BoundValue::Param(i) => match params.get(i).copied().flatten() {
                Some(v) => v,
                None => return Some(if side == Side::Lower { i64::MAX } else { i64::MIN }),
            },
        };
        let value = value.saturating_add(bound.offset);
        result = Some(match (result, side) {
            (None, _) => value,
            (Some(r), Side::Lower) => r.max(value),
            (Some(r), Side::Upper) => r.min(value),
        });
    }
    result
}

/// The last snapshot a change-feed range ending at `requested` (None: no end) can
/// read. Snapshots after the current one do not exist yet, so no change has their id:
/// `snapshot_id <= 20` on a lake at snapshot 4 means "up to 4" (DuckLake itself would
/// refuse the missing snapshot 20).
pub fn readable_upper(lake: &Lake, requested: Option<i64>) -> LakeResult<i64> {
    let current = current_snapshot(lake)?;
    Ok(requested.map_or(current, |u| u.min(current)))
}

pub fn current_snapshot(lake: &Lake) -> LakeResult<i64> {
    let query = format!("SELECT id FROM {}.current_snapshot()", sql::ident(&lake.instance.alias));
    Ok(lake.connection()?.query_row(&query, [], |row| row.get(0))?)
}

/// ` AT (VERSION => n)` / ` AT (TIMESTAMP => ...)`, or nothing for the latest snapshot.
/// `executing`: false for EXPLAIN without execution, which shows the setting a table
/// follows instead of requiring it to be set.
pub fn at_clause(table: &TableOptions, executing: bool) -> LakeResult<String> {
    if let Some(setting) = &table.snapshot_id_setting {
        if table.snapshot_id.is_some() || table.as_of.is_some() {
            return Err(LakeError::InvalidOptionValue {
                name: "snapshot_id_setting".into(),
                reason: "the foreign table also has option snapshot_id or as_of; set only one".into(),
            });
        }
        if !executing {
            return Ok(format!(" AT (VERSION => <setting {setting}>)"));
        }
        let value = setting_value(setting).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            LakeError::InvalidOptionValue {
                name: "snapshot_id_setting".into(),
                reason: format!("setting \"{setting}\" is not set in this session"),
            }
        })?;
        let invalid = |reason: String| LakeError::InvalidOptionValue { name: "snapshot_id_setting".into(), reason };
        let id = pinned_id(&value, &table.server)
            .map_err(|reason| invalid(format!("setting \"{setting}\": {reason}")))?
            .ok_or_else(|| invalid(format!("setting \"{setting}\" pins no snapshot of server \"{}\"", table.server)))?;
        return Ok(format!(" AT (VERSION => {id})"));
    }
    let (snapshot_id, as_of, origin) = if table.snapshot_id.is_some() || table.as_of.is_some() {
        (table.snapshot_id.clone(), table.as_of.clone(), "foreign table options snapshot_id and as_of")
    } else {
        (gucs::snapshot_id(), gucs::as_of(), "settings ducklake.snapshot_id and ducklake.as_of")
    };
    match (snapshot_id, as_of) {
        (None, None) => Ok(String::new()),
        (Some(_), Some(_)) => Err(LakeError::InvalidOptionValue {
            name: "snapshot_id".into(),
            reason: format!("the {origin} are both set; set only one"),
        }),
        // A server the setting's object does not name reads its latest snapshot.
        (Some(value), None) => match pinned_id(&value, &table.server) {
            Ok(Some(id)) => Ok(format!(" AT (VERSION => {id})")),
            Ok(None) => Ok(String::new()),
            Err(reason) => Err(LakeError::InvalidOptionValue { name: "snapshot_id".into(), reason }),
        },
        (None, Some(timestamp)) => Ok(format!(" AT (TIMESTAMP => {})", timestamptz_literal(&timestamp)?)),
    }
}

/// Whether `table` reads a past snapshot now: by its options, or by the settings
/// (`ducklake.snapshot_id`, `ducklake.as_of`) as they pin its server's lake. Rows
/// read there cannot be changed: UPDATE and DELETE change the current rows.
pub fn reads_the_past(table: &TableOptions) -> LakeResult<bool> {
    Ok(table.pinned() || !at_clause(table, true)?.is_empty())
}

/// The snapshot id that a pin (`ducklake.snapshot_id`, or the setting a table's
/// `snapshot_id_setting` names) gives the lake of `server`: the pin is one id for
/// every server, or a JSON object of ids by server name, `{"lake_a": 12, "lake_b": 7}`,
/// for queries over lakes of several servers (whose snapshot ids are separate
/// sequences). None: the object does not name `server`. Err: why the pin is invalid.
fn pinned_id(pin: &str, server: &str) -> Result<Option<i64>, String> {
    let pin = pin.trim();
    if !pin.starts_with('{') {
        let not_an_id = || format!("\"{pin}\" is not a snapshot id (a non-negative integer)");
        return pin.parse::<i64>().ok().filter(|id| *id >= 0).map(Some).ok_or_else(not_an_id);
    }
    let ids: serde_json::Map<String, serde_json::Value> = serde_json::from_str(pin)
        .map_err(|error| format!("\"{pin}\" is neither a snapshot id nor a JSON object of snapshot ids by server name ({error})"))?;
    match ids.get(server) {
        None => Ok(None),
        Some(id) => id
            .as_i64()
            .filter(|id| *id >= 0)
            .map(Some)
            .ok_or_else(|| format!("server \"{server}\": {id} is not a snapshot id (a non-negative integer)")),
    }
}

/// The current value of setting `name`, None when it does not exist. A setting only
/// superusers may read raises Postgres' own error for anybody else.
fn setting_value(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: GetConfigOption with missing_ok returns NULL or a string Postgres owns,
    // copied at once; restrict_privileged makes it check the caller's right to read it.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, true);
        (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

/// Parse with Postgres' own timestamptz input (honouring TimeZone and DateStyle),
/// then write it as a UTC DuckDB literal.
fn timestamptz_literal(text: &str) -> LakeResult<String> {
    let invalid = || LakeError::InvalidOptionValue {
        name: "as_of".into(),
        reason: format!("\"{text}\" is not a timestamp with time zone"),
    };
    let cstring = CString::new(text).map_err(|_| invalid())?;
    // SAFETY: timestamptz_in takes (cstring, oid, int4); it raises a Postgres ERROR
    // (with its own message naming the value) for malformed input.
    let datum = unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::timestamptz_in,
            &[
                Some(pg_sys::Datum::from(cstring.as_ptr())),
                Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                Some(pg_sys::Datum::from(-1i32)),
            ],
        )
    }
    .ok_or_else(invalid)?;
    // SAFETY: a timestamptz datum.
    unsafe { deparse::literal(datum, pg_sys::TIMESTAMPTZOID) }.ok_or_else(invalid)
}
