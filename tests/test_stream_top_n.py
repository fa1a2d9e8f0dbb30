"""Differential stream tables with ORDER BY ... LIMIT (top-N): the state keeps every
group, the result its first rows in the query's order, taken again after each
refresh. Random changes on every source; after each refresh the table equals the
query's result at the frontier (each query's order is total, or WITH TIES, so the
result is one set of rows)."""

import random

import psycopg
import pytest

from streams import assert_refused, drive_randomly
from test_stream_joins import check, create, mutate, setup_tables

SHAPES = {
    "top_regions": "SELECT c.region, sum(o.amount) AS total, count(*) AS n FROM lake.orders o "
                   "JOIN lake.customers c ON c.id = o.customer GROUP BY c.region "
                   "ORDER BY total DESC NULLS LAST, c.region LIMIT 2",
    # NULL amounts come first in descending order, as Postgres sorts them
    "largest_orders": "SELECT o.id, o.amount FROM lake.orders o ORDER BY o.amount DESC, o.id LIMIT 5",
    "tiers_with_ties": "SELECT c.tier, count(*) AS n FROM lake.customers c GROUP BY c.tier "
                       "ORDER BY n DESC FETCH FIRST 2 ROWS WITH TIES",
    "second_status": "SELECT DISTINCT o.status FROM lake.orders o ORDER BY o.status OFFSET 1 LIMIT 1",
    # TPC-H 18: IN over an aggregating subquery, then top-N of the groups
    "large_customers": "SELECT o.customer, sum(o.amount) AS total FROM lake.orders o "
                       "WHERE o.customer IN (SELECT customer FROM lake.orders GROUP BY customer HAVING count(*) > 2) "
                       "GROUP BY o.customer ORDER BY total DESC NULLS LAST, o.customer LIMIT 3",
    # a constant sort key orders nothing (printed alone it would name a column position)
    "constant_key": "SELECT c.region, 1 AS prio, count(*) AS n FROM lake.customers c GROUP BY c.region "
                    "ORDER BY prio, n DESC, c.region NULLS FIRST LIMIT 2",
    # every row ties under an order of constants: WITH TIES keeps them all
    "all_tie": "SELECT c.region, count(*) AS n, 'all' AS tag FROM lake.customers c GROUP BY c.region "
               "ORDER BY tag FETCH FIRST 2 ROWS WITH TIES",
    "first_regions": "SELECT r.name, r.zone FROM lake.regions r ORDER BY r.name NULLS FIRST, r.zone LIMIT 2",
}


@pytest.mark.parametrize("seed", [1, 2])
def test_random_changes_keep_top_n_exact(lake, seed):
    setup_tables(lake)
    drive_randomly(lake, random.Random(seed), SHAPES, create, mutate, check)


@pytest.mark.parametrize("query, construct", [
    ("SELECT o.id FROM lake.orders o LIMIT 3", "LIMIT/OFFSET without ORDER BY (which rows it keeps is arbitrary)"),
    ("SELECT o.id FROM lake.orders o ORDER BY o.amount LIMIT 3",
     "ORDER BY an expression that is not a result column, with LIMIT"),
    ("SELECT o.id FROM lake.orders o ORDER BY o.id LIMIT (SELECT count(*) FROM lake.regions)",
     "a subquery expression in LIMIT/OFFSET"),
    ("SELECT region FROM lake.customers UNION SELECT name FROM lake.regions ORDER BY 1 LIMIT 2",
     "LIMIT/OFFSET on a set operation"),
])
def test_limits_that_cannot_be_maintained_are_refused_by_name(lake, query, construct):
    setup_tables(lake)
    assert_refused(lake.conn, query, construct)


def test_a_column_a_grouped_primary_key_determines_is_refused(lake):
    """Postgres lets `p.name` stand ungrouped beside `GROUP BY p.id` when id is the
    primary key; the state keeps only grouped columns and aggregates."""
    setup_tables(lake)
    conn = lake.conn
    conn.execute("CREATE TABLE public.people (id int PRIMARY KEY, name text)")
    for query in ("SELECT p.id, p.name, count(*) AS n FROM public.people p JOIN lake.orders o ON o.customer = p.id "
                  "GROUP BY p.id",
                  "SELECT p.id, count(*) AS n FROM public.people p JOIN lake.orders o ON o.customer = p.id "
                  "GROUP BY p.id ORDER BY p.name LIMIT 3"):
        with pytest.raises(psycopg.errors.FeatureNotSupported) as error:
            conn.execute("SELECT pgtrickle.create_stream_table('refused_t', %s, '1h', 'DIFFERENTIAL')", (query,))
        assert error.value.diag.message_primary.startswith(
            "a column that is neither grouped nor aggregated (one a grouped primary key determines)"), query
