//! The rules that keep a lake from reaching past what its roles were granted.
//!
//! DuckDB runs as the server's operating-system user and connects to the catalog with
//! libpq, so a server's options decide which files the instance may read and as whom
//! it authenticates. Superusers may point a lake anywhere. For everybody else:
//! - **Data paths**: a server owned by a role that is not a superuser keeps its data
//!   under one of the directories of `ducklake.allowed_data_paths` (set by a
//!   superuser), whether the path is the server's option, the embedded default or the
//!   one a catalog records; otherwise its instance could read any file of the cluster.
//! - **Catalog connections**: a user that is not a superuser connects to the catalog
//!   with a password from its user mapping, and the catalog's server must ask for it
//!   (libpq's `require_auth`), as postgres_fdw requires: trust or peer
//!   authentication would let it connect as any role, superusers included. Connecting
//!   to the embedded catalog as oneself needs no password. A server owned by such a
//!   role may not name files of the server in its connection string (a password
//!   file, certificates, a service file).
//! - **Object stores**: such a server keeps its data under a prefix of
//!   `ducklake.allowed_data_paths` like any other path, names only endpoints of
//!   `ducklake.allowed_endpoints`, and authenticates with its user mappings' keys,
//!   never with the database server's own credential chain. Its owner may not run
//!   DuckDB SQL on it (`ducklake.execute`): a DuckDB secret may name any host.
//! - **Encoding**: DuckDB's text is UTF-8, so lakes are refused in databases of any
//!   other encoding rather than having their text altered.

use ducklake_formats::object_store::ObjectStore;
use ducklake_formats::{conninfo, paths};
use pgrx::pg_sys;

use crate::error::{LakeError, LakeResult};
use crate::gucs;

/// libpq options that make it read files of the server.
const FILE_OPTIONS: &[&str] =
    &["passfile", "service", "servicefile", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir", "sslkeylogfile"];

/// Authentication methods that prove the password (`require_auth`).
const PASSWORD_METHODS: &str = "password,md5,scram-sha-256";

/// DuckLake keeps text as UTF-8; a database of another encoding would get it altered.
pub fn require_utf8_database() -> LakeResult<()> {
    // SAFETY: reads the database encoding set at backend start.
    let encoding = unsafe { pg_sys::GetDatabaseEncoding() };
    if encoding == pg_sys::pg_enc::PG_UTF8 as i32 {
        return Ok(());
    }
    // SAFETY: returns a static name for a valid encoding id.
    let name = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetDatabaseEncodingName()) }.to_string_lossy().into_owned();
    Err(LakeError::NotSupported(format!(
        "DuckLake lakes need a database with encoding UTF8; this database uses {name}, whose text DuckDB \
         (which keeps text as UTF-8) would alter"
    )))
}

/// A catalog name also names the embedded data directory: it must be one path component.
pub fn check_catalog_name(name: &str) -> LakeResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(LakeError::InvalidOptionValue {
            name: "catalog_name".into(),
            reason: format!("\"{name}\" is not a valid catalog name (no \"/\", not \".\" or \"..\")"),
        });
    }
    Ok(())
}

/// `path` as the lake's data directory: absolute, normalized, with a trailing slash.
pub fn normalized_data_path(path: &str) -> LakeResult<String> {
    paths::normalize_directory(path)
        .map_err(|e| LakeError::InvalidOptionValue { name: "data_path".into(), reason: e.to_string() })
}

/// The directories of `ducklake.allowed_data_paths`.
pub fn data_path_roots() -> LakeResult<Vec<String>> {
    paths::roots(&gucs::allowed_data_paths().unwrap_or_default())
        .map_err(|e| LakeError::InvalidOptionValue { name: "ducklake.allowed_data_paths".into(), reason: e.to_string() })
}

/// Refuse a data path outside `roots` for server `server` (None: the one being defined).
pub fn check_data_path(server: Option<&str>, path: &str, roots: &[String]) -> LakeResult<()> {
    if roots.iter().any(|root| paths::is_within(path, root)) {
        return Ok(());
    }
    let allowed = if roots.is_empty() { "none is set".to_owned() } else { format!("it is {}", roots.join(", ")) };
    Err(LakeError::PermissionDenied(format!(
        "data path \"{path}\"{} is not under ducklake.allowed_data_paths ({allowed}): the data of a server whose \
         owner is not a superuser must lie under one of those directories",
        of_server(server)
    )))
}

/// Refuse a connection string that makes libpq read files of the server.
pub fn check_catalog_connection(server: Option<&str>, value: &str) -> LakeResult<()> {
    let params = conninfo::params(value)
        .map_err(|e| LakeError::InvalidOptionValue { name: "catalog_connection".into(), reason: e.to_string() })?;
    if let Some((keyword, _)) = params.iter().find(|(k, _)| FILE_OPTIONS.contains(&k.as_str())) {
        return Err(LakeError::PermissionDenied(format!(
            "catalog_connection{} names a file of the server ({keyword}); only superusers may own servers whose \
             catalog connection reads the server's files",
            of_server(server)
        )));
    }
    Ok(())
}

/// The parameters that make libpq authenticate with the user mapping's password and
/// fail unless the catalog's server checks it; an error when the mapping has none.
pub fn password_authentication(server: &str, password: Option<&str>) -> LakeResult<Vec<(&'static str, String)>> {
    match password.filter(|p| !p.is_empty()) {
        Some(_) => Ok(vec![("require_auth", PASSWORD_METHODS.to_owned()), ("passfile", "/dev/null".to_owned())]),
        None => Err(LakeError::PasswordRequired { server: server.to_owned(), detail: None }),
    }
}

/// An attach error caused by `require_auth` (the catalog's server did not ask for the
/// password), said as such.
pub fn explain_authentication_failure(server: &str, message: &str) -> Option<LakeError> {
    message.contains("authentication method requirement").then(|| LakeError::PasswordRequired {
        server: server.to_owned(),
        detail: Some(
            "the catalog's server did not ask for the password (it trusts the connection, e.g. trust or peer \
             authentication), and users that are not superusers must authenticate with one"
                .to_owned(),
        ),
    })
}

/// What a server owned by a role that is not a superuser may not do with an object
/// store: use the database server's own cloud identity, or send requests to an
/// endpoint a superuser has not listed in `ducklake.allowed_endpoints` (any host
/// the database server reaches, internal ones included).
pub fn check_object_store(server: Option<&str>, store: &ObjectStore) -> LakeResult<()> {
    if store.credential_chain {
        return Err(LakeError::PermissionDenied(format!(
            "credential_chain{} would use the database server's own cloud credentials (its environment or instance \
             role); only superusers may own servers that use them",
            of_server(server)
        )));
    }
    match &store.endpoint {
        Some(endpoint) if !gucs::allowed_endpoints().contains(&endpoint.to_ascii_lowercase()) => {
            Err(LakeError::PermissionDenied(format!(
                "endpoint \"{endpoint}\"{} is not in ducklake.allowed_endpoints: a server whose owner is not a \
                 superuser may only name endpoints a superuser allows",
                of_server(server)
            )))
        }
        _ => Ok(()),
    }
}

fn of_server(server: Option<&str>) -> String {
    server.map(|s| format!(" of server \"{s}\"")).unwrap_or_default()
}
