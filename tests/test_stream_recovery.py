"""Crash safety and persistence: a scheduler killed (kill -9) in the middle of a
refresh leaves result and frontier consistent and the scheduler resumes after the
restart; PAUSED survives a restart."""

import os
import signal
import subprocess

import psycopg

from conftest import SCRIPTS
from streams import SUMMARY_QUERY, full_result, insert_events, rows, scheduler_pid, setup_events, wait_for, \
    wait_until_caught_up


def reconnect(lake):
    def attempt():
        try:
            return lake.connect()
        except psycopg.OperationalError:
            return None
    lake.conn = wait_for(attempt, "the server to accept connections again")
    return lake.conn


def test_kill_9_mid_refresh_leaves_result_and_frontier_consistent(lake):
    setup_events(lake)
    conn = lake.conn
    insert_events(conn, "click", 5, 2)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s')", (SUMMARY_QUERY,))
    before = rows(conn, "SELECT * FROM event_summary")
    # Hold the result table so the scheduler's next refresh stops half-way: after it
    # has folded the changes into the state, before it can write the result.
    blocker = lake.connect(autocommit=False)
    blocker.execute("LOCK TABLE event_summary IN ACCESS EXCLUSIVE MODE")
    insert_events(conn, "view", 3, 4)
    pid = wait_for(lambda: conn.execute(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.backend_type = 'pgtrickle scheduler' AND NOT l.granted "
        "AND l.relation = 'event_summary'::regclass").fetchone(), "the scheduler blocked mid-refresh")[0]
    os.kill(pid, signal.SIGKILL)

    # The postmaster ends every backend after a crash, then recovers.
    def disconnected():
        try:
            conn.execute("SELECT 1")
            return False
        except psycopg.OperationalError:
            return True
    wait_for(disconnected, "the crash restart to end existing sessions")
    try:
        blocker.close()
    except psycopg.Error:
        pass
    conn = reconnect(lake)
    frontier = conn.execute("SELECT (frontier -> 'sources' -> 'ducklake:lake.events' ->> 'snapshot_id')::bigint "
                            "FROM pgtrickle.pgt_stream_tables").fetchone()[0]
    current = rows(conn, "SELECT * FROM event_summary")
    assert current == full_result(conn, SUMMARY_QUERY, frontier)
    assert current in (before, [("click", 5, 10), ("view", 3, 12)])
    # The scheduler is back and catches up.
    snapshot = wait_until_caught_up(conn, "event_summary")
    assert rows(conn, "SELECT * FROM event_summary") == full_result(conn, SUMMARY_QUERY, snapshot) \
        == [("click", 5, 10), ("view", 3, 12)]


def test_paused_survives_restart(lake, pg):
    setup_events(lake)
    conn = lake.conn
    insert_events(conn, "click", 1, 1)
    for name in ("paused_summary", "active_summary"):
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1s')", (name, SUMMARY_QUERY))
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['paused_summary'])")
    conn.close()
    env = dict(os.environ, DUCKLAKE_PRELOAD="ducklake_ivm")
    subprocess.run([str(SCRIPTS / "cluster.sh"), "stop", str(pg.base), pg.version], check=True, env=env)
    subprocess.run([str(SCRIPTS / "cluster.sh"), "start", str(pg.base), str(pg.port), pg.version], check=True, env=env)
    conn = reconnect(lake)
    assert rows(conn, "SELECT pgt_name, status FROM pgtrickle.pgt_stream_tables") == [
        ("active_summary", "ACTIVE"), ("paused_summary", "PAUSED")]
    insert_events(conn, "click", 1, 1)
    # The scheduler refreshes tables in id order each round: once the later one has
    # caught up, the paused one was passed over.
    wait_until_caught_up(conn, "active_summary")
    assert rows(conn, "SELECT * FROM active_summary") == [("click", 2, 2)]
    assert rows(conn, "SELECT * FROM paused_summary") == [("click", 1, 1)]
    assert scheduler_pid(conn) is not None
