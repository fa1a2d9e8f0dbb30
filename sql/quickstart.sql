-- The quick start (scripts/demo.sh runs this against a fresh PostgreSQL 18):
-- a lake whose catalog lives in this database and whose Parquet files live under
-- the cluster's data directory, a table created from SQL, sample events, a query.
\pset footer off
CREATE EXTENSION ducklake_fdw;
CREATE SERVER lake FOREIGN DATA WRAPPER ducklake;
CREATE SCHEMA lake;

-- DuckDB DDL runs in the lake (owner/superuser only); unqualified names are lake tables.
SELECT ducklake.execute('lake',
  'CREATE TABLE events (event_id UUID, event_type VARCHAR, value BIGINT, created_at TIMESTAMPTZ)') \g /dev/null
SELECT ducklake.execute('lake', $$
  INSERT INTO events
  SELECT uuid(), ['click', 'view', 'purchase'][1 + (i % 3)::INTEGER], (i % 100) * 10,
         TIMESTAMPTZ '2025-01-06 10:00:00+00' + to_seconds(i)
  FROM range(5000) t(i) $$) \g /dev/null

IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake;

\echo
\echo 'Events per type, read from the lake through the foreign table lake.events:'
SELECT event_type, count(*) AS events, sum(value) AS total_value, min(created_at) AS first_seen
FROM lake.events GROUP BY event_type ORDER BY event_type;

\echo 'The lake''s snapshots (one per DuckLake commit):'
SELECT snapshot_id, changes FROM ducklake.snapshots('lake');
