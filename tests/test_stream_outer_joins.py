"""Differential stream tables over LEFT, RIGHT and FULL JOINs: the matched pairs change
with either side; the padded rows of one side change with its own rows and whenever
a change to the other side takes away a row's last match or brings its first. Random
inserts, deletes and updates on every source; after each refresh every stream table
equals its query's result at the frontier's snapshot, row for row."""

import random

import pytest

from streams import assert_refused, assert_verified, drive_randomly
from test_stream_joins import check, create, mutate, setup_tables

SHAPES = {
    "customers_orders": "SELECT c.id, c.region, o.id AS order_id, o.amount FROM lake.customers c "
                        "LEFT JOIN lake.orders o ON o.customer = c.id AND o.status <> 'void'",
    # TPC-H 13's inner query
    "orders_per_customer": "SELECT c.id, count(o.id) AS orders, sum(o.amount) AS total, count(*) AS n "
                           "FROM lake.customers c LEFT JOIN lake.orders o ON o.customer = c.id GROUP BY c.id",
    "regions_right": "SELECT r.name, r.zone, c.id FROM lake.customers c RIGHT JOIN lake.regions r ON r.name = c.region",
    # the anti-join idiom: a condition on the padded side's columns above the join
    "without_orders": "SELECT c.id, c.tier FROM lake.customers c LEFT JOIN lake.orders o ON o.customer = c.id "
                      "WHERE o.id IS NULL",
    "chain": "SELECT o.id, c.region, r.zone FROM lake.orders o LEFT JOIN lake.customers c ON c.id = o.customer "
             "LEFT JOIN lake.regions r ON r.name = c.region",
    "inner_then_left": "SELECT r.zone, count(*) AS n, count(o.id) AS orders FROM lake.customers c "
                       "JOIN lake.regions r ON r.name = c.region LEFT JOIN lake.orders o ON o.customer = c.id "
                       "GROUP BY r.zone",
    "in_subselect": "SELECT s.region, count(*) AS n, sum(s.amount) AS total FROM (SELECT c.region, o.amount "
                    "FROM lake.customers c LEFT JOIN lake.orders o ON o.customer = c.id) s GROUP BY s.region",
    "self_left": "SELECT a.id, a.tier, b.id AS next_id FROM lake.customers a "
                 "LEFT JOIN lake.customers b ON b.tier = a.tier + 1 AND b.region = a.region",
    "left_and_exists": "SELECT c.region, count(o.id) AS orders FROM lake.customers c "
                       "LEFT JOIN lake.orders o ON o.customer = c.id "
                       "WHERE EXISTS (SELECT 1 FROM lake.regions r WHERE r.name = c.region) GROUP BY c.region",
    # FULL JOIN: both sides padded (NULL regions never match, so both pad)
    "full_rows": "SELECT c.id, c.region, r.name, r.zone FROM lake.customers c FULL JOIN lake.regions r ON r.name = c.region",
    "full_grouped": "SELECT r.zone, count(*) AS n, count(c.id) AS customers, count(r.name) AS regions "
                    "FROM lake.customers c FULL JOIN lake.regions r ON r.name = c.region GROUP BY r.zone",
    "full_then_left": "SELECT c.id, r.zone, o.id AS order_id FROM lake.customers c FULL JOIN lake.regions r "
                      "ON r.name = c.region LEFT JOIN lake.orders o ON o.customer = c.id AND o.status = 'open'",
    "distinct_zones": "SELECT DISTINCT o.status, r.zone FROM lake.orders o LEFT JOIN lake.customers c ON c.id = o.customer "
                      "LEFT JOIN lake.regions r ON r.name = c.region",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_outer_joins_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(conn, SHAPES)


@pytest.mark.parametrize("query, construct", [
    ("SELECT c.id, o.id FROM lake.customers c FULL JOIN (lake.orders o JOIN lake.regions r ON r.name = o.status) "
     "ON o.customer = c.id",
     "a FULL JOIN whose nullable side is not one table (a sub-select or a parenthesized join)"),
    ("SELECT c.id, o.id FROM lake.customers c LEFT JOIN (lake.orders o JOIN lake.regions r ON r.name = o.status) "
     "ON o.customer = c.id",
     "a LEFT JOIN whose nullable side is not one table (a sub-select or a parenthesized join)"),
    ("SELECT c.id, s.id FROM lake.customers c LEFT JOIN (SELECT id, customer FROM lake.orders) s ON s.customer = c.id",
     "a LEFT JOIN whose nullable side is not one table (a sub-select or a parenthesized join)"),
    ("SELECT o.id, c.tier FROM lake.orders o LEFT JOIN lake.customers c USING (region_hint)",
     "a LEFT JOIN with USING or NATURAL (write its condition with ON)"),
    ("SELECT o.id, c.tier FROM lake.orders o NATURAL RIGHT JOIN lake.customers c",
     "a RIGHT JOIN with USING or NATURAL (write its condition with ON)"),
    ("SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT 1 FROM lake.orders o "
     "LEFT JOIN lake.regions r ON r.name = o.status WHERE o.customer = c.id)",
     "an outer join inside a subquery expression"),
])
def test_outer_joins_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.zones (name text)")
    assert_refused(conn, query, construct)
