"""DuckDB runs as the server's OS user; nothing outside the lake's data path may be read
through it, and credentials stay hidden."""

import psycopg
import pytest


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
