"""DuckDB runs as the server's OS user; nothing outside the lake's data path may be read
through it, and credentials stay hidden."""

import psycopg
import pytest

from roles import new_role


def test_duckdb_cannot_read_server_files(lake):
    with pytest.raises(psycopg.Error) as caught:
        lake.conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE x AS SELECT * FROM read_csv(''/etc/passwd'')')")
    assert "file system operations are disabled by configuration" in str(caught.value)
    with pytest.raises(psycopg.Error) as caught:
        lake.conn.execute("SELECT ducklake.execute('lake', 'SET enable_external_access = true')")
    assert "configuration has been locked" in str(caught.value)
    with pytest.raises(psycopg.Error) as caught:
        lake.conn.execute("SELECT ducklake.execute('lake', 'INSTALL httpfs')")


def test_non_owner_cannot_run_duckdb_sql(lake):
    lake.conn.execute("CREATE ROLE analyst LOGIN")
    lake.conn.execute("GRANT USAGE ON SCHEMA lake TO analyst")
    with lake.connect() as conn:
        conn.execute("SET ROLE analyst")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE t (x INTEGER)')")
        assert caught.value.sqlstate == "42501"
        assert "must be owner of foreign server lake" in str(caught.value)


def test_other_users_credentials_are_hidden(lake):
    lake.conn.execute("CREATE ROLE analyst2 LOGIN")
    lake.conn.execute("CREATE USER MAPPING FOR postgres SERVER lake OPTIONS (user 'postgres', password 'topsecret')")
    with lake.connect() as conn:
        conn.execute("SET ROLE analyst2")
        rows = conn.execute("SELECT umoptions FROM pg_user_mappings WHERE srvname = 'lake'").fetchall()
        assert rows == [(None,)]


def error_of(conn, sql, params=None):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    return caught.value


@pytest.fixture
def lake_admin(database, pg):
    """A role that is not a superuser but may create DuckLake servers (USAGE on the
    wrapper), connected to a database of its own; `allowed` is a directory a superuser
    lets such servers keep data in."""
    conn, dbname = database
    role = new_role(conn, "lakeadmin")
    conn.execute(f"GRANT USAGE ON FOREIGN DATA WRAPPER ducklake TO {role}")
    conn.execute(f"GRANT CREATE ON DATABASE \"{dbname}\" TO {role}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    allowed = pg.base / "lakes" / f"allowed_{role}"
    allowed.mkdir(parents=True, mode=0o777)
    session = pg.connect(dbname, user=role)
    yield session, role, dbname, str(allowed)
    session.close()


def test_non_superusers_keep_data_under_allowed_paths(lake_admin, pg):
    """The issue's attack: USAGE on the wrapper, a server whose data path is the cluster's
    data directory, and read_text of postgresql.conf through it."""
    session, role, dbname, allowed = lake_admin
    err = error_of(session, f"CREATE SERVER leak FOREIGN DATA WRAPPER ducklake OPTIONS (data_path '{pg.data_directory}')")
    assert err.sqlstate == "42501"
    assert err.diag.message_primary.startswith(
        f'data path "{pg.data_directory}/" is not under ducklake.allowed_data_paths (none is set)')
    # the embedded default lies in the data directory too
    assert error_of(session, "CREATE SERVER leak FOREIGN DATA WRAPPER ducklake").sqlstate == "42501"
    assert error_of(session, "CREATE SERVER leak FOREIGN DATA WRAPPER ducklake "
                             f"OPTIONS (data_path '{allowed}/../../..')").sqlstate == "HV024"
    # a superuser allows a directory (here for this session; ALTER ROLE ... SET for good)
    with pg.connect(dbname) as admin:
        admin.execute(f"ALTER ROLE {role} SET ducklake.allowed_data_paths = '{allowed}'")
    with pg.connect(dbname, user=role) as session:
        session.execute(f"CREATE SERVER mine FOREIGN DATA WRAPPER ducklake OPTIONS (data_path '{allowed}/mine')")
        session.execute("SELECT ducklake.execute('mine', 'CREATE TABLE t AS SELECT 42 AS x')")
        session.execute("CREATE FOREIGN TABLE t (x int) SERVER mine")
        assert session.execute("SELECT x FROM t").fetchall() == [(42,)]
        err = error_of(session, "SELECT ducklake.execute('mine', "
                                f"'CREATE TABLE leak AS SELECT content FROM read_text(''{pg.data_directory}/postgresql.conf'')')")
        assert "file system operations are disabled by configuration" in str(err) or "Permission" in str(err), str(err)
        # a setting a role cannot change for itself
        assert error_of(session, "SET ducklake.allowed_data_paths = '/'").sqlstate == "42501"
    # a server a superuser made, handed to the role, is held to the same rule when used
    with pg.connect(dbname) as admin:
        admin.execute(f"CREATE SERVER handed FOREIGN DATA WRAPPER ducklake OPTIONS (data_path '{pg.data_directory}')")
        admin.execute(f"ALTER SERVER handed OWNER TO {role}")
    with pg.connect(dbname, user=role) as session:
        err = error_of(session, "SELECT ducklake.current_snapshot('handed')")
        assert err.sqlstate == "42501" and "is not under ducklake.allowed_data_paths" in str(err)


def test_a_data_path_recorded_in_a_catalog_is_held_to_the_rule(lake_admin, pg):
    session, role, dbname, allowed = lake_admin
    with pg.connect(dbname) as admin:
        admin.execute(f"ALTER ROLE {role} SET ducklake.allowed_data_paths = '{allowed}'")
        # a lake whose catalog records a data path outside the allowed directory
        admin.execute(f"CREATE SERVER outside FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 'outside', "
                      f"data_path '{pg.base}/lakes/outside_{role}')")
        admin.execute("SELECT ducklake.execute('outside', 'CREATE TABLE t AS SELECT 1 AS x')")
    with pg.connect(dbname, user=role) as session:
        # the role reaches that catalog over TCP with a password, and names no data path
        session.execute(f"CREATE SERVER theirs FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 'outside', "
                        f"catalog_connection 'host=127.0.0.1 port={pg.port} dbname={dbname}')")
        session.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER theirs "
                        "OPTIONS (user 'lake_pw', password 'right-password')")
        err = error_of(session, "SELECT ducklake.current_snapshot('theirs')")
        assert err.sqlstate == "42501", str(err)
        assert f'data path "{pg.base}/lakes/outside_{role}/" of server "theirs" is not under' in str(err)


def test_non_superusers_authenticate_to_the_catalog_with_a_password(lake_admin, pg):
    """The role's server names `user=postgres`; without a password checked by the
    catalog's server DuckDB would connect as the superuser (trust over the socket)."""
    session, role, dbname, allowed = lake_admin
    with pg.connect(dbname) as admin:
        admin.execute(f"ALTER ROLE {role} SET ducklake.allowed_data_paths = '{allowed}'")
    with pg.connect(dbname, user=role) as session:
        session.execute(f"CREATE SERVER su FOREIGN DATA WRAPPER ducklake OPTIONS (data_path '{allowed}/su', "
                        f"catalog_connection 'host={pg.base} port={pg.port} dbname={dbname} user=postgres')")
        err = error_of(session, "SELECT ducklake.current_snapshot('su')")
        assert err.sqlstate == "2F003"
        assert err.diag.message_primary == 'password is required to connect to the catalog of server "su"'
        assert "CREATE USER MAPPING" in err.diag.message_hint
        # a password the trusting server never asks for proves nothing
        session.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER su OPTIONS (user 'postgres', password 'guess')")
        err = error_of(session, "SELECT ducklake.current_snapshot('su')")
        assert err.sqlstate == "2F003", str(err)
        assert "did not ask for the password" in err.diag.message_primary
        assert "guess" not in str(err)
        # a role that authenticates with its password works, and owns what it creates
        session.execute("ALTER USER MAPPING FOR CURRENT_USER SERVER su OPTIONS "
                        "(SET user 'lake_pw', SET password 'right-password')")
        session.execute(f"ALTER SERVER su OPTIONS (SET catalog_connection 'host=127.0.0.1 port={pg.port} dbname={dbname}')")
        session.execute("SELECT ducklake.execute('su', 'CREATE TABLE t AS SELECT 1 AS x')")
    with pg.connect(dbname) as admin:
        owners = admin.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = '__ducklake_metadata_su'")
        assert owners.fetchall() == [("lake_pw",)]
    # options that make libpq read the server's files are not for non-superusers
    with pg.connect(dbname, user=role) as session:
        err = error_of(session, f"CREATE SERVER files FOREIGN DATA WRAPPER ducklake OPTIONS (data_path '{allowed}/f', "
                                "catalog_connection 'host=h passfile=/var/lib/postgresql/.pgpass')")
        assert err.sqlstate == "42501" and "names a file of the server (passfile)" in str(err)


def test_catalog_names_cannot_leave_the_data_directory(database):
    conn, _ = database
    for name in ["../..", "a/b", ".."]:
        err = error_of(conn, f"CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name '{name}')")
        assert err.sqlstate == "HV024" and f'"{name}" is not a valid catalog name' in str(err)


def test_databases_not_in_utf8_are_refused(pg):
    pg.execute("CREATE DATABASE latin1_db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        with pg.connect("latin1_db") as conn:
            conn.execute("CREATE EXTENSION ducklake_fdw")
            err = error_of(conn, "CREATE SERVER s FOREIGN DATA WRAPPER ducklake")
            assert err.sqlstate == "0A000"
            assert "need a database with encoding UTF8; this database uses LATIN1" in str(err)
    finally:
        pg.execute("DROP DATABASE latin1_db WITH (FORCE)")


def test_replay_memory_is_a_superuser_setting(lake):
    role = new_role(lake.conn, "greedy")
    with lake.connect() as conn:
        conn.execute("LOAD 'ducklake_fdw'")
        conn.execute(f"SET ROLE {role}")
        err = error_of(conn, "SET ducklake.savepoint_replay_memory = '2TB'")
        assert err.sqlstate == "42501"


def test_embedded_lakes_of_two_databases_never_share_files(pg, database):
    """Two databases, each with an embedded lake of the same name: separate directories,
    so unreferenced-file cleanup in one never deletes the other's data."""
    conn, dbname = database
    pg.execute("CREATE DATABASE twin_db")
    try:
        with pg.connect("twin_db") as twin:
            twin.execute("CREATE EXTENSION ducklake_fdw")
            for c in (conn, twin):
                c.execute("CREATE SERVER lake FOREIGN DATA WRAPPER ducklake")
                c.execute("SELECT ducklake.execute('lake', 'CREATE TABLE t AS SELECT range AS x FROM range(5000)')")
            paths = {c.execute("SELECT value FROM __ducklake_metadata_lake.ducklake_metadata WHERE key = 'data_path'")
                     .fetchone()[0] for c in (conn, twin)}
            assert len(paths) == 2
            twin.execute("SELECT * FROM ducklake.maintain('lake', older_than => '0 seconds')")
            conn.execute("CREATE FOREIGN TABLE t (x bigint) SERVER lake")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (5000,)
    finally:
        pg.execute("DROP DATABASE twin_db WITH (FORCE)")
