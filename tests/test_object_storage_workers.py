"""Many PostgreSQL instances on one S3 lake: three clusters attach a lake whose catalog
lives in a fourth (the session's) and whose data is in a bucket of the loopback S3 server.
Concurrent writers on all three lose and duplicate nothing, each instance reads the others'
commits, and a stream table on one follows the writes of all."""

import contextlib
import threading

from conftest import another_cluster, new_s3_lake, option_list
from object_store import REGION
from writers import insert_batches

WRITERS_PER_INSTANCE = 2
TRANSACTIONS = 12
ROWS_PER_TXN = 20
SUMMARY = "SELECT writer, count(*) AS n, sum(value) AS total FROM lake.events GROUP BY writer"


def writer(dsn, tag, failures):
    insert_batches(dsn, tag, TRANSACTIONS, ROWS_PER_TXN, failures)


def attach(conn, catalog, lake, store_options, mapping):
    """Server `lake` on `conn` for `lake`'s catalog (on cluster `catalog`) and bucket."""
    conn.execute("CREATE EXTENSION ducklake_fdw")
    options = {"catalog_name": "analytics", "data_path": lake.data_path, "data_inlining_row_limit": "0",
               "catalog_connection": f"host={catalog.base} port={catalog.port} dbname={lake.dbname} user=postgres",
               **store_options}
    conn.execute(f"CREATE SERVER lake FOREIGN DATA WRAPPER ducklake OPTIONS ({option_list(options)})")
    if mapping:
        conn.execute(f"CREATE USER MAPPING FOR CURRENT_USER SERVER lake OPTIONS ({option_list(mapping)})")
    conn.execute("CREATE SCHEMA lake")
    conn.execute("IMPORT FOREIGN SCHEMA main FROM SERVER lake INTO lake")


def test_three_instances_share_one_s3_lake(pg, request, s3):
    with new_s3_lake(pg, request, s3) as lake, contextlib.ExitStack() as stack:
        lake.conn.execute("SELECT ducklake.execute('lake', 'CREATE TABLE events (writer VARCHAR, value BIGINT)')")
        key_id, secret = lake.s3_keys
        store = s3.server_options()
        # the third instance reaches the store with the keys of its own environment
        chained = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": REGION}
        # no scheduler: the stream table is refreshed here, between reads of its frontier
        clusters = [stack.enter_context(another_cluster(pg)),
                    stack.enter_context(another_cluster(pg)),
                    stack.enter_context(another_cluster(pg, environment=chained))]
        conns = [stack.enter_context(c.connect()) for c in clusters]
        attach(conns[0], pg, lake, store, {"key_id": key_id, "secret": secret})
        attach(conns[1], pg, lake, store, {"key_id": key_id, "secret": secret})
        attach(conns[2], pg, lake, {**store, "credential_chain": "true"}, None)

        first = conns[0]
        first.execute("CREATE EXTENSION ducklake_ivm")
        first.execute("SELECT pgtrickle.create_stream_table('by_writer', %s, '1h')", (SUMMARY,))

        failures = []
        threads = [threading.Thread(target=writer, args=(cluster.dsn(), f"{name}{i}", failures))
                   for name, cluster in zip("abc", clusters) for i in range(WRITERS_PER_INSTANCE)]
        for t in threads:
            t.start()
        # a refresh while all three write: the table equals the query at its frontier
        first.execute("SELECT pgtrickle.refresh('by_writer')")
        frontier = first.execute("SELECT (frontier -> 'sources' -> 'ducklake:lake.events' ->> 'snapshot_id')::bigint "
                                 "FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'by_writer'").fetchone()[0]
        with clusters[0].connect() as pinned:
            pinned.execute(f"SET ducklake.snapshot_id = '{frontier}'")
            at_frontier = pinned.execute(SUMMARY + " ORDER BY writer").fetchall()
        assert first.execute("SELECT writer, n, total FROM by_writer ORDER BY writer").fetchall() == at_frontier
        for t in threads:
            t.join()

        rows = TRANSACTIONS * ROWS_PER_TXN
        expected = [(f"{name}{i}", rows, sum(range(rows))) for name in "abc" for i in range(WRITERS_PER_INSTANCE)]
        for conn in conns:
            assert conn.execute(SUMMARY + " ORDER BY writer").fetchall() == expected
        assert lake.ref.rows("SELECT count(*), count(DISTINCT (writer, value)) FROM events") == \
            [(len(expected) * rows,) * 2]
        first.execute("SELECT pgtrickle.refresh('by_writer')")
        assert first.execute("SELECT writer, n, total FROM by_writer ORDER BY writer").fetchall() == expected
        # every commit wrote its own object under the lake's prefix
        commits = lake.rows("SELECT count(*) FROM ducklake.snapshots('lake') WHERE changes ? 'tables_inserted_into'")
        assert commits == [(len(expected) * TRANSACTIONS,)]
        assert len([k for k in s3.keys(lake.bucket, "lake/main/events/") if k.endswith(".parquet")]) == \
            len(expected) * TRANSACTIONS
