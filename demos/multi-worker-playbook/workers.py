"""The playbook's distributed loop: many workers insert one login event per user id into
lake.user_events at the same time, each on its own connection, spread over several
PostgreSQL instances that share one DuckLake catalog and data path. Then every instance
must see exactly one event per user id: nothing lost, nothing duplicated.

    python workers.py --workers 8 --user-ids 300 DSN [DSN ...]

Exit status 0 when the final count checks out on every instance, 1 otherwise.
"""

import argparse
import queue
import sys
import threading
import time

import psycopg
from psycopg import errors

INSERT = "INSERT INTO lake.user_events (user_id, event_type, event_time) VALUES (%s, 'login', NOW())"
CHECK = "SELECT count(*), count(DISTINCT user_id), min(user_id), max(user_id) FROM lake.user_events"


class Loop:
    """A collection handed out to workers in async mode: each takes the next element."""

    def __init__(self, user_ids):
        self.pending = queue.SimpleQueue()
        for user_id in user_ids:
            self.pending.put(user_id)
        self.lock = threading.Lock()
        self.done = {}
        self.retries = 0
        self.failures = []

    def next(self):
        try:
            return self.pending.get_nowait()
        except queue.Empty:
            return None

    def record(self, dsn, retries):
        with self.lock:
            self.done[dsn] = self.done.get(dsn, 0) + 1
            self.retries += retries


def worker(loop, dsn, name):
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # the author of every snapshot this worker commits: the catalog's audit trail
            conn.execute("SELECT set_config('ducklake.commit_author', %s, false)", (name,))
            while (user_id := loop.next()) is not None:
                retries = 0
                while True:
                    try:
                        conn.execute(INSERT, (user_id,))  # one statement, one DuckLake snapshot
                        break
                    except errors.SerializationFailure:
                        retries += 1  # a commit that lost a race: safe to run again
                loop.record(dsn, retries)
    except Exception as exc:  # reported after the loop; the count check then fails too
        loop.failures.append(f"{dsn}: {exc}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--user-ids", type=int, default=300)
    parser.add_argument("dsn", nargs="+", help="libpq connection string of each instance")
    args = parser.parse_args()

    user_ids = range(1, args.user_ids + 1)
    loop = Loop(user_ids)
    # worker i connects to instance i mod n: the instances take turns
    threads = [threading.Thread(target=worker, args=(loop, args.dsn[i % len(args.dsn)],
                                                     f"instance{i % len(args.dsn) + 1}-worker{i + 1}"))
               for i in range(args.workers)]
    print(f"distributed loop: {len(user_ids)} user ids, {args.workers} workers on {len(args.dsn)} instances")
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for failure in loop.failures:
        print(f"worker failed: {failure}")
    for i, dsn in enumerate(args.dsn):
        print(f"  instance {i + 1}: {loop.done.get(dsn, 0)} inserts")
    print(f"loop.done after {elapsed:.1f} s: {sum(loop.done.values())} inserts, "
          f"{loop.retries} retried after a serialization conflict")

    expected = (len(user_ids), len(user_ids), 1, len(user_ids))
    ok = not loop.failures
    for i, dsn in enumerate(args.dsn):
        with psycopg.connect(dsn) as conn:
            seen = conn.execute(CHECK).fetchone()
        verdict = "OK" if seen == expected else f"WRONG, expected {expected[0]} rows for user ids 1..{expected[3]}"
        ok = ok and seen == expected
        print(f"check on instance {i + 1}: {seen[0]} rows, {seen[1]} distinct user ids "
              f"({seen[2]}..{seen[3]}): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
