"""The time-travel debugging demo (seeds/003), statement by statement as written,
against a live lake with a generator inserting batches through the FDW."""

import threading

import psycopg
import pytest

from streams import SUMMARY_QUERY, full_result, latest, rows, setup_events, wait_for, wait_until_caught_up

STATUS = ("SELECT table_name, status, frontier, last_refreshed_at FROM pgtrickle.pgt_stream_tables "
          "WHERE table_name = 'event_summary';")
SUMMARY = "SELECT event_type, event_count, total_value FROM event_summary ORDER BY event_type;"
GOOD_SNAPSHOT = """SELECT
  (frontier -> 'sources' -> 'ducklake:lake.events' ->> 'snapshot_id')::bigint AS good_snapshot,
  (SELECT COUNT(*) FROM event_summary) AS current_row_count
FROM pgtrickle.pgt_stream_tables
WHERE table_name = 'event_summary';"""
BAD_BATCH = """INSERT INTO lake.events (event_id, event_type, value, created_at)
SELECT
  gen_random_uuid(),
  'CORRUPTED_EVENT',   -- this type should not exist
  999999,              -- implausible value
  now()
FROM generate_series(1, 1000);"""
PAUSE = "SELECT pgtrickle.pause_scheduler(ARRAY['event_summary']);"
PAUSED = "SELECT table_name, status FROM pgtrickle.pgt_stream_tables WHERE table_name = 'event_summary';"
REWIND = """UPDATE pgtrickle.pgt_stream_tables
SET frontier = jsonb_set(
  frontier,
  '{{sources,ducklake:lake.events,snapshot_id}}',
  '{good}'::jsonb
)
WHERE {column} = 'event_summary';"""
FULL = "SELECT pgtrickle.refresh('event_summary', 'FULL');"
CONFIRM = """SELECT
  (frontier -> 'sources' -> 'ducklake:lake.events' ->> 'snapshot_id')::bigint AS current_snapshot
FROM pgtrickle.pgt_stream_tables
WHERE table_name = 'event_summary';"""
RESUME = "SELECT pgtrickle.resume_scheduler(ARRAY['event_summary']);"
CLEANUP = "DELETE FROM lake.events WHERE event_type = 'CORRUPTED_EVENT';"


def record_good_snapshot(conn):
    """Step 3: the frontier now, and the query's result there."""
    good, row_count = conn.execute(GOOD_SNAPSHOT).fetchone()
    assert row_count == 3
    return good, full_result(conn, SUMMARY_QUERY, good)


def inject_bug(conn):
    """Step 4: the bad batch shows up after a refresh cycle."""
    conn.execute(BAD_BATCH)
    wait_for(lambda: ("CORRUPTED_EVENT", 1000, 999999000) in conn.execute(SUMMARY).fetchall(),
             "CORRUPTED_EVENT in event_summary")


def pause_rewind_and_verify(conn, good, good_rows, name_column):
    """Steps 5 and 6: pause, rewind the frontier, FULL refresh; the result is the one at
    the good snapshot, and repeating the rewind gives the same rows."""
    conn.execute(PAUSE)
    assert conn.execute(PAUSED).fetchone() == ("event_summary", "PAUSED")
    conn.execute(REWIND.format(good=good, column=name_column))
    conn.execute(FULL)
    rewound = conn.execute(SUMMARY).fetchall()
    assert sorted(rewound) == good_rows
    assert all(r[0] != "CORRUPTED_EVENT" for r in rewound)
    assert conn.execute(CONFIRM).fetchone() == (good,)
    conn.execute(REWIND.format(good=good, column=name_column))
    conn.execute(FULL)
    assert conn.execute(SUMMARY).fetchall() == rewound


def delete_bad_rows(conn):
    """Step 7's DELETE. DuckLake refuses a delete that races a concurrent insert (40001);
    it is retried, as the demo README says."""
    def attempt():
        try:
            conn.execute(CLEANUP)
            return True
        except psycopg.errors.SerializationFailure:
            return False
    wait_for(attempt, "the DELETE to commit between generator batches")


class Generator(threading.Thread):
    """The demo's generator: BATCH_SIZE events every INTERVAL_MS through INSERT INTO lake.events."""

    def __init__(self, lake, batch_size=50, interval_ms=200):
        super().__init__(daemon=True)
        self.conn = lake.connect()
        self.batch_size, self.interval = batch_size, interval_ms / 1000
        self.stop_event = threading.Event()
        self.batches = 0
        self.error = None

    def run(self):
        try:
            while not self.stop_event.is_set():
                self.conn.execute(
                    "INSERT INTO lake.events (event_id, event_type, value, created_at) "
                    "SELECT gen_random_uuid(), (ARRAY['click','view','purchase'])[1 + floor(random() * 3)::int], "
                    "(ARRAY[50, 50, 500])[1 + floor(random() * 3)::int], now() FROM generate_series(1, %s)",
                    (self.batch_size,))
                self.batches += 1
                self.stop_event.wait(self.interval)
        except Exception as e:  # surfaced by stop()
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.join(30)
        self.conn.close()
        assert self.error is None, self.error


@pytest.mark.parametrize("name_column", ["table_name", "pgt_name"])
def test_time_travel_walkthrough(lake, name_column):
    setup_events(lake)
    conn = lake.conn
    generator = Generator(lake)
    generator.start()
    try:
        wait_for(lambda: generator.batches >= 2, "the generator's first batches")
        conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s', 'DIFFERENTIAL')",
                     (SUMMARY_QUERY,))
        # Step 2: running, populated.
        status = conn.execute(STATUS).fetchone()
        assert status[0] == "event_summary" and status[1] == "ACTIVE" and status[3] is not None
        wait_for(lambda: len(conn.execute(SUMMARY).fetchall()) == 3, "the summary to show all three event types")
        good, good_rows = record_good_snapshot(conn)
        inject_bug(conn)
        if name_column == "pgt_name":
            assert conn.execute("SELECT COUNT(*) AS bugged_row_count FROM event_summary").fetchone() == (4,)
        pause_rewind_and_verify(conn, good, good_rows, name_column)
        # Paused: the scheduler leaves it at the good snapshot while the generator writes on.
        before = latest(conn)
        wait_for(lambda: latest(conn) > before + 2, "more generator batches")
        assert conn.execute(CONFIRM).fetchone() == (good,)
        # Step 7: fix the source, resume, replay forward differentially.
        delete_bad_rows(conn)
        conn.execute(RESUME)
        assert conn.execute(PAUSED).fetchone() == ("event_summary", "ACTIVE")
        wait_until_caught_up(conn, "event_summary")
    finally:
        generator.stop()
    final = wait_until_caught_up(conn, "event_summary")
    result = rows(conn, SUMMARY)
    assert result == full_result(conn, SUMMARY_QUERY, final)
    assert all(r[0] != "CORRUPTED_EVENT" for r in result)
    assert sum(r[1] for r in result) == generator.batches * 50
    assert conn.execute("SELECT status, last_error, consecutive_errors FROM pgtrickle.pgt_stream_tables").fetchone() \
        == ("ACTIVE", None, 0)
