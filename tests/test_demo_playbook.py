"""demos/multi-worker-playbook without Docker: run.sh starts two PostgreSQL 18 instances on
one lake and runs every scenario of the playbook; its output and the lake it leaves behind
are checked, then the README's migration from a DuckDB file runs against it."""

import contextlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import boto3
import duckdb
import psycopg
import pytest

from conftest import ROOT, free_port

DEMO = ROOT / "demos" / "multi-worker-playbook"
PG_VERSIONS = ["pg18"]  # the demo is PostgreSQL 18
USER_IDS = 200
WORKERS = 8

TWO_USERS = """\
 id | name  |       email       
----+-------+-------------------
  1 | Alice | alice@example.com
  2 | Bob   | bob@example.com
(2 rows)
"""
THREE_USERS = """\
 id | name  |       email       
----+-------+-------------------
  1 | Alice | alice@example.com
  2 | Bob   | bob@example.org
  3 | Carol | carol@example.com
(3 rows)
"""


@contextlib.contextmanager
def run_playbook(*args):
    """run.sh with `args` on free ports: its output, the instances' ports (and the S3
    server's), the lake's directory; stopped afterwards."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="demo-playbook-", dir="/tmp"))
    os.chmod(base, 0o777)
    ports = free_port(), free_port(), free_port()
    env = dict(os.environ, DEMO_DIR=str(base / "pg"), POSTGRES_PORT=str(ports[0]), SECOND_POSTGRES_PORT=str(ports[1]),
               S3_PORT=str(ports[2]), DEMO_SKIP_INSTALL="1", WORKERS=str(WORKERS), USER_IDS=str(USER_IDS))
    run = subprocess.run([str(DEMO / "run.sh"), *args], env=env, capture_output=True, text=True)
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout)
    try:
        assert run.returncode == 0, output + run.stderr
        yield output, ports, base / "pg" / "lake"
    finally:
        subprocess.run([str(DEMO / "run.sh"), "stop"], check=False, env=env)


@pytest.fixture(scope="module")
def playbook(pg):
    with run_playbook() as result:
        yield result


def connect(port, dbname):
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={dbname}", autocommit=True)


def section(output, title):
    """The output of one playbook step, from its banner to the next one."""
    start = output.index(f"=== {title}")
    end = output.find("\n=== ", start + 1)
    return output[start:end if end >= 0 else len(output)]


def test_time_travel_step_shows_each_snapshot(playbook):
    output, _, _ = playbook
    step = section(output, "2. Query data (time travel)")
    expected = [TWO_USERS, THREE_USERS, "-- FOR SYSTEM_TIME AS OF SNAPSHOT 2\nSET\n" + TWO_USERS,
                "-- FOR SYSTEM_TIME AS OF '", TWO_USERS]
    position = 0
    for block in expected:
        found = step.find(block, position)
        assert found >= 0, f"missing, in order:\n{block}\nin:\n{step}"
        position = found + len(block)


def test_track_changes_step_runs_the_playbook_commands(playbook):
    output, _, _ = playbook
    step = section(output, "3. Track changes")
    assert "ERROR" not in step
    assert re.search(r"^ +1 \| .*\| +1 \| \{\"tables_created\": \[\"main.users\"\]\} +\| postgres", step, re.M)
    assert re.search(r"^ users +\| +0 \| +1 \| [0-9a-f-]{36} \| +0 \|", step, re.M)
    # ducklake_table_changes('analytics', 'main', 'users', 0, 10): the lake has 5 snapshots
    changes = re.findall(r"^ +(\d) \| +(\d) \| (\w+) +\| \{\"id\": (\d), \"name\": \"(\w+)\", \"email\": \"([^\"]+)\"",
                         step, re.M)
    assert changes == [("2", "0", "insert", "1", "Alice", "alice@example.com"),
                       ("2", "1", "insert", "2", "Bob", "bob@example.com"),
                       ("3", "2", "insert", "3", "Carol", "carol@example.com"),
                       ("4", "1", "update_preimage", "2", "Bob", "bob@example.com"),
                       ("4", "1", "update_postimage", "2", "Bob", "bob@example.org")]


def test_distributed_loop_loses_and_duplicates_nothing(playbook):
    check_distributed_loop(playbook)


def test_the_playbook_on_s3(pg):
    """run.sh --s3: the same scenarios with the lake's data in a bucket of a local S3 server."""
    with run_playbook("--s3") as result:
        output, ports, lake_dir = result
        check_distributed_loop(result)
        assert not lake_dir.exists()
        with connect(ports[0], "ducklake_catalog") as conn:
            assert conn.execute("SELECT value FROM __ducklake_metadata_analytics.ducklake_metadata "
                                "WHERE key = 'data_path'").fetchone() == ("s3://playbook-lake/lake/",)
            files = conn.execute("SELECT count(*) FROM __ducklake_metadata_analytics.ducklake_data_file "
                                 "WHERE end_snapshot IS NULL").fetchone()[0]
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports[2]}", aws_access_key_id="playbook",
                          aws_secret_access_key="playbook-secret", region_name="us-east-1")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="playbook-lake")
                for o in page.get("Contents", [])]
        assert files > 0 and len(keys) >= files and all(k.startswith("lake/main/") for k in keys)
        assert "playbook-secret" not in output


def check_distributed_loop(playbook):
    output, ports, _ = playbook
    step = section(output, "4. Distributed loop")
    assert THREE_USERS in step  # the second instance reads what the first committed
    for instance in (1, 2):
        assert f"check on instance {instance}: {USER_IDS} rows, {USER_IDS} distinct user ids (1..{USER_IDS}): OK" in step
    inserts = [int(n) for n in re.findall(r"^  instance \d: (\d+) inserts$", step, re.M)]
    assert len(inserts) == 2 and sum(inserts) == USER_IDS and all(n > 0 for n in inserts)
    for port, dbname in ((ports[0], "ducklake_catalog"), (ports[1], "playbook")):
        with connect(port, dbname) as conn:
            assert conn.execute("SELECT count(*), count(DISTINCT user_id), sum(user_id), "
                                "count(*) FILTER (WHERE event_type = 'login') FROM lake.user_events").fetchone() \
                == (USER_IDS, USER_IDS, USER_IDS * (USER_IDS + 1) // 2, USER_IDS)
    with connect(ports[0], "ducklake_catalog") as conn:
        # one snapshot per loop element, each authored by the worker that committed it
        authors = conn.execute("SELECT author, count(*) FROM ducklake.snapshots('analytics') "
                               "WHERE author LIKE 'instance%' GROUP BY author").fetchall()
        assert sum(n for _, n in authors) == USER_IDS
        assert all(re.fullmatch(r"instance[12]-worker[1-8]", a) for a, _ in authors)
        assert {a.split("-")[0] for a, _ in authors} == {"instance1", "instance2"}


def test_catalog_step_lists_the_metadata_tables(playbook):
    output, ports, _ = playbook
    step = section(output, "Check catalog state")
    for table in ("ducklake_snapshot", "ducklake_table", "ducklake_data_file", "ducklake_metadata"):
        assert re.search(rf"^ __ducklake_metadata_analytics \| {table} +\| table \| ducklake$", step, re.M), table
    with connect(ports[0], "ducklake_catalog") as conn:
        # nothing but the playbook's lake in this database
        schemas = conn.execute("SELECT DISTINCT schemaname FROM pg_tables WHERE tablename LIKE 'ducklake%'").fetchall()
        assert schemas == [("__ducklake_metadata_analytics",)]


def test_catalog_role_needs_its_password(playbook):
    _, ports, _ = playbook
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "ducklake"'):
        psycopg.connect(f"host=127.0.0.1 port={ports[0]} user=ducklake password=wrong dbname=ducklake_catalog")


def test_reference_client_reads_the_lake(playbook, pg):
    _, ports, lake_dir = playbook
    con = duckdb.connect()
    for name in ("ducklake", "postgres_scanner"):
        con.execute(f"LOAD '{pg.extension_dir / (name + '.duckdb_extension')}'")
    con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={ports[0]} dbname=ducklake_catalog user=ducklake "
                f"password=ducklake' AS analytics (DATA_PATH '{lake_dir}/', METADATA_SCHEMA '__ducklake_metadata_analytics')")
    assert con.execute("SELECT count(*), sum(user_id) FROM analytics.user_events").fetchall() \
        == [(USER_IDS, USER_IDS * (USER_IDS + 1) // 2)]
    assert con.execute("SELECT id, name, email FROM analytics.users ORDER BY id").fetchall() == [
        (1, "Alice", "alice@example.com"), (2, "Bob", "bob@example.org"), (3, "Carol", "carol@example.com")]
    assert con.execute("SELECT id, email FROM analytics.users AT (VERSION => 2) ORDER BY id").fetchall() == [
        (1, "alice@example.com"), (2, "bob@example.com")]
    con.close()


def test_migration_from_a_duckdb_file(playbook, pg, tmp_path):
    _, ports, lake_dir = playbook
    legacy = tmp_path / "legacy.duckdb"
    with duckdb.connect(str(legacy)) as old:
        old.execute("CREATE TABLE page_views (user_id INTEGER, url VARCHAR, viewed_at TIMESTAMP)")
        old.execute("INSERT INTO page_views SELECT i % 50, '/p/' || i, TIMESTAMP '2025-01-01' + i * INTERVAL 1 MINUTE "
                    "FROM range(1000) t(i)")
        old.execute("CREATE TABLE sessions (id BIGINT PRIMARY KEY, user_id INTEGER)")  # DuckLake has no keys
        old.execute("INSERT INTO sessions SELECT i, i % 7 FROM range(20) t(i)")
    run = subprocess.run(
        [sys.executable, str(DEMO / "migrate_from_duckdb.py"), str(legacy),
         "--catalog", f"host=127.0.0.1 port={ports[0]} dbname=ducklake_catalog user=ducklake",
         "--data-path", f"{lake_dir}/", "--extension-dir", str(pg.extension_dir)],
        env=dict(os.environ, PGPASSWORD="ducklake"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "page_views: 1000 rows\nsessions: 20 rows\n"
    with connect(ports[1], "playbook") as conn:
        conn.execute("IMPORT FOREIGN SCHEMA main LIMIT TO (page_views, sessions) FROM SERVER analytics INTO lake")
        assert conn.execute("SELECT count(*), count(DISTINCT user_id), min(viewed_at)::text, max(url COLLATE \"C\") "
                            "FROM lake.page_views").fetchone() == (1000, 50, "2025-01-01 00:00:00", "/p/999")
        assert conn.execute("SELECT count(*), sum(id), sum(user_id) FROM lake.sessions").fetchone() \
            == (20, sum(range(20)), sum(i % 7 for i in range(20)))
        # both tables arrived in one snapshot
        assert conn.execute("SELECT changes->'tables_created' FROM ducklake.snapshots('analytics') "
                            "ORDER BY snapshot_id DESC LIMIT 1").fetchone()[0] == ["main.page_views", "main.sessions"]
