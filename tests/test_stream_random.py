"""Randomized differential maintenance: for every supported query shape, random
inserts, deletes and updates (through the FDW and through the reference DuckLake
client); after each refresh every stream table equals its query's full result at
the frontier's snapshot, row for row."""

import random
import pytest

from streams import frontier, full_result, rows, setup_events

SHAPES = {
    "grouped_all": "SELECT event_type, count(*) AS n, count(value) AS nv, sum(value) AS s, avg(value) AS a, "
                   "min(value) AS lo, max(value) AS hi FROM lake.events GROUP BY event_type",
    "filtered_having": "SELECT event_type, sum(value) AS s, count(*) AS n FROM lake.events WHERE value > 3 "
                       "GROUP BY event_type HAVING count(*) > 2",
    "scalar": "SELECT count(*) AS n, sum(value) AS s, min(value) AS lo, max(value) AS hi, avg(value) AS a "
              "FROM lake.events",
    "projection": "SELECT event_type, value * 2 AS doubled FROM lake.events WHERE value % 2 = 0",
    "distinct_rows": "SELECT DISTINCT event_type, value % 3 AS bucket FROM lake.events",
    "null_keys": "SELECT value % 4 AS bucket, count(*) AS n, max(event_type) AS top, min(event_type) AS bottom "
                 "FROM lake.events GROUP BY value % 4",
    "numeric_exact": "SELECT upper(event_type) AS kind, sum(value::numeric / 8) AS eighths, "
                     "avg(value::numeric) AS mean FROM lake.events GROUP BY upper(event_type)",
    "expression_over_aggregates": "SELECT event_type, sum(value) + count(*) AS score, max(value) - min(value) AS spread "
                                  "FROM lake.events GROUP BY event_type HAVING sum(value) IS NOT NULL",
    # quarters add up exactly in any order, so a float sum equals the query's
    "float_quarters": "SELECT event_type, sum(value::float8 / 4) AS s, avg(value::float8 / 4) AS a "
                      "FROM lake.events GROUP BY event_type",
}

TYPES = ["a", "b", "c", None]


def random_value(rng):
    return None if rng.random() < 0.1 else rng.randint(-5, 20)


def mutate(lake, rng):
    op = rng.choice(["insert", "insert", "ref_insert", "delete", "update", "ref_delete", "ref_update"])
    conn = lake.conn
    if op in ("insert", "ref_insert"):
        batch = [(rng.choice(TYPES), random_value(rng)) for _ in range(rng.randint(1, 6))]
        if op == "insert":
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO lake.events (event_id, event_type, value, created_at) "
                                "VALUES (gen_random_uuid(), %s, %s, now())", batch)
            # executemany autocommits each row: several snapshots, fine.
        else:
            values = ", ".join(f"(uuid(), {repr(t) if t else 'NULL'}, {v if v is not None else 'NULL'}, now())"
                               for t, v in batch)
            lake.ref.execute(f"INSERT INTO events VALUES {values}")
    elif op == "delete":
        conn.execute("DELETE FROM lake.events WHERE value = %s", (rng.randint(-5, 20),))
    elif op == "ref_delete":
        lake.ref.execute(f"DELETE FROM events WHERE event_type = '{rng.choice(TYPES[:3])}' AND value > {rng.randint(5, 20)}")
    elif op == "update":
        conn.execute("UPDATE lake.events SET value = value + %s WHERE event_type = %s AND value < %s",
                     (rng.randint(-3, 3), rng.choice(TYPES[:3]), rng.randint(0, 20)))
    else:
        lake.ref.execute(f"UPDATE events SET event_type = '{rng.choice(TYPES[:3])}' WHERE value = {rng.randint(-5, 20)}")


def check(conn, name, query):
    # The frontier and the table as one refresh committed them: the scheduler refreshes
    # each table once when it first sees it, which under load can fall between two reads.
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = frontier(conn, name)
        table = rows(conn, f"SELECT * FROM {name}")
    assert table == full_result(conn, query, snapshot), f"{name} at snapshot {snapshot}"


@pytest.mark.parametrize("seed,storage", [(1, "inlined"), (2, "inlined"), (3, "files"), (4, "files")])
def test_random_changes_keep_every_shape_exact(lake, seed, storage):
    """`inlined`: small writes stay in the catalog (DuckLake's default); `files`: every
    write is a Parquet file and every delete a delete file, so updates hit data files
    that already have deletes."""
    rng = random.Random(seed)
    if storage == "files":
        # for every writer of the lake: the option is kept in its catalog
        lake.ref.execute("CALL analytics.set_option('data_inlining_row_limit', 0)")
    setup_events(lake)
    conn = lake.conn
    conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), (ARRAY['a','b','c'])[1 + i % 3], i % 17, now() "
                 "FROM generate_series(1, 30) i")
    for name, query in SHAPES.items():
        # A long schedule: this test drives refreshes itself; the scheduler refreshes each once.
        conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1h')", (name, query))
        check(conn, name, query)
    for round_number in range(25):
        for _ in range(rng.randint(1, 3)):
            mutate(lake, rng)
        for name, query in SHAPES.items():
            if rng.random() < 0.7:
                conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
                check(conn, name, query)
    if storage == "files":
        files, delete_files = conn.execute("SELECT file_count, delete_file_count FROM ducklake.table_info('lake') "
                                           "WHERE table_name = 'events'").fetchone()
        assert files > 10 and delete_files > 0, (files, delete_files)
    for name, query in SHAPES.items():
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        check(conn, name, query)
        # Deleted groups leave no state behind.
        state_rows = conn.execute(
            f"SELECT count(*) FROM pgtrickle_state.state_{conn.execute(f'SELECT {chr(39)}{name}{chr(39)}::regclass::oid').fetchone()[0]} "
            "WHERE __pgt_count = 0").fetchone()[0]
        assert state_rows == (1 if name == "scalar" and conn.execute("SELECT n FROM scalar").fetchone()[0] == 0 else 0)
