"""Write benchmark: bulk INSERT of 1M rows through the FDW vs standalone DuckDB into the
same kind of lake vs a plain heap table; and the commit rate of small transactions
(50 rows each, as the demo's generator writes) for 1 and 8 concurrent clients, in
interleaved rounds, with the CPU time one commit costs the whole machine.

    scripts/bench.sh write [--rows 1000000] [--commits 200] [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import threading
import time

import psycopg

from harness import Bench

COLUMNS = "(event_id uuid, event_type text, value bigint, created_at timestamptz)"
LAKE_COLUMNS = "(event_id UUID, event_type VARCHAR, value BIGINT, created_at TIMESTAMPTZ)"


def timed_once(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def side_by_side(b, name, pg_uuid, duck_uuid, n):
    """Seconds to insert the same n rows (uuids from `pg_uuid` / `duck_uuid`) with
    standalone DuckDB into lake table <name>_duck, through the FDW into <name>_fdw,
    and into heap table heap_<name>."""
    for table in (f"{name}_fdw", f"{name}_duck"):
        b.duck.execute(f"CREATE TABLE {table} {LAKE_COLUMNS}")
    b.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({name}_fdw) FROM SERVER lake INTO lake")
    b.pg.execute(f"CREATE TABLE heap_{name} {COLUMNS}")
    b.pg.execute(f"SELECT count(*) FROM lake.{name}_fdw")  # attach before timing
    rows = f"SELECT {pg_uuid}, 'bulk', g, now() FROM generate_series(1, {n}) g"
    fdw = timed_once(lambda: b.pg.execute(f"INSERT INTO lake.{name}_fdw {rows}"))
    duck = timed_once(lambda: b.duck.execute(
        f"INSERT INTO {name}_duck SELECT {duck_uuid}, 'bulk', g, now() FROM range(1, {n} + 1) t(g)"))
    heap = timed_once(lambda: b.pg.execute(f"INSERT INTO heap_{name} {rows}"))
    return duck, fdw, heap


def cpu_seconds():
    """(busy, total) CPU seconds of the whole machine so far."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / ticks, sum(fields) / ticks


def small_commits(b, clients, commits_per_client, duck_threads=None, tag="0"):
    """(commits/s, busy CPU seconds per commit of the whole machine) of `clients`
    clients each committing 50-row INSERTs, into a fresh table (so each measurement
    starts from the same lake state)."""
    table = f"small_{clients}_{duck_threads or 'default'}_{tag}"
    b.duck.execute(f"CREATE TABLE {table} {LAKE_COLUMNS}")
    b.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({table}) FROM SERVER lake INTO lake")

    def client(tag):
        with psycopg.connect(b.dsn, autocommit=True) as conn:
            if duck_threads:
                conn.execute(f"SET ducklake.threads = {duck_threads}")
            conn.execute(f"SELECT count(*) FROM lake.{table}")  # attach outside the timed loop
            barrier.wait()
            for i in range(commits_per_client):
                conn.execute(f"INSERT INTO lake.{table} SELECT gen_random_uuid(), '{tag}', g, now() "
                             f"FROM generate_series({i * 50}, {i * 50 + 49}) g")

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started, busy_before = time.perf_counter(), cpu_seconds()[0]
    for t in threads:
        t.join()
    commits = clients * commits_per_client
    rate = commits / (time.perf_counter() - started)
    cpu = (cpu_seconds()[0] - busy_before) / commits
    total = b.pg.execute(f"SELECT count(*) FROM lake.{table}").fetchone()[0]
    assert total == 50 * commits, total
    return rate, cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b = Bench()
    try:
        n = args.rows
        duck, fdw, heap = side_by_side(b, "bulk", "gen_random_uuid()", "uuid()", n)
        # The same, with uuids derived from md5 on both sides: gen_random_uuid() alone
        # costs Postgres several seconds per million rows on some builds.
        md5_duck, md5_fdw, md5_heap = side_by_side(b, "md5", "md5(g::text)::uuid", "md5(g::VARCHAR)::UUID", n)
        b.duck.execute(f"CREATE TABLE bulk_copy {LAKE_COLUMNS}")
        b.pg.execute("IMPORT FOREIGN SCHEMA main LIMIT TO (bulk_copy) FROM SERVER lake INTO lake")
        b.pg.execute("SELECT count(*) FROM lake.bulk_copy")
        from_heap = timed_once(lambda: b.pg.execute("INSERT INTO lake.bulk_copy SELECT * FROM heap_bulk"))
        heap_to_heap = timed_once(lambda: b.pg.execute("CREATE TABLE heap_copy AS SELECT * FROM heap_bulk"))
        assert b.pg.execute("SELECT count(*) FROM lake.bulk_fdw").fetchone() == (n,)
        assert b.duck.execute("SELECT count(*) FROM bulk_fdw").fetchone() == (n,)
        assert b.duck.execute("SELECT count(*) FROM (SELECT * FROM md5_fdw EXCEPT SELECT event_id, event_type, value, "
                              "created_at FROM md5_fdw WHERE event_id <> md5(value::VARCHAR)::UUID)").fetchone() == (n,)

        # Interleaved rounds: this host's speed drifts by tens of percent within minutes.
        commits = {1: [], 8: []}
        for round_ in range(args.rounds):
            for clients in (1, 8):
                per_client = args.commits if clients == 1 else args.commits // 4
                commits[clients].append(small_commits(b, clients, per_client, tag=str(round_)))

        print(b.machine())
        print(f"Bulk insert of {n:,} rows (uuid, text, bigint, timestamptz); small commits of 50 rows "
              f"({args.commits} for 1 client, {args.commits // 4} each for 8, in {args.rounds} interleaved rounds).\n")
        print("| measurement | DuckDB | FDW | heap | FDW / DuckDB |")
        # DuckDB generates its rows in-process; the FDW and heap rows come from generate_series.
        print("|---|---:|---:|---:|---:|")
        print(f"| bulk INSERT ... SELECT, rows/s | {n / duck:,.0f} | {n / fdw:,.0f} | {n / heap:,.0f} | {fdw / duck:.2f}x time |")
        print(f"| bulk INSERT ... SELECT, md5 uuids, rows/s | {n / md5_duck:,.0f} | {n / md5_fdw:,.0f} | {n / md5_heap:,.0f} | {md5_fdw / md5_duck:.2f}x time |")
        print(f"| bulk INSERT from a heap table, rows/s | – | {n / from_heap:,.0f} | {n / heap_to_heap:,.0f} | – |")
        rates = {clients: [rate for rate, _ in runs] for clients, runs in commits.items()}
        for clients, runs in rates.items():
            print(f"| small commits/s, {clients} client{'s' if clients > 1 else ''} (median; rounds) | – | "
                  f"{statistics.median(runs):.1f} ({', '.join(f'{r:.1f}' for r in runs)}) | – | – |")
        ratios = [eight / one for one, eight in zip(rates[1], rates[8])]
        print(f"| 8 clients / 1 client, per round | – | {statistics.median(ratios):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in ratios)}) | – | – |")
        cpu = statistics.median(cpu for _, cpu in commits[1])
        cores = os.cpu_count()
        print(f"| CPU per small commit, whole machine (1 client) | – | {cpu * 1000:.1f} ms | – | – |")
        print(f"| commits/s the {cores} cores allow at that cost | – | {cores / cpu:.0f} | – | – |")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
