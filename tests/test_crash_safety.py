"""Writers killed at any point (kill -9 of the backend, loopback clusters only) leave
every snapshot of the lake readable and every transaction either wholly committed or
absent. The Parquet files they wrote are deleted by ducklake.maintain, which never
deletes the files of a transaction still in progress."""

import pathlib
import random
import threading
import time

import psycopg
import pytest

from conftest import another_cluster, attach_remote_lake, kill_backend, wait_until_accepting

METADATA = "__ducklake_metadata_analytics"
# More rows than a write deferred to the commit: its Parquet file is written when the
# statement ends, and is unreferenced until the transaction commits.
BIG = 40_000
# Only the steps that delete unreferenced files (no flush, merge or rewrite making
# files of their own).
DELETE_UNREFERENCED = ("SELECT step, affected FROM ducklake.maintain('lake', older_than => '0 seconds', "
                       "flush_inlined => false, merge_files => false, delete_threshold => 2)")


@pytest.fixture
def shared(lake):
    lake.ref.execute("CREATE TABLE events (writer VARCHAR, value BIGINT)")
    lake.import_schema("events")
    return lake


def parquet_files(lake):
    return {p.name for p in pathlib.Path(lake.data_path).rglob("*.parquet")}


def referenced_files(conn):
    """The files some snapshot of the catalog references."""
    return {pathlib.PurePath(path).name for path, in conn.execute(
        f"SELECT path FROM {METADATA}.ducklake_data_file UNION ALL SELECT path FROM {METADATA}.ducklake_delete_file")}


def rows_by_writer(conn):
    return dict(conn.execute("SELECT writer, count(*) FROM lake.events GROUP BY writer").fetchall())


def snapshot_ids(conn):
    """The snapshots since the table was created."""
    return [s for s, in conn.execute(
        "SELECT snapshot_id FROM ducklake.snapshots('lake') WHERE snapshot_id >= (SELECT min(snapshot_id) "
        "FROM ducklake.snapshots('lake') WHERE changes ? 'tables_created') ORDER BY 1")]


def rows_at_every_snapshot(conn):
    """{snapshot id: rows by writer}, every snapshot since the table's creation read by time travel."""
    seen = {}
    for snapshot_id in snapshot_ids(conn):
        conn.execute(f"SET ducklake.snapshot_id = '{snapshot_id}'")
        seen[snapshot_id] = rows_by_writer(conn)
    conn.execute("RESET ducklake.snapshot_id")
    return seen


def wait_for_lock_wait(conn, relation):
    """Wait until a backend waits for a lock on `relation` of conn's database (seen in
    pg_locks); its pid."""
    query = (f"SELECT pid FROM pg_locks WHERE relation = '{relation}'::regclass AND NOT granted "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    deadline = time.monotonic() + 30
    while not (waiting := conn.execute(query).fetchall()):
        assert time.monotonic() < deadline, f"nothing waits for a lock on {relation}"
        time.sleep(0.01)
    return waiting[0][0]


def run_until_killed(conn, sql):
    """Run `sql` on `conn` in a thread; it must end with the connection lost."""
    outcome = []

    def run():
        try:
            conn.execute(sql)
            outcome.append("completed")
        except psycopg.OperationalError:
            outcome.append("connection lost")

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_writer_killed_mid_insert_leaves_no_trace(shared, pg):
    shared.conn.execute("INSERT INTO lake.events SELECT 'before', g FROM generate_series(1, 100) g")
    for delay in (0.2, 0.5, 0.9):
        victim = shared.connect()
        pid = victim.info.backend_pid
        thread, outcome = run_until_killed(
            victim, "INSERT INTO lake.events SELECT 'doomed', g FROM generate_series(1, 6000000) g")
        time.sleep(delay)  # the kill point, well inside the statement
        kill_backend(pid)
        thread.join(timeout=30)
        assert outcome == ["connection lost"]
        victim.close()
        wait_until_accepting(pg, shared.dbname)
    with shared.connect() as conn:
        assert rows_by_writer(conn) == {"before": 100}
        assert list(rows_at_every_snapshot(conn).values()) == [{}, {"before": 100}]
    assert shared.ref.rows("SELECT count(*) FROM events WHERE writer = 'before'") == [(100,)]


def killed_while_committing(writer_conn, blocker, kill):
    """Write a big and a small insert on `writer_conn`, then COMMIT while `blocker`
    holds the catalog table DuckLake writes last in its commit; once the commit waits
    for it (every other catalog row of the snapshot inserted, nothing committed),
    `kill()` the writer's backend. Returns the pid of the catalog session that waited."""
    writer_conn.execute(f"INSERT INTO lake.events SELECT 'doomed-big', g FROM generate_series(1, {BIG}) g")
    writer_conn.execute("INSERT INTO lake.events SELECT 'doomed-small', g FROM generate_series(1, 5) g")
    blocker.execute(f"LOCK TABLE {METADATA}.ducklake_snapshot_changes IN ACCESS EXCLUSIVE MODE")
    thread, outcome = run_until_killed(writer_conn, "COMMIT")
    catalog_session = wait_for_lock_wait(blocker, f"{METADATA}.ducklake_snapshot_changes")
    kill()
    thread.join(timeout=30)
    assert outcome == ["connection lost"]
    return catalog_session


def test_writer_killed_mid_commit_commits_nothing(shared, pg):
    shared.conn.execute("INSERT INTO lake.events SELECT 'before', g FROM generate_series(1, 100) g")
    snapshots = snapshot_ids(shared.conn)
    files = parquet_files(shared)
    writer = shared.connect(autocommit=False)
    blocker = shared.connect(autocommit=False)
    # the catalog is in this cluster: killing the writer restarts every backend,
    # including the catalog session inside DuckLake's commit
    killed_while_committing(writer, blocker, lambda pid=writer.info.backend_pid: kill_backend(pid))
    wait_until_accepting(pg, shared.dbname)
    # the big insert's file stays behind, referenced by no snapshot
    assert len(parquet_files(shared) - files) == 1
    with shared.connect() as conn:
        assert rows_by_writer(conn) == {"before": 100}
        assert snapshot_ids(conn) == snapshots
        assert list(rows_at_every_snapshot(conn).values())[-1] == {"before": 100}
        steps = dict(conn.execute(DELETE_UNREFERENCED).fetchall())
        assert steps["delete_unreferenced_files"] == 1
        assert parquet_files(shared) == files == referenced_files(conn)
        assert rows_by_writer(conn) == {"before": 100}
    assert shared.ref.rows("SELECT writer, count(*) FROM events GROUP BY 1") == [("before", 100)]


def test_writer_killed_mid_commit_with_the_catalog_on_another_cluster(shared, pg):
    shared.conn.execute("INSERT INTO lake.events SELECT 'before', g FROM generate_series(1, 100) g")
    snapshots = snapshot_ids(shared.conn)
    files = parquet_files(shared)
    with another_cluster(pg) as other:
        with other.connect() as setup:
            setup.execute("CREATE EXTENSION ducklake_fdw")
            attach_remote_lake(setup, pg, shared)
        writer = other.connect(autocommit=False)
        blocker = shared.connect(autocommit=False)
        catalog_session = killed_while_committing(
            writer, blocker, lambda pid=writer.info.backend_pid: kill_backend(pid))
        # the catalog session outlives its client and carries on once the lock is
        # released: without the client's COMMIT, its transaction is rolled back
        blocker.rollback()
        deadline = time.monotonic() + 30
        while shared.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (catalog_session,)):
            assert time.monotonic() < deadline, "the orphaned catalog session did not end"
            time.sleep(0.01)
        wait_until_accepting(other)
        assert shared.rows("SELECT writer, count(*) FROM lake.events GROUP BY 1") == [("before", 100)]
        assert snapshot_ids(shared.conn) == snapshots
        with other.connect() as conn:
            assert rows_by_writer(conn) == {"before": 100}
            # the other cluster may clean up too: the file is unreferenced
            assert dict(conn.execute(DELETE_UNREFERENCED).fetchall())["delete_unreferenced_files"] == 1
    assert parquet_files(shared) == files == referenced_files(shared.conn)
    assert shared.ref.rows("SELECT writer, count(*) FROM events GROUP BY 1") == [("before", 100)]


class Victim:
    """Transactions of random shapes on one connection, each with a writer tag of its
    own: an insert of a few rows (applied at the commit), a big insert (its file
    written when the statement ends), both in one transaction, or a DELETE of an
    earlier transaction's rows. `committed` is what the client saw commit; `pending`
    the transaction in flight when the backend was killed."""

    def __init__(self, rng, first_tag):
        self.rng = rng
        self.next_tag = first_tag
        self.sizes = {}         # tag -> rows it inserts
        self.committed = []     # ("insert", tag) / ("delete", tag)
        self.pending = None
        self.started = threading.Event()

    def run(self, conn, deletable):
        self.started.set()
        try:
            while True:
                shape = self.rng.choice(["small", "big", "both", "delete"])
                if shape == "delete" and deletable:
                    tag = self.rng.choice(sorted(deletable))
                    self.pending = ("delete", tag)
                    conn.execute(f"DELETE FROM lake.events WHERE writer = '{tag}'")
                    deletable.discard(tag)
                    conn.commit()
                else:
                    tag = f"t{self.next_tag:03}"
                    self.next_tag += 1
                    parts = {"small": [50], "big": [BIG], "both": [BIG, 7], "delete": [50]}[shape]
                    self.sizes[tag] = sum(parts)
                    self.pending = ("insert", tag)
                    first = 0
                    for n in parts:
                        conn.execute(f"INSERT INTO lake.events SELECT '{tag}', g "
                                     f"FROM generate_series({first}, {first + n - 1}) g")
                        first += n
                    conn.commit()
                    deletable.add(tag)
                self.committed.append(self.pending)
                self.pending = None
        except psycopg.OperationalError:
            pass


def test_writers_killed_at_random_points_leave_whole_transactions(shared, pg):
    rng = random.Random(20261201)
    expected = {}      # tag -> rows now in the lake
    sizes = {}
    deletable = set()
    next_tag = 0
    for _ in range(6):
        victim = Victim(rng, next_tag)
        conn = shared.connect(autocommit=False)
        pid = conn.info.backend_pid
        thread = threading.Thread(target=victim.run, args=(conn, deletable))
        thread.start()
        victim.started.wait()
        time.sleep(rng.uniform(0.05, 1.5))  # the kill point: anywhere in the stream of transactions
        kill_backend(pid)
        thread.join(timeout=60)
        assert not thread.is_alive()
        next_tag = victim.next_tag
        sizes.update(victim.sizes)
        for kind, tag in victim.committed:
            expected[tag] = sizes[tag] if kind == "insert" else 0
        wait_until_accepting(pg, shared.dbname)
        with shared.connect() as check:
            actual = rows_by_writer(check)
            if victim.pending is not None:
                # killed before the client saw the outcome: wholly committed or absent
                kind, tag = victim.pending
                before = expected.get(tag, 0)
                after = sizes[tag] if kind == "insert" else 0
                assert actual.get(tag, 0) in (before, after), (victim.pending, actual.get(tag))
                expected[tag] = actual.get(tag, 0)
                if kind == "insert" and expected[tag]:
                    deletable.add(tag)
                if kind == "delete" and expected[tag]:
                    deletable.add(tag)
            assert actual == {tag: n for tag, n in expected.items() if n}
    with shared.connect() as conn:
        # every snapshot is readable and holds only whole transactions
        for snapshot_id, rows in rows_at_every_snapshot(conn).items():
            assert all(rows[tag] == sizes[tag] for tag in rows), (snapshot_id, rows)
        on_disk = parquet_files(shared)
        conn.execute(DELETE_UNREFERENCED)
        assert parquet_files(shared) == referenced_files(conn)
        assert referenced_files(conn) <= on_disk
        assert rows_by_writer(conn) == {tag: n for tag, n in expected.items() if n}
    assert dict(shared.ref.rows("SELECT writer, count(*) FROM events GROUP BY 1")) == \
        {tag: n for tag, n in expected.items() if n}


def test_unreferenced_files_of_transactions_in_progress_are_kept(shared, pg):
    shared.conn.execute("INSERT INTO lake.events SELECT 'before', g FROM generate_series(1, 100) g")
    files = parquet_files(shared)
    writer = shared.connect(autocommit=False)
    blocker = shared.connect(autocommit=False)
    killed_while_committing(writer, blocker, lambda pid=writer.info.backend_pid: kill_backend(pid))
    wait_until_accepting(pg, shared.dbname)
    leftover = parquet_files(shared) - files
    assert len(leftover) == 1
    # files are spared from one second before a writer's first change (file times lag
    # the clock): let that second pass since the leftover was written
    written = max((pathlib.Path(shared.data_path) / "main" / "events" / name).stat().st_mtime for name in leftover)
    while time.time() < written + 1.1:
        time.sleep(0.05)
    in_progress = shared.connect(autocommit=False)
    in_progress.execute(f"INSERT INTO lake.events SELECT 'in progress', g FROM generate_series(1, {BIG}) g")
    theirs = parquet_files(shared) - files - leftover
    assert len(theirs) == 1  # on disk, referenced by no snapshot until the commit
    with shared.connect() as maintainer:
        # the writer's mark: in pg_locks, for every role
        assert maintainer.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 4 "
                                  "AND pid = %s", (in_progress.info.backend_pid,)).fetchone() == (1,)
        # nothing waits: the leftover is deleted, the file of the transaction in progress is kept
        steps = dict(maintainer.execute(DELETE_UNREFERENCED).fetchall())
        assert steps["delete_unreferenced_files"] == 1
        assert parquet_files(shared) == files | theirs
    in_progress.commit()
    in_progress.close()
    with shared.connect() as conn:
        assert rows_by_writer(conn) == {"before": 100, "in progress": BIG}
        assert parquet_files(shared) == referenced_files(conn)
    assert shared.ref.rows("SELECT writer, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        ("before", 100), ("in progress", BIG)]
