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
from test_stream_seed_demo import (BAD_BATCH, CLEANUP, CONFIRM, FULL, GOOD_SNAPSHOT, PAUSE, PAUSED, RESUME, REWIND,
                                   STATUS, SUMMARY)

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
    # Step 3.
    good, count = conn.execute(GOOD_SNAPSHOT).fetchone()
    assert count == 3
    good_rows = full_result(conn, SUMMARY_QUERY, good)
    # Step 4: the bug appears after a refresh cycle (5 s schedule).
    conn.execute(BAD_BATCH)
    wait_for(lambda: ("CORRUPTED_EVENT", 1000, 999999000) in conn.execute(SUMMARY).fetchall(),
             "CORRUPTED_EVENT in event_summary")
    # Step 5.
    conn.execute(PAUSE)
    assert conn.execute(PAUSED).fetchone() == ("event_summary", "PAUSED")
    conn.execute(REWIND.format(good=good, column="table_name"))
    conn.execute(FULL)
    # Step 6: gone, equal to the result at the good snapshot, frontier there, repeatable.
    rewound = conn.execute(SUMMARY).fetchall()
    assert sorted(rewound) == good_rows and all(r[0] != "CORRUPTED_EVENT" for r in rewound)
    assert conn.execute(CONFIRM).fetchone() == (good,)
    conn.execute(REWIND.format(good=good, column="table_name"))
    conn.execute(FULL)
    assert conn.execute(SUMMARY).fetchall() == rewound
    # Step 7: delete the bad rows, resume; the summary catches up without them.
    # DuckLake refuses a delete that races a concurrent insert (40001): retry, as the README says.
    def cleanup():
        try:
            conn.execute(CLEANUP)
            return True
        except psycopg.errors.SerializationFailure:
            return False
    wait_for(cleanup, "the DELETE to commit between generator batches")
    conn.execute(RESUME)
    wait_until_caught_up(conn, "event_summary")
    # The generator keeps writing: hold the table still to compare it with its frontier.
    conn.execute(PAUSE)
    snapshot = conn.execute(CONFIRM).fetchone()[0]
    result = rows(conn, SUMMARY)
    assert all(r[0] != "CORRUPTED_EVENT" for r in result)
    assert result == full_result(conn, SUMMARY_QUERY, snapshot)
    assert snapshot <= latest(conn)
