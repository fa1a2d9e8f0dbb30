"""The scheduler as an operator meets it: no role can silence it, a locked table does
not stall the others, and it ends at once when told to, even mid-refresh."""

import time

import psycopg

from roles import new_role
from streams import SUMMARY_QUERY, frontier, full_result, insert_events, last_error, latest, rows, scheduler_pid, setup_events, \
    wait_for, wait_until_caught_up


def test_no_role_can_take_the_schedulers_lock(lake):
    """The scheduler claims its database with a lock outside the SQL advisory-lock key
    spaces: a role holding pg_advisory_lock(hashtext('pgtrickle scheduler')) cannot keep
    a restarted scheduler from running."""
    setup_events(lake)
    conn = lake.conn
    insert_events(conn, "click", 1, 1)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s')", (SUMMARY_QUERY,))
    squatter_role = new_role(conn, "squatter")
    with lake.cluster.connect(lake.dbname, user=squatter_role) as squatter:
        squatter.execute("SELECT pg_advisory_lock(hashtext('pgtrickle scheduler'))")
        old = wait_for(lambda: scheduler_pid(conn), "the scheduler")
        conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_for(lambda: scheduler_pid(conn) not in (None, old), "a new scheduler")
        insert_events(conn, "view", 2, 1)
        snapshot = wait_until_caught_up(conn, "event_summary")
        assert rows(conn, "SELECT * FROM event_summary") == full_result(conn, SUMMARY_QUERY, snapshot)


def test_a_locked_stream_table_does_not_stall_the_others(lake):
    setup_events(lake)
    conn = lake.conn
    insert_events(conn, "click", 1, 1)
    for name in ("held", "free"):
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1s')", (name, SUMMARY_QUERY))
    blocker = lake.connect(autocommit=False)
    try:
        blocker.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        insert_events(conn, "view", 3, 1)
        wait_until_caught_up(conn, "free")
        # The locked one gave up waiting (pgtrickle.refresh_lock_timeout) and says why.
        wait_for(lambda: conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'held'")
                 .fetchone()[0] == "ERROR", "status ERROR for the locked table")
        error = last_error(conn, "held")
        assert error == "canceling statement due to lock timeout", error
    finally:
        blocker.rollback()
        blocker.close()
    wait_until_caught_up(conn, "held")
    wait_for(lambda: conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'held'")
             .fetchone()[0] == "ACTIVE", "status ACTIVE again")
    assert rows(conn, "SELECT * FROM held") == rows(conn, "SELECT * FROM free")


def test_sigterm_ends_a_scheduler_in_the_middle_of_a_refresh(lake):
    """SIGTERM (a fast shutdown, pg_terminate_backend) ends the scheduler within a
    second while it runs a long refresh; the refresh's transaction rolls back."""
    lake.ref.execute("CREATE TABLE huge AS SELECT range AS x FROM range(20000000)")
    lake.import_schema("huge")
    conn = lake.conn
    conn.execute("CREATE EXTENSION ducklake_ivm")
    query = "SELECT x % 1000 AS bucket, count(*) AS n FROM lake.huge WHERE x::text LIKE '%7%' GROUP BY 1"
    conn.execute("SELECT pgtrickle.create_stream_table('slow', %s, '1s', 'FULL', initialize => false)", (query,))
    pid = wait_for(lambda: conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgtrickle scheduler' "
        "AND datname = current_database() AND query LIKE 'pgtrickle: refresh of stream table%%'").fetchone(),
        "the scheduler refreshing")[0]
    signalled = time.monotonic()
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,),
             "the scheduler to exit", timeout=30)
    assert time.monotonic() - signalled < 2.0
    # rolled back: never refreshed
    assert conn.execute("SELECT last_refreshed_at, frontier FROM pgtrickle.pgt_stream_tables").fetchone() == \
        (None, {"sources": {}})
    assert rows(conn, "SELECT * FROM slow") == []
    conn.execute("SELECT pgtrickle.pause_scheduler()")
