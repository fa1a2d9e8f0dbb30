//! `ducklake_ivm`: stream tables (the `pgtrickle` API), query results kept current
//! incrementally from DuckLake change feeds read through `ducklake_fdw`.
//!
//! - `analysis`: the defining query, understood through Postgres' parser/analyzer
//! - `maintenance`: the relations behind a stream table, the delta rules, the refresh
//! - `catalog`: `pgtrickle.pgt_stream_tables`
//! - `scheduler`: the launcher and per-database background schedulers
//! - `api`: the SQL functions

use pgrx::prelude::*;

mod analysis;
mod api;
mod catalog;
mod definition;
mod error;
mod gucs;
mod maintenance;
mod privileges;
mod scheduler;
mod settings;
mod sql;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a postmaster flag during library load.
    let preloading = unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress };
    gucs::register(preloading);
    if preloading {
        scheduler::launcher::register_launcher();
    }
}

/// Version of the installed extension library.
#[pg_extern]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

extension_sql!(
    r#"
CREATE SCHEMA pgtrickle_state;
CREATE SCHEMA pgtrickle_changes;
COMMENT ON SCHEMA pgtrickle_state IS 'Per-group state of DIFFERENTIAL stream tables (internal)';
COMMENT ON SCHEMA pgtrickle_changes IS 'Change feeds and the change buffer of each stream table''s last refresh';
-- The internal relations are created by the extension's functions (as the extension's
-- owner) and then owned by the stream table's owner, whose refreshes use them; nobody
-- else may create anything in these schemas.
GRANT USAGE ON SCHEMA pgtrickle, pgtrickle_state, pgtrickle_changes TO PUBLIC;

CREATE TABLE pgtrickle.pgt_stream_tables (
    pgt_id bigserial PRIMARY KEY,
    pgt_relid oid NOT NULL UNIQUE,
    pgt_name text NOT NULL,
    pgt_schema text NOT NULL,
    table_name text GENERATED ALWAYS AS (pgt_name) STORED,
    defining_query text NOT NULL,
    schedule text NOT NULL DEFAULT '1s',
    refresh_mode text NOT NULL DEFAULT 'DIFFERENTIAL' CHECK (refresh_mode IN ('DIFFERENTIAL', 'FULL')),
    status text NOT NULL DEFAULT 'INITIALIZING' CHECK (status IN ('INITIALIZING', 'ACTIVE', 'PAUSED', 'ERROR')),
    frontier jsonb NOT NULL DEFAULT '{"sources": {}}',
    settings jsonb NOT NULL DEFAULT '{}',
    last_refreshed_at timestamptz,
    last_error text,
    consecutive_errors integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    upstream regclass[] NOT NULL DEFAULT '{}',
    view_definitions jsonb NOT NULL DEFAULT '{}',
    last_refresh_mode text CHECK (last_refresh_mode IN ('DIFFERENTIAL', 'FULL')),
    full_refresh_ms double precision,
    differential_refresh_ms double precision,
    rebuilds_chosen integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgtrickle.pgt_stream_tables IS
  'Stream tables: defining query, schedule, status and the frontier (last lake snapshot applied)';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.frontier IS
  '{"sources": {"ducklake:<schema>.<table>": {"snapshot_id": N}}}; editable, validated at the next refresh';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.upstream IS
  'The stream tables whose results the defining query reads: the scheduler refreshes them first';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.view_definitions IS
  'A digest of each view a DIFFERENTIAL query reads (by oid), as of its last refresh: a redefined view makes the next refresh a rebuild';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.settings IS
  'Settings recorded when the query was defined (TimeZone, DateStyle, search_path, ...); every refresh runs under them';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.last_refresh_mode IS
  'How the last refresh that found a new snapshot ran: DIFFERENTIAL (its changes folded in) or FULL (rebuilt)';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.full_refresh_ms IS
  'How long the last rebuild took (at creation, asked for, chosen, or standing in for a differential refresh)';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.differential_refresh_ms IS
  'How long the last differential refresh that read changes took';
COMMENT ON COLUMN pgtrickle.pgt_stream_tables.rebuilds_chosen IS
  'Refreshes in a row that rebuilt because the last differential refresh took longer than full_refresh_ms';
SELECT pg_catalog.pg_extension_config_dump('pgtrickle.pgt_stream_tables', '');

-- Each role sees the rows of the stream tables it owns (or is a member of the owner),
-- and may edit their frontier (the seed demo's jsonb_set); everything else changes
-- only through the functions, which check ownership themselves.
ALTER TABLE pgtrickle.pgt_stream_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_rows ON pgtrickle.pgt_stream_tables
  USING (pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = pgt_relid), 'USAGE'))
  WITH CHECK (pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = pgt_relid), 'USAGE'));
GRANT SELECT, UPDATE (frontier) ON pgtrickle.pgt_stream_tables TO PUBLIC;

-- DROP TABLE of a result table removes its catalog row too.
CREATE FUNCTION pgtrickle.forget_dropped_stream_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM pgtrickle.pgt_stream_tables
   WHERE pgt_relid IN (SELECT objid FROM pg_event_trigger_dropped_objects()
                        WHERE classid = 'pg_class'::regclass AND objsubid = 0);
END $$;
-- The relations (attribute number 0) and columns a view's query reads, and those of
-- the views it reads, at any depth: what a stream table's definition reads. (A query
-- that reads columns of a relation depends on those columns, not on the relation.)
CREATE FUNCTION pgtrickle.view_reads(view_oid oid) RETURNS TABLE (relid oid, attno int2)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  WITH RECURSIVE reads(relid, attno) AS (
    SELECT d.refobjid, d.refobjsubid::int2
      FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
       AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
     WHERE r.ev_class = view_oid AND r.rulename = '_RETURN'
    UNION
    SELECT d.refobjid, d.refobjsubid::int2
      FROM reads JOIN pg_class c ON c.oid = reads.relid AND c.relkind = 'v'
      JOIN pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
       AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class)
  SELECT relid, attno FROM reads
$$;

-- Snapshots stream tables still need (their frontiers): ducklake.maintain() does not
-- expire them. SECURITY DEFINER so a server owner sees every role's holds. Only a
-- source the stream table's query reads (a dependency of its definition view, or of
-- a view it reads) holds
-- anything, whatever else an owner writes into a frontier.
CREATE FUNCTION pgtrickle.snapshot_holds()
  RETURNS TABLE (server_oid oid, snapshot_id bigint, stream_table regclass)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT ft.ftserver, (e.value ->> 'snapshot_id')::bigint, t.pgt_relid::regclass
    FROM pgtrickle.pgt_stream_tables t
   CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(t.frontier -> 'sources') = 'object'
                                      THEN t.frontier -> 'sources' ELSE '{}' END) e
    JOIN pg_foreign_table ft ON ft.ftrelid = to_regclass(substr(e.key, length('ducklake:') + 1))
   WHERE jsonb_typeof(e.value -> 'snapshot_id') = 'number'
     AND EXISTS (SELECT 1 FROM pgtrickle.view_reads(to_regclass(format('pgtrickle_state.query_%s', t.pgt_id))) d
                  WHERE d.relid = ft.ftrelid)
$$;
GRANT EXECUTE ON FUNCTION pgtrickle.snapshot_holds() TO PUBLIC;

CREATE EVENT TRIGGER pgtrickle_forget_dropped ON sql_drop
  EXECUTE FUNCTION pgtrickle.forget_dropped_stream_tables();
"#,
    name = "catalog",
    bootstrap
);
