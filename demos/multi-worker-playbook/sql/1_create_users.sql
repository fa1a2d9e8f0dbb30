-- Playbook step 1: create the users table in the lake and insert data.
\set ON_ERROR_STOP on
-- DuckDB DDL runs in the lake as written, except that DuckLake has no PRIMARY KEY or
-- UNIQUE constraints ("PRIMARY KEY/UNIQUE constraints are not supported in DuckLake").
SELECT ducklake.execute('analytics', $$
    CREATE TABLE users (
      id INTEGER NOT NULL,
      name VARCHAR,
      email VARCHAR,
      created_at TIMESTAMP
    )$$);
IMPORT FOREIGN SCHEMA main LIMIT TO (users) FROM SERVER analytics INTO lake;
INSERT INTO lake.users VALUES
  (1, 'Alice', 'alice@example.com', NOW()),
  (2, 'Bob', 'bob@example.com', NOW());
SELECT * FROM lake.users ORDER BY id;
