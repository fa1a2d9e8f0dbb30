//! Checking a stream table against its definition: the defining query evaluated at
//! the table's frontier must give exactly the table's rows (as a multiset).
//!
//! `pgtrickle.verify_stream_table(name)` returns its differences through a
//! tuplestore (materialize mode), which Postgres spills to disk beyond `work_mem`, and
//! fills it from a cursor, so a table that differs in millions of rows costs disk,
//! not backend memory.

use super::context::RefreshContext;
use super::lakes::Lakes;
use crate::catalog::{self, Lock};
use crate::error::{IvmError, IvmResult, OrRaise};
use crate::privileges::owner_of;
use crate::sql::relation_name;
use pgrx::prelude::*;
use pgrx::{IntoDatum, JsonB};

pgrx::extension_sql!(
    r#"
CREATE FUNCTION pgtrickle.verify_stream_table(name text)
  RETURNS TABLE (difference text, row_data jsonb)
  STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'verify_stream_table_wrapper';
COMMENT ON FUNCTION pgtrickle.verify_stream_table(text) IS
  'Rows where the stream table differs from its query at its frontier: missing or extra; none when equal';
"#,
    name = "verify_stream_table"
);

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_verify_stream_table_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn verify_stream_table_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: called by the executor as a set-returning function with one text argument.
    unsafe {
        let name: String = pgrx::fcinfo::pg_getarg(fcinfo, 0).unwrap_or_default();
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let result = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        let (store, descriptor) = ((*result).setResult, (*result).setDesc);
        let id = catalog::resolve(&name).or_raise();
        differences(id, |difference, row| {
            let mut values = [difference.into_datum().expect("text"), row.into_datum().expect("jsonb")];
            let mut nulls = [false, false];
            pg_sys::tuplestore_putvalues(store, descriptor, values.as_mut_ptr(), nulls.as_mut_ptr());
        })
        .or_raise();
        pg_sys::Datum::from(0)
    }
}

/// Each difference between stream table `id` and its query at its frontier, handed
/// to `emit`: `extra` rows (in the table only) and `missing` ones (in the query's
/// result only), as jsonb. The catalog row is locked FOR SHARE, so no refresh commits
/// between reading the frontier and reading the table.
pub fn differences(id: i64, mut emit: impl FnMut(&str, JsonB)) -> IvmResult<()> {
    // Sources before the result table: DROP of a source locks it, then the view,
    // then the result table (which depends on the view).
    crate::definition::lock_sources(id)?;
    catalog::lock_result_table(id, pg_sys::AccessShareLock)?;
    let table = catalog::load(id, Lock::Share)?.ok_or_else(|| IvmError::no_such_stream_table(&id.to_string()))?;
    let context = RefreshContext::enter(owner_of(table.relid)?, &table.settings)?;
    let plan = super::refresh::plan_for(&table)?;
    if let (_, Some(redefined)) = super::refresh::view_redefinition(&table, &plan)? {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("stream table {}: {redefined} since its last refresh", table.name),
        )
        .with_hint("Refresh the stream table (it rebuilds), then verify it."));
    }
    if let Some(source) = super::refresh::changed_postgres_source(&table, &plan)? {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("stream table {} has not seen the latest changes of its source {source}", table.name),
        )
        .with_hint("Postgres tables are read as they are now: refresh the stream table, then verify it."));
    }
    let lakes = Lakes::of(&plan.sources, &table.frontier, &table.name)?;
    if !lakes.all_have_frontier() {
        return Err(IvmError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("stream table {} has no frontier yet; refresh it first", table.name),
        ));
    }
    Lakes::pin(&context, &lakes.at_frontier());
    let query = format!(
        "WITH st AS (SELECT * FROM {result}), q AS MATERIALIZED ({query}) \
         SELECT 'extra', pg_catalog.to_jsonb(e) FROM (SELECT * FROM st EXCEPT ALL SELECT * FROM q) e \
         UNION ALL \
         SELECT 'missing', pg_catalog.to_jsonb(m) FROM (SELECT * FROM q EXCEPT ALL SELECT * FROM st) m",
        result = relation_name(table.relid),
        query = crate::definition::select_all(table.id),
    );
    Spi::connect(|client| {
        let mut cursor = client.try_open_cursor(query.as_str(), &[])?;
        loop {
            let rows = cursor.fetch(1000)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let difference = row.get::<String>(1)?.unwrap_or_default();
                emit(&difference, row.get::<JsonB>(2)?.unwrap_or(JsonB(serde_json::Value::Null)));
            }
        }
        Ok::<_, IvmError>(())
    })?;
    drop(context); // reverts the pinned snapshot
    Ok(())
}
