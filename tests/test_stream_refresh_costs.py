"""A differential refresh that took longer than a full one makes the next refreshes
rebuild instead (`pgtrickle.adaptive_refresh`), exactly, every source's position kept;
a differential refresh is tried again after eight such rebuilds in a row. The costs
are forced by hand so that the choice is known: real timings decide it otherwise. (The
test clusters turn the choice off; these tests turn it on, as it is by default.)"""

import psycopg
import pytest

from roles import new_stream_owner
from streams import SUMMARY_QUERY, frontier, full_result, latest, rows, scheduler_pid, setup_events, wait_for, \
    wait_until_caught_up

QUERY = ("SELECT e.event_type, t.weight, count(*) AS n, sum(e.value) AS total "
         "FROM lake.events e JOIN public.event_types t ON t.name = e.event_type GROUP BY e.event_type, t.weight")
RETRY_AFTER = 8


def setup(lake):
    setup_events(lake)
    conn = lake.conn
    conn.execute("SET pgtrickle.adaptive_refresh = on")
    conn.execute("CREATE TABLE public.event_types (name text PRIMARY KEY, weight int)")
    conn.execute("INSERT INTO public.event_types VALUES ('click', 1), ('view', 2), ('buy', 3)")
    conn.execute("INSERT INTO lake.events SELECT gen_random_uuid(), (ARRAY['click','view','buy'])[1 + i % 3], i, now() "
                 "FROM generate_series(1, 30) i")


def costs(conn, name):
    return conn.execute(
        "SELECT last_refresh_mode, full_refresh_ms, differential_refresh_ms, rebuilds_chosen, last_error "
        "FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s", (name,)).fetchone()


def force_costs(admin, name, full_ms, differential_ms):
    admin.execute("UPDATE pgtrickle.pgt_stream_tables SET full_refresh_ms = %s, differential_refresh_ms = %s "
                  "WHERE pgt_name = %s", (full_ms, differential_ms, name))


def make_differential_look_slow(admin, name):
    force_costs(admin, name, 1.0, 1e9)


def change_every_source(conn, step):
    conn.execute("DELETE FROM lake.events WHERE value %% 7 = %s", (step % 7,))
    conn.execute("UPDATE lake.events SET value = value + 100 WHERE event_type = %s",
                 (["click", "view", "buy"][step % 3],))
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'view', %s, now())", (1000 + step,))
    conn.execute("UPDATE public.event_types SET weight = weight + 1 WHERE name = %s", (["buy", "click", "view"][step % 3],))


def refresh_and_check(conn, name):
    warnings = []
    conn.add_notice_handler(warnings.append)
    try:
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
    finally:
        conn.remove_notice_handler(warnings.append)
    assert [w.message_primary for w in warnings] == []
    assert frontier(conn, name) == latest(conn)
    assert rows(conn, f"SELECT * FROM {name}") == rows(conn, QUERY)


def create_weighted(conn):
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['weighted'])")


def refresh_differentially(conn):
    """Refresh `weighted`: differentially, its time recorded (not the forced 1e9 ms)."""
    refresh_and_check(conn, "weighted")
    mode, _, differential_ms, chosen, _ = costs(conn, "weighted")
    assert (mode, chosen) == ("DIFFERENTIAL", 0) and differential_ms < 1e9


def test_a_refresh_rebuilds_while_differential_took_longer(lake):
    setup(lake)
    conn = lake.conn
    create_weighted(conn)
    mode, full_ms, differential_ms, chosen, error = costs(conn, "weighted")
    assert (mode, differential_ms, chosen, error) == ("FULL", None, 0, None) and full_ms > 0

    change_every_source(conn, 0)
    refresh_and_check(conn, "weighted")
    mode, full_ms_after, differential_ms, chosen, error = costs(conn, "weighted")
    assert (mode, full_ms_after, chosen, error) == ("DIFFERENTIAL", full_ms, 0, None) and differential_ms > 0

    # Nothing new: nothing recorded.
    conn.execute("SELECT pgtrickle.refresh('weighted')")
    assert costs(conn, "weighted") == ("DIFFERENTIAL", full_ms, differential_ms, 0, None)

    make_differential_look_slow(conn, "weighted")
    for step in range(1, RETRY_AFTER + 1):
        change_every_source(conn, step)
        refresh_and_check(conn, "weighted")
        mode, full_ms, differential_ms, chosen, error = costs(conn, "weighted")
        # the rebuild timed (not the forced 1 ms)
        assert (mode, differential_ms, chosen, error) == ("FULL", 1e9, step, None) and full_ms != 1.0
        force_costs(conn, "weighted", 1.0, 1e9)

    # Eight rebuilds chosen in a row: the next one with changes is differential again.
    change_every_source(conn, RETRY_AFTER + 1)
    refresh_differentially(conn)

    # Asked for, FULL rebuilds at the frontier and is no choice: the count stays.
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, RETRY_AFTER + 2)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0::3] == ("FULL", 1)
    force_costs(conn, "weighted", 1.0, 1e9)
    conn.execute("SELECT pgtrickle.refresh('weighted', 'FULL')")
    mode, full_ms, _, chosen, _ = costs(conn, "weighted")
    assert (mode, chosen) == ("FULL", 1) and full_ms != 1.0


def test_a_commit_to_another_table_is_no_reason_to_rebuild(lake):
    """A commit to another table of the lake moves the lake's snapshot: the refresh
    finds that none of its own sources changed, reads nothing and rebuilds nothing;
    and a differential refresh that read nothing times nothing."""
    setup(lake)
    conn = lake.conn
    conn.execute("CREATE FOREIGN TABLE lake.other (x int) SERVER lake OPTIONS (table 'other')")
    conn.execute("SELECT ducklake.create_table('lake.other')")
    create_weighted(conn)
    make_differential_look_slow(conn, "weighted")
    conn.execute("INSERT INTO lake.other VALUES (1)")
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[:4] == ("DIFFERENTIAL", 1.0, 1e9, 0)
    change_every_source(conn, 0)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0::3] == ("FULL", 1)
    force_costs(conn, "weighted", 1.0, 1e9)
    conn.execute("INSERT INTO lake.other VALUES (2)")
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[:4] == ("DIFFERENTIAL", 1.0, 1e9, 1)
    # A change of its Postgres source alone is a reason.
    conn.execute("UPDATE public.event_types SET weight = weight + 1 WHERE name = 'view'")
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0::3] == ("FULL", 2)
    # Changes the join filters out all were read: that refresh's time counts.
    force_costs(conn, "weighted", 1e9, 5.0)
    conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'unknown', 1, now())")
    refresh_and_check(conn, "weighted")
    mode, _, differential_ms, chosen, _ = costs(conn, "weighted")
    assert (mode, chosen) == ("DIFFERENTIAL", 0) and differential_ms != 5.0


def test_with_adaptive_refresh_off_every_refresh_is_differential(lake):
    setup(lake)
    conn = lake.conn
    create_weighted(conn)
    make_differential_look_slow(conn, "weighted")
    conn.execute("SET pgtrickle.adaptive_refresh = off")
    for step in range(3):
        change_every_source(conn, step)
        refresh_differentially(conn)
    conn.execute("SET pgtrickle.adaptive_refresh = on")
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 3)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0] == "FULL"


def test_a_new_query_starts_its_costs_over(lake):
    setup(lake)
    conn = lake.conn
    create_weighted(conn)
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 0)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[3] == 1
    conn.execute("SELECT pgtrickle.alter_stream_table('weighted', query => %s)", (QUERY + " HAVING count(*) > 1",))
    mode, full_ms, differential_ms, chosen, _ = costs(conn, "weighted")
    assert (mode, differential_ms, chosen) == ("FULL", None, 0) and full_ms > 0


def test_an_owner_reads_the_costs_and_cannot_write_them(lake):
    setup(lake)
    owner = new_stream_owner(lake, "costly")
    conn = lake.conn
    conn.execute(f"GRANT SELECT, TRIGGER ON public.event_types TO {owner}")
    with lake.cluster.connect(lake.dbname, user=owner) as mine:
        mine.execute("SET pgtrickle.adaptive_refresh = on")
        mine.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
        mine.execute("SELECT pgtrickle.pause_scheduler(ARRAY['weighted'])")
        assert costs(mine, "weighted")[:1] == ("FULL",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
            make_differential_look_slow(mine, "weighted")
        assert error.value.diag.message_primary == "permission denied for table pgt_stream_tables"
        make_differential_look_slow(conn, "weighted")
        change_every_source(conn, 0)
        refresh_and_check(mine, "weighted")
        assert costs(mine, "weighted")[0::3] == ("FULL", 1)
        conn.execute("UPDATE pgtrickle.pgt_stream_tables SET rebuilds_chosen = %s WHERE pgt_name = 'weighted'",
                     (RETRY_AFTER,))
        change_every_source(conn, 1)
        refresh_and_check(mine, "weighted")
        mode, _, differential_ms, chosen, _ = costs(mine, "weighted")
        assert (mode, chosen) == ("DIFFERENTIAL", 0) and differential_ms < 1e9


def test_a_table_other_stream_tables_read_stays_differential(lake):
    """A rebuild rewrites every row of the result, which a stream table over it would
    read as changes: a table that others read is not rebuilt by choice."""
    setup(lake)
    conn = lake.conn
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.create_stream_table('heaviest', "
                 "'SELECT max(weight) AS top, sum(n) AS n FROM weighted', '1h')")
    conn.execute("SELECT pgtrickle.pause_scheduler()")
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 0)
    refresh_differentially(conn)
    conn.execute("SELECT pgtrickle.drop_stream_table('heaviest')")
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 1)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0::3] == ("FULL", 1)


def test_a_scheduled_rebuild_counts_as_a_change_for_the_schedule(lake):
    """A table the scheduler rebuilt by choice changed: the next commit waits for its
    schedule, as after a differential refresh (not the 100 ms of a look that found
    nothing)."""
    setup(lake)
    conn = lake.conn
    conn.execute(f'ALTER DATABASE "{lake.dbname}" SET pgtrickle.adaptive_refresh = on')
    old = wait_for(lambda: scheduler_pid(conn), "the scheduler")
    conn.execute("SELECT pg_terminate_backend(%s)", (old,))  # the new one reads the database's setting
    wait_for(lambda: scheduler_pid(conn) not in (None, old), "a new scheduler")
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.create_stream_table('summary', %s, '1s')", (SUMMARY_QUERY,))
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 0)
    rebuilt_at = latest(conn)
    wait_for(lambda: costs(conn, "weighted")[3] == 1 and frontier(conn, "weighted") == rebuilt_at,
             "the scheduler's rebuild of weighted")
    assert rows(conn, "SELECT * FROM weighted") == full_result(conn, QUERY, rebuilt_at)
    for step in (1, 2):
        conn.execute("INSERT INTO lake.events VALUES (gen_random_uuid(), 'view', %s, now())", (step,))
        wait_until_caught_up(conn, "summary")
    assert frontier(conn, "weighted") == rebuilt_at
