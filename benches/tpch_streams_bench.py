"""TPC-H stream tables: each of the 22 queries of DuckDB's `tpch` extension created as a
DIFFERENTIAL stream table over a TPC-H lake (or the construct that keeps it from
being one), then 0.1% and 1% of `lineitem` and `orders` changed by the reference
client (a third of it updates, a third deletes, a third inserts), then 0.1% of
orders inserted with their lineitems (an append-only workload), and after each, every
stream table refreshed differentially and in full; each result checked against its query
(as multisets, the query run by the FDW). Those refreshes run with
`pgtrickle.adaptive_refresh` off; after the first mixed round, a change of the same size
(to other rows) is refreshed with it on, as by default: each table then rebuilds when its differential
refresh just took longer than its full one. Prints a Markdown table.

    scripts/bench.sh tpch_streams [--sf 1] [--fractions 0.001,0.01] [--inserts 0.001]
"""

import argparse
import statistics
import sys
import time

import psycopg

from harness import Bench

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def timed_ms(run):
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000.0


def same_rows(table, query):
    """The stream table's rows and the query's answer (run whole in DuckDB by the
    FDW; `verify_stream_table`'s EXCEPT ALL would run the query in Postgres) as
    multisets."""
    key = lambda row: repr(row)  # noqa: E731
    return sorted(table, key=key) == sorted(query, key=key)


def change(duck, fraction, round_number):
    """A `fraction` of lineitem and of orders changed: a third updated, a third
    deleted, a third inserted (copies of other rows under new keys)."""
    modulus = max(int(round(3 / fraction)), 6)
    offset = 10_000_000 * (round_number + 1)
    # other rows each round, so that a later round deletes as many as the first;
    # residues from 10 on miss `insert`'s (5 modulo 1000) at the default fractions
    base = 10 * round_number % (modulus - 3)
    for table, key, column in [("lineitem", "l_orderkey", "l_quantity"), ("orders", "o_orderkey", "o_totalprice")]:
        duck.execute(f"UPDATE {table} SET {column} = {column} + 1 WHERE {key} % {modulus} = {base + 1}")
        duck.execute(f"DELETE FROM {table} WHERE {key} % {modulus} = {base + 2}")
        duck.execute(f"INSERT INTO {table} SELECT * REPLACE ({key} + {offset} AS {key}) FROM {table} "
                     f"WHERE {key} % {modulus} = {base + 3} AND {key} < {offset}")


def insert(duck, fraction, round_number):
    """A `fraction` of orders inserted with their lineitems, as copies under new keys
    (an append-only workload: new orders and their lines, nothing updated or deleted)."""
    modulus = max(int(round(1 / fraction)), 1)
    offset = 10_000_000 * (round_number + 1)
    for table, key in [("lineitem", "l_orderkey"), ("orders", "o_orderkey")]:
        duck.execute(f"INSERT INTO {table} SELECT * REPLACE ({key} + {offset} AS {key}) FROM {table} "
                     f"WHERE {key} % {modulus} = 5 AND {key} < 10000000")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sf", type=float, default=1.0)
    parser.add_argument("--fractions", default="0.001,0.01")
    parser.add_argument("--inserts", default="0.001",
                        help="fractions of orders inserted with their lineitems, after the mixed changes ('' for none)")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    inserts = [float(f) for f in args.inserts.split(",") if f]
    b = Bench(preload="ducklake_ivm")
    try:
        b.load_tpch(args.sf, TABLES)
        b.pg.execute("CREATE EXTENSION ducklake_ivm")
        b.pg.execute("SET search_path = lake, public")
        b.pg.execute("SET pgtrickle.adaptive_refresh = off")
        queries = dict(b.duck.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())

        maintained = {}
        refused = {}
        for number in sorted(queries):
            name = f"q{number:02d}"
            sql = queries[number].strip().rstrip(";")
            try:
                with b.pg.transaction():
                    b.pg.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h', 'DIFFERENTIAL', false)", (name, sql))
                    b.pg.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))
            except psycopg.Error as error:
                refused[number] = error.diag.message_primary.replace(" is not supported in a DIFFERENTIAL stream table", "")
                continue
            full = timed_ms(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s, 'FULL')", (name,)))
            maintained[number] = {"name": name, "sql": sql, "initial": full}
            print(f"query {number}: DIFFERENTIAL, initial FULL {full:.0f} ms", file=sys.stderr)

        for number, m in maintained.items():
            m["empty"] = statistics.median(timed_ms(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s)", (m["name"],)))
                                           for _ in range(5))
        # (label, changes, adaptive)
        rounds = [(f"{f:.1%}", lambda r, f=f: change(b.duck, f, r), False) for f in fractions]
        if fractions:
            rounds.insert(1, (f"{fractions[0]:.1%}, adaptive", lambda r: change(b.duck, fractions[0], r), True))
        rounds += [(f"{f:.1%} inserts", lambda r, f=f: insert(b.duck, f, r), False) for f in inserts]
        for round_number, (label, make_changes, adaptive) in enumerate(rounds):
            make_changes(round_number)
            b.pg.execute(f"SET pgtrickle.adaptive_refresh = {'on' if adaptive else 'off'}")
            for number, m in maintained.items():
                differential = timed_ms(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s)", (m["name"],)))
                mode = b.pg.execute("SELECT last_refresh_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                                    (m["name"],)).fetchone()[0]
                exact = same_rows(b.pg.execute(f"SELECT * FROM {m['name']}").fetchall(), b.pg.execute(m["sql"]).fetchall())
                full = timed_ms(lambda: b.pg.execute("SELECT pgtrickle.refresh(%s, 'FULL')", (m["name"],)))
                m[label] = (differential, full, exact, mode)
                print(f"query {number} at {label}: {mode} {differential:.0f} ms, FULL {full:.0f} ms, "
                      f"exact: {exact}", file=sys.stderr)
            b.pg.execute("SET pgtrickle.adaptive_refresh = off")

        lineitem = b.duck.execute("SELECT count(*) FROM lineitem").fetchone()[0]
        print(b.machine())
        print(f"TPC-H scale factor {args.sf:g} (lineitem {lineitem:,} rows at the end), written by the reference "
              f"client; changes to lineitem and orders made by the reference client. One run per cell.\n")
        labels = [label for label, _, _ in rounds]
        header = "| query | maintained | " + " | ".join(
            (f"refresh at {label}: ran (ms) | FULL (ms) | / FULL" if "adaptive" in label
             else f"DIFF at {label} (ms) | FULL (ms) | DIFF / FULL") for label in labels) + " | empty (ms) | exact |"
        print(header)
        print("|---|---|" + "---:|---:|---:|" * len(labels) + "---:|---|")
        for number in sorted(queries):
            if number in refused:
                print(f"| {number} | no: {refused[number]} |" + " – | – | – |" * len(labels) + " – | – |")
                continue
            m = maintained[number]
            cells = []
            exact = True
            for label in labels:
                differential, full, ok, mode = m[label]
                exact &= ok
                ran = f"{'DIFF' if mode == 'DIFFERENTIAL' else mode} {differential:.0f}" if "adaptive" in label \
                    else f"{differential:.0f}"
                cells.append(f"{ran} | {full:.0f} | {differential / full:.2f}")
            print(f"| {number} | DIFFERENTIAL | " + " | ".join(cells) + f" | {m['empty']:.1f} | {'yes' if exact else 'NO'} |")
        print(f"\n{len(maintained)} of {len(queries)} maintained differentially.")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
