-- Check the catalog state (run in database ducklake_catalog of the first instance).
\set ON_ERROR_STOP on
-- DuckLake keeps its metadata in the schema __ducklake_metadata_<catalog>.
\dt __ducklake_metadata_analytics.*
SET search_path = public, ducklake;
SELECT snapshot_id, author, changes FROM ducklake_snapshots('analytics') ORDER BY snapshot_id DESC LIMIT 5;
-- The audit trail: who committed how many snapshots (each worker sets ducklake.commit_author).
SELECT author, count(*) AS snapshots FROM ducklake_snapshots('analytics') GROUP BY author ORDER BY author;
