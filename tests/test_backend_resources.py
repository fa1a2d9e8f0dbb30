"""What a backend holds for its lakes, and when it lets go: DuckDB temp directories,
cached instances, results buffered to disk instead of memory, and termination in the
middle of DuckDB work."""

import os
import pathlib
import threading
import time

import psycopg
import pytest

from roles import grant_lake_reading, new_role


def temp_root(pg):
    return pathlib.Path(pg.data_directory) / "ducklake" / "tmp"


def temp_dirs_of(pg, pid):
    root = temp_root(pg)
    return sorted(p.name for p in root.iterdir() if p.name.startswith(f"{pid}_")) if root.exists() else []


def test_temp_directories_go_with_their_instances(lake, pg):
    with lake.connect() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT ducklake.current_snapshot('lake')")
        assert len(temp_dirs_of(pg, pid)) == 1
        # a changed server option re-attaches: the old instance's directory goes
        conn.execute("ALTER SERVER lake OPTIONS (ADD data_inlining_row_limit '5')")
        conn.execute("SELECT ducklake.current_snapshot('lake')")
        assert len(temp_dirs_of(pg, pid)) == 1
    # the backend exited
    for _ in range(100):
        if not temp_dirs_of(pg, pid):
            break
        time.sleep(0.05)
    assert temp_dirs_of(pg, pid) == []
    # a directory left by a backend that no longer exists is removed by the next instance
    orphan = temp_root(pg) / "999999999_1_1"
    orphan.mkdir(parents=True)
    with lake.connect() as conn:
        conn.execute("SELECT ducklake.current_snapshot('lake')")
    assert not orphan.exists()


def test_a_backend_keeps_a_bounded_number_of_instances(lake, pg):
    """A session that reaches many lakes (or many roles' lakes, as the scheduler does)
    keeps at most eight DuckDB instances between transactions."""
    conn = lake.conn
    for i in range(10):
        conn.execute(f"CREATE SERVER lake{i} FOREIGN DATA WRAPPER ducklake "
                     f"OPTIONS (catalog_name 'analytics', data_path '{lake.data_path}')")
    with lake.connect() as session:
        pid = session.info.backend_pid
        for i in range(10):
            session.execute(f"SELECT ducklake.current_snapshot('lake{i}')")
        assert len(temp_dirs_of(pg, pid)) == 8
        # the least recently used one is attached again when needed
        assert session.execute("SELECT ducklake.current_snapshot('lake0')").fetchone() == (0,)


def spill_files(pid):
    found = []
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "/ducklake/tmp/" in target and "buffered_" in target:
            found.append(target)
    return found


def test_a_buffered_scan_spills_beyond_work_mem(lake):
    """Two scans of one lake at once: the first one's rest is buffered when the second
    starts, in memory up to work_mem and then in an unlinked file; the rows are exact."""
    lake.ref.execute("CREATE TABLE a AS SELECT range AS id, repeat('x', 100) AS pad FROM range(200000)")
    lake.ref.execute("CREATE TABLE b AS SELECT range AS id FROM range(0, 200000, 1000)")
    lake.import_schema("a", "b")
    with lake.connect(autocommit=False) as conn:
        conn.execute("SET work_mem = '64kB'")
        pid = conn.info.backend_pid
        cursor = conn.cursor(name="spilled")
        cursor.execute("SELECT id, pad FROM lake.a ORDER BY id")
        first = cursor.fetchmany(10)
        assert [r[0] for r in first] == list(range(10))
        # another scan of the same lake needs the connection: a's rest is buffered
        assert conn.execute("SELECT count(*) FROM lake.b").fetchone() == (200,)
        files = spill_files(pid)
        assert files and all(f.endswith("(deleted)") for f in files), files
        rest = cursor.fetchall()
        assert [r[0] for r in rest] == list(range(10, 200000))
        assert all(r[1] == "x" * 100 for r in rest)
        cursor.close()
        conn.rollback()
        assert spill_files(pid) == []


def test_terminating_a_backend_interrupts_duckdb(lake):
    """pg_terminate_backend ends a backend in the middle of a long DuckDB call within a
    second, as it ends one running a Postgres query."""
    conn = lake.connect()
    pid = conn.info.backend_pid
    outcome = {}

    def long_call():
        try:
            conn.execute("SELECT ducklake.execute('lake', "
                         "'CREATE TEMP TABLE x AS SELECT count(*) FROM range(100000000000) a')")
        except psycopg.Error as e:
            outcome["error"] = e
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=long_call)
    worker.start()
    with lake.connect() as other:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = other.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row and row[0] == "active" and "range(100000000000)" in row[1]:
                break
            time.sleep(0.01)
        signalled = time.monotonic()
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        worker.join(timeout=30)
        assert "ended" in outcome
        assert outcome["ended"] - signalled < 1.5
        assert isinstance(outcome["error"], psycopg.OperationalError)
        assert other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)


def test_cleanup_sees_the_writers_of_every_role(lake, pg):
    """Writer marks name the lake by its data path: a transaction of another role, still
    writing, keeps its files from ducklake.maintain's cleanup."""
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.w (x int) SERVER lake")
    conn.execute("SELECT ducklake.create_table('lake.w')")
    writer_role = new_role(conn, "writer")
    grant_lake_reading(lake, writer_role)
    conn.execute(f"GRANT INSERT ON lake.w TO {writer_role}")
    conn.execute(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA __ducklake_metadata_analytics TO {writer_role}")
    conn.execute(f"GRANT CREATE ON SCHEMA __ducklake_metadata_analytics TO {writer_role}")
    writer = lake.cluster.connect(lake.dbname, user=writer_role, autocommit=False)
    try:
        # a large write: its Parquet file is on disk, referenced by no snapshot yet
        writer.execute("INSERT INTO lake.w SELECT generate_series(1, 100000)")
        # Not a wait for anything: the file must be older than the cleanup's
        # retention of 0 seconds (DuckLake compares whole seconds) to be a candidate.
        time.sleep(2)
        conn.execute("SELECT * FROM ducklake.maintain('lake', older_than => '0 seconds')")
        writer.commit()
    finally:
        writer.close()
    # the rows themselves, not count(*), which DuckDB answers from the catalog alone
    assert conn.execute("SELECT sum(x), count(*) FROM lake.w").fetchone() == (5000050000, 100000)
