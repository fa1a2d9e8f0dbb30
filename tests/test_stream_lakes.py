"""Stream tables over the lakes of two servers in one query. Each lake counts its
snapshots apart, so the frontier keeps each source at its own lake's snapshot: random
changes to both lakes (through the FDW and the reference clients), refreshes at random
points, and after each refresh the table equals its query with each lake read as of
its frontier snapshot."""

import json
import os
import random

import psycopg
import pytest

from conftest import Reference
from roles import grant_lake_reading, new_role
from streams import assert_verified, drive_randomly, last_error, rows

SHAPES = {
    "across_lakes": "SELECT o.id, o.amount, r.zone FROM lake.orders o JOIN lake.customers c ON c.id = o.customer "
                    "JOIN archive.regions r ON r.name = c.region",
    "zones": "SELECT r.zone, count(*) AS n, sum(o.amount) AS total FROM lake.orders o, lake.customers c, "
             "archive.regions r WHERE c.id = o.customer AND r.name = c.region GROUP BY r.zone",
    "in_archive": "SELECT c.id, c.region FROM lake.customers c "
                  "WHERE EXISTS (SELECT 1 FROM archive.regions r WHERE r.name = c.region AND r.zone = 'warm')",
    "not_in_archive": "SELECT o.status, count(*) AS n FROM lake.orders o LEFT JOIN archive.regions r "
                      "ON r.name = o.region_hint WHERE r.name IS NULL GROUP BY o.status",
    "both_lakes": "SELECT c.region AS name FROM lake.customers c UNION ALL SELECT r.name FROM archive.regions r",
    # archive.tiers changes while archive.regions does not: one lake, two sources
    "tiered": "SELECT c.region, t.label, count(*) AS n FROM lake.customers c JOIN archive.tiers t ON t.tier = c.tier "
              "GROUP BY c.region, t.label",
    # an aggregating sub-select over both lakes (Postgres joins what DuckDB cannot)
    "busy_zones": "SELECT s.zone, s.n FROM (SELECT r.zone, count(*) AS n FROM lake.customers c "
                  "JOIN archive.regions r ON r.name = c.region GROUP BY r.zone) s WHERE s.n > 1",
    # and a Postgres table with them
    "labelled": "SELECT l.label, count(*) AS n, sum(o.amount) AS total FROM lake.orders o "
                "JOIN lake.customers c ON c.id = o.customer JOIN archive.regions r ON r.name = c.region "
                "JOIN public.labels l ON l.zone = r.zone GROUP BY l.label",
}

REGIONS = ["north", "south", "east", None]
STATUSES = ["open", "paid", "void"]


@pytest.fixture
def lakes(lake):
    """Server `lake` with orders and customers, server `archive` (another lake, its
    catalog in the same database) with regions, both written until their snapshot ids
    differ."""
    archive_path = f"{lake.data_path}archive-lake/"  # removed with the lake's directory
    os.makedirs(archive_path)
    os.chmod(archive_path, 0o777)
    conn = lake.conn
    conn.execute(f"CREATE SERVER archive FOREIGN DATA WRAPPER ducklake OPTIONS (catalog_name 'archive', "
                 f"data_path '{archive_path}')")
    conn.execute("CREATE SCHEMA archive")
    for ddl in [
        "CREATE FOREIGN TABLE lake.orders (id int, customer int, amount numeric(10,2), status text, region_hint text) "
        "SERVER lake OPTIONS (table 'orders')",
        "CREATE FOREIGN TABLE lake.customers (id int, region text, tier int) SERVER lake OPTIONS (table 'customers')",
        "CREATE FOREIGN TABLE archive.regions (name text, zone text) SERVER archive OPTIONS (table 'regions')",
        "CREATE FOREIGN TABLE archive.tiers (tier int, label text) SERVER archive OPTIONS (table 'tiers')",
        "CREATE TABLE public.labels (zone text, label text)",
    ]:
        conn.execute(ddl)
    for table in ["lake.orders", "lake.customers", "archive.regions", "archive.tiers"]:
        conn.execute("SELECT ducklake.create_table(%s)", (table,))
    conn.execute("INSERT INTO archive.tiers VALUES (0, 'free'), (1, 'basic'), (2, 'pro'), (3, 'pro')")
    conn.execute("INSERT INTO public.labels VALUES ('cold', 'north pole'), ('warm', 'beach'), ('hot', 'desert')")
    conn.execute("CREATE EXTENSION ducklake_ivm")
    conn.execute("INSERT INTO archive.regions VALUES ('north', 'cold'), ('south', 'warm'), ('east', 'warm')")
    conn.execute("INSERT INTO lake.customers SELECT i, (ARRAY['north','south','east'])[1 + i % 3], i % 4 "
                 "FROM generate_series(1, 12) i")
    for part in range(4):
        conn.execute(f"INSERT INTO lake.orders SELECT i, 1 + i % 14, (i * 7 % 50) / 4.0, "
                     f"(ARRAY['open','paid','void'])[1 + i % 3], (ARRAY['north','west', NULL])[1 + i % 3] "
                     f"FROM generate_series({part * 10 + 1}, {part * 10 + 10}) i")
    lake.archive = Reference(lake.cluster, lake.dbname, archive_path, alias="archive")
    assert server_snapshots(conn)["lake"] != server_snapshots(conn)["archive"]
    yield lake
    lake.archive.close()


def server_snapshots(conn):
    return {"lake": conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('lake.orders')").fetchone()[0],
            "archive": conn.execute("SELECT ducklake.ducklake_latest_snapshot_id('archive.regions')").fetchone()[0]}


def literal(value):
    return "NULL" if value is None else repr(value)


def changes(rng, next_id):
    """Per lake table: its server and a random insert, delete and update of it (the
    table named `{t}`)."""
    order = lambda i: (f"({next_id + i}, {rng.randint(1, 16)}, {literal(rng.choice([None, rng.randint(0, 4000) / 100]))}, "
                       f"{literal(rng.choice(STATUSES))}, {literal(rng.choice(['north', 'west', None]))})")
    return {
        "orders": ("lake", [
            "INSERT INTO {t} VALUES " + ", ".join(order(i) for i in range(rng.randint(1, 5))),
            f"DELETE FROM {{t}} WHERE customer = {rng.randint(1, 16)}",
            f"UPDATE {{t}} SET amount = amount + 1, customer = {rng.randint(1, 16)} WHERE id % 7 = {rng.randint(0, 6)}",
        ]),
        "customers": ("lake", [
            f"INSERT INTO {{t}} VALUES ({rng.randint(1, 16)}, {literal(rng.choice(REGIONS))}, "
            f"{literal(rng.choice([0, 1, 2, 3, None]))})",
            f"DELETE FROM {{t}} WHERE id = {rng.randint(1, 16)}",
            f"UPDATE {{t}} SET tier = {rng.randint(0, 3)}, region = {literal(rng.choice(REGIONS))} "
            f"WHERE id % 5 = {rng.randint(0, 4)}",
        ]),
        "regions": ("archive", [
            f"INSERT INTO {{t}} VALUES ({literal(rng.choice(REGIONS + ['west']))}, {literal(rng.choice(['cold', 'warm']))})",
            f"DELETE FROM {{t}} WHERE name = {literal(rng.choice(REGIONS[:3] + ['west']))}",
            f"UPDATE {{t}} SET zone = {literal(rng.choice(['cold', 'warm', 'hot']))} "
            f"WHERE name = {literal(rng.choice(REGIONS[:3]))}",
        ]),
        "tiers": ("archive", [
            f"INSERT INTO {{t}} VALUES ({rng.randint(0, 3)}, {literal(rng.choice(['extra', 'pro']))})",
            f"UPDATE {{t}} SET label = {literal(rng.choice(['free', 'basic', 'pro', None]))} WHERE tier = {rng.randint(0, 3)}",
        ]),
    }


def mutate(lake, rng, next_id):
    """One random change: of a lake table, through the FDW or its lake's reference
    client, or of the Postgres table `labels`."""
    conn = lake.conn
    table = rng.choice(["orders", "orders", "customers", "regions", "regions", "tiers", "labels"])
    if table == "labels":
        conn.execute(f"UPDATE public.labels SET label = {literal(rng.choice(['beach', 'desert', 'ice']))} "
                     f"WHERE zone = {literal(rng.choice(['cold', 'warm', 'hot']))}")
        return next_id
    server, statements = changes(rng, next_id)[table]
    statement = rng.choice(statements)
    if rng.random() < 0.5:
        reference = lake.ref if server == "lake" else lake.archive
        reference.execute(statement.format(t=table))
    else:
        conn.execute(statement.format(t=f"{server}.{table}"))
    return next_id + 10


SERVER_OF = {"ducklake:lake.orders": "lake", "ducklake:lake.customers": "lake", "ducklake:archive.regions": "archive",
             "ducklake:archive.tiers": "archive"}


def frontier_pins(conn, name):
    """The frontier as snapshot ids by server, checking that the sources of one lake agree."""
    frontier = conn.execute("SELECT frontier FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                            (name,)).fetchone()[0]
    pins = {}
    for key, entry in frontier["sources"].items():
        if key.startswith("postgres:"):
            continue
        assert pins.setdefault(SERVER_OF[key], entry["snapshot_id"]) == entry["snapshot_id"], frontier
    return pins


def query_at(conn, query, pins):
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT set_config('ducklake.snapshot_id', %s, true)", (json.dumps(pins),))
        return rows(conn, query)
    finally:
        conn.execute("ROLLBACK")


def check(conn, name, query):
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pins = frontier_pins(conn, name)
        table = rows(conn, f"SELECT * FROM {name}")
        note = last_error(conn, name)
    assert table == query_at(conn, query, pins), f"{name} at {pins}"
    assert note is None, f"{name}: {note}"  # differential, not a rebuild


def create(conn, name, query):
    conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
    mode = conn.execute("SELECT refresh_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s",
                        (name,)).fetchone()[0]
    assert mode == "DIFFERENTIAL", (name, mode)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_to_two_lakes_keep_stream_tables_exact(lakes, seed):
    drive_randomly(lakes, random.Random(seed), SHAPES, create, mutate, check)
    conn = lakes.conn
    # each source is recorded at its own lake's current snapshot
    assert frontier_pins(conn, "zones") == server_snapshots(conn)
    # both lakes move on: verify compares each table with its query at the frontier
    conn.execute("DELETE FROM lake.orders WHERE id % 3 = 0")
    conn.execute("UPDATE archive.regions SET zone = 'polar' WHERE name = 'north'")
    conn.execute("UPDATE archive.tiers SET label = 'gold' WHERE tier = 3")
    assert frontier_pins(conn, "zones") != server_snapshots(conn)
    assert_verified(conn, SHAPES)
    for name, query in SHAPES.items():
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        check(conn, name, query)


def created_and_moved(conn, name, query, mode="DIFFERENTIAL"):
    """Create stream table `name`, change both lakes and refresh it, checking the
    frontier and the rows: each lake's snapshot before the changes."""
    conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h', %s)", (name, query, mode))
    start = server_snapshots(conn)
    assert frontier_pins(conn, name) == start
    conn.execute("UPDATE archive.regions SET zone = 'hot' WHERE name = 'north'")
    conn.execute("DELETE FROM lake.orders WHERE id <= 10")
    conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
    assert frontier_pins(conn, name) == server_snapshots(conn) != start
    check(conn, name, query)
    return start


def test_each_lake_rewinds_to_its_own_snapshot(lakes):
    conn = lakes.conn
    query = SHAPES["zones"]
    start = created_and_moved(conn, "zones", query)
    assert ("hot",) in rows(conn, "SELECT zone FROM zones")
    # one id cannot place two lakes: refused, naming both servers
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        conn.execute("SELECT pgtrickle.rewind('zones', %s)", (start["lake"],))
    assert error.value.diag.message_primary == ("stream table zones reads the lakes of servers archive, lake, "
                                                "whose snapshot ids are separate sequences")
    assert error.value.diag.message_hint == """Name each lake's snapshot: pgtrickle.rewind_lakes('zones', '{"archive": 42, ...}')."""
    for ids, message in [
        ({"lake": start["lake"]}, 'snapshot_ids names no snapshot of server "archive"'),
        ({**start, "other": 1}, 'stream table zones reads no lake of server "other" (its lakes: archive, lake)'),
        ({**start, "lake": -2}, 'snapshot_ids: -2 of server "lake" is not a snapshot id (a non-negative integer)'),
        ([1, 2], "snapshot_ids must be a JSON object of snapshot ids by server name"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
            conn.execute("SELECT pgtrickle.rewind_lakes('zones', %s::jsonb)", (json.dumps(ids),))
        assert error.value.diag.message_primary == message
    # each lake named: paused, and rebuilt with each lake as it was
    conn.execute("SELECT pgtrickle.rewind_lakes('zones', %s::jsonb)", (json.dumps(start),))
    assert conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'zones'").fetchone()[0] == "PAUSED"
    assert frontier_pins(conn, "zones") == start
    assert ("hot",) not in rows(conn, "SELECT zone FROM zones")
    assert rows(conn, "SELECT * FROM zones") == query_at(conn, query, start)
    # resumed, it replays both lakes' changes since, differentially
    conn.execute("SELECT pgtrickle.resume_scheduler(ARRAY['zones'])")
    conn.execute("SELECT pgtrickle.refresh('zones')")
    assert frontier_pins(conn, "zones") == server_snapshots(conn)
    check(conn, "zones", query)
    # the seed's way, per source with jsonb_set, then FULL at the frontier
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['zones'])")
    for key in ["ducklake:lake.orders", "ducklake:lake.customers", "ducklake:archive.regions"]:
        conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                     "ARRAY['sources', %s, 'snapshot_id'], to_jsonb(%s::bigint)) WHERE pgt_name = 'zones'",
                     (key, start[SERVER_OF[key]]))
    conn.execute("SELECT pgtrickle.refresh('zones', 'FULL')")
    assert frontier_pins(conn, "zones") == start
    assert rows(conn, "SELECT * FROM zones") == query_at(conn, query, start)
    # the sources of one lake must agree
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:lake.customers,snapshot_id}', '1') WHERE pgt_name = 'zones'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        conn.execute("SELECT pgtrickle.refresh('zones', 'FULL')")
    assert "puts its sources at different snapshots" in str(error.value)
    # a lake's frontier beyond its current snapshot names the lake
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:lake.customers,snapshot_id}', %s::jsonb) WHERE pgt_name = 'zones'",
                 (str(start["lake"]),))
    conn.execute("UPDATE pgtrickle.pgt_stream_tables SET frontier = jsonb_set(frontier, "
                 "'{sources,ducklake:archive.regions,snapshot_id}', '999999') WHERE pgt_name = 'zones'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        conn.execute("SELECT pgtrickle.refresh('zones')")
    assert error.value.diag.message_primary == (
        "frontier of public.zones is snapshot 999999 of server archive's lake, "
        f"but its current snapshot is {server_snapshots(conn)['archive']}")


def test_a_full_mode_table_reads_each_lake_at_its_frontier(lakes):
    conn = lakes.conn
    query = SHAPES["across_lakes"]
    start = created_and_moved(conn, "full_t", query, "FULL")
    conn.execute("SELECT pgtrickle.rewind_lakes('full_t', %s::jsonb)", (json.dumps(start),))
    assert rows(conn, "SELECT * FROM full_t") == query_at(conn, query, start) != query_at(conn, query, server_snapshots(conn))
    assert_verified(conn, ["full_t"])


def test_an_owner_who_is_not_a_superuser_keeps_and_rewinds_a_table_over_two_lakes(lakes):
    conn = lakes.conn
    owner, other = new_role(conn, "lakes_owner"), new_role(conn, "lakes_other")
    conn.execute("SELECT ducklake.current_snapshot('archive')")  # attached: its catalog schema exists
    for role in (owner, other):
        grant_lake_reading(lakes, role)
        conn.execute(f"GRANT USAGE ON FOREIGN SERVER archive TO {role}")
        conn.execute(f"GRANT USAGE ON SCHEMA archive TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA archive TO {role}")
        conn.execute(f"GRANT USAGE ON SCHEMA __ducklake_metadata_archive TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA __ducklake_metadata_archive TO {role}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    query = SHAPES["zones"]
    with lakes.cluster.connect(lakes.dbname, user=owner) as mine, lakes.cluster.connect(lakes.dbname, user=other) as theirs:
        mine.execute("SELECT pgtrickle.create_stream_table('owned_zones', %s, '1h')", (query,))
        start = server_snapshots(conn)
        conn.execute("UPDATE archive.regions SET zone = 'hot' WHERE name = 'north'")
        conn.execute("DELETE FROM lake.orders WHERE id <= 10")
        mine.execute("SELECT pgtrickle.refresh('owned_zones')")
        assert frontier_pins(mine, "owned_zones") == server_snapshots(conn) != start
        check(mine, "owned_zones", query)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
            theirs.execute("SELECT pgtrickle.rewind_lakes('owned_zones', %s::jsonb)", (json.dumps(start),))
        assert error.value.diag.message_primary == "must be owner of stream table owned_zones"
        mine.execute("SELECT pgtrickle.rewind_lakes('owned_zones', %s::jsonb)", (json.dumps(start),))
        assert frontier_pins(mine, "owned_zones") == start
        assert rows(mine, "SELECT * FROM owned_zones") == query_at(mine, query, start)
        assert_verified(mine, ["owned_zones"])
