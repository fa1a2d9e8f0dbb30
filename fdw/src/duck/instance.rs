//! One embedded DuckDB instance with one DuckLake catalog attached.
//!
//! Each foreign server gets its own instance so that each can be locked down to its
//! own data path: after the catalog is attached, external access is switched off
//! except for the lake's directories, and the configuration is locked, so no query
//! (and no file path recorded in a hostile catalog) can read other files of the server.

use std::ffi::{CStr, CString};
use std::rc::Rc;
use std::sync::Arc;

use duckdb::{Connection, InterruptHandle, ffi};
use ducklake_formats::paths;

use crate::catalog::access;
use crate::catalog::config::LakeConfig;
use crate::duck::workers::{Lent, Pool};
use crate::duck::{cancel, extensions, signals::SignalsBlocked, sql};
use crate::error::{LakeError, LakeResult};
use crate::gucs;

pub struct LakeInstance {
    // Field order matters: the connection is closed before the database.
    pub conn: Connection,
    pub interrupt: Arc<InterruptHandle>,
    /// Name of the attached DuckLake catalog inside DuckDB.
    pub alias: String,
    /// The directory of the lake's files (normalized, trailing slash): what identifies
    /// the lake to the backends of this cluster (see `lake_locks`).
    pub data_path: String,
    /// The catalog and schema of DuckLake's metadata tables inside DuckDB.
    metadata_catalog: String,
    metadata_schema: String,
    /// Threads lent to DuckDB next to the backend's own (see `workers`); stopped
    /// before the database closes.
    pool: Rc<Pool>,
    /// This instance's directory for DuckDB's temporary files, removed with it.
    temp_dir: TempDirectory,
    /// Kept open for the connection, the pool and the lent threads; closed last.
    _database: OwnedDatabase,
}

impl LakeInstance {
    pub fn open(config: &LakeConfig) -> LakeResult<Self> {
        crate::error::hide_in_messages(config.secrets());
        let threads = gucs::threads() as usize;
        let database = OwnedDatabase::open(threads, &gucs::memory_limit(), !gucs::install_extensions())?;
        // SAFETY: the database outlives the connection (field order).
        let conn = unsafe { Connection::open_from_raw(database.0) }?;
        let interrupt = conn.interrupt_handle();
        let attach_error = |e: LakeError| {
            let message = match e {
                LakeError::DuckDb(m) => config.scrub(&m),
                other => config.scrub(&other.to_string()),
            };
            access::explain_authentication_failure(&config.server_name, &message)
                .unwrap_or(LakeError::AttachFailed { server: config.server_name.clone(), message })
        };

        let temp_directory = TempDirectory::create(&config.temp_directory).map_err(|e| LakeError::AttachFailed {
            server: config.server_name.clone(),
            message: format!("cannot create temp directory {}: {e}", config.temp_directory),
        })?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_owned(),
            "SET autoload_known_extensions = false".to_owned(),
            format!("SET temp_directory = {}", sql::literal(&config.temp_directory)),
        ];
        setup.extend(extensions::load_statements()?);
        // The catalog connection pool's reaper thread would be started by ATTACH, on
        // the backend's thread with its signals unblocked, and Postgres' signal
        // handlers could then run on it. Idle connections are still closed: the pool
        // checks them when it hands them out.
        setup.push("SET pg_pool_enable_reaper_thread = false".to_owned());
        // Text forms of TIMESTAMPTZ values (and time-travel timestamps) are UTC.
        setup.push("SET TimeZone = 'UTC'".to_owned());
        // Many backends commit to one lake at once; DuckLake retries commits that raced
        // with another writer (default 10 times), which busy lakes exhaust.
        setup.push("SET ducklake_max_retry_count = 100".to_owned());
        // A commit that lost the race learns it only once the winner has committed (the
        // catalog's unique index waits for it), so retrying almost at once makes
        // progress; the wait still grows x1.5 per retry to spread out many writers.
        // DuckLake's default starts at 100 ms.
        setup.push("SET ducklake_retry_wait_ms = 1".to_owned());
        setup.push("SET ducklake_retry_backoff = 1.5".to_owned());
        // Persistent secrets live in the instance's own directory, removed with it:
        // never read from or written to the OS user's home, where they would outlive
        // the backend and reach every lake of the cluster. (Switching them off makes
        // the Postgres extension's ATTACH fail.)
        setup.push(format!("SET secret_directory = {}", sql::literal(&format!("{}/secrets", config.temp_directory))));
        setup.extend(super::change_feed::definitions());
        setup.push(super::change_feed::ambiguous_definition());
        for statement in &setup {
            conn.execute_batch(statement)?;
        }

        match &config.data_path {
            Some(path) if paths::is_object_store(path) => reach_object_store(&conn, config, path)?,
            Some(path) => std::fs::create_dir_all(path).map_err(|e| LakeError::AttachFailed {
                server: config.server_name.clone(),
                message: format!("cannot create data path {path}: {e}"),
            })?,
            None => {}
        }
        let mut attach_options = vec![format!("METADATA_SCHEMA {}", sql::literal(&config.metadata_schema))];
        if let Some(path) = &config.data_path {
            attach_options.push(format!("DATA_PATH {}", sql::literal(path)));
        }
        if let Some(limit) = &config.inlining_limit {
            // Validated as an integer by the option validator.
            attach_options.push(format!("DATA_INLINING_ROW_LIMIT {}", limit.parse::<u32>().unwrap_or(10)));
        }
        let attach = format!(
            "ATTACH {} AS {} ({})",
            sql::literal(&format!("ducklake:postgres:{}", config.conninfo)),
            sql::ident(&config.alias),
            attach_options.join(", ")
        );
        cancel::interruptible(&interrupt, || conn.execute_batch(&attach))
            .map_err(|e| attach_error(e.into()))?;
        conn.execute_batch(&format!("USE {}", sql::ident(&config.alias)))?;

        let data_path = match &config.data_path {
            Some(path) => path.clone(),
            None => {
                // A path a catalog records is held to the rules of one a server gives.
                let path = access::normalized_data_path(&stored_data_path(&conn, config).map_err(attach_error)?)?;
                if let Some(roots) = &config.data_path_roots {
                    access::check_data_path(Some(&config.server_name), &path, roots)?;
                }
                if paths::is_object_store(&path) {
                    reach_object_store(&conn, config, &path)?;
                }
                path
            }
        };

        let allowed: Vec<String> = [&data_path, &config.temp_directory]
            .iter()
            .map(|dir| sql::literal(&with_trailing_slash(dir)))
            .collect();
        conn.execute_batch(&format!(
            "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
            allowed.join(", ")
        ))?;

        let pool = Pool::new(database.0, threads.saturating_sub(1));
        Ok(LakeInstance {
            conn,
            interrupt,
            alias: config.alias.clone(),
            data_path,
            metadata_catalog: format!("__ducklake_metadata_{}", config.alias),
            metadata_schema: config.metadata_schema.clone(),
            pool,
            temp_dir: temp_directory,
            _database: database,
        })
    }

    /// DuckLake's metadata table `table` (e.g. `ducklake_table`), quoted.
    pub fn metadata_table(&self, table: &str) -> String {
        sql::qualified(&self.metadata_catalog, &self.metadata_schema, table)
    }

    /// The DuckDB name of the attached catalog database, and the catalog's schema in it.
    pub fn metadata_location(&self) -> (&str, &str) {
        (&self.metadata_catalog, &self.metadata_schema)
    }

    /// The instance's private directory for temporary files.
    pub fn temp_directory(&self) -> &std::path::Path {
        &self.temp_dir.0
    }

    /// Lend threads to DuckDB for as long as the result lives: for statements whose
    /// work DuckDB parallelizes (scans, writes into the lake, maintenance).
    pub fn lend_threads(&self) -> Lent {
        self.pool.lend()
    }
}

/// An in-memory DuckDB database without worker threads of its own (see `workers`).
struct OwnedDatabase(ffi::duckdb_database);

impl OwnedDatabase {
    /// `from_directory`: the extensions are loaded from `extensions::load_statements`'
    /// directory, not installed from DuckDB's repository. Only superusers choose that
    /// directory (`ducklake.extension_directory` is SUSET) and the install puts the files
    /// where only root writes, next to this extension's own library: DuckDB's signature
    /// check, a SHA-256 over 100 MB of extensions on every load (about 150 ms each time a
    /// backend first opens a lake), guards nothing the file permissions do not, and is
    /// skipped. Extensions fetched by INSTALL are still checked.
    fn open(threads: usize, memory_limit: &str, from_directory: bool) -> LakeResult<OwnedDatabase> {
        let threads = threads.max(1).to_string();
        let unsigned = if from_directory { "true" } else { "false" };
        let settings = [
            ("allow_unsigned_extensions", unsigned),
            ("autoinstall_known_extensions", "false"),
            ("autoload_known_extensions", "false"),
            ("threads", threads.as_str()),
            // Every thread counts as external: DuckDB starts none (see `workers`).
            ("external_threads", threads.as_str()),
            ("max_memory", memory_limit),
        ];
        // SAFETY: the config is created, filled and destroyed here; the database handle
        // is owned by the result and closed in drop.
        unsafe {
            let mut duck_config: ffi::duckdb_config = std::ptr::null_mut();
            if ffi::duckdb_create_config(&mut duck_config) != ffi::DuckDBSuccess {
                return Err(LakeError::DuckDb("cannot create a DuckDB configuration".into()));
            }
            for (name, value) in settings {
                let (c_name, c_value) = (CString::new(name).expect("no NUL"), CString::new(value).unwrap_or_default());
                if ffi::duckdb_set_config(duck_config, c_name.as_ptr(), c_value.as_ptr()) != ffi::DuckDBSuccess {
                    ffi::duckdb_destroy_config(&mut duck_config);
                    return Err(LakeError::DuckDb(format!("invalid DuckDB setting {name} = '{value}'")));
                }
            }
            let mut database: ffi::duckdb_database = std::ptr::null_mut();
            let mut error: *mut std::ffi::c_char = std::ptr::null_mut();
            let state = {
                // Threads DuckDB starts here (if any) inherit the blocked mask.
                let _blocked = SignalsBlocked::new();
                ffi::duckdb_open_ext(c":memory:".as_ptr(), &mut database, duck_config, &mut error)
            };
            ffi::duckdb_destroy_config(&mut duck_config);
            if state != ffi::DuckDBSuccess {
                let message = if error.is_null() {
                    "cannot open an in-memory DuckDB database".to_owned()
                } else {
                    let text = CStr::from_ptr(error).to_string_lossy().into_owned();
                    ffi::duckdb_free(error.cast());
                    text
                };
                return Err(LakeError::DuckDb(message));
            }
            Ok(OwnedDatabase(database))
        }
    }
}

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        // SAFETY: every connection to it is closed (LakeInstance's field order) and
        // every lent thread joined.
        unsafe { ffi::duckdb_close(&mut self.0) };
    }
}

/// Make an object-store data path reachable: load its extension (httpfs, with aws for
/// a credential chain, or azure), create the lake's secret scoped to its prefix, and cache what never
/// changes for a lake's files, which DuckLake writes once under new names: objects'
/// metadata (size, time) and Parquet footers, each otherwise a request per file
/// per query.
fn reach_object_store(conn: &Connection, config: &LakeConfig, data_path: &str) -> LakeResult<()> {
    let store = &config.object_store;
    let secret = store.secret_statement(data_path).map_err(|reason| LakeError::InvalidOptionValue {
        name: "data_path".into(),
        reason: format!("{data_path} of server \"{}\": {reason}", config.server_name),
    })?;
    let scheme = paths::url_scheme(data_path).unwrap_or_default();
    let mut statements = extensions::object_store_statements(&scheme, store.credential_chain)?;
    statements.push(secret);
    if !matches!(scheme.as_str(), "az" | "abfss") {
        // httpfs' own cache; azure has none.
        statements.push("SET enable_http_metadata_cache = true".to_owned());
    }
    statements.push("SET parquet_metadata_cache = true".to_owned());
    for statement in &statements {
        conn.execute_batch(statement).map_err(|e| LakeError::AttachFailed {
            server: config.server_name.clone(),
            message: config.scrub(&e.to_string()),
        })?;
    }
    Ok(())
}

/// DuckLake records the data path in its catalog; read it when the server gives none.
fn stored_data_path(conn: &Connection, config: &LakeConfig) -> LakeResult<String> {
    let table = sql::qualified(&format!("__ducklake_metadata_{}", config.alias), &config.metadata_schema, "ducklake_metadata");
    let path: String = conn.query_row(
        &format!("SELECT value FROM {table} WHERE key = 'data_path'"),
        [],
        |row| row.get(0),
    )?;
    Ok(path)
}

fn with_trailing_slash(dir: &str) -> String {
    if dir.ends_with('/') { dir.to_owned() } else { format!("{dir}/") }
}

/// A backend's directory for an instance's temporary files, under
/// `<data directory>/ducklake/tmp/` and named `<pid>_<server>_<user>`: created with
/// the instance and removed with it. Directories that killed backends left behind
/// are removed when the next instance of the cluster is created.
struct TempDirectory(std::path::PathBuf);

impl TempDirectory {
    fn create(path: &str) -> std::io::Result<TempDirectory> {
        let path = std::path::PathBuf::from(path);
        if let Some(parent) = path.parent() {
            remove_orphans(parent);
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDirectory(path))
    }
}

impl Drop for TempDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Remove the temp directories of backends that no longer run. A pid still in use
/// (maybe reused by another process) keeps its directory until that process is gone.
fn remove_orphans(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('_').next()).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
