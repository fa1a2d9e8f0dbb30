"""Stream tables over a DuckLake table: creation, differential refresh by the
scheduler, FULL rebuilds at the frontier, pause/resume/rewind, and errors."""

import psycopg
import pytest

from streams import (SUMMARY_QUERY, frontier, full_result, insert_events, latest, rows, setup_events,
                     wait_for, wait_until_caught_up)


@pytest.fixture
def events(lake):
    setup_events(lake)
    return lake


def test_create_populates_and_scheduler_applies_inserts(events):
    conn = events.conn
    insert_events(conn, "click", 3, 10)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s')", (SUMMARY_QUERY,))
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 3, 10 * 3)]
    row = conn.execute("SELECT table_name, pgt_schema, status, refresh_mode, schedule FROM pgtrickle.pgt_stream_tables").fetchone()
    assert row == ("event_summary", "public", "ACTIVE", "DIFFERENTIAL", "1s")
    assert frontier(conn, "event_summary") == latest(conn)
    insert_events(conn, "view", 2, 5)
    insert_events(conn, "click", 1, 7)
    snapshot = wait_until_caught_up(conn, "event_summary")
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 4, 37), ("view", 2, 10)]
    assert rows(conn, "SELECT * FROM event_summary") == full_result(conn, SUMMARY_QUERY, snapshot)
