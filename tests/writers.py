"""A writer of the concurrency tests: one client committing batches of rows into
`lake.events (writer, value)`, retrying clean conflicts (40001) as a client should."""

import psycopg
from psycopg import errors


def insert_batches(dsn, tag, transactions, rows_per_txn, failures):
    """`transactions` commits of `rows_per_txn` rows (writer `tag`, values 0, 1, ...);
    each conflict retried is recorded in `failures`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for txn in range(transactions):
            first = txn * rows_per_txn
            while True:
                try:
                    conn.execute(f"INSERT INTO lake.events (writer, value) SELECT '{tag}', g "
                                 f"FROM generate_series({first}, {first + rows_per_txn - 1}) g")
                    break
                except errors.SerializationFailure:
                    failures.append(tag)
