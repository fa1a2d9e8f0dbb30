"""Differential stream tables whose WHERE clauses hold subquery expressions: EXISTS,
NOT EXISTS, IN, NOT IN (with its NULLs), ALL and scalar subqueries, correlated or
not, nested, over the same table as the query's FROM too. Random inserts, deletes and
updates on every source; after each refresh every stream table equals its query's
result at the frontier's snapshot, row for row."""

import random

import pytest

from streams import assert_refused, assert_verified, drive_randomly, rows
from test_stream_joins import check, create, keep_as_owners_who_are_not_superusers, mutate, setup_tables

SHAPES = {
    "with_orders": "SELECT c.id, c.region FROM lake.customers c "
                   "WHERE EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id AND o.status <> 'void')",
    "without_orders": "SELECT c.region, count(*) AS n FROM lake.customers c "
                      "WHERE NOT EXISTS (SELECT FROM lake.orders o WHERE o.customer = c.id) GROUP BY c.region",
    "in_tiers": "SELECT o.id, o.amount FROM lake.orders o "
                "WHERE o.customer IN (SELECT c.id FROM lake.customers c WHERE c.tier > 1)",
    # customers.region is sometimes NULL: then NOT IN is never true
    "not_in_nulls": "SELECT r.name, r.zone FROM lake.regions r "
                    "WHERE r.name NOT IN (SELECT c.region FROM lake.customers c WHERE c.tier = 0)",
    # TPC-H 17: a correlated aggregate over the query's own table
    "above_average": "SELECT o.id, o.amount FROM lake.orders o "
                     "WHERE o.amount > (SELECT avg(o2.amount) FROM lake.orders o2 WHERE o2.customer = o.customer)",
    # TPC-H 18: IN over an aggregating, uncorrelated subquery
    "busy_customers": "SELECT o.customer, sum(o.amount) AS total, count(*) AS n FROM lake.orders o "
                      "WHERE o.customer IN (SELECT customer FROM lake.orders GROUP BY customer HAVING count(*) > 3) "
                      "GROUP BY o.customer",
    "top_tier": "SELECT c.id, c.tier FROM lake.customers c "
                "WHERE c.tier >= ALL (SELECT c2.tier FROM lake.customers c2 WHERE c2.region = c.region)",
    # TPC-H 20: nested
    "nested": "SELECT r.name FROM lake.regions r WHERE EXISTS (SELECT 1 FROM lake.customers c WHERE c.region = r.name "
              "AND c.id IN (SELECT o.customer FROM lake.orders o WHERE o.status = 'paid'))",
    # TPC-H 21: EXISTS and NOT EXISTS over the query's own table
    "shared_not_void": "SELECT o.id FROM lake.orders o "
                       "WHERE EXISTS (SELECT 1 FROM lake.orders o2 WHERE o2.customer = o.customer AND o2.id <> o.id) "
                       "AND NOT EXISTS (SELECT 1 FROM lake.orders o3 WHERE o3.customer = o.customer "
                       "AND o3.id <> o.id AND o3.status = 'void')",
    # TPC-H 22: in a sub-select in FROM, an uncorrelated aggregate and NOT EXISTS
    "subselect": "SELECT s.region, count(*) AS n, sum(s.tier) AS tiers FROM (SELECT c.region, c.tier "
                 "FROM lake.customers c WHERE c.tier > (SELECT avg(tier) FROM lake.customers) "
                 "AND NOT EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id)) s GROUP BY s.region",
    # LIMIT 1 in EXISTS asks what EXISTS asks
    "exists_limit": "SELECT c.id FROM lake.customers c "
                    "WHERE EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id AND o.amount > 3 LIMIT 1)",
    "or_exists": "SELECT c.id FROM lake.customers c WHERE c.tier = 3 "
                 "OR EXISTS (SELECT 1 FROM lake.regions r WHERE r.name = c.region AND r.zone = 'cold')",
    # the sub-select's ORDER BY adds a hidden output after its visible ones
    "ordered_subselect": "SELECT s.region, s.id FROM (SELECT c.region, c.id FROM lake.customers c "
                         "WHERE EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id) ORDER BY c.tier) s",
    # TPC-H 11: HAVING compares each group with an uncorrelated subquery
    "large_share": "SELECT c.region, sum(o.amount) AS total FROM lake.orders o JOIN lake.customers c "
                   "ON c.id = o.customer GROUP BY c.region HAVING sum(o.amount) > (SELECT sum(amount) * 0.3 FROM lake.orders)",
    "tiers_vs_regions": "SELECT c.tier, count(*) AS n FROM lake.customers c GROUP BY c.tier "
                        "HAVING count(*) >= (SELECT count(*) FROM lake.regions) - 1",
    "join_and_exists": "SELECT c.region, sum(o.amount) AS total FROM lake.orders o JOIN lake.customers c "
                       "ON c.id = o.customer WHERE EXISTS (SELECT 1 FROM lake.regions r WHERE r.name = c.region) "
                       "GROUP BY c.region",
    # sub-selects in FROM inside subquery expressions (dbt's ephemeral models, views)
    "exists_subselect": "SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT 1 FROM (SELECT customer, "
                        "amount * 2 AS doubled FROM lake.orders WHERE status <> 'void') s "
                        "WHERE s.customer = c.id AND s.doubled > 5)",
    "in_joined_subselect": "SELECT o.id, o.amount FROM lake.orders o WHERE o.customer IN (SELECT s.id FROM "
                           "(SELECT c.id, r.zone FROM lake.customers c JOIN lake.regions r ON r.name = c.region) s "
                           "WHERE s.zone = 'cold')",
    "not_in_subselect": "SELECT r.name FROM lake.regions r WHERE r.name NOT IN "
                        "(SELECT s.region FROM (SELECT region, tier FROM lake.customers) s WHERE s.tier = 0)",
    "scalar_over_subselect": "SELECT o.id FROM lake.orders o WHERE o.amount > (SELECT avg(s.amount) FROM "
                             "(SELECT customer, amount FROM lake.orders WHERE status = 'paid') s "
                             "WHERE s.customer = o.customer)",
    # an outer join inside such a sub-select, its padded rows filtered on
    "in_outer_joined_subselect": "SELECT r.name FROM lake.regions r WHERE r.name IN (SELECT s.region FROM "
                                 "(SELECT c.region, o.id AS order_id FROM lake.customers c LEFT JOIN lake.orders o "
                                 "ON o.customer = c.id AND o.status = 'paid') s WHERE s.order_id IS NULL)",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_subquery_expressions_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(conn, SHAPES)


def test_subselects_in_subquery_expressions_as_an_owner_who_is_not_a_superuser(lake):
    """The sub-selects in FROM inside subquery expressions, kept by a role that reads
    the lake but is not a superuser; a role that may not read a table one of them
    reads is refused."""
    setup_tables(lake)
    names = ["exists_subselect", "in_joined_subselect", "not_in_subselect", "scalar_over_subselect",
             "in_outer_joined_subselect"]
    keep_as_owners_who_are_not_superusers(lake, SHAPES, names, 11, "exists_subselect")


@pytest.mark.parametrize("query, construct", [
    ("SELECT c.id, (SELECT count(*) FROM lake.orders o WHERE o.customer = c.id) FROM lake.customers c",
     "a subquery expression in the select list, GROUP BY or ORDER BY (only in WHERE)"),
    ("SELECT c.region FROM lake.customers c GROUP BY c.region "
     "HAVING count(*) > (SELECT count(*) FROM lake.regions r WHERE r.name = c.region)",
     "a subquery expression in HAVING that refers to the group"),
    ("SELECT c.region FROM lake.customers c GROUP BY c.region "
     "HAVING sum(c.tier * (SELECT count(*) FROM lake.regions)) > 3",
     "a subquery expression inside an aggregate"),
    ("SELECT c.region FROM lake.customers c GROUP BY c.region HAVING count(*) > (SELECT count(*) FROM pg_catalog.pg_namespace)",
     "reading pg_catalog.pg_namespace in a subquery expression in HAVING (only lake and Postgres tables can be read there)"),
    ("SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT o.customer FROM lake.orders o GROUP BY o.customer "
     "HAVING count(*) > (SELECT count(*) FROM lake.regions))",
     "a subquery expression in HAVING (only in WHERE)"),
    ("SELECT c.id FROM lake.customers c JOIN lake.regions r "
     "ON r.name = c.region AND EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id)",
     "a subquery expression in a JOIN's ON condition (only in WHERE)"),
    ("SELECT c.id FROM lake.customers c WHERE c.id = ANY (ARRAY(SELECT customer FROM lake.orders))",
     "ARRAY(subquery)"),
    ("SELECT c.id FROM lake.customers c WHERE c.id IN (SELECT customer FROM lake.orders ORDER BY id LIMIT 3)",
     "LIMIT/OFFSET in a subquery expression"),
    ("SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT 1 FROM lake.orders o WHERE o.customer = c.id "
     "OFFSET 1 LIMIT 1)", "LIMIT/OFFSET in a subquery expression"),
    ("SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT 1 FROM (SELECT customer FROM lake.orders o "
     "WHERE o.customer = c.id) s)",
     "a reference to an outer query in a sub-select in FROM inside a subquery expression"),
    ("SELECT c.id FROM lake.customers c WHERE c.id IN (SELECT s.customer FROM (SELECT DISTINCT customer "
     "FROM lake.orders) s)", "DISTINCT in a sub-select in FROM inside a subquery expression"),
    ("SELECT c.id FROM lake.customers c WHERE c.region = (SELECT string_agg(r.name, ',') FROM lake.regions r "
     "WHERE r.zone = 'cold')", "aggregate string_agg() in a subquery expression"),
    ("SELECT c.id FROM lake.customers c WHERE c.tier > (SELECT sum(o.amount::float8) FROM lake.orders o "
     "WHERE o.customer = c.id)",
     "sum() of a type other than integers and numeric in a subquery expression"),
])
def test_subquery_expressions_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.zones (name text)")
    conn.execute("CREATE VIEW public.zone_names AS SELECT name FROM public.zones")
    assert_refused(conn, query, construct)


def test_a_change_that_only_a_mix_of_old_and_new_rows_makes_fail_rebuilds(lake):
    """A parent and its children inserted in one commit: the term of the new parent
    reads the children as they were (none) and divides by zero, which neither the
    old nor the new data does. The refresh rebuilds instead of failing for good."""
    conn = lake.conn
    for table in ("parents (id int)", "children (parent int)"):
        name = table.split()[0]
        conn.execute(f"CREATE FOREIGN TABLE lake.{table} SERVER lake OPTIONS (table '{name}')")
        conn.execute(f"SELECT ducklake.create_table('lake.{name}')")
    conn.execute("CREATE EXTENSION ducklake_ivm")
    conn.execute("INSERT INTO lake.parents VALUES (1)")
    conn.execute("INSERT INTO lake.children VALUES (1)")
    query = ("SELECT p.id FROM lake.parents p "
             "WHERE 10 / (SELECT count(*) FROM lake.children c WHERE c.parent = p.id) >= 5")
    create(conn, "fertile", query)
    conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['fertile'])")  # this session refreshes it
    with conn.transaction():
        conn.execute("INSERT INTO lake.parents VALUES (2)")
        conn.execute("INSERT INTO lake.children VALUES (2), (2)")
    warnings = []
    conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary))
    conn.execute("SELECT pgtrickle.refresh('fertile')")
    assert rows(conn, "SELECT * FROM fertile") == [(1,), (2,)]
    assert any("division by zero (in the change of the sources' rows); rebuilt in full" in w for w in warnings), warnings
    check(conn, "fertile", query)
