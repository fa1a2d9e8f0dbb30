"""Stream-table refresh benchmark: the seed's event_summary over lakes of 1M and 10M
events. DIFFERENTIAL refresh after 1,000 new rows vs FULL refresh of the same stream
table, an empty refresh, and the latency from an INSERT commit to the stream table
showing it with a 1s schedule. Prints a markdown table for BENCHMARKS.md."""

import argparse
import statistics
import sys
import time

from harness import Bench, timed

SUMMARY = ("SELECT event_type, COUNT(*) AS event_count, SUM(value) AS total_value "
           "FROM lake.{t} GROUP BY event_type")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency-trials", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    b = Bench(preload="ducklake_ivm")
    try:
        b.pg.execute("CREATE EXTENSION ducklake_ivm")
        results = []
        for rows in sizes:
            table = f"events_{rows}"
            b.load(table, rows)
            name = f"summary_{rows}"
            b.pg.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, SUMMARY.format(t=table)))
            b.pg.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))  # this run drives refreshes

            def insert_1000():
                b.pg.execute(f"INSERT INTO lake.{table} (event_id, event_type, value, created_at) "
                             "SELECT gen_random_uuid(), 'click', i, now() FROM generate_series(1, 1000) i")

            samples = []
            for _ in range(args.repeat + 1):
                insert_1000()
                start = time.perf_counter()
                b.pg.execute("SELECT pgtrickle.refresh(%s)", (name,))
                samples.append((time.perf_counter() - start) * 1000)
            differential = statistics.median(samples[1:])
            full = timed(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s, 'FULL')", (name,)), max(args.repeat // 2, 1))
            empty = timed(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s)", (name,)), args.repeat * 4)
            # The result is still exact after all that.
            got = sorted(b.pg.execute(f"SELECT * FROM {name}").fetchall())
            want = sorted(b.pg.execute(SUMMARY.format(t=table)).fetchall())
            assert got == want, (got, want)
            results.append((rows, differential, full, empty))

        # Latency: a 1s schedule, one row committed, until the stream table shows it.
        table = f"events_{sizes[0]}"
        b.pg.execute("SELECT pgtrickle.create_stream_table('latency_summary', %s, '1s')", (SUMMARY.format(t=table),))
        latencies = []
        for trial in range(args.latency_trials):
            probe = f"probe_{trial}"
            b.pg.execute(f"INSERT INTO lake.{table} (event_id, event_type, value, created_at) "
                         "VALUES (gen_random_uuid(), %s, 1, now())", (probe,))
            committed = time.perf_counter()
            while not b.pg.execute("SELECT 1 FROM latency_summary WHERE event_type = %s", (probe,)).fetchone():
                time.sleep(0.005)
            latencies.append(time.perf_counter() - committed)
        latencies.sort()
        p50 = statistics.median(latencies)
        p90 = latencies[int(0.9 * (len(latencies) - 1))]

        print(b.machine())
        print(f"Stream table: the seed's event_summary (GROUP BY event_type, COUNT, SUM). Medians of {args.repeat} "
              f"refreshes (FULL: {max(args.repeat // 2, 1)}, empty: {args.repeat * 4}).\n")
        print("| lake rows | DIFFERENTIAL after 1,000 inserts (ms) | FULL (ms) | FULL / DIFFERENTIAL | empty refresh (ms) |")
        print("|---:|---:|---:|---:|---:|")
        for rows, differential, full, empty in results:
            print(f"| {rows:,} | {differential:.1f} | {full:.1f} | {full / differential:.0f}x | {empty:.1f} |")
        print(f"\nINSERT commit to visible in the stream table (schedule '1s', {args.latency_trials} trials): "
              f"p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms.")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
