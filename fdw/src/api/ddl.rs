//! Changing a lake's schema from SQL: run DuckDB DDL on a server, or create a lake
//! table from a foreign table's definition. Both are limited to superusers and the
//! server's owner, and run inside the lake's locked-down instance.

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::api::servers::{require_owner, server_by_name};
use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult, OrRaise};
use crate::options::{TableOptions, lake_column_name};
use crate::types::decode::type_name;
use crate::types::lake_types::duck_type_for;

/// Run DuckDB SQL (typically CREATE/ALTER/DROP TABLE) against the lake of `server`.
/// Unqualified names resolve in the lake. It commits with the current transaction.
#[pg_extern]
fn execute(server: &str, statement: &str) {
    let run = || -> LakeResult<()> {
        let server_oid = server_by_name(server)?;
        require_owner(server_oid)?;
        let lake = lake_for(server_oid)?;
        // DuckDB may create secrets whatever its configuration, and a secret names the
        // host its requests go to: on a lake in an object store, DuckDB SQL could send
        // requests anywhere the database server reaches.
        // SAFETY: reads the current user's role.
        if ducklake_formats::paths::is_object_store(&lake.instance.data_path) && !unsafe { pg_sys::superuser() } {
            return Err(LakeError::PermissionDenied(format!(
                "ducklake.execute on server \"{server}\", whose data is in an object store, needs a superuser: its \
                 DuckDB SQL could create secrets that send requests to any host; create lake tables with \
                 ducklake.create_table"
            )));
        }
        // Counted as a write: the snapshot gets an author, and a rolled-back savepoint
        // around it undoes it like any other write.
        lake.forget_columns();
        lake.run_write(statement, |conn, sql| conn.execute_batch(sql))
    };
    run().or_raise()
}

/// Create the DuckLake table behind `foreign_table` from its column definitions.
/// Declared in SQL with a `regclass` argument (see lib.rs), so a table name works.
#[pg_extern(sql = false)]
fn create_table(foreign_table: pg_sys::Oid, if_not_exists: bool) {
    create_lake_table(foreign_table, if_not_exists).or_raise()
}

fn create_lake_table(relid: pg_sys::Oid, if_not_exists: bool) -> LakeResult<()> {
    // SAFETY: catalog lookups of an existing relation.
    let (server_oid, table, columns) = unsafe {
        if pg_sys::get_rel_relkind(relid) != pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char {
            return Err(LakeError::NotSupported(format!("\"{}\" is not a foreign table", relation_name(relid))));
        }
        let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
        let relation = PgRelation::open(relid);
        let mut columns = Vec::new();
        for attr in relation.tuple_desc().iter().filter(|a| !a.is_dropped()) {
            let name = lake_column_name(relid, attr.attnum, attr.name());
            let duck_type = duck_type_for(attr.type_oid().value(), attr.type_mod()).map_err(|reason| {
                LakeError::UnsupportedType {
                    table: relation_name(relid),
                    column: attr.name().to_owned(),
                    type_name: type_name(attr.type_oid().value()),
                    direction: reason,
                }
            })?;
            let not_null = if attr.attnotnull { " NOT NULL" } else { "" };
            columns.push(format!("{} {duck_type}{not_null}", sql::ident(&name)));
        }
        (server_oid, TableOptions::of(relid), columns)
    };
    require_owner(server_oid)?;
    let lake = lake_for(server_oid)?;
    let statement = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE {}{schema}.{} ({})",
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        sql::ident(&table.table),
        columns.join(", "),
        schema = sql::ident(&table.schema),
    );
    lake.run_write(&statement, |conn, sql| conn.execute_batch(sql))
}

fn relation_name(relid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookup.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        if name.is_null() {
            format!("relation {}", relid.to_u32())
        } else {
            std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}
