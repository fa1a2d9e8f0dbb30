"""Shared set-up of the benchmarks: a throwaway PostgreSQL 18 cluster with the FDW and a
lake (catalog in that database), plus standalone DuckDB (the reference client) attached
to the same lake."""

import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
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
    def __init__(self, preload=""):
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="ducklake-bench-", dir="/var/tmp"))
        os.chmod(self.base, 0o777)
        self.port = free_port()
        env = dict(os.environ, DUCKLAKE_PRELOAD=preload)
        subprocess.run([str(SCRIPTS / "cluster.sh"), "start", str(self.base), str(self.port), "pg18"], check=True, env=env)
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
        self.site_packages = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/env.sh"; site_packages'],
                                            check=True, capture_output=True, text=True).stdout.strip()
        self.extension_dir = pathlib.Path(sharedir) / "ducklake_fdw"
        self.duck = duckdb.connect()
        for name in ("ducklake", "postgres_scanner", "icu"):
            self.duck.execute(f"LOAD '{self.extension_dir}/{name}.duckdb_extension'")
        self.duck.execute(f"ATTACH 'ducklake:postgres:{self.dsn}' AS bench "
                          f"(DATA_PATH '{self.data}/', METADATA_SCHEMA '__ducklake_metadata_bench')")
        self.duck.execute("USE bench")

    def close(self):
        self.duck.close()
        self.pg.close()
        subprocess.run([str(SCRIPTS / "cluster.sh"), "stop", str(self.base), "pg18"], check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def machine(self):
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
        return (f"Machine: {os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()} {platform.release()}; "
                f"PostgreSQL 18.6, DuckDB 1.5.5, ducklake.threads=2.")

    def load(self, table, rows):
        self.duck.execute(f"""
            CREATE TABLE {table} AS
            SELECT uuid() AS event_id,
                   ['click', 'view', 'purchase', 'signup'][1 + (i % 4)::INTEGER] AS event_type,
                   i AS value,
                   TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_seconds(i) AS created_at
            FROM range({rows}) t(i)""")
        self.share_data_files()
        self.pg.execute(f"IMPORT FOREIGN SCHEMA main LIMIT TO ({table}) FROM SERVER lake INTO lake")
        self.pg.execute(f"CREATE FOREIGN TABLE lake.{table}_changes (snapshot_id bigint, rowid bigint, "
                        f"change_type text, event_id uuid, event_type text, value bigint, created_at timestamptz) "
                        f"SERVER lake OPTIONS (table '{table}', changes 'true')")

    def load_tpch(self, sf, tables):
        """TPC-H at scale factor `sf` from DuckDB's `tpch` extension, written into the lake
        by the reference client and imported as foreign tables in schema lake."""
        self.duck.execute(f"LOAD '{self.site_packages}/duckdb_extension_tpch/extensions/v1.5.5/tpch.duckdb_extension'")
        self.duck.execute("ATTACH ':memory:' AS gen")
        self.duck.execute(f"CALL dbgen(sf={sf}, catalog='gen')")
        for table in tables:
            self.duck.execute(f"CREATE TABLE bench.main.{table} AS SELECT * FROM gen.main.{table}")
        self.duck.execute("DETACH gen")
        self.share_data_files()
        self.pg.execute("IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake")

    def share_data_files(self):
        """The server runs as another user and writes into the table directories this
        process created."""
        subprocess.run(["chmod", "-R", "a+rwX", str(self.data)], check=True)

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


