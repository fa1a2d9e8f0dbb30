"""A differential refresh that took longer than a full one makes the next refreshes
rebuild instead (`pgtrickle.adaptive_refresh`), exactly, every source's position kept;
a differential refresh is tried again after eight such rebuilds in a row. The costs
are forced by hand so that the choice is known: real timings decide it otherwise. (The
test clusters turn the choice off; these tests turn it on, as it is by default.)"""

import psycopg
import pytest

from roles import new_stream_owner
from streams import frontier, latest, rows, setup_events

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


def test_a_refresh_rebuilds_while_differential_took_longer(lake):
    setup(lake)
    conn = lake.conn
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['weighted'])")
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
        mode, _, differential_ms, chosen, error = costs(conn, "weighted")
        assert (mode, differential_ms, chosen, error) == ("FULL", 1e9, step, None)

    # Eight rebuilds chosen in a row: the next one with changes is differential again.
    change_every_source(conn, RETRY_AFTER + 1)
    refresh_and_check(conn, "weighted")
    mode, _, differential_ms, chosen, error = costs(conn, "weighted")
    assert (mode, chosen, error) == ("DIFFERENTIAL", 0, None) and differential_ms < 1e9

    # The Postgres source's changes after the rebuilds are folded in once, not again.
    force_costs(conn, "weighted", 1e9, 1.0)
    change_every_source(conn, RETRY_AFTER + 2)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0] == "DIFFERENTIAL"

    # Asked for, FULL rebuilds at the frontier and is no choice: the count stays.
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, RETRY_AFTER + 3)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[3] == 1
    conn.execute("SELECT pgtrickle.refresh('weighted', 'FULL')")
    assert costs(conn, "weighted")[0] == "FULL" and costs(conn, "weighted")[3] == 1


def test_with_adaptive_refresh_off_every_refresh_is_differential(lake):
    setup(lake)
    conn = lake.conn
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['weighted'])")
    make_differential_look_slow(conn, "weighted")
    conn.execute("SET pgtrickle.adaptive_refresh = off")
    for step in range(3):
        change_every_source(conn, step)
        refresh_and_check(conn, "weighted")
        mode, _, differential_ms, chosen, _ = costs(conn, "weighted")
        assert (mode, chosen) == ("DIFFERENTIAL", 0) and differential_ms < 1e9
    conn.execute("SET pgtrickle.adaptive_refresh = on")
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 3)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0] == "FULL"


def test_a_new_query_starts_its_costs_over(lake):
    setup(lake)
    conn = lake.conn
    conn.execute("SELECT pgtrickle.create_stream_table('weighted', %s, '1h')", (QUERY,))
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['weighted'])")
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
    refresh_and_check(conn, "weighted")
    mode, _, differential_ms, chosen, _ = costs(conn, "weighted")
    assert (mode, chosen) == ("DIFFERENTIAL", 0) and differential_ms < 1e9
    conn.execute("SELECT pgtrickle.drop_stream_table('heaviest')")
    make_differential_look_slow(conn, "weighted")
    change_every_source(conn, 1)
    refresh_and_check(conn, "weighted")
    assert costs(conn, "weighted")[0::3] == ("FULL", 1)
