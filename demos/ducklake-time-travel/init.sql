-- The time-travel demo's database: a lake whose catalog lives in this database and whose
-- Parquet files live in DATA_PATH, the events table, and the stream table event_summary.
-- Run with: psql -v data_path=/some/dir/ -f init.sql   (the Docker image and run.sh do this)
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS ducklake_fdw;
CREATE EXTENSION IF NOT EXISTS ducklake_ivm;
CREATE SERVER lake FOREIGN DATA WRAPPER ducklake OPTIONS (data_path :'data_path');
CREATE SCHEMA lake;
CREATE FOREIGN TABLE lake.events (
    event_id   uuid,
    event_type text,
    value      bigint,
    created_at timestamptz
) SERVER lake OPTIONS (table 'events');
SELECT ducklake.create_table('lake.events');

SELECT pgtrickle.create_stream_table(
    'event_summary',
    'SELECT event_type, COUNT(*) AS event_count, SUM(value) AS total_value FROM lake.events GROUP BY event_type',
    schedule => '5s',
    refresh_mode => 'DIFFERENTIAL');
