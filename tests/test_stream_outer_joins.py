"""Differential stream tables over LEFT, RIGHT and FULL JOINs: the matched pairs change
with either side; the padded rows of one side change with its own rows and whenever
a change to the other side takes away a row's last match or brings its first. Random
inserts, deletes and updates on every source; after each refresh every stream table
equals its query's result at the frontier's snapshot, row for row."""

import random

import pytest

from streams import assert_refused, assert_verified, drive_randomly
from test_stream_joins import check, create, keep_as_owners_who_are_not_superusers, mutate, setup_tables

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
    # USING and NATURAL: merged columns read as the side Postgres reads them from
    # (COALESCE of both for FULL JOIN), a chain whose second USING reads the first's
    "left_using": "SELECT o.id, region_hint, c.tier FROM lake.orders o LEFT JOIN lake.customers c USING (region_hint)",
    "full_using": "SELECT region_hint, count(*) AS n, count(o.id) AS orders, count(c.id) AS customers "
                  "FROM lake.orders o FULL JOIN lake.customers c USING (region_hint) GROUP BY region_hint",
    # sub-selects on the nullable side that filter one table and select its columns
    "left_subselect": "SELECT c.id, s.id AS order_id, s.paid FROM lake.customers c LEFT JOIN "
                      "(SELECT id, customer, amount AS paid FROM lake.orders WHERE status = 'paid' AND amount > 5) s "
                      "ON s.customer = c.id AND s.paid < 30",
    "right_subselect_grouped": "SELECT r.zone, count(*) AS n, count(s.id) AS customers FROM "
                               "(SELECT id, region FROM lake.customers WHERE tier > 0) s "
                               "RIGHT JOIN lake.regions r ON r.name = s.region GROUP BY r.zone",
    "full_subselect": "SELECT s.name, s.zone, c.id FROM lake.customers c FULL JOIN (SELECT name, zone FROM lake.regions) s "
                      "ON s.name = c.region",
    "anti_subselect": "SELECT c.id FROM lake.customers c LEFT JOIN (SELECT customer FROM lake.orders "
                      "WHERE status <> 'void') s ON s.customer = c.id WHERE s.customer IS NULL",
    "right_natural": "SELECT id, region_hint, c.tier, o.amount FROM lake.customers c NATURAL RIGHT JOIN lake.orders o",
    # a FULL JOIN's merged column (COALESCE) in a second USING, in GROUP BY and in HAVING
    "full_using_chain": "SELECT region_hint, count(*) AS n, count(p.id) AS peers FROM lake.customers c "
                        "FULL JOIN lake.orders o USING (region_hint) LEFT JOIN lake.customers p USING (region_hint) "
                        "GROUP BY region_hint HAVING region_hint IS NOT NULL OR count(*) > 1",
    # USING below the top level: in a sub-select in FROM, in EXISTS
    "using_in_subselect": "SELECT s.region_hint, count(*) AS n, count(s.tier) AS tiers FROM (SELECT region_hint, c.tier "
                          "FROM lake.orders o LEFT JOIN lake.customers c USING (region_hint)) s GROUP BY s.region_hint",
    "using_in_exists": "SELECT r.name FROM lake.regions r WHERE EXISTS (SELECT 1 FROM lake.customers c "
                       "JOIN lake.orders o USING (region_hint) WHERE c.region = r.name AND o.status = 'open')",
    # a WITH query on the nullable side, filtering (inlined, then merged into the join)
    "with_nullable": "WITH paid AS (SELECT id, customer FROM lake.orders WHERE status = 'paid') "
                     "SELECT c.id, p.id AS paid_id FROM lake.customers c LEFT JOIN paid p ON p.customer = c.id",
    # the merged column needs a cast: customers.tier is integer, tiers.tier bigint
    "using_cast": "SELECT tier, c.id, t.label FROM lake.customers c LEFT JOIN public.tiers t USING (tier)",
    # joins with an alias: its columns are the tables' (a merged one too), the tables'
    # own names hidden outside
    "aliased_join": "SELECT j.region, count(*) AS n, sum(j.amount) AS total FROM "
                    "(lake.orders o JOIN lake.customers c ON c.id = o.customer) AS j GROUP BY j.region",
    "aliased_outer": "SELECT j.region_hint, j.tier, r.zone FROM (lake.orders o LEFT JOIN lake.customers c "
                     "USING (region_hint)) AS j LEFT JOIN lake.regions r ON r.name = j.status",
    "using_chain": "SELECT region_hint, o.id, c.id AS customer, p.tier AS peer FROM lake.orders o "
                   "LEFT JOIN lake.customers c USING (region_hint) LEFT JOIN lake.customers p USING (region_hint) "
                   "WHERE region_hint IS DISTINCT FROM 'y'",
    # a join on the nullable side, its condition reading both of its tables and the
    # preserved side's
    "left_of_join": "SELECT c.id, c.region, o.id AS order_id, p.tier AS peer_tier FROM lake.customers c "
                    "LEFT JOIN (lake.orders o JOIN lake.customers p ON p.region_hint = o.region_hint) "
                    "ON o.customer = c.id AND p.tier > c.tier",
    "full_of_join_grouped": "SELECT r.zone, count(*) AS n, count(c.id) AS customers, count(o.id) AS orders "
                            "FROM lake.customers c FULL JOIN (lake.orders o JOIN lake.regions r ON r.name = o.region_hint "
                            "OR r.zone = 'warm') ON o.customer = c.id GROUP BY r.zone",
    # an outer join inside the nullable side, and a join on the left (preserved) one
    "left_of_left_join": "SELECT r.name, c.id, o.id AS order_id FROM lake.regions r "
                         "LEFT JOIN (lake.customers c LEFT JOIN lake.orders o ON o.customer = c.id AND o.status = 'open') "
                         "ON c.region = r.name",
    "right_of_join_beside_join": "SELECT c.id, o.id AS order_id, x.name FROM (lake.customers c JOIN lake.orders o "
                                 "ON o.customer = c.id) RIGHT JOIN lake.regions x ON x.name = c.region",
    # USING and an alias inside the nullable join, the merged column read above it
    "left_of_using_join": "SELECT c.id, x.region_hint, x.tier FROM lake.customers c LEFT JOIN "
                          "(lake.orders o JOIN lake.customers p USING (region_hint)) AS x ON x.customer = c.id",
    # sub-selects on the nullable side that compute, or filter on a FULL JOIN: read whole
    "left_computed_subselect": "SELECT c.id, s.amount FROM lake.customers c LEFT JOIN "
                               "(SELECT customer, coalesce(amount, 0) AS amount FROM lake.orders) s ON s.customer = c.id",
    "full_filtered_subselect": "SELECT c.id, s.id AS order_id FROM lake.customers c FULL JOIN "
                               "(SELECT id, customer FROM lake.orders WHERE status = 'open') s ON s.customer = c.id",
    # aggregating sub-selects on the nullable side (TPC-H 13 written with one)
    "left_aggregated": "SELECT c.id, s.n, s.total FROM lake.customers c LEFT JOIN (SELECT customer, count(*) AS n, "
                       "sum(amount) AS total FROM lake.orders GROUP BY customer) s ON s.customer = c.id",
    "right_aggregated_grouped": "SELECT coalesce(s.n, 0) AS orders, count(*) AS customers FROM "
                                "(SELECT customer, count(*) AS n FROM lake.orders WHERE status <> 'void' GROUP BY customer) s "
                                "RIGHT JOIN lake.customers c ON c.id = s.customer GROUP BY coalesce(s.n, 0)",
    "full_aggregated": "SELECT r.name, s.region, s.customers FROM lake.regions r FULL JOIN (SELECT region, "
                       "count(*) AS customers FROM lake.customers GROUP BY region) s ON s.region = r.name",
    # a Postgres table inside the nullable join
    "left_of_join_with_postgres": "SELECT o.id, c.tier, t.label FROM lake.orders o LEFT JOIN "
                                  "(lake.customers c JOIN public.tiers t ON t.tier = c.tier) ON c.id = o.customer",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_outer_joins_exact(lake, seed):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.tiers (tier bigint, label text)")
    conn.execute("INSERT INTO public.tiers VALUES (0, 'free'), (1, 'basic'), (2, 'pro'), (NULL, 'unknown')")
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)
    assert_verified(conn, SHAPES)


def test_rewritten_joins_as_an_owner_who_is_not_a_superuser(lake):
    """USING, an alias, a merged sub-select, and a join and an aggregating sub-select
    on a nullable side, kept by a role that reads the lake but is not a superuser; a
    role that may not read a table the sub-select reads is refused, although the
    rewrite reads that table without the sub-select."""
    setup_tables(lake)
    names = ["left_subselect", "full_using", "aliased_outer", "left_of_join", "left_aggregated"]
    keep_as_owners_who_are_not_superusers(lake, SHAPES, names, 7, "left_subselect")


@pytest.mark.parametrize("query, construct", [
    ("SELECT c.id, s.customer FROM lake.customers c LEFT JOIN (SELECT customer FROM lake.orders ORDER BY id LIMIT 3) s "
     "ON s.customer = c.id",
     "LIMIT/OFFSET in a sub-select on an outer join's nullable side"),
    ("SELECT c.id, s.customer FROM lake.customers c LEFT JOIN (SELECT DISTINCT customer FROM lake.orders) s "
     "ON s.customer = c.id",
     "DISTINCT in a sub-select on an outer join's nullable side"),
    ("SELECT c.id, s.x FROM lake.customers c LEFT JOIN (SELECT 1 AS x) s ON s.x = c.id",
     "a sub-select on an outer join's nullable side without a table"),
    ("SELECT c.id, s.n FROM lake.customers c LEFT JOIN generate_series(1, 3) s(n) ON s.n = c.id",
     "a function in FROM"),
    ("SELECT c.id, s.n FROM lake.customers c LEFT JOIN LATERAL (SELECT count(*) AS n FROM lake.orders o "
     "WHERE o.customer = c.id) s ON true",
     "a LATERAL item on the nullable side of a LEFT JOIN"),
    ("SELECT c.id, l.n FROM lake.customers c LEFT JOIN (lake.orders o CROSS JOIN LATERAL (SELECT count(*) AS n "
     "FROM lake.regions r WHERE r.name = o.status) l) ON o.customer = c.id",
     "a LATERAL item inside a join on an outer join's nullable side"),
    ("SELECT c.id, l.n FROM lake.customers c LEFT JOIN lake.orders o USING (id), "
     "LATERAL (SELECT count(*) AS n FROM lake.regions r WHERE r.name = o.status) l",
     "a LATERAL item beside a join with USING, NATURAL or an alias (write the join's condition with ON, without AS)"),
    ("SELECT c.id FROM lake.customers c WHERE EXISTS (SELECT 1 FROM lake.orders o "
     "LEFT JOIN lake.regions r ON r.name = o.status WHERE o.customer = c.id)",
     "an outer join inside a subquery expression"),
])
def test_outer_joins_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.zones (name text)")
    assert_refused(conn, query, construct)
