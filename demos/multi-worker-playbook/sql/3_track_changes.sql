-- Playbook step 3: snapshots, table information and the change feed, as the playbook writes them.
\set ON_ERROR_STOP on
SET search_path = public, ducklake;
SELECT * FROM ducklake_snapshots('analytics');
SELECT * FROM ducklake_table_info('analytics');
SELECT * FROM ducklake_table_changes('analytics', 'main', 'users', 0, 10);
