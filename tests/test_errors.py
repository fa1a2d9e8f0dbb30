"""Bad input gets a clear Postgres ERROR with the right SQLSTATE, and the backend stays usable."""

import threading
import time

import psycopg
import pytest
from psycopg import errors


def expect_error(conn, sql, sqlstate, message):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, (caught.value.sqlstate, str(caught.value))
    assert message in str(caught.value), str(caught.value)
    return caught.value


def test_unknown_options(database):
    conn, _ = database
    expect_error(conn, "CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_conection 'x')",
                 "HV00D", 'invalid option "catalog_conection"')
    err = expect_error(conn, "CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS (password 'x')",
                       "HV024", 'invalid value for option "password"')
    assert "user mapping" in str(err)
    expect_error(conn, "CREATE SERVER s FOREIGN DATA WRAPPER ducklake "
                       "OPTIONS (catalog_connection 'postgresql://u:secret@h/db')",
                 "HV024", "must not contain a password")
    expect_error(conn, "CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS (data_path 'relative/dir')",
                 "HV024", "must be an absolute path")
    conn.execute("CREATE SERVER s FOREIGN DATA WRAPPER ducklake")
    err = expect_error(conn, "CREATE FOREIGN TABLE t (x int) SERVER s OPTIONS (tabel 'x')",
                       "HV00D", 'invalid option "tabel"')
    assert err.diag.message_hint == "Valid options in this context are: schema, table, snapshot_id, as_of, snapshot_id_setting, changes"
    expect_error(conn, "CREATE FOREIGN TABLE t (x int OPTIONS (colum_name 'y')) SERVER s",
                 "HV00D", 'invalid option "colum_name"')
    expect_error(conn, "CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (passwd 'x')",
                 "HV00D", 'invalid option "passwd"')
    expect_error(conn, "ALTER SERVER s OPTIONS (ADD metadata_schema '')", "HV024",
                 'invalid value for option "metadata_schema"')
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_lake_table(lake):
    lake.conn.execute("CREATE FOREIGN TABLE lake.nothing (x int) SERVER lake OPTIONS (table 'no_such_table')")
    expect_error(lake.conn, "SELECT * FROM lake.nothing", "HV00R",
                 'DuckLake table main.no_such_table does not exist on server "lake"')
    # the backend and the lake stay usable
    lake.ref.execute("CREATE TABLE t (x INTEGER)")
    lake.ref.execute("INSERT INTO t VALUES (1)")
    lake.import_schema("t")
    assert lake.rows("SELECT x FROM lake.t") == [(1,)]


def test_quotes_in_table_option_are_a_name(lake):
    lake.conn.execute("""CREATE FOREIGN TABLE lake.evil (x int) SERVER lake
                         OPTIONS (table 'x" ; SELECT 1 --')""")
    expect_error(lake.conn, "SELECT * FROM lake.evil", "HV00R", "does not exist")


def test_missing_lake_schema_on_import(lake):
    expect_error(lake.conn, "IMPORT FOREIGN SCHEMA nope FROM SERVER lake INTO lake", "HV000",
                 'schema "nope" does not exist in DuckLake catalog "analytics"')


def test_unreachable_catalog(database):
    conn, _ = database
    conn.execute("CREATE SERVER far FOREIGN DATA WRAPPER ducklake OPTIONS "
                 "(catalog_connection 'host=127.0.0.1 port=1 dbname=nope connect_timeout=2', "
                 "data_path '/tmp/ducklake-unreachable/')")
    conn.execute("CREATE FOREIGN TABLE t (x int) SERVER far")
    expect_error(conn, "SELECT * FROM t", "HV00N", 'could not attach DuckLake catalog of server "far"')
    assert conn.execute("SELECT 42").fetchone() == (42,)


def test_wrong_password_is_refused_and_never_shown(database, pg):
    conn, dbname = database
    conn.execute(f"CREATE SERVER pw FOREIGN DATA WRAPPER ducklake OPTIONS "
                 f"(catalog_connection 'host=127.0.0.1 port={pg.port} dbname={dbname}', "
                 f"data_path '{pg.base}/pw-lake/')")
    conn.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER pw OPTIONS (user 'lake_pw', password 'wrong-pass')")
    conn.execute("CREATE FOREIGN TABLE t (x int) SERVER pw")
    err = expect_error(conn, "SELECT * FROM t", "HV00N", 'could not attach DuckLake catalog of server "pw"')
    assert "password authentication failed" in str(err)
    assert "wrong-pass" not in str(err)
    # fixing the mapping re-attaches without reconnecting
    conn.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER pw OPTIONS (SET password 'right-password')")
    conn.execute("SELECT ducklake.execute('pw', 'CREATE TABLE t (x INTEGER)')")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_unmappable_types(lake):
    lake.ref.execute("CREATE TABLE odd (id INTEGER, v VARIANT)")
    expect_error(lake.conn, "IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake", "HV004",
                 'column "v" of main.odd has type VARIANT, which has no Postgres equivalent')
    lake.conn.execute("CREATE FOREIGN TABLE lake.pts (id int, p point) SERVER lake")
    expect_error(lake.conn, "SELECT ducklake.create_table('lake.pts')", "HV004",
                 'column "p" of pts has type point, which has no DuckLake equivalent')
    lake.conn.execute("CREATE FOREIGN TABLE lake.nums (id int, n numeric) SERVER lake")
    expect_error(lake.conn, "SELECT ducklake.create_table('lake.nums')", "HV004",
                 "numeric without precision")


def test_value_out_of_postgres_range(lake):
    lake.ref.execute("CREATE TABLE big (x BIGINT, d DATE)")
    lake.ref.execute("INSERT INTO big VALUES (3000000000, DATE '5881580-07-10')")
    lake.conn.execute("CREATE FOREIGN TABLE lake.small (x int) SERVER lake OPTIONS (table 'big')")
    expect_error(lake.conn, "SELECT x FROM lake.small", "22003", "out of range")
    lake.import_schema("big")
    expect_error(lake.conn, "SELECT d FROM lake.big", "22003",
                 'value of column "d" does not fit Postgres type date: date out of range')


def test_missing_duckdb_extension_file(database):
    conn, _ = database
    conn.execute("CREATE SERVER s FOREIGN DATA WRAPPER ducklake")
    conn.execute("SET ducklake.extension_directory = '/nonexistent/dir'")
    err = expect_error(conn, "SELECT ducklake.current_snapshot('s')", "58P01",
                       'DuckDB extension file "/nonexistent/dir/ducklake.duckdb_extension" is missing')
    assert "install-duckdb-extensions.sh" in err.diag.message_hint
    conn.execute("RESET ducklake.extension_directory")
    assert conn.execute("SELECT ducklake.current_snapshot('s')").fetchone() == (0,)


def test_unknown_server_in_functions(database):
    conn, _ = database
    expect_error(conn, "SELECT * FROM ducklake.snapshots('nope')", "42704", 'DuckLake server "nope" does not exist')


def test_statement_timeout_stops_duckdb(lake):
    """A long DuckDB call is interrupted by statement_timeout within about a second."""
    lake.conn.execute("SET statement_timeout = '300ms'")
    started = time.monotonic()
    expect_error(lake.conn, "SELECT ducklake.execute('lake', "
                            "'CREATE TEMP TABLE x AS SELECT count(*) FROM range(100000000000) a')",
                 "57014", "canceling statement due to statement timeout")
    assert time.monotonic() - started < 1.5
    lake.conn.execute("RESET statement_timeout")
    assert lake.rows("SELECT ducklake.current_snapshot('lake')") == [(0,)]


def test_cancel_stops_a_long_scan(lake):
    """pg_cancel_backend stops a scan of 30M rows (with a condition Postgres evaluates on
    every row) soon after the scan is seen running."""
    lake.ref.execute("CREATE TABLE huge AS SELECT range AS x FROM range(30000000)")
    lake.import_schema("huge")
    pid = lake.conn.info.backend_pid
    canceled_at = []

    def cancel_when_running():
        with lake.connect() as other:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = other.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                if state and state[0] == "active" and "lake.huge" in state[1]:
                    break
                time.sleep(0.01)
            time.sleep(0.2)  # let it get into the scan
            other.execute("SELECT pg_cancel_backend(%s)", (pid,))
            # Once the signal is sent: on a loaded machine this connection's own query
            # can take longer than the cancelled scan needs to stop.
            canceled_at.append(time.monotonic())

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    with pytest.raises(errors.QueryCanceled):
        lake.conn.execute("SELECT count(*) FROM lake.huge WHERE x::text LIKE '%9%9%9%9%9%'")
    stopped_at = time.monotonic()
    canceller.join()
    assert canceled_at, "the scan was never seen running"
    assert stopped_at - canceled_at[0] < 1.0
    assert lake.rows("SELECT count(*) FROM lake.huge WHERE x < 10") == [(10,)]


def test_unreachable_data_path(lake, pg):
    """Data files that cannot be read give a clear error, and the backend stays usable."""
    lake.ref.execute("CREATE TABLE t AS SELECT range AS x FROM range(5000)")
    lake.import_schema("t")
    assert lake.rows("SELECT count(*) FROM lake.t") == [(5000,)]
    moved = lake.data_path.rstrip("/") + "-moved"
    import os
    os.rename(lake.data_path, moved)
    try:
        with pytest.raises(psycopg.Error) as caught:
            lake.conn.execute("SELECT sum(x) FROM lake.t")
        assert caught.value.sqlstate == "HV000", str(caught.value)
        assert "No such file or directory" in str(caught.value) or "does not exist" in str(caught.value)
        assert lake.rows("SELECT 1") == [(1,)]
    finally:
        os.rename(moved, lake.data_path)
    assert lake.rows("SELECT sum(x) FROM lake.t") == [(sum(range(5000)),)]
    # a data path the server cannot create
    lake.conn.execute("CREATE SERVER nowhere FOREIGN DATA WRAPPER ducklake "
                      "OPTIONS (catalog_name 'nowhere', data_path '/proc/no-such-dir/')")
    expect_error(lake.conn, "SELECT ducklake.current_snapshot('nowhere')", "HV00N",
                 'could not attach DuckLake catalog of server "nowhere": cannot create data path /proc/no-such-dir/')
