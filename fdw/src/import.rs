//! IMPORT FOREIGN SCHEMA: one foreign table per DuckLake table of a lake schema.

use std::collections::BTreeMap;

use supabase_wrappers::prelude::{ImportForeignSchemaStmt, ImportSchemaType};

use crate::catalog::cache::lake_for;
use crate::error::{LakeError, LakeResult};
use crate::types::lake_types::pg_type_for;

pub fn create_statements(server_oid: pgrx::pg_sys::Oid, stmt: &ImportForeignSchemaStmt) -> LakeResult<Vec<String>> {
    let lake = lake_for(server_oid)?;
    let conn = lake.connection()?;
    let alias = &lake.instance.alias;

    let schema_exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_schemas() WHERE database_name = ? AND schema_name = ?",
        [alias.as_str(), stmt.remote_schema.as_str()],
        |row| row.get(0),
    )?;
    if !schema_exists {
        return Err(LakeError::DuckDb(format!(
            "schema \"{}\" does not exist in DuckLake catalog \"{alias}\"",
            stmt.remote_schema
        )));
    }

    let mut statement = conn.prepare(
        "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() \
         WHERE database_name = ? AND schema_name = ? ORDER BY table_name, column_index",
    )?;
    let rows = statement.query_map([alias.as_str(), stmt.remote_schema.as_str()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, bool>(3)?))
    })?;
    let mut tables: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for row in rows {
        let (table, column, data_type, nullable) = row?;
        tables.entry(table).or_default().push((column, data_type, nullable));
    }

    let wanted = |table: &str| match stmt.list_type {
        ImportSchemaType::FdwImportSchemaAll => true,
        ImportSchemaType::FdwImportSchemaLimitTo => stmt.table_list.iter().any(|t| t == table),
        ImportSchemaType::FdwImportSchemaExcept => !stmt.table_list.iter().any(|t| t == table),
    };

    let mut statements = Vec::new();
    for (table, columns) in tables.iter().filter(|(t, _)| wanted(t)) {
        let mut definitions = Vec::with_capacity(columns.len());
        for (column, data_type, nullable) in columns {
            let pg_type = pg_type_for(data_type).ok_or_else(|| LakeError::UnsupportedType {
                table: format!("{}.{table}", stmt.remote_schema),
                column: column.clone(),
                type_name: data_type.clone(),
                direction: "has no Postgres equivalent".into(),
            })?;
            let not_null = if *nullable { "" } else { " NOT NULL" };
            definitions.push(format!("{} {pg_type}{not_null}", pg_ident(column)));
        }
        statements.push(format!(
            "CREATE FOREIGN TABLE {}.{} ({}) SERVER {} OPTIONS (schema {}, table {})",
            pg_ident(&stmt.local_schema),
            pg_ident(table),
            definitions.join(", "),
            pg_ident(&stmt.server_name),
            pg_literal(&stmt.remote_schema),
            pg_literal(table)
        ));
    }
    Ok(statements)
}

/// Postgres identifier quoting (quote_identifier), for the generated DDL.
pub fn pg_ident(name: &str) -> String {
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier returns its argument or a palloc'd quoted copy.
    unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::quote_identifier(name.as_ptr())).to_string_lossy().into_owned() }
}

/// Postgres literal quoting (quote_literal_cstr), correct for any standard_conforming_strings.
pub fn pg_literal(value: &str) -> String {
    let value = std::ffi::CString::new(value).unwrap_or_default();
    // SAFETY: quote_literal_cstr returns a palloc'd quoted copy.
    unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::quote_literal_cstr(value.as_ptr())).to_string_lossy().into_owned() }
}
