"""Differential stream tables over WITH: each reference to a common table expression
is maintained as a sub-select in FROM with its query (the CTEs of dbt models).
Random changes on every source; after each refresh every stream table equals its
query's result at the frontier, row for row."""

import random

import pytest

from streams import assert_refused, drive_randomly
from test_stream_joins import check, create, mutate, setup_tables

SHAPES = {
    "paid_by_region": "WITH paid AS (SELECT o.customer, o.amount FROM lake.orders o WHERE o.status = 'paid') "
                      "SELECT c.region, sum(p.amount) AS total, count(*) AS n FROM paid p "
                      "JOIN lake.customers c ON c.id = p.customer GROUP BY c.region",
    # one CTE over another
    "chained": "WITH a AS (SELECT id, customer, amount FROM lake.orders WHERE amount > 2), "
               "b AS (SELECT a.id, a.amount, c.region FROM a JOIN lake.customers c ON c.id = a.customer) "
               "SELECT region, count(*) AS n, max(amount) AS top FROM b GROUP BY region",
    # referenced twice; MATERIALIZED changes how it runs, not what it means
    "twice": "WITH big AS MATERIALIZED (SELECT id, customer FROM lake.orders WHERE amount > 5) "
             "SELECT x.id, y.id AS other FROM big x JOIN big y ON x.customer = y.customer AND x.id < y.id",
    # a column alias list: the query reads the CTE's columns by these names
    "renamed": "WITH x(cust, amt) AS (SELECT customer, amount FROM lake.orders WHERE status <> 'void') "
               "SELECT cust, count(*) AS n, sum(amt) AS total FROM x GROUP BY cust",
    "in_subselect": "SELECT s.zone, count(*) AS n FROM (WITH r AS (SELECT name, zone FROM lake.regions) "
                    "SELECT r.zone FROM r JOIN lake.customers c ON c.region = r.name) s GROUP BY s.zone",
    # read inside a subquery expression (a dbt model's `IN (SELECT ... FROM {{ ref(ephemeral) }})`)
    "in_subquery_expression": "WITH cold AS (SELECT name FROM lake.regions WHERE zone = 'cold') "
                              "SELECT c.id, c.tier FROM lake.customers c WHERE c.region IN (SELECT name FROM cold)",
    "inside_subquery_expression": "SELECT o.id FROM lake.orders o WHERE EXISTS (WITH mine AS (SELECT id, region "
                                  "FROM lake.customers WHERE tier > 0) SELECT 1 FROM mine m JOIN lake.regions r "
                                  "ON r.name = m.region WHERE m.id = o.customer AND r.zone = 'warm')",
}


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_ctes_exact(lake, seed):
    setup_tables(lake)
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)


@pytest.mark.parametrize("query, construct", [
    ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
     "SELECT o.id FROM lake.orders o JOIN n ON n.i = o.customer", "WITH RECURSIVE"),
    ("WITH statuses AS (SELECT DISTINCT status FROM lake.orders) SELECT s.status FROM statuses s",
     "a subquery in FROM with DISTINCT, window functions, LIMIT or set operations"),
])
def test_ctes_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    assert_refused(lake.conn, query, construct)
