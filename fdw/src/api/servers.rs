//! Finding the DuckLake server a function argument names.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

use crate::error::{LakeError, LakeResult};

/// The `ducklake` server called `name`, or else the one whose `catalog_name` is
/// `name` (so `ducklake.snapshots('analytics')` works with either).
pub fn server_by_name(name: &str) -> LakeResult<pg_sys::Oid> {
    let cname = CString::new(name).map_err(|_| unknown(name))?;
    // SAFETY: catalog lookups.
    unsafe {
        let server = pg_sys::GetForeignServerByName(cname.as_ptr(), true);
        if !server.is_null() && is_ducklake_server(server) {
            return Ok((*server).serverid);
        }
    }
    let matches: Vec<pg_sys::Oid> = ducklake_servers()
        .into_iter()
        .filter(|oid| crate::catalog::config::catalog_alias(*oid) == name)
        .collect();
    match matches.as_slice() {
        [oid] => Ok(*oid),
        [] => Err(unknown(name)),
        _ => Err(LakeError::InvalidOptionValue {
            name: "catalog_name".into(),
            reason: format!("several DuckLake servers use catalog_name \"{name}\"; pass the server name"),
        }),
    }
}

fn unknown(name: &str) -> LakeError {
    LakeError::MissingServer(name.to_owned())
}

unsafe fn is_ducklake_server(server: *mut pg_sys::ForeignServer) -> bool {
    unsafe {
        let fdw = pg_sys::GetForeignDataWrapper((*server).fdwid);
        CStr::from_ptr((*fdw).fdwname).to_bytes() == b"ducklake"
    }
}

/// All servers of the `ducklake` wrapper, via SPI on pg_foreign_server.
fn ducklake_servers() -> Vec<pg_sys::Oid> {
    pgrx::Spi::connect(|client| {
        client
            .select(
                "SELECT s.oid FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw \
                 WHERE w.fdwname = 'ducklake'",
                None,
                &[],
            )
            .map(|rows| rows.filter_map(|row| row.get::<pg_sys::Oid>(1).ok().flatten()).collect())
            .unwrap_or_default()
    })
}

/// Superusers and the server's owner may change the lake's schema.
pub fn require_owner(server_oid: pg_sys::Oid) -> LakeResult<()> {
    // SAFETY: catalog lookups.
    unsafe {
        let server = pg_sys::GetForeignServer(server_oid);
        if pg_sys::superuser() || (*server).owner == pg_sys::GetUserId() {
            return Ok(());
        }
        let name = CStr::from_ptr((*server).servername).to_string_lossy();
        Err(LakeError::PermissionDenied(format!("must be owner of foreign server {name}")))
    }
}

/// Reading a lake's metadata needs USAGE on its server, like creating a foreign table on it.
pub fn require_usage(server_oid: pg_sys::Oid) -> LakeResult<()> {
    // SAFETY: catalog lookups.
    unsafe {
        #[cfg(feature = "pg15")]
        let result = pg_sys::pg_foreign_server_aclcheck(server_oid, pg_sys::GetUserId(), pg_sys::ACL_USAGE as _);
        #[cfg(not(feature = "pg15"))]
        let result = pg_sys::object_aclcheck(
            pg_sys::ForeignServerRelationId,
            server_oid,
            pg_sys::GetUserId(),
            pg_sys::ACL_USAGE as _,
        );
        if result == pg_sys::AclResult::ACLCHECK_OK {
            return Ok(());
        }
        let server = pg_sys::GetForeignServer(server_oid);
        let name = CStr::from_ptr((*server).servername).to_string_lossy();
        Err(LakeError::PermissionDenied(format!("permission denied for foreign server {name}")))
    }
}
