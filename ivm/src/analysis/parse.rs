//! The defining query, parsed and analyzed by Postgres itself.

use crate::error::{IvmError, IvmResult};
use pgrx::prelude::*;
use pgrx::{PgList, pg_sys};
use std::ffi::CString;

/// Parse and analyze `text` (one SELECT) into a Query tree in the current memory context.
pub fn analyze(text: &str) -> IvmResult<*mut pg_sys::Query> {
    let source = CString::new(text)
        .map_err(|_| IvmError::invalid("the defining query contains a NUL character"))?;
    // SAFETY: raw_parser and parse_analyze_fixedparams raise Postgres errors (syntax,
    // unknown relation or column) themselves; the returned trees live in CurrentMemoryContext.
    unsafe {
        let raw = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            source.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        if raw.len() != 1 {
            return Err(IvmError::new(
                PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
                format!("the defining query must be exactly one SELECT statement, found {}", raw.len()),
            ));
        }
        let statement = raw.get_ptr(0).expect("one statement");
        if !pgrx::is_a((*statement).stmt, pg_sys::NodeTag::T_SelectStmt) {
            return Err(IvmError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                "the defining query must be a SELECT statement",
            ));
        }
        let query = pg_sys::parse_analyze_fixedparams(statement, source.as_ptr(), std::ptr::null_mut(), 0, std::ptr::null_mut());
        if !(*query).utilityStmt.is_null() || (*query).commandType != pg_sys::CmdType::CMD_SELECT {
            return Err(IvmError::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, "the defining query must be a SELECT statement"));
        }
        Ok(query)
    }
}

/// A DuckLake foreign table the query reads.
#[derive(Debug, Clone)]
pub struct LakeSource {
    pub relid: pg_sys::Oid,
    /// Its lake: snapshot ids are a sequence per server.
    pub server: pg_sys::Oid,
    pub server_name: String,
    /// Frontier key: `ducklake:<schema>.<table>`.
    pub key: String,
}

/// The lake source of relation `relid`, or None when it is not a DuckLake foreign table.
/// Sources pinned to a snapshot or reading a change feed cannot be maintained.
pub fn lake_source(relid: pg_sys::Oid) -> IvmResult<Option<LakeSource>> {
    // SAFETY: catalog lookups of an existing relation.
    unsafe {
        if pg_sys::get_rel_relkind(relid) != pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char {
            return Ok(None);
        }
        let table = pg_sys::GetForeignTable(relid);
        let server = pg_sys::GetForeignServer((*table).serverid);
        let wrapper = pg_sys::GetForeignDataWrapper((*server).fdwid);
        let fdw_name = std::ffi::CStr::from_ptr((*wrapper).fdwname).to_string_lossy();
        if fdw_name != "ducklake" {
            return Ok(None);
        }
        let (schema, name) = crate::sql::relation_parts(relid);
        for option in PgList::<pg_sys::DefElem>::from_pg((*table).options).iter_ptr() {
            let option_name = std::ffi::CStr::from_ptr((*option).defname).to_string_lossy();
            if matches!(option_name.as_ref(), "changes" | "snapshot_id" | "as_of" | "snapshot_id_setting") {
                return Err(IvmError::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("foreign table {schema}.{name} has option {option_name}; a stream table needs a source that reads the lake's current data"),
                ));
            }
        }
        let server_name = std::ffi::CStr::from_ptr((*server).servername).to_string_lossy().into_owned();
        Ok(Some(LakeSource { relid, server: (*table).serverid, server_name, key: format!("ducklake:{schema}.{name}") }))
    }
}

/// A Postgres table a differential stream table reads: its changes are captured by
/// statement triggers into a log (see `maintenance::capture`).
#[derive(Debug, Clone)]
pub struct PostgresSource {
    pub relid: pg_sys::Oid,
    /// Frontier key: `postgres:<schema>.<table>`.
    pub key: String,
}

/// A source of a differential stream table.
#[derive(Debug, Clone)]
pub enum Source {
    Lake(LakeSource),
    Postgres(PostgresSource),
    /// Not a table: an aggregating sub-select in FROM, whose sources are its own (see
    /// `rows::Derived`).
    Derived,
}

impl Source {
    /// The table's oid (InvalidOid for a derived relation).
    pub fn relid(&self) -> pg_sys::Oid {
        match self {
            Source::Lake(s) => s.relid,
            Source::Postgres(s) => s.relid,
            Source::Derived => pg_sys::InvalidOid,
        }
    }
}

/// The Postgres source of relation `relid`: an ordinary table (not a system catalog),
/// or None. (A partitioned table or a partition is refused when its changes are
/// captured: a statement trigger does not see writes made through another table of
/// the hierarchy.)
///
/// Refused when row-level security applies to the current user (the stream table's
/// owner, who creates and refreshes it): a refresh reads the table's changes from its
/// change log, which the table's policies do not filter, so rows the owner may not
/// see would come into the result. (FULL reads the table through its policies.)
pub fn postgres_source(relid: pg_sys::Oid) -> IvmResult<Option<PostgresSource>> {
    // SAFETY: catalog lookup of an existing relation.
    let kind = unsafe { pg_sys::get_rel_relkind(relid) } as u8;
    if kind != pg_sys::RELKIND_RELATION || relid.to_u32() < pg_sys::FirstNormalObjectId {
        return Ok(None);
    }
    // SAFETY: as above; with noError, it raises nothing (row_security = off included).
    let security = unsafe { pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true) };
    if security == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
        return Err(IvmError::unsupported(format!(
            "row-level security of {} that applies to the stream table's owner",
            crate::sql::relation_name(relid)
        )));
    }
    let (schema, name) = crate::sql::relation_parts(relid);
    Ok(Some(PostgresSource { relid, key: format!("postgres:{schema}.{name}") }))
}

/// Every relation the query reads (also inside subqueries, CTEs and views), once
/// each, as Postgres' own dependency extraction sees them.
pub fn relations_read(query: *mut pg_sys::Query) -> Vec<pg_sys::Oid> {
    let mut relation_oids: *mut pg_sys::List = std::ptr::null_mut();
    let mut invalidation_items: *mut pg_sys::List = std::ptr::null_mut();
    let mut has_row_security = false;
    // SAFETY: walks an analyzed Query tree; the lists are palloc'd in CurrentMemoryContext.
    unsafe {
        pg_sys::extract_query_dependencies(
            query as *mut pg_sys::Node,
            &mut relation_oids,
            &mut invalidation_items,
            &mut has_row_security,
        );
    }
    let mut relids: Vec<pg_sys::Oid> = Vec::new();
    for relid in unsafe { PgList::<pg_sys::Oid>::from_pg(relation_oids) }.iter_oid() {
        if !relids.contains(&relid) {
            relids.push(relid);
        }
    }
    relids
}

/// Every DuckLake foreign table the query reads (also inside subqueries, CTEs and
/// views), as Postgres' own dependency extraction sees them.
pub fn lake_sources(query: *mut pg_sys::Query) -> IvmResult<Vec<LakeSource>> {
    let mut sources: Vec<LakeSource> = Vec::new();
    for relid in relations_read(query) {
        if let Some(source) = lake_source(relid)? {
            if !sources.iter().any(|s| s.relid == source.relid) {
                sources.push(source);
            }
        }
    }
    Ok(sources)
}
