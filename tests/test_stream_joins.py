"""Differential stream tables over inner joins of lake tables: random inserts, deletes
and updates on every source (through the FDW and through the reference DuckLake
client), refreshes at random points; after each refresh every stream table equals its
query's result at the frontier's snapshot, row for row."""

import random

import psycopg
import pytest

from roles import new_stream_owner
from streams import assert_verified, drive_randomly, rows

KEY = "ducklake:lake.orders"

SHAPES = {
    "join_rows": "SELECT o.id, o.amount, c.region FROM lake.orders o JOIN lake.customers c ON c.id = o.customer",
    "join_grouped": "SELECT c.region, count(*) AS n, sum(o.amount) AS total, avg(o.amount) AS mean, "
                    "min(o.amount) AS lo, max(o.amount) AS hi, count(c.tier) AS tiers "
                    "FROM lake.orders o, lake.customers c WHERE c.id = o.customer AND o.status <> 'void' "
                    "GROUP BY c.region HAVING count(*) > 1",
    "join_using": "SELECT tier, count(*) AS n FROM lake.orders JOIN lake.customers USING (region_hint) GROUP BY tier",
    "three_way": "SELECT r.zone, o.status, sum(o.amount * c.tier) AS weighted, count(*) AS n "
                 "FROM lake.orders o JOIN lake.customers c ON c.id = o.customer "
                 "JOIN lake.regions r ON r.name = c.region GROUP BY r.zone, o.status",
    "self_join": "SELECT a.region, count(*) AS pairs FROM lake.customers a JOIN lake.customers b "
                 "ON a.tier = b.tier AND a.id < b.id GROUP BY a.region",
    "scalar_join": "SELECT count(*) AS n, sum(o.amount) AS total, max(c.tier) AS top "
                   "FROM lake.orders o JOIN lake.customers c ON c.id = o.customer",
    "distinct_join": "SELECT DISTINCT c.region, o.status FROM lake.orders o JOIN lake.customers c ON c.id = o.customer",
    # int and bigint: the branches' outputs are coerced to the union's type
    "union_all": "SELECT o.id::bigint AS id, o.status AS label FROM lake.orders o WHERE o.amount > 5 "
                 "UNION ALL SELECT c.tier, r.zone FROM lake.customers c JOIN lake.regions r ON r.name = c.region",
    # sub-selects in FROM that filter and compute, nested too (TPC-H 7, 8 and 9 have this form)
    "subselect": "SELECT s.zone, count(*) AS n, sum(s.amount) AS total FROM (SELECT r.zone, o.amount * 2 AS amount "
                 "FROM lake.orders o JOIN lake.customers c ON c.id = o.customer JOIN lake.regions r ON r.name = c.region "
                 "WHERE o.status <> 'void') AS s GROUP BY s.zone",
    "nested_subselect": "SELECT t.region, count(*) AS n FROM (SELECT s.region FROM (SELECT c.region, o.id "
                        "FROM lake.orders o, lake.customers c WHERE c.id = o.customer) s WHERE s.id % 2 = 0) t, "
                        "lake.regions r WHERE r.name = t.region GROUP BY t.region",
    # UNION ALL below UNION: the duplicates of every branch go
    "union_distinct": "SELECT c.region AS name FROM lake.customers c UNION ALL SELECT r.name FROM lake.regions r "
                      "UNION SELECT o.status FROM lake.orders o",
    # each row counted on either side; NULLs are equal, as set operations compare them
    "intersected": "SELECT c.region AS name FROM lake.customers c INTERSECT SELECT r.name FROM lake.regions r",
    "intersected_all": "SELECT o.customer AS id, o.region_hint FROM lake.orders o "
                     "INTERSECT ALL SELECT c.id, c.region_hint FROM lake.customers c WHERE c.tier > 0",
    "excepted": "SELECT r.name FROM lake.regions r EXCEPT SELECT c.region FROM lake.customers c WHERE c.tier = 0",
    "excepted_all": "SELECT o.status AS label FROM lake.orders o JOIN lake.customers c ON c.id = o.customer "
                  "EXCEPT ALL SELECT r.zone FROM lake.regions r",
}

DDL = """
CREATE FOREIGN TABLE lake.orders (id int, customer int, amount numeric(10,2), status text, region_hint text)
  SERVER lake OPTIONS (table 'orders');
SELECT ducklake.create_table('lake.orders');
CREATE FOREIGN TABLE lake.customers (id int, region text, tier int, region_hint text)
  SERVER lake OPTIONS (table 'customers');
SELECT ducklake.create_table('lake.customers');
CREATE FOREIGN TABLE lake.regions (name text, zone text) SERVER lake OPTIONS (table 'regions');
SELECT ducklake.create_table('lake.regions');
CREATE EXTENSION ducklake_ivm;
"""

REGIONS = ["north", "south", "east", None]
STATUSES = ["open", "paid", "void"]


def setup_tables(lake):
    for statement in DDL.split(";\n"):
        if statement.strip():
            lake.conn.execute(statement)
    conn = lake.conn
    conn.execute("INSERT INTO lake.regions VALUES ('north', 'cold'), ('south', 'warm'), ('east', 'warm')")
    conn.execute("INSERT INTO lake.customers SELECT i, (ARRAY['north','south','east'])[1 + i % 3], i % 4, "
                 "(ARRAY['x','y'])[1 + i % 2] FROM generate_series(1, 12) i")
    conn.execute("INSERT INTO lake.orders SELECT i, 1 + i % 14, (i * 7 % 50) / 4.0, "
                 "(ARRAY['open','paid','void'])[1 + i % 3], (ARRAY['x','y', NULL])[1 + i % 3] "
                 "FROM generate_series(1, 40) i")


def literal(value):
    return "NULL" if value is None else repr(value)


def mutate(lake, rng, next_id):
    conn, ref = lake.conn, lake.ref
    table = rng.choice(["orders", "orders", "customers", "customers", "regions"])
    op = rng.choice(["insert", "ref_insert", "delete", "ref_delete", "update", "ref_update"])
    through_ref = op.startswith("ref_")
    run = ref.execute if through_ref else conn.execute
    prefix = "" if through_ref else "lake."
    if table == "orders":
        if op.endswith("insert"):
            values = ", ".join(
                f"({next_id + i}, {rng.randint(1, 16)}, {literal(rng.choice([None, rng.randint(0, 4000) / 100]))}, "
                f"{literal(rng.choice(STATUSES))}, {literal(rng.choice(['x', 'y', None]))})"
                for i in range(rng.randint(1, 5)))
            run(f"INSERT INTO {prefix}orders VALUES {values}")
        elif op.endswith("delete"):
            run(f"DELETE FROM {prefix}orders WHERE customer = {rng.randint(1, 16)}")
        else:
            run(f"UPDATE {prefix}orders SET amount = amount + 1, customer = {rng.randint(1, 16)} "
                f"WHERE id % 7 = {rng.randint(0, 6)}")
    elif table == "customers":
        if op.endswith("insert"):
            run(f"INSERT INTO {prefix}customers VALUES ({rng.randint(1, 16)}, {literal(rng.choice(REGIONS))}, "
                f"{literal(rng.choice([0, 1, 2, 3, None]))}, {literal(rng.choice(['x', 'y']))})")
        elif op.endswith("delete"):
            run(f"DELETE FROM {prefix}customers WHERE id = {rng.randint(1, 16)}")
        else:
            run(f"UPDATE {prefix}customers SET tier = {rng.randint(0, 3)}, region = {literal(rng.choice(REGIONS))} "
                f"WHERE id % 5 = {rng.randint(0, 4)}")
    else:
        if op.endswith("insert"):
            run(f"INSERT INTO {prefix}regions VALUES ({literal(rng.choice(REGIONS))}, {literal(rng.choice(['cold', 'warm']))})")
        elif op.endswith("delete"):
            run(f"DELETE FROM {prefix}regions WHERE name = {literal(rng.choice(REGIONS[:3]))}")
        else:
            run(f"UPDATE {prefix}regions SET zone = {literal(rng.choice(['cold', 'warm', 'hot']))} "
                f"WHERE name = {literal(rng.choice(REGIONS[:3]))}")
    return next_id + 10


def check(conn, name, query):
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        frontier = conn.execute("SELECT frontier FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                                (name,)).fetchone()[0]
        table = rows(conn, f"SELECT * FROM {name}")
    # Lake sources; a Postgres source (a static table in these tests) is read as it is.
    snapshots = {source["snapshot_id"] for key, source in frontier["sources"].items() if key.startswith("ducklake:")}
    assert len(snapshots) == 1, frontier
    (snapshot,) = snapshots
    conn.execute("BEGIN")
    try:
        conn.execute(f"SET LOCAL ducklake.snapshot_id = {int(snapshot)}")
        expected = rows(conn, query)
    finally:
        conn.execute("ROLLBACK")
    assert table == expected, f"{name} at snapshot {snapshot}"


def create(conn, name, query):
    conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
    mode = conn.execute("SELECT refresh_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                        (name,)).fetchone()[0]
    assert mode == "DIFFERENTIAL", (name, mode)


def keep_as_owners_who_are_not_superusers(lake, shapes, names, seed, refused):
    """Shapes `names` kept under random changes by a role that reads the lake but is
    not a superuser; a role that may not read lake.orders is refused shape `refused`."""
    owner, stranger = new_stream_owner(lake, "stream_owner"), new_stream_owner(lake, "stream_stranger")
    lake.conn.execute(f"REVOKE SELECT ON lake.orders FROM {stranger}")
    with lake.cluster.connect(lake.dbname, user=owner) as mine:
        for name in names:
            create(mine, name, shapes[name])
        rng, next_id = random.Random(seed), 1000
        for _ in range(6):
            next_id = mutate(lake, rng, next_id)
            for name in names:
                mine.execute("SELECT pgtrickle.refresh(%s)", (name,))
                check(mine, name, shapes[name])
        assert_verified(mine, names)
    with lake.cluster.connect(lake.dbname, user=stranger) as theirs:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
            theirs.execute("SELECT pgtrickle.create_stream_table('theirs', %s, '1h')", (shapes[refused],))
        assert error.value.diag.message_primary == "permission denied for foreign table orders"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_joins_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    for name in SHAPES:
        assert conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table(%s)", (name,)).fetchone()[0] == 0


def test_join_frontier_names_every_source_and_rewinds(lake):
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["three_way"]
    create(conn, "zones", query)
    start = conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('lake.orders')").fetchone()[0]
    frontier = conn.execute("SELECT frontier FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'zones'").fetchone()[0]
    assert frontier == {"sources": {f"ducklake:lake.{t}": {"snapshot_id": start}
                                    for t in ("orders", "customers", "regions")}}
    conn.execute("UPDATE lake.regions SET zone = 'hot' WHERE name = 'north'")
    conn.execute("SELECT pgtrickle.refresh('zones')")
    assert ("hot",) in rows(conn, "SELECT DISTINCT zone FROM zones")
    conn.execute("SELECT pgtrickle.rewind('zones', %s)", (start,))
    assert ("hot",) not in rows(conn, "SELECT DISTINCT zone FROM zones")
    check(conn, "zones", query)
    # One source moved alone: refused, naming both snapshots.
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:lake.regions,snapshot_id}', '1') WHERE pgt_name = 'zones'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        conn.execute("SELECT pgtrickle.refresh('zones', 'FULL')")
    assert "puts its sources at different snapshots" in str(error.value)
    assert "\"ducklake:lake.regions\" at 1" in str(error.value)


def test_set_operations_and_subqueries_that_cannot_be_maintained_are_refused_by_name(lake):
    setup_tables(lake)
    conn = lake.conn
    queries = [
        ("SELECT region FROM lake.customers UNION (SELECT name FROM lake.regions INTERSECT SELECT zone FROM lake.regions)",
         "INTERSECT below a UNION"),
        ("(SELECT region FROM lake.customers UNION SELECT name FROM lake.regions) EXCEPT ALL SELECT zone FROM lake.regions",
         "EXCEPT of set operations (only of two SELECTs)"),
        ("SELECT region FROM lake.customers UNION SELECT name FROM lake.regions UNION ALL SELECT status FROM lake.orders",
         "UNION below UNION ALL"),
        ("SELECT region FROM lake.customers UNION ALL SELECT max(name) FROM lake.regions",
         "a UNION branch with aggregates, DISTINCT, WITH or LIMIT"),
        ("SELECT s.status FROM (SELECT DISTINCT status FROM lake.orders) s",
         "a subquery in FROM with DISTINCT, window functions, LIMIT or set operations"),
    ]
    for query, name in queries:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
            conn.execute("SELECT pgtrickle.create_stream_table('refused_t', %s, '1h', 'DIFFERENTIAL')", (query,))
        assert error.value.diag.message_primary == f"{name} is not supported in a DIFFERENTIAL stream table", query


def test_a_source_with_dropped_columns(lake):
    """The feed mirrors the source's attribute numbers, holes included, so the
    query's columns read the same values through either."""
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.items (junk int, id int, note text, price numeric(8,2)) "
                 "SERVER lake OPTIONS (table 'items')")
    conn.execute("SELECT ducklake.create_table('lake.items')")
    conn.execute("INSERT INTO lake.items SELECT -i, i, 'n' || i, i * 1.25 FROM generate_series(1, 20) i")
    conn.execute("ALTER FOREIGN TABLE lake.items DROP COLUMN junk")
    query = "SELECT o.status, sum(i.price) AS total, count(*) AS n FROM lake.orders o JOIN lake.items i ON i.id = o.id GROUP BY o.status"
    create(conn, "priced", query)
    conn.execute("ALTER FOREIGN TABLE lake.items DROP COLUMN note")
    conn.execute("UPDATE lake.items SET price = price + 100 WHERE id % 3 = 0")
    conn.execute("INSERT INTO lake.orders VALUES (5, 1, 1.00, 'open', 'x')")
    conn.execute("SELECT pgtrickle.refresh('priced')")
    check(conn, "priced", query)
    assert conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table('priced')").fetchone() == (0,)


def test_a_lake_column_renamed_after_the_frontier(lake):
    """A join reads a source as it was at the frontier by time travel, by the column's
    name now (DuckLake maps it to the column's id): still differential and exact."""
    setup_tables(lake)
    conn = lake.conn
    query = SHAPES["join_grouped"]
    create(conn, "renamed", query)
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['renamed'])")
    lake.ref.execute("ALTER TABLE orders RENAME COLUMN amount TO amt")
    conn.execute("ALTER FOREIGN TABLE lake.orders ALTER COLUMN amount OPTIONS (ADD column_name 'amt')")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    for _ in range(2):
        conn.execute("UPDATE lake.customers SET region = 'south' WHERE id % 3 = 1")
        conn.execute("UPDATE lake.orders SET amount = amount + 1 WHERE id % 4 = 0")
        conn.execute("SELECT pgtrickle.refresh('renamed')")
        check(conn, "renamed", query)
    assert notices == []


def test_a_source_pointed_at_another_lake_table_gets_new_mirrors(lake):
    setup_tables(lake)
    conn = lake.conn
    query = "SELECT c.region, count(*) AS n FROM lake.orders o JOIN lake.customers c ON c.id = o.customer GROUP BY c.region"
    create(conn, "moved", query)
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['moved'])")
    lake.ref.execute("CREATE TABLE orders2 AS SELECT * FROM orders WHERE id % 2 = 0")
    conn.execute("ALTER FOREIGN TABLE lake.orders OPTIONS (SET table 'orders2')")
    conn.execute("UPDATE lake.customers SET region = 'east' WHERE id = 3")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SELECT pgtrickle.refresh('moved')")
    assert notices == ["stream table public.moved: lake.orders now reads another lake table; rebuilt in full"]
    check(conn, "moved", query)
    conn.execute("INSERT INTO lake.orders VALUES (500, 1, 1.0, 'open', 'x')")
    conn.execute("UPDATE lake.customers SET region = 'north' WHERE id = 3")
    conn.execute("SELECT pgtrickle.refresh('moved')")
    assert len(notices) == 1
    check(conn, "moved", query)
    feeds = conn.execute("SELECT ftoptions FROM pg_foreign_table WHERE ftrelid::regclass::text ~ "
                         "('^pgtrickle_changes.(feed|old)_[0-9]+_' || 'lake.orders'::regclass::oid::text || '$')").fetchall()
    assert len(feeds) == 2
    assert feeds and all("table=orders2" in options for (options,) in feeds), feeds
