//! What a foreign server (plus the current user's mapping) resolves to.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::{PgSqlErrorCode, PgTryBuilder};

use crate::error::{LakeResult, scrub_secrets};
use crate::options::{options_from_list, uri_rest};

pub struct LakeConfig {
    pub server_name: String,
    /// Name of the DuckLake catalog, used as its DuckDB alias.
    pub alias: String,
    /// libpq connection string of the metadata catalog, credentials included.
    pub conninfo: String,
    /// `None`: use the path the catalog already records.
    pub data_path: Option<String>,
    pub metadata_schema: String,
    /// Rows per insert that DuckLake keeps in the catalog instead of a Parquet file.
    pub inlining_limit: Option<String>,
    pub temp_directory: String,
    /// Identifies the lake (catalog connection without credentials, metadata
    /// schema) for `lake_locks`.
    pub lock_key: u64,
    password: Option<String>,
}

impl LakeConfig {
    /// Resolve the server's options and the current user's mapping.
    pub fn resolve(server_oid: pg_sys::Oid) -> LakeResult<Self> {
        // SAFETY: plain catalog lookups inside a transaction.
        let (server_name, server_options, mapping) = unsafe {
            let server = pg_sys::GetForeignServer(server_oid);
            let name = CStr::from_ptr((*server).servername).to_string_lossy().into_owned();
            (name, options_from_list((*server).options), user_mapping_options(server_oid))
        };
        let alias = alias_from(&server_name, &server_options);
        let metadata_schema = server_options
            .get("metadata_schema")
            .cloned()
            .unwrap_or_else(|| format!("__ducklake_metadata_{alias}"));
        let data_dir = data_directory();
        let user = mapping.get("user").cloned();
        let password = mapping.get("password").cloned();

        let (base, data_path) = match server_options.get("catalog_connection") {
            Some(conninfo) => (conninfo.clone(), server_options.get("data_path").cloned()),
            None => (
                embedded_conninfo(),
                Some(
                    server_options
                        .get("data_path")
                        .cloned()
                        .unwrap_or_else(|| format!("{data_dir}/ducklake/{alias}/")),
                ),
            ),
        };
        let lock_key = crate::catalog::lake_locks::key(&format!("{base}\u{0}{metadata_schema}"));
        let conninfo = with_credentials(&base, user.as_deref(), password.as_deref());
        let temp_directory =
            format!("{data_dir}/ducklake/tmp/{}_{}", std::process::id(), server_oid.to_u32());
        Ok(LakeConfig {
            server_name,
            alias,
            conninfo,
            data_path,
            metadata_schema,
            inlining_limit: server_options.get("data_inlining_row_limit").cloned(),
            temp_directory,
            lock_key,
            password,
        })
    }

    /// Everything that requires re-attaching when it changes.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{:?}",
            self.alias, self.conninfo, self.data_path, self.metadata_schema, self.inlining_limit
        )
    }

    /// Remove this server's password (and any conninfo password) from a message.
    pub fn scrub(&self, message: &str) -> String {
        let mut text = message.to_owned();
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            text = text.replace(password, "********");
        }
        scrub_secrets(&text)
    }
}

/// The DuckDB name of a server's catalog: its `catalog_name` option, else the server's name.
pub fn catalog_alias(server_oid: pg_sys::Oid) -> String {
    // SAFETY: catalog lookup of an existing server.
    unsafe {
        let server = pg_sys::GetForeignServer(server_oid);
        let name = CStr::from_ptr((*server).servername).to_string_lossy().into_owned();
        alias_from(&name, &options_from_list((*server).options))
    }
}

fn alias_from(server_name: &str, options: &std::collections::HashMap<String, String>) -> String {
    options.get("catalog_name").cloned().unwrap_or_else(|| server_name.to_owned())
}

/// Options of the current user's mapping for `server_oid` (or PUBLIC's), if any.
unsafe fn user_mapping_options(server_oid: pg_sys::Oid) -> std::collections::HashMap<String, String> {
    PgTryBuilder::new(|| unsafe {
        let mapping = pg_sys::GetUserMapping(pg_sys::GetUserId(), server_oid);
        options_from_list((*mapping).options)
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, |_| Default::default())
    .execute()
}

fn data_directory() -> String {
    // SAFETY: DataDir is set (absolute) before any backend runs queries.
    unsafe { CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned() }
}

fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns a pointer into GUC storage or NULL.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

/// The catalog lives in the current database of this very server, reached over its
/// own Unix socket as the current user.
fn embedded_conninfo() -> String {
    let host = setting(c"unix_socket_directories")
        .and_then(|dirs| {
            dirs.split(',').map(|d| d.trim().trim_matches('"').to_owned()).find(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    // SAFETY: simple reads of backend globals / catalog lookups.
    let (port, dbname, user) = unsafe {
        (
            pg_sys::PostPortNumber,
            CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId)).to_string_lossy().into_owned(),
            CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
                .to_string_lossy()
                .into_owned(),
        )
    };
    format!(
        "host={} port={port} dbname={} user={}",
        conninfo_value(&host),
        conninfo_value(&dbname),
        conninfo_value(&user)
    )
}

/// Add the user mapping's credentials (and a connect timeout) to a connection string.
/// For key/value strings later keywords win, so they override what the server says.
fn with_credentials(base: &str, user: Option<&str>, password: Option<&str>) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(user) = user {
        pairs.push(("user", user.to_owned()));
    }
    if let Some(password) = password {
        pairs.push(("password", password.to_owned()));
    }
    if !base.contains("connect_timeout") {
        pairs.push(("connect_timeout", "10".to_owned()));
    }
    if uri_rest(base).is_some() {
        let mut uri = base.to_owned();
        for (key, value) in pairs {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(key);
            uri.push('=');
            uri.push_str(&percent_encode(&value));
        }
        uri
    } else {
        let mut kv = base.to_owned();
        for (key, value) in pairs {
            kv.push(' ');
            kv.push_str(key);
            kv.push('=');
            kv.push_str(&conninfo_value(&value));
        }
        kv
    }
}

/// A libpq key/value value: single-quoted, with `\` and `'` escaped.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
