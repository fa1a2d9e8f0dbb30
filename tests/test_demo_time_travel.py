"""demos/ducklake-time-travel without Docker: run.sh starts PostgreSQL 18, the
extensions, init.sql and the generator; then every step of the demo's README runs
against it with its documented outcome."""

import os
import pathlib
import subprocess
import tempfile

import psycopg
import pytest

from conftest import ROOT, free_port
from streams import SUMMARY_QUERY, full_result, latest, rows, wait_for, wait_until_caught_up
from test_stream_seed_demo import (CONFIRM, PAUSE, RESUME, STATUS, SUMMARY, delete_bad_rows, inject_bug,
                                   pause_rewind_and_verify, record_good_snapshot)

DEMO = ROOT / "demos" / "ducklake-time-travel"
PG_VERSIONS = ["pg18"]  # the demo is PostgreSQL 18


@pytest.fixture
def demo(pg):
    base = pathlib.Path(tempfile.mkdtemp(prefix="demo-tt-", dir="/tmp"))
    os.chmod(base, 0o777)
    port = free_port()
    env = dict(os.environ, DEMO_DIR=str(base / "pg"), POSTGRES_PORT=str(port), DEMO_SKIP_INSTALL="1",
               BATCH_SIZE="50", INTERVAL_MS="300")
    subprocess.run([str(DEMO / "run.sh")], check=True, env=env, capture_output=True)
    conn = psycopg.connect(f"postgresql://postgres:postgres@127.0.0.1:{port}/timetravel_demo", autocommit=True)
    yield conn
    conn.close()
    subprocess.run([str(DEMO / "run.sh"), "stop"], check=False, env=env)


def test_demo_readme_steps(demo):
    conn = demo
    # Step 2: the stream table runs and fills.
    wait_for(lambda: len(conn.execute(SUMMARY).fetchall()) == 3, "event_summary to show click, purchase, view")
    table_name, status, _, refreshed = conn.execute(STATUS).fetchone()
    assert (table_name, status) == ("event_summary", "ACTIVE") and refreshed is not None
    good, good_rows = record_good_snapshot(conn)
    inject_bug(conn)  # after a refresh cycle (5 s schedule)
    pause_rewind_and_verify(conn, good, good_rows, "table_name")
    # Step 7: delete the bad rows, resume; the summary catches up without them.
    delete_bad_rows(conn)
    conn.execute(RESUME)
    wait_until_caught_up(conn, "event_summary")
    # The generator keeps writing: hold the table still to compare it with its frontier.
    conn.execute(PAUSE)
    snapshot = conn.execute(CONFIRM).fetchone()[0]
    result = rows(conn, SUMMARY)
    assert all(r[0] != "CORRUPTED_EVENT" for r in result)
    assert result == full_result(conn, SUMMARY_QUERY, snapshot)
    assert snapshot <= latest(conn)
