//! One embedded DuckDB instance with one DuckLake catalog attached.
//!
//! Each foreign server gets its own instance so that each can be locked down to its
//! own data path: after the catalog is attached, external access is switched off
//! except for the lake's directories, and the configuration is locked, so no query
//! (and no file path recorded in a hostile catalog) can read other files of the server.

use std::sync::Arc;

use duckdb::{Connection, InterruptHandle};

use crate::catalog::config::LakeConfig;
use crate::duck::{cancel, extensions, signals::SignalsBlocked, sql};
use crate::error::{LakeError, LakeResult};
use crate::gucs;

pub struct LakeInstance {
    pub conn: Connection,
    pub interrupt: Arc<InterruptHandle>,
    /// Name of the attached DuckLake catalog inside DuckDB.
    pub alias: String,
}

impl LakeInstance {
    pub fn open(config: &LakeConfig) -> LakeResult<Self> {
        let conn = {
            // DuckDB starts its worker threads here; they inherit the blocked mask.
            let _blocked = SignalsBlocked::new();
            let duck_config = duckdb::Config::default()
                .enable_autoload_extension(false)?
                .threads(gucs::threads() as i64)?
                .max_memory(&gucs::memory_limit())?;
            Connection::open_in_memory_with_flags(duck_config)?
        };
        let interrupt = conn.interrupt_handle();
        let attach_error = |e: LakeError| LakeError::AttachFailed {
            server: config.server_name.clone(),
            message: match e {
                LakeError::DuckDb(m) => config.scrub(&m),
                other => config.scrub(&other.to_string()),
            },
        };

        std::fs::create_dir_all(&config.temp_directory).map_err(|e| LakeError::AttachFailed {
            server: config.server_name.clone(),
            message: format!("cannot create temp directory {}: {e}", config.temp_directory),
        })?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_owned(),
            "SET autoload_known_extensions = false".to_owned(),
            format!("SET temp_directory = {}", sql::literal(&config.temp_directory)),
        ];
        setup.extend(extensions::load_statements()?);
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
        for statement in &setup {
            conn.execute_batch(statement)?;
        }

        if let Some(path) = &config.data_path {
            std::fs::create_dir_all(path).map_err(|e| LakeError::AttachFailed {
                server: config.server_name.clone(),
                message: format!("cannot create data path {path}: {e}"),
            })?;
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
            None => stored_data_path(&conn, config).map_err(attach_error)?,
        };

        let allowed: Vec<String> = [&data_path, &config.temp_directory]
            .iter()
            .map(|dir| sql::literal(&with_trailing_slash(dir)))
            .collect();
        conn.execute_batch(&format!(
            "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
            allowed.join(", ")
        ))?;

        Ok(LakeInstance { conn, interrupt, alias: config.alias.clone() })
    }
}

/// DuckLake records the data path in its catalog; read it when the server gives none.
fn stored_data_path(conn: &Connection, config: &LakeConfig) -> LakeResult<String> {
    let table = sql::qualified(
        &format!("__ducklake_metadata_{}", config.alias),
        &config.metadata_schema,
        "ducklake_metadata",
    );
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
