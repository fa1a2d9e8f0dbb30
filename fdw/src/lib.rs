//! `ducklake_fdw`: DuckLake tables as PostgreSQL foreign tables.
//!
//! Layout: `fdw` (the wrapper as supabase-wrappers sees it), `options`, `catalog`
//! (server configuration, the per-backend cache of attached lakes, transactions),
//! `duck` (the embedded DuckDB runtime), `scan` (planner and executor callbacks),
//! `query` (whole queries run in DuckDB),
//! `types` (type mapping), `import` (IMPORT FOREIGN SCHEMA), `api` (SQL functions).

use pgrx::prelude::*;

mod api;
mod catalog;
mod duck;
mod error;
mod fdw;
mod gucs;
mod import;
mod modify;
mod options;
mod pg_nodes;
mod query;
mod refusal;
mod scan;
mod types;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    catalog::transaction::register_callbacks();
    query::install();
}

extension_sql!(
    r#"
CREATE FOREIGN DATA WRAPPER ducklake
  HANDLER ducklake_fdw_handler
  VALIDATOR ducklake_fdw_validator;
COMMENT ON FOREIGN DATA WRAPPER ducklake IS 'DuckLake tables through an embedded DuckDB';

CREATE FUNCTION ducklake.create_table(foreign_table regclass, if_not_exists boolean DEFAULT false)
  RETURNS void STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'create_table_wrapper';
COMMENT ON FUNCTION ducklake.create_table(regclass, boolean)
  IS 'Create the DuckLake table behind a foreign table from its column definitions';

CREATE FUNCTION ducklake.ducklake_latest_snapshot_id(foreign_table regclass)
  RETURNS bigint STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'ducklake_latest_snapshot_id_wrapper';
COMMENT ON FUNCTION ducklake.ducklake_latest_snapshot_id(regclass)
  IS 'Current snapshot id of the lake behind a foreign table';

CREATE FUNCTION ducklake.last_committed_snapshot_id(foreign_table regclass)
  RETURNS bigint STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'last_committed_snapshot_id_wrapper';
COMMENT ON FUNCTION ducklake.last_committed_snapshot_id(regclass)
  IS 'Newest snapshot id the catalog of the lake behind a foreign table has committed, read from an embedded catalog under READ COMMITTED; else as this transaction reads the lake';

CREATE FUNCTION ducklake.table_changed(foreign_table regclass, after_snapshot bigint, up_to_snapshot bigint)
  RETURNS boolean STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'table_changed_wrapper';
COMMENT ON FUNCTION ducklake.table_changed(regclass, bigint, bigint)
  IS 'Whether a snapshot after the first, up to the second, changed the lake table (from the catalog alone)';

CREATE FUNCTION ducklake.resolve_changes(foreign_table regclass, from_snapshot bigint, to_snapshot bigint)
  RETURNS bigint[] STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'resolve_changes_wrapper';
COMMENT ON FUNCTION ducklake.resolve_changes(regclass, bigint, bigint)
  IS 'Find the snapshots whose changes DuckLake reports ambiguously; this session reads them by time travel';

CREATE FUNCTION ducklake.table_changes(foreign_table regclass, from_snapshot bigint, to_snapshot bigint)
  RETURNS TABLE (snapshot_id bigint, rowid bigint, change_type text, row_data jsonb)
  STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'table_changes_wrapper';
COMMENT ON FUNCTION ducklake.table_changes(regclass, bigint, bigint)
  IS 'Changes of a lake table between two snapshots (inclusive), rows as jsonb';

-- The seed playbook's names, for sessions with ducklake on the search_path.
CREATE FUNCTION ducklake.ducklake_snapshots(catalog text)
  RETURNS TABLE (snapshot_id bigint, snapshot_time timestamptz, schema_version bigint, changes jsonb,
                 author text, commit_message text, commit_extra_info text)
  LANGUAGE sql AS 'SELECT * FROM ducklake.snapshots(catalog)';
CREATE FUNCTION ducklake.ducklake_table_info(catalog text)
  RETURNS TABLE (table_name text, schema_id bigint, table_id bigint, table_uuid uuid, file_count bigint,
                 file_size_bytes bigint, delete_file_count bigint, delete_file_size_bytes bigint)
  LANGUAGE sql AS 'SELECT * FROM ducklake.table_info(catalog)';

-- Functions check their own privileges (server USAGE or ownership).
GRANT USAGE ON SCHEMA ducklake TO PUBLIC;
"#,
    name = "create_foreign_data_wrapper",
    finalize
);
