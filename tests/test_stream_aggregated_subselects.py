"""Differential stream tables over aggregating sub-selects in FROM and WITH queries
that aggregate (aggregates over aggregates): each is read as a relation whose change
is its groups that the change of its rows touches, recomputed by the sub-select
itself as they are and as they were. Random changes on every source; after each
refresh every stream table equals its query's result at the frontier, row for row."""

import random

import pytest

from streams import assert_refused, assert_verified, drive_randomly
from test_stream_joins import check, create, mutate, setup_tables

SHAPES = {
    # TPC-H 13: the distribution of customers by their number of orders
    "order_counts": "SELECT co.c_count, count(*) AS custdist FROM (SELECT c.id, count(o.id) AS c_count "
                    "FROM lake.customers c LEFT JOIN lake.orders o ON o.customer = c.id AND o.status <> 'void' "
                    "GROUP BY c.id) AS co GROUP BY co.c_count",
    # TPC-H 15: the CTE aggregates, and is read again inside a subquery expression
    "top_revenue": "WITH revenue AS (SELECT customer, sum(amount) AS total FROM lake.orders "
                   "WHERE status <> 'void' GROUP BY customer) "
                   "SELECT c.id, c.region, r.total FROM lake.customers c, revenue r "
                   "WHERE c.id = r.customer AND r.total = (SELECT max(total) FROM revenue)",
    "one_group": "SELECT s.n, r.name FROM (SELECT count(*) AS n, sum(amount) AS total FROM lake.orders) s, "
                 "lake.regions r WHERE r.zone = 'warm'",
    "busy": "SELECT c.region, t.total FROM (SELECT customer, sum(amount) AS total FROM lake.orders "
            "GROUP BY customer HAVING count(*) > 2) t JOIN lake.customers c ON c.id = t.customer",
    "max_of_sums": "SELECT max(t.total) AS top, count(*) AS n, avg(t.total) AS mean FROM "
                   "(SELECT customer, sum(amount) AS total FROM lake.orders GROUP BY customer) t",
    # NULL group keys
    "hints": "SELECT t.region_hint, t.n FROM (SELECT region_hint, count(*) AS n FROM lake.orders GROUP BY region_hint) t "
             "WHERE t.n > 1",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_aggregates_over_aggregates_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(conn, SHAPES)


@pytest.mark.parametrize("query, construct", [
    ("SELECT t.customer FROM (SELECT customer, count(*) AS n FROM lake.orders GROUP BY customer LIMIT 3) t",
     "LIMIT/OFFSET in an aggregating sub-select"),
    ("SELECT t.n FROM (SELECT count(*) AS n FROM lake.orders GROUP BY customer) t",
     "a GROUP BY expression outside the select list of an aggregating sub-select"),
    # its value at the frontier is computed again: it must not depend on the order of the rows
    ("SELECT t.customer, t.s FROM (SELECT customer, string_agg(status, ',') AS s FROM lake.orders "
     "GROUP BY customer) t", "aggregate string_agg() in an aggregating sub-select"),
    ("SELECT c.id FROM lake.customers c WHERE 2 < (SELECT count(*) FROM (SELECT o.status FROM lake.orders o "
     "WHERE o.customer = c.id GROUP BY o.status) s)",
     "a reference to an outer query in an aggregating sub-select"),
])
def test_aggregating_subselects_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    lake.conn.execute("CREATE TABLE public.zones (name text)")
    assert_refused(lake.conn, query, construct)
