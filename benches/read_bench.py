"""Read benchmark: the same queries on the same lake through standalone DuckDB (the
reference client), through the FDW from a Postgres client, and on the same rows in a
plain Postgres heap table. Prints a Markdown table of warm median times and ratios.

    scripts/bench.sh read [--rows 10000000] [--repeat 5]

Needs the extensions installed into PostgreSQL 18 (scripts/install.sh pg18).
"""

import argparse
import sys
import time

from harness import Bench, timed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    b = Bench()
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

        print(b.machine())
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
