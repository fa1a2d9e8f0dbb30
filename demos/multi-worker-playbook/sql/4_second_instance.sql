-- Playbook step 4 on the second instance: its foreign tables come from the shared catalog,
-- and it reads what the first instance committed.
\set ON_ERROR_STOP on
IMPORT FOREIGN SCHEMA main FROM SERVER analytics INTO lake;
SELECT id, name, email FROM lake.users ORDER BY id;
