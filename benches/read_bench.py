"""Read benchmark: the same queries on the same lake through standalone DuckDB (the
reference client), through the FDW from a Postgres client, and on the same rows in a
plain Postgres heap table. Prints a Markdown table of warm median times and ratios.

    scripts/bench.sh read [--rows 10000000] [--repeat 5]

Needs the extensions installed into PostgreSQL 18 (scripts/install.sh pg18).
"""

import argparse
import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb
import psycopg

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
os.umask(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn, repeat):
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000.0


class Bench:
    def __init__(self, rows, repeat):
        self.rows = rows
        self.repeat = repeat
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="ducklake-bench-", dir="/var/tmp"))
        os.chmod(self.base, 0o777)
        self.port = free_port()
        subprocess.run([str(SCRIPTS / "cluster.sh"), "start", str(self.base), str(self.port), "pg18"], check=True)
        self.dsn = f"host={self.base} port={self.port} dbname=postgres user=postgres"
        self.pg = psycopg.connect(self.dsn, autocommit=True)
        self.data = self.base / "lake"
        self.data.mkdir(mode=0o777)
        self.pg.execute("CREATE EXTENSION ducklake_fdw")
        self.pg.execute(f"CREATE SERVER lake FOREIGN DATA WRAPPER ducklake "
                        f"OPTIONS (catalog_name 'bench', data_path '{self.data}/')")
        self.pg.execute("CREATE SCHEMA lake")
        sharedir = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/env.sh"; "$(pg18_config)" --sharedir'],
                                  check=True, capture_output=True, text=True).stdout.strip()
        self.duck = duckdb.connect()
        for name in ("ducklake", "postgres_scanner", "icu"):
            self.duck.execute(f"LOAD '{sharedir}/ducklake_fdw/{name}.duckdb_extension'")
        self.duck.execute(f"ATTACH 'ducklake:postgres:{self.dsn}' AS bench "
                          f"(DATA_PATH '{self.data}/', METADATA_SCHEMA '__ducklake_metadata_bench')")
        self.duck.execute("USE bench")

    def close(self):
        self.duck.close()
        self.pg.close()
        subprocess.run([str(SCRIPTS / "cluster.sh"), "stop", str(self.base), "pg18"], check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def load(self, table, rows):
        self.duck.execute(f"""
            CREATE TABLE {table} AS
            SELECT uuid() AS event_id,
                   ['click', 'view', 'purchase', 'signup'][1 + (i % 4)::INTEGER] AS event_type,
                   i AS value,
                   TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_seconds(i) AS created_at
            FROM range({rows}) t(i)""")
        self.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({table}) FROM SERVER lake INTO lake")
        self.pg.execute(f"CREATE FOREIGN TABLE lake.{table}_changes (snapshot_id bigint, rowid bigint, "
                        f"change_type text, event_id uuid, event_type text, value bigint, created_at timestamptz) "
                        f"SERVER lake OPTIONS (table '{table}', changes 'true')")

    def pg_query(self, sql):
        return lambda: self.pg.execute(sql).fetchall()

    def pg_copy(self, sql):
        def run():
            with self.pg.cursor().copy(f"COPY ({sql}) TO STDOUT") as copy:
                for _ in copy:
                    pass
        return run

    def duck_query(self, sql):
        return lambda: self.duck.execute(sql).fetchall()

    def duck_stream(self, sql):
        def run():
            result = self.duck.execute(sql)
            while result.fetchmany(100_000):
                pass
        return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    b = Bench(args.rows, args.repeat)
    try:
        started = time.perf_counter()
        b.load("events", args.rows)
        b.load("events_small", args.small_rows)
        b.pg.execute("CREATE TABLE heap_events AS SELECT * FROM lake.events")
        b.pg.execute("CREATE INDEX ON heap_events (value)")
        b.pg.execute("VACUUM ANALYZE heap_events")
        load_seconds = time.perf_counter() - started

        lo = args.rows // 2
        width = max(args.rows // 1000, 1)
        queries = [
            ("1. count(*) with a 0.1% filter",
             f"SELECT count(*) FROM {{t}} WHERE value >= {lo} AND value < {lo + width}"),
            ("2. GROUP BY event_type, COUNT/SUM/AVG",
             "SELECT event_type, count(*), sum(value), avg(value) FROM {t} GROUP BY event_type ORDER BY 1"),
            ("3. ORDER BY value DESC LIMIT 10", "SELECT * FROM {t} ORDER BY value DESC LIMIT 10"),
            ("5. point lookup by key", f"SELECT * FROM {{t}} WHERE value = {lo + 7}"),
        ]
        results = []
        for name, sql in queries:
            duck = timed(b.duck_query(sql.replace("{t}", "events")), args.repeat)
            fdw = timed(b.pg_query(sql.replace("{t}", "lake.events")), args.repeat)
            heap = timed(b.pg_query(sql.replace("{t}", "heap_events")), args.repeat)
            results.append((name, duck, fdw, heap))

        stream = "SELECT event_type, value FROM {t}"
        duck = timed(b.duck_stream(stream.replace("{t}", "events")), max(args.repeat // 2, 1))
        fdw = timed(b.pg_copy(stream.replace("{t}", "lake.events")), max(args.repeat // 2, 1))
        heap = timed(b.pg_copy(stream.replace("{t}", "heap_events")), max(args.repeat // 2, 1))
        results.insert(3, ("4. all rows, two columns, to the client", duck, fdw, heap))

        feed_rows = []
        for table, rows in (("events_small", args.small_rows), ("events", args.rows)):
            b.duck.execute(f"INSERT INTO {table} SELECT uuid(), 'late', i, now() FROM range({rows}, {rows + 1000}) t(i)")
            snap = b.duck.execute("SELECT id FROM bench.current_snapshot()").fetchone()[0]
            duck = timed(b.duck_query(f"SELECT * FROM bench.table_changes('{table}', {snap}, {snap})"), args.repeat)
            fdw = timed(b.pg_query(f"SELECT * FROM lake.{table}_changes WHERE snapshot_id = {snap}"), args.repeat)
            count = len(b.pg.execute(f"SELECT * FROM lake.{table}_changes WHERE snapshot_id = {snap}").fetchall())
            assert count == 1000, count
            feed_rows.append((f"6. change feed, 1,000 rows, on {rows:,} rows", duck, fdw, None))

        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"Machine: {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
              f"{platform.system()} {platform.release()}; PostgreSQL 18.6, DuckDB 1.5.5, ducklake.threads=2.")
        print(f"Lake: {args.rows:,} events (uuid, text, bigint, timestamptz); load + heap copy took {load_seconds:.0f} s. "
              f"Warm medians of {args.repeat} runs (query 4: {max(args.repeat // 2, 1)}).\n")
        print("| query | DuckDB (ms) | FDW (ms) | heap (ms) | FDW / DuckDB | FDW / heap |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, duck, fdw, heap in results + feed_rows:
            heap_cell = f"{heap:.1f}" if heap is not None else "–"
            heap_ratio = f"{fdw / heap:.2f}" if heap is not None else "–"
            print(f"| {name} | {duck:.1f} | {fdw:.1f} | {heap_cell} | {fdw / duck:.2f} | {heap_ratio} |")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
