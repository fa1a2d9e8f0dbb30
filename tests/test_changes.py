"""The change feed: rows inserted, deleted and updated between snapshots, typed, with
the snapshot range handed to DuckLake."""

import pathlib
import re

import psycopg
import pytest

from compare import assert_same_rows
from roles import grant_lake_reading, new_role

CHANGES_TABLE = """CREATE FOREIGN TABLE lake.events_changes (
    snapshot_id bigint, rowid bigint, change_type text, id bigint, event_type text, value bigint)
    SERVER lake OPTIONS (table 'events', changes 'true')"""


@pytest.fixture
def feed(lake):
    """Snapshots: 1 create, 2 inlined insert (3 rows), 3 file insert (2000 rows),
    4 delete, 5 update, 6 inlined insert."""
    lake.ref.execute("CREATE TABLE events (id BIGINT, event_type VARCHAR, value BIGINT)")
    lake.ref.execute("INSERT INTO events VALUES (1, 'click', 10), (2, 'view', 20), (3, 'buy', 30)")
    lake.ref.execute("INSERT INTO events SELECT i, 'bulk', i FROM range(100, 2100) t(i)")
    lake.ref.execute("DELETE FROM events WHERE id IN (2, 100, 101)")
    lake.ref.execute("UPDATE events SET value = -1 WHERE id IN (1, 102)")
    lake.ref.execute("INSERT INTO events VALUES (4, 'click', 40)")
    lake.conn.execute(CHANGES_TABLE)
    return lake


def duck_changes(lake, start, end):
    return lake.ref.rows(f"SELECT * FROM table_changes('events', {start}, {end}) "
                         "ORDER BY snapshot_id, rowid, change_type")


def pg_changes(lake, where):
    with lake.conn.cursor(binary=True) as cur:
        return cur.execute(f"SELECT * FROM lake.events_changes WHERE {where} "
                           "ORDER BY snapshot_id, rowid, change_type").fetchall()


@pytest.mark.parametrize("where,start,end", [
    ("snapshot_id > 1 AND snapshot_id <= 6", 2, 6),
    ("snapshot_id BETWEEN 2 AND 2", 2, 2),
    ("snapshot_id = 3", 3, 3),
    ("snapshot_id >= 4", 4, 6),
    ("snapshot_id < 3", 0, 2),
    ("snapshot_id > 3 AND snapshot_id < 6 AND change_type <> 'insert'", 4, 5),
])
def test_changes_match_duckdb(feed, where, start, end):
    expected = duck_changes(feed, start, end)
    if "change_type" in where:
        expected = [r for r in expected if r[2] != "insert"]
    assert_same_rows(pg_changes(feed, where), expected)


def test_change_kinds(feed):
    rows = feed.rows("SELECT snapshot_id, change_type, id, value FROM lake.events_changes "
                     "WHERE snapshot_id >= 4 AND id < 100 ORDER BY snapshot_id, change_type, id")
    assert rows == [(4, "delete", 2, 20), (5, "update_postimage", 1, -1), (5, "update_preimage", 1, 10),
                    (6, "insert", 4, 40)]
    assert feed.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id = 3") == [(2000,)]


def test_range_is_pushed_into_ducklake(feed):
    plan = "\n".join(r[0] for r in feed.rows(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM lake.events_changes WHERE snapshot_id > 3 AND snapshot_id <= 5"))
    assert "ducklake_fdw_changes('analytics', 'main', 'events', 4, 5)" in plan


def test_empty_and_parameterised_ranges(feed):
    assert feed.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id > 5 AND snapshot_id < 6") == [(0,)]
    assert feed.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id > 100") == [(0,)]
    feed.conn.execute("PREPARE delta(bigint, bigint) AS SELECT count(*) FROM lake.events_changes "
                      "WHERE snapshot_id > $1 AND snapshot_id <= $2")
    assert feed.rows("EXECUTE delta(2, 3)") == [(2000,)]
    assert feed.rows("EXECUTE delta(3, 6)") == [(3 + 4 + 1,)]
    assert feed.rows("EXECUTE delta(NULL, 6)") == [(0,)]


def test_range_ending_after_the_current_snapshot_ends_now(feed):
    # snapshots 7.. do not exist yet, so no change has their id (DuckLake itself would refuse them)
    everything = pg_changes(feed, "true")
    assert len(everything) == 3 + 2000 + 3 + 4 + 1
    assert pg_changes(feed, "snapshot_id <= 20") == everything
    assert pg_changes(feed, "snapshot_id BETWEEN 4 AND 1000") == pg_changes(feed, "snapshot_id >= 4")
    assert feed.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id BETWEEN 30 AND 40") == [(0,)]
    feed.conn.execute("PREPARE upto(bigint) AS SELECT count(*) FROM lake.events_changes WHERE snapshot_id <= $1")
    assert feed.rows("EXECUTE upto(100)") == [(len(everything),)]
    feed.import_schema("events")
    assert feed.rows("SELECT count(*) FROM ducklake.table_changes('lake.events', 5, 100)") == [(4 + 1,)]
    assert feed.rows("SELECT count(*) FROM ducklake.table_changes('lake.events', 7, 100)") == [(0,)]
    # the seed playbook's command, on a lake with fewer than 10 snapshots
    assert feed.rows("SELECT count(*) FROM ducklake.ducklake_table_changes('analytics', 'main', 'events', 0, 10)") \
        == [(len(everything),)]


def test_compaction_is_not_a_change(feed):
    # two files without deletes, which DuckLake can merge
    feed.ref.execute("INSERT INTO events SELECT i, 'more', i FROM range(5000, 7000) t(i)")
    feed.ref.execute("INSERT INTO events SELECT i, 'more', i FROM range(7000, 9000) t(i)")
    before = feed.rows("SELECT ducklake.current_snapshot('lake')")[0][0]
    feed.ref.execute("CALL ducklake_merge_adjacent_files('analytics')")
    after = feed.rows("SELECT ducklake.current_snapshot('lake')")[0][0]
    assert after > before
    assert feed.rows(f"SELECT count(*) FROM lake.events_changes WHERE snapshot_id > {before}") == [(0,)]
    feed.import_schema("events")
    assert feed.rows("SELECT count(*) FROM lake.events") == [(3 - 1 + 2000 - 2 + 1 + 4000,)]


def test_expired_snapshot_in_range_is_an_error(feed):
    feed.ref.execute("CALL ducklake_expire_snapshots('analytics', versions => [2, 3])")
    with pytest.raises(psycopg.Error) as caught:
        feed.conn.execute("SELECT count(*) FROM lake.events_changes WHERE snapshot_id >= 2 AND snapshot_id <= 4")
    assert caught.value.sqlstate == "22023", str(caught.value)
    assert "No snapshot found at version 2" in str(caught.value)
    # a range after the expired snapshots still works
    assert feed.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id >= 4") == [(3 + 4 + 1,)]


def test_table_changes_function_and_latest_snapshot(feed):
    feed.import_schema("events")
    rows = feed.rows("SELECT snapshot_id, change_type, row_data FROM ducklake.table_changes('lake.events', 5, 6) "
                     "ORDER BY snapshot_id, rowid, change_type")
    assert [r for r in rows if r[2]["id"] < 100] == [
        (5, "update_postimage", {"id": 1, "event_type": "click", "value": -1}),
        (5, "update_preimage", {"id": 1, "event_type": "click", "value": 10}),
        (6, "insert", {"id": 4, "event_type": "click", "value": 40}),
    ]
    assert feed.rows("SELECT ducklake.ducklake_latest_snapshot_id('lake.events')") == [(6,)]
    assert feed.rows("SELECT count(*) FROM ducklake.table_changes('lake.events', 2, 2)") == [(3,)]


def create_id_value_feed(lake):
    lake.conn.execute("CREATE FOREIGN TABLE lake.events_changes (snapshot_id bigint, rowid bigint, change_type text, "
                      "id bigint, value bigint) SERVER lake OPTIONS (table 'events', changes 'true')")


@pytest.fixture
def files_with_deletes(lake):
    """A Parquet-backed table whose data file has a delete file before an UPDATE: the
    case where DuckLake 1.5.5 answers wrongly under a pushed filter. Snapshots:
    1 create, 2 insert 3000 rows (one file), 3 delete 31 rows, 4 update 33 rows,
    5 inlined insert, 6 update of an inlined and of a file row, 7 delete of both."""
    lake.ref.execute("CREATE TABLE events (id BIGINT, value BIGINT)")
    lake.ref.execute("INSERT INTO events SELECT i, i FROM range(3000) t(i)")
    lake.ref.execute("DELETE FROM events WHERE value % 97 = 0")
    lake.ref.execute("UPDATE events SET value = value + 1 WHERE value % 89 = 0")
    lake.ref.execute("INSERT INTO events VALUES (5000, 1), (5001, 2), (5002, 3)")
    lake.ref.execute("UPDATE events SET value = -value WHERE id IN (5001, 500)")
    lake.ref.execute("DELETE FROM events WHERE id IN (5002, 501)")
    create_id_value_feed(lake)
    return lake


def reference_changes(lake, start, end):
    """DuckLake's own answer without any filter, as the reference client gives it."""
    return lake.ref.rows(f"SELECT snapshot_id, rowid, change_type, id, value "
                         f"FROM ducklake_table_changes('analytics', 'main', 'events', {start}, {end})")


def time_travel_changes(lake, start, end):
    """The changes of each snapshot as the difference of the table before and after it
    (by rowid): the oracle that needs no change feed at all."""
    out = []
    for s in range(start, end + 1):
        before = {r[0]: r[1:] for r in lake.ref.rows(f"SELECT rowid, id, value FROM events AT (VERSION => {s - 1})")}
        after = {r[0]: r[1:] for r in lake.ref.rows(f"SELECT rowid, id, value FROM events AT (VERSION => {s})")}
        for rowid in before.keys() | after.keys():
            old, new = before.get(rowid), after.get(rowid)
            if old == new:
                continue
            if old is None:
                out.append((s, rowid, "insert") + new)
            elif new is None:
                out.append((s, rowid, "delete") + old)
            else:
                out += [(s, rowid, "update_preimage") + old, (s, rowid, "update_postimage") + new]
    return out


CONDITIONS = [
    # (condition in SQL, the same in Python over (snapshot_id, rowid, change_type, id, value))
    ("snapshot_id > 3", lambda r: r[0] > 3),
    ("snapshot_id = 4", lambda r: r[0] == 4),
    ("snapshot_id >= 4 AND snapshot_id <= 6", lambda r: 4 <= r[0] <= 6),
    ("value > -1", lambda r: r[4] is not None and r[4] > -1),
    ("id >= 0", lambda r: r[3] >= 0),
    ("id IN (178, 500, 5001)", lambda r: r[3] in (178, 500, 5001)),
    ("change_type = 'update_preimage'", lambda r: r[2] == "update_preimage"),
    ("change_type <> 'insert' AND snapshot_id > 3", lambda r: r[2] != "insert" and r[0] > 3),
    ("rowid > 5 AND value % 2 = 0", lambda r: r[1] > 5 and r[4] % 2 == 0),
    ("true", lambda r: True),
]


def test_the_oracles_agree(files_with_deletes):
    """DuckLake's unfiltered feed is the time-travel difference, snapshot by snapshot."""
    for start, end in [(2, 2), (3, 3), (4, 4), (5, 7), (2, 7)]:
        assert sorted(reference_changes(files_with_deletes, start, end)) == \
            sorted(time_travel_changes(files_with_deletes, start, end)), (start, end)


@pytest.mark.parametrize("condition,keep", CONDITIONS, ids=[c for c, _ in CONDITIONS])
def test_any_pushed_condition_gives_ducklakes_unfiltered_answer(files_with_deletes, condition, keep):
    lake = files_with_deletes
    expected = sorted(r for r in reference_changes(lake, 0, 7) if keep(r))
    got = lake.rows(f"SELECT snapshot_id, rowid, change_type, id, value FROM lake.events_changes WHERE {condition}")
    assert sorted(got) == expected
    # Projections and aggregates over the feed see the same rows.
    by_type = lake.rows(f"SELECT change_type, count(*) FROM lake.events_changes WHERE {condition} GROUP BY 1")
    counts = {}
    for r in expected:
        counts[r[2]] = counts.get(r[2], 0) + 1
    assert dict(by_type) == counts
    ids = lake.rows(f"SELECT id FROM lake.events_changes WHERE {condition}")
    assert sorted(i for (i,) in ids) == sorted(r[3] for r in expected)


def test_the_update_after_a_delete_keeps_its_preimages(files_with_deletes):
    """The issue's reproduction: snapshot 4 updates 33 rows of a file with deletes."""
    lake = files_with_deletes
    assert lake.rows("SELECT change_type, count(*) FROM lake.events_changes WHERE snapshot_id > 3 AND snapshot_id <= 4 "
                     "GROUP BY 1 ORDER BY 1") == [("update_postimage", 33), ("update_preimage", 33)]
    plan = "\n".join(r[0] for r in lake.rows(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM lake.events_changes WHERE snapshot_id > 3 AND value > -1"))
    # the range goes to DuckLake as arguments, the condition stays above the feed
    assert "ducklake_fdw_changes('analytics', 'main', 'events', 4, <current snapshot>) OFFSET 0)" in plan, plan
    lake.import_schema("events")
    rows = lake.rows("SELECT change_type, count(*) FROM ducklake.table_changes('lake.events', 4, 4) GROUP BY 1 ORDER BY 1")
    assert rows == [("update_postimage", 33), ("update_preimage", 33)]


@pytest.fixture
def filed(lake):
    """2000 rows in a Parquet file, imported; each test's transactions follow."""
    lake.ref.execute("CREATE TABLE events (id BIGINT, value BIGINT)")
    lake.ref.execute("INSERT INTO events SELECT i, i FROM range(2000) t(i)")
    lake.import_schema("events")
    create_id_value_feed(lake)
    return lake


def latest_snapshot(lake):
    return lake.rows("SELECT ducklake.ducklake_latest_snapshot_id('lake.events')")[0][0]


def net(rows):
    """(id, value) -> inserted minus deleted, without the zeros."""
    counts = {}
    for change_type, *row in rows:
        sign = 1 if change_type in ("insert", "update_postimage") else -1
        counts[tuple(row)] = counts.get(tuple(row), 0) + sign
    return {row: n for row, n in counts.items() if n}


def test_transactions_of_several_statements_match_time_travel(filed):
    """Each row changed at most once, by transactions of several statements, through
    the FDW and through the reference client: the feed is the time-travel difference."""
    lake = filed
    start = latest_snapshot(lake) + 1
    with lake.conn.transaction():
        lake.conn.execute("INSERT INTO lake.events SELECT i, -i FROM generate_series(5000, 5009) i")
        lake.conn.execute("UPDATE lake.events SET value = value * 10 WHERE id BETWEEN 100 AND 104")
        lake.conn.execute("INSERT INTO lake.events VALUES (6000, 6000)")
    lake.ref.execute("BEGIN")
    lake.ref.execute("INSERT INTO events VALUES (7000, 7000), (7001, 7001)")
    lake.ref.execute("UPDATE events SET value = -1 WHERE id IN (200, 201)")
    lake.ref.execute("COMMIT")
    end = latest_snapshot(lake)
    assert end == start + 1
    got = lake.rows(f"SELECT snapshot_id, rowid, change_type, id, value FROM lake.events_changes "
                    f"WHERE snapshot_id BETWEEN {start} AND {end}")
    assert sorted(got) == sorted(time_travel_changes(lake, start, end))
    assert len(got) == 10 + 10 + 1 + 2 + 4


def test_rows_changed_twice_in_one_transaction_read_by_time_travel(filed):
    """DuckLake 1.5.5 reports the rows one transaction updated twice with their
    intermediate versions, and its own feed then miscounts them. Ours refuses such a
    snapshot, naming a row, until ducklake.resolve_changes finds them; the session then
    reads them as the difference of the table before and after, by time travel: exact,
    labels included."""
    lake = filed
    start = latest_snapshot(lake) + 1
    with lake.conn.transaction():
        lake.conn.execute("UPDATE lake.events SET value = value + 1 WHERE id % 3 = 0")
        lake.conn.execute("UPDATE lake.events SET value = value + 1 WHERE id % 5 = 0")
    lake.conn.execute("UPDATE lake.events SET value = -value WHERE id % 7 = 0")   # once: the macro
    with lake.conn.transaction():
        lake.conn.execute("UPDATE lake.events SET value = 0 WHERE id % 11 = 0")
        lake.conn.execute("DELETE FROM lake.events WHERE id % 22 = 0")
    end = latest_snapshot(lake)
    assert end == start + 2
    truth = time_travel_changes(lake, start, start)
    assert len(net([row[2:] for row in truth])) == 2 * (667 + 400 - 134)
    # DuckLake's own feed is not that difference (if this fails, DuckLake was fixed)
    theirs = lake.ref.rows(f"SELECT change_type, id, value FROM ducklake_table_changes('analytics', 'main', 'events', "
                           f"{start}, {start})")
    assert net(theirs) != net([row[2:] for row in truth])
    # the rows each of the two snapshots changed twice (either may be named first)
    twice = {(start, rowid) for (rowid,) in lake.ref.rows(f"SELECT rowid FROM events AT (VERSION => {start}) WHERE id % 15 = 0")}
    twice |= {(end, rowid) for (rowid,) in lake.ref.rows(f"SELECT rowid FROM events AT (VERSION => {end - 1}) WHERE id % 22 = 0")}
    pattern = re.compile(r"ambiguous change feed: DuckLake reports 2 versions of row (\d+) of main\.events in snapshot "
                         r"(\d+), which a transaction changed more than once; DuckLake 1\.5\.5 does not say which "
                         r"came first")
    query = f"SELECT snapshot_id, rowid, change_type, id, value FROM lake.events_changes WHERE snapshot_id >= {start}"
    for refused in [query, f"SELECT count(*) FROM lake.events_changes WHERE snapshot_id = {start} AND id = 1",
                    f"SELECT * FROM ducklake.table_changes('lake.events', 0, {start})"]:
        with pytest.raises(psycopg.errors.DataException) as error:
            lake.rows(refused)
        match = pattern.fullmatch(error.value.diag.message_primary)
        assert match and (int(match.group(2)), int(match.group(1))) in twice, error.value.diag.message_primary
        assert "ducklake.resolve_changes" in error.value.diag.message_hint
    # the snapshots before it still read, and the session goes on
    assert lake.rows(f"SELECT count(*) FROM lake.events_changes WHERE snapshot_id < {start}") == [(2000,)]
    assert lake.rows(f"SELECT ducklake.resolve_changes('lake.events', 0, {end})") == [([start, end],)]
    assert lake.rows(f"SELECT ducklake.resolve_changes('lake.events', 0, {end})") == [([],)]
    expected = sorted(time_travel_changes(lake, start, end))
    assert sorted(lake.rows(query)) == expected
    alive = sum(1 for i in range(2000) if (i % 3 == 0 or i % 5 == 0) and i % 22 != 0)
    joined = lake.rows(f"SELECT c.change_type, count(*) FROM lake.events_changes c JOIN lake.events e USING (id) "
                       f"WHERE c.snapshot_id = {start} GROUP BY 1 ORDER BY 1")
    assert joined == [("update_postimage", alive), ("update_preimage", alive)]
    json_rows = lake.rows(f"SELECT snapshot_id, rowid, change_type FROM ducklake.table_changes('lake.events', {start}, {end})")
    assert sorted(json_rows) == sorted(row[:3] for row in expected)
    # a lake schema change after them: the pieces would read different columns, so the
    # range is read whole again, and refused
    lake.ref.execute("ALTER TABLE events ADD COLUMN note VARCHAR")
    lake.ref.execute("INSERT INTO events VALUES (9000, 9000, 'x')")
    with pytest.raises(psycopg.errors.DataException):
        lake.rows(query)
    assert lake.rows(f"SELECT change_type, id FROM lake.events_changes WHERE snapshot_id > {end + 1}") == [("insert", 9000)]
    # what a session learns is its own
    other = lake.session()
    try:
        with pytest.raises(psycopg.errors.DataException):
            other.rows(query)
    finally:
        other.close()


def test_table_changed_reads_the_catalog_alone(filed):
    """ducklake.table_changed: whether snapshots in (after, up_to] changed a table."""
    lake = filed
    lake.ref.execute("CREATE TABLE other (id BIGINT)")
    lake.import_schema("other")
    start = latest_snapshot(lake)
    lake.ref.execute("INSERT INTO other VALUES (1)")                          # inlined insert
    lake.conn.execute("DELETE FROM lake.events WHERE id < 3")                 # inlined deletion from a file
    lake.ref.execute("INSERT INTO other SELECT i FROM range(100) t(i)")       # a file
    lake.conn.execute("UPDATE lake.events SET value = 0 WHERE id % 2 = 0")    # a delete file and a file
    end = latest_snapshot(lake)
    assert end == start + 4

    def changed(table, after, up_to):
        return lake.rows("SELECT ducklake.table_changed(%s::regclass, %s, %s)", (table, after, up_to))[0][0]

    assert [changed("lake.events", s - 1, s) for s in range(start + 1, end + 1)] == [False, True, False, True]
    assert [changed("lake.other", s - 1, s) for s in range(start + 1, end + 1)] == [True, False, True, False]
    assert changed("lake.events", start, end) and not changed("lake.events", end, end + 5)
    # it agrees with the change feed it stands in for
    for s in range(start + 1, end + 1):
        rows = lake.rows(f"SELECT count(*) FROM lake.events_changes WHERE snapshot_id = {s}")[0][0]
        assert changed("lake.events", s - 1, s) == (rows > 0)
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        lake.rows("SELECT ducklake.table_changed('pg_class'::regclass, 0, 1)")
    # an expired snapshot's changes are no longer listed: a range with one counts as changed
    lake.ref.execute(f"CALL ducklake_expire_snapshots('analytics', versions => [{start + 1}])")
    assert changed("lake.events", start, start + 1) and changed("lake.events", start + 2, start + 3) is False


def test_last_committed_snapshot_reads_the_catalog_not_the_transaction(filed, pg):
    """ducklake.last_committed_snapshot_id: the newest snapshot the catalog has
    committed, where ducklake_latest_snapshot_id is the one this transaction's lake
    reads (fixed at its first read). A catalog reached over a connection string of its
    own is asked through DuckDB, so both agree there."""
    lake = filed
    lake.conn.execute(f"CREATE SERVER far FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 'analytics', "
                      f"catalog_connection 'host={pg.base} port={pg.port} dbname={lake.dbname} user=postgres', "
                      f"data_path '{lake.data_path}')")
    lake.conn.execute("CREATE FOREIGN TABLE lake.far_events (id bigint, value bigint) SERVER far "
                      "OPTIONS (table 'events')")
    start = latest_snapshot(lake)

    def snapshots(table):
        return lake.rows(f"SELECT ducklake.ducklake_latest_snapshot_id('{table}'), "
                         f"ducklake.last_committed_snapshot_id('{table}')")[0]

    assert snapshots("lake.events") == (start, start)
    assert snapshots("lake.far_events") == (start, start)
    with lake.conn.transaction():
        assert lake.rows("SELECT count(*) FROM lake.events") == lake.rows("SELECT count(*) FROM lake.far_events")
        lake.ref.execute("INSERT INTO events VALUES (-1, -1)")
        assert snapshots("lake.events") == (start, start + 1)
        assert snapshots("lake.far_events") == (start, start)
    assert snapshots("lake.events") == (start + 1, start + 1)
    assert snapshots("lake.far_events") == (start + 1, start + 1)

    # The foreign table's SELECT privilege is required, as for the lake's current snapshot.
    role = new_role(lake.conn, "committed")
    grant_lake_reading(lake, role)
    with lake.connect(user=role) as conn:
        with conn.transaction():
            conn.execute("SELECT count(*) FROM lake.events")
            lake.ref.execute("INSERT INTO events VALUES (-2, -2)")
            assert conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('lake.events'), "
                                "ducklake.last_committed_snapshot_id('lake.events')").fetchone() == (start + 1, start + 2)
    lake.conn.execute(f"REVOKE SELECT ON lake.events FROM {role}")
    with lake.connect(user=role) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for foreign table events"):
            conn.execute("SELECT ducklake.last_committed_snapshot_id('lake.events')")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="is not a foreign table"):
        lake.rows("SELECT ducklake.last_committed_snapshot_id('pg_class')")


def test_a_range_that_only_inserted_reads_no_deletions(lake):
    """DuckLake 1.5.5's deletions scan reads every data file of the table that has a
    delete file, whatever the range. A range in which the catalog lists only
    insertions into the table is read from the insertions alone, with the same rows
    as DuckDB's feed: shown by removing the table's delete file, after which such a
    range still reads and one with a deletion fails. A transaction that changes rows
    it inserted itself is listed as insertions only, but has deletions."""
    lake.ref.execute("CREATE TABLE events (id BIGINT, event_type VARCHAR, value BIGINT)")     # 1
    lake.ref.execute("INSERT INTO events SELECT i, 'bulk', i FROM range(3000) t(i)")         # 2: a file
    lake.ref.execute("DELETE FROM events WHERE id % 2 = 0")                                    # 3: a delete file
    lake.ref.execute("INSERT INTO events SELECT i, 'more', i FROM range(5000, 6000) t(i)")   # 4: a file
    lake.ref.execute("INSERT INTO events VALUES (5, 'view', 50)")                              # 5: inlined
    lake.ref.execute("UPDATE events SET value = -1 WHERE id = 5")                              # 6: inlined
    lake.ref.execute("INSERT INTO events VALUES (7, 'view', 70)")                              # 7: inlined
    # Transactions changing rows they inserted: the catalog lists only insertions.
    lake.ref.execute("BEGIN")                                                                  # 8
    lake.ref.execute("INSERT INTO events SELECT i, 'own', i FROM range(7000, 9000) t(i)")
    lake.ref.execute("DELETE FROM events WHERE id IN (7001, 7002)")
    lake.ref.execute("UPDATE events SET value = 0 WHERE id = 7003")
    lake.ref.execute("COMMIT")
    lake.ref.execute("BEGIN")                                                                  # 9
    lake.ref.execute("INSERT INTO events VALUES (8, 'own', 80), (9, 'own', 90)")
    lake.ref.execute("DELETE FROM events WHERE id = 8")
    lake.ref.execute("UPDATE events SET value = 0 WHERE id = 9")
    lake.ref.execute("COMMIT")
    lake.conn.execute(CHANGES_TABLE)
    changes = lake.rows("SELECT snapshot_id, changes_made FROM __ducklake_metadata_analytics.ducklake_snapshot_changes "
                        "WHERE snapshot_id >= 8 ORDER BY 1")
    assert changes[0] == (8, "inserted_into_table:1,inlined_insert:1")
    ranges = [(4, 5), (4, 4), (5, 5), (7, 7), (2, 2), (2, 5), (3, 5), (4, 7), (6, 7), (8, 8), (9, 9), (7, 9)]
    expected = {r: duck_changes(lake, *r) for r in ranges}
    for start, end in ranges:
        assert_same_rows(pg_changes(lake, f"snapshot_id BETWEEN {start} AND {end}"), expected[(start, end)])

    delete_files = [row[0] for row in lake.rows("SELECT path FROM __ducklake_metadata_analytics.ducklake_delete_file "
                                                "WHERE begin_snapshot = 3")]
    assert len(delete_files) == 1
    (pathlib.Path(lake.data_path) / "main" / "events" / delete_files[0]).unlink()
    other = lake.session()
    try:
        for start, end in [(4, 5), (7, 7), (2, 2)]:
            with other.conn.cursor(binary=True) as cur:
                rows = cur.execute(f"SELECT * FROM lake.events_changes WHERE snapshot_id BETWEEN {start} AND {end} "
                                   "ORDER BY snapshot_id, rowid, change_type").fetchall()
            assert_same_rows(rows, expected[(start, end)])
        with pytest.raises(psycopg.Error, match="delete"):
            other.rows("SELECT count(*) FROM lake.events_changes WHERE snapshot_id BETWEEN 3 AND 5")
    finally:
        other.close()
