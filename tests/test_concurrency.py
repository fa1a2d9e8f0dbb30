"""Many writers on one lake: backends of one cluster and of a second cluster with the
same catalog and data path. No row lost or duplicated; conflicts are clean 40001
errors. (Writers killed at any point: test_crash_safety.)"""

import threading

import psycopg
import pytest
from psycopg import errors

from conftest import another_cluster, attach_remote_lake
from writers import insert_batches

ROWS_PER_TXN = 10
TRANSACTIONS = 200


def writer(dsn, tag, transactions, failures):
    insert_batches(dsn, tag, transactions, ROWS_PER_TXN, failures)


@pytest.fixture
def shared(lake):
    lake.ref.execute("CREATE TABLE events (writer VARCHAR, value BIGINT)")
    lake.import_schema("events")
    return lake


def test_concurrent_writers_lose_and_duplicate_nothing(shared, pg):
    # 8 backends of this cluster and 2 of a second cluster with the FDW, on the same
    # catalog and data path, TRANSACTIONS commits each
    with another_cluster(pg) as other, other.connect() as second:
        second.execute("CREATE EXTENSION ducklake_fdw")
        attach_remote_lake(second, pg, shared)
        failures = []
        first_dsn, second_dsn = pg.dsn(shared.dbname), other.dsn()
        threads = [threading.Thread(target=writer, args=(first_dsn, f"a{i}", TRANSACTIONS, failures)) for i in range(8)]
        threads += [threading.Thread(target=writer, args=(second_dsn, f"b{i}", TRANSACTIONS, failures)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = [(f"{side}{i}", TRANSACTIONS * ROWS_PER_TXN, sum(range(TRANSACTIONS * ROWS_PER_TXN)))
                    for side, n in (("a", 8), ("b", 2)) for i in range(n)]
        query = "SELECT writer, count(*), sum(value) FROM lake.events GROUP BY writer ORDER BY writer"
        assert shared.rows(query) == expected
        # each cluster sees the other's commits, and so does the reference client
        assert second.execute(query).fetchall() == expected
        assert shared.ref.rows("SELECT count(*), count(DISTINCT (writer, value)) FROM events") == [(10 * TRANSACTIONS * ROWS_PER_TXN,) * 2]
        commits = shared.rows("SELECT count(*) FROM ducklake.snapshots('lake') WHERE changes ? 'inlined_insert' "
                              "OR changes ? 'tables_inserted_into'")[0][0]
        assert commits == 10 * TRANSACTIONS


def savepoint_writer(dsn, tag, transactions, problems):
    """Each transaction writes half its rows, reads in a savepoint that wrote a row and
    rolls it back (so the lake's DuckDB transaction is restarted and the first half
    replayed), then writes the other half. A replay that another session's commit
    overtook is a 40001, and the whole transaction is retried."""
    with psycopg.connect(dsn) as conn:
        for txn in range(transactions):
            first = txn * ROWS_PER_TXN
            half = first + ROWS_PER_TXN // 2
            mine = f"SELECT count(*) FROM lake.events WHERE writer = '{tag}' AND value < {half}"
            while True:
                try:
                    conn.execute(f"INSERT INTO lake.events (writer, value) SELECT '{tag}', g "
                                 f"FROM generate_series({first}, {half - 1}) g")
                    conn.execute("SAVEPOINT s")
                    conn.execute(f"INSERT INTO lake.events (writer, value) VALUES ('{tag}', -1)")
                    if (seen := conn.execute(mine).fetchone()[0]) != half + 1:
                        problems.append((tag, txn, "before rollback", seen))
                    conn.execute("ROLLBACK TO SAVEPOINT s")
                    if (seen := conn.execute(mine).fetchone()[0]) != half:
                        problems.append((tag, txn, "after rollback", seen))
                    conn.execute(f"INSERT INTO lake.events (writer, value) SELECT '{tag}', g "
                                 f"FROM generate_series({half}, {first + ROWS_PER_TXN - 1}) g")
                    conn.commit()
                    break
                except errors.SerializationFailure:
                    conn.rollback()


def test_savepoint_rollbacks_among_concurrent_writers_lose_and_duplicate_nothing(shared, pg):
    problems, failures = [], []
    threads = [threading.Thread(target=savepoint_writer, args=(pg.dsn(shared.dbname), f"s{i}", 10, problems))
               for i in range(4)]
    threads += [threading.Thread(target=writer, args=(pg.dsn(shared.dbname), f"w{i}", 30, failures))
                for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    expected = [(f"s{i}", 10 * ROWS_PER_TXN, sum(range(10 * ROWS_PER_TXN))) for i in range(4)]
    expected += [(f"w{i}", 30 * ROWS_PER_TXN, sum(range(30 * ROWS_PER_TXN))) for i in range(4)]
    assert shared.ref.rows("SELECT writer, count(*), sum(value) FROM events GROUP BY writer ORDER BY writer") \
        == expected
    assert shared.ref.rows("SELECT count(*), count(DISTINCT (writer, value)) FROM events") == [(1600, 1600)]


def catalog_commit_retries(pg):
    """How often a DuckLake commit has lost the race for the next snapshot id in this
    cluster's catalog (each loss is logged as a unique violation, then retried)."""
    return (pg.base / "server.log").read_text().count('"ducklake_snapshot_pkey"')


def test_commits_of_one_cluster_take_turns_without_failed_attempts(shared, pg):
    # Small writes read the lake's snapshot only under the commit lock, so no commit
    # attempt of one cluster's backends is built on a snapshot another has superseded.
    before = catalog_commit_retries(pg)
    failures = []
    threads = [threading.Thread(target=writer, args=(pg.dsn(shared.dbname), f"w{i}", 30, failures)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert shared.rows("SELECT count(*), count(DISTINCT (writer, value)) FROM lake.events") == [(2400, 2400)]
    assert catalog_commit_retries(pg) == before


def test_table_altered_between_write_and_commit_is_a_serialization_failure(shared):
    shared.ref.execute("CREATE TABLE narrow (writer VARCHAR, value INTEGER)")
    shared.import_schema("narrow")
    with shared.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.narrow VALUES ('early', 1)")
        shared.ref.execute("ALTER TABLE narrow ALTER COLUMN value SET TYPE BIGINT")
        with pytest.raises(errors.SerializationFailure) as caught:
            conn.commit()
        assert str(caught.value) == ('DuckLake table main.narrow was altered by another session: '
                                     'column "value" is now BIGINT; retry the transaction')
        conn.execute("INSERT INTO lake.narrow VALUES ('retried', 1)")
        conn.commit()
    assert shared.ref.rows("SELECT writer, value FROM narrow") == [("retried", 1)]


def test_value_the_altered_table_accepts_is_not_refused_by_an_outdated_column_cache(shared):
    shared.ref.execute("CREATE TABLE narrow (writer VARCHAR, value INTEGER)")
    shared.conn.execute("CREATE FOREIGN TABLE lake.narrow (writer text, value bigint) SERVER lake")
    shared.conn.execute("INSERT INTO lake.narrow VALUES ('before', 1)")  # this backend caches INTEGER
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as caught:
        shared.conn.execute("INSERT INTO lake.narrow VALUES ('too big', 5000000000)")
    assert 'column "value"' in str(caught.value) and "INTEGER" in str(caught.value)
    shared.ref.execute("ALTER TABLE narrow ALTER COLUMN value SET TYPE BIGINT")
    with pytest.raises(errors.SerializationFailure) as caught:
        shared.conn.execute("INSERT INTO lake.narrow VALUES ('fits now', 5000000000)")
    assert str(caught.value) == ('DuckLake table main.narrow was altered by another session: '
                                 'column "value" is now BIGINT; retry the transaction')
    shared.conn.execute("INSERT INTO lake.narrow VALUES ('fits now', 5000000000)")
    assert shared.ref.rows("SELECT writer, value FROM narrow ORDER BY value") == [
        ("before", 1), ("fits now", 5000000000)]


def test_conflicting_deletes_fail_cleanly(shared):
    shared.conn.execute("INSERT INTO lake.events SELECT 'x', g FROM generate_series(1, 1000) g")
    with shared.connect(autocommit=False) as one, shared.connect(autocommit=False) as two:
        one.execute("DELETE FROM lake.events WHERE value <= 500")
        two.execute("DELETE FROM lake.events WHERE value <= 500")
        one.commit()
        with pytest.raises(errors.SerializationFailure) as caught:
            two.commit()
        assert "conflict" in str(caught.value).lower()
    assert shared.ref.rows("SELECT count(*), min(value) FROM events") == [(500, 501)]
    # the loser retries and finds nothing left to delete
    shared.conn.execute("DELETE FROM lake.events WHERE value <= 500")
    assert shared.rows("SELECT count(*) FROM lake.events") == [(500,)]
