"""Stream tables over a DuckLake table: creation, differential refresh by the
scheduler, FULL rebuilds at the frontier, pause/resume/rewind, and errors."""

import threading
import time

import psycopg
import pytest

from streams import (SUMMARY_QUERY, frontier, full_result, insert_events, latest, rows, setup_events,
                     wait_for, wait_until_caught_up)


@pytest.fixture
def events(lake):
    setup_events(lake)
    return lake


def test_create_populates_and_scheduler_applies_inserts(events):
    conn = events.conn
    insert_events(conn, "click", 3, 10)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s')", (SUMMARY_QUERY,))
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 3, 10 * 3)]
    row = conn.execute("SELECT table_name, pgt_schema, status, refresh_mode, schedule FROM pgtrickle.pgt_stream_tables").fetchone()
    assert row == ("event_summary", "public", "ACTIVE", "DIFFERENTIAL", "1s")
    assert frontier(conn, "event_summary") == latest(conn)
    insert_events(conn, "view", 2, 5)
    insert_events(conn, "click", 1, 7)
    snapshot = wait_until_caught_up(conn, "event_summary")
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 4, 37), ("view", 2, 10)]
    assert rows(conn, "SELECT * FROM event_summary") == full_result(conn, SUMMARY_QUERY, snapshot)


def error_of(conn, sql, params=None):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, params)
    return info.value.sqlstate, info.value.diag.message_primary


@pytest.mark.parametrize("query, construct", [
    ("SELECT e.event_type, s.n FROM lake.events e LEFT JOIN LATERAL (SELECT count(*) AS n FROM lake.events f "
     "WHERE f.value = e.value) s ON true", "a LATERAL item on the nullable side of a LEFT JOIN"),
    ("SELECT e.event_type FROM lake.events e JOIN pg_class c ON c.relname = e.event_type",
     "reading pg_catalog.pg_class (neither a DuckLake foreign table nor a user's Postgres table)"),
    ("SELECT count(*) FROM lake.events e, lake.events f GROUP BY e.value + f.value",
     "GROUP BY item 1 without that expression"),
    ("SELECT event_type, row_number() OVER () FROM lake.events", "a window function"),
    ("SELECT event_type FROM lake.events LIMIT 5", "LIMIT/OFFSET"),
    ("SELECT avg(DISTINCT value::float8) FROM lake.events",
     "avg() of double precision recomputed per group (its last digits depend on the order of the rows)"),
    ("SELECT event_type, percentile_disc(length(event_type) / 10.0) WITHIN GROUP (ORDER BY value) FROM lake.events "
     "GROUP BY event_type",
     "percentile_disc() with direct arguments that read columns"),
    ("SELECT event_type, random() FROM lake.events", "a volatile function"),
    ("SELECT count(*) FROM lake.events GROUP BY event_type", "GROUP BY c.event_type without that expression"),
    ("SELECT string_agg(event_type, ',') FROM lake.events",
     "string_agg() without ORDER BY (its result depends on the order the rows come in)"),
    ("SELECT relname FROM pg_class", "reading pg_catalog.pg_class (neither a DuckLake foreign table nor a user's Postgres table)"),
    ("SELECT event_type, (SELECT max(value) FROM lake.events) FROM lake.events",
     "a subquery expression in the select list, GROUP BY or ORDER BY (only in WHERE)"),
    ("SELECT event_type FROM lake.events WHERE created_at > now() - interval '1 day'", "now() (its value changes"),
    ("SELECT event_type FROM lake.events WHERE created_at > CURRENT_DATE", "CURRENT_DATE, CURRENT_TIMESTAMP"),
    ("SELECT event_type, tableoid FROM lake.events", "a system column or whole-row reference"),
    ("SELECT DISTINCT e FROM lake.events e", "a system column or whole-row reference"),
    ("SELECT event_type FROM lake.events UNION ALL SELECT event_type FROM lake.events LIMIT 3", "LIMIT/OFFSET"),
    ("SELECT event_type FROM lake.events UNION ALL SELECT event_type FROM lake.events WHERE random() < 0.5",
     "a volatile function"),
])
def test_unsupported_queries_are_rejected_naming_the_construct(events, query, construct):
    sqlstate, message = error_of(events.conn, "SELECT pgtrickle.create_stream_table('st', %s)", (query,))
    assert sqlstate == "0A000"
    assert message.startswith(construct) and message.endswith("is not supported in a DIFFERENTIAL stream table"), message
    assert events.conn.execute("SELECT to_regclass('st'), count(*) FROM pgtrickle.pgt_stream_tables").fetchone() \
        == (None, 0)


def test_full_mode_runs_queries_differential_cannot(events):
    conn = events.conn
    insert_events(conn, "click", 3, 1)
    insert_events(conn, "view", 1, 2)
    query = "SELECT event_type, row_number() OVER (ORDER BY event_type) AS rank FROM lake.events GROUP BY event_type"
    conn.execute("SELECT pgtrickle.create_stream_table('ranked', %s, '1h', 'FULL')", (query,))
    assert rows(conn, "SELECT * FROM ranked") == [("click", 1), ("view", 2)]
    insert_events(conn, "alpha", 1, 1)
    conn.execute("SELECT pgtrickle.refresh('ranked')")
    assert rows(conn, "SELECT * FROM ranked") == [("alpha", 1), ("click", 2), ("view", 3)]
    assert frontier(conn, "ranked") == latest(conn)


@pytest.mark.parametrize("call, sqlstate, message", [
    ("SELECT pgtrickle.create_stream_table('st', 'SELECT event_type FROM lake.events', '5 parsecs')",
     "22023", 'invalid schedule "5 parsecs"'),
    ("SELECT pgtrickle.create_stream_table('st', 'SELECT event_type FROM lake.events', '1s', 'SOMETIMES')",
     "22023", "invalid refresh mode \"SOMETIMES\": expected 'DIFFERENTIAL' or 'FULL'"),
    ("SELECT pgtrickle.refresh('no_such_table')", "42P01", 'stream table "no_such_table" does not exist'),
    ("SELECT pgtrickle.pause_scheduler(ARRAY['no_such_table'])", "42P01", 'stream table "no_such_table" does not exist'),
    ("SELECT pgtrickle.create_stream_table('st', 'SELECT event_type FROM lake.nope')", "42P01",
     'relation "lake.nope" does not exist'),
    ("SELECT pgtrickle.create_stream_table('st', 'SELECT 1; SELECT 2')", "42601",
     "the defining query must be exactly one SELECT statement, found 2"),
])
def test_bad_arguments_are_clear_errors(events, call, sqlstate, message):
    assert error_of(events.conn, call) == (sqlstate, message)


def test_invalid_frontier_is_an_error_then_recovers(events):
    conn = events.conn
    insert_events(conn, "click", 2, 1)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1s')", (SUMMARY_QUERY,))
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:lake.events,snapshot_id}', '999999'::jsonb)")
    current = latest(conn)
    assert error_of(conn, "SELECT pgtrickle.refresh('event_summary')") == (
        "22023", f"frontier of public.event_summary is snapshot 999999 of the lake, but its current snapshot is {current}")
    # The scheduler marks it ERROR with the message, and keeps retrying.
    wait_for(lambda: conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables").fetchone()[0] == "ERROR",
             "status ERROR")
    status, error, errors = conn.execute(
        "SELECT status, last_error, consecutive_errors FROM pgtrickle.pgt_stream_tables").fetchone()
    assert error.startswith("frontier of public.event_summary is snapshot 999999") and errors >= 1
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = '{\"sources\": {\"ducklake:lake.events\": "
                 "{\"snapshot_id\": \"x\"}}}'")
    assert error_of(conn, "SELECT pgtrickle.refresh('event_summary')") == (
        "22023", 'frontier of public.event_summary: snapshot_id of "ducklake:lake.events" must be a non-negative integer, found "x"')
    # Fixing the frontier heals it without anyone touching the status.
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:lake.events,snapshot_id}', %s::text::jsonb)", (str(current),))
    insert_events(conn, "view", 1, 5)
    wait_for(lambda: conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables").fetchone()[0] == "ACTIVE",
             "status ACTIVE again")
    snapshot = wait_until_caught_up(conn, "event_summary")
    assert conn.execute("SELECT last_error, consecutive_errors FROM pgtrickle.pgt_stream_tables").fetchone() == (None, 0)
    assert rows(conn, "SELECT * FROM event_summary") == full_result(conn, SUMMARY_QUERY, snapshot)


def test_rewind_function_and_schema_qualified_names(events):
    conn = events.conn
    conn.execute("CREATE SCHEMA analytics")
    insert_events(conn, "click", 2, 1)
    good = latest(conn)
    insert_events(conn, "click", 5, 1)
    conn.execute("SELECT pgtrickle.create_stream_table('analytics.summary', %s, '1h')", (SUMMARY_QUERY,))
    assert conn.execute("SELECT pgt_schema, pgt_name FROM pgtrickle.pgt_stream_tables").fetchone() == ("analytics", "summary")
    assert rows(conn, "SELECT * FROM analytics.summary") == [("click", 7, 7)]
    conn.execute("SELECT pgtrickle.rewind('analytics.summary', %s)", (good,))
    assert rows(conn, "SELECT * FROM analytics.summary") == [("click", 2, 2)]
    assert conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables").fetchone() == ("PAUSED",)
    assert frontier(conn, "summary") == good
    conn.execute("SELECT pgtrickle.resume_scheduler(ARRAY['analytics.summary'])")
    conn.execute("SELECT pgtrickle.refresh_stream_table('analytics.summary')")
    assert rows(conn, "SELECT * FROM analytics.summary") == [("click", 7, 7)]
    assert error_of(conn, "SELECT pgtrickle.rewind('analytics.summary', 999999)")[0] == "22023"


def test_drop_alter_and_dependencies(events):
    conn = events.conn
    insert_events(conn, "click", 2, 3)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    relid = conn.execute("SELECT 'event_summary'::regclass::oid").fetchone()[0]
    sqlstate, _ = error_of(conn, "DROP FOREIGN TABLE lake.events")
    assert sqlstate == "2BP01"
    # Same columns: the result table is kept.
    conn.execute("SELECT pgtrickle.alter_stream_table('event_summary', query => %s, schedule => '5s')",
                 (SUMMARY_QUERY + " HAVING count(*) > 5",))
    assert conn.execute("SELECT 'event_summary'::regclass::oid").fetchone()[0] == relid
    assert rows(conn, "SELECT * FROM event_summary") == []
    assert conn.execute("SELECT schedule, defining_query LIKE '%%HAVING%%' FROM pgtrickle.pgt_stream_tables").fetchone() \
        == ("5s", True)
    # Different columns: recreated.
    conn.execute("SELECT pgtrickle.alter_stream_table('event_summary', query => 'SELECT DISTINCT event_type FROM lake.events')")
    assert rows(conn, "SELECT * FROM event_summary") == [("click",)]
    relid = conn.execute("SELECT 'event_summary'::regclass::oid").fetchone()[0]
    internals = f"SELECT count(*) FROM pg_class WHERE relname ~ '_{relid}(_[0-9]+)?$'"
    assert conn.execute(internals).fetchone() == (6,)  # state, affected, changes, feed, old + state index
    conn.execute("SELECT pgtrickle.drop_stream_table('event_summary')")
    assert conn.execute(internals).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables").fetchone() == (0,)
    # DROP TABLE forgets the stream table as well.
    conn.execute("SELECT pgtrickle.create_stream_table('s2', %s, '1h')", (SUMMARY_QUERY,))
    conn.execute("DROP TABLE s2")
    assert conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables").fetchone() == (0,)
    conn.execute("DROP FOREIGN TABLE lake.events")


def test_cascade_drops_views_on_a_recreated_result(events):
    conn = events.conn
    insert_events(conn, "click", 2, 3)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    conn.execute("CREATE VIEW busy AS SELECT event_type FROM event_summary WHERE event_count > 1")
    other_columns = "SELECT DISTINCT event_type FROM lake.events"
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as caught:
        conn.execute("SELECT pgtrickle.alter_stream_table('event_summary', query => %s)", (other_columns,))
    assert caught.value.diag.message_detail == "view busy depends on table event_summary"
    assert conn.execute("SELECT defining_query FROM pgtrickle.pgt_stream_tables").fetchone() == (SUMMARY_QUERY,)
    conn.execute("SELECT pgtrickle.alter_stream_table('event_summary', query => %s, cascade => true)", (other_columns,))
    assert rows(conn, "SELECT * FROM event_summary") == [("click",)]
    assert conn.execute("SELECT to_regclass('busy')").fetchone() == (None,)
    conn.execute("CREATE VIEW everything AS SELECT * FROM event_summary")
    assert error_of(conn, "SELECT pgtrickle.drop_stream_table('event_summary')")[0] == "2BP01"
    conn.execute("SELECT pgtrickle.drop_stream_table('event_summary', cascade => true)")
    assert conn.execute("SELECT to_regclass('everything'), count(*) FROM pgtrickle.pgt_stream_tables "
                        "GROUP BY 1").fetchall() == []


def test_verify_compares_with_the_query_at_the_frontier(events):
    conn = events.conn
    insert_events(conn, "click", 2, 3)
    # Created paused: the scheduler's first refresh would move the frontier under the test.
    with conn.transaction():
        conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
        conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['event_summary'])")
    verify = "SELECT difference, row_data FROM pgtrickle.verify_stream_table('event_summary') ORDER BY 1, 2::text"
    assert conn.execute(verify).fetchall() == []
    # newer lake rows are not a difference: the table is checked at its frontier
    insert_events(conn, "view", 1, 1)
    assert conn.execute(verify).fetchall() == []
    conn.execute("UPDATE event_summary SET total_value = 7")
    conn.execute("INSERT INTO event_summary VALUES ('ghost', 1, 1)")
    assert sorted(conn.execute(verify).fetchall(), key=repr) == [
        ("extra", {"event_type": "click", "event_count": 2, "total_value": 7}),
        ("extra", {"event_type": "ghost", "event_count": 1, "total_value": 1}),
        ("missing", {"event_type": "click", "event_count": 2, "total_value": 6}),
    ]
    conn.execute("SELECT pgtrickle.refresh('event_summary', 'FULL')")
    assert conn.execute(verify).fetchall() == []
    assert error_of(conn, "SELECT * FROM pgtrickle.verify_stream_table('nope')")[0] == "42P01"


def test_maintenance_keeps_snapshots_a_frontier_needs(events):
    conn = events.conn
    insert_events(conn, "click", 1, 1)
    held = latest(conn)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    conn.execute("SELECT pgtrickle.rewind('event_summary', %s)", (held,))  # paused at `held`
    for _ in range(3):
        insert_events(conn, "view", 1, 1)
    assert conn.execute("SELECT server_oid = (SELECT oid FROM pg_foreign_server WHERE srvname = 'lake'), snapshot_id, "
                        "stream_table::text FROM pgtrickle.snapshot_holds()").fetchall() == [(True, held, "event_summary")]
    conn.execute("SELECT * FROM ducklake.maintain('lake', older_than => '0 seconds')")
    remaining = [r[0] for r in conn.execute("SELECT snapshot_id FROM ducklake.snapshots('lake')").fetchall()]
    assert min(remaining) == held
    # The rewound table can still rebuild at its frontier and replay forward from it.
    conn.execute("SELECT pgtrickle.refresh('event_summary', 'FULL')")
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 1, 1)]
    conn.execute("SELECT pgtrickle.refresh('event_summary')")
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 1, 1), ("view", 3, 3)]
    # Without stream tables nothing is held back.
    conn.execute("SELECT pgtrickle.drop_stream_table('event_summary')")
    conn.execute("SELECT * FROM ducklake.maintain('lake', older_than => '0 seconds')")
    assert conn.execute("SELECT count(*) FROM ducklake.snapshots('lake')").fetchone() == (1,)


def test_drop_table_during_a_refresh_waits_instead_of_deadlocking(events):
    """A refresh locks the result table before its catalog row, in DROP TABLE's order
    (DROP locks the table, then its event trigger deletes the row): a DROP that comes
    while a refresh's transaction is open waits for it. In the other order, the DROP held
    the table and waited for the row while the refresh waited for the table: a deadlock,
    which a concurrent scheduler refresh hit in the suite."""
    conn = events.conn
    insert_events(conn, "click", 2, 3)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    refresher = events.connect(autocommit=False)
    refresher.execute("SELECT pgtrickle.refresh('event_summary')")  # up to date: only reads and locks
    outcome = []

    def drop():
        try:
            with events.connect() as dropper:
                dropper.execute("DROP TABLE event_summary")
            outcome.append("dropped")
        except psycopg.Error as e:
            outcome.append(e.sqlstate)

    thread = threading.Thread(target=drop)
    thread.start()
    deadline = time.monotonic() + 30
    while not conn.execute("SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'event_summary'::regclass").fetchone():
        assert time.monotonic() < deadline, "the DROP does not wait for the refresh"
        time.sleep(0.01)
    # the refresh's transaction goes on using the table while the DROP waits
    assert rows(refresher, "SELECT * FROM event_summary") == [("click", 2, 6)]
    refresher.commit()
    thread.join(timeout=30)
    assert outcome == ["dropped"]
    assert conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables").fetchone() == (0,)
    refresher.close()


def test_drop_of_a_source_during_a_refresh_fails_plainly(events):
    """DROP FOREIGN TABLE of a source locks the source, then the definition's view, then
    the result table (which depends on the view). A refresh locks the sources before the
    result table, so a refresh waiting for a source holds nothing the DROP needs: the
    DROP fails with 2BP01 and the refresh then runs. In the other order each waited for
    the other, and one of them failed with a deadlock (40P01), as the suite saw on PG15."""
    conn = events.conn
    insert_events(conn, "click", 2, 3)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    insert_events(conn, "view", 1, 4)
    dropper = events.connect(autocommit=False)
    # DROP's first step, the source locked ACCESS EXCLUSIVE (LOCK TABLE refuses foreign tables)
    dropper.execute("ALTER FOREIGN TABLE lake.events OWNER TO CURRENT_USER")
    outcome = []

    def refresh():
        try:
            with events.connect() as refresher:
                refresher.execute("SELECT pgtrickle.refresh_stream_table('event_summary')")
            outcome.append("refreshed")
        except psycopg.Error as e:
            outcome.append(e.sqlstate)

    thread = threading.Thread(target=refresh)
    thread.start()
    wait_for(lambda: conn.execute("SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'lake.events'::regclass")
             .fetchone(), "the refresh waiting for the source")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        dropper.execute("DROP FOREIGN TABLE lake.events")
    dropper.rollback()
    dropper.close()
    thread.join(timeout=60)
    assert outcome == ["refreshed"]
    assert rows(conn, "SELECT * FROM event_summary") == [("click", 2, 6), ("view", 1, 4)]


def scheduler_idle_since(conn, moment):
    """Whether this database's scheduler finished a refresh after `moment`."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgtrickle scheduler' "
        "AND datname = current_database() AND state = 'idle' AND state_change > %s)", (moment,)).fetchone()[0]


def test_a_lake_commit_refreshes_at_once_and_the_schedule_bounds_how_often(events):
    """Schedule '1h': after the scheduler's first look at a table no poll comes for an
    hour, so only a commit (NOTIFY ducklake_commit) can make it due. A second commit
    within the hour after that change waits for the schedule."""
    conn = events.conn

    def create_and_wait_for_first_look(name):
        before = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, SUMMARY_QUERY))
        wait_for(lambda: scheduler_idle_since(conn, before), f"the scheduler's first look at {name}")

    create_and_wait_for_first_look("prompt")
    insert_events(conn, "click", 50, 1)
    wait_for(lambda: rows(conn, "SELECT * FROM prompt") == [("click", 50, 50)], "the refresh the commit starts")
    # a second table, also looked at once: its refresh shows the scheduler has handled
    # the next commit, in the same pass as `prompt`, which that commit must not change
    create_and_wait_for_first_look("witness")
    insert_events(conn, "view", 5, 2)
    wait_for(lambda: rows(conn, "SELECT * FROM witness") == [("click", 50, 50), ("view", 5, 10)],
             "the witness's refresh")
    assert rows(conn, "SELECT * FROM prompt") == [("click", 50, 50)]


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ"])
def test_a_refresh_reads_what_the_lake_reads_in_any_isolation(events, isolation):
    """A refresh may learn that nothing was committed from the catalog itself, not from
    DuckDB (whose connection reads it at the lake's first read in the transaction). In a
    REPEATABLE READ transaction the catalog as this transaction sees it may be older
    than that, so there it is not asked: in both levels the refresh takes the commit
    the lake reads."""
    conn = events.conn
    insert_events(conn, "click", 2, 10)
    conn.execute("SELECT pgtrickle.create_stream_table('event_summary', %s, '1h')", (SUMMARY_QUERY,))
    conn.execute("SELECT pgtrickle.pause_scheduler()")
    before = latest(conn)
    with conn.transaction():
        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables")  # the transaction's snapshot, not the lake's
        events.ref.execute("INSERT INTO events VALUES (uuid(), 'view', 5, now())")
        assert rows(conn, SUMMARY_QUERY) == [("click", 2, 20), ("view", 1, 5)]  # the lake reads the commit
        conn.execute("SELECT pgtrickle.refresh('event_summary')")
        assert rows(conn, "SELECT * FROM event_summary") == [("click", 2, 20), ("view", 1, 5)]
    assert frontier(conn, "event_summary") == before + 1
