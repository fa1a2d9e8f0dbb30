"""Integration-test harness: real PostgreSQL clusters with the extensions installed,
and the reference DuckLake client (Python duckdb 1.5.5 + the ducklake extension)
attached to the same catalog and data path.

Every test that takes `pg` runs once per PostgreSQL version given with --pg.
"""

import collections
import contextlib
import copy
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import duckdb
import psycopg
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

# Lakes are written by this (root) process and by the server's unprivileged user.
os.umask(0)


def pytest_configure(config):
    # dbt-core 1.10 imports a parser that Click deprecates (tests/test_dbt.py runs dbt in-process).
    config.addinivalue_line("filterwarnings", "ignore:'parser.ParsingState' is deprecated:DeprecationWarning")


def pytest_addoption(parser):
    parser.addoption("--pg", action="append", default=[], help="PostgreSQL to test against: pg18, pg15")


# Seconds spent in each test file (setup, call and teardown of its tests: a session
# fixture's cluster start counts for the file that needed it first), for the test command's
# summary of where the time went (scripts/test.sh sets DUCKLAKE_PHASES).
_seconds_per_file = collections.defaultdict(float)


def pytest_runtest_logreport(report):
    _seconds_per_file[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter, config):
    phases = os.environ.get("DUCKLAKE_PHASES")
    if not phases:
        return
    versions = "+".join(config.getoption("pg") or ["pg18"])
    with open(phases, "a") as out:
        for path, seconds in _seconds_per_file.items():
            out.write(f"{seconds:.1f}\t{path} ({versions})\n")


def pytest_generate_tests(metafunc):
    if "pg" in metafunc.fixturenames:
        versions = metafunc.config.getoption("pg") or ["pg18"]
        # A module may run on fewer versions (the demos are PostgreSQL 18 only).
        only = getattr(metafunc.module, "PG_VERSIONS", None)
        if only is not None:
            versions = [v for v in versions if v in only]
        metafunc.parametrize("pg", versions, indirect=True, scope="session")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_config(version):
    out = subprocess.run(
        ["bash", "-c", f'source "{SCRIPTS}/env.sh"; pg_config_for {version}'],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


class Cluster:
    def __init__(self, version, base, port):
        self.version = version
        self.base = base
        self.port = port
        self.pg_config = pg_config(version)
        self.sharedir = subprocess.run([self.pg_config, "--sharedir"], check=True, capture_output=True,
                                       text=True).stdout.strip()
        self.extension_dir = pathlib.Path(self.sharedir) / "ducklake_fdw"

    def dsn(self, dbname="postgres", user="postgres", **extra):
        parts = [f"host={self.base}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def connect(self, dbname="postgres", user="postgres", autocommit=True):
        return psycopg.connect(self.dsn(dbname, user), autocommit=autocommit)

    def execute(self, sql, dbname="postgres"):
        with self.connect(dbname) as conn:
            conn.execute(sql)

    @property
    def data_directory(self):
        return self.base / "data"


@pytest.fixture(scope="session")
def pg(request):
    version = request.param
    base = pathlib.Path(tempfile.mkdtemp(prefix=f"ducklake-{version}-", dir="/tmp"))
    os.chmod(base, 0o777)
    port = free_port()
    # The stream-table scheduler runs in every test cluster, as in production.
    env = dict(os.environ, DUCKLAKE_PRELOAD="ducklake_ivm")
    subprocess.run([str(SCRIPTS / "cluster.sh"), "start", str(base), str(port), version], check=True, env=env)
    cluster = Cluster(version, base, port)
    # A role that must authenticate with a password, for the credential tests.
    hba = cluster.data_directory / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(
        "local all lake_pw scram-sha-256\nhost all lake_pw 127.0.0.1/32 scram-sha-256\n" + original
    )
    cluster.execute("SELECT pg_reload_conf()")
    cluster.execute("CREATE ROLE lake_pw LOGIN SUPERUSER PASSWORD 'right-password'")
    # The stream-table tests check differential refreshes, and on their small tables a
    # rebuild is often the cheaper way, which the adaptive choice would take instead
    # (test_stream_refresh_costs.py turns it on where it tests it).
    cluster.execute("ALTER SYSTEM SET pgtrickle.adaptive_refresh = off")
    cluster.execute("SELECT pg_reload_conf()")
    yield cluster
    subprocess.run([str(SCRIPTS / "cluster.sh"), "stop", str(base), version], check=False)
    # DUCKLAKE_KEEP_CLUSTERS=1 keeps the cluster's directory (and its server.log) for a look.
    if not os.environ.get("DUCKLAKE_KEEP_CLUSTERS"):
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def another_cluster(pg, scheduler=False, environment=None):
    """A second cluster of `pg`'s version with the extensions installed (the stream-table
    scheduler only when asked for); `environment`: more variables its server runs with."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ducklake-second-", dir="/tmp"))
    os.chmod(base, 0o777)
    port = free_port()
    env = dict(os.environ, DUCKLAKE_PRELOAD="ducklake_ivm" if scheduler else "", **(environment or {}))
    subprocess.run([str(SCRIPTS / "cluster.sh"), "start", str(base), str(port), pg.version], check=True, env=env)
    try:
        yield Cluster(pg.version, base, port)
    finally:
        subprocess.run([str(SCRIPTS / "cluster.sh"), "stop", str(base), pg.version], check=False)
        shutil.rmtree(base, ignore_errors=True)


def attach_remote_lake(conn, catalog_cluster, lake):
    """On `conn` (a database of another cluster, with ducklake_fdw), server `lake` and
    schema `lake` for `lake`'s catalog and data path, its tables imported."""
    conn.execute(f"CREATE SERVER lake FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 'analytics', "
                 f"catalog_connection 'host={catalog_cluster.base} port={catalog_cluster.port} "
                 f"dbname={lake.dbname} user=postgres', data_path '{lake.data_path}')")
    conn.execute("CREATE SCHEMA lake")
    conn.execute("IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake")


def kill_backend(pid):
    """SIGKILL one server backend. libpq reports pid 0 for a connection it already counts
    as lost, and os.kill(0, ...) would kill this process's whole group (the test run
    itself): refuse it."""
    assert pid > 0, "no backend to kill: the connection is already lost"
    os.kill(pid, signal.SIGKILL)
    # Until the postmaster reaps it (and so starts its crash restart), the cluster still
    # accepts connections that the restart then ends: wait_until_accepting would pass
    # too early.
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"backend {pid} was not reaped"
        time.sleep(0.01)


def wait_until_accepting(cluster, dbname="postgres", timeout=60):
    """After a backend crashed, the postmaster restarts every backend: wait until the
    cluster accepts connections again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.connect(dbname) as check:
                check.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Reference:
    """The reference DuckLake client, attached to a lake's catalog and data path."""

    def __init__(self, cluster, dbname, data_path, alias="analytics", metadata_schema=None, store_secret=None):
        """`store_secret`: (DuckDB extension, CREATE SECRET statement) of an object store."""
        self.alias = alias
        self.data_path = data_path
        # The files are the official ones the install copied; DuckDB's signature check
        # (a SHA-256 over 100 MB, about 0.15 s per client) verifies nothing a test needs.
        self.con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        for name in ("ducklake", "postgres_scanner", "icu") + ((store_secret[0],) if store_secret else ()):
            self.con.execute(f"LOAD '{cluster.extension_dir / (name + '.duckdb_extension')}'")
        if store_secret:
            self.con.execute(store_secret[1])
        self.con.execute("SET TimeZone = 'UTC'")
        schema = metadata_schema or f"__ducklake_metadata_{alias}"
        options = [f"METADATA_SCHEMA '{schema}'"]
        if data_path is not None:
            options.append(f"DATA_PATH '{data_path}'")
        self.con.execute(
            f"ATTACH 'ducklake:postgres:{cluster.dsn(dbname)}' AS {alias} ({', '.join(options)})"
        )
        self.con.execute(f"USE {alias}")

    def execute(self, sql, params=None):
        result = self.con.execute(sql, params or [])
        self._share_directories()
        return result

    def rows(self, sql, params=None):
        rows = self.con.execute(sql, params or []).fetchall()
        self._share_directories()
        return rows

    def _share_directories(self):
        """DuckDB creates directories 0755 whatever the umask: let the server's user
        write files next to the ones this (root) process wrote."""
        if self.data_path is None or "://" in self.data_path:
            return
        for directory, subdirectories, _ in os.walk(self.data_path):
            for path in [directory] + [os.path.join(directory, d) for d in subdirectories]:
                if os.stat(path).st_mode & 0o777 != 0o777:
                    os.chmod(path, 0o777)

    def close(self):
        self.con.close()


class Lake:
    """A fresh database with the extension, a `lake` server (catalog embedded in that
    database, data under a test directory) and the reference client on the same lake."""

    def __init__(self, cluster, dbname, data_path, server_options=None, mapping=None, store_secret=None):
        self.cluster = cluster
        self.dbname = dbname
        self.data_path = data_path
        self.store_secret = store_secret
        self.conn = cluster.connect(dbname)
        self.conn.execute("CREATE EXTENSION ducklake_fdw")
        options = {"catalog_name": "analytics", "data_path": data_path, **(server_options or {})}
        self.conn.execute(f"CREATE SERVER lake FOREIGN DATA WRAPPER ducklake OPTIONS ({option_list(options)})")
        if mapping:
            self.conn.execute(f"CREATE USER MAPPING FOR PUBLIC SERVER lake OPTIONS ({option_list(mapping)})")
        self.conn.execute("CREATE SCHEMA lake")
        self._ref = None

    @property
    def ref(self):
        if self._ref is None:
            self._ref = Reference(self.cluster, self.dbname, self.data_path, store_secret=self.store_secret)
        return self._ref

    def rows(self, sql, params=None):
        return self.conn.execute(sql, params).fetchall()

    def connect(self, **kw):
        return self.cluster.connect(self.dbname, **kw)

    def session(self):
        """The same lake through a connection of its own: its settings, prepared
        statements and temporary tables are its own. Closing it leaves the lake."""
        other = copy.copy(self)
        other.conn = self.cluster.connect(self.dbname)
        other.close = other.conn.close
        return other

    def import_schema(self, *tables):
        limit = f" LIMIT TO ({', '.join(tables)})" if tables else ""
        self.conn.execute(f"IMPORT FOREIGN SCHEMA main{limit} FROM SERVER lake INTO lake")

    def close(self):
        if self._ref is not None:
            self._ref.close()
        self.conn.close()


def option_list(options):
    """`name 'value', ...` of an OPTIONS clause."""
    return ", ".join(f"{name} '{value}'" for name, value in options.items())


def database_name(request):
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    return f"t_{base}_{uuid.uuid4().hex[:6]}"


def drop_database(cluster, dbname):
    """DROP DATABASE ... WITH (FORCE), which ends the database's sessions and waits five
    seconds for them to exit. A scheduler the launcher starts meanwhile (it keeps one
    running in every database) can still be connecting: try again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def new_lake(pg, request):
    """A Lake in a database of its own, dropped afterwards."""
    dbname = database_name(request)
    pg.execute(f'CREATE DATABASE "{dbname}"')
    data_path = pg.base / "lakes" / dbname
    data_path.mkdir(parents=True, mode=0o777)
    lk = Lake(pg, dbname, f"{data_path}/")
    try:
        yield lk
    finally:
        lk.close()
        drop_database(pg, dbname)
        shutil.rmtree(data_path, ignore_errors=True)


@pytest.fixture
def lake(pg, request):
    with new_lake(pg, request) as lk:
        yield lk


@pytest.fixture
def database(pg, request):
    """An empty database with the extension installed, for tests that set up their own servers."""
    dbname = database_name(request)
    pg.execute(f'CREATE DATABASE "{dbname}"')
    conn = pg.connect(dbname)
    conn.execute("CREATE EXTENSION ducklake_fdw")
    yield conn, dbname
    conn.close()
    drop_database(pg, dbname)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on loopback, with IAM authentication (see object_store.py)."""
    from object_store import S3Server
    server = S3Server(free_port())
    yield server
    server.stop()


@contextlib.contextmanager
def new_s3_lake(pg, request, s3, endpoint_server=None):
    """A Lake whose data path is `s3://<new bucket>/lake/`, reached with the keys of an
    IAM user allowed everything on that bucket (a user mapping FOR PUBLIC);
    `endpoint_server`: another S3Server of the same store to reach it through."""
    store = endpoint_server or s3
    bucket = s3.new_bucket()
    key_id, secret, user = s3.new_user("lake", ["s3:*"], [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"])
    data_path = f"s3://{bucket}/lake/"
    dbname = database_name(request)
    pg.execute(f'CREATE DATABASE "{dbname}"')
    lk = Lake(pg, dbname, data_path, server_options=store.server_options(),
              mapping={"key_id": key_id, "secret": secret},
              store_secret=("httpfs", store.secret_statement((key_id, secret), data_path)))
    lk.bucket, lk.s3_keys, lk.s3_user = bucket, (key_id, secret), user
    try:
        yield lk
    finally:
        lk.close()
        drop_database(pg, dbname)


@pytest.fixture
def s3_lake(pg, request, s3):
    with new_s3_lake(pg, request, s3) as lk:
        yield lk


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite's Blob Storage server on loopback (see object_store.py)."""
    from object_store import AzureServer
    server = AzureServer(free_port(), tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()
