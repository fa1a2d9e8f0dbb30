"""The dbt package (dbt/) and its example project (dbt/example/), run by real dbt-core and
dbt-postgres against a database with both extensions: create, no-op rerun, changed SQL and
config, --full-refresh, dbt test (passing, and failing on a corrupted stream table), the
operations, and downstream models following the scheduler."""

import contextlib
import io
import os
import pathlib
import re
import shutil

import pytest
from dbt.cli.main import dbtRunner

from conftest import ROOT
from streams import insert_events, latest, rows, setup_events, wait_until_caught_up

PG_VERSIONS = ["pg18"]
MODEL = "models/staging/event_summary.sql"
CATALOG = ("SELECT pgt_relid::oid, schedule, refresh_mode, status, defining_query, frontier, last_refreshed_at "
           "FROM pgtrickle.pgt_stream_tables WHERE pgt_schema = 'analytics' AND pgt_name = 'event_summary'")


class Project:
    """A copy of the example project wired to the test database."""

    def __init__(self, lake, directory):
        # without what a run of the example in place leaves behind
        shutil.copytree(ROOT / "dbt" / "example", directory,
                        ignore=shutil.ignore_patterns("dbt_packages", "target", "logs", "package-lock.yml"))
        (directory / "packages.yml").write_text(f"packages:\n  - local: {ROOT / 'dbt'}\n")
        self.directory = directory
        self.env = dict(PGHOST="127.0.0.1", PGPORT=str(lake.cluster.port), PGUSER="postgres",
                        PGPASSWORD="", PGDATABASE=lake.dbname, DBT_PROFILES_DIR=str(directory),
                        DBT_SCHEMA="analytics", DBT_SEND_ANONYMOUS_USAGE_STATS="false")

    def dbt(self, *args, expect=0):
        """Run dbt's command line in this process (dbt-core's own dbtRunner, what the `dbt`
        script calls), which saves the seconds each new dbt process spends importing.
        Returns what dbt printed; `expect` is the exit code the `dbt` script would have."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                result = dbtRunner().invoke([*args, "--no-use-colors", "--project-dir", str(self.directory),
                                             "--profiles-dir", str(self.directory)])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        code = 0 if result.success else (2 if result.exception is not None else 1)
        assert code == expect, f"dbt {' '.join(args)} exited {code} ({result.exception}):\n{output.getvalue()}"
        return output.getvalue()

    def edit(self, path, old, new):
        file = self.directory / path
        text = file.read_text()
        assert old in text
        file.write_text(text.replace(old, new))


@pytest.fixture
def project(lake, tmp_path):
    setup_events(lake)
    insert_events(lake.conn, "click", 3, 10)
    insert_events(lake.conn, "view", 2, 5)
    project = Project(lake, tmp_path / "lake_analytics")
    project.dbt("deps")
    return project


def catalog(conn):
    return conn.execute(CATALOG).fetchone()


def test_models_tests_and_operations(lake, project):
    conn = lake.conn
    out = project.dbt("run")
    assert "Done. PASS=3 WARN=0 ERROR=0 SKIP=0" in out
    relid, schedule, mode, status, query, frontier, refreshed = catalog(conn)
    assert (schedule, mode, status) == ("5s", "DIFFERENTIAL", "ACTIVE")
    assert 'from "{}"."lake"."events"'.format(lake.dbname) in query
    assert rows(conn, "SELECT * FROM analytics.event_summary") == [("click", 3, 30), ("view", 2, 10)]
    assert rows(conn, "SELECT event_type, pct_of_events FROM analytics.event_share") \
        == [("click", 60), ("view", 40)]
    assert rows(conn, "SELECT * FROM analytics.top_event_type") == [("click", 30)]

    # Paused, so nothing but dbt could change the table: a second run rebuilds nothing.
    project.dbt("run-operation", "ducklake_streams.pause_stream_tables", "--args", "{names: [event_summary]}")
    assert catalog(conn)[3] == "PAUSED"
    before = catalog(conn)
    insert_events(conn, "click", 1, 100)
    out = project.dbt("run")
    assert "Done. PASS=3" in out
    assert catalog(conn) == before
    assert rows(conn, "SELECT * FROM analytics.event_summary") == [("click", 3, 30), ("view", 2, 10)]

    # Changed SQL (other columns): the stream table is rebuilt with the new query, and the
    # view on it, dropped with the old table, is created again by the same run.
    project.edit(MODEL, "sum(value) as total_value", "sum(value) as total_value,\n       max(value) as max_value")
    project.dbt("run")
    relid2, schedule, mode, status, query, _, _ = catalog(conn)
    assert relid2 != relid and "max(value) as max_value" in query and (schedule, status) == ("5s", "PAUSED")
    assert rows(conn, "SELECT * FROM analytics.event_summary") == [("click", 4, 130, 100), ("view", 2, 10, 5)]
    assert rows(conn, "SELECT event_type, event_count FROM analytics.event_share") == [("click", 4), ("view", 2)]

    # Changed config only: altered in place, no rebuild.
    project.edit(MODEL, "schedule='5s'", "schedule='2s'")
    before = catalog(conn)
    project.dbt("run", "--select", "event_summary")
    after = catalog(conn)
    assert after[1] == "2s" and after[:1] + after[2:] == before[:1] + before[2:]

    # --full-refresh: rebuilt in place from the lake's current snapshot.
    insert_events(conn, "purchase", 1, 500)
    project.dbt("run", "--full-refresh")
    relid3, _, _, _, _, frontier, refreshed = catalog(conn)
    assert relid3 == relid2 and frontier["sources"]["ducklake:lake.events"]["snapshot_id"] == latest(conn)
    assert refreshed > after[6]
    assert rows(conn, "SELECT * FROM analytics.event_summary") \
        == [("click", 4, 130, 100), ("purchase", 1, 500, 500), ("view", 2, 10, 5)]
    assert rows(conn, "SELECT * FROM analytics.top_event_type") == [("purchase", 500)]

    # dbt test: every test passes; a corrupted stream table fails the comparison with its query.
    out = project.dbt("test")
    assert "Done. PASS=9 WARN=0 ERROR=0 SKIP=0" in out
    conn.execute("UPDATE analytics.event_summary SET total_value = 0 WHERE event_type = 'view'")
    out = project.dbt("test", "--select", "event_summary", expect=1)
    assert re.search(r"FAIL 2 ducklake_streams_matches_defining_query_event_summary_", out), out
    assert "Done. PASS=5 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=6" in out  # incl. the relationships test
    project.dbt("run-operation", "ducklake_streams.refresh_stream_table", "--args", "{name: event_summary, mode: full}")
    assert "PASS=6 WARN=0 ERROR=0" in project.dbt("test", "--select", "event_summary")

    # Resumed: new lake rows reach the stream table with the scheduler, and the view follows.
    project.dbt("run-operation", "ducklake_streams.resume_stream_tables")
    assert catalog(conn)[3] == "ACTIVE"
    insert_events(conn, "view", 3, 1)
    wait_until_caught_up(conn, "event_summary")
    assert rows(conn, "SELECT event_type, event_count FROM analytics.event_share") \
        == [("click", 4), ("purchase", 1), ("view", 5)]
    project.dbt("run", "--select", "top_event_type")
    assert rows(conn, "SELECT * FROM analytics.top_event_type") == [("purchase", 500)]
    assert "PASS=9 WARN=0 ERROR=0" in project.dbt("test")


def test_refresh_all_and_import_operations(lake, project):
    conn = lake.conn
    project.dbt("run")
    project.dbt("run-operation", "ducklake_streams.pause_stream_tables")
    insert_events(conn, "view", 1, 7)
    project.dbt("run-operation", "ducklake_streams.refresh_all_stream_tables")
    assert rows(conn, "SELECT * FROM analytics.event_summary") == [("click", 3, 30), ("view", 3, 17)]
    assert catalog(conn)[5]["sources"]["ducklake:lake.events"]["snapshot_id"] == latest(conn)
    # a second lake table, imported next to the existing foreign table
    conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE users (id INTEGER, name VARCHAR)')")
    for _ in range(2):  # existing foreign tables are skipped
        project.dbt("run-operation", "ducklake_streams.import_lake_schema", "--args", "{server: lake, into: lake}")
    assert rows(conn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = 'lake' AND c.relkind = 'f'") == [("events",), ("users",)]
    # a name that is neither a model nor a stream table is pgtrickle's error
    out = project.dbt("run-operation", "ducklake_streams.refresh_stream_table", "--args", "{name: nope}", expect=1)
    assert 'stream table "nope" does not exist' in out


def test_staging_models_upstream_of_a_stream_table(lake, project):
    """The README's advice, run by dbt: an ephemeral staging model is inlined as a WITH
    query and maintained differentially; a view model is expanded too, but dbt replaces
    the view by dropping it with CASCADE, which drops the stream table over it, and the
    same run creates that again."""
    conn = lake.conn
    staging = project.directory / "models" / "staging"
    marts = project.directory / "models" / "marts"
    (staging / "valued_events.sql").write_text(
        "{{ config(materialized='ephemeral') }}\n"
        "select event_type, value * 2 as doubled from {{ source('lake', 'events') }} where value > 5\n")
    (marts / "valued_summary.sql").write_text(
        "{{ config(materialized='stream_table', schedule='1h', refresh_mode='DIFFERENTIAL') }}\n"
        "select event_type, count(*) as events, sum(doubled) as doubled\n"
        "from {{ ref('valued_events') }} group by event_type\n")
    (staging / "clicks.sql").write_text(
        "{{ config(materialized='view') }}\n"
        "select value from {{ source('lake', 'events') }} where event_type = 'click'\n")
    (marts / "click_summary.sql").write_text(
        "{{ config(materialized='stream_table', schedule='1h', refresh_mode='DIFFERENTIAL') }}\n"
        "select count(*) as clicks, sum(value) as total from {{ ref('clicks') }}\n")
    selection = ["--select", "valued_summary", "clicks", "click_summary"]
    assert "PASS=3 WARN=0 ERROR=0" in project.dbt("run", *selection)

    def entry(name):
        return conn.execute("SELECT pgt_relid::oid, refresh_mode, defining_query FROM pgtrickle.pgt_stream_tables "
                            "WHERE pgt_schema = 'analytics' AND pgt_name = %s", (name,)).fetchone()

    valued_relid, mode, query = entry("valued_summary")
    assert mode == "DIFFERENTIAL" and "__dbt__cte__valued_events" in query
    click_relid, mode, _ = entry("click_summary")
    assert mode == "DIFFERENTIAL"
    assert rows(conn, "SELECT * FROM analytics.valued_summary") == [("click", 3, 60)]
    assert rows(conn, "SELECT * FROM analytics.click_summary") == [(3, 30)]

    insert_events(conn, "view", 2, 7)
    insert_events(conn, "click", 1, 1)
    conn.execute("SELECT pgtrickle.refresh('analytics.valued_summary')")
    conn.execute("SELECT pgtrickle.refresh('analytics.click_summary')")
    assert rows(conn, "SELECT * FROM analytics.valued_summary") == [("click", 3, 60), ("view", 2, 28)]
    assert rows(conn, "SELECT * FROM analytics.click_summary") == [(4, 31)]

    # A second run: the ephemeral model's stream table is kept; the view model's is dropped
    # with the view and created again, in full, with the same rows.
    assert "PASS=3 WARN=0 ERROR=0" in project.dbt("run", *selection)
    assert entry("valued_summary")[0] == valued_relid
    assert entry("click_summary")[0] != click_relid
    assert rows(conn, "SELECT * FROM analytics.click_summary") == [(4, 31)]
