"""Stream tables equal their query, row for row, in the cases that went wrong: an UPDATE
of a data file that already has deletes, a group emptied and refilled, float sums
after deletes, settings that differ between the creator and whoever refreshes, and
definitions that text embedding broke (a trailing comment, a column called "a, b"),
and sources whose columns change."""

import psycopg
import pytest

from streams import SUMMARY_QUERY, frontier, full_result, latest, rows, setup_events, wait_for


def verify(conn, name):
    return conn.execute("SELECT difference, row_data FROM pgtrickle.verify_stream_table(%s)", (name,)).fetchall()


def frontier_of(conn, name):
    """The snapshot of the stream table's (one) source."""
    return conn.execute("SELECT (e.value ->> 'snapshot_id')::bigint FROM pgtrickle.pgt_stream_tables, "
                        "jsonb_each(frontier -> 'sources') e WHERE pgt_name = %s", (name,)).fetchone()[0]


def assert_exact(conn, name, query):
    assert rows(conn, f"SELECT * FROM {name}") == full_result(conn, query, frontier_of(conn, name))
    assert verify(conn, name) == []


def summary_of_a_file(lake):
    """3,000 events in one Parquet file (written by the reference client) and the
    seed's event_summary over them; the session's connection."""
    lake.ref.execute("CREATE TABLE events (event_id UUID, event_type VARCHAR, value BIGINT, created_at TIMESTAMPTZ)")
    lake.ref.execute("INSERT INTO events SELECT uuid(), ['a', 'b', 'c'][1 + i % 3], i, now() FROM range(3000) t(i)")
    lake.import_schema("events")
    lake.conn.execute("CREATE EXTENSION ducklake_ivm")
    lake.conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    return lake.conn


def test_update_of_a_file_with_deletes_keeps_groups_exact(lake):
    """A Parquet file with a delete file, then an UPDATE of its rows: the refresh must
    see the preimages (DuckLake 1.5.5 loses them under a pushed snapshot filter)."""
    conn = summary_of_a_file(lake)
    lake.ref.execute("DELETE FROM events WHERE value % 97 = 0")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert_exact(conn, "event_summary", SUMMARY_QUERY)
    lake.ref.execute("UPDATE events SET value = value + 1 WHERE value % 89 = 0")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert_exact(conn, "event_summary", SUMMARY_QUERY)
    assert sum(n for _, n, _ in rows(conn, "SELECT * FROM event_summary")) == 3000 - 31
    # An UPDATE through the FDW of the same file, and one that moves rows between groups.
    conn.execute("UPDATE lake.events SET event_type = 'd' WHERE value % 83 = 0")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert_exact(conn, "event_summary", SUMMARY_QUERY)


MIN_MAX = "SELECT g, min(v) AS lo, max(v) AS hi, count(*) AS n FROM lake.t GROUP BY g"


@pytest.fixture
def small_table(lake):
    lake.conn.execute("CREATE FOREIGN TABLE lake.t (g int, v int) SERVER lake OPTIONS (table 't')")
    lake.conn.execute("SELECT ducklake.create_table('lake.t')")
    lake.conn.execute("CREATE EXTENSION ducklake_ivm")
    lake.conn.execute("INSERT INTO lake.t VALUES (1, 1)")
    return lake


def test_min_max_of_a_group_emptied_and_refilled(small_table):
    conn = small_table.conn
    conn.execute("SELECT pgtrickle.create_stream_table('mm', %s, '1h')", (MIN_MAX,))
    conn.execute("INSERT INTO lake.t VALUES (2, 5)")
    conn.execute("DELETE FROM lake.t WHERE g = 2")
    conn.execute("SELECT pgtrickle.refresh('mm')")
    assert rows(conn, "SELECT * FROM mm") == [(1, 1, 1, 1)]
    conn.execute("INSERT INTO lake.t VALUES (2, 7)")
    conn.execute("SELECT pgtrickle.refresh('mm')")
    assert rows(conn, "SELECT * FROM mm") == [(1, 1, 1, 1), (2, 7, 7, 1)]
    assert_exact(conn, "mm", MIN_MAX)
    # emptied in one refresh, refilled in the next, and a group that never had a row left
    conn.execute("DELETE FROM lake.t WHERE g = 2")
    conn.execute("SELECT pgtrickle.refresh('mm')")
    conn.execute("INSERT INTO lake.t VALUES (2, 9), (2, 8)")
    conn.execute("SELECT pgtrickle.refresh('mm')")
    assert rows(conn, "SELECT * FROM mm") == [(1, 1, 1, 1), (2, 8, 9, 2)]
    state = conn.execute("SELECT 'pgtrickle_state.state_' || 'mm'::regclass::oid").fetchone()[0]
    assert conn.execute(f"SELECT count(*) FROM {state} WHERE __pgt_count = 0").fetchone() == (0,)


FLOATS = "SELECT g, sum(x) AS s, avg(x) AS a, count(*) AS n FROM lake.f GROUP BY g"


def test_float_sums_are_recomputed_after_deletes(lake):
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.f (id int, g int, x float8) SERVER lake OPTIONS (table 'f')")
    conn.execute("SELECT ducklake.create_table('lake.f')")
    conn.execute("CREATE EXTENSION ducklake_ivm")
    conn.execute("INSERT INTO lake.f VALUES (1, 1, 1e20), (2, 1, 1), (3, 2, 'Infinity'), (4, 2, 2)")
    conn.execute("SELECT pgtrickle.create_stream_table('fs', %s, '1h')", (FLOATS,))
    assert rows(conn, "SELECT * FROM fs") == [(1, 1e20, 5e19, 2), (2, float("inf"), float("inf"), 2)]
    # old + inserted - deleted would give (1e20 + 1) - 1e20 = 0 and inf - inf = NaN
    conn.execute("DELETE FROM lake.f WHERE id IN (1, 3)")
    conn.execute("SELECT pgtrickle.refresh('fs')")
    assert rows(conn, "SELECT * FROM fs") == [(1, 1.0, 1.0, 1), (2, 2.0, 2.0, 1)]
    conn.execute("INSERT INTO lake.f VALUES (5, 1, 0.5)")
    conn.execute("SELECT pgtrickle.refresh('fs')")
    assert rows(conn, "SELECT * FROM fs") == [(1, 1.5, 0.75, 2), (2, 2.0, 2.0, 1)]
    assert_exact(conn, "fs", FLOATS)


DAYS = "SELECT date_trunc('day', created_at) AS d, count(*) AS n FROM lake.events GROUP BY 1"


def test_settings_recorded_at_creation_apply_to_every_refresh(lake):
    """Two events ten minutes apart, both on 2025-01-02 in Tokyo: whoever refreshes
    (a session in UTC, the scheduler) they stay in one Tokyo day."""
    setup_events(lake)
    conn = lake.conn
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 1, '2025-01-01 23:30:00+00')")
    conn.execute("SET TimeZone = 'Asia/Tokyo'")
    conn.execute("SELECT pgtrickle.create_stream_table('days_manual', %s, '1h')", (DAYS,))
    conn.execute("SELECT pgtrickle.create_stream_table('days_scheduled', %s, '1s')", (DAYS,))
    assert conn.execute("SELECT settings ->> 'TimeZone' FROM pgtrickle.pgt_stream_tables "
                        "WHERE pgt_name = 'days_manual'").fetchone() == ("Asia/Tokyo",)
    conn.execute("RESET TimeZone")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'b', 1, '2025-01-01 23:40:00+00')")
    conn.execute("SELECT pgtrickle.refresh('days_manual')")
    expected = [("2025-01-01 15:00:00+00", 2)]  # midnight in Tokyo, printed in UTC
    assert rows(conn, "SELECT d::text, n FROM days_manual") == expected
    target = latest(conn)
    wait_for(lambda: (frontier(conn, "days_scheduled") or -1) >= target, "the scheduler's refresh")
    assert rows(conn, "SELECT d::text, n FROM days_scheduled") == expected
    # FULL refreshes and verification run under the recorded settings too.
    conn.execute("SELECT pgtrickle.refresh('days_manual', 'FULL')")
    assert rows(conn, "SELECT d::text, n FROM days_manual") == expected
    assert verify(conn, "days_manual") == []


def test_names_bind_when_the_stream_table_is_defined(lake):
    """The query's functions are the ones its creator's search path found, whoever
    refreshes it and whatever look-alike appears later on another search path."""
    setup_events(lake)
    conn = lake.conn
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE FUNCTION app.bucket(v bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT v / 10'")
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 15, now())")
    conn.execute("SET search_path = app, public")
    query = "SELECT bucket(value) AS b, count(*) AS n FROM lake.events GROUP BY 1"
    conn.execute("SELECT pgtrickle.create_stream_table('public.buckets', %s, '1h')", (query,))
    conn.execute("RESET search_path")
    conn.execute("CREATE FUNCTION public.bucket(v bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT -1::bigint'")
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 27, now())")
    conn.execute("SELECT pgtrickle.refresh('buckets')")
    assert rows(conn, "SELECT * FROM buckets") == [(1, 1), (2, 1)]
    conn.execute("SELECT pgtrickle.refresh('buckets', 'FULL')")
    assert rows(conn, "SELECT * FROM buckets") == [(1, 1), (2, 1)]
    assert verify(conn, "buckets") == []
    # renaming the function (or a source column) is followed, dropping it is refused
    conn.execute("ALTER FUNCTION app.bucket(bigint) RENAME TO tens")
    conn.execute("SELECT pgtrickle.refresh('buckets', 'FULL')")
    assert rows(conn, "SELECT * FROM buckets") == [(1, 1), (2, 1)]
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        conn.execute("DROP FUNCTION app.tens(bigint)")


def test_definitions_text_embedding_broke(lake):
    setup_events(lake)
    conn = lake.conn
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 1, now()), (gen_random_uuid(), 'b', 2, now())")
    commented = "SELECT event_type, count(*) AS n FROM lake.events GROUP BY event_type -- per type"
    conn.execute("SELECT pgtrickle.create_stream_table('commented', %s, '1h')", (commented,))
    conn.execute("SELECT pgtrickle.refresh('commented', 'FULL')")
    assert rows(conn, "SELECT * FROM commented") == [("a", 1), ("b", 1)]
    assert verify(conn, "commented") == []
    conn.execute('CREATE FOREIGN TABLE lake.odd ("a, b" int, "x""y" text) SERVER lake')
    conn.execute("SELECT ducklake.create_table('lake.odd')")
    conn.execute("INSERT INTO lake.odd VALUES (1, 'p'), (2, 'q'), (2, 'q')")
    query = 'SELECT "x""y", sum("a, b") AS "total, all" FROM lake.odd GROUP BY 1'
    conn.execute("SELECT pgtrickle.create_stream_table('odd_summary', %s, '1h')", (query,))
    conn.execute("INSERT INTO lake.odd VALUES (5, 'p')")
    conn.execute("DELETE FROM lake.odd WHERE \"a, b\" = 2")
    conn.execute("SELECT pgtrickle.refresh('odd_summary')")
    assert rows(conn, "SELECT * FROM odd_summary") == [("p", 6)]
    assert_exact(conn, "odd_summary", query)


def status_of(conn, name):
    return conn.execute("SELECT status, last_error FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                        (name,)).fetchone()


def test_sources_whose_columns_change(lake):
    setup_events(lake)
    conn = lake.conn
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 1, now())")
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    # a column added to the lake table (not to the foreign table)
    conn.execute("SELECT ducklake.execute('lake', 'ALTER TABLE events ADD COLUMN note VARCHAR')")
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'a', 2, now())")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert_exact(conn, "event_summary", SUMMARY_QUERY)
    # ... and to the foreign table
    conn.execute("ALTER FOREIGN TABLE lake.events ADD COLUMN note text")
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'b', 3, now(), 'hello')")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert_exact(conn, "event_summary", SUMMARY_QUERY)
    # a foreign table column renamed (the lake column keeps its name)
    conn.execute("ALTER FOREIGN TABLE lake.events RENAME COLUMN value TO amount")
    conn.execute("ALTER FOREIGN TABLE lake.events ALTER COLUMN amount OPTIONS (ADD column_name 'value')")
    conn.execute("INSERT INTO lake.events (event_id, event_type, amount, created_at) VALUES (gen_random_uuid(), 'b', 4, now())")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert rows(conn, "SELECT * FROM event_summary") == [("a", 2, 3), ("b", 2, 7)]
    assert conn.execute("SELECT defining_query FROM pgtrickle.pgt_stream_tables").fetchone() == (SUMMARY_QUERY,)
    # a lake column renamed behind the foreign table: a clear error, then fixed
    conn.execute("SELECT ducklake.execute('lake', 'ALTER TABLE events RENAME COLUMN event_type TO kind')")
    for statement in ["INSERT INTO lake.events (event_id, amount, created_at) VALUES (gen_random_uuid(), 5, now())",
                      "SELECT pgtrickle.refresh('event_summary')"]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
        assert caught.value.sqlstate == "HV005", str(caught.value)
        assert caught.value.diag.message_primary == \
            'DuckLake table main.events on server "lake" has no column "event_type"'
        assert "column_name" in caught.value.diag.message_hint
    conn.execute("ALTER FOREIGN TABLE lake.events ALTER COLUMN event_type OPTIONS (ADD column_name 'kind')")
    conn.execute("INSERT INTO lake.events (event_id, amount, created_at) VALUES (gen_random_uuid(), 5, now())")
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert rows(conn, "SELECT * FROM event_summary") == [("a", 2, 3), ("b", 2, 7), (None, 1, 5)]
    assert verify(conn, "event_summary") == []


def test_rows_changed_twice_by_one_transaction_stay_differential_and_exact(lake):
    """A transaction that updates rows twice: DuckLake 1.5.5's change feed miscounts
    them (see test_changes); the FDW's reads that snapshot by time travel, and the
    refresh stays differential and exact."""
    conn = summary_of_a_file(lake)
    # refreshed here, not by the scheduler (it would see the commit first)
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['event_summary'])")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    for _ in range(2):
        with conn.transaction():
            conn.execute("UPDATE lake.events SET value = value + 1, event_type = 'd' WHERE value % 3 = 0")
            conn.execute("UPDATE lake.events SET value = value + 1 WHERE value % 5 = 0")
            conn.execute("DELETE FROM lake.events WHERE value % 7 = 0")
        conn.execute("SELECT pgtrickle.refresh('event_summary')")
        assert notices == []
        assert conn.execute("SELECT last_error FROM pgtrickle.pgt_stream_tables").fetchone()[0] is None
        assert_exact(conn, "event_summary", SUMMARY_QUERY)


REAGGREGATED = ("SELECT g, count(DISTINCT v) AS dv, sum(DISTINCT v) AS sv, bool_and(b) AS ba, bool_or(b) AS bo, "
                "every(v > 0) AS ev, count(DISTINCT s) AS ds, min(DISTINCT v) AS lo, count(*) AS n "
                "FROM lake.d GROUP BY g")
REAGGREGATED_SCALAR = "SELECT count(DISTINCT v) AS dv, bool_or(b) AS bo, count(*) AS n FROM lake.d"
# any aggregate, recomputed per touched group: ordered ones, ordered-set ones, statistics
RECOMPUTED = ("SELECT g, string_agg(s, ',' ORDER BY s, id) AS ss, array_agg(v ORDER BY id) AS vs, "
              "avg(DISTINCT v) AS adv, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS median, "
              "stddev_samp(v) AS sd, bit_or(v) AS bits, jsonb_agg(b ORDER BY id) FILTER (WHERE v > 0) AS bs, "
              # FILTER guards the argument: no division by zero
              "count(DISTINCT 100 / v) FILTER (WHERE v <> 0) AS inverses, public.plus_all(v) AS total, "
              "count(*) AS n FROM lake.d GROUP BY g")
RECOMPUTED_SCALAR = ("SELECT string_agg(s, '/' ORDER BY id DESC) AS ss, mode() WITHIN GROUP (ORDER BY v) AS common, "
                     "count(DISTINCT s) AS ds FROM lake.d")
REAGGREGATED_HAVING = "SELECT g, count(DISTINCT s) AS ds FROM lake.d GROUP BY g HAVING count(DISTINCT v) > 2"
FILTERED = ("SELECT g, count(*) FILTER (WHERE b) AS nb, sum(v) FILTER (WHERE s = 's1') AS s1, "
            "max(v) FILTER (WHERE v < 3) AS under3, avg(v) FILTER (WHERE b) AS avg_b, "
            "count(DISTINCT s) FILTER (WHERE v > 0) AS ds_pos, count(*) AS n FROM lake.d GROUP BY g")


def test_distinct_boolean_and_filtered_aggregates_stay_exact(lake):
    """count(DISTINCT), sum(DISTINCT), bool_and/every, bool_or: no running value follows
    them under deletions, so each group a change touches is aggregated again from its
    rows at the target snapshot; FILTER (WHERE p) is the aggregate of CASE WHEN p. Random inserts, updates (moving rows between groups)
    and deletes, with NULLs, against the query at the frontier after every refresh."""
    import random
    rng = random.Random(20261207)
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.d (id int, g int, v int, b bool, s text) SERVER lake OPTIONS (table 'd')")
    conn.execute("SELECT ducklake.create_table('lake.d')")
    conn.execute("CREATE EXTENSION ducklake_ivm")
    conn.execute("INSERT INTO lake.d SELECT i, i % 4, i % 7 - 1, i % 3 = 0, 's' || i % 5 FROM generate_series(1, 60) i")
    # a user-defined aggregate of immutable functions
    conn.execute("CREATE FUNCTION public.plus(bigint, int) RETURNS bigint LANGUAGE sql IMMUTABLE "
                 "AS 'SELECT coalesce($1, 0) + coalesce($2, 0)'")
    conn.execute("CREATE AGGREGATE public.plus_all(int) (SFUNC = public.plus, STYPE = bigint)")
    shapes = {"reagg": REAGGREGATED, "reagg_scalar": REAGGREGATED_SCALAR, "reagg_having": REAGGREGATED_HAVING,
              "filtered": FILTERED, "recomputed": RECOMPUTED, "recomputed_scalar": RECOMPUTED_SCALAR}
    for name, query in shapes.items():
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
        conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))
    modes = conn.execute("SELECT DISTINCT refresh_mode FROM pgtrickle.pgt_stream_tables").fetchall()
    assert modes == [("DIFFERENTIAL",)]
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    next_id = 61
    for _ in range(8):
        for _ in range(rng.randint(1, 4)):
            action = rng.choice(["insert", "update", "delete"])
            if action == "insert":
                values = ", ".join(
                    f"({next_id + k}, {rng.randint(0, 4)}, {rng.choice(['NULL', str(rng.randint(-2, 6))])}, "
                    f"{rng.choice(['NULL', 'true', 'false'])}, {rng.choice(['NULL', repr('s' + str(rng.randint(0, 6)))])})"
                    for k in range(rng.randint(1, 5)))
                conn.execute(f"INSERT INTO lake.d VALUES {values}")
                next_id += 5
            elif action == "update":
                conn.execute(f"UPDATE lake.d SET g = {rng.randint(0, 4)}, v = v + 1, b = NOT b "
                             f"WHERE id % {rng.randint(3, 9)} = {rng.randint(0, 2)}")
            else:
                conn.execute(f"DELETE FROM lake.d WHERE id % {rng.randint(5, 13)} = {rng.randint(0, 4)}")
        for name, query in shapes.items():
            conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
            assert_exact(conn, name, query)
    assert conn.execute("SELECT count(*) FROM reagg").fetchone()[0] > 0
    # every row deleted: the one-group form shows the aggregates over no rows (0, NULL),
    # the grouped forms nothing; then rows again
    for statement in ("DELETE FROM lake.d", "INSERT INTO lake.d VALUES (1, 1, 5, true, 'x'), (2, 1, 5, false, NULL)"):
        conn.execute(statement)
        for name, query in shapes.items():
            conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
            assert_exact(conn, name, query)
        if statement.startswith("DELETE"):
            assert rows(conn, "SELECT * FROM reagg_scalar") == [(0, None, 0)]
            assert rows(conn, "SELECT * FROM recomputed_scalar") == [(None, None, 0)]
    assert rows(conn, "SELECT * FROM reagg_scalar") == [(1, True, 2)]
    assert notices == []  # no refresh was rebuilt in full


def test_a_user_defined_aggregate_of_a_volatile_function_is_refused(lake):
    """Its transition function could read what a refresh does not track."""
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.d (g int, v int) SERVER lake OPTIONS (table 'd')")
    conn.execute("SELECT ducklake.create_table('lake.d')")
    conn.execute("CREATE EXTENSION ducklake_ivm")
    conn.execute("CREATE FUNCTION public.plus(bigint, int) RETURNS bigint LANGUAGE sql VOLATILE "
                 "AS 'SELECT coalesce($1, 0) + coalesce($2, 0)'")
    conn.execute("CREATE AGGREGATE public.plus_all(int) (SFUNC = public.plus, STYPE = bigint)")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
        conn.execute("SELECT pgtrickle.create_stream_table('t', 'SELECT g, public.plus_all(v) FROM lake.d GROUP BY g')")
    assert error.value.diag.message_primary.startswith(
        "aggregate plus_all() whose transition or final function is not IMMUTABLE"), error.value.diag.message_primary
