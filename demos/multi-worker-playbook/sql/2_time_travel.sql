-- Playbook step 2: query the current snapshot, a snapshot by id and a snapshot by time.
\set ON_ERROR_STOP on
\echo '-- current snapshot'
SELECT id, name, email FROM lake.users ORDER BY id;
-- Remember the snapshot (id and time) the two users were committed in, then change the table.
SELECT snapshot_id AS users_snapshot, snapshot_time AS users_time
FROM ducklake.snapshots('analytics') ORDER BY snapshot_id DESC LIMIT 1 \gset
INSERT INTO lake.users VALUES (3, 'Carol', 'carol@example.com', NOW());
UPDATE lake.users SET email = 'bob@example.org' WHERE id = 2;
\echo '-- current snapshot, after adding Carol and changing Bob''s email'
SELECT id, name, email FROM lake.users ORDER BY id;
\echo '-- FOR SYSTEM_TIME AS OF SNAPSHOT' :users_snapshot
SET ducklake.snapshot_id = :'users_snapshot';
SELECT id, name, email FROM lake.users ORDER BY id;
RESET ducklake.snapshot_id;
\echo '-- FOR SYSTEM_TIME AS OF' :'users_time'
SET ducklake.as_of = :'users_time';
SELECT id, name, email FROM lake.users ORDER BY id;
RESET ducklake.as_of;
