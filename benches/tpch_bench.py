"""TPC-H benchmark: the 22 queries of DuckDB's `tpch` extension over a lake that the
reference client wrote, run through Postgres (the FDW) and through standalone DuckDB on
the same lake, side by side; every answer compared. Prints a Markdown table of warm
medians and ratios.

    scripts/bench.sh tpch [--sf 1] [--repeat 3] [--timeout 300] [--queries 1,6,18]

The query texts are DuckDB's own (`tpch_queries()`), standard SQL that Postgres parses
unchanged. A last row, "mixed", is query 5 with `nation` and `region` as Postgres heap
tables: the shape of a lake joined with Postgres reference data.
"""

import argparse
import datetime
import decimal
import math
import statistics
import sys
import time

import psycopg

from harness import Bench

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def normalized(value):
    """A value as both engines' answers can be compared: numbers as floats (DuckDB's
    avg is a double where Postgres' is numeric), everything else as itself."""
    if isinstance(value, (decimal.Decimal, float, int)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None)
    return value


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def same_answer(pg_rows, duck_rows, ordered):
    """Whether two answers are equal, row by row in order when the query orders them,
    else as multisets."""
    a = [tuple(normalized(v) for v in row) for row in pg_rows]
    b = [tuple(normalized(v) for v in row) for row in duck_rows]
    if len(a) != len(b):
        return False
    if not ordered:
        key = lambda row: tuple((v is None, str(v)) for v in row)  # noqa: E731
        a, b = sorted(a, key=key), sorted(b, key=key)
    return all(len(x) == len(y) and all(same_value(v, w) for v, w in zip(x, y)) for x, y in zip(a, b))


def median_ms_side_by_side(duck_run, pg_run, repeat):
    """Warm medians in milliseconds of the two runs, taken in turns so that the
    machine's drift (these hosts vary by tens of percent within a minute) weighs on
    both alike; the Postgres median is None when a run timed out."""
    duck, pg = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        duck_run()
        duck.append((time.perf_counter() - started) * 1000.0)
        if pg is not None:
            started = time.perf_counter()
            pg = None if pg_run() is None else pg + [(time.perf_counter() - started) * 1000.0]
    return statistics.median(duck), (statistics.median(pg) if pg else None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (1, 10, ...)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=300, help="seconds a Postgres run may take")
    parser.add_argument("--queries", default="", help="comma-separated query numbers (default: all 22)")
    args = parser.parse_args()
    b = Bench()
    try:
        started = time.perf_counter()
        b.load_tpch(args.sf, TABLES)
        b.pg.execute("CREATE TABLE public.nation AS SELECT * FROM lake.nation")
        b.pg.execute("CREATE TABLE public.region AS SELECT * FROM lake.region")
        b.pg.execute("ANALYZE public.nation, public.region")
        load_seconds = time.perf_counter() - started

        queries = dict(b.duck.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
        wanted = [int(q) for q in args.queries.split(",") if q] or sorted(queries)
        b.pg.execute(f"SET statement_timeout = '{args.timeout}s'")

        def through_postgres(sql, search_path):
            def run():
                try:
                    b.pg.execute(f"SET search_path = {search_path}")
                    return b.pg.execute(sql).fetchall()
                except psycopg.errors.QueryCanceled:
                    return None
            return run

        def through_duckdb(sql):
            return lambda: b.duck.execute(sql).fetchall()

        results = []
        cases = [(str(n), queries[n], "lake, public") for n in wanted]
        if 5 in wanted:
            cases.append(("mixed", queries[5], "public, lake"))
        for name, sql, search_path in cases:
            pg_run, duck_run = through_postgres(sql, search_path), through_duckdb(sql)
            duck_answer = duck_run()  # also the warm-up
            pg_answer = pg_run()
            identical = pg_answer is not None and same_answer(pg_answer, duck_answer, "order by" in sql.lower())
            duck_ms, pg_ms = median_ms_side_by_side(duck_run, pg_run if pg_answer is not None else lambda: None, args.repeat)
            results.append((name, duck_ms, pg_ms, identical))
            shown = f"{pg_ms:.0f} ms" if pg_ms is not None else f"over {args.timeout} s"
            print(f"query {name}: DuckDB {duck_ms:.0f} ms, FDW {shown}, identical: {identical}", file=sys.stderr)

        print(b.machine())
        print(f"TPC-H scale factor {args.sf:g} (lineitem {b.duck.execute('SELECT count(*) FROM lineitem').fetchone()[0]:,} rows), "
              f"written by the reference client; load took {load_seconds:.0f} s. Warm medians of {args.repeat} runs, DuckDB's and Postgres' in turns; "
              f"Postgres runs limited to {args.timeout} s.\n")
        print("| query | DuckDB (ms) | FDW (ms) | FDW / DuckDB | answers identical |")
        print("|---|---:|---:|---:|---|")
        ratios = []
        for name, duck_ms, pg_ms, identical in results:
            if pg_ms is None:
                print(f"| {name} | {duck_ms:.0f} | over {args.timeout} s | – | {'yes' if identical else 'no'} |")
                continue
            ratio = pg_ms / duck_ms
            if name != "mixed":
                ratios.append(ratio)
            print(f"| {name} | {duck_ms:.0f} | {pg_ms:.0f} | {ratio:.2f} | {'yes' if identical else 'no'} |")
        standard = [r for r in results if r[0] != "mixed"]
        print(f"\n{sum(1 for r in standard if r[3])} of {len(standard)} answers identical; "
              f"{sum(1 for r in ratios if r <= 1.2)} within 1.2x of DuckDB; geometric mean FDW/DuckDB "
              f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x over the {len(ratios)} queries that finished.")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
