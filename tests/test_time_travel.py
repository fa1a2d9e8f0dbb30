"""Reading a lake table as of a snapshot id or a time: per session, per transaction,
per foreign table; deterministic; a snapshot that does not exist is an error."""

import psycopg
import pytest


@pytest.fixture
def history(lake):
    """Snapshots: 1 creates the table, 2..4 insert 10, 20, 30 rows, 5 deletes id < 5."""
    lake.ref.execute("CREATE TABLE events (id BIGINT, value BIGINT)")
    for start, count in [(0, 10), (10, 20), (30, 30)]:
        lake.ref.execute(f"INSERT INTO events SELECT i, i * 10 FROM range({start}, {start + count}) t(i)")
    lake.ref.execute("DELETE FROM events WHERE id < 5")
    lake.import_schema("events")
    return lake


def counts(lake, query="SELECT count(*), coalesce(sum(value), 0) FROM lake.events"):
    return lake.rows(query)[0]


def test_snapshot_id_setting(history):
    expected = {1: (0, 0), 2: (10, 450), 3: (30, 4350), 4: (60, 17700), 5: (55, 17600)}
    for snapshot, result in expected.items():
        history.conn.execute(f"SET ducklake.snapshot_id = '{snapshot}'")
        assert counts(history) == result
        # the same snapshot always returns the same rows (also without aggregate pushdown)
        rows = history.rows("SELECT id, value FROM lake.events ORDER BY id")
        assert rows == history.rows("SELECT id, value FROM lake.events ORDER BY id")
        assert len(rows) == result[0]
    history.conn.execute("RESET ducklake.snapshot_id")
    assert counts(history) == (55, 17600)


def test_set_local_pins_one_transaction(history):
    with history.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL ducklake.snapshot_id = '2'")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (10,)
        conn.commit()
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (55,)


def test_as_of_time(history):
    times = history.rows("SELECT snapshot_id, snapshot_time FROM ducklake.snapshots('lake') ORDER BY 1")
    snapshot_3_time = times[3][1]
    history.conn.execute("SET TimeZone = 'America/New_York'")
    history.conn.execute(f"SET ducklake.as_of = '{snapshot_3_time.isoformat()}'")
    assert counts(history) == (30, 4350)
    history.conn.execute("RESET ducklake.as_of")
    assert counts(history) == (55, 17600)


def test_table_options_pin_a_snapshot(history):
    history.conn.execute("CREATE FOREIGN TABLE lake.events_v3 (id bigint, value bigint) SERVER lake "
                         "OPTIONS (table 'events', snapshot_id '3')")
    assert counts(history, "SELECT count(*), sum(value) FROM lake.events_v3") == (30, 4350)
    # the table's own pin wins over the session setting
    history.conn.execute("SET ducklake.snapshot_id = '2'")
    assert counts(history, "SELECT count(*), sum(value) FROM lake.events_v3") == (30, 4350)
    assert counts(history) == (10, 450)
    # a time-travel join: rows deleted since snapshot 3
    history.conn.execute("RESET ducklake.snapshot_id")
    assert history.rows("SELECT v.id FROM lake.events_v3 v LEFT JOIN lake.events e USING (id) "
                        "WHERE e.id IS NULL ORDER BY 1") == [(0,), (1,), (2,), (3,), (4,)]


def test_a_table_pinned_by_the_snapshot_a_setting_holds(history):
    """Option snapshot_id_setting: the snapshot in a custom setting when the scan
    starts (stream tables read their sources as of the frontier this way)."""
    conn = history.conn
    conn.execute("CREATE FOREIGN TABLE lake.events_then (id bigint, value bigint) SERVER lake "
                 "OPTIONS (table 'events', snapshot_id_setting 'myapp.snapshot')")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue) as error:
        conn.execute("SELECT count(*) FROM lake.events_then")
    assert error.value.diag.message_primary == ('invalid value for option "snapshot_id_setting": '
                                                'setting "myapp.snapshot" is not set in this session')
    # EXPLAIN without running shows the setting it follows
    plan = "\n".join(r[0] for r in history.rows("EXPLAIN (VERBOSE, COSTS OFF) SELECT count(*) FROM lake.events_then"))
    assert "AT (VERSION => <setting myapp.snapshot>)" in plan, plan
    conn.execute("SET myapp.snapshot = '3'")
    assert counts(history, "SELECT count(*), sum(value) FROM lake.events_then") == (30, 4350)
    # in one pushed query with the table as it is now: the rows deleted since
    assert history.rows("SELECT t.id FROM lake.events_then t LEFT JOIN lake.events e USING (id) "
                        "WHERE e.id IS NULL ORDER BY 1") == [(0,), (1,), (2,), (3,), (4,)]
    # a prepared statement reads the setting when it runs
    conn.execute("PREPARE then_count AS SELECT count(*) FROM lake.events_then")
    conn.execute("SET myapp.snapshot = '2'")
    assert history.rows("EXECUTE then_count") == [(10,)]
    conn.execute("SET myapp.snapshot = 'latest'")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue) as error:
        conn.execute("EXECUTE then_count")
    assert error.value.diag.message_primary == ('invalid value for option "snapshot_id_setting": setting '
                                                '"myapp.snapshot": "latest" is not a snapshot id (a non-negative integer)')
    # a JSON object pins each server's lake: this table's server must be named
    conn.execute("""SET myapp.snapshot = '{"lake": 3, "elsewhere": 1}'""")
    assert history.rows("EXECUTE then_count") == [(30,)]
    conn.execute("""SET myapp.snapshot = '{"elsewhere": 1}'""")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue) as error:
        conn.execute("EXECUTE then_count")
    assert error.value.diag.message_primary == ('invalid value for option "snapshot_id_setting": setting '
                                                '"myapp.snapshot" pins no snapshot of server "lake"')
    conn.execute("SET myapp.snapshot = '2'")
    # pinned: never written to
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute("INSERT INTO lake.events_then VALUES (1, 1)")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute("UPDATE lake.events_then SET value = 0")
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue) as error:
        conn.execute("ALTER FOREIGN TABLE lake.events_then OPTIONS (ADD snapshot_id '2')")
        conn.execute("SELECT count(*) FROM lake.events_then")
    assert "also has option snapshot_id or as_of" in error.value.diag.message_primary
    with pytest.raises(psycopg.errors.FdwInvalidAttributeValue) as error:
        conn.execute("CREATE FOREIGN TABLE lake.bad (id bigint) SERVER lake OPTIONS (snapshot_id_setting 'nodot')")
    assert "must name a custom setting" in error.value.diag.message_primary


def test_the_setting_pins_each_server_by_name(history):
    """ducklake.snapshot_id as a JSON object: a snapshot per server (lakes' snapshot ids
    are separate sequences); a server it does not name reads its latest snapshot."""
    conn = history.conn
    conn.execute("""SET ducklake.snapshot_id = '{"lake": 3}'""")
    assert counts(history) == (30, 4350)
    conn.execute("""SET ducklake.snapshot_id = '{"other lake": 3}'""")
    assert counts(history) == counts(history, "SELECT count(*), sum(value) FROM lake.events") == (55, 17600)
    conn.execute("""SET ducklake.snapshot_id = '{"lake": 2, "other lake": 3}'""")
    assert counts(history) == (10, 450)
    for pin, message in [
        ('{"lake": -1}', 'server "lake": -1 is not a snapshot id (a non-negative integer)'),
        ('{"lake": "3"}', 'server "lake": "3" is not a snapshot id (a non-negative integer)'),
        ('{"lake": 3', '"{"lake": 3" is neither a snapshot id nor a JSON object of snapshot ids by server name'),
    ]:
        conn.execute("SELECT set_config('ducklake.snapshot_id', %s, false)", [pin])
        expect_error(conn, "SELECT count(*) FROM lake.events", "HV024", message)
    conn.execute("RESET ducklake.snapshot_id")


def test_prepared_statement_follows_the_setting(history):
    history.conn.execute("PREPARE c AS SELECT count(*) FROM lake.events")
    history.conn.execute("SET ducklake.snapshot_id = '3'")
    assert history.rows("EXECUTE c") == [(30,)]
    history.conn.execute("SET ducklake.snapshot_id = '4'")
    assert history.rows("EXECUTE c") == [(60,)]


def expect_error(conn, sql, sqlstate, message):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, str(caught.value)
    assert message in str(caught.value)


def test_missing_snapshot_is_an_error(history):
    history.conn.execute("SET ducklake.snapshot_id = '999'")
    expect_error(history.conn, "SELECT count(*) FROM lake.events", "22023", "No snapshot found at version 999")
    history.conn.execute("SET ducklake.snapshot_id = 'latest'")
    expect_error(history.conn, "SELECT count(*) FROM lake.events", "HV024",
                 '"latest" is not a snapshot id (a non-negative integer)')
    history.conn.execute("RESET ducklake.snapshot_id")
    history.conn.execute("SET ducklake.as_of = '2000-01-01 00:00:00+00'")
    expect_error(history.conn, "SELECT count(*) FROM lake.events", "22023", "No snapshot found at timestamp")
    history.conn.execute("SET ducklake.snapshot_id = '2'")
    expect_error(history.conn, "SELECT count(*) FROM lake.events", "HV024", "set only one")
    history.conn.execute("RESET ducklake.snapshot_id")
    history.conn.execute("RESET ducklake.as_of")
    expect_error(history.conn, "CREATE FOREIGN TABLE lake.bad (id bigint) SERVER lake OPTIONS (snapshot_id '-1')",
                 "HV024", "must be a snapshot id")
    assert counts(history) == (55, 17600)
