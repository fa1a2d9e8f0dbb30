"""Helpers for stream-table tests: a lake with `lake.events`, full results at a
snapshot, and waiting for the scheduler by condition (never by sleeping blindly)."""

import time

import psycopg
import pytest

EVENTS_DDL = """
CREATE FOREIGN TABLE lake.events (
    event_id uuid, event_type text, value bigint, created_at timestamptz)
  SERVER lake OPTIONS (table 'events');
SELECT ducklake.create_table('lake.events');
"""

SUMMARY_QUERY = ("SELECT event_type, COUNT(*) AS event_count, SUM(value) AS total_value "
                 "FROM lake.events GROUP BY event_type")


def setup_events(lake):
    lake.conn.execute(EVENTS_DDL)
    lake.conn.execute("CREATE EXTENSION ducklake_ivm")


def insert_events(conn, event_type, count, value):
    conn.execute(
        "INSERT INTO lake.events (event_id, event_type, value, created_at) "
        "SELECT gen_random_uuid(), %s, %s, now() FROM generate_series(1, %s)",
        (event_type, value, count))


def latest(conn, table="lake.events"):
    return conn.execute("SELECT ducklake.ducklake_latest_snapshot_id(%s)", (table,)).fetchone()[0]


def frontier(conn, name, key="ducklake:lake.events"):
    row = conn.execute(
        "SELECT (frontier -> 'sources' -> %s ->> 'snapshot_id')::bigint FROM pgtrickle.pgt_stream_tables "
        "WHERE pgt_name = %s", (key, name)).fetchone()
    return row[0] if row else None


def last_error(conn, name):
    """Stream table `name`'s last error, or the note of its last refresh (a rebuild's reason)."""
    return conn.execute("SELECT last_error FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s", (name,)).fetchone()[0]


def rows(conn, sql, params=None):
    return sorted(conn.execute(sql, params).fetchall(), key=repr)


def full_result(conn, query, snapshot):
    """The query's own result, read from the lake as of `snapshot`."""
    conn.execute("BEGIN")
    try:
        conn.execute(f"SET LOCAL ducklake.snapshot_id = {int(snapshot)}")
        return rows(conn, query)
    finally:
        conn.execute("ROLLBACK")


def scheduler_pid(conn):
    """The pid of the current database's stream-table scheduler, if one runs."""
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgtrickle scheduler' "
                       "AND datname = current_database()").fetchone()
    return row[0] if row else None


def wait_for(predicate, what, timeout=60.0):
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_until_caught_up(conn, name, key="ducklake:lake.events", table="lake.events"):
    target = latest(conn, table)
    wait_for(lambda: (frontier(conn, name, key) or -1) >= target,
             f"{name} to reach snapshot {target}")
    return target


def drive_randomly(lake, rng, shapes, create, mutate, check, rounds=20):
    """Create every shape's stream table, then `rounds` times make 1 to 3 random
    changes (`mutate(lake, rng, next_id)` returns the next free id) and refresh each
    table with probability 0.6, checking it after every refresh; finally refresh and
    check them all."""
    conn = lake.conn
    for name, query in shapes.items():
        create(conn, name, query)
        check(conn, name, query)
    next_id = 1000
    for _ in range(rounds):
        for _ in range(rng.randint(1, 3)):
            next_id = mutate(lake, rng, next_id)
        for name, query in shapes.items():
            if rng.random() < 0.6:
                conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
                check(conn, name, query)
    for name, query in shapes.items():
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        check(conn, name, query)


def assert_refused(conn, query, construct):
    """Creating a DIFFERENTIAL stream table of `query` fails (0A000) naming `construct`."""
    with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
        conn.execute("SELECT pgtrickle.create_stream_table('refused_t', %s, '1h', 'DIFFERENTIAL')", (query,))
    message = error.value.diag.message_primary
    assert message.startswith(construct) and message.endswith("is not supported in a DIFFERENTIAL stream table"), message


def assert_verified(conn, names):
    """`verify_stream_table` finds no difference between each table and its query."""
    for name in names:
        assert conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table(%s)", (name,)).fetchone()[0] == 0, name
