"""The demo's event generator: BATCH_SIZE events every INTERVAL_MS milliseconds,
written with INSERT INTO lake.events. Connection from the usual libpq variables
(PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)."""

import os
import signal
import sys
import time

import psycopg

BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "50"))
INTERVAL_MS = int(os.environ.get("INTERVAL_MS", "2000"))
INSERT = """
INSERT INTO lake.events (event_id, event_type, value, created_at)
SELECT gen_random_uuid(),
       (ARRAY['click', 'view', 'purchase'])[1 + floor(random() * 3)::int],
       (ARRAY[50, 50, 500])[1 + floor(random() * 3)::int],
       now()
FROM generate_series(1, %s)
"""

running = True


def stop(*_):
    global running
    running = False


def connect():
    while running:
        try:
            return psycopg.connect(autocommit=True)
        except psycopg.OperationalError as e:
            print(f"generator: waiting for PostgreSQL ({e})", file=sys.stderr, flush=True)
            time.sleep(1)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    conn = connect()
    batches = 0
    while running:
        try:
            conn.execute(INSERT, (BATCH_SIZE,))
            batches += 1
            if batches % 10 == 0:
                print(f"generator: {batches} batches of {BATCH_SIZE} events", flush=True)
        except psycopg.OperationalError as e:
            print(f"generator: {e}; reconnecting", file=sys.stderr, flush=True)
            conn = connect()
        time.sleep(INTERVAL_MS / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
