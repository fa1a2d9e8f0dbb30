"""INSERT through the foreign tables: values round-trip with the reference client, one
DuckLake snapshot per Postgres transaction, nothing on rollback."""

import datetime
import io
import pathlib
import subprocess
import uuid
from decimal import Decimal

import psycopg
import pytest

from compare import assert_same_rows

EVENTS = ("CREATE TABLE events (event_id UUID, event_type VARCHAR NOT NULL, value BIGINT, "
          "amount DECIMAL(12,3), created_at TIMESTAMPTZ, tags VARCHAR[], payload JSON)")


@pytest.fixture
def events(lake):
    lake.ref.execute(EVENTS)
    lake.import_schema("events")
    return lake


def snapshot_count(lake):
    return lake.rows("SELECT count(*) FROM ducklake.snapshots('lake')")[0][0]


def test_insert_values_round_trip(events):
    before = snapshot_count(events)
    events.conn.execute("""INSERT INTO lake.events VALUES
        ('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'click', 1, 12.345, '2025-01-06 10:00:00.123456+00',
         ARRAY['a', NULL, 'it''s'], '{"k": [1, 2]}'),
        (NULL, 'view', NULL, NULL, NULL, NULL, NULL),
        (gen_random_uuid(), 'purchase', -9223372036854775808, -999999999.999, 'infinity', '{}', 'null')""")
    assert snapshot_count(events) == before + 1
    duck = events.ref.rows("SELECT event_type, event_id, value, amount, created_at, tags, payload "
                           "FROM events ORDER BY event_type")
    with events.conn.cursor(binary=True) as cur:
        pg = cur.execute("SELECT event_type, event_id, value, amount, created_at, tags, payload "
                         "FROM lake.events WHERE event_type <> 'purchase' ORDER BY event_type").fetchall()
    assert_same_rows(pg, [r for r in duck if r[0] != "purchase"], json_columns={6})
    assert duck[0][:4] == ("click", uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 1, Decimal("12.345"))
    assert duck[0][4] == datetime.datetime(2025, 1, 6, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert events.rows("SELECT value, amount, created_at::text, tags FROM lake.events WHERE event_type = 'purchase'") == [
        (-9223372036854775808, Decimal("-999999999.999"), "infinity", [])]


def test_insert_select_is_one_snapshot(events):
    before = snapshot_count(events)
    events.conn.execute("INSERT INTO lake.events (event_id, event_type, value, created_at) "
                        "SELECT gen_random_uuid(), 'bulk', g, now() FROM generate_series(1, 250000) g")
    assert snapshot_count(events) == before + 1
    assert events.ref.rows("SELECT count(*), sum(value), count(DISTINCT event_id) FROM events") == [
        (250000, 250000 * 250001 // 2, 250000)]
    files = events.ref.rows("SELECT count(*) FROM ducklake_list_files('analytics', 'events')")[0][0]
    assert 1 <= files <= 4


def test_transaction_sees_its_writes_and_commits_once(events):
    before = snapshot_count(events)
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'b', g FROM generate_series(1, 100) g")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (101,)
        assert events.ref.rows("SELECT count(*) FROM events") == [(0,)]  # not visible outside yet
        conn.commit()
    assert events.ref.rows("SELECT count(*) FROM events") == [(101,)]
    assert snapshot_count(events) == before + 1


def test_many_small_statements_in_one_transaction_are_one_snapshot(events):
    # The first 64 wait for the commit; the rest are applied as they come.
    before = snapshot_count(events)
    with events.connect(autocommit=False) as conn:
        for i in range(100):
            conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('one', %s)", (i,))
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'many', g FROM generate_series(1, 40000) g")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('last', 0)")
        conn.commit()
    assert snapshot_count(events) == before + 1
    assert events.ref.rows("SELECT event_type, count(*), sum(value) FROM events GROUP BY ALL ORDER BY ALL") == [
        ("last", 1, 0), ("many", 40000, 40000 * 40001 // 2), ("one", 100, 4950)]


def test_rollback_and_errors_write_nothing(events):
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        conn.rollback()
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        conn.rollback()
    with pytest.raises(psycopg.Error):
        events.conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'x', 10 / (5 - g) "
                            "FROM generate_series(1, 10) g")
    assert events.ref.rows("SELECT count(*) FROM events") == [(0,)]
    assert events.rows("SELECT count(*) FROM lake.events") == [(0,)]


def test_rolled_back_savepoint_undoes_its_writes(events):
    """Writes made inside a savepoint wait in their staging tables until the lake is next
    used (or the transaction commits); rolling the savepoint back before that drops them."""
    events.conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'old', g FROM generate_series(1, 5) g")
    before = snapshot_count(events)
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('kept', 10)")
        conn.execute("SAVEPOINT s")
        # (a statement that reads the lake applies the writes deferred before it, so
        # the UPDATE, which scans, comes first)
        conn.execute("UPDATE lake.events SET event_type = 'undone' WHERE value = 1 AND random() >= 0")  # row by row
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'undone', g FROM generate_series(100, 199) g")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        # one DuckDB statement each (counted now, applied later): undone as well
        conn.execute("SAVEPOINT d")
        assert conn.execute("DELETE FROM lake.events WHERE value <= 3").rowcount == 3
        conn.execute("ROLLBACK TO SAVEPOINT d")
        conn.execute("SAVEPOINT u")
        assert conn.execute("UPDATE lake.events SET event_type = 'undone' WHERE value BETWEEN 4 AND 5").rowcount == 2
        conn.execute("ROLLBACK TO SAVEPOINT u")
        # nested: the inner savepoint's insert is undone, the outer one's is kept
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('outer', 20)")
        conn.execute("SAVEPOINT b")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('inner', 30)")
        conn.execute("ROLLBACK TO SAVEPOINT b")
        conn.execute("RELEASE SAVEPOINT a")
        # an exception block (a subtransaction) that wrote, then failed
        conn.execute("""DO $$ BEGIN
            DELETE FROM lake.events WHERE value = 2 AND random() >= 0;
            INSERT INTO lake.events (event_type, value) VALUES ('in block', 40);
            RAISE EXCEPTION 'give up';
        EXCEPTION WHEN raise_exception THEN NULL; END $$""")
        assert conn.execute("SELECT event_type, value FROM lake.events WHERE value >= 10 ORDER BY value").fetchall() \
            == [("kept", 10), ("outer", 20)]
        conn.commit()
    assert events.ref.rows("SELECT event_type, value FROM events ORDER BY value") == [
        ("old", 1), ("old", 2), ("old", 3), ("old", 4), ("old", 5), ("kept", 10), ("outer", 20)]
    assert snapshot_count(events) == before + 1


def test_rolled_back_savepoint_after_its_write_was_applied_keeps_the_rest(events):
    """Reading the lake applies a savepoint's deferred write to the DuckDB transaction,
    which has no savepoints; rolling the savepoint back restarts that transaction and
    replays the writes made before the savepoint, on the same snapshot."""
    events.conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'old', g FROM generate_series(1, 5) g")
    before = snapshot_count(events)
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('kept', 10)")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('undone', 20)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (7,)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        assert conn.execute("SELECT event_type, value FROM lake.events WHERE value >= 10").fetchall() \
            == [("kept", 10)]
        # every kind of write before the savepoint is replayed, in order: a large INSERT
        # (applied at once), one-statement UPDATE and DELETE (of rows this transaction
        # inserted, and of committed rows), a row-by-row UPDATE, lake DDL
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'big', g FROM generate_series(100, 40099) g")
        assert conn.execute("UPDATE lake.events SET event_type = 'updated' WHERE value = 5").rowcount == 1
        assert conn.execute("DELETE FROM lake.events WHERE value BETWEEN 100 AND 119").rowcount == 20
        assert conn.execute("DELETE FROM lake.events WHERE value = 1").rowcount == 1
        assert conn.execute("UPDATE lake.events SET event_type = 'updated' "
                            "WHERE value BETWEEN 3 AND 4 AND random() >= 0").rowcount == 2
        conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE replayed (a INTEGER)')")
        conn.execute("SAVEPOINT t")
        conn.execute("DELETE FROM lake.events WHERE value >= 100")
        conn.execute("UPDATE lake.events SET event_type = 'undone' WHERE value = 2")
        conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE undone (a INTEGER)')")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (5,)
        conn.execute("ROLLBACK TO SAVEPOINT t")
        # an exception block that wrote and read, then failed
        conn.execute("""DO $$ BEGIN
            INSERT INTO lake.events (event_type, value) VALUES ('in block', 30);
            PERFORM count(*) FROM lake.events;
            RAISE EXCEPTION 'give up';
        EXCEPTION WHEN raise_exception THEN NULL; END $$""")
        query = ("SELECT event_type, count(*), sum(value) FROM lake.events "
                 "GROUP BY event_type ORDER BY event_type")
        expected = [("big", 39980, sum(range(120, 40100))), ("kept", 1, 10), ("old", 1, 2),
                    ("updated", 3, 3 + 4 + 5)]
        assert conn.execute(query).fetchall() == expected
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('after', 40)")
        conn.commit()
    assert events.ref.rows(query.replace("lake.events", "events")) == [("after", 1, 40)] + expected
    assert snapshot_count(events) == before + 1
    assert events.ref.rows("SELECT table_name FROM duckdb_tables() WHERE database_name = 'analytics' "
                           "ORDER BY 1") == [("events",), ("replayed",)]


def test_savepoint_rolled_back_after_another_session_committed_is_a_serialization_failure(events):
    """The writes before the savepoint were made on the snapshot the transaction read;
    replaying them on a newer one could change other rows than the statements reported."""
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('mine', 1)")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('undone', 2)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (2,)
        events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('other', 3)")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.errors.SerializationFailure) as caught:
            conn.execute("SELECT count(*) FROM lake.events")
        assert "undid part of this transaction's writes to DuckLake server \"lake\"" in str(caught.value)
        assert "another session has committed since" in str(caught.value)
        conn.rollback()
        # the retry succeeds
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('mine', 1)")
        conn.commit()
    assert events.ref.rows("SELECT event_type, value FROM events ORDER BY value") == [("mine", 1), ("other", 3)]


def test_lake_that_cannot_replay_fails_the_commit_before_another_lake_commits(events):
    """Two lakes in one transaction: when one cannot replay its writes after a savepoint
    rollback (another session committed to it), the commit fails with 40001 and the
    other lake's writes are not committed either."""
    side_path = pathlib.Path(events.data_path.rstrip("/") + "_side")
    side_path.mkdir(mode=0o777)
    events.conn.execute(f"CREATE SERVER side FOREIGN DATA WRAPPER ducklake "
                        f"OPTIONS (catalog_name 'side', data_path '{side_path}/')")
    events.conn.execute("SELECT ducklake.execute('side', 'CREATE TABLE t (a INTEGER)')")
    events.conn.execute("CREATE SCHEMA side")
    events.conn.execute("IMPORT FOREIGN SCHEMA main FROM SERVER side INTO side")
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('not committed', 1)")
        conn.execute("INSERT INTO side.t VALUES (1)")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO side.t VALUES (2)")
        assert conn.execute("SELECT count(*) FROM side.t").fetchone() == (2,)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        events.conn.execute("INSERT INTO side.t VALUES (100)")
        conn.execute("SAVEPOINT x")
        with pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute("SELECT count(*) FROM side.t")
        conn.execute("ROLLBACK TO SAVEPOINT x")
        with pytest.raises(psycopg.errors.SerializationFailure) as caught:
            conn.commit()
        assert "another session has committed since" in str(caught.value)
        # both lakes are usable in the next transaction
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('retried', 2)")
        conn.execute("INSERT INTO side.t VALUES (3)")
        conn.commit()
    assert events.rows("SELECT event_type FROM lake.events") == [("retried",)]
    assert events.rows("SELECT a FROM side.t ORDER BY a") == [(3,), (100,)]


def test_savepoint_rollback_beyond_the_replay_memory_dooms_the_transaction(events):
    with events.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL ducklake.savepoint_replay_memory = '1MB'")
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'big', g FROM generate_series(1, 100000) g")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('undone', 0)")
        conn.execute("SELECT count(*) FROM lake.events")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT count(*) FROM lake.events")
        assert caught.value.sqlstate == "25P02"
        assert "outgrew ducklake.savepoint_replay_memory (1024 kB)" in str(caught.value)
        conn.rollback()
    assert events.ref.rows("SELECT count(*) FROM events") == [(0,)]
    # a savepoint that did not write is harmless, whatever the memory
    with events.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL ducklake.savepoint_replay_memory = 0")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('kept', 1)")
        conn.execute("SAVEPOINT s")
        conn.execute("SELECT count(*) FROM lake.events")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("SAVEPOINT t")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('kept too', 2)")
        conn.execute("RELEASE SAVEPOINT t")
        conn.commit()
    assert events.ref.rows("SELECT event_type FROM events ORDER BY 1") == [("kept",), ("kept too",)]


def test_duckdb_error_caught_by_a_savepoint_keeps_earlier_writes(events):
    """A statement that fails inside DuckDB aborts the lake's DuckDB transaction; the
    savepoint around it restarts that transaction with the earlier writes replayed."""
    events.conn.execute("CREATE FOREIGN TABLE lake.texty (event_id text, event_type text) SERVER lake "
                        "OPTIONS (table 'events')")
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('committed', 0)")
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('first', 1)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (2,)
        conn.execute("SAVEPOINT s")
        # the cast to UUID happens in DuckDB, when the UPDATE (deferred, since inside a
        # savepoint) is applied by the next read
        conn.execute("UPDATE lake.texty SET event_id = event_type WHERE event_type = 'committed'")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            conn.execute("SELECT count(*) FROM lake.events")
        assert "Could not convert string 'committed'" in str(caught.value)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('second', 2)")
        assert conn.execute("SELECT event_type FROM lake.events ORDER BY value").fetchall() \
            == [("committed",), ("first",), ("second",)]
        conn.commit()
    assert events.ref.rows("SELECT event_type, value FROM events ORDER BY value") == [
        ("committed", 0), ("first", 1), ("second", 2)]


def test_cursor_stays_readable_across_savepoint_rollbacks(events):
    """A cursor declared before the savepoints keeps its rows: after an error that left
    the lake alone, and after a rollback that restarted the lake's transaction."""
    events.conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'old', g FROM generate_series(1, 100000) g")
    with events.connect(autocommit=False) as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT value FROM lake.events ORDER BY value")
        assert conn.execute("FETCH 3 FROM c").fetchall() == [(1,), (2,), (3,)]
        conn.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        assert conn.execute("FETCH 3 FROM c").fetchall() == [(4,), (5,), (6,)]
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'new', g FROM generate_series(1, 40000) g")
        conn.execute("SAVEPOINT t")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('undone', 0)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (140001,)
        conn.execute("ROLLBACK TO SAVEPOINT t")
        assert conn.execute("FETCH 3 FROM c").fetchall() == [(7,), (8,), (9,)]
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (140000,)
        assert len(conn.execute("FETCH ALL FROM c").fetchall()) == 100000 - 9
        conn.commit()
    assert events.ref.rows("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        ("new", 40000), ("old", 100000)]


def test_statement_timeout_inside_savepoints_loses_no_write(events):
    """A cancel can cut short applying a deferred write or replaying the writes after a
    savepoint rollback; rolling back to a savepoint around it leaves every write made
    before it in place, exactly once."""
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('committed', 0)")
    with events.connect(autocommit=False) as conn:
        conn.execute("SET ducklake.savepoint_replay_memory = '256MB'")
        # deferred inside a savepoint, then owned by the transaction
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'bulk', g FROM generate_series(1, 1000000) g")
        conn.execute("RELEASE SAVEPOINT a")
        conn.execute("SAVEPOINT b")
        conn.execute("SET LOCAL statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            # reading applies the deferred million rows first
            conn.execute("SELECT count(*) FROM lake.events")
        conn.execute("ROLLBACK TO SAVEPOINT b")
        assert conn.execute("SELECT event_type, count(*) FROM lake.events GROUP BY 1 ORDER BY 1").fetchall() \
            == [("bulk", 1000000), ("committed", 1)]
        conn.execute("SAVEPOINT c")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('undone', 1)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (1000002,)
        conn.execute("ROLLBACK TO SAVEPOINT c")
        conn.execute("SAVEPOINT d")
        conn.execute("SET LOCAL statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            # reading first replays the million rows in a new DuckDB transaction
            conn.execute("SELECT count(*) FROM lake.events")
        conn.execute("ROLLBACK TO SAVEPOINT d")
        assert conn.execute("SELECT event_type, count(*) FROM lake.events GROUP BY 1 ORDER BY 1").fetchall() \
            == [("bulk", 1000000), ("committed", 1)]
        conn.commit()
    assert events.ref.rows("SELECT event_type, count(*), sum(value) FROM events GROUP BY 1 ORDER BY 1") == [
        ("bulk", 1000000, 500000500000), ("committed", 1, 0)]


def test_savepoint_around_a_refused_write_keeps_the_transaction(events):
    """A write the lake refuses (NOT NULL, a value its type cannot hold) is rejected
    before the lake sees it, so rolling back to a savepoint carries on."""
    events.conn.execute("CREATE FOREIGN TABLE lake.texty (event_id text, event_type text) SERVER lake "
                        "OPTIONS (table 'events')")
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('committed', 0)")
    before = snapshot_count(events)
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('first', 1)")
        conn.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.NotNullViolation) as caught:
            conn.execute("INSERT INTO lake.events (event_type, value) SELECT CASE WHEN g = 3 THEN NULL ELSE 'x' END, g "
                         "FROM generate_series(1, 5) g")
        assert str(caught.value).startswith(
            'null value in column "event_type" of DuckLake table main.events violates not-null constraint')
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            conn.execute("INSERT INTO lake.texty VALUES (gen_random_uuid()::text, 'ok'), ('not-a-uuid', 'bad')")
        assert 'value for column "event_id" does not fit DuckLake type UUID' in str(caught.value)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        # row by row (random() stays in Postgres) and as one DuckDB statement
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("UPDATE lake.events SET event_type = NULL WHERE value = 0 AND random() >= 0")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("UPDATE lake.events SET event_type = NULL WHERE value = 0")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            conn.execute("UPDATE lake.texty SET event_id = 'not-a-uuid' WHERE event_type = 'committed'")
        assert 'value for column "event_id" does not fit DuckLake type UUID' in str(caught.value)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('second', 2)")
        conn.commit()
    assert events.ref.rows("SELECT event_type, value FROM events ORDER BY value") == [
        ("committed", 0), ("first", 1), ("second", 2)]
    assert snapshot_count(events) == before + 1


def test_psql_on_error_rollback(events):
    """psql's ON_ERROR_ROLLBACK wraps each statement in a savepoint: the failed INSERT
    is skipped and the rest of the transaction commits."""
    bindir = subprocess.run([events.cluster.pg_config, "--bindir"], check=True, capture_output=True,
                            text=True).stdout.strip()
    script = """\\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO lake.events (event_type, value) VALUES ('before', 1);
INSERT INTO lake.events (event_type, value) VALUES (NULL, 2);
INSERT INTO lake.events (event_type, value) VALUES ('after', 3);
COMMIT;
"""
    out = subprocess.run([str(pathlib.Path(bindir) / "psql"), "-X", "-q", events.cluster.dsn(events.dbname)],
                         input=script, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'null value in column "event_type" of DuckLake table main.events violates not-null constraint' \
        in out.stderr
    assert events.ref.rows("SELECT event_type, value FROM events ORDER BY value") == [("before", 1), ("after", 3)]


def test_lake_ddl_from_sql_is_a_write(events):
    # ducklake.execute inside a rolled-back savepoint: the table must not appear
    with events.connect(autocommit=False) as conn:
        conn.execute("SAVEPOINT s")
        conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE undone (a INTEGER)')")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.commit()
    assert events.ref.rows("SELECT table_name FROM duckdb_tables() WHERE database_name = 'analytics' "
                           "ORDER BY 1") == [("events",)]
    # committed DDL has an author like any write; a read through execute makes no snapshot
    before = snapshot_count(events)
    events.conn.execute("SELECT ducklake.execute('lake', 'SELECT 1')")
    assert snapshot_count(events) == before
    events.conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE kept (a INTEGER)')")
    assert events.rows("SELECT author, changes FROM ducklake.snapshots('lake') ORDER BY snapshot_id DESC LIMIT 1") \
        == [("postgres", {"tables_created": ["main.kept"]})]


def test_copy_from_and_returning(events):
    data = "".join(f"copy\t{i}\n" for i in range(1000))
    with events.conn.cursor() as cur:
        with cur.copy("COPY lake.events (event_type, value) FROM STDIN") as copy:
            copy.write(data)
    assert events.ref.rows("SELECT count(*), sum(value) FROM events WHERE event_type = 'copy'") == [(1000, 499500)]
    rows = events.rows("INSERT INTO lake.events (event_type, value) VALUES ('r', 7), ('s', 8) "
                       "RETURNING event_type, value * 2")
    assert rows == [("r", 14), ("s", 16)]


def test_constraint_and_type_errors_write_nothing(events):
    with pytest.raises(psycopg.Error) as caught:
        events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('ok', 1), (NULL, 2)")
    assert "event_type" in str(caught.value)
    events.conn.execute("CREATE FOREIGN TABLE lake.narrow (event_type text, amount numeric) SERVER lake "
                        "OPTIONS (table 'events')")
    with pytest.raises(psycopg.Error) as caught:
        events.conn.execute("INSERT INTO lake.narrow VALUES ('big', 12345678901234.5)")
    assert caught.value.sqlstate == "22003", str(caught.value)
    assert 'value for column "amount" does not fit DuckLake type DECIMAL(12,3)' in str(caught.value)
    events.conn.execute("CREATE FOREIGN TABLE lake.texty (event_id text, event_type text) SERVER lake "
                        "OPTIONS (table 'events')")
    with pytest.raises(psycopg.Error) as caught:
        events.conn.execute("INSERT INTO lake.texty VALUES ('not-a-uuid', 'x')")
    assert caught.value.sqlstate == "22P02", str(caught.value)
    assert 'value for column "event_id" does not fit DuckLake type UUID' in str(caught.value)
    assert events.ref.rows("SELECT count(*) FROM events") == [(0,)]


def test_writes_refused_where_they_make_no_sense(events):
    events.conn.execute("CREATE FOREIGN TABLE lake.old (event_type text) SERVER lake "
                        "OPTIONS (table 'events', snapshot_id '1')")
    with pytest.raises(psycopg.Error, match="pinned to a past snapshot"):
        events.conn.execute("INSERT INTO lake.old VALUES ('x')")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="change feed or reads a past snapshot"):
        events.conn.execute("DELETE FROM lake.old")


def test_rows_read_at_a_pinned_snapshot_are_not_changed(filled):
    """With the settings pinning the lake, UPDATE and DELETE would read past rows and
    change current ones by rowid: refused, prepared statements too. INSERT (also of
    rows read from the past) and other servers' tables are not affected."""
    conn = filled.conn
    at = conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('lake.events')").fetchone()[0]
    conn.execute("PREPARE bump AS UPDATE lake.events SET value = value + 1 WHERE value <= 3")
    conn.execute("DELETE FROM lake.events WHERE value = 1")
    message = ('cannot change "events": it is a change feed or reads a past snapshot (its options snapshot_id, '
               'as_of or snapshot_id_setting, or the settings ducklake.snapshot_id and ducklake.as_of)')
    for pin in [str(at), f'{{"lake": {at}}}']:
        conn.execute("SELECT set_config('ducklake.snapshot_id', %s, false)", (pin,))
        for statement in ["DELETE FROM lake.events WHERE value <= 2",
                          "UPDATE lake.events SET value = 0 WHERE value = 2",
                          "UPDATE lake.events SET value = 0 WHERE lower(event_type) = 'click' AND value = 2",
                          "EXECUTE bump"]:
            with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
                conn.execute(statement)
            assert caught.value.diag.message_primary == message, statement
    # the pin names another server only: this lake's rows are current
    conn.execute("""SET ducklake.snapshot_id = '{"elsewhere": 1}'""")
    conn.execute("EXECUTE bump")
    # restoring a deleted row from the past is an INSERT, which is allowed
    conn.execute(f"SET ducklake.snapshot_id = '{at}'")
    conn.execute("INSERT INTO lake.events (event_type, value, amount) SELECT event_type, value, amount "
                 "FROM lake.events WHERE value = 1")
    conn.execute("RESET ducklake.snapshot_id")
    # 1 back; 2 and 3 bumped once, by the one EXECUTE that ran
    assert conn.execute("SELECT value FROM lake.events WHERE value <= 4 ORDER BY 1").fetchall() == [
        (1,), (3,), (4,), (4,)]


@pytest.fixture
def filled(events):
    events.conn.execute("INSERT INTO lake.events (event_type, value, amount) "
                        "SELECT (ARRAY['click','view','buy'])[1 + g % 3], g, g / 10.0 FROM generate_series(1, 30000) g")
    return events


def test_delete_with_pushed_and_local_conditions(filled):
    before = snapshot_count(filled)
    filled.conn.execute("DELETE FROM lake.events WHERE value <= 100")
    filled.conn.execute("DELETE FROM lake.events WHERE value % 1000 = 0 AND lower(event_type) = 'click'")
    assert snapshot_count(filled) == before + 2
    expected = [g for g in range(101, 30001) if not (g % 1000 == 0 and g % 3 == 0)]
    assert filled.ref.rows("SELECT count(*), sum(value) FROM events") == [(len(expected), sum(expected))]
    assert filled.rows("SELECT count(*), sum(value) FROM lake.events") == [(len(expected), sum(expected))]


def test_update_assigned_columns_only(filled):
    filled.conn.execute("UPDATE lake.events SET value = -value, event_type = 'changed' WHERE value BETWEEN 10 AND 19")
    filled.conn.execute("UPDATE lake.events SET amount = amount * 2 WHERE event_type = 'buy' AND value < 30")
    rows = filled.ref.rows("SELECT value, event_type, amount FROM events WHERE abs(value) < 30 ORDER BY abs(value)")
    expected = []
    for g in range(1, 30):
        event_type = ["click", "view", "buy"][g % 3]
        amount = Decimal(g) / 10
        if 10 <= g <= 19:
            expected.append((-g, "changed", amount))
        elif event_type == "buy":
            expected.append((g, "buy", amount * 2))
        else:
            expected.append((g, event_type, amount))
    assert rows == expected
    assert filled.ref.rows("SELECT count(*) FROM events") == [(30000,)]


def test_update_and_delete_in_one_transaction(filled):
    before = snapshot_count(filled)
    with filled.connect(autocommit=False) as conn:
        conn.execute("UPDATE lake.events SET value = 0 WHERE value > 29990")
        conn.execute("DELETE FROM lake.events WHERE value = 0")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('new', 1)")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (29991,)
        conn.commit()
    assert snapshot_count(filled) == before + 1
    assert filled.ref.rows("SELECT count(*) FROM events") == [(29991,)]
    with filled.connect(autocommit=False) as conn:
        conn.execute("DELETE FROM lake.events")
        conn.rollback()
    assert filled.ref.rows("SELECT count(*) FROM events") == [(29991,)]


def test_change_rows_inserted_by_the_same_transaction(filled):
    """Rows this transaction inserted have no stable DuckLake rowid yet: DuckLake 1.5.5
    renumbers them when it updates them, so that two can share one, and a later DELETE
    of one then removes the other too. Only a DELETE DuckDB runs whole may change them;
    an UPDATE of them, and the row-by-row path, are refused rather than lose rows."""
    with filled.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('mine', -1), ('mine', -2)")
        conn.execute("INSERT INTO lake.events (event_type, value) SELECT 'many', -g FROM generate_series(3, 50000) g")
        conn.execute("SAVEPOINT s")
        # (this UPDATE then a DELETE of -49998 and -49999 lost the rows -1 and -2 in DuckLake)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            conn.execute("UPDATE lake.events SET event_type = 'mine too' WHERE value IN (-49998, -49999, 5)")
        assert str(caught.value).startswith("cannot UPDATE rows inserted by the same transaction: DuckLake renumbers")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        assert conn.execute("UPDATE lake.events SET event_type = 'mine too' WHERE value = 5").rowcount == 1
        assert conn.execute("DELETE FROM lake.events WHERE value IN (-49998, -49999)").rowcount == 2
        assert conn.execute("DELETE FROM lake.events WHERE value IN (-1, -50000, 6)").rowcount == 3
        assert conn.execute("SELECT event_type, count(*) FROM lake.events WHERE value < 0 OR value IN (5, 6) "
                            "GROUP BY 1 ORDER BY 1").fetchall() == [("many", 49995), ("mine", 1), ("mine too", 1)]
        conn.execute("SAVEPOINT s")
        # random() keeps the condition in Postgres: the row-by-row rowid path
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            conn.execute("DELETE FROM lake.events WHERE value = -3 AND random() >= 0")
        assert "cannot UPDATE or DELETE rows inserted by the same transaction row by row" in str(caught.value)
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.commit()
    assert filled.ref.rows("SELECT event_type, count(*) FROM events WHERE value < 0 OR value IN (5, 6) "
                           "GROUP BY 1 ORDER BY 1") == [("many", 49995), ("mine", 1), ("mine too", 1)]


def test_update_and_delete_returning(filled):
    conn = filled.conn
    # DELETE returns the old rows (here with a pushable condition, which RETURNING keeps row by row)
    deleted = conn.execute("DELETE FROM lake.events WHERE value <= 3 RETURNING value, event_type, amount").fetchall()
    assert sorted(deleted) == [(1, "view", Decimal("0.100")), (2, "buy", Decimal("0.200")), (3, "click", Decimal("0.300"))]
    assert filled.ref.rows("SELECT count(*) FROM events WHERE value <= 3") == [(0,)]
    # UPDATE returns the new row: assigned columns new, the others as they were
    updated = conn.execute("UPDATE lake.events SET event_type = 'moved', value = value * 10 WHERE value BETWEEN 4 AND 5 "
                           "RETURNING value, event_type, amount, amount * 2 AS doubled").fetchall()
    assert sorted(updated) == [(40, "moved", Decimal("0.400"), Decimal("0.800")),
                               (50, "moved", Decimal("0.500"), Decimal("1.000"))]
    assert filled.ref.rows("SELECT value, event_type, amount FROM events WHERE event_type = 'moved' ORDER BY value") \
        == [(40, "moved", Decimal("0.400")), (50, "moved", Decimal("0.500"))]
    # RETURNING * and a whole-row reference, in a transaction that later rolls back
    with filled.connect(autocommit=False) as other:
        star = other.execute("DELETE FROM lake.events WHERE value = 6 RETURNING *").fetchall()
        assert len(star) == 1 and star[0][1:4] == ("click", 6, Decimal("0.600"))
        whole = other.execute("UPDATE lake.events e SET amount = 0 WHERE value = 7 RETURNING e").fetchall()
        assert len(whole) == 1 and ",view,7,0.000," in whole[0][0]
        other.rollback()
    assert filled.ref.rows("SELECT count(*) FROM events WHERE value IN (6, 7) AND amount > 0") == [(2,)]


def test_server_options_changed_mid_transaction(events):
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        conn.execute("ALTER SERVER lake OPTIONS (SET catalog_name 'renamed')")
        with pytest.raises(psycopg.Error, match="changed during this transaction"):
            conn.execute("SELECT count(*) FROM lake.events")
        conn.rollback()
    assert events.ref.rows("SELECT count(*) FROM events") == [(0,)]


def test_commit_author_and_message(events):
    with events.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL ducklake.commit_message = 'nightly load'")
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        conn.commit()
    events.conn.execute("SET ducklake.commit_author = 'etl-bot'")
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('b', 2)")
    last = events.rows("SELECT author, commit_message FROM ducklake.snapshots('lake') ORDER BY snapshot_id DESC LIMIT 2")
    assert last == [("etl-bot", None), ("postgres", "nightly load")]


def test_data_inlining_row_limit_option(events):
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('small', 1)")
    files = "SELECT count(*) FROM ducklake_list_files('analytics', 'events')"
    assert events.ref.rows(files) == [(0,)]  # inlined into the catalog by default
    events.conn.execute("ALTER SERVER lake OPTIONS (ADD data_inlining_row_limit '0')")
    events.conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('small', 2)")
    assert events.ref.rows(files) == [(1,)]
    assert events.rows("SELECT sum(value) FROM lake.events") == [(3,)]
    with pytest.raises(psycopg.Error, match="must be a non-negative integer"):
        events.conn.execute("ALTER SERVER lake OPTIONS (SET data_inlining_row_limit 'many')")


def test_maintenance_compacts_and_expires(events):
    for i in range(12):
        events.conn.execute(f"INSERT INTO lake.events (event_type, value) VALUES ('small', {i})")  # inlined
    for i in range(3):
        events.conn.execute(f"INSERT INTO lake.events (event_type, value) SELECT 'batch{i}', g FROM generate_series(1, 100) g")
    parquet = lambda: len(list(pathlib.Path(events.data_path).rglob("*.parquet")))
    assert parquet() == 3
    # 97% of the rows of the first batch's file are deleted: a delete file, then a rewrite
    events.conn.execute("DELETE FROM lake.events WHERE event_type = 'batch0' AND value <= 97")
    assert parquet() == 4
    snapshots_before = snapshot_count(events)
    remaining = events.rows("SELECT count(*), sum(value) FROM lake.events")
    assert remaining == [(12 + 3 + 200, sum(range(12)) + 98 + 99 + 100 + 2 * 5050)]
    rows = dict(events.rows("SELECT step, affected FROM ducklake.maintain('lake', older_than => '0 seconds')"))
    assert list(rows) == ["delete_unreferenced_files", "flush_inlined_data", "rewrite_data_files",
                          "merge_adjacent_files", "expire_snapshots", "cleanup_old_files"]
    assert rows["delete_unreferenced_files"] == 0
    assert rows["flush_inlined_data"] >= 1 and rows["rewrite_data_files"] == 1 and rows["merge_adjacent_files"] >= 1
    assert rows["expire_snapshots"] >= snapshots_before - 2
    assert events.rows("SELECT count(*), sum(value) FROM lake.events") == remaining
    assert events.ref.rows("SELECT count(*) FROM events") == [(215,)]
    assert snapshot_count(events) < snapshots_before
    assert events.rows("SELECT delete_file_count FROM ducklake.table_info('lake')") == [(0,)]
    # the merged and rewritten files' sources (and the delete file) belonged only to
    # expired snapshots and are gone from disk
    assert rows["cleanup_old_files"] >= 4
    assert parquet() == 1
    # with the default retention of 7 days nothing recent is expired
    again = dict(events.rows("SELECT step, affected FROM ducklake.maintain('lake')"))
    assert again["expire_snapshots"] == 0 and again["cleanup_old_files"] == 0
    with events.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events (event_type, value) VALUES ('x', 1)")
        with pytest.raises(psycopg.Error, match="run it outside a transaction that wrote"):
            conn.execute("SELECT * FROM ducklake.maintain('lake')")
    for bad in ("-0.5", "'NaN'"):
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match='invalid value for argument "delete_threshold": .* is not a fraction of rows'):
            events.conn.execute(f"SELECT * FROM ducklake.maintain('lake', delete_threshold => {bad})")


def test_schema_evolution_from_sql(lake):
    lake.conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE evolving (id BIGINT, value BIGINT)')")
    lake.import_schema("evolving")
    lake.conn.execute("INSERT INTO lake.evolving VALUES (1, 10), (2, 20)")
    v1 = lake.rows("SELECT ducklake.current_snapshot('lake')")[0][0]

    lake.conn.execute("SELECT ducklake.execute('lake', 'ALTER TABLE evolving ADD COLUMN note VARCHAR')")
    lake.conn.execute("SELECT ducklake.execute('lake', 'ALTER TABLE evolving RENAME COLUMN value TO amount')")
    # the old definition now names a column the lake no longer has: a clear error
    with pytest.raises(psycopg.Error) as caught:
        lake.conn.execute("SELECT value FROM lake.evolving")
    assert '"value"' in str(caught.value)
    # re-import picks up the new shape
    lake.conn.execute("DROP FOREIGN TABLE lake.evolving")
    lake.import_schema("evolving")
    lake.conn.execute("INSERT INTO lake.evolving VALUES (3, 30, 'new')")
    assert lake.rows("SELECT id, amount, note FROM lake.evolving ORDER BY id") == [
        (1, 10, None), (2, 20, None), (3, 30, "new")]

    lake.conn.execute("SELECT ducklake.execute('lake', 'ALTER TABLE evolving DROP COLUMN note')")
    lake.conn.execute("DROP FOREIGN TABLE lake.evolving")
    lake.import_schema("evolving")
    assert lake.rows("SELECT attname FROM pg_attribute WHERE attrelid = 'lake.evolving'::regclass "
                     "AND attnum > 0 ORDER BY attnum") == [("id",), ("amount",)]
    # the old snapshot stays readable with its old shape
    lake.conn.execute(f"CREATE FOREIGN TABLE lake.evolving_v1 (id bigint, value bigint) SERVER lake "
                      f"OPTIONS (table 'evolving', snapshot_id '{v1}')")
    assert lake.rows("SELECT id, value FROM lake.evolving_v1 ORDER BY id") == [(1, 10), (2, 20)]


def test_pushable_delete_runs_as_one_duckdb_statement(filled):
    plan = "\n".join(r[0] for r in filled.rows(
        "EXPLAIN (VERBOSE, COSTS OFF) DELETE FROM lake.events WHERE value <= 100 AND event_type = 'click'"))
    assert 'DuckDB SQL: DELETE FROM "analytics"."main"."events" WHERE' in plan
    with filled.conn.cursor() as cur:
        cur.execute("DELETE FROM lake.events WHERE value <= 100 AND event_type = 'click'")
        assert cur.rowcount == len([g for g in range(1, 101) if g % 3 == 0])
    # a condition Postgres evaluates keeps the rowid path, and the answers agree
    plan = "\n".join(r[0] for r in filled.rows("EXPLAIN (VERBOSE, COSTS OFF) DELETE FROM lake.events WHERE lower(event_type) = 'view'"))
    assert "Filter:" in plan
    with filled.conn.cursor() as cur:
        cur.execute("DELETE FROM lake.events WHERE lower(event_type) = 'view'")
        assert cur.rowcount == 10000
    assert filled.ref.rows("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        ("buy", 10000), ("click", 10000 - 33)]


def test_update_with_constants_runs_as_one_duckdb_statement(filled):
    update = "UPDATE lake.events SET event_type = 'changed', amount = 1.5, created_at = NULL WHERE value <= 100"
    plan = "\n".join(r[0] for r in filled.rows(f"EXPLAIN (VERBOSE, COSTS OFF) {update}"))
    assert ('DuckDB SQL: UPDATE "analytics"."main"."events" SET "event_type" = \'changed\', '
            '"amount" = CAST(\'1.500\' AS DECIMAL(38,3)), "created_at" = NULL WHERE') in plan
    before = snapshot_count(filled)
    with filled.conn.cursor() as cur:
        cur.execute(update)
        assert cur.rowcount == 100
    assert snapshot_count(filled) == before + 1
    assert filled.ref.rows("SELECT event_type, amount, count(*), sum(value) FROM events WHERE value <= 100 GROUP BY ALL") \
        == [("changed", Decimal("1.500"), 100, 5050)]
    assert filled.ref.rows("SELECT count(*) FROM events WHERE event_type = 'changed'") == [(100,)]
    # a constant that does not fit the lake column names it, and nothing is written
    filled.conn.execute("CREATE FOREIGN TABLE lake.wide (value bigint, amount numeric(20,1)) SERVER lake "
                        "OPTIONS (table 'events')")
    with pytest.raises(psycopg.Error) as caught:
        filled.conn.execute("UPDATE lake.wide SET amount = 12345678901234.5 WHERE value = 1")
    assert caught.value.sqlstate == "22003", str(caught.value)
    assert 'value for column "amount" does not fit DuckLake type DECIMAL(12,3)' in str(caught.value)
    assert filled.ref.rows("SELECT amount FROM events WHERE value = 1") == [(Decimal("1.500"),)]


def test_update_with_computed_values_runs_as_one_duckdb_statement(filled):
    """Integer arithmetic and text concatenation over the row are computed by DuckDB,
    with Postgres' result types (so overflow is still an error); the row path gives
    the same answer."""
    update = "UPDATE lake.events SET value = -(value * 2 + 1), event_type = event_type || '/' || 'x' WHERE value <= 100"
    plan = "\n".join(r[0] for r in filled.rows(f"EXPLAIN (VERBOSE, COSTS OFF) {update}"))
    assert ('DuckDB SQL: UPDATE "analytics"."main"."events" SET '
            '"event_type" = ((CAST("event_type" AS VARCHAR) || \'/\') || \'x\'), '
            '"value" = CAST((- CAST((CAST((CAST("value" AS BIGINT) * CAST(2 AS INTEGER)) AS BIGINT) '
            '+ CAST(1 AS INTEGER)) AS BIGINT)) AS BIGINT) WHERE') in plan
    before = snapshot_count(filled)
    assert filled.conn.execute(update).rowcount == 100
    # the same change row by row (random() keeps the condition in Postgres)
    assert filled.conn.execute("UPDATE lake.events SET value = -(value * 2 + 1), event_type = event_type || '/' || 'x' "
                               "WHERE value BETWEEN 101 AND 200 AND random() >= 0").rowcount == 100
    assert snapshot_count(filled) == before + 2
    expected = [(f"{['click', 'view', 'buy'][g % 3]}/x", -(g * 2 + 1)) for g in range(1, 201)]
    assert sorted(filled.ref.rows("SELECT event_type, value FROM events WHERE value < 0")) == sorted(expected)
    # int overflow is an error, as in Postgres; nothing is written
    filled.conn.execute("CREATE FOREIGN TABLE lake.narrow_int (value integer) SERVER lake OPTIONS (table 'events')")
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        filled.conn.execute("UPDATE lake.narrow_int SET value = value * 1000000 WHERE value = 30000")
    assert filled.ref.rows("SELECT count(*) FROM events WHERE value = 30000") == [(1,)]


def test_update_keeps_the_row_path_when_it_must(filled):
    # values DuckDB might compute differently, and tables with row triggers, go row by
    # row; the answers agree
    plan = "\n".join(r[0] for r in filled.rows("EXPLAIN (VERBOSE, COSTS OFF) UPDATE lake.events SET value = value / 2, "
                                               "amount = amount * 1.5 WHERE value <= 10"))
    assert "DuckDB SQL: SELECT" in plan and "DuckDB SQL: UPDATE" not in plan
    filled.conn.execute("CREATE TABLE audit (n int)")
    filled.conn.execute("CREATE FUNCTION count_row() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END$$")
    filled.conn.execute("CREATE TRIGGER counted BEFORE UPDATE ON lake.events FOR EACH ROW EXECUTE FUNCTION count_row()")
    plan = "\n".join(r[0] for r in filled.rows("EXPLAIN (VERBOSE, COSTS OFF) UPDATE lake.events SET event_type = 'x' "
                                               "WHERE value <= 10"))
    assert "DuckDB SQL: UPDATE" not in plan
    filled.conn.execute("UPDATE lake.events SET event_type = 'x' WHERE value <= 10")
    assert filled.rows("SELECT count(*) FROM audit") == [(10,)]
    assert filled.ref.rows("SELECT count(*) FROM events WHERE event_type = 'x'") == [(10,)]


def test_commits_that_write_a_lake_are_announced(events):
    """NOTIFY ducklake_commit, '<server>' once per committed writing transaction: not for
    reads or rollbacks (the stream-table scheduler listens; so may applications)."""
    with events.connect() as listener:
        listener.execute("LISTEN ducklake_commit")
        writer = events.conn
        writer.execute("INSERT INTO lake.events (event_type, value) VALUES ('a', 1)")
        writer.execute("SELECT count(*) FROM lake.events")
        with events.connect(autocommit=False) as rolled_back:
            rolled_back.execute("INSERT INTO lake.events (event_type, value) VALUES ('b', 2)")
            rolled_back.rollback()
        with writer.transaction():
            writer.execute("UPDATE lake.events SET value = 3 WHERE event_type = 'a'")
            writer.execute("DELETE FROM lake.events WHERE value = 99")
        writer.execute("NOTIFY ducklake_commit, 'end of test'")
        payloads = []
        for notify in listener.notifies(timeout=30):
            payloads.append(notify.payload)
            if notify.payload == "end of test":
                break
        assert payloads == ["lake", "lake", "end of test"]
