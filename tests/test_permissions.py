"""The permission model, as roles that are not superusers meet it: each `pgtrickle` and
`ducklake` function called by a role that owns the object, by one that does not, and by
one with nothing but USAGE."""

import psycopg
import pytest

from roles import grant_lake_reading, new_role
from streams import EVENTS_DDL, SUMMARY_QUERY, rows, wait_until_caught_up


def error_of(conn, sql, params=None):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    return caught.value.sqlstate, caught.value.diag.message_primary


@pytest.fixture
def roles(lake):
    """alice owns a stream table; bob reads the same lake; carol has only USAGE on the
    schemas and the server."""
    lake.conn.execute(EVENTS_DDL)
    lake.conn.execute("CREATE EXTENSION ducklake_ivm")
    lake.conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), 'click', i, now() FROM generate_series(1, 3) i")
    alice, bob, carol = (new_role(lake.conn, name) for name in ("alice", "bob", "carol"))
    for role in (alice, bob):
        grant_lake_reading(lake, role)
    lake.conn.execute(f"GRANT USAGE ON SCHEMA lake TO {carol}")
    lake.conn.execute(f"GRANT USAGE ON FOREIGN SERVER lake TO {carol}")
    lake.conn.execute(f"GRANT CREATE ON SCHEMA public TO {alice}, {bob}, {carol}")
    sessions = {name: lake.cluster.connect(lake.dbname, user=role)
                for name, role in (("alice", alice), ("bob", bob), ("carol", carol))}
    sessions["alice"].execute("SELECT pgtrickle.create_stream_table('alice_summary', %s, '1h')", (SUMMARY_QUERY,))
    yield lake, sessions, (alice, bob, carol)
    for session in sessions.values():
        session.close()


MANAGING_CALLS = [
    "SELECT pgtrickle.refresh('alice_summary')",
    "SELECT pgtrickle.refresh('alice_summary', 'FULL')",
    "SELECT pgtrickle.refresh_stream_table('alice_summary')",
    "SELECT pgtrickle.pause_scheduler(ARRAY['alice_summary'])",
    "SELECT pgtrickle.resume_scheduler(ARRAY['alice_summary'])",
    "SELECT pgtrickle.rewind('alice_summary', 1)",
    "SELECT pgtrickle.alter_stream_table('alice_summary', schedule => '5s')",
    "SELECT * FROM pgtrickle.verify_stream_table('alice_summary')",
    "SELECT pgtrickle.drop_stream_table('alice_summary')",
]


def test_only_the_owner_manages_a_stream_table(roles):
    """Every call, in an order where each leaves the table for the next (drop last):
    refused to the others, done for the owner."""
    lake, sessions, _ = roles
    for call in MANAGING_CALLS:
        for other in ("bob", "carol"):
            assert error_of(sessions[other], call) == ("42501", "must be owner of stream table alice_summary"), call
        sessions["alice"].execute(call)
    assert sessions["alice"].execute("SELECT to_regclass('alice_summary')").fetchone() == (None,)


def test_catalog_rows_are_the_owners_and_only_the_frontier_is_editable(roles):
    lake, sessions, (alice, bob, _) = roles
    alice_s, bob_s = sessions["alice"], sessions["bob"]
    assert alice_s.execute("SELECT pgt_name FROM pgtrickle.pgt_stream_tables").fetchall() == [("alice_summary",)]
    assert bob_s.execute("SELECT pgt_name FROM pgtrickle.pgt_stream_tables").fetchall() == []
    edit = ("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
            "'{sources,ducklake:lake.events,snapshot_id}', '1'::jsonb)")
    assert bob_s.execute(edit).rowcount == 0
    assert alice_s.execute(edit).rowcount == 1
    assert error_of(alice_s, "UPDATE pgtrickle.pgt_stream_tables SET status = 'ACTIVE'")[0] == "42501"
    assert error_of(alice_s, "DELETE FROM pgtrickle.pgt_stream_tables")[0] == "42501"
    relid = alice_s.execute("SELECT 'alice_summary'::regclass::oid").fetchone()[0]
    assert error_of(bob_s, "INSERT INTO pgtrickle.pgt_stream_tables (pgt_relid, pgt_name, pgt_schema, defining_query, "
                           "frontier) VALUES (%s, 'x', 'public', 'SELECT 1', '{\"sources\": {}}')", (relid,))[0] == "42501"
    # nobody but the extension creates anything in the internal schemas
    for schema in ("pgtrickle_state", "pgtrickle_changes", "pgtrickle"):
        assert error_of(bob_s, f"CREATE TABLE {schema}.squat (x int)")[0] == "42501"
    # a frontier entry for a table the query does not read holds no snapshot
    lake.conn.execute("CREATE FOREIGN TABLE lake.elsewhere (x int) SERVER lake OPTIONS (table 'events')")
    alice_s.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = frontier || "
                    "'{\"sources\": {\"ducklake:lake.events\": {\"snapshot_id\": 1}, "
                    "\"ducklake:lake.elsewhere\": {\"snapshot_id\": 0}}}'::jsonb")
    holds = lake.conn.execute("SELECT snapshot_id, stream_table::text FROM pgtrickle.snapshot_holds()").fetchall()
    assert holds == [(1, "alice_summary")]


def test_a_role_without_privileges_on_the_sources_cannot_create_over_them(roles):
    _, sessions, _ = roles
    sqlstate, message = error_of(sessions["carol"], "SELECT pgtrickle.create_stream_table('carol_summary', %s)",
                                 (SUMMARY_QUERY,))
    assert sqlstate == "42501" and message == "permission denied for foreign table events"
    assert sessions["carol"].execute("SELECT to_regclass('carol_summary')").fetchone() == (None,)


def test_owner_alters_and_the_scheduler_refreshes_as_the_owner(roles):
    lake, sessions, (alice, _, _) = roles
    alice_s = sessions["alice"]
    # a query with other columns recreates the result table, as its owner
    alice_s.execute("SELECT pgtrickle.alter_stream_table('alice_summary', "
                    "query => 'SELECT event_type, max(value) AS top FROM lake.events GROUP BY event_type')")
    assert rows(alice_s, "SELECT * FROM alice_summary") == [("click", 3)]
    assert alice_s.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'alice_summary'::regclass") \
        .fetchone() == (alice,)
    internals = lake.conn.execute(
        "SELECT DISTINCT relowner::regrole::text FROM pg_class WHERE relnamespace IN "
        "('pgtrickle_state'::regnamespace, 'pgtrickle_changes'::regnamespace)").fetchall()
    assert internals == [(alice,)]
    alice_s.execute("SELECT pgtrickle.alter_stream_table('alice_summary', schedule => '1s')")
    lake.conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'view', 9, now())")
    wait_until_caught_up(lake.conn, "alice_summary")
    assert rows(alice_s, "SELECT * FROM alice_summary") == [("click", 3), ("view", 9)]
    assert alice_s.execute("SELECT status, last_error FROM pgtrickle.pgt_stream_tables").fetchone() == ("ACTIVE", None)


def test_ducklake_functions_by_role(roles):
    lake, sessions, (alice, bob, carol) = roles
    carol_s, bob_s = sessions["carol"], sessions["bob"]
    # owner-only: schema changes and maintenance
    for call in ["SELECT ducklake.execute('lake', 'CREATE TABLE t (x INTEGER)')",
                 "SELECT ducklake.create_table('lake.events', true)",
                 "SELECT * FROM ducklake.maintain('lake')"]:
        assert error_of(bob_s, call) == ("42501", "must be owner of foreign server lake")
    # USAGE on the server is enough to read its metadata ...
    lake.conn.execute(f"GRANT USAGE ON SCHEMA __ducklake_metadata_analytics TO {carol}")
    lake.conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA __ducklake_metadata_analytics TO {carol}")
    assert carol_s.execute("SELECT ducklake.current_snapshot('lake') > 0").fetchone() == (True,)
    assert carol_s.execute("SELECT count(*) > 0 FROM ducklake.snapshots('lake')").fetchone() == (True,)
    # ... but reading a table's rows or changes needs SELECT on its foreign table
    for call in ["SELECT * FROM lake.events",
                 "SELECT * FROM ducklake.table_changes('lake.events', 0, 100)",
                 "SELECT ducklake.ducklake_latest_snapshot_id('lake.events')",
                 "SELECT ducklake.table_changed('lake.events', 0, 100)",
                 "SELECT ducklake.resolve_changes('lake.events', 0, 100)"]:
        assert error_of(carol_s, call)[0] == "42501", call
    assert bob_s.execute("SELECT count(*) FROM ducklake.table_changes('lake.events', 0, 100)").fetchone() == (3,)
    assert bob_s.execute("SELECT ducklake.table_changed('lake.events', 0, 100)").fetchone() == (True,)
    assert bob_s.execute("SELECT ducklake.resolve_changes('lake.events', 0, 100)").fetchone() == ([],)
    # without USAGE on the server, nothing
    lake.conn.execute(f"REVOKE USAGE ON FOREIGN SERVER lake FROM {carol}")
    assert error_of(carol_s, "SELECT * FROM ducklake.snapshots('lake')") == \
        ("42501", "permission denied for foreign server lake")
    assert error_of(carol_s, "SELECT * FROM ducklake.ducklake_table_changes('lake', 'main', 'events', 0, 10)") == \
        ("42501", "permission denied for foreign server lake")


def test_an_owners_join_reads_its_sources_as_they_were(roles):
    """A join refreshed by its owner (no superuser): each changed source's term reads
    the others through mirrors the owner owns, at the frontier's snapshot."""
    lake, sessions, _ = roles
    alice_s = sessions["alice"]
    query = ("SELECT a.event_type, count(*) AS pairs FROM lake.events a JOIN lake.events b "
             "ON b.value = a.value + 1 GROUP BY a.event_type")
    alice_s.execute("SELECT pgtrickle.create_stream_table('alice_pairs', %s, '1h')", (query,))
    alice_s.execute("SELECT pgtrickle.pause_scheduler(ARRAY['alice_pairs'])")
    lake.conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), 'view', i, now() FROM generate_series(4, 9) i")
    lake.conn.execute("UPDATE lake.events SET event_type = 'buy' WHERE value % 3 = 0")
    notices = []
    alice_s.add_notice_handler(lambda d: notices.append(d.message_primary))
    alice_s.execute("SELECT pgtrickle.refresh('alice_pairs')")
    assert notices == []
    table = sorted(alice_s.execute("SELECT * FROM alice_pairs").fetchall())
    assert table == sorted(alice_s.execute(query).fetchall())
    assert table == [("buy", 2), ("click", 2), ("view", 4)]  # a.value 1..8: 3 and 6 bought


OWNER_SHAPES = {
    "alice_exists": "SELECT a.event_type, count(*) AS n FROM lake.events a WHERE NOT EXISTS "
                    "(SELECT 1 FROM lake.events b WHERE b.value = a.value + 1) GROUP BY a.event_type",
    "alice_left": "SELECT a.value, b.event_type AS next_type FROM lake.events a "
                  "LEFT JOIN lake.events b ON b.value = a.value + 1",
    "alice_ranked": "SELECT event_type, value, rank() OVER (PARTITION BY event_type ORDER BY value) AS r "
                    "FROM lake.events",
    "alice_nested": "WITH t AS (SELECT event_type, count(*) AS n FROM lake.events GROUP BY event_type) "
                    "SELECT n, count(*) AS types FROM t GROUP BY n",
    "alice_top": "SELECT event_type, max(value) AS top FROM lake.events GROUP BY event_type "
                 "ORDER BY top DESC, event_type LIMIT 2",
}


def refresh_and_compare(session, shapes):
    """Refresh each stream table of `shapes` in `session`: differentially, without a
    rebuild (no warning), equal to its query."""
    notices = []
    session.add_notice_handler(lambda d: notices.append(d.message_primary))
    for name, query in shapes.items():
        session.execute("SELECT pgtrickle.refresh(%s)", (name,))
        mode = session.execute("SELECT refresh_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                               (name,)).fetchone()[0]
        assert mode == "DIFFERENTIAL", name
        table = sorted(session.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
        assert table == sorted(session.execute(query).fetchall(), key=repr), name
    assert notices == []


def test_an_owners_subqueries_outer_joins_windows_and_nested_aggregates(roles):
    """The shapes whose terms read sources as they were (time-travel mirrors), built
    and refreshed by an owner who is not a superuser: no rebuild, the query's answer."""
    lake, sessions, _ = roles
    alice_s = sessions["alice"]
    for name, query in OWNER_SHAPES.items():
        alice_s.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
        alice_s.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))
    lake.conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), 'view', i, now() FROM generate_series(4, 9) i")
    lake.conn.execute("UPDATE lake.events SET event_type = 'buy' WHERE value % 3 = 0")
    lake.conn.execute("DELETE FROM lake.events WHERE value = 5")
    refresh_and_compare(alice_s, OWNER_SHAPES)


def test_an_owner_with_column_grants_keeps_postgres_tables_as_they_were(roles):
    """Postgres tables read as they were (subquery expressions, outer joins) by an owner
    who is not a superuser and may read only some columns of one of them: the replay
    reads only the columns the query does."""
    lake, sessions, (alice, _, _) = roles
    conn, alice_s = lake.conn, sessions["alice"]
    conn.execute("CREATE TABLE public.shared_tiers (event_type text, tier int, secret text)")
    conn.execute("INSERT INTO public.shared_tiers VALUES ('click', 1, 'x'), ('view', 2, 'y')")
    conn.execute(f"GRANT SELECT (event_type, tier), TRIGGER ON public.shared_tiers TO {alice}")
    alice_s.execute("CREATE TABLE public.alice_types (event_type text, weight int)")
    alice_s.execute("INSERT INTO public.alice_types VALUES ('click', 1), ('view', 0)")
    shapes = {
        "alice_weighted": "SELECT a.event_type, count(*) AS n FROM lake.events a WHERE EXISTS "
                          "(SELECT 1 FROM public.alice_types t WHERE t.event_type = a.event_type AND t.weight > 0) "
                          "GROUP BY a.event_type",
        "alice_tiers": "SELECT a.value, s.tier FROM lake.events a LEFT JOIN public.shared_tiers s "
                       "ON s.event_type = a.event_type",
    }
    for name, query in shapes.items():
        alice_s.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
        alice_s.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))
    lake.conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), 'view', i, now() FROM generate_series(4, 6) i")
    alice_s.execute("UPDATE public.alice_types SET weight = 3 WHERE event_type = 'view'")
    conn.execute("UPDATE public.shared_tiers SET tier = 5, secret = 'z' WHERE event_type = 'click'")
    conn.execute("DELETE FROM public.shared_tiers WHERE event_type = 'view'")
    refresh_and_compare(alice_s, shapes)
