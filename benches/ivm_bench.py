"""Stream-table refresh benchmark: the seed's event_summary over lakes of 1M and 10M
events. DIFFERENTIAL refresh after 1,000 new rows vs FULL refresh of the same stream
table, an empty refresh, and the latency from an INSERT commit to the stream table
showing it with a 1s schedule; then a join of the events with a 100,000-row lake table
of users, refreshed after 1,000 new events and after 100 changed users. Prints markdown
tables for BENCHMARKS.md."""

import argparse
import statistics
import sys
import time

from harness import Bench, timed

SUMMARY = ("SELECT event_type, COUNT(*) AS event_count, SUM(value) AS total_value "
           "FROM lake.{t} GROUP BY event_type")
USERS = 100_000
BY_PLAN = ("SELECT u.plan, count(*) AS events, sum(e.value) AS total FROM lake.{t} e "
           "JOIN lake.users u ON u.user_id = e.value % " + str(USERS) + " GROUP BY u.plan")


def median_refresh(b, name, change, repeat):
    """Median time of a DIFFERENTIAL refresh after `change` (the first one warms up)."""
    samples = []
    for _ in range(repeat + 1):
        change()
        start = time.perf_counter()
        b.pg.execute("SELECT pgtrickle.refresh(%s)", (name,))
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples[1:])


def assert_exact(b, name, query):
    got = sorted(b.pg.execute(f"SELECT * FROM {name}").fetchall())
    want = sorted(b.pg.execute(query).fetchall())
    assert got == want, (name, got, want)


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
        # Differential refreshes are what is measured: not the rebuilds the adaptive
        # choice would take where a FULL refresh was faster (the scheduler's, in the
        # latency trials below, may take them).
        b.pg.execute("SET pgtrickle.adaptive_refresh = off")
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

            differential = median_refresh(b, name, insert_1000, args.repeat)
            full = timed(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s, 'FULL')", (name,)), max(args.repeat // 2, 1))
            empty = timed(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s)", (name,)), args.repeat * 4)
            # The result is still exact after all that.
            assert_exact(b, name, SUMMARY.format(t=table))
            results.append((rows, differential, full, empty))

        # A join: events with a lake table of users.
        b.duck.execute(f"CREATE TABLE users AS SELECT i::INTEGER AS user_id, ['free', 'pro', 'team'][1 + (i % 3)::INTEGER] "
                       f"AS plan FROM range({USERS}) t(i)")
        b.share_data_files()
        b.pg.execute("IMPORT FOREIGN SCHEMA main LIMIT TO (users) FROM SERVER lake INTO lake")
        joins = []
        for rows in sizes:
            table = f"events_{rows}"
            name = f"by_plan_{rows}"
            query = BY_PLAN.format(t=table)
            b.pg.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
            b.pg.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))
            events = median_refresh(b, name, lambda: b.pg.execute(
                f"INSERT INTO lake.{table} (event_id, event_type, value, created_at) "
                "SELECT gen_random_uuid(), 'click', i, now() FROM generate_series(1, 1000) i"), args.repeat)
            users = median_refresh(b, name, lambda: b.pg.execute(
                "UPDATE lake.users SET plan = CASE plan WHEN 'free' THEN 'pro' ELSE 'free' END "
                "WHERE user_id < 100"), args.repeat)
            full = timed(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s, 'FULL')", (name,)), max(args.repeat // 2, 1))
            assert_exact(b, name, query)
            joins.append((rows, events, users, full))

        # Latency: a 1s schedule, 50 rows committed (the demo generator's batch), until the
        # stream table shows them. The commits come 1.2 s apart, as the schedule allows
        # (a table a refresh changed is not changed again within its schedule).
        table = f"events_{sizes[0]}"
        b.pg.execute("SELECT pgtrickle.create_stream_table('latency_summary', %s, '1s')", (SUMMARY.format(t=table),))
        latencies = []
        for trial in range(args.latency_trials):
            time.sleep(1.2)
            probe = f"probe_{trial}"
            b.pg.execute(f"INSERT INTO lake.{table} (event_id, event_type, value, created_at) "
                         "SELECT gen_random_uuid(), %s, 1, now() FROM generate_series(1, 50)", (probe,))
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
        print(f"\n50-row INSERT commit to visible in the stream table (schedule '1s', commits 1.2 s apart, "
              f"{args.latency_trials} trials): "
              f"p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms.")
        print(f"\nJoin: `{BY_PLAN.format(t='events_N')}` ({USERS:,} users).\n")
        print("| lake rows | DIFFERENTIAL after 1,000 new events (ms) | after 100 changed users (ms) | FULL (ms) "
              "| FULL / DIFFERENTIAL (events) |")
        print("|---:|---:|---:|---:|---:|")
        for rows, events, users, full in joins:
            print(f"| {rows:,} | {events:.1f} | {users:.1f} | {full:.1f} | {full / events:.1f}x |")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
