-- Playbook step 4, before the loop: the table the workers insert into, visible to this instance.
\set ON_ERROR_STOP on
SELECT ducklake.execute('analytics',
    'CREATE TABLE user_events (user_id INTEGER, event_type VARCHAR, event_time TIMESTAMP)');
IMPORT FOREIGN SCHEMA main LIMIT TO (user_events) FROM SERVER analytics INTO lake;
