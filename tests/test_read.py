"""The read path on lakes written by the reference client: inlined rows, many files,
deletes and updates, schema changes, import options, snapshot consistency."""

from decimal import Decimal

import psycopg
import pytest

from compare import compare

EVENTS = "CREATE TABLE events (id BIGINT, event_type VARCHAR, value BIGINT)"


def insert_events(lake, start, count):
    lake.ref.execute(
        f"INSERT INTO events SELECT i, ['click','view','purchase'][1 + i % 3], i * 10 "
        f"FROM range({start}, {start + count}) t(i)"
    )


def test_inlined_and_file_rows_together(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 5)  # small: inlined into the catalog
    insert_events(lake, 5, 5000)  # large: a Parquet file
    insert_events(lake, 5005, 3)  # inlined again
    files = lake.ref.rows("SELECT count(*) FROM ducklake_list_files('analytics', 'events')")[0][0]
    assert files == 1
    lake.import_schema()
    compare(lake, "SELECT * FROM lake.events ORDER BY id", "SELECT * FROM events ORDER BY id")
    assert lake.rows("SELECT count(*), sum(value) FROM lake.events") == [(5008, sum(range(5008)) * 10)]


def test_many_files(lake):
    lake.ref.execute(EVENTS)
    for batch in range(12):
        insert_events(lake, batch * 1000, 1000)
    files = lake.ref.rows("SELECT count(*) FROM ducklake_list_files('analytics', 'events')")[0][0]
    assert files == 12
    lake.import_schema()
    compare(lake, "SELECT * FROM lake.events ORDER BY id", "SELECT * FROM events ORDER BY id")


def test_rows_deleted_and_updated_by_duckdb(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 3000)
    lake.ref.execute("DELETE FROM events WHERE id % 7 = 0")
    lake.ref.execute("UPDATE events SET value = -value, event_type = 'updated' WHERE id % 11 = 0")
    insert_events(lake, 3000, 4)
    lake.ref.execute("DELETE FROM events WHERE id = 3001")
    lake.import_schema()
    rows = compare(lake, "SELECT * FROM lake.events ORDER BY id", "SELECT * FROM events ORDER BY id")
    # ids 3000..3003 were inserted after the delete of multiples of 7
    expected = len([i for i in range(3000) if i % 7 != 0]) + 3
    assert len(rows) == expected
    assert lake.rows("SELECT value FROM lake.events WHERE id = 22") == [(-220,)]


def test_column_added_and_renamed_after_data(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 100)
    lake.ref.execute("ALTER TABLE events ADD COLUMN note VARCHAR DEFAULT 'none'")
    lake.ref.execute("ALTER TABLE events RENAME COLUMN value TO amount")
    lake.ref.execute("INSERT INTO events VALUES (100, 'click', 1000, 'new')")
    lake.import_schema()
    columns = lake.rows("SELECT attname FROM pg_attribute WHERE attrelid = 'lake.events'::regclass "
                        "AND attnum > 0 ORDER BY attnum")
    assert columns == [("id",), ("event_type",), ("amount",), ("note",)]
    compare(lake, "SELECT * FROM lake.events ORDER BY id", "SELECT * FROM events ORDER BY id")
    assert lake.rows("SELECT note, count(*) FROM lake.events GROUP BY note ORDER BY note") == [
        ("new", 1), ("none", 100)]


def test_import_limit_to_and_except(lake):
    for name in ("a", "b", "c"):
        lake.ref.execute(f"CREATE TABLE {name} (x INTEGER)")
    lake.conn.execute("CREATE SCHEMA only_b")
    lake.conn.execute("IMPORT FOREIGN SCHEMA main LIMIT TO (b) FROM SERVER lake INTO only_b")
    lake.conn.execute("CREATE SCHEMA not_b")
    lake.conn.execute("IMPORT FOREIGN SCHEMA main EXCEPT (b) FROM SERVER lake INTO not_b")
    tables = lake.rows("SELECT foreign_table_schema, foreign_table_name FROM information_schema.foreign_tables "
                       "WHERE foreign_table_schema IN ('only_b', 'not_b') ORDER BY 1, 2")
    assert tables == [("not_b", "a"), ("not_b", "c"), ("only_b", "b")]
    options = lake.rows("SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = 'only_b.b'::regclass")
    assert options == [(["schema=main", "table=b"],)]


def test_other_lake_schema_and_table_option(lake):
    lake.ref.execute("CREATE SCHEMA sales")
    lake.ref.execute("CREATE TABLE sales.orders (id INTEGER, total DECIMAL(10,2))")
    lake.ref.execute("INSERT INTO sales.orders VALUES (1, 9.99), (2, 100.00)")
    lake.conn.execute("CREATE FOREIGN TABLE public.my_orders (id int, total numeric(10,2)) "
                      "SERVER lake OPTIONS (schema 'sales', table 'orders')")
    compare(lake, "SELECT * FROM my_orders ORDER BY id", "SELECT * FROM sales.orders ORDER BY id")
    lake.conn.execute("CREATE SCHEMA s2")
    lake.conn.execute("IMPORT FOREIGN SCHEMA sales FROM SERVER lake INTO s2")
    assert lake.rows("SELECT sum(total) FROM s2.orders") == [(Decimal("109.99"),)]


def test_one_snapshot_per_transaction(lake):
    """Within one Postgres transaction all reads of a lake see the same snapshot."""
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 10)
    lake.import_schema()
    with lake.connect(autocommit=False) as conn:
        first = conn.execute("SELECT count(*) FROM lake.events").fetchone()[0]
        insert_events(lake, 10, 20)
        second = conn.execute("SELECT count(*) FROM lake.events").fetchone()[0]
        assert (first, second) == (10, 10)
        conn.commit()
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone()[0] == 30


def test_same_plan_executed_repeatedly(lake):
    """Cached plans (prepared statements, PL/pgSQL) re-execute the scan safely."""
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 50)
    lake.import_schema()
    lake.conn.execute("PREPARE q(bigint) AS SELECT count(*) FROM lake.events WHERE id < $1")
    for limit in (10, 20, 30, 40, 50, 60, 70):
        assert lake.rows(f"EXECUTE q({limit})") == [(min(limit, 50),)]
    lake.conn.execute("""CREATE FUNCTION total() RETURNS bigint LANGUAGE plpgsql AS
                         $$ BEGIN RETURN (SELECT sum(value) FROM lake.events); END $$""")
    for _ in range(3):
        assert lake.rows("SELECT total()") == [(sum(range(50)) * 10,)]


def test_rescan_inside_nested_loop(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 30)
    lake.import_schema()
    lake.conn.execute("CREATE TABLE keys AS SELECT generate_series(0, 9) AS k")
    lake.conn.execute("SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_material = off")
    rows = lake.rows("SELECT k, count(*) FROM keys JOIN lake.events e ON e.id % 10 = keys.k "
                     "GROUP BY k ORDER BY k")
    assert rows == [(k, 3) for k in range(10)]


def test_whole_row_and_no_column_references(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 3)
    lake.import_schema()
    assert lake.rows("SELECT e FROM lake.events e ORDER BY id") == [
        ("(0,click,0)",), ("(1,view,10)",), ("(2,purchase,20)",)]
    assert lake.rows("SELECT count(*) FROM lake.events") == [(3,)]
    assert lake.rows("SELECT 1 FROM lake.events LIMIT 1") == [(1,)]


def test_explain_verbose_shows_duckdb_sql(lake):
    lake.ref.execute(EVENTS)
    lake.import_schema()
    plan = "\n".join(r[0] for r in lake.rows("EXPLAIN (VERBOSE) SELECT event_type FROM lake.events"))
    assert 'DuckDB SQL: SELECT CAST("event_type" AS VARCHAR) FROM "analytics"."main"."events"' in plan


def test_embedded_default_server(database, pg):
    """No options at all: catalog in this database, data under the cluster's data directory."""
    conn, dbname = database
    conn.execute("CREATE SERVER lake FOREIGN DATA WRAPPER ducklake")
    conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE events (id INTEGER, name VARCHAR)')")
    conn.execute("SELECT ducklake.execute('lake', 'INSERT INTO events SELECT i, ''n'' || i FROM range(20) t(i)')")
    conn.execute("CREATE SCHEMA lake")
    conn.execute("IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake")
    assert conn.execute("SELECT count(*), max(name) FROM lake.events").fetchall() == [(20, "n9")]
    schemas = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = '__ducklake_metadata_lake'").fetchone()
    assert schemas[0] > 20
    data_path = conn.execute("SELECT value FROM __ducklake_metadata_lake.ducklake_metadata "
                             "WHERE key = 'data_path'").fetchone()[0]
    database_oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    assert data_path == f"{pg.data_directory}/ducklake/{database_oid}/lake/"


def test_create_table_from_foreign_table_definition(lake):
    lake.conn.execute("CREATE FOREIGN TABLE lake.events (event_id uuid NOT NULL, event_type text, "
                      "value bigint, amount numeric(12,3), created_at timestamptz, tags text[]) SERVER lake")
    lake.conn.execute("SELECT ducklake.create_table('lake.events')")
    columns = lake.ref.rows("SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
                            "WHERE table_name = 'events' ORDER BY column_index")
    assert columns == [("event_id", "UUID", False), ("event_type", "VARCHAR", True), ("value", "BIGINT", True),
                       ("amount", "DECIMAL(12,3)", True), ("created_at", "TIMESTAMP WITH TIME ZONE", True),
                       ("tags", "VARCHAR[]", True)]
    lake.ref.execute("INSERT INTO events VALUES (uuid(), 'click', 1, 1.5, now(), ['a'])")
    assert lake.rows("SELECT event_type, value, amount, tags FROM lake.events") == [
        ("click", 1, pytest.approx(1.5), ["a"])]
    # the same call again is refused, IF NOT EXISTS is not
    with pytest.raises(psycopg.Error, match="already exists"):
        lake.conn.execute("SELECT ducklake.create_table('lake.events')")
    lake.conn.execute("SELECT ducklake.create_table('lake.events', if_not_exists => true)")


def test_snapshot_functions(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 5)
    lake.ref.execute("DELETE FROM events WHERE id = 1")
    snapshots = lake.rows("SELECT snapshot_id, schema_version, changes, author, commit_message "
                          "FROM ducklake.snapshots('lake') ORDER BY snapshot_id")
    duck = lake.ref.rows("SELECT snapshot_id, schema_version, changes, author, commit_message "
                         "FROM ducklake_snapshots('analytics') ORDER BY snapshot_id")
    assert snapshots == duck
    assert [s[2] for s in snapshots] == [
        {"schemas_created": ["main"]}, {"tables_created": ["main.events"]},
        {"inlined_insert": ["1"]}, {"inlined_delete": ["1"]}]
    # the catalog name works as well as the server name
    assert lake.rows("SELECT count(*) FROM ducklake.snapshots('analytics')") == [(4,)]
    assert lake.rows("SELECT ducklake.current_snapshot('lake')") == [(3,)]
    times = lake.rows("SELECT snapshot_time FROM ducklake.snapshots('lake') ORDER BY snapshot_id")
    duck_times = lake.ref.rows("SELECT snapshot_time FROM ducklake_snapshots('analytics') ORDER BY snapshot_id")
    assert [t[0] for t in times] == [t[0] for t in duck_times]


def test_table_info(lake):
    lake.ref.execute(EVENTS)
    insert_events(lake, 0, 5000)
    insert_events(lake, 5000, 5000)
    lake.ref.execute("DELETE FROM events WHERE id < 100")
    info = lake.rows("SELECT table_name, file_count, file_size_bytes > 0, delete_file_count "
                     "FROM ducklake.table_info('lake')")
    duck = lake.ref.rows("SELECT table_name, file_count, file_size_bytes > 0, delete_file_count "
                         "FROM ducklake_table_info('analytics')")
    assert info == duck
    assert info == [("events", 2, True, 1)]


def test_several_scans_of_one_lake_in_one_query(lake):
    """Joins and subqueries scan one lake several times at once over its single DuckDB
    connection; a result still streaming is buffered when another statement starts."""
    lake.ref.execute("CREATE TABLE a AS SELECT range AS id, range % 100 AS k FROM range(20000)")
    lake.ref.execute("CREATE TABLE b AS SELECT range AS k, 'k' || range AS label FROM range(100)")
    lake.import_schema("a", "b")
    lake.conn.execute("SET enable_hashjoin = off")
    lake.conn.execute("SET enable_mergejoin = off")
    assert lake.rows("SELECT count(*), count(DISTINCT b.label) FROM lake.a JOIN lake.b USING (k)") == [(20000, 100)]
    assert lake.rows("SELECT count(*) FROM lake.a x JOIN lake.a y ON x.id = y.id + 1 WHERE x.id < 5000") == [(4999,)]
    rows = lake.rows("SELECT id, ducklake.current_snapshot('lake') FROM lake.a WHERE id % 5000 = 0 ORDER BY id")
    assert rows == [(0, 2), (5000, 2), (10000, 2), (15000, 2)]


def test_lake_usable_after_a_caught_duckdb_error(lake):
    """A DuckDB error caught by an exception block aborts DuckDB's transaction; reads
    after the block work again."""
    lake.ref.execute("CREATE TABLE big (x BIGINT)")
    lake.ref.execute("INSERT INTO big VALUES (1), (3000000000)")
    lake.conn.execute("CREATE FOREIGN TABLE lake.small (x int) SERVER lake OPTIONS (table 'big')")
    lake.conn.execute("CREATE FOREIGN TABLE lake.big (x bigint) SERVER lake")
    with lake.connect(autocommit=False) as conn:
        result = conn.execute("""DO $$
            DECLARE n bigint;
            BEGIN
              BEGIN
                SELECT sum(x) INTO n FROM lake.small;   -- 3000000000 does not fit integer
              EXCEPTION WHEN numeric_value_out_of_range THEN
                RAISE NOTICE 'caught';
              END;
              SELECT sum(x) INTO n FROM lake.big;
              IF n <> 3000000001 THEN RAISE EXCEPTION 'wrong sum %', n; END IF;
            END $$""")
        conn.execute("SAVEPOINT s")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT x FROM lake.small")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        assert conn.execute("SELECT count(*) FROM lake.big").fetchone() == (2,)
        conn.commit()


def test_seed_playbook_commands_as_written(lake):
    """The seed playbook's catalog commands, with ducklake on the search_path."""
    lake.ref.execute("CREATE TABLE users (id INTEGER, name VARCHAR, email VARCHAR, created_at TIMESTAMP)")
    for i in range(10):
        lake.ref.execute(f"INSERT INTO users VALUES ({i}, 'user{i}', 'u{i}@example.com', NOW())")
    lake.conn.execute("SET search_path = public, ducklake")
    snapshots = lake.rows("SELECT * FROM ducklake_snapshots('analytics');")
    assert [s[0] for s in snapshots] == list(range(12))
    info = lake.rows("SELECT table_name, file_count FROM ducklake_table_info('analytics');")
    assert info == [("users", 0)]  # ten single-row inserts, all inlined
    changes = lake.rows("SELECT snapshot_id, change_type, row_data->>'name' FROM "
                        "ducklake_table_changes('analytics', 'main', 'users', 0, 10);")
    assert changes == [(s, "insert", f"user{s - 2}") for s in range(2, 11)]
    with pytest.raises(psycopg.Error, match="DuckLake table main.nobody does not exist"):
        lake.conn.execute("SELECT * FROM ducklake_table_changes('analytics', 'main', 'nobody', 0, 1)")
