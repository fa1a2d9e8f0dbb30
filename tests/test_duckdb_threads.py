"""Which threads of a backend run DuckDB's work: the backend's own thread always, and
ducklake.threads - 1 threads lent to DuckDB only while a scan or a large write runs.
Commits run on the backend's thread alone (DuckDB starts no worker of its own, which
would take the catalog round trips of a commit and leave the backend spinning)."""

import pathlib
import time

import pytest

ROWS = 3_000_000


def threads_of(pid):
    """{thread id: (name, nanoseconds on CPU)} of a server process."""
    threads = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            runtime = int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:
            continue  # a thread that just ended
        threads[int(task.name)] = (name, runtime)
    return threads


# SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM: Postgres' handlers expect
# to run on the backend's thread.
POSTGRES_SIGNALS = (1, 2, 3, 10, 12, 14, 15)


def unblocked_postgres_signals(pid):
    """{thread name: Postgres signals it does not block} for every thread but the backend's own."""
    unblocked = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        if int(task.name) == pid:
            continue
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        blocked = int(status["SigBlk"], 16)
        missing = [s for s in POSTGRES_SIGNALS if not blocked & (1 << (s - 1))]
        if missing:
            unblocked[status["Name"].strip()] = missing
    return unblocked


def named(threads, name):
    return {tid: runtime for tid, (n, runtime) in threads.items() if n == name}


def parked(pid, name="ducklake-duckdb"):
    """{thread id: nanoseconds on CPU} of the threads called `name`, once every one of
    them sleeps: a lending ends when the result is released, and under load a thread
    can still be on its way back to the pool a moment later."""
    deadline = time.monotonic() + 30
    while True:
        threads = named(threads_of(pid), name)
        states = {}
        for tid in threads:
            try:
                states[tid] = (pathlib.Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                states[tid] = "gone"
        if all(state == "S" for state in states.values()) and named(threads_of(pid), name) == threads:
            return threads
        assert time.monotonic() < deadline, states
        time.sleep(0.01)


@pytest.fixture
def events(lake):
    lake.ref.execute("CREATE TABLE events (kind VARCHAR, value BIGINT)")
    lake.ref.execute(f"INSERT INTO events SELECT 'k' || (range % 7), range FROM range({ROWS})")
    lake.import_schema("events")
    return lake


def small_commits(conn, n):
    for i in range(n):
        conn.execute(f"INSERT INTO lake.events VALUES ('small', {i})")


def test_threads_are_lent_for_scans_and_never_for_commits(events):
    with events.connect() as conn:
        conn.execute("SET ducklake.threads = 3")
        pid = conn.info.backend_pid
        small_commits(conn, 10)
        threads = threads_of(pid)
        assert len(named(threads, "postgres")) == 1  # DuckDB started no worker of its own
        assert named(threads, "ducklake-duckdb") == {}  # small writes lend nothing

        aggregate = "SELECT kind, count(*), sum(value) FROM lake.events GROUP BY 1 ORDER BY 1"
        expected = [(f"k{k}", len(range(k, ROWS, 7)), sum(range(k, ROWS, 7))) for k in range(7)]
        assert conn.execute(aggregate).fetchall() == expected + [("small", 10, 45)]
        before = named(threads_of(pid), "ducklake-duckdb")
        assert len(before) == 2
        assert conn.execute(aggregate).fetchall() == expected + [("small", 10, 45)]
        after = parked(pid)
        assert set(after) == set(before)  # the same threads, kept between lendings
        # they did part of the aggregate (all of it takes tens of milliseconds)
        assert sum(after[t] - before[t] for t in after) > 5_000_000

        # Postgres signals reach only the backend's thread
        assert unblocked_postgres_signals(pid) == {}

        small_commits(conn, 20)
        # parked while the session only commits: not a nanosecond on CPU
        assert named(threads_of(pid), "ducklake-duckdb") == after
        assert len(named(threads_of(pid), "postgres")) == 1
        assert conn.execute("SELECT count(*) FROM lake.events WHERE kind = 'small'").fetchone() == (30,)


def test_one_thread_lends_none(events):
    with events.connect() as conn:
        conn.execute("SET ducklake.threads = 1")
        pid = conn.info.backend_pid
        assert conn.execute("SELECT count(*), sum(value) FROM lake.events").fetchone() == (ROWS, sum(range(ROWS)))
        small_commits(conn, 3)
        threads = threads_of(pid)
        assert named(threads, "ducklake-duckdb") == {}
        assert len(named(threads, "postgres")) == 1
        assert unblocked_postgres_signals(pid) == {}
