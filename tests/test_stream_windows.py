"""Differential stream tables with window functions: the result rows of every
partition a change touches are computed again by the query itself. Random changes
on every source; after each refresh every stream table equals its query's result at
the frontier (each window's order is total, so the result is one multiset)."""

import random

import pytest

from streams import assert_refused, assert_verified, drive_randomly
from test_stream_joins import check, create, mutate, setup_tables

SHAPES = {
    "ranked": "SELECT o.customer, o.id, o.amount, row_number() OVER (PARTITION BY o.customer "
              "ORDER BY o.amount DESC NULLS LAST, o.id) AS rn FROM lake.orders o",
    "running": "SELECT o.customer, o.id, sum(o.amount) OVER (PARTITION BY o.customer ORDER BY o.id) AS running, "
               "count(*) OVER (PARTITION BY o.customer) AS n FROM lake.orders o WHERE o.status <> 'void'",
    # two windows sharing the region (the second partitions further); NULL regions too
    "joined": "SELECT c.region, o.id, o.status, rank() OVER (PARTITION BY c.region ORDER BY o.amount NULLS FIRST) AS r, "
              "count(*) OVER (PARTITION BY c.region, o.status) AS n FROM lake.orders o "
              "JOIN lake.customers c ON c.id = o.customer",
    "previous": "SELECT c.region, c.id, lag(c.tier) OVER (PARTITION BY c.region ORDER BY c.id, c.tier) AS prev "
                "FROM lake.customers c",
    "with_exists": "SELECT r.zone, r.name, dense_rank() OVER (PARTITION BY r.zone ORDER BY r.name) AS place "
                   "FROM lake.regions r WHERE EXISTS (SELECT 1 FROM lake.customers c WHERE c.region = r.name)",
    # top-N per group: a filter over a windowed sub-select
    "top2_per_customer": "SELECT s.customer, s.id, s.amount FROM (SELECT o.customer, o.id, o.amount, "
                         "row_number() OVER (PARTITION BY o.customer ORDER BY o.amount DESC NULLS LAST, o.id) AS rn "
                         "FROM lake.orders o) s WHERE s.rn <= 2",
    "top3_per_region": "SELECT s.region, s.id, s.r * 10 AS tens FROM (SELECT c.region, o.id, rank() OVER "
                       "(PARTITION BY c.region ORDER BY o.amount NULLS FIRST, o.id) AS r FROM lake.orders o "
                       "JOIN lake.customers c ON c.id = o.customer) s WHERE s.r <= 3",
}


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_windows_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(conn, SHAPES)


@pytest.mark.parametrize("query, construct", [
    ("SELECT o.id, row_number() OVER (ORDER BY o.id) FROM lake.orders o",
     "a window function without PARTITION BY columns that every window shares"),
    ("SELECT o.id, rank() OVER (PARTITION BY o.customer ORDER BY o.id), count(*) OVER (PARTITION BY o.status) "
     "FROM lake.orders o, lake.customers c WHERE c.id = o.customer",
     "a window function without PARTITION BY columns that every window shares"),
    ("SELECT o.id, rank() OVER (PARTITION BY o.customer ORDER BY o.id) FROM lake.orders o",
     "PARTITION BY an expression that is not a result column"),
    ("SELECT o.customer, sum(count(*)) OVER (PARTITION BY o.customer) FROM lake.orders o GROUP BY o.customer",
     "a window function over GROUP BY or aggregates"),
    ("SELECT s.customer, max(s.rn) FROM (SELECT o.customer, row_number() OVER (PARTITION BY o.customer "
     "ORDER BY o.id) AS rn FROM lake.orders o) s GROUP BY s.customer",
     "aggregates or DISTINCT over a sub-select with window functions"),
    ("SELECT s.id FROM (SELECT o.id, o.customer, row_number() OVER (PARTITION BY o.customer ORDER BY o.id) AS rn "
     "FROM lake.orders o) s WHERE s.rn = 1",
     "PARTITION BY an expression that is not a result column"),
])
def test_windows_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    assert_refused(lake.conn, query, construct)
