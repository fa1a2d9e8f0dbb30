"""Object-storage benchmark: the same lake twice, once on local disk and once in a bucket of
an S3 server on loopback, read and written through the FDW side by side; prints each
measurement on both and the ratio S3 / local disk.

    scripts/bench.sh object_store [--rows 10000000] [--bulk-rows 1000000] [--commits 200]
                                  [--repeat 5] [--rounds 3] [--server s3s-fs|moto]

The S3 server is s3s-fs (a compiled S3 server over a directory: benches/s3-server, its store
served with TCP_NODELAY, built on first use) or moto's (Python, the tests' server, which
measures itself more than the FDW).
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

import boto3
import psycopg

from harness import SCRIPTS, Bench, free_port, timed

KEY_ID, SECRET, BUCKET = "benchkey", "benchsecret", "bench"
LAKE_COLUMNS = "(event_id UUID, event_type VARCHAR, value BIGINT, created_at TIMESTAMPTZ)"


class S3Server:
    def __init__(self, kind, root):
        self.kind, self.port = kind, free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        if kind == "s3s-fs":
            binary = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/env.sh"; s3_server_binary'], check=True,
                                    capture_output=True, text=True).stdout.strip()
            root.mkdir(mode=0o777)
            command = [binary, "127.0.0.1", str(self.port), KEY_ID, SECRET, str(root)]
        else:
            command = [os.path.join(os.path.dirname(sys.executable), "moto_server"),
                       "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = boto3.client("s3", endpoint_url=f"http://{self.endpoint}", aws_access_key_id=KEY_ID,
                                   aws_secret_access_key=SECRET, region_name="us-east-1")
        for _ in range(400):
            try:
                self.client.create_bucket(Bucket=BUCKET)
                return
            except Exception:  # not listening yet
                time.sleep(0.05)
        raise RuntimeError(f"{kind} did not start")

    def secret(self):
        return (f"CREATE SECRET (TYPE s3, KEY_ID '{KEY_ID}', SECRET '{SECRET}', ENDPOINT '{self.endpoint}', "
                f"URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")

    def stop(self):
        self.process.terminate()
        self.process.wait()


def add_s3_lake(b, s3):
    """Server s3lake (catalog s3bench in the same database) on s3://bench/lake/, and the
    reference client attached to it as s3bench."""
    b.pg.execute(f"CREATE SERVER s3lake FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 's3bench', "
                 f"data_path 's3://{BUCKET}/lake/', endpoint '{s3.endpoint}', url_style 'path', use_ssl 'false', "
                 f"region 'us-east-1')")
    b.pg.execute(f"CREATE USER MAPPING FOR PUBLIC SERVER s3lake OPTIONS (key_id '{KEY_ID}', secret '{SECRET}')")
    b.pg.execute("CREATE SCHEMA s3lake")
    b.duck.execute(f"LOAD '{b.extension_dir}/httpfs.duckdb_extension'")
    b.duck.execute(s3.secret())
    b.duck.execute(f"ATTACH 'ducklake:postgres:{b.dsn}' AS s3bench "
                   f"(DATA_PATH 's3://{BUCKET}/lake/', METADATA_SCHEMA '__ducklake_metadata_s3bench')")


def load(b, rows):
    """The same rows into table events of both lakes."""
    b.duck.execute(f"""
        CREATE TABLE memory.main.generated AS
        SELECT uuid() AS event_id,
               ['click', 'view', 'purchase', 'signup'][1 + (i % 4)::INTEGER] AS event_type,
               i AS value,
               TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_seconds(i) AS created_at
        FROM range({rows}) t(i)""")
    for catalog, schema, server in (("bench", "lake", "lake"), ("s3bench", "s3lake", "s3lake")):
        b.duck.execute(f"CREATE TABLE {catalog}.main.events AS SELECT * FROM memory.main.generated")
        b.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO (events) FROM SERVER {server} INTO {schema}")
    b.duck.execute("DROP TABLE memory.main.generated")
    b.share_data_files()


def cold(b, sql):
    """A query as a new connection's first: the instance is opened (extensions loaded, the
    catalog attached) and nothing is cached."""
    def run():
        with psycopg.connect(b.dsn, autocommit=True) as conn:
            conn.execute(sql).fetchall()
    return run


def bulk_insert(b, schema, catalog, tag):
    table = f"bulk_{tag}"
    b.duck.execute(f"CREATE TABLE {catalog}.main.{table} {LAKE_COLUMNS}")
    b.share_data_files()
    server = "lake" if schema == "lake" else "s3lake"
    b.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({table}) FROM SERVER {server} INTO {schema}")
    b.pg.execute(f"SELECT count(*) FROM {schema}.{table}")  # attached before timing
    started = time.perf_counter()
    b.pg.execute(f"INSERT INTO {schema}.{table} SELECT * FROM heap_rows")
    return time.perf_counter() - started


def small_commits(b, schema, catalog, clients, per_client, tag):
    """Commits/s of `clients` clients each committing `per_client` 50-row INSERTs."""
    table = f"small_{tag}"
    b.duck.execute(f"CREATE TABLE {catalog}.main.{table} {LAKE_COLUMNS}")
    b.share_data_files()
    server = "lake" if schema == "lake" else "s3lake"
    b.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({table}) FROM SERVER {server} INTO {schema}")
    barrier = threading.Barrier(clients + 1)

    def client(name):
        with psycopg.connect(b.dsn, autocommit=True) as conn:
            conn.execute(f"SELECT count(*) FROM {schema}.{table}")
            barrier.wait()
            for i in range(per_client):
                conn.execute(f"INSERT INTO {schema}.{table} SELECT gen_random_uuid(), '{name}', g, now() "
                             f"FROM generate_series({i * 50}, {i * 50 + 49}) g")

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    rate = clients * per_client / (time.perf_counter() - started)
    assert b.pg.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone() == (50 * clients * per_client,)
    return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--bulk-rows", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["s3s-fs", "moto"], default="s3s-fs")
    args = parser.parse_args()
    b = Bench()
    s3 = S3Server(args.server, b.base / "s3")
    try:
        add_s3_lake(b, s3)
        load(b, args.rows)
        lo = args.rows // 2
        queries = [
            ("full scan: count, sum of a bigint, sum of text lengths",
             "SELECT count(*), sum(value), sum(length(event_type)) FROM {t}"),
            ("GROUP BY event_type, COUNT/SUM/AVG",
             "SELECT event_type, count(*), sum(value), avg(value) FROM {t} GROUP BY event_type ORDER BY 1"),
            ("point lookup by key", f"SELECT * FROM {{t}} WHERE value = {lo + 7}"),
        ]
        results = []
        for name, sql in queries:
            local_sql, s3_sql = sql.replace("{t}", "lake.events"), sql.replace("{t}", "s3lake.events")
            assert b.pg.execute(local_sql).fetchall() == b.pg.execute(s3_sql).fetchall(), name
            results.append((f"{name}, warm (ms)", timed(b.pg_query(local_sql), args.repeat),
                            timed(b.pg_query(s3_sql), args.repeat)))
            results.append((f"{name}, a new connection's first (ms)", timed(cold(b, local_sql), args.repeat),
                            timed(cold(b, s3_sql), args.repeat)))

        b.pg.execute(f"CREATE TABLE heap_rows AS SELECT * FROM lake.events LIMIT {args.bulk_rows}")
        bulk = {"lake": [], "s3lake": []}
        commits = {"lake": [], "s3lake": []}
        for round_ in range(args.rounds):
            for schema, catalog in (("lake", "bench"), ("s3lake", "s3bench")):
                bulk[schema].append(bulk_insert(b, schema, catalog, f"{schema}_{round_}"))
                commits[schema].append(small_commits(b, schema, catalog, 8, args.commits // 8, f"{schema}_{round_}"))
        n = args.bulk_rows
        results.append((f"bulk INSERT of {n:,} rows from a heap table (ms)",
                        statistics.median(bulk["lake"]) * 1000, statistics.median(bulk["s3lake"]) * 1000))
        results.append(("small commits of 50 rows, 8 clients (commits/s)",
                        statistics.median(commits["lake"]), statistics.median(commits["s3lake"])))

        print(b.machine())
        print(f"S3 server: {args.server} on loopback. Lake: {args.rows:,} events (uuid, text, bigint, timestamptz), "
              f"the same rows on local disk and in the bucket. Medians: queries of {args.repeat} runs, "
              f"writes of {args.rounds} interleaved rounds ({args.commits} commits per round).\n")
        print("| measurement | local disk | S3 | S3 / local (time) |")
        print("|---|---:|---:|---:|")
        for name, local, remote in results:
            rate = "commits/s" in name
            ratio = local / remote if rate else remote / local
            print(f"| {name} | {local:,.1f} | {remote:,.1f} | {ratio:.2f}x |")
        print(f"\nRounds: bulk local {[round(s * 1000) for s in bulk['lake']]} ms, S3 "
              f"{[round(s * 1000) for s in bulk['s3lake']]} ms; commits/s local "
              f"{[round(r, 1) for r in commits['lake']]}, S3 {[round(r, 1) for r in commits['s3lake']]}")
    finally:
        s3.stop()
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
