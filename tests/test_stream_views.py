"""Differential stream tables over views: a view is maintained as the sub-select it
stands for (its tables are the sources), nested views and views in every place a
sub-select may be included, subquery expressions too. A view replaced by CREATE OR REPLACE VIEW makes the next
refresh a rebuild; a view whose tables the stream table's owner may not read, or
whose tables' row-level security applies to the view's owner, is refused."""

import random

import psycopg
import pytest

import test_stream_postgres_sources as pg_sources
from roles import new_role, new_stream_owner
from streams import assert_refused, assert_verified, drive_randomly, last_error, rows
from test_stream_joins import check, create, mutate, setup_tables

VIEWS = """
CREATE VIEW public.order_facts AS
  SELECT o.id, o.amount, o.status, c.region, c.tier FROM lake.orders o JOIN lake.customers c ON c.id = o.customer;
CREATE VIEW public.paid_facts AS SELECT * FROM public.order_facts WHERE status = 'paid';
CREATE VIEW public.region_totals AS
  SELECT region, sum(tier) AS tiers, count(*) AS n FROM lake.customers GROUP BY region;
CREATE VIEW public.big_orders AS
  WITH b AS (SELECT * FROM lake.orders WHERE amount > 5) SELECT id, customer, amount FROM b;
CREATE VIEW public.paying_customers AS
  SELECT c.id, c.region FROM lake.customers c
   WHERE EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id AND o.status = 'paid');
CREATE VIEW public.invoker_regions WITH (security_invoker = true) AS SELECT name, zone FROM lake.regions;
CREATE VIEW public.labelled AS
  SELECT c.id, c.region, t.label FROM lake.customers c LEFT JOIN public.tiers t ON t.tier = c.tier
"""

SHAPES = {
    "facts_by_region": "SELECT region, count(*) AS n, sum(amount) AS total FROM public.order_facts GROUP BY region",
    # a view over a view, joined with a lake table
    "paid_by_zone": "SELECT f.region, r.zone, count(*) AS n FROM public.paid_facts f JOIN lake.regions r "
                    "ON r.name = f.region GROUP BY f.region, r.zone",
    # an aggregating view on an outer join's nullable side
    "zone_totals": "SELECT r.name, r.zone, t.tiers, t.n FROM lake.regions r LEFT JOIN public.region_totals t "
                   "ON t.region = r.name",
    # a view with a subquery expression, and one with a WITH query
    "paying_per_region": "SELECT region, count(*) AS n FROM public.paying_customers GROUP BY region",
    "big_per_customer": "SELECT customer, count(*) AS n, max(amount) AS top FROM public.big_orders GROUP BY customer",
    "invoker_rows": "SELECT v.name, v.zone, c.id FROM public.invoker_regions v JOIN lake.customers c ON c.region = v.name",
    # a view reading a Postgres table, on the nullable side
    "labels_of_orders": "SELECT o.id, l.region, l.label FROM lake.orders o LEFT JOIN public.labelled l ON l.id = o.customer",
    # views inside subquery expressions
    "customers_with_big_facts": "SELECT c.id FROM lake.customers c WHERE EXISTS "
                                "(SELECT 1 FROM public.order_facts f WHERE f.region = c.region AND f.amount > 5)",
    "orders_of_paying": "SELECT o.id, o.amount FROM lake.orders o WHERE o.customer IN (SELECT id FROM public.paying_customers)",
    # a view in a HAVING subquery
    "regions_above_paid": "SELECT c.region, count(*) AS n FROM lake.customers c GROUP BY c.region "
                          "HAVING count(*) > (SELECT count(*) FROM public.paid_facts) / 4",
}


def setup_views(lake):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.tiers (tier bigint, label text)")
    conn.execute("INSERT INTO public.tiers VALUES (0, 'free'), (1, 'basic'), (2, 'pro')")
    for statement in VIEWS.split(";\n"):
        conn.execute(statement)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_stream_tables_over_views_exact(lake, seed):
    setup_views(lake)
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(lake.conn, SHAPES)


def test_a_redefined_view_rebuilds_the_stream_table(lake):
    """CREATE OR REPLACE VIEW (of the view read, or of a view it reads) changes no
    source: the next refresh rebuilds and says why; differential refreshes follow."""
    setup_views(lake)
    conn = lake.conn
    query = SHAPES["paid_by_zone"]
    pg_sources.create(conn, "paid_zones", query)
    conn.execute("CREATE OR REPLACE VIEW public.paid_facts AS SELECT * FROM public.order_facts WHERE status <> 'void'")
    conn.execute("SELECT pgtrickle.refresh('paid_zones')")
    assert last_error(conn, "paid_zones") == "view public.paid_facts was redefined; rebuilt in full"
    check(conn, "paid_zones", query)
    conn.execute("INSERT INTO lake.orders VALUES (500, 3, 9.50, 'open', 'x')")
    conn.execute("SELECT pgtrickle.refresh('paid_zones')")
    assert last_error(conn, "paid_zones") is None
    check(conn, "paid_zones", query)
    # the view below it, with nothing else changed
    conn.execute("CREATE OR REPLACE VIEW public.order_facts AS SELECT o.id, o.amount, o.status, c.region, c.tier "
                 "FROM lake.orders o JOIN lake.customers c ON c.id = o.customer WHERE c.tier > 0")
    conn.execute("SELECT pgtrickle.refresh('paid_zones')")
    assert last_error(conn, "paid_zones") == "view public.order_facts was redefined; rebuilt in full"
    check(conn, "paid_zones", query)
    conn.execute("DELETE FROM lake.orders WHERE id % 5 = 0")
    conn.execute("SELECT pgtrickle.refresh('paid_zones')")
    assert last_error(conn, "paid_zones") is None
    check(conn, "paid_zones", query)
    assert_verified(conn, ["paid_zones"])


def test_what_a_view_reads_is_a_dependency(lake):
    """The lake tables read only through a view hold the snapshots the stream table
    needs; a stream table read through a view is upstream of the one reading it."""
    setup_views(lake)
    conn = lake.conn
    pg_sources.create(conn, "facts", SHAPES["facts_by_region"])
    holds = {row[0] for row in conn.execute(
        "SELECT s.srvname FROM pgtrickle.snapshot_holds() h JOIN pg_foreign_server s ON s.oid = h.server_oid "
        "WHERE h.stream_table = 'facts'::regclass").fetchall()}
    assert holds == {"lake"}
    conn.execute("CREATE VIEW public.facts_view AS SELECT region, n FROM public.facts")
    query = "SELECT count(*) AS regions, sum(n) AS n FROM public.facts_view"
    pg_sources.create(conn, "facts_summary", query)
    upstream = conn.execute("SELECT upstream::text[] FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'facts_summary'")
    assert upstream.fetchone()[0] == ["facts"]
    conn.execute("INSERT INTO lake.orders VALUES (501, 4, 1.50, 'paid', 'y')")
    conn.execute("SELECT pgtrickle.refresh('facts')")
    conn.execute("SELECT pgtrickle.refresh('facts_summary')")
    assert rows(conn, "SELECT * FROM facts_summary") == rows(conn, query)


def test_a_view_whose_tables_the_owner_may_not_read_is_refused(lake):
    """A view reads its tables with its owner's privileges, a differential refresh with
    the stream table's owner's: one who may read the view but not its tables is
    refused, naming both (FULL reads the view)."""
    setup_views(lake)
    conn = lake.conn
    reader = new_stream_owner(lake, "view_reader")
    conn.execute(f"REVOKE SELECT ON lake.orders FROM {reader}")
    conn.execute(f"GRANT SELECT ON public.order_facts TO {reader}")
    query = SHAPES["facts_by_region"]
    with lake.cluster.connect(lake.dbname, user=reader) as theirs:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
            theirs.execute("SELECT pgtrickle.create_stream_table('theirs', %s, '1h')", (query,))
        assert error.value.diag.message_primary == "permission denied for table lake.orders, which view public.order_facts reads"
        theirs.execute("SELECT pgtrickle.create_stream_table('theirs', %s, '1h', 'FULL')", (query,))
        assert rows(theirs, "SELECT * FROM theirs") == rows(conn, query)


def test_row_level_security_applying_to_a_views_owner_is_refused(lake):
    """Through a view, a table's policies filter the rows for the view's owner; a term
    read as the stream table's owner (here a superuser) would not: refused."""
    pg_sources.setup_tables(lake)
    conn = lake.conn
    keeper = new_role(conn, "view_keeper")
    conn.execute("CREATE TABLE public.ledger (id int, holder text, amount int)")
    conn.execute(f"INSERT INTO public.ledger VALUES (1, '{keeper}', 10), (2, 'someone_else', 100)")
    conn.execute("ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY own_rows ON public.ledger USING (holder = current_user)")
    conn.execute(f"GRANT SELECT ON public.ledger TO {keeper}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {keeper}")
    with lake.cluster.connect(lake.dbname, user=keeper) as theirs:
        theirs.execute("CREATE VIEW public.kept AS SELECT holder, amount FROM public.ledger")
    assert_refused(conn, "SELECT holder, sum(amount) AS total FROM public.kept GROUP BY holder",
                   "row-level security of public.ledger that applies to the owner of view public.kept")


def test_a_view_of_a_changing_postgres_table_on_a_nullable_side(lake):
    """A Postgres table read through a view, inside a sub-select whose terms replay it
    as it was: the columns replayed are those the view reads."""
    pg_sources.setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE VIEW public.ranked_customers AS SELECT id, region, tier FROM public.customers WHERE tier > 0")
    shapes = {
        "ranked_orders": "SELECT o.id, v.region, v.tier FROM lake.orders o "
                         "LEFT JOIN public.ranked_customers v ON v.id = o.customer",
        "ranked_regions": "SELECT r.name, count(v.id) AS n FROM public.regions r "
                          "LEFT JOIN (public.ranked_customers v JOIN lake.orders o ON o.customer = v.id) ON v.region = r.name "
                          "GROUP BY r.name",
    }
    drive_randomly(lake, random.Random(5), shapes, pg_sources.create, pg_sources.mutate, pg_sources.check)
    assert_verified(conn, shapes)


def test_renamed_columns_and_a_view_that_gains_a_column_or_a_source(lake):
    """A view's stored query keeps its columns' old names, and a view inside another
    one may gain columns: the expansion names them as the query reads them. A view
    redefined to read another lake table is followed (its changes read from then on);
    one redefined to read a Postgres table whose changes the stream table does not
    capture is refused by name."""
    setup_views(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.tier_notes (tier bigint, note text)")
    conn.execute("INSERT INTO public.tier_notes VALUES (1, 'one'), (2, 'two')")
    shapes = {"facts": SHAPES["facts_by_region"], "paid": SHAPES["paid_by_zone"], "labels": SHAPES["labels_of_orders"]}
    for name, query in shapes.items():
        pg_sources.create(conn, name, query)
    conn.execute("ALTER VIEW public.order_facts RENAME COLUMN region TO area")
    conn.execute("INSERT INTO lake.orders VALUES (510, 5, 4.50, 'paid', 'x')")
    # (the queries' own text names the old column: verified against the definitions)
    for name in shapes:
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        assert last_error(conn, name) is None, name
    assert_verified(conn, list(shapes))
    # a column added to the view that paid_facts (SELECT * ...) reads, and a lake table
    conn.execute("CREATE OR REPLACE VIEW public.order_facts AS SELECT o.id, o.amount, o.status, c.region AS area, "
                 "c.tier, o.region_hint FROM lake.orders o JOIN lake.customers c ON c.id = o.customer "
                 "JOIN lake.regions r ON r.name = c.region AND r.zone <> 'hot'")
    conn.execute("DELETE FROM lake.orders WHERE id % 3 = 0")
    for name in ("facts", "paid"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as error:
            conn.execute("SELECT count(*) FROM pgtrickle.verify_stream_table(%s)", (name,))
        assert error.value.diag.message_primary == (
            f"stream table public.{name}: view public.order_facts was redefined since its last refresh")
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        assert last_error(conn, name) == "view public.order_facts was redefined; rebuilt in full"
    assert_verified(conn, ["facts", "paid"])
    conn.execute("UPDATE lake.regions SET zone = 'hot' WHERE name = 'south'")
    conn.execute("INSERT INTO lake.orders VALUES (511, 2, 7.25, 'paid', 'y')")
    for name in ("facts", "paid"):
        conn.execute("SELECT pgtrickle.refresh(%s)", (name,))
        assert last_error(conn, name) is None
    assert_verified(conn, ["facts", "paid"])
    # another Postgres table read by the view on the nullable side
    conn.execute("CREATE OR REPLACE VIEW public.labelled AS SELECT c.id, c.region, coalesce(n.note, t.label) AS label "
                 "FROM lake.customers c LEFT JOIN public.tiers t ON t.tier = c.tier "
                 "LEFT JOIN public.tier_notes n ON n.tier = c.tier")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as error:
        conn.execute("SELECT pgtrickle.refresh('labels')")
    assert error.value.diag.message_primary == (
        "stream table public.labels reads public.tier_notes, whose changes it does not capture "
        "(a view it reads was redefined to read it)")


def test_views_that_read_each_other_are_refused(lake):
    setup_views(lake)
    conn = lake.conn
    conn.execute("CREATE VIEW public.ping AS SELECT id FROM lake.orders")
    conn.execute("CREATE VIEW public.pong AS SELECT id FROM public.ping")
    conn.execute("CREATE OR REPLACE VIEW public.ping AS SELECT id FROM public.pong")
    with pytest.raises(psycopg.errors.InvalidObjectDefinition) as error:
        conn.execute("SELECT pgtrickle.create_stream_table('pinged', 'SELECT count(*) AS n FROM public.ping', '1h')")
    assert error.value.diag.message_primary == "infinite recursion detected in rules for relation public.ping"
