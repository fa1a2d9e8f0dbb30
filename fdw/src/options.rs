//! Option names per catalog, their validation, and reading them from Postgres.
//!
//! The validator only checks names and values that can be checked without
//! connecting; the typed views (`TableOptions`, `LakeConfig`) are built where they
//! are used.

use std::collections::HashMap;
use std::ffi::CStr;

use pgrx::pg_sys;
use supabase_wrappers::prelude::{
    FOREIGN_DATA_WRAPPER_RELATION_ID, FOREIGN_SERVER_RELATION_ID, FOREIGN_TABLE_RELATION_ID,
};

use ducklake_formats::object_store::{self, ObjectStore};

use crate::catalog::access;
use crate::error::{LakeError, LakeResult};

pub const SERVER_OPTIONS: &[&str] = &[
    "catalog_connection",
    "catalog_name",
    "data_path",
    "metadata_schema",
    "data_inlining_row_limit",
    "region",
    "endpoint",
    "url_style",
    "use_ssl",
    "credential_chain",
    "account_name",
];
pub const TABLE_OPTIONS: &[&str] = &["schema", "table", "snapshot_id", "as_of", "snapshot_id_setting", "changes"];
pub const COLUMN_OPTIONS: &[&str] = &["column_name"];
pub const USER_MAPPING_OPTIONS: &[&str] = &["user", "password", "key_id", "secret", "session_token", "account_key"];

const USER_MAPPING_RELATION_ID: pg_sys::Oid = pg_sys::BuiltinOid::UserMappingRelationId.value();
const ATTRIBUTE_RELATION_ID: pg_sys::Oid = pg_sys::BuiltinOid::AttributeRelationId.value();

/// Checks the options of a `CREATE`/`ALTER` of the wrapper, a server, a user mapping,
/// a foreign table or one of its columns.
pub fn validate(options: &[(String, String)], catalog: pg_sys::Oid) -> LakeResult<()> {
    let allowed: &[&str] = match catalog {
        FOREIGN_DATA_WRAPPER_RELATION_ID => &[],
        FOREIGN_SERVER_RELATION_ID => SERVER_OPTIONS,
        FOREIGN_TABLE_RELATION_ID => TABLE_OPTIONS,
        USER_MAPPING_RELATION_ID => USER_MAPPING_OPTIONS,
        ATTRIBUTE_RELATION_ID => COLUMN_OPTIONS,
        _ => return Ok(()),
    };
    for (name, value) in options {
        if !allowed.contains(&name.as_str()) {
            if catalog == FOREIGN_SERVER_RELATION_ID && USER_MAPPING_OPTIONS.contains(&name.as_str()) {
                // Not echoing the value: it may be a secret.
                return Err(LakeError::InvalidOptionValue {
                    name: name.clone(),
                    reason: "credentials belong in a user mapping: CREATE USER MAPPING FOR ... SERVER ... \
                             OPTIONS (user '...', password '...') for the catalog, (key_id '...', secret '...') \
                             for an object store, (account_key '...') for Azure"
                        .into(),
                });
            }
            return Err(LakeError::UnknownOption {
                name: name.clone(),
                valid: if allowed.is_empty() { "(none)".into() } else { allowed.join(", ") },
            });
        }
        validate_value(name, value)?;
    }
    if catalog == FOREIGN_SERVER_RELATION_ID {
        validate_server(options)?;
    }
    Ok(())
}

/// What a server's options must satisfy together: checked when a server is created
/// or altered, and again whenever a lake is attached (an owner or a setting may have
/// changed since).
fn validate_server(options: &[(String, String)]) -> LakeResult<()> {
    access::require_utf8_database()?;
    // SAFETY: reads the current user's role.
    if unsafe { pg_sys::superuser() } {
        return Ok(());
    }
    let option = |name: &str| options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if let Some(connection) = option("catalog_connection") {
        access::check_catalog_connection(None, connection)?;
    }
    let data_path = match (option("data_path"), option("catalog_connection")) {
        (Some(path), _) => Some(access::normalized_data_path(path)?),
        // The embedded default is named after the catalog, else after the server,
        // whose name a validator is not told: then the directory of every database's
        // lakes stands in for it.
        (None, None) => Some(match option("catalog_name") {
            Some(name) => crate::catalog::locations::embedded_data_path(name),
            None => crate::catalog::locations::embedded_data_path("."),
        }),
        // The path the catalog records, checked once it is attached.
        (None, Some(_)) => None,
    };
    if let Some(path) = data_path {
        access::check_data_path(None, &access::normalized_data_path(&path)?, &access::data_path_roots()?)?;
    }
    let server_options: HashMap<String, String> = options.iter().cloned().collect();
    access::check_object_store(None, &ObjectStore::from_options(&server_options, &HashMap::new()))
}

fn validate_value(name: &str, value: &str) -> LakeResult<()> {
    let invalid = |reason: &str| Err(LakeError::InvalidOptionValue { name: name.into(), reason: reason.into() });
    match name {
        "catalog_connection" => {
            if value.trim().is_empty() {
                return invalid("must not be empty; omit it to keep the catalog in this database");
            }
            if ducklake_formats::conninfo::has_password(value) {
                return invalid("must not contain a password; put it in a user mapping");
            }
        }
        "data_inlining_row_limit" => {
            if value.parse::<u32>().is_err() {
                return invalid("must be a non-negative integer (rows per insert kept in the catalog)");
            }
        }
        "snapshot_id" => {
            if value.parse::<i64>().map_or(true, |v| v < 0) {
                return invalid("must be a snapshot id (a non-negative integer)");
            }
        }
        "changes" => {
            if value != "true" && value != "false" {
                return invalid("must be 'true' or 'false'");
            }
        }
        "data_path" => {
            access::normalized_data_path(value)?;
        }
        "catalog_name" => access::check_catalog_name(value)?,
        _ if object_store::SERVER_OPTIONS.contains(&name) || object_store::CREDENTIAL_OPTIONS.contains(&name) => {
            object_store::validate_value(name, value).map_err(|reason| LakeError::InvalidOptionValue {
                name: name.into(),
                // A secret's value is never echoed.
                reason,
            })?;
        }
        "snapshot_id_setting" => {
            if value.is_empty() || !value.contains('.') {
                return invalid("must name a custom setting (with a dot, e.g. 'myapp.snapshot')");
            }
        }
        "metadata_schema" | "schema" | "table" | "column_name" | "user" | "as_of" => {
            if value.is_empty() {
                return invalid("must not be empty");
            }
        }
        _ => {}
    }
    Ok(())
}

/// Options of a `pg_foreign_*`/`pg_user_mapping` list as name → value.
///
/// # Safety
/// `list` must be a valid Postgres `List` of `DefElem` (or NIL).
pub unsafe fn options_from_list(list: *mut pg_sys::List) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if list.is_null() {
        return map;
    }
    unsafe {
        let len = (*list).length as usize;
        for i in 0..len {
            let cell = (*list).elements.add(i);
            let def = (*cell).ptr_value as *mut pg_sys::DefElem;
            let name = CStr::from_ptr((*def).defname).to_string_lossy().into_owned();
            let value = CStr::from_ptr(pg_sys::defGetString(def)).to_string_lossy().into_owned();
            map.insert(name, value);
        }
    }
    map
}

/// Options of a foreign table: which lake table it reads, and how.
pub struct TableOptions {
    /// The foreign server's name: which lake, for settings that pin a snapshot per lake.
    pub server: String,
    pub schema: String,
    pub table: String,
    /// Pinned snapshot (time travel), by id or by time.
    pub snapshot_id: Option<String>,
    pub as_of: Option<String>,
    /// Pinned snapshot, by the id a setting holds when the scan starts.
    pub snapshot_id_setting: Option<String>,
    /// The table's change feed instead of its rows.
    pub changes: bool,
}

impl TableOptions {
    /// # Safety
    /// `relid` must be the oid of a foreign table.
    pub unsafe fn of(relid: pg_sys::Oid) -> Self {
        unsafe {
            let ftable = pg_sys::GetForeignTable(relid);
            let options = options_from_list((*ftable).options);
            let relname = CStr::from_ptr(pg_sys::get_rel_name(relid)).to_string_lossy().into_owned();
            let server = CStr::from_ptr((*pg_sys::GetForeignServer((*ftable).serverid)).servername).to_string_lossy().into_owned();
            TableOptions {
                server,
                schema: options.get("schema").cloned().unwrap_or_else(|| "main".into()),
                table: options.get("table").cloned().unwrap_or(relname),
                snapshot_id: options.get("snapshot_id").cloned(),
                as_of: options.get("as_of").cloned(),
                snapshot_id_setting: options.get("snapshot_id_setting").cloned(),
                changes: options.get("changes").is_some_and(|v| v == "true"),
            }
        }
    }

    /// Whether it reads a past snapshot rather than the current one.
    pub fn pinned(&self) -> bool {
        self.snapshot_id.is_some() || self.as_of.is_some() || self.snapshot_id_setting.is_some()
    }

    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// The lake column a foreign table column reads: its `column_name` option or its name.
///
/// # Safety
/// `relid`/`attnum` must name an existing column.
pub unsafe fn lake_column_name(relid: pg_sys::Oid, attnum: i16, attname: &str) -> String {
    unsafe {
        let options = options_from_list(pg_sys::GetForeignColumnOptions(relid, attnum));
        options.get("column_name").cloned().unwrap_or_else(|| attname.to_owned())
    }
}
