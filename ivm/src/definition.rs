//! A stream table's defining query, kept as a view: `pgtrickle_state.query_<pgt_id>`.
//!
//! Postgres binds a view's names when it is created (in the creator's search path)
//! and keeps the analyzed query by object ids, so the definition means the same
//! whoever refreshes it and whatever is created later under a look-alike name; a
//! renamed source column or table is followed; a dropped one is refused (unless
//! CASCADE, which drops the stream table with it); and a query ending in a `--`
//! comment is no special case. Refreshes read it (`SELECT * FROM` the view), and the
//! differential analysis re-parses its text from `pg_get_viewdef`, which spells out
//! every name that the refresh's search path would not find.
//!
//! The view is owned by the stream table's owner, who needs the privileges on its
//! sources; the result table depends on it, and it on the result table, so dropping
//! either (or a source, with CASCADE) drops the stream table.

use crate::error::{IvmError, IvmResult};
use crate::maintenance::schemas::STATE_SCHEMA;
use crate::privileges::as_extension_owner;
use crate::sql::qualified;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The view holding stream table `id`'s query.
pub fn view_name(id: i64) -> String {
    qualified(STATE_SCHEMA, &format!("query_{id}"))
}

pub fn view_oid(id: i64) -> IvmResult<pg_sys::Oid> {
    crate::sql::regclass(&view_name(id)).map_err(|_| {
        IvmError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("the definition of stream table {id} ({}) no longer exists", view_name(id)),
        )
        .with_hint("Drop the stream table and create it again.")
    })
}

/// Lock the relations stream table `id`'s query reads (AccessShareLock), found through
/// the view's dependencies without opening it. DROP of a source locks the source, then
/// the view that depends on it, then the result table that depends on the view; a
/// refresh takes its locks in that same order (sources, result table, then the view
/// when it opens it), so such a DROP fails plainly (2BP01) instead of deadlocking.
/// Called before `catalog::lock_result_table`.
pub fn lock_sources(id: i64) -> IvmResult<()> {
    let mut sources: Vec<pg_sys::Oid> = view_dependencies(id)?.into_iter().map(|(relid, _)| relid).collect();
    sources.dedup();
    for oid in sources {
        crate::sql::lock_relation(oid, pg_sys::AccessShareLock);
    }
    Ok(())
}

/// The (table, attribute number) pairs stream table `id`'s query reads, as Postgres
/// recorded its view's dependencies (and those of the views it reads).
pub fn read_columns(id: i64) -> IvmResult<Vec<(pg_sys::Oid, i16)>> {
    view_oid(id)?;
    Ok(view_dependencies(id)?.into_iter().filter(|(_, attno)| *attno > 0).collect())
}

/// The relations (attribute number 0) and columns the rule of stream table `id`'s view
/// depends on, other than the view itself, and through the views among them, what
/// theirs depend on (`pgtrickle.view_reads`), ordered by relation: none when the view
/// is missing. Read without opening the view.
fn view_dependencies(id: i64) -> IvmResult<Vec<(pg_sys::Oid, i16)>> {
    as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT DISTINCT relid, attno FROM pgtrickle.view_reads(pg_catalog.to_regclass($1)) ORDER BY 1, 2",
                None,
                &[view_name(id).into()],
            )?;
            let mut dependencies = Vec::new();
            for row in rows {
                if let (Some(relid), Some(attno)) = (row.get::<pg_sys::Oid>(1)?, row.get::<i16>(2)?) {
                    dependencies.push((relid, attno));
                }
            }
            Ok::<_, IvmError>(dependencies)
        })
    })
}

/// Create the view of `query` for stream table `id`, owned by `owner`. The query's
/// names resolve as the caller's (already checked by analyzing it as the caller).
pub fn define(id: i64, query: &str, owner: pg_sys::Oid) -> IvmResult<pg_sys::Oid> {
    let name = view_name(id);
    as_extension_owner(|| {
        // The newline ends a trailing `--` comment of the query.
        Spi::run(&format!("CREATE VIEW {name} AS {query}\n"))?;
        let role: String = Spi::get_one_with_args("SELECT pg_catalog.quote_ident(rolname::text) FROM pg_catalog.pg_roles WHERE oid = $1", &[owner.into()])?
            .unwrap_or_default();
        Spi::run(&format!("ALTER VIEW {name} OWNER TO {role}"))?;
        Ok(())
    })?;
    view_oid(id)
}

/// Tie the view and the result table together: each goes with the other.
pub fn bind(view: pg_sys::Oid, result: pg_sys::Oid) {
    let address = |oid| pg_sys::ObjectAddress { classId: pg_sys::RelationRelationId, objectId: oid, objectSubId: 0 };
    // SAFETY: both relations exist; recordDependencyOn inserts pg_depend rows.
    unsafe {
        pg_sys::recordDependencyOn(&address(result), &address(view), pg_sys::DependencyType::DEPENDENCY_NORMAL);
        pg_sys::recordDependencyOn(&address(view), &address(result), pg_sys::DependencyType::DEPENDENCY_AUTO);
    }
}

/// Drop the view of stream table `id` (before a new definition replaces it), first
/// untying the result table from it.
pub fn drop_definition(id: i64, result: pg_sys::Oid) -> IvmResult<()> {
    let Ok(view) = view_oid(id) else { return Ok(()) };
    // SAFETY: removes the one dependency `bind` recorded.
    unsafe {
        pg_sys::deleteDependencyRecordsForSpecific(
            pg_sys::RelationRelationId,
            result,
            pg_sys::DependencyType::DEPENDENCY_NORMAL as _,
            pg_sys::RelationRelationId,
            view,
        );
        pg_sys::CommandCounterIncrement();
    }
    as_extension_owner(|| Ok(Spi::run(&format!("DROP VIEW {}", view_name(id)))?))
}

/// The query's text, with every name the current search path would not resolve to
/// the same object spelled out (the text the differential analysis re-parses).
pub fn query_text(id: i64) -> IvmResult<String> {
    let view = view_oid(id)?;
    Spi::get_one_with_args::<String>("SELECT pg_catalog.pg_get_viewdef($1)", &[view.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("no definition for view {view}")))
}

/// `SELECT * FROM` the view: the query's result as of the lake snapshot being read.
pub fn select_all(id: i64) -> String {
    format!("SELECT * FROM {}", view_name(id))
}

/// The result table's columns as the view defines them (names, types, typmods),
/// compared with an existing table's.
pub fn same_columns_as(id: i64, table: pg_sys::Oid) -> IvmResult<bool> {
    let view = view_oid(id)?;
    let columns = "SELECT pg_catalog.array_agg((attname, atttypid, atttypmod) ORDER BY attnum)::text \
                   FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped";
    let of = |oid: pg_sys::Oid| Spi::get_one_with_args::<String>(columns, &[oid.into()]);
    Ok(of(view)? == of(table)?)
}
