"""Differential stream tables that read Postgres tables: alone, joined with lake
tables, and other stream tables' results. Their changes are captured by statement
triggers; after each refresh the table equals its query with the lake at the
frontier's snapshot and the Postgres tables as they are (nothing changes them
between the refresh and the check), row for row."""

import random

import psycopg
import pytest

from roles import new_stream_owner
from streams import drive_randomly, last_error, rows, wait_for

DDL = """
CREATE FOREIGN TABLE lake.orders (id int, customer int, amount numeric(10,2), status text)
  SERVER lake OPTIONS (table 'orders');
SELECT ducklake.create_table('lake.orders');
CREATE TABLE public.customers (id int, region text, tier int, note text);
CREATE TABLE public.regions (name text, zone text);
CREATE EXTENSION ducklake_ivm;
"""

SHAPES = {
    "by_region": "SELECT c.region, count(*) AS n, sum(o.amount) AS total, min(o.amount) AS lo, max(c.tier) AS top "
                 "FROM lake.orders o JOIN public.customers c ON c.id = o.customer GROUP BY c.region",
    "order_rows": "SELECT o.id, c.region, o.status FROM lake.orders o, public.customers c WHERE c.id = o.customer AND c.tier > 0",
    "zones": "SELECT r.zone, count(*) AS n, sum(o.amount) AS total FROM lake.orders o "
             "JOIN public.customers c ON c.id = o.customer JOIN public.regions r ON r.name = c.region GROUP BY r.zone",
    "heap_only": "SELECT region, count(*) AS n, sum(tier) AS tiers FROM public.customers GROUP BY region",
    "heap_self_join": "SELECT a.region, count(*) AS pairs FROM public.customers a JOIN public.customers b "
                      "ON a.tier = b.tier AND a.id < b.id GROUP BY a.region",
    "mixed_union": "SELECT region AS label, tier FROM public.customers UNION ALL SELECT status, customer FROM lake.orders",
    # HAVING against a Postgres table alone (its changes move the threshold of every group),
    # and against one the rows read too
    "having_pg": "SELECT o.customer, count(*) AS n FROM lake.orders o GROUP BY o.customer "
                 "HAVING count(*) > (SELECT count(*) FROM public.regions r WHERE r.zone = 'warm')",
    "having_both": "SELECT c.region, sum(o.amount) AS total FROM lake.orders o JOIN public.customers c "
                   "ON c.id = o.customer GROUP BY c.region HAVING sum(o.amount) > (SELECT sum(tier) * 3 FROM public.customers)",
}

# Shapes whose terms read a Postgres table as it was at the frontier: replayed from its
# change log (subquery expressions, outer joins' nullable sides, aggregating sub-selects,
# and several Postgres tables with any of those).
AS_IT_WAS = {
    "pg_exists": "SELECT o.id, o.amount FROM lake.orders o "
                 "WHERE EXISTS (SELECT 1 FROM public.customers c WHERE c.id = o.customer AND c.tier > 1)",
    # regions.name and customers.region hold NULLs: NOT IN is then never true
    "pg_not_in": "SELECT o.id, c.region FROM lake.orders o JOIN public.customers c ON c.id = o.customer "
                 "WHERE c.region NOT IN (SELECT r.name FROM public.regions r WHERE r.zone <> 'cold')",
    "pg_scalar": "SELECT c.id, c.tier FROM public.customers c "
                 "WHERE c.tier > (SELECT avg(c2.tier) FROM public.customers c2 WHERE c2.region = c.region)",
    "pg_left_join": "SELECT o.id, c.region, c.tier FROM lake.orders o LEFT JOIN public.customers c ON c.id = o.customer",
    "pg_full_join": "SELECT c.id, c.region, r.zone FROM public.customers c FULL JOIN public.regions r ON r.name = c.region",
    "pg_left_join_both": "SELECT r.zone, count(c.id) AS n, sum(o.amount) AS total FROM lake.orders o "
                         "JOIN public.customers c ON c.id = o.customer LEFT JOIN public.regions r ON r.name = c.region "
                         "GROUP BY r.zone",
    "pg_derived": "SELECT t.region, t.total, r.zone FROM (SELECT c.region, sum(o.amount) AS total "
                  "FROM lake.orders o JOIN public.customers c ON c.id = o.customer GROUP BY c.region) t "
                  "JOIN public.regions r ON r.name = t.region",
    "pg_nested_aggregate": "SELECT t.tiers, count(*) AS regions FROM (SELECT c.region, sum(c.tier) AS tiers "
                           "FROM public.customers c GROUP BY c.region) t GROUP BY t.tiers",
    # a join of a Postgres table and a lake table on the nullable side, read whole
    "pg_left_of_join": "SELECT r.name, r.zone, c.id, o.amount FROM public.regions r LEFT JOIN "
                       "(public.customers c JOIN lake.orders o ON o.customer = c.id AND o.status = 'open') "
                       "ON c.region = r.name",
    # the lake table first: its term reads the Postgres table as it was (a replay of
    # the columns the query reads, not its `note`)
    "pg_left_of_join_lake_first": "SELECT r.name, c.id, c.tier, o.amount FROM public.regions r LEFT JOIN "
                                  "(lake.orders o JOIN public.customers c ON c.id = o.customer) ON c.region = r.name",
    "pg_full_of_aggregate": "SELECT c.id, c.tier, s.customer, s.total FROM public.customers c FULL JOIN "
                            "(SELECT customer, sum(amount) AS total FROM lake.orders GROUP BY customer) s "
                            "ON s.customer = c.id",
}

REGIONS = ["north", "south", "east", None]


def setup_tables(lake):
    for statement in DDL.split(";\n"):
        if statement.strip():
            lake.conn.execute(statement)
    conn = lake.conn
    conn.execute("INSERT INTO public.regions VALUES ('north', 'cold'), ('south', 'warm'), ('east', 'warm')")
    conn.execute("INSERT INTO public.customers SELECT i, (ARRAY['north','south','east'])[1 + i % 3], i % 4, 'n' "
                 "FROM generate_series(1, 12) i")
    conn.execute("INSERT INTO lake.orders SELECT i, 1 + i % 14, (i * 7 % 50) / 4.0, (ARRAY['open','paid'])[1 + i % 2] "
                 "FROM generate_series(1, 40) i")


def check(conn, name, query):
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        frontier = conn.execute("SELECT frontier FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                                (name,)).fetchone()[0]
        table = rows(conn, f"SELECT * FROM {name}")
    lake = {s["snapshot_id"] for s in frontier["sources"].values() if "snapshot_id" in s}
    assert len(lake) <= 1, frontier
    conn.execute("BEGIN")
    try:
        if lake:
            conn.execute(f"SET LOCAL ducklake.snapshot_id = {int(lake.pop())}")
        expected = rows(conn, query)
    finally:
        conn.execute("ROLLBACK")
    assert table == expected, name
    return frontier


def create(conn, name, query, mode="DIFFERENTIAL"):
    """This test drives the refreshes: created paused, the scheduler makes none."""
    with conn.transaction():
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h', %s)", (name, query, mode))
        conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY[%s])", (name,))


def literal(value):
    return "NULL" if value is None else repr(value)


def mutate(lake, rng, next_id):
    conn = lake.conn
    target = rng.choice(["orders", "orders", "customers", "customers", "customers", "regions", "transaction"])
    op = rng.choice(["insert", "delete", "update"])
    if target == "orders":
        run = lake.ref.execute if rng.random() < 0.3 else conn.execute
        prefix = "" if run == lake.ref.execute else "lake."
        if op == "insert":
            run(f"INSERT INTO {prefix}orders VALUES ({next_id}, {rng.randint(1, 16)}, {rng.randint(0, 900) / 100}, 'open')")
        elif op == "delete":
            run(f"DELETE FROM {prefix}orders WHERE customer = {rng.randint(1, 16)}")
        else:
            run(f"UPDATE {prefix}orders SET amount = amount + 1 WHERE id % 5 = {rng.randint(0, 4)}")
    elif target == "customers":
        if op == "insert":
            conn.execute(f"INSERT INTO public.customers VALUES ({rng.randint(1, 16)}, {literal(rng.choice(REGIONS))}, "
                         f"{rng.randint(0, 3)}, 'new')")
        elif op == "delete":
            conn.execute(f"DELETE FROM public.customers WHERE id = {rng.randint(1, 16)}")
        else:
            conn.execute(f"UPDATE public.customers SET tier = {rng.randint(0, 3)}, region = {literal(rng.choice(REGIONS))} "
                         f"WHERE id % 4 = {rng.randint(0, 3)}")
    elif target == "regions":
        if op == "insert":
            conn.execute(f"INSERT INTO public.regions VALUES ({literal(rng.choice(REGIONS))}, 'hot')")
        elif op == "delete":
            conn.execute(f"DELETE FROM public.regions WHERE name = {literal(rng.choice(REGIONS[:3]))}")
        else:
            conn.execute(f"UPDATE public.regions SET zone = {literal(rng.choice(['cold', 'warm', 'hot']))} "
                         f"WHERE name = {literal(rng.choice(REGIONS[:3]))}")
    else:
        # several statements on both kinds of table, one transaction
        with conn.transaction():
            conn.execute(f"INSERT INTO public.customers VALUES ({rng.randint(1, 16)}, 'south', 2, 'tx')")
            conn.execute(f"UPDATE public.customers SET tier = tier + 1 WHERE id = {rng.randint(1, 16)}")
            conn.execute(f"INSERT INTO lake.orders VALUES ({next_id + 1}, {rng.randint(1, 16)}, 1.50, 'paid')")
    return next_id + 10


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_postgres_tables_read_as_they_were_keep_exact(lake, seed):
    """Subquery expressions, outer joins and aggregating sub-selects over Postgres
    tables: the terms that read a table as it was replay its change log."""
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), AS_IT_WAS, create, mutate, check)
    for name in AS_IT_WAS:
        assert conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table(%s)", (name,)).fetchone()[0] == 0, name


def test_a_column_added_to_a_table_inside_a_nullable_join(lake):
    """The join on the nullable side reads the columns the query reads: one added to a
    table of it later is none of them, and the tables changed together after it refresh."""
    setup_tables(lake)
    conn = lake.conn
    query = AS_IT_WAS["pg_left_of_join_lake_first"]
    create(conn, "added", query)
    conn.execute("ALTER TABLE public.customers ADD COLUMN extra int DEFAULT 7")
    with conn.transaction():
        conn.execute("UPDATE public.customers SET tier = tier + 1, region = 'east' WHERE id < 5")
        conn.execute("INSERT INTO lake.orders VALUES (900, 2, 3.50, 'open'), (901, 13, 1.25, 'paid')")
    conn.execute("SELECT pgtrickle.refresh('added')")
    check(conn, "added", query)
    assert conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table('added')").fetchone()[0] == 0


def test_a_replayed_table_keeps_each_value_as_it_was(lake):
    """Rows equal by their type's equality but printed differently (1.0 and 1.00, an
    update back and forth, a row inserted and deleted since the frontier) replay as
    the values they were."""
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.prices (customer int, price numeric)")
    conn.execute("INSERT INTO public.prices VALUES (1, 1.0), (2, 2.50), (3, -0.0)")
    query = "SELECT o.id, p.price::text AS price FROM lake.orders o LEFT JOIN public.prices p ON p.customer = o.customer"
    create(conn, "priced", query)
    check(conn, "priced", query)
    conn.execute("UPDATE public.prices SET price = 1.00 WHERE customer = 1")
    conn.execute("INSERT INTO public.prices VALUES (4, 4)")
    conn.execute("DELETE FROM public.prices WHERE customer = 4")
    conn.execute("UPDATE public.prices SET price = 2.5 WHERE customer = 2")
    conn.execute("INSERT INTO public.prices VALUES (5, 5.000)")
    # the nullable side and the preserved side change in one refresh
    conn.execute("INSERT INTO lake.orders VALUES (100, 5, 1.00, 'open'), (101, 1, 2.00, 'open')")
    conn.execute("DELETE FROM lake.orders WHERE id = 4")
    conn.execute("SELECT pgtrickle.refresh('priced')")
    check(conn, "priced", query)
    assert rows(conn, "SELECT price FROM priced WHERE id IN (100, 101)") == [("1.00",), ("5.000",)]
    # a renamed column and a dropped one: the replay follows attribute numbers
    conn.execute("ALTER TABLE public.prices ADD COLUMN junk int")
    conn.execute("ALTER TABLE public.prices DROP COLUMN junk")
    conn.execute("ALTER TABLE public.prices RENAME COLUMN price TO cost")
    conn.execute("UPDATE public.prices SET cost = 7.0 WHERE customer = 2")
    conn.execute("DELETE FROM lake.orders WHERE id = 2")
    conn.execute("SELECT pgtrickle.refresh('priced')")
    check(conn, "priced", query.replace("p.price", "p.cost"))


def test_a_postgres_table_read_only_in_having_is_captured(lake):
    """A change of a table only HAVING's subquery reads moves every group's threshold:
    captured, it makes the next refresh take the result again (differentially: no
    rebuild)."""
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["having_pg"]
    create(conn, "having_pg", query)
    before = rows(conn, "SELECT * FROM having_pg")
    conn.execute("UPDATE public.regions SET zone = 'cold' WHERE name = 'south'")  # threshold 2 -> 1
    conn.execute("SELECT pgtrickle.refresh('having_pg')")
    check(conn, "having_pg", query)
    assert rows(conn, "SELECT * FROM having_pg") != before
    conn.execute("INSERT INTO public.regions VALUES ('west', 'warm'), ('up', 'warm')")  # threshold 1 -> 3
    conn.execute("SELECT pgtrickle.refresh('having_pg')")
    check(conn, "having_pg", query)
    assert rows(conn, "SELECT * FROM having_pg") == []
    frontier = conn.execute("SELECT frontier, last_error FROM pgtrickle.pgt_stream_tables "
                            "WHERE pgt_name = 'having_pg'").fetchone()
    assert "postgres:public.regions" in frontier[0]["sources"] and frontier[1] is None


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_postgres_sources_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    for name in SHAPES:
        # the logs keep only what the frontier has not seen
        relid = conn.execute("SELECT %s::regclass::oid", (name,)).fetchone()[0]
        for (log,) in conn.execute("SELECT oid::regclass::text FROM pg_class WHERE relname LIKE %s",
                                   (f"log\\_{relid}\\_%",)).fetchall():
            assert conn.execute(f"SELECT count(*) FROM {log}").fetchone() == (0,), log


def test_frontier_records_a_snapshot_per_postgres_source(lake):
    setup_tables(lake)
    conn = lake.conn
    create(conn, "zones", SHAPES["zones"])
    frontier = check(conn, "zones", SHAPES["zones"])
    sources = frontier["sources"]
    assert set(sources) == {"ducklake:lake.orders", "postgres:public.customers", "postgres:public.regions"}
    assert isinstance(sources["ducklake:lake.orders"]["snapshot_id"], int)
    seen = sources["postgres:public.customers"]["snapshot"]
    assert conn.execute("SELECT %s::pg_snapshot IS NOT NULL", (seen,)).fetchone() == (True,)
    verify = "SELECT count(*) FROM pgtrickle.verify_stream_table('zones')"
    assert conn.execute(verify).fetchone() == (0,)
    # A change not yet seen: verify cannot read the table as of the frontier, and says so.
    conn.execute("UPDATE public.regions SET zone = 'hot' WHERE name = 'north'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as error:
        conn.execute(verify)
    assert error.value.diag.message_primary == \
        "stream table public.zones has not seen the latest changes of its source public.regions"
    conn.execute("SELECT pgtrickle.refresh('zones')")
    assert conn.execute(verify).fetchone() == (0,)


def test_a_transaction_open_across_a_refresh_is_counted_once(lake):
    """Changes of a transaction still running when a refresh reads are not in its
    snapshot: the next refresh after the commit takes them, exactly once."""
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["heap_only"]
    create(conn, "heap_only", query)
    other = lake.connect()
    other.execute("BEGIN")
    other.execute("INSERT INTO public.customers VALUES (99, 'west', 3, 'late')")
    conn.execute("INSERT INTO public.customers VALUES (98, 'west', 1, 'early')")
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    assert rows(conn, "SELECT * FROM heap_only WHERE region = 'west'") == [("west", 1, 1)]
    other.execute("COMMIT")
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    assert rows(conn, "SELECT * FROM heap_only WHERE region = 'west'") == [("west", 2, 4)]
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    check(conn, "heap_only", query)
    other.close()


def test_refresh_in_the_transaction_that_changed_a_source_is_refused(lake):
    setup_tables(lake)
    conn = lake.conn
    create(conn, "heap_only", SHAPES["heap_only"])
    conn.execute("BEGIN")
    conn.execute("INSERT INTO public.customers VALUES (50, 'west', 1, 'x')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as error:
        conn.execute("SELECT pgtrickle.refresh('heap_only')")
    assert error.value.diag.message_primary == (
        "stream table public.heap_only cannot be refreshed in the transaction that changed its source public.customers")
    conn.execute("ROLLBACK")
    # A refresh first, the change after it: taken by the next refresh.
    with conn.transaction():
        conn.execute("SELECT pgtrickle.refresh('heap_only')")
        conn.execute("INSERT INTO public.customers VALUES (51, 'west', 2, 'y')")
    assert rows(conn, "SELECT * FROM heap_only WHERE region = 'west'") == []
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    assert rows(conn, "SELECT * FROM heap_only WHERE region = 'west'") == [("west", 1, 2)]


def test_a_write_after_a_refresh_in_one_transaction_is_taken_next_time(lake):
    """The refreshing transaction's own id is recorded as still running, even when a
    later transaction completed before the refresh took its snapshot (a snapshot
    would otherwise count it as seen)."""
    setup_tables(lake)
    conn = lake.conn
    create(conn, "heap_only", SHAPES["heap_only"])
    other = lake.connect()
    conn.execute("BEGIN")
    conn.execute("SELECT pg_current_xact_id()")  # this transaction's id comes first
    # a later one completes, with a change the refresh takes (so it records its snapshot)
    other.execute("INSERT INTO public.customers VALUES (61, 'east', 1, 'w')")
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    conn.execute("INSERT INTO public.customers VALUES (60, 'west', 5, 'z')")
    conn.execute("COMMIT")
    other.close()
    conn.execute("SELECT pgtrickle.refresh('heap_only')")
    assert rows(conn, "SELECT * FROM heap_only WHERE region = 'west'") == [("west", 1, 5)]
    check(conn, "heap_only", SHAPES["heap_only"])


def test_truncate_rebuilds_and_says_so(lake):
    setup_tables(lake)
    conn = lake.conn
    create(conn, "by_region", SHAPES["by_region"])
    conn.execute("TRUNCATE public.customers")
    # a truncation alone is a change the frontier has not seen
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table('by_region')")
    conn.rollback()
    conn.execute("SELECT pgtrickle.refresh('by_region')")
    assert rows(conn, "SELECT * FROM by_region") == []
    conn.execute("INSERT INTO public.customers VALUES (1, 'north', 1, 'x'), (2, 'north', 2, 'y')")
    conn.execute("TRUNCATE public.customers")
    conn.execute("INSERT INTO public.customers VALUES (1, 'north', 1, 'x'), (2, 'north', 2, 'y')")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SELECT pgtrickle.refresh('by_region')")
    assert "stream table public.by_region: public.customers was truncated; rebuilt in full" in notices
    check(conn, "by_region", SHAPES["by_region"])
    assert last_error(conn, "by_region") == "public.customers was truncated; rebuilt in full"


def test_a_stream_table_made_before_the_truncations_table_still_sees_truncations(lake):
    """Before TRUNCATE had a table of its own, the capture function appended a
    `truncate` row to the log: such a stream table (its log, no truncations table)
    still rebuilds after one, and refreshes otherwise."""
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["by_region"]
    create(conn, "by_region", query)
    relid = conn.execute("SELECT 'by_region'::regclass::oid").fetchone()[0]
    (log,) = conn.execute("SELECT oid::regclass::text FROM pg_class WHERE relname LIKE %s",
                          (f"log\\_{relid}\\_%",)).fetchone()
    conn.execute(f"DROP TABLE {log.replace('log_', 'truncated_', 1)}")
    conn.execute("UPDATE public.customers SET tier = tier + 1 WHERE id = 1")
    conn.execute("SELECT pgtrickle.refresh('by_region')")
    check(conn, "by_region", query)
    # what the older capture function did on TRUNCATE, in the same transaction
    with conn.transaction():
        conn.execute("DELETE FROM public.customers WHERE id > 6")
        conn.execute(f"INSERT INTO {log} (__pgt_xid, change_type) VALUES (pg_current_xact_id(), 'truncate')")
    conn.execute("SELECT pgtrickle.refresh('by_region')")
    check(conn, "by_region", query)
    assert last_error(conn, "by_region") == "public.customers was truncated; rebuilt in full"
    assert conn.execute(f"SELECT count(*) FROM {log}").fetchone() == (0,)


def test_columns_added_and_dropped_later_do_not_break_writes(lake):
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["by_region"]
    create(conn, "by_region", query)
    conn.execute("ALTER TABLE public.customers DROP COLUMN note")
    conn.execute("ALTER TABLE public.customers ADD COLUMN extra text DEFAULT 'e'")
    conn.execute("INSERT INTO public.customers (id, region, tier) VALUES (3, 'west', 9)")
    conn.execute("UPDATE public.customers SET tier = tier + 1 WHERE region = 'north'")
    conn.execute("SELECT pgtrickle.refresh('by_region')")
    check(conn, "by_region", query)


def test_postgres_sources_refused_by_name(lake):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.parted (id int, region text) PARTITION BY LIST (region)")
    conn.execute("CREATE TABLE public.parted_north PARTITION OF public.parted FOR VALUES IN ('north')")
    conn.execute("CREATE TABLE public.odd (id int, change_type text)")
    for query, message in [
        ("SELECT region FROM public.customers TABLESAMPLE SYSTEM (50)",
         "TABLESAMPLE is not supported in a DIFFERENTIAL stream table"),
        ("SELECT region, count(*) FROM public.parted_north GROUP BY region",
         "reading table public.parted_north, which is part of a partition or inheritance hierarchy (its changes "
         "cannot be captured) is not supported in a DIFFERENTIAL stream table"),
        ("SELECT region, count(*) FROM public.parted GROUP BY region",
         "reading public.parted (neither a DuckLake foreign table nor a user's Postgres table) is not supported "
         "in a DIFFERENTIAL stream table"),
        ("SELECT id FROM public.odd", "column(s) change_type of table public.odd collide with the change log's own columns"),
    ]:
        with pytest.raises(psycopg.Error) as error:
            conn.execute("SELECT pgtrickle.create_stream_table('refused_t', %s, '1h')", (query,))
        assert error.value.diag.message_primary == message, query


def test_privileges_triggers_and_drop(lake):
    setup_tables(lake)
    conn = lake.conn
    dave = new_stream_owner(lake, "dave")
    conn.execute(f"GRANT SELECT ON public.customers TO {dave}")
    with lake.cluster.connect(lake.dbname, user=dave) as session:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
            session.execute("SELECT pgtrickle.create_stream_table('dave_t', %s, '1h')", (SHAPES["by_region"],))
        assert "TRIGGER privilege" in error.value.diag.message_primary and "public.customers" in error.value.diag.message_primary
        session.execute("SELECT pgtrickle.create_stream_table('dave_t', %s, '1h', 'FULL')", (SHAPES["by_region"],))
        conn.execute(f"GRANT TRIGGER ON public.customers TO {dave}")
        session.execute("SELECT pgtrickle.create_stream_table('dave_d', %s, '1h')", (SHAPES["by_region"],))
        conn.execute("UPDATE public.customers SET tier = 7 WHERE id = 1")
        session.execute("SELECT pgtrickle.refresh('dave_d')")
        assert rows(session, "SELECT * FROM dave_d") == rows(conn, SHAPES["by_region"])
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.customers'::regclass"
    assert conn.execute(triggers).fetchone() == (4,)
    conn.execute("SELECT pgtrickle.drop_stream_table('dave_d')")
    assert conn.execute(triggers).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'log\\_%'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\\_%'").fetchone() == (0,)
    # writes to the table work without the triggers
    conn.execute("UPDATE public.customers SET tier = 1 WHERE id = 1")


def test_a_stream_table_over_another(lake):
    setup_tables(lake)
    conn = lake.conn
    create(conn, "by_region", SHAPES["by_region"])
    upper = "SELECT (region IS NULL) AS unknown, sum(n) AS n, sum(total) AS total FROM by_region GROUP BY 1"
    create(conn, "regions_known", upper)
    rng = random.Random(7)
    next_id = 5000
    for _ in range(8):
        next_id = mutate(lake, rng, next_id)
        conn.execute("SELECT pgtrickle.refresh('by_region')")
        conn.execute("SELECT pgtrickle.refresh('regions_known')")
        check(conn, "by_region", SHAPES["by_region"])
        check(conn, "regions_known", upper)


def test_the_graph_of_stream_tables(lake):
    """`upstream` names the stream tables a definition reads; one that would read its
    own result is refused; the scheduler refreshes a table after those it reads."""
    setup_tables(lake)
    conn = lake.conn
    conn.execute("SELECT pgtrickle.create_stream_table('by_region', %s, '1s')", (SHAPES["by_region"],))
    upper = "SELECT (region IS NULL) AS unknown, sum(n) AS n, sum(total) AS total FROM by_region GROUP BY 1"
    conn.execute("SELECT pgtrickle.create_stream_table('regions_known', %s, '1s')", (upper,))
    top = "SELECT sum(n) AS n FROM regions_known"
    conn.execute("SELECT pgtrickle.create_stream_table('all_known', %s, '1s')", (top,))
    assert rows(conn, "SELECT pgt_name, upstream::text[] FROM pgtrickle.pgt_stream_tables") == [
        ("all_known", ["regions_known"]), ("by_region", []), ("regions_known", ["by_region"])]
    for query in ["SELECT unknown, n, total FROM regions_known", "SELECT n AS unknown, n, n AS total FROM all_known"]:
        with pytest.raises(psycopg.errors.InvalidObjectDefinition) as error:
            conn.execute("SELECT pgtrickle.alter_stream_table('by_region', query => %s)", (query,))
        assert error.value.diag.message_primary == \
            "stream table public.by_region would read its own result (a cycle of stream tables)"
    # the Postgres change first: a refresh that reads the lake's new snapshot sees it too
    conn.execute("UPDATE public.customers SET region = NULL WHERE id = 3")
    conn.execute("INSERT INTO lake.orders VALUES (777, 3, 5.00, 'open')")
    target = conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('lake.orders')").fetchone()[0]

    def caught_up():
        frontier = conn.execute("SELECT (frontier -> 'sources' -> 'ducklake:lake.orders' ->> 'snapshot_id')::bigint "
                                "FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'by_region'").fetchone()[0]
        return frontier == target and rows(conn, "SELECT * FROM all_known") == rows(conn, "SELECT sum(n) FROM (" + upper + ") s")

    wait_for(caught_up, "the three stream tables to follow the change")
    with conn.transaction():
        conn.execute("SELECT pgtrickle.pause_scheduler()")
    check(conn, "by_region", SHAPES["by_region"])
    check(conn, "regions_known", upper)
    check(conn, "all_known", top)


def test_replayed_tables_with_not_null_domains_and_padded_text(lake):
    """A column the query does not read may be of a NOT NULL domain (the replay leaves
    it out), and `character` values that differ only in trailing spaces stay apart."""
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE DOMAIN public.code AS int NOT NULL")
    conn.execute("CREATE TABLE public.labels (customer int, label bpchar, c public.code)")
    conn.execute("INSERT INTO public.labels VALUES (1, 'a', 1), (2, 'b ', 2), (3, 'c', 3)")
    query = ("SELECT o.id, octet_length(l.label) AS width, concat(l.label, '|') AS shown FROM lake.orders o "
             "LEFT JOIN public.labels l ON l.customer = o.customer")
    create(conn, "labelled", query)
    check(conn, "labelled", query)
    conn.execute("UPDATE public.labels SET label = 'a ' WHERE customer = 1")
    conn.execute("UPDATE public.labels SET label = 'b' WHERE customer = 2")
    conn.execute("INSERT INTO public.labels VALUES (4, 'd  ', 4)")
    conn.execute("DELETE FROM lake.orders WHERE id IN (1, 2, 3)")
    conn.execute("SELECT pgtrickle.refresh('labelled')")
    check(conn, "labelled", query)
    conn.execute("UPDATE public.labels SET label = 'a' WHERE customer = 1")
    conn.execute("INSERT INTO lake.orders VALUES (200, 1, 1.00, 'open'), (201, 4, 2.00, 'open')")
    conn.execute("SELECT pgtrickle.refresh('labelled')")
    check(conn, "labelled", query)
    assert last_error(conn, "labelled") is None
    # TRUNCATE is captured without a log row (whose domain column would be NULL)...
    with conn.transaction():
        conn.execute("TRUNCATE public.labels")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            with conn.transaction():  # ...also seen in its own transaction
                conn.execute("SELECT pgtrickle.refresh('labelled')")
        conn.execute("INSERT INTO public.labels VALUES (2, 'z', 9)")
    conn.execute("SELECT pgtrickle.refresh('labelled')")
    check(conn, "labelled", query)
    assert last_error(conn, "labelled") == "public.labels was truncated; rebuilt in full"
    # the refresh has seen the truncation: forgotten, as the log's rows are
    (truncations,) = conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = "
                                  "'pgtrickle_changes'::regnamespace AND c.relname LIKE 'truncated%'").fetchone()
    assert conn.execute(f"SELECT count(*) FROM {truncations}").fetchone() == (0,)
    conn.execute("SELECT pgtrickle.drop_stream_table('labelled')")
    assert conn.execute(f"SELECT to_regclass('{truncations}')").fetchone() == (None,)


def test_row_level_security_that_applies_to_the_owner_is_refused(lake):
    """A differential refresh reads a Postgres table's changes from its change log,
    where row-level security does not filter them: a table whose policies apply to the
    stream table's owner would let rows the owner may not see into the result. Such a
    table is refused (FULL reads through the policies), also when its security is
    enabled after the stream table was created, and its rows written meanwhile stay out
    of the log; a table whose policies the owner bypasses (as the table's owner, without
    FORCE) is maintained differentially."""
    setup_tables(lake)
    conn = lake.conn
    reader = new_stream_owner(lake, "rls_reader")
    conn.execute("CREATE TABLE public.ledger (id int, holder text, amount int)")
    conn.execute(f"INSERT INTO public.ledger VALUES (1, '{reader}', 10), (2, 'someone_else', 100)")
    conn.execute(f"GRANT SELECT, TRIGGER ON public.ledger TO {reader}")
    conn.execute("CREATE POLICY own_rows ON public.ledger USING (holder = current_user)")
    query = "SELECT holder, count(*) AS n, sum(amount) AS total FROM public.ledger GROUP BY holder"
    with lake.cluster.connect(lake.dbname, user=reader) as theirs:
        create(theirs, "ledger_before", query)
        conn.execute("ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
            theirs.execute("SELECT pgtrickle.create_stream_table('ledger_now', %s, '1h', 'DIFFERENTIAL')", (query,))
        assert error.value.diag.message_primary == (
            "row-level security of public.ledger that applies to the stream table's owner "
            "is not supported in a DIFFERENTIAL stream table")
        create(theirs, "ledger_full", query, "FULL")
        conn.execute(f"INSERT INTO public.ledger VALUES (3, 'someone_else', 1000), (4, '{reader}', 20)")
        theirs.execute("SELECT pgtrickle.refresh('ledger_full')")
        assert rows(theirs, "SELECT * FROM ledger_full") == [(reader, 2, 30)]
        with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
            theirs.execute("SELECT pgtrickle.refresh('ledger_before')")
        assert error.value.diag.message_primary.startswith("row-level security of public.ledger")
        assert rows(theirs, "SELECT * FROM ledger_before") == [(reader, 1, 10), ("someone_else", 1, 100)]
        # Nor did the rows written since reach the change log the owner reads: they
        # count as a truncation, so the table is rebuilt once the policies are gone.
        log = conn.execute("SELECT format('pgtrickle_changes.log_%s_%s', 'ledger_before'::regclass::oid, "
                           "'public.ledger'::regclass::oid)").fetchone()[0]
        assert rows(theirs, f"SELECT id FROM {log}") == []
    conn.execute("ALTER TABLE public.ledger DISABLE ROW LEVEL SECURITY")
    with lake.cluster.connect(lake.dbname, user=reader) as theirs:
        theirs.execute("SELECT pgtrickle.refresh('ledger_before')")
        assert last_error(theirs, "ledger_before") == "public.ledger was truncated; rebuilt in full"
        assert rows(theirs, "SELECT * FROM ledger_before") == rows(theirs, query)
    conn.execute("ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY")
    # The table's owner bypasses its policies, unless they are forced on it.
    holder = new_stream_owner(lake, "rls_holder")
    conn.execute(f"ALTER TABLE public.ledger OWNER TO {holder}")
    with lake.cluster.connect(lake.dbname, user=holder) as own:
        create(own, "ledger_owner", query)
        conn.execute("INSERT INTO public.ledger VALUES (5, 'someone_else', 5)")
        own.execute("SELECT pgtrickle.refresh('ledger_owner')")
        check(own, "ledger_owner", query)
        assert rows(own, "SELECT n FROM ledger_owner WHERE holder = 'someone_else'") == [(3,)]
        own.execute("ALTER TABLE public.ledger FORCE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            own.execute("SELECT pgtrickle.refresh('ledger_owner')")


def test_columns_the_owner_may_not_read_stay_out_of_its_log(lake):
    """An owner allowed some columns of a table: its change log, which it reads, gets
    only those (the others NULL), and the stream table over them stays exact."""
    setup_tables(lake)
    conn = lake.conn
    reader = new_stream_owner(lake, "column_reader")
    conn.execute("CREATE TABLE public.payroll (id int, salary int, secret text)")
    conn.execute("INSERT INTO public.payroll VALUES (1, 10, 'a')")
    conn.execute(f"GRANT SELECT (id, salary), TRIGGER ON public.payroll TO {reader}")
    query = "SELECT count(*) AS n, sum(salary) AS total FROM public.payroll"
    with lake.cluster.connect(lake.dbname, user=reader) as theirs:
        create(theirs, "pay", query)
        conn.execute("INSERT INTO public.payroll VALUES (2, 20, 'b'), (3, 30, 'c')")
        log = conn.execute("SELECT format('pgtrickle_changes.log_%s_%s', 'pay'::regclass::oid, "
                           "'public.payroll'::regclass::oid)").fetchone()[0]
        assert rows(theirs, f"SELECT id, salary, secret FROM {log}") == [(2, 20, None), (3, 30, None)]
        theirs.execute("SELECT pgtrickle.refresh('pay')")
        check(theirs, "pay", query)
