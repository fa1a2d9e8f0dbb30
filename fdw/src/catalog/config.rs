//! What a foreign server (plus the current user's mapping) resolves to: the catalog
//! connection DuckDB opens, the data path, and the rules of `access` applied to both.

use std::ffi::CStr;

use ducklake_formats::conninfo;
use ducklake_formats::object_store::ObjectStore;
use pgrx::pg_sys;
use pgrx::{PgSqlErrorCode, PgTryBuilder};

use crate::catalog::access;
use crate::catalog::locations::{data_directory, embedded_data_path};
use crate::error::{LakeResult, scrub_secrets};
use crate::options::options_from_list;

pub struct LakeConfig {
    pub server_name: String,
    /// Name of the DuckLake catalog, used as its DuckDB alias.
    pub alias: String,
    /// libpq connection string of the metadata catalog, credentials included.
    pub conninfo: String,
    /// `None`: use the path the catalog already records.
    pub data_path: Option<String>,
    /// Roots the data path must lie under (the server's owner is not a superuser),
    /// also when it is the path the catalog records; None: anywhere.
    pub data_path_roots: Option<Vec<String>>,
    pub metadata_schema: String,
    /// The catalog lies in this database and DuckDB reaches it as the current user, so
    /// this backend may read it directly (see `api::lake_info::last_committed_snapshot_id`).
    pub catalog_in_this_database: bool,
    /// Rows per insert that DuckLake keeps in the catalog instead of a Parquet file.
    pub inlining_limit: Option<String>,
    /// This backend's own directory for DuckDB's temporary files (removed with the instance).
    pub temp_directory: String,
    /// Where and as whom to reach the data path when it is an object-store prefix.
    pub object_store: ObjectStore,
    password: Option<String>,
}

impl LakeConfig {
    /// Resolve the server's options and the current user's mapping.
    pub fn resolve(server_oid: pg_sys::Oid) -> LakeResult<Self> {
        access::require_utf8_database()?;
        // SAFETY: plain catalog lookups inside a transaction.
        let (server_name, owner, server_options, mapping) = unsafe {
            let server = pg_sys::GetForeignServer(server_oid);
            let name = CStr::from_ptr((*server).servername).to_string_lossy().into_owned();
            (name, (*server).owner, options_from_list((*server).options), user_mapping_options(server_oid))
        };
        let alias = alias_from(&server_name, &server_options);
        access::check_catalog_name(&alias)?;
        let metadata_schema = server_options
            .get("metadata_schema")
            .cloned()
            .unwrap_or_else(|| format!("__ducklake_metadata_{alias}"));
        let user = mapping.get("user").cloned();
        let password = mapping.get("password").cloned();

        let (base, data_path, embedded) = match server_options.get("catalog_connection") {
            Some(conninfo) => (conninfo.clone(), server_options.get("data_path").cloned(), false),
            None => (
                embedded_conninfo(),
                Some(server_options.get("data_path").cloned().unwrap_or_else(|| embedded_data_path(&alias))),
                true,
            ),
        };
        let owner_trusted = is_superuser(owner);
        if !owner_trusted {
            access::check_catalog_connection(Some(&server_name), &base)?;
        }
        let data_path_roots = if owner_trusted { None } else { Some(access::data_path_roots()?) };
        let data_path = match data_path {
            Some(path) => {
                let path = access::normalized_data_path(&path)?;
                if let Some(roots) = &data_path_roots {
                    access::check_data_path(Some(&server_name), &path, roots)?;
                }
                Some(path)
            }
            None => None,
        };
        let object_store = ObjectStore::from_options(&server_options, &mapping);
        if !owner_trusted {
            access::check_object_store(Some(&server_name), &object_store)?;
        }

        let mut credentials: Vec<(&str, String)> = Vec::new();
        if let Some(user) = &user {
            credentials.push(("user", user.clone()));
        }
        if let Some(password) = &password {
            credentials.push(("password", password.clone()));
        }
        // SAFETY: reads the current user's role.
        if !is_superuser(unsafe { pg_sys::GetUserId() }) {
            // Connecting to the embedded catalog as oneself proves nothing it needs
            // to; connecting as anyone else must be proven with a password.
            let as_self = embedded && user.as_deref().is_none_or(|u| u == current_user_name());
            if !as_self {
                credentials.extend(access::password_authentication(&server_name, password.as_deref())?);
            }
        }
        if conninfo::value_of(&base, "connect_timeout").ok().flatten().is_none() {
            credentials.push(("connect_timeout", "10".to_owned()));
        }
        let conninfo = conninfo::with_params(&base, &credentials);
        // SAFETY: reads backend state.
        let (pid, user_oid) = (std::process::id(), unsafe { pg_sys::GetUserId() });
        let temp_directory =
            format!("{}/ducklake/tmp/{pid}_{}_{}", data_directory(), server_oid.to_u32(), user_oid.to_u32());
        Ok(LakeConfig {
            server_name,
            alias,
            conninfo,
            data_path,
            data_path_roots,
            metadata_schema,
            catalog_in_this_database: embedded && user.as_deref().is_none_or(|u| u == current_user_name()),
            inlining_limit: server_options.get("data_inlining_row_limit").cloned(),
            temp_directory,
            object_store,
            password,
        })
    }

    /// Everything that requires re-attaching when it changes.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{:?}",
            self.alias,
            self.conninfo,
            self.data_path,
            self.data_path_roots,
            self.metadata_schema,
            self.inlining_limit,
            self.object_store
        )
    }

    /// The server's password and object-store credentials.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.password.as_deref().into_iter().chain(self.object_store.secrets())
    }

    /// Remove this server's secrets (and any conninfo password) from a message.
    pub fn scrub(&self, message: &str) -> String {
        let mut text = message.to_owned();
        for secret in self.secrets().filter(|s| !s.is_empty()) {
            text = text.replace(secret, "********");
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

fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup of the role.
    unsafe { pg_sys::superuser_arg(role) }
}

fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns a pointer into GUC storage or NULL.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

fn current_user_name() -> String {
    // SAFETY: reads the current user's name from the catalog.
    unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)).to_string_lossy().into_owned() }
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
    let (port, dbname) = unsafe {
        (
            pg_sys::PostPortNumber,
            CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId)).to_string_lossy().into_owned(),
        )
    };
    conninfo::with_params(
        "",
        &[("host", host), ("port", port.to_string()), ("dbname", dbname), ("user", current_user_name())],
    )
    .trim_start()
    .to_owned()
}
