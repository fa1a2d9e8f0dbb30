"""Whole queries over lake tables run in DuckDB: the 22 TPC-H queries return exactly
what Postgres returns over the same data in heap tables (and what DuckDB returns),
constructs DuckDB computes differently stay with Postgres, and the pushed query keeps
the scan's semantics (permissions, parameters, time travel, the on/off setting)."""

import decimal
import math
import site

import duckdb
import psycopg
import pytest

from conftest import new_lake
from roles import grant_lake_reading, new_role

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
# Every query runs whole in DuckDB: 8 and 14 sum a CASE whose branches have different
# numeric scales, 17 and 22 compare with avg() (see fdw/README.md, Whole queries in DuckDB).
NOT_PUSHED = set()


def tpch_extension():
    for base in site.getsitepackages():
        return f"{base}/duckdb_extension_tpch/extensions/v1.5.5/tpch.duckdb_extension"


@pytest.fixture(scope="module")
def tpch(pg, request):
    """A TPC-H lake at scale factor 0.01 written by the reference client, its foreign
    tables in schema lake and heap copies in schema heap."""
    with new_lake(pg, request) as lake:
        ref = lake.ref.con
        ref.execute(f"LOAD '{tpch_extension()}'")
        ref.execute("ATTACH ':memory:' AS gen")
        ref.execute("CALL dbgen(sf=0.01, catalog='gen')")
        for table in TABLES:
            lake.ref.execute(f"CREATE TABLE analytics.main.{table} AS SELECT * FROM gen.main.{table}")
        lake.import_schema(*TABLES)
        lake.conn.execute("CREATE SCHEMA heap")
        for table in TABLES:
            lake.conn.execute(f"CREATE TABLE heap.{table} AS SELECT * FROM lake.{table}")
        # The heap oracle's correlated subqueries (Q2, Q17, Q20, Q21, Q22) re-run per outer
        # row: indexes make them lookups (Q20 took 26 s without); answers are unchanged.
        for index in ["lineitem (l_partkey, l_suppkey)", "lineitem (l_orderkey)", "partsupp (ps_partkey)",
                      "orders (o_custkey)"]:
            lake.conn.execute(f"CREATE INDEX ON heap.{index}")
        # Dimension tables too large to send to DuckDB (more than 8 pages): padded with
        # rows that join nothing.
        lake.conn.execute("CREATE SCHEMA bigheap")
        lake.conn.execute("CREATE TABLE bigheap.nation AS SELECT * FROM heap.nation UNION ALL "
                          "SELECT 1000 + g, 'PAD' || g, 1000 + g, repeat('x', 50) FROM generate_series(1, 2000) g")
        lake.conn.execute("CREATE TABLE bigheap.region AS SELECT * FROM heap.region UNION ALL "
                          "SELECT 1000 + g, 'PAD' || g, repeat('x', 50) FROM generate_series(1, 2000) g")
        lake.conn.execute("ANALYZE")
        lake.conn.execute("CREATE COLLATION public.linguistic (provider = libc, locale = 'en_US.utf8')")
        texts = duckdb.connect()
        texts.execute(f"LOAD '{tpch_extension()}'")
        lake.queries = dict(texts.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
        texts.close()
        yield lake


@pytest.fixture
def session(tpch):
    s = tpch.session()
    yield s
    s.close()


def plan_of(session, query):
    return "\n".join(r[0] for r in session.rows("EXPLAIN (VERBOSE, COSTS OFF) " + query))


def rows_in(session, schema, query):
    session.conn.execute(f"SET search_path = {schema}")
    return session.rows(query)


@pytest.mark.parametrize("number", range(1, 23))
def test_tpch_answers_equal_postgres_and_duckdb(session, tpch, number):
    query = tpch.queries[number]
    lake_rows = rows_in(session, "lake", query)
    heap_rows = rows_in(session, "heap", query)
    ordered = "order by" in query.lower()
    assert lake_rows == heap_rows if ordered else sorted(lake_rows, key=repr) == sorted(heap_rows, key=repr)
    assert len(lake_rows) > 0 or number in (2,)  # every query but a tiny Q2 has rows at this scale
    # DuckDB's own answer (its avg is a double, so numbers compare approximately).
    duck_rows = tpch.ref.con.execute(query).fetchall()
    assert len(duck_rows) == len(lake_rows)
    for ours, theirs in zip(lake_rows if ordered else sorted(lake_rows, key=repr),
                            duck_rows if ordered else sorted(duck_rows, key=repr)):
        for a, b in zip(ours, theirs):
            if isinstance(a, (decimal.Decimal, float)) and isinstance(b, (decimal.Decimal, float)):
                assert math.isclose(float(a), float(b), rel_tol=1e-12), (a, b)
            else:
                assert a == b
    session.conn.execute("SET search_path = lake")
    pushed = "Custom Scan (DuckLake Query)" in plan_of(session, query)
    assert pushed == (number not in NOT_PUSHED), plan_of(session, query)


EDGE = """
CREATE TABLE analytics.main.edge AS SELECT * FROM (VALUES
  (1, -7, 2, CAST(1.25 AS DECIMAL(10,2)), 'a', NULL::INTEGER),
  (2, 7, -2, CAST(-2.50 AS DECIMAL(10,2)), 'B', 3),
  (3, -2147483648, 1, CAST(0.00 AS DECIMAL(10,2)), NULL, NULL),
  (4, 0, 5, NULL, 'é', 4)) t(id, a, b, d, s, k)
"""


def lake_reader(tpch, prefix, without=None):
    """A new role that reads the lake (a user mapping of its own), except table `without`."""
    role = new_role(tpch.conn, prefix)
    grant_lake_reading(tpch, role)
    tpch.conn.execute(f"CREATE USER MAPPING IF NOT EXISTS FOR {role} SERVER lake")
    if without:
        tpch.conn.execute(f"REVOKE SELECT ON {without} FROM {role}")
    return role


@pytest.fixture(scope="module")
def edge(tpch):
    tpch.ref.execute(EDGE)
    tpch.import_schema("edge")
    tpch.conn.execute("CREATE TABLE heap.edge AS SELECT * FROM lake.edge")
    return tpch


@pytest.mark.parametrize("query", [
    # integer division and modulo truncate toward zero; sums of integers are bigint
    "SELECT e.id, e.a / e.b, e.a % e.b FROM edge e JOIN nation n ON n.n_nationkey = e.id ORDER BY 1",
    "SELECT count(*), sum(a), sum(d), min(s), max(d), count(DISTINCT k) FROM edge",
    # numeric scales as Postgres shows them: products add scales, sums keep them
    "SELECT (d * d)::text, (d + 1)::text, (d * 2)::text FROM edge e JOIN region r ON r.r_regionkey = e.id ORDER BY e.id",
    "SELECT avg(d)::text, avg(a)::text, (sum(d) / 3)::text FROM edge",
    # NOT IN with a NULL in the sub-select matches nothing; IN and EXISTS
    "SELECT id FROM edge WHERE k NOT IN (SELECT k FROM edge WHERE id > 1) ORDER BY id",
    "SELECT id FROM edge WHERE id NOT IN (SELECT k FROM edge WHERE k IS NOT NULL) ORDER BY id",
    "SELECT id FROM edge e WHERE EXISTS (SELECT 1 FROM edge f WHERE f.k = e.id) ORDER BY id",
    "SELECT id FROM edge e WHERE NOT EXISTS (SELECT 1 FROM edge f WHERE f.k = e.id) ORDER BY id",
    # outer joins and NULLs
    "SELECT e.id, f.id FROM edge e LEFT JOIN edge f ON f.k = e.id ORDER BY 1, 2",
    "SELECT e.id, f.id FROM edge e FULL JOIN edge f ON f.k = e.id ORDER BY 1 NULLS FIRST, 2 NULLS FIRST",
    # text: equality, and ordering under this database's collation (libc C.UTF-8: code points)
    "SELECT s, count(*) FROM edge GROUP BY s ORDER BY s",
    "SELECT e.s FROM edge e JOIN edge f ON e.s = f.s ORDER BY e.s DESC",
    "SELECT CASE WHEN a < 0 THEN 'neg' WHEN a = 0 THEN 'zero' ELSE 'pos' END, count(*) FROM edge GROUP BY 1 ORDER BY 1",
    "SELECT substring(s FROM 1 FOR 1), coalesce(k, -1) FROM edge e JOIN nation n ON n.n_nationkey = e.id ORDER BY 1, 2",
    "SELECT e.id, nullif(e.k, 3), nullif(e.s, 'a'), nullif(e.d, 0)::text, nullif(e.d, 1.250)::text FROM edge e "
    "JOIN nation n ON n.n_nationkey = e.id ORDER BY 1",
    # text functions on NULLs, an empty search string, negative counts; abs keeps types and scales
    "SELECT e.id, abs(e.a), abs(e.d)::text, abs(e.b::int2), strpos(e.s, 'B'), position('' IN e.s), "
    "replace(e.s, 'a', 'xy'), replace(e.s, '', 'z'), left(e.s, -1), right(coalesce(e.s, 'zz'), 1), left(e.s, e.b) "
    "FROM edge e JOIN nation n ON n.n_nationkey = e.id WHERE e.id <> 3 ORDER BY 1",
    "SELECT id, (SELECT max(k) FROM edge f WHERE f.id < e.id) FROM edge e ORDER BY id",
    "WITH big AS (SELECT * FROM edge WHERE a > 0) SELECT count(*) FROM big, edge WHERE big.id = edge.id",
    "SELECT DISTINCT k FROM edge ORDER BY k NULLS FIRST",
    "SELECT extract(year FROM o_orderdate), count(*) FROM orders GROUP BY 1 ORDER BY 1",
    # LIKE: a constant pattern without backslash runs without ESCAPE, others with Postgres' backslash
    "SELECT e.id FROM edge e JOIN nation n ON n.n_nationkey = e.id WHERE e.s LIKE '_' OR e.s ILIKE 'b%' ORDER BY 1",
    "SELECT e.id FROM edge e JOIN nation n ON n.n_nationkey = e.id WHERE e.s NOT LIKE '\\%%' AND e.s LIKE e.s ORDER BY 1",
    # varying scales in sub-selects of expressions and of set operations
    "SELECT id FROM edge WHERE d IN (SELECT CASE WHEN a > 0 THEN d ELSE 0 END FROM edge) ORDER BY id",
    "SELECT id, (SELECT max(CASE WHEN f.a > 0 THEN f.d ELSE 0 END)::text FROM edge f WHERE f.id = e.id) FROM edge e ORDER BY id",
    "SELECT sum(u.v)::text FROM (SELECT CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge UNION ALL SELECT d FROM edge) u",
])
def test_edge_values_match_postgres(edge, session, query):
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query", [
    # numerics of varying display scale: each value prints as Postgres prints it
    "SELECT e.id, CASE WHEN e.a > 0 THEN e.d ELSE 0 END, (CASE WHEN e.a > 0 THEN e.d * e.d ELSE 1.5 END)::text "
    "FROM edge e JOIN nation n ON n.n_nationkey = e.id ORDER BY 1",
    "SELECT sum(CASE WHEN a > 0 THEN d ELSE 0 END)::text, sum(CASE WHEN a > 100 THEN d ELSE 0 END)::text, "
    "sum(CASE WHEN a > 100 THEN d END)::text, (100.00 * sum(CASE WHEN a < 0 THEN d ELSE 0 END) / sum(d))::text FROM edge",
    "SELECT e.id, coalesce(e.d, 0)::text, coalesce(e.d * 1.5, e.a)::text FROM edge e JOIN region r ON r.r_regionkey = e.id ORDER BY 1",
    # division and avg as numeric_div computes them, also inside conditions
    "SELECT e.id, (e.d / 3)::text, (e.d / 7.000)::text, (e.a::numeric / e.b)::text, (e.b / 7.0 * e.d)::text "
    "FROM edge e JOIN region r ON r.r_regionkey = e.id ORDER BY 1",
    "SELECT avg(a)::text, avg(b)::text, avg(k)::text, avg(d)::text, avg(CASE WHEN a > 0 THEN d ELSE 0 END)::text FROM edge",
    "SELECT id FROM edge e WHERE e.d < (SELECT avg(d) FROM edge) ORDER BY id",
    "SELECT id FROM edge e WHERE e.a > (SELECT 0.2 * avg(f.b) FROM edge f WHERE f.id <> e.id) ORDER BY id",
    # a NULL value's branch does not count towards a sum's scale (Postgres' sum never sees it)
    "SELECT sum(CASE WHEN id = 4 THEN d ELSE 1.5 END)::text, avg(CASE WHEN id = 4 THEN d ELSE 1.5 END)::text FROM edge",
    # quotients divided again (their digits read exactly, whatever their scale)
    "SELECT (avg(a) / 100)::text, (avg(b) / 3 / 7)::text, (avg(d) / 7 * 3)::text FROM edge",
    # IN compares numerics of different scales without rounding either side
    "SELECT id FROM edge e WHERE e.d IN (SELECT sum(f.b::int8) - 1 FROM edge f WHERE f.id = e.id) ORDER BY id",
    "SELECT id FROM edge e WHERE e.d NOT IN (SELECT sum(f.b::int8) - 1 FROM edge f WHERE f.id = e.id) ORDER BY id",
    # in HAVING, where DuckDB binds no lambda over aggregates: comparisons too wide for
    # one DECIMAL (TPC-H 11's) repeat their operands
    "SELECT k FROM edge GROUP BY k HAVING sum(d) > (SELECT sum(d) * 0.0001000000 FROM edge) ORDER BY 1",
    "SELECT k, count(*) FROM edge GROUP BY k HAVING count(*) > (SELECT sum(d) * 0.0001000000 FROM edge) - 2 "
    "ORDER BY 1 NULLS FIRST",
    # varying scales out of sub-selects and WITH queries: each value's scale comes along
    "SELECT s.id, s.v::text, (s.v * 2)::text FROM (SELECT id, CASE WHEN a > 0 THEN d * d ELSE 1.5 END AS v FROM edge) s "
    "JOIN nation n ON n.n_nationkey = s.id ORDER BY 1",
    "SELECT s.k, count(*), sum(s.v)::text, count(s.v) FROM (SELECT k, CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge) s "
    "GROUP BY s.k ORDER BY 1 NULLS FIRST",
    "WITH c AS (SELECT id, coalesce(d * 1.5, a) AS v FROM edge) "
    "SELECT c.id, c.v::text FROM c JOIN region r ON r.r_regionkey = c.id ORDER BY 1",
    "SELECT sum(t.v)::text, avg(t.v)::text FROM (SELECT s.v FROM (SELECT CASE WHEN id = 4 THEN d ELSE 1.5 END AS v FROM edge) s) t",
    # TPC-H 8's share: a sum of a CASE over a sub-select, divided by another sum
    "SELECT s.k, (sum(s.b) / sum(s.v))::text FROM (SELECT id % 2 AS k, CASE WHEN a < 0 THEN d ELSE 0 END AS b, d AS v "
    "FROM edge) s GROUP BY s.k ORDER BY 1",
    "SELECT s.k, sum(s.a)::text, count(s.a) FROM (SELECT id % 2 AS k, CASE WHEN s = 'B' THEN d * d ELSE 0 END AS a "
    "FROM edge) s GROUP BY s.k ORDER BY 1",
    # ... beside outer joins (padded rows: no value, no scale), out of aggregates and
    # quotients, through LATERAL, windows, a WITH query read two levels down, USING
    "SELECT e.id, s.v::text, coalesce(s.v, 0.5)::text, (s.v * 2)::text FROM edge e LEFT JOIN (SELECT id, "
    "CASE WHEN a >= 0 THEN d ELSE 1.5 END AS v FROM edge WHERE id <> 1) s ON s.id = e.id ORDER BY 1",
    "SELECT e.k, sum(s.v)::text, count(s.v), coalesce(sum(s.v), 0)::text FROM edge e LEFT JOIN (SELECT id, "
    "CASE WHEN a > 0 THEN d * d ELSE 1.5 END AS v FROM edge WHERE id IN (1, 2)) s ON s.id = e.id GROUP BY e.k "
    "ORDER BY 1 NULLS FIRST",
    "SELECT e.id, g.t::text, (g.t * 1.5)::text FROM edge e LEFT JOIN (SELECT k, sum(CASE WHEN a > 0 THEN d ELSE 0 END) "
    "AS t FROM edge GROUP BY k) g ON g.k = e.id ORDER BY 1",
    "SELECT sum(s.m)::text, count(s.m) FROM (SELECT k, avg(d) AS m FROM edge GROUP BY k) s",
    "WITH c AS (SELECT id, CASE WHEN id = 3 THEN d ELSE 0 END AS v FROM edge) SELECT x.id, x.w::text FROM "
    "(SELECT c.id, c.v * 1.5 AS w FROM c WHERE EXISTS (SELECT 1 FROM c c2 WHERE c2.v = c.v AND c2.id <> c.id)) x "
    "ORDER BY 1",
    "SELECT e.id, l.w::text FROM edge e, LATERAL (SELECT CASE WHEN e.a > 0 THEN f.d * f.d ELSE 0 END AS w FROM edge f "
    "WHERE f.id = e.id) l ORDER BY 1",
    "SELECT s.id, (sum(s.v) OVER (ORDER BY s.id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))::text FROM "
    "(SELECT id, CASE WHEN id = 2 THEN d ELSE 0 END AS v FROM edge) s ORDER BY 1",
    "SELECT v::text FROM (SELECT CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge WHERE id <= 2) a FULL JOIN "
    "(SELECT CASE WHEN id = 3 THEN d ELSE 1.5 END AS v FROM edge WHERE id >= 3) b USING (v) ORDER BY 1",
    # UNION ALL keeps each row's scale: a varying branch, branches of different scales
    # (a stream table's delta query has this shape, a branch per term)
    "SELECT u.v::text FROM (SELECT CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge UNION ALL SELECT d * d FROM edge "
    "UNION ALL SELECT 1.5 FROM edge WHERE id = 1) u ORDER BY 1 NULLS FIRST",
    "SELECT sum(u.v)::text, count(u.v), avg(u.v)::text FROM (SELECT d AS v FROM edge UNION ALL SELECT d * d FROM edge) u",
    "SELECT u.k, sum(u.a)::text FROM (SELECT id % 2 AS k, CASE WHEN a > 0 THEN d ELSE 0 END AS a FROM edge "
    "UNION ALL SELECT id % 3, CASE WHEN s = 'B' THEN d * d ELSE 0 END FROM edge) u GROUP BY u.k ORDER BY 1",
    "SELECT sum(u.v)::text FROM (SELECT CASE WHEN id = 4 THEN d END AS v FROM edge UNION ALL SELECT 1.5 FROM edge WHERE id = 4) u",
])
def test_numeric_scales_and_division_match_postgres_pushed(edge, session, query):
    session.conn.execute("SET search_path = lake")
    assert "DuckLake Query" in plan_of(session, query)
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query", [
    "SELECT k, count(*) FROM edge GROUP BY k HAVING avg(d) > 0 OR avg(a) < -1.5 ORDER BY 1",
    "SELECT k FROM edge GROUP BY k HAVING count(*) > avg(d) ORDER BY 1 NULLS FIRST",
    "SELECT k FROM edge GROUP BY k HAVING max(d) / count(*) > 1 ORDER BY 1 NULLS FIRST",
    "SELECT k FROM edge GROUP BY k HAVING CASE WHEN min(b) = 0 THEN false ELSE max(a) / min(b) > 1 END ORDER BY 1",
])
def test_quotients_in_having_are_exact(edge, session, query):
    """DuckDB binds no lambda over aggregates in HAVING: there the exact quotient's
    intermediate values are written out where they are used (a sub-select binding
    would count(*) one row, and run whatever guards it)."""
    session.conn.execute("SET search_path = lake")
    assert "DuckLake Query" in plan_of(session, query)
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query, hoisted", [
    # TPC-H 11's form: a wide comparison with an uncorrelated sub-select, which would
    # otherwise be written out (and run) four times
    ("SELECT k, sum(d * a) FROM edge GROUP BY k "
     "HAVING sum(d * a) > (SELECT sum(d * a) * 0.0001000000 FROM edge WHERE id > 1) ORDER BY 1 NULLS FIRST", 1),
    ("SELECT k FROM edge GROUP BY k HAVING count(*) >= (SELECT count(*) FROM edge WHERE s IS NULL) "
     "AND max(d) < (SELECT avg(d) FROM edge) ORDER BY 1 NULLS FIRST", 2),
    # no row: NULL, and so no group
    ("SELECT k FROM edge GROUP BY k HAVING sum(d) <> (SELECT sum(d) FROM edge WHERE id > 99) ORDER BY 1", 1),
    # correlated (the group's k): stays where it is
    ("SELECT k FROM edge e GROUP BY k HAVING count(*) <= (SELECT count(*) FROM edge f WHERE f.k = e.k) "
     "ORDER BY 1 NULLS FIRST", 0),
    # inside a correlated sub-select: stays where it is too
    ("SELECT id FROM edge e WHERE EXISTS (SELECT 1 FROM edge f WHERE f.k = e.id GROUP BY f.k "
     "HAVING count(*) >= (SELECT count(*) FROM edge WHERE s IS NULL)) ORDER BY 1", 0),
])
def test_uncorrelated_sub_selects_in_having_run_once(edge, session, query, hoisted):
    session.conn.execute("SET search_path = lake")
    duckdb_query = next(l for l in plan_of(session, query).splitlines() if "DuckDB Query:" in l)
    assert duckdb_query.count("AS MATERIALIZED") == hoisted, duckdb_query
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


def test_division_on_top_is_postgres_numeric_div(edge, session):
    """avg and numeric division at the top of a query run as Postgres' numeric_div over
    DuckDB's sums and counts, unless the query sorts by them (DuckDB sorts)."""
    session.conn.execute("SET search_path = lake")
    query = "SELECT k, avg(d)::text, (sum(d) / count(*))::text FROM edge GROUP BY k ORDER BY k"
    plan = plan_of(session, query)
    assert "DuckLake Query" in plan and "numeric_div(" in plan and "(NULL::numeric) / (NULL::numeric)" in plan, plan
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)
    sorted_by_avg = "SELECT k, avg(d) FROM edge GROUP BY k ORDER BY 2 NULLS FIRST, 1 LIMIT 3"
    session.conn.execute("SET search_path = lake")
    plan = plan_of(session, sorted_by_avg)
    assert "DuckLake Query" in plan and "numeric_div(" not in plan and "Sort" not in plan.split("\n")[0], plan
    assert rows_in(session, "lake", sorted_by_avg) == rows_in(session, "heap", sorted_by_avg)


WIDE = """
CREATE TABLE analytics.main.wide AS SELECT * FROM (VALUES
  (1, CAST(9999999999999999.99 AS DECIMAL(18,2)), CAST(9999999999999.99 AS DECIMAL(15,2)), 999999999999999999::DECIMAL(18,0)),
  (2, CAST(-9999999999999999.99 AS DECIMAL(18,2)), CAST(2.50 AS DECIMAL(15,2)), -1::DECIMAL(18,0)),
  (3, CAST(0.01 AS DECIMAL(18,2)), CAST(-1.00 AS DECIMAL(15,2)), 0::DECIMAL(18,0)),
  (4, NULL, CAST(3.00 AS DECIMAL(15,2)), NULL)) t(id, x, z, y);
CREATE TABLE analytics.main.cancel AS SELECT * FROM (VALUES
  (1, 999999999999999935::DECIMAL(18,0), 999999999999999809::DECIMAL(18,0), 10000000000000000::DECIMAL(18,0),
   CAST(-9999999999999999.99 AS DECIMAL(18,2))),
  (2, 5::DECIMAL(18,0), 3::DECIMAL(18,0), 7::DECIMAL(18,0), CAST(0.5 AS DECIMAL(18,2)))) t(id, a, b, c, d);
CREATE TABLE analytics.main.huge AS SELECT 9000000000000000000000000000000000000::DECIMAL(38,0) AS v, i FROM range(12) t(i)
"""


@pytest.fixture(scope="module")
def wide(tpch):
    for statement in WIDE.split(";\n"):
        tpch.ref.execute(statement)
    tpch.import_schema("wide", "cancel", "huge")
    tpch.conn.execute("CREATE TABLE heap.wide AS SELECT * FROM lake.wide")
    tpch.conn.execute("CREATE TABLE heap.cancel AS SELECT * FROM lake.cancel")
    tpch.conn.execute("CREATE TABLE heap.huge AS SELECT * FROM lake.huge")
    return tpch


WORDS = ["a", "B", "b", "Z", "e", "é", "ä", "ab", "a b", "", " ", "ｚ", "\ufffd", "😀", "\U00010000", "日本", None]


@pytest.fixture(scope="module")
def words(tpch):
    rows = ", ".join(f"({i}, {'NULL' if w is None else repr(w)})" for i, w in enumerate(WORDS))
    tpch.ref.execute(f"CREATE TABLE analytics.main.words AS SELECT * FROM (VALUES {rows}) t(id, w)")
    tpch.import_schema("words")
    tpch.conn.execute("CREATE TABLE heap.words AS SELECT * FROM lake.words")
    tpch.conn.execute('CREATE FOREIGN TABLE lake.words_c (id int, w text COLLATE "C") SERVER lake OPTIONS (table \'words\')')
    tpch.conn.execute('CREATE TABLE heap.words_c (id int, w text COLLATE "C")')
    tpch.conn.execute("INSERT INTO heap.words_c SELECT * FROM heap.words")
    tpch.conn.execute('CREATE FOREIGN TABLE lake.words_posix (id int, w text COLLATE "POSIX") SERVER lake '
                      "OPTIONS (table 'words')")
    tpch.conn.execute('CREATE TABLE heap.words_posix (id int, w text COLLATE "POSIX")')
    tpch.conn.execute("INSERT INTO heap.words_posix SELECT * FROM heap.words")
    tpch.conn.execute("CREATE COLLATION IF NOT EXISTS public.dashed (provider = libc, locale = 'C.UTF-8')")
    return tpch


WORD_QUERIES = [
    "SELECT x.w{c}, x.id FROM words x LEFT JOIN nation n ON n.n_nationkey = x.id ORDER BY 1 NULLS FIRST, 2",
    "SELECT min(w{c}), max(w{c}), count(*) FILTER (WHERE w{c} > 'Z' AND w{c} <= 'ｚ') FROM words",
    "SELECT w, row_number() OVER (ORDER BY w{c} DESC NULLS LAST) FROM words ORDER BY 2",
    "SELECT DISTINCT w{c} FROM words x JOIN nation n ON n.n_nationkey = x.id ORDER BY 1 DESC LIMIT 7",
]


@pytest.mark.parametrize("collation, bytewise", [
    ("", True),  # the database's: libc C.UTF-8, whose glibc order is the code points'
    (' COLLATE "C"', True),
    (' COLLATE "C.utf8"', True),
    (" COLLATE public.dashed", True),  # C.UTF-8 spelled as glibc also accepts it
    (" COLLATE public.linguistic", False),
])
def test_text_ordering_runs_in_duckdb_where_postgres_orders_bytes(words, session, collation, bytewise):
    for query in WORD_QUERIES:
        query = query.format(c=collation)
        assert rows_in(session, "lake", query) == rows_in(session, "heap", query), query
        session.conn.execute("SET search_path = lake")
        plan = plan_of(session, query)
        assert plan.splitlines()[0].startswith("Custom Scan (DuckLake Query)") == bytewise, plan
    # the two orders differ on these words, so the test tells them apart
    heap = rows_in(session, "heap", "SELECT string_agg(w, ',' ORDER BY w{c}) FROM words".format(c=collation))
    assert heap[0][0].startswith(", ,B,Z,a,a b" if bytewise else ", ,😀,a,ä,a b"), heap


@pytest.mark.parametrize("collation, pushed", [
    ("", True),
    (" COLLATE public.linguistic", True),
    (' COLLATE "C"', False),  # Postgres lowers ASCII only: 'é' is not ILIKE 'É'
])
def test_ilike_runs_in_duckdb_where_postgres_lowers_as_duckdb(words, session, collation, pushed):
    query = (f"SELECT x.id, x.w{collation} ILIKE 'É', x.w{collation} NOT ILIKE '%Ä%' FROM words x "
             "LEFT JOIN nation n ON n.n_nationkey = x.id ORDER BY 1")
    rows = rows_in(session, "heap", query)
    assert rows == rows_in(session, "lake", query)
    lowered = pushed  # where Postgres lowers non-ASCII letters, and only there, it is pushed
    assert (WORDS.index("é"), lowered, True) in rows and (WORDS.index("ä"), False, not lowered) in rows
    session.conn.execute("SET search_path = lake")
    plan = plan_of(session, query)
    duckdb_query = next(line for line in plan.splitlines() if "DuckDB Query:" in line)
    assert ("ILIKE" in duckdb_query) == pushed, plan


@pytest.mark.parametrize("query", [
    "SELECT count(*) FROM words_posix a JOIN words_c b ON a.w < b.w",
    "SELECT count(*) FROM words_posix a JOIN words_c b ON a.w = b.w",
    "SELECT count(*) FROM words_posix a, words_c b WHERE a.w ILIKE b.w",
    "SELECT count(*) FROM words_posix a, words_c b WHERE a.w IN (b.w, 'x')",
    "SELECT count(*) FROM words_posix a, words_c b WHERE strpos(a.w, b.w) > 0",
    "SELECT count(*) FROM words_posix a, words_c b WHERE replace(a.w, b.w, 'x') IS NULL",
    "SELECT count(*) FROM words_posix a WHERE a.w IN (SELECT b.w FROM words_c b)",
    "SELECT min(a.w || b.w) FROM words_posix a, words_c b",
])
def test_text_of_conflicting_collations_raises_as_in_postgres(words, session, query):
    # Two non-default implicit collations in conflict leave the operator none: Postgres
    # raises when it runs, so the query is not pushed, where DuckDB would answer.
    for schema in ["heap", "lake"]:
        session.conn.execute(f"SET search_path = {schema}")
        with pytest.raises(psycopg.errors.IndeterminateCollation):
            session.conn.execute(query)
        session.conn.rollback()


def test_distinct_under_a_nondeterministic_collation_stays_in_postgres(words, session):
    if session.conn.info.server_version >= 180000:
        pytest.skip("needs ICU, which PostgreSQL 18 from PyPI lacks")
    session.conn.execute("CREATE COLLATION IF NOT EXISTS public.nocase "
                         "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    query = "SELECT count(DISTINCT x.w COLLATE public.nocase) FROM words x JOIN nation n ON n.n_nationkey = x.id"
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)
    # 'B' and 'b' are one value under it: fewer than by bytes, so pushing would show
    assert rows_in(session, "heap", query)[0][0] < rows_in(session, "heap", query.replace(" COLLATE public.nocase", ""))[0][0]
    session.conn.execute("SET search_path = lake")
    assert not plan_of(session, query).splitlines()[0].startswith("Custom Scan (DuckLake Query)")


def test_duckdb_lowers_every_code_point_as_postgres(tpch):
    """What `collation_lowers_as_duckdb` relies on, checked against this machine's glibc:
    DuckDB's lower() of each code point is Postgres' under the database's collation
    (C.UTF-8) and under en_US.UTF-8."""
    query = "SELECT c, lower(chr(c){c}) FROM generate_series(1, 1114111) t(c) WHERE c NOT BETWEEN 55296 AND 57343 ORDER BY c"
    duck = tpch.ref.con.execute(query.replace("chr(c)", "chr(c::INTEGER)").format(c="")).fetchall()
    for collation in ["", " COLLATE public.linguistic"]:
        ours = tpch.rows(query.format(c=collation))
        assert len(ours) == len(duck) == 1114111 - 2048
        assert [row for row, theirs in zip(ours, duck) if row != theirs] == []


def test_text_ordering_under_the_builtin_code_point_collation_runs_in_duckdb(words, session):
    if session.conn.info.server_version < 170000:
        pytest.skip("the builtin collation provider came with PostgreSQL 17")
    query = 'SELECT DISTINCT w COLLATE pg_c_utf8 FROM words ORDER BY 1 NULLS FIRST'
    assert rows_in(session, "heap", query) == rows_in(session, "lake", query)
    assert plan_of(session, query).splitlines()[0].startswith("Custom Scan (DuckLake Query)")


@pytest.mark.parametrize("query", [
    # DuckDB keeps + - * of 18-digit decimals in 64 bits and raises past them; Postgres does
    # not (past 38 digits both DuckDB forms raise: z * z * z would)
    "SELECT w.id, (w.x + w.x)::text, (w.x - w.y)::text, (w.y + w.z)::text, (- w.x * w.z)::text, (w.z * w.z * 2.5)::text "
    "FROM wide w JOIN nation n ON n.n_nationkey = w.id ORDER BY 1",
    # sums of products: rows that fit in 64 bits and rows that do not, FILTER, no row, NULL rows only
    "SELECT sum(x * z)::text, sum(z * z * 1.5)::text, sum(x * z - z * z)::text, sum(x + y)::text, avg(x * z)::text FROM wide",
    "SELECT sum(x * z) FILTER (WHERE id > 1), sum(z * z) FILTER (WHERE id < 3), sum(z * z) FILTER (WHERE id = 1), "
    "sum(x * z) FILTER (WHERE id = 9), sum(x * z) FILTER (WHERE id = 4) FROM wide",
    "SELECT w.id % 2, sum(w.x * w.z)::text, sum(w.z * 2.5 * w.z)::text FROM wide w JOIN nation n ON n.n_nationkey = w.id "
    "GROUP BY 1 ORDER BY 1",
    # integer constants bound the guards by their own values: up to the 64-bit limits,
    # negative, zero, and past what a 64-bit product holds with the 18-digit columns
    "SELECT sum(z * 1000)::text, sum(x * 3 - z * 2)::text, sum(z * 9223372036854775807)::text, "
    "sum(z * -9223372036854775808)::text, sum(y * 0)::text, sum(x * 100000)::text, sum(z * 4611686018427387904)::text "
    "FROM wide",
    "SELECT w.id, (sum(w.x * w.z) OVER ())::text, (sum(w.z * w.z) OVER (ORDER BY w.id))::text FROM wide w "
    "JOIN nation n ON n.n_nationkey = w.id ORDER BY 1",
    # near-cancelling 18-digit operands: the 64-bit form's bound is of magnitudes, so
    # (a - b) * c and a + d, whose operands DuckDB rescales, take the 128-bit form
    "SELECT sum((a - b) * c)::text, sum(c + d)::text, sum(a * 1 - b)::text, sum((b - a) * (c - a))::text FROM cancel",
])
def test_wide_decimals_match_postgres_pushed(wide, session, query):
    session.conn.execute("SET search_path = lake")
    assert "DuckLake Query" in plan_of(session, query)
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query", [
    # columns of three widths, negative and zero values, products, sums over a window,
    # a numeric(p,s) cast rounding, NULLs; each output read as a DECIMAL, not as text
    "SELECT w.id, w.x, w.z, w.y, w.x * w.z, - w.z, w.z * 0.001, sum(w.z) OVER (), w.y::numeric(20,1), "
    "CASE WHEN w.id > 2 THEN w.z END FROM wide w JOIN nation n ON n.n_nationkey = w.id ORDER BY 1",
    "SELECT w.id % 2, sum(w.x), sum(w.x * w.z), min(w.z), max(w.y) FROM wide w JOIN nation n ON n.n_nationkey = w.id "
    "GROUP BY 1 ORDER BY 1",
    # a DECIMAL(38) sum past 38 digits (DuckDB checks only its 128-bit range): every digit
    "SELECT sum(v), sum(v) FILTER (WHERE i < 11), max(v) FROM huge",
    # top-N with the numeric output among the sort keys (TPC-H 2's shape)
    "SELECT w.z, w.id FROM wide w JOIN nation n ON n.n_nationkey = w.id ORDER BY w.z DESC, w.id LIMIT 3",
])
def test_numeric_outputs_keep_postgres_display_scale(wide, session, query):
    """A numeric output travels as DuckDB's DECIMAL and is read with Postgres' numeric
    input at its scale: the same digits and display scale as over heap tables."""
    as_text = lambda rows: [tuple(None if v is None else str(v) for v in row) for row in rows]  # noqa: E731
    session.conn.execute("SET search_path = lake")
    duckdb_query = next(line for line in plan_of(session, query).splitlines() if "DuckDB Query:" in line)
    assert "VARCHAR" not in duckdb_query, duckdb_query
    assert as_text(rows_in(session, "lake", query)) == as_text(rows_in(session, "heap", query))


@pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
def test_comparisons_wider_than_38_digits_match_postgres(wide, session, op):
    """Operands whose common DECIMAL would pass 38 digits: 37 and 31 integer digits
    against scale 12 (beyond 10^k the wider operand's sign decides, below it both fit),
    the wider one on either side, equal values, NULLs on either side (a wide operand
    beyond 10^k against NULL is NULL, not its sign)."""
    small = "(CASE WHEN w.id = 2 THEN 1.000000000000 WHEN w.id = 1 THEN NULL ELSE w.z * 0.0001000000 END)"
    query = (f"SELECT w.id, w.y * w.y * 1.0 {op} {small}, - w.y * w.y * 1.0 {op} {small}, "
             f"{small} {op} w.y * w.y * 1.0, w.x * 100000000000000.00 {op} w.z * 0.0001000000 "
             "FROM wide w JOIN nation n ON n.n_nationkey = w.id ORDER BY 1")
    session.conn.execute("SET search_path = lake")
    duckdb_query = next(line for line in plan_of(session, query).splitlines() if "DuckDB Query:" in line)
    assert duckdb_query.count(">= CAST('10000000000000' AS DECIMAL(14,0))") == 4, duckdb_query
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


def test_sums_of_widened_products_add_64_bit_values(wide, session):
    """The 64-bit product is summed where bounds of its columns (which the lake's
    statistics may prove), else its bound in DOUBLE, show it cannot overflow, the
    128-bit one only for the other rows."""
    session.conn.execute("SET search_path = lake")
    plan = plan_of(session, "SELECT sum(x * z) FROM wide")
    assert ('sum(CASE WHEN ((CAST("t1"."x" AS DECIMAL(18,2)) BETWEEN -49999949999 AND 49999949999 '
            'AND CAST("t1"."z" AS DECIMAL(15,2)) BETWEEN -1000 AND 1000) OR ') in plan, plan
    assert 'OR ((abs(CAST(CAST("t1"."x" AS DECIMAL(18,2)) AS DOUBLE)) * abs(' in plan, plan
    # The 128-bit product where the guard fails: its negation written out (a guard
    # shared by both CASEs would be computed once beneath them, before DuckDB's
    # statistics could fold it).
    assert ('sum(CASE WHEN ((CAST("t1"."x" AS DECIMAL(18,2)) < -49999949999 OR CAST("t1"."x" AS DECIMAL(18,2)) '
            '> 49999949999 OR CAST("t1"."z" AS DECIMAL(15,2)) < -1000 OR CAST("t1"."z" AS DECIMAL(15,2)) > 1000) AND ') in plan, plan
    assert 'AS DOUBLE))) >= 5e13)) THEN (CAST(CAST("t1"."x" AS DECIMAL(18,2)) AS DECIMAL(38,2)) * ' in plan, plan
    assert "THEN NULL ELSE" not in plan, plan


@pytest.mark.parametrize("query", [
    # grouping sets: rolled-up keys are NULL, GROUPING() has Postgres' bits and type,
    # repeated sets give their rows again, GROUP BY DISTINCT drops the repeats
    "SELECT k, s, count(*), sum(a), GROUPING(k, s), GROUPING(s) FROM edge GROUP BY ROLLUP (k, s) "
    "ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 5",
    "SELECT k, b, count(*) FROM edge GROUP BY CUBE (k, b) HAVING count(*) > 0 ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 3",
    "SELECT k, count(*) FROM edge GROUP BY GROUPING SETS ((k), (k), ()) ORDER BY 1 NULLS FIRST, 2",
    "SELECT k, b, count(*) FROM edge GROUP BY DISTINCT ROLLUP (k, b), ROLLUP (k) ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 3",
    "SELECT e.k, n.n_regionkey, sum(e.d)::text FROM edge e JOIN nation n ON n.n_nationkey = e.id "
    "GROUP BY GROUPING SETS ((e.k, n.n_regionkey), (n.n_regionkey)) ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 3",
    "SELECT k, GROUPING(k) FROM edge GROUP BY k ORDER BY 1 NULLS FIRST",
    # LATERAL sub-selects: per row, with LIMIT, over no row (count 0, LEFT JOIN's NULLs)
    "SELECT e.id, x.n_name FROM edge e, LATERAL (SELECT n_name FROM nation n WHERE n.n_nationkey >= e.id "
    "ORDER BY n.n_nationkey LIMIT 2) x ORDER BY 1, 2",
    "SELECT e.id, x.c, x.m FROM edge e LEFT JOIN LATERAL (SELECT count(*) AS c, max(f.a) AS m FROM edge f "
    "WHERE f.k = e.id) x ON true ORDER BY 1",
    "SELECT e.id, x.id FROM edge e LEFT JOIN LATERAL (SELECT f.id FROM edge f WHERE f.b > e.b) x ON x.id <> 2 "
    "ORDER BY 1, 2 NULLS FIRST",
    "SELECT e.id, y.s FROM edge e JOIN edge f ON f.id = e.id, LATERAL (SELECT e.a + f.b AS s) y ORDER BY 1",
])
def test_grouping_sets_and_lateral_match_postgres_pushed(edge, session, query):
    session.conn.execute("SET search_path = lake")
    plan = plan_of(session, query)
    assert "DuckLake Query" in plan and "Foreign Scan" not in plan, plan
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query, pushed", [
    ("SELECT id FROM edge UNION SELECT k FROM edge ORDER BY 1 NULLS FIRST", True),
    ("SELECT a FROM edge UNION ALL SELECT b FROM edge UNION ALL SELECT k FROM edge ORDER BY 1 NULLS FIRST", True),
    ("SELECT a FROM edge INTERSECT ALL SELECT -b * 1 FROM edge ORDER BY 1", True),
    ("SELECT k FROM edge EXCEPT SELECT id FROM edge ORDER BY 1 NULLS LAST", True),
    ("SELECT count(*), count(DISTINCT x) FROM (SELECT id AS x FROM edge UNION ALL SELECT n_nationkey FROM nation) u", True),
    # text: deduplicated by equality (deterministic collation), sorted by code point
    ("SELECT s FROM edge UNION SELECT n_name FROM nation WHERE n_nationkey < 3 ORDER BY 1", True),
    # numerics of different scales in the two branches: each row keeps its own (its scale
    # travels with it under UNION ALL); UNION compares them, which of equal ones it keeps is not defined
    ("SELECT d FROM edge UNION ALL SELECT 1.5 FROM edge ORDER BY 1", True),
    ("SELECT d FROM edge UNION SELECT 1.5 FROM edge ORDER BY 1", False),
    ("SELECT sum(s.v)::text FROM (SELECT DISTINCT CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge) s", False),
    # UNION ALL: no column at all; a NULL first branch; scales through LATERAL, a
    # correlated sub-select, a WITH query; equal values of different scales
    ("SELECT count(*) FROM (SELECT FROM edge UNION ALL SELECT FROM edge WHERE id > 2) u", True),
    ("SELECT v::text FROM (SELECT NULL AS v FROM edge WHERE id = 1 UNION ALL SELECT d FROM edge UNION ALL "
     "SELECT 1.5 FROM edge WHERE id = 2) u ORDER BY 1 NULLS FIRST", True),
    ("SELECT e.id, l.v::text FROM edge e, LATERAL (SELECT e.d * 2 AS v UNION ALL SELECT CASE WHEN e.a > 0 THEN 1.5 "
     "ELSE 0 END) l ORDER BY 1, 2", None),
    ("SELECT id, (SELECT sum(v) FROM (SELECT e.d AS v UNION ALL SELECT 1.5) x)::text FROM edge e ORDER BY 1", None),
    ("WITH u AS (SELECT CASE WHEN a > 0 THEN d ELSE 0 END AS v FROM edge UNION ALL SELECT 1.5 FROM edge WHERE id = 1) "
     "SELECT (v * 2)::text FROM u ORDER BY 1", True),
    ("SELECT e.id, u.v::text FROM edge e JOIN (SELECT d * 1.0 AS v FROM edge UNION ALL SELECT 0.0 FROM edge WHERE id = 1) u "
     "ON u.v = e.d ORDER BY 1, 2", True),
    ("SELECT count(DISTINCT v) FROM (SELECT d AS v FROM edge UNION ALL SELECT d * 1.0 FROM edge) u", True),
    ("SELECT d FROM edge UNION ALL SELECT 1.5 FROM edge WHERE id < 3 ORDER BY 1 DESC NULLS LAST LIMIT 3", True),
    # Postgres converts a branch's integers above it, to the column's type: not pushed
    ("SELECT u.v::text FROM (SELECT a AS v FROM edge UNION ALL SELECT d FROM edge) u ORDER BY 1", False),
    ("SELECT a FROM edge UNION ALL SELECT a::int8 FROM edge ORDER BY 1", False),
    # more than 38 digits for both branches' values: not pushed
    ("SELECT u.v::text FROM (SELECT sum(a::int8) AS v FROM edge UNION ALL SELECT d FROM edge) u ORDER BY 1", False),
    # UNION ALL under UNION, and UNION under UNION ALL, of varying scales: not pushed
    ("SELECT d FROM edge UNION ALL SELECT 1.5 FROM edge UNION SELECT 0.00 FROM edge ORDER BY 1", False),
    # (no equal values of different scales: their order would not be defined)
    ("SELECT d FROM edge WHERE id <> 3 UNION ALL (SELECT d * d FROM edge UNION SELECT 1.5 FROM edge) ORDER BY 1", False),
])
def test_set_operations_match_postgres(edge, session, query, pushed):
    """`pushed` None: either way, the same rows."""
    session.conn.execute("SET search_path = lake")
    if pushed is not None:
        assert ("DuckLake Query" in plan_of(session, query)) == pushed, plan_of(session, query)
    lake_rows, heap_rows = rows_in(session, "lake", query), rows_in(session, "heap", query)
    assert [tuple(map(str, r)) for r in lake_rows] == [tuple(map(str, r)) for r in heap_rows]


@pytest.mark.parametrize("query, pushed", [
    # top-N per group
    ("SELECT * FROM (SELECT o_custkey, o_orderkey, row_number() OVER (PARTITION BY o_custkey "
     "ORDER BY o_totalprice DESC, o_orderkey) AS rn FROM orders) t WHERE rn <= 2 ORDER BY 1, 3", True),
    ("SELECT n_regionkey, n_nationkey, rank() OVER (PARTITION BY n_regionkey ORDER BY n_nationkey DESC), "
     "dense_rank() OVER (ORDER BY n_regionkey), count(*) OVER (PARTITION BY n_regionkey), "
     "sum(n_nationkey) OVER (PARTITION BY n_regionkey ORDER BY n_nationkey) FROM nation ORDER BY 2", True),
    ("SELECT id, a, lag(a) OVER (ORDER BY id), lead(a, 2) OVER (ORDER BY id), first_value(d) OVER (ORDER BY id), "
     "last_value(k) OVER (ORDER BY id ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) FROM edge ORDER BY id", True),
    ("SELECT id, (sum(d) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))::text, "
     "(avg(b) OVER (PARTITION BY k IS NULL))::text, min(a) FILTER (WHERE a > -10) OVER () FROM edge ORDER BY id", True),
    # aggregates inside a window aggregate are plain aggregates of the group
    ("SELECT k, count(*), sum(count(*)) OVER (), sum(sum(a)) OVER (ORDER BY k) FROM edge GROUP BY k ORDER BY k NULLS FIRST", True),
    # a varying scale over a window: the scale is the window's too
    ("SELECT k, (sum(CASE WHEN k = 3 THEN 1.5 ELSE 2.25 END) OVER ())::text FROM edge GROUP BY k ORDER BY k NULLS FIRST", True),
    # another row's value of a varying scale would print at this row's scale: not pushed
    ("SELECT k, (lag(avg(d)) OVER (ORDER BY k))::text FROM edge GROUP BY k ORDER BY k NULLS FIRST", False),
    # ROWS frames with constant offsets count rows alike
    ("SELECT id, sum(a) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW), "
     "count(k) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING), "
     "(avg(d) OVER (ORDER BY id ROWS BETWEEN 1 FOLLOWING AND 3 FOLLOWING))::text, "
     "min(a) OVER (ORDER BY id ROWS BETWEEN 0 PRECEDING AND 0 FOLLOWING) FROM edge ORDER BY id", True),
    ("SELECT id, max(a) OVER (ORDER BY id ROWS BETWEEN 3 PRECEDING AND 2 PRECEDING) FROM edge ORDER BY id", True),
    # RANGE offsets add to the sort key, a parameter is not a constant: with Postgres
    ("SELECT id, sum(a) OVER (ORDER BY id RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) FROM edge ORDER BY id", False),
])
def test_window_functions_match_postgres(edge, session, query, pushed):
    session.conn.execute("SET search_path = lake")
    assert ("DuckLake Query" in plan_of(session, query)) == pushed, plan_of(session, query)
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


@pytest.mark.parametrize("query, message", [
    ("SELECT e.a / (e.b - e.b) FROM edge e JOIN nation n ON n.n_nationkey = e.id", "division by zero"),
    ("SELECT abs(e.a) FROM edge e JOIN nation n ON n.n_nationkey = e.id", "out of range|Overflow"),
    ("SELECT sum(e.a * 2) FROM edge e JOIN nation n ON n.n_nationkey = e.id WHERE e.id = 3", "out of range|Overflow"),
    ("SELECT e.d / (e.b - e.b) FROM edge e JOIN nation n ON n.n_nationkey = e.id WHERE e.d IS NOT NULL", "division by zero"),
    # the 64-bit form of a widened product raises it, so does the 128-bit one
    ("SELECT sum(e.d * 99999999999999.99 * (e.a / (e.b - e.b))::numeric) FROM edge e", "division by zero"),
])
def test_errors_where_postgres_errors(edge, session, query, message):
    """The same error, with Postgres' SQLSTATE, whether DuckDB or Postgres computes it."""
    import re
    sqlstates = []
    for schema in ("heap", "lake"):
        with pytest.raises(psycopg.Error) as raised:
            rows_in(session, schema, query)
        assert re.search(message, str(raised.value), re.IGNORECASE), (schema, str(raised.value))
        sqlstates.append(raised.value.sqlstate)
    assert sqlstates[0] == sqlstates[1], sqlstates


TIMES = """
CREATE TABLE analytics.main.times AS SELECT * FROM (VALUES
  (1, TIMESTAMP '2024-01-03 10:11:12.345678', 'e' || chr(769)),
  (2, 'infinity'::TIMESTAMP, chr(128077) || chr(127997)),
  (3, '-infinity'::TIMESTAMP, ''),
  (4, TIMESTAMP '0000-06-15 01:02:03', NULL),
  (5, NULL, 'abc'),
  (6, TIMESTAMP '2023-12-31 23:59:59.999999', chr(223))) t(id, ts, s)
"""


@pytest.mark.parametrize("query", [
    # as text: infinities and BC years have no Python datetime
    "SELECT t.id, date_trunc('week', t.ts)::text, date_trunc('QUARTER', t.ts)::text, date_trunc('second', t.ts)::text, "
    "date_trunc('year', t.ts)::text, date_trunc('hour', t.ts)::text FROM times t "
    "JOIN nation n ON n.n_nationkey = t.id ORDER BY 1",
    "SELECT date_trunc('month', ts)::text AS m, count(*) FROM times GROUP BY date_trunc('month', ts) "
    "ORDER BY date_trunc('month', ts) NULLS FIRST",
    "SELECT t.id, length(t.s), char_length(t.s), character_length(t.s) FROM times t "
    "JOIN nation n ON n.n_nationkey = t.id ORDER BY 1",
    "SELECT sum(length(s)), max(date_trunc('day', ts)) FROM times WHERE ts < 'infinity'",
    # integral fields; infinities give NULL in both (but the year: see below); no BC row
    "SELECT t.id, extract(hour FROM t.ts), extract(minute FROM t.ts), extract(dow FROM t.ts), "
    "extract(isodow FROM t.ts), extract(doy FROM t.ts), extract(week FROM t.ts), extract(QUARTER FROM t.ts), "
    "extract(day FROM t.ts::date), extract(dow FROM t.ts::date) FROM times t JOIN nation n ON n.n_nationkey = t.id "
    "WHERE t.id <> 4 ORDER BY 1",
    "SELECT extract(year FROM ts), count(*) FROM times WHERE id IN (1, 6) GROUP BY 1 ORDER BY 1",
])
def test_date_trunc_and_length_match_postgres_pushed(tpch, session, query):
    """Edge values: infinities, a BC timestamp, the last microsecond of a year, combining
    characters and an emoji with a skin tone (two code points each), NULLs."""
    if not session.rows("SELECT 1 FROM pg_tables WHERE schemaname = 'heap' AND tablename = 'times'"):
        tpch.ref.execute(TIMES)
        tpch.import_schema("times")
        tpch.conn.execute("CREATE TABLE heap.times AS SELECT * FROM lake.times")
    # EXPLAIN VERBOSE also where Postgres computes over DuckDB's outputs (extract of
    # ::date: its field once crashed the backend)
    plan = plan_of(session, query.replace("FROM times", "FROM lake.times").replace("JOIN nation", "JOIN lake.nation"))
    duckdb_query = next(line for line in plan.splitlines() if "DuckDB Query:" in line)
    for function in ("date_trunc(", "length(", "extract("):
        assert (function in query) == (function in duckdb_query), plan
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


def test_the_year_of_an_infinite_timestamp_is_refused_not_wrong(tpch, session):
    """Postgres' extract(year) of infinity is Infinity, a numeric no DuckDB decimal holds:
    the pushed query raises an error naming the setting (DuckDB alone would say NULL)."""
    test_date_trunc_and_length_match_postgres_pushed(tpch, session, "SELECT 1 FROM times t JOIN nation n ON false")
    query = ("SELECT t.id, extract(year FROM t.ts) FROM times t JOIN nation n ON n.n_nationkey = t.id "
             "WHERE t.id <> 4 ORDER BY 1")
    with pytest.raises(psycopg.Error, match="extract.year. of an infinite date or timestamp is not pushed"):
        rows_in(session, "lake", query)
    session.conn.execute("SET ducklake.query_pushdown = off")
    assert rows_in(session, "lake", query) == rows_in(session, "heap", query)


def test_left_and_right_of_the_minimum_count_are_refused(edge, session):
    """Postgres cannot negate a count of -2147483648; what it returns then depends on its
    version, so the pushed query raises an error naming the setting instead."""
    for function in ("left", "right"):
        query = (f"SELECT {function}(e.s, e.b * 0 - 2147483647 - 1) FROM lake.edge e "
                 "JOIN lake.nation n ON n.n_nationkey = e.id WHERE e.id = 1")
        with pytest.raises(psycopg.Error, match=f"{function}.. with a count of -2147483648 is not pushed"):
            session.rows(query)


def test_numeric_division_and_avg_match_postgres_on_random_values(tpch, session):
    """numeric_div's scale depends on the operands' leading digits: random operands of
    several magnitudes and scales, divided and averaged in DuckDB, print exactly as
    Postgres prints them (values compared as text, so scales count)."""
    import random
    rng = random.Random(19)
    values = []
    for i in range(400):
        def number():
            if rng.random() < 0.05:
                return "0"
            # 0.01 to 10^4: quotients stay within the 26 decimals a pushed one keeps
            magnitude = rng.randint(-2, 4)
            sign = rng.choice(["", "-"])
            digits = f"{max(rng.random() * 10 ** magnitude, 0.01):.4f}"
            return sign + digits
        values.append(f"({i}, {i % 7}, CAST({number()} AS DECIMAL(12,4)), CAST({number()} AS DECIMAL(12,4)), "
                      f"{rng.randint(-10**6, 10**6)}, CAST({number()} AS DECIMAL(12,2)))")
    tpch.ref.execute("CREATE TABLE analytics.main.rnd AS SELECT * FROM (VALUES " + ", ".join(values) +
                     ") t(id, g, x, y, i, z)")
    tpch.import_schema("rnd")
    tpch.conn.execute("CREATE TABLE heap.rnd AS SELECT * FROM lake.rnd")
    queries = [
        "SELECT r.id, (r.x / r.y)::text, (r.x / r.i)::text, (r.i / r.z)::text, (r.z / 3)::text "
        "FROM rnd r JOIN rnd s ON s.id = r.id WHERE r.y <> 0 AND r.i <> 0 AND r.z <> 0 ORDER BY r.id",
        "SELECT g, avg(x)::text, avg(i)::text, avg(z)::text, count(*) FROM rnd GROUP BY g ORDER BY g",
        "SELECT r.id FROM rnd r WHERE r.x > (SELECT avg(s.x) FROM rnd s WHERE s.g = r.g) ORDER BY r.id",
        # rounding at numeric_div's scale: z / 3 * 9 equals z * 3 only where z / 3 is exact
        "SELECT r.id FROM rnd r WHERE r.z * 3 = (SELECT r.z / 3 * 9 FROM rnd s WHERE s.id = r.id) ORDER BY r.id",
    ]
    for query in queries:
        session.conn.execute("SET search_path = lake")
        assert "DuckLake Query" in plan_of(session, query), query
        lake_rows = rows_in(session, "lake", query)
        assert lake_rows == rows_in(session, "heap", query), query
        assert len(lake_rows) > 0



def test_explain_verbose_shows_the_duckdb_query(session, tpch):
    session.conn.execute("SET search_path = lake")
    plan = plan_of(session, tpch.queries[3])
    assert plan.splitlines()[0].strip().startswith("Custom Scan (DuckLake Query)"), plan
    line = next(l for l in plan.splitlines() if "DuckDB Query:" in l)
    assert "JOIN" in line or "FROM" in line
    assert "ORDER BY" in line and "LIMIT 10" in line
    # text ordering under a linguistic collation: Postgres sorts DuckDB's result
    plan = plan_of(session, "SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey "
                            "ORDER BY n_name COLLATE public.linguistic")
    assert plan.splitlines()[0].strip().startswith("Sort"), plan
    assert "Custom Scan (DuckLake Query)" in plan


def test_setting_turns_it_off(session, tpch):
    session.conn.execute("SET search_path = lake")
    session.conn.execute("SET ducklake.query_pushdown = off")
    plan = plan_of(session, tpch.queries[5])
    assert "DuckLake Query" not in plan and "Foreign Scan" in plan


def test_explain_verbose_says_why_a_query_stays_in_postgres(session, tpch):
    """Each foreign scan of a query that could have run whole in DuckDB names the
    reason it did not; plain scans and pushed queries name none."""
    reason = "Not Run Whole In DuckDB: "
    cases = [
        ("SELECT n.n_name, count(*) FROM lake.customer c JOIN bigheap.nation n ON n.n_nationkey = c.c_nationkey "
         "GROUP BY n.n_name", "it reads bigheap.nation, which is neither a lake table nor a plain table small enough"),
        ("SELECT n.n_name FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey FOR SHARE",
         "FOR UPDATE/SHARE"),
        ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 3) "
         "SELECT count(*) FROM lake.nation, r", "WITH RECURSIVE"),
        ("SELECT count(*) FROM lake.nation, generate_series(1, 3) g", "a function in FROM"),
        # found in a sub-select in an expression too
        ("SELECT count(*) FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey "
         "WHERE n.n_nationkey IN (SELECT n_nationkey FROM bigheap.nation)", "it reads bigheap.nation, which is neither"),
        ("SELECT n_name, md5(n_comment) FROM lake.nation ORDER BY 1", None),  # a plain scan: nothing to say
        ("SELECT count(*), max(md5(n_comment)) FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey",
         "an expression, function or clause whose DuckDB result could differ from Postgres'"),
    ]
    for query, expected in cases:
        plan = plan_of(session, query)
        lines = [l.strip() for l in plan.splitlines() if reason in l]
        if expected is None:
            assert lines == [], plan
        else:
            assert lines and all(l.startswith(reason + expected) for l in lines), plan
    # pushed whole: no reason
    assert reason not in plan_of(session, "SELECT count(*) FROM lake.nation n JOIN lake.region r "
                                          "ON r.r_regionkey = n.n_regionkey")
    session.conn.execute("SET ducklake.query_pushdown = off")
    plan = plan_of(session, "SELECT count(*) FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey")
    assert reason + "ducklake.query_pushdown is off" in plan


def test_single_table_scans_keep_their_plan(session):
    plan = plan_of(session, "SELECT n_name FROM lake.nation WHERE n_nationkey < 3 ORDER BY n_nationkey LIMIT 2")
    assert "Foreign Scan on lake.nation" in plan and "DuckLake Query" not in plan


def test_mixed_lake_and_heap_stays_with_postgres(session):
    query = ("SELECT n.n_name, count(*) FROM lake.customer c JOIN bigheap.nation n ON n.n_nationkey = c.c_nationkey "
             "GROUP BY n.n_name ORDER BY n.n_name")
    plan = plan_of(session, query)
    assert "DuckLake Query" not in plan
    assert session.rows(query) == session.rows(query.replace("lake.customer", "heap.customer"))


def test_small_postgres_tables_are_sent_to_duckdb(tpch, session):
    """A small plain table is read into the DuckDB query as its rows, at the statement's
    snapshot: rows another transaction commits later are not in it, rows this
    transaction wrote are, and the user's privileges on it are checked."""
    query = ("SELECT n.n_name, count(*) FROM lake.customer c JOIN heap.nation n ON n.n_nationkey = c.c_nationkey "
             "WHERE n.n_regionkey = 2 GROUP BY n.n_name ORDER BY n.n_name")
    plan = plan_of(session, query)
    assert "Custom Scan (DuckLake Query)" in plan and "Join" not in plan, plan
    assert "and the rows of heap.nation" in plan and "Seq Scan" not in plan, plan
    expected = session.rows(query.replace("lake.customer", "heap.customer"))
    assert session.rows(query) == expected and len(expected) == 5
    session.conn.execute("BEGIN")
    session.conn.execute("UPDATE heap.nation SET n_regionkey = 2 WHERE n_nationkey = 0")
    moved = session.rows(query)
    assert moved == session.rows(query.replace("lake.customer", "heap.customer")) and len(moved) == 6
    session.conn.execute("ROLLBACK")
    assert session.rows(query) == expected
    # a prepared statement reads the table again at each execution
    session.conn.execute("SET plan_cache_mode = force_generic_plan")
    session.conn.execute(f"PREPARE dims AS {query}")
    assert session.rows("EXECUTE dims") == expected
    tpch.conn.execute("INSERT INTO heap.nation VALUES (99, 'NEW', 2, 'new')")
    try:
        assert session.rows("EXECUTE dims") == expected  # no customer in nation 99
        session.conn.execute("CREATE TEMP TABLE few_nations AS SELECT n_nationkey FROM heap.nation WHERE n_nationkey < 3")
        two = ("SELECT count(*) FROM lake.customer c JOIN few_nations f ON f.n_nationkey = c.c_nationkey")
        assert "DuckLake Query" in plan_of(session, two)
        assert session.rows(two) == session.rows(two.replace("lake.customer", "heap.customer"))
    finally:
        tpch.conn.execute("DELETE FROM heap.nation WHERE n_nationkey = 99")


def test_small_tables_read_for_no_column_and_floats_exactly(tpch, session):
    """A small table none of whose columns is read still gives its rows; float values
    keep their last bit and the sign of zero."""
    for query in ["SELECT count(*) FROM lake.region r WHERE EXISTS (SELECT 1 FROM heap.nation)",
                  "SELECT count(*) FROM lake.region r, heap.nation"]:
        session.conn.execute("SET search_path = lake")
        assert "DuckLake Query" in plan_of(session, query), query
        assert session.rows(query) == session.rows(query.replace("lake.region", "heap.region")), query
    session.conn.execute("CREATE TEMP TABLE floats (k int, f float8, g float4)")
    session.conn.execute("INSERT INTO floats VALUES (0, '-0', '-0'), (1, 0.1, 0.1), (2, 1.0000000000000002, 16777217), "
                         "(3, 'NaN', 'Infinity'), (4, 123456789.12345679, 3.4028235e38), (5, NULL, NULL)")
    query = "SELECT r.r_regionkey, f.f::text, f.g::text FROM lake.region r JOIN floats f ON f.k = r.r_regionkey ORDER BY 1"
    assert "DuckLake Query" in plan_of(session, query)
    assert session.rows(query) == session.rows(query.replace("lake.region", "heap.region"))


def test_small_tables_behind_views_are_read_by_postgres(tpch, pg):
    """Through a view, Postgres checks the table's privileges as the view's owner: the
    user may read the view but not the table, so the table is not sent."""
    role = lake_reader(tpch, "view_reader")
    tpch.conn.execute("CREATE VIEW public.nation_names AS SELECT n_nationkey, n_name FROM heap.nation")
    tpch.conn.execute(f"GRANT SELECT ON public.nation_names TO {role}")
    query = ("SELECT v.n_name, count(*) FROM lake.customer c JOIN public.nation_names v ON v.n_nationkey = c.c_nationkey "
             "GROUP BY v.n_name ORDER BY 1")
    try:
        with pg.connect(tpch.dbname, user=role) as conn:
            assert conn.execute(query).fetchall() == tpch.rows(query.replace("lake.customer", "heap.customer"))
    finally:
        tpch.conn.execute("DROP VIEW public.nation_names")


@pytest.mark.parametrize("query, message", [
    # NaN fits a numeric(p,s) column in Postgres, not a DuckDB DECIMAL
    ("SELECT count(*) FROM lake.nation n JOIN odd o ON o.k = n.n_nationkey WHERE o.x > 0",
     "a value of column x of .*odd cannot be sent to DuckDB"),
])
def test_values_duckdb_cannot_hold_raise_naming_the_column(tpch, session, query, message):
    session.conn.execute("CREATE TEMP TABLE odd (k int, x numeric(10,2))")
    session.conn.execute("INSERT INTO odd VALUES (1, 1.5), (2, 'NaN')")
    assert "DuckLake Query" in plan_of(session, query)
    with pytest.raises(psycopg.errors.FeatureNotSupported, match=message):
        session.rows(query)


MIXED = [
    # TPC-H Q5 with nation and region as Postgres tables
    """SELECT n.n_name, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue
       FROM {s}.customer c, {s}.orders o, {s}.lineitem l, {s}.supplier su, {d}.nation n, {d}.region r
       WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND l.l_suppkey = su.s_suppkey
         AND c.c_nationkey = su.s_nationkey AND su.s_nationkey = n.n_nationkey AND n.n_regionkey = r.r_regionkey
         AND r.r_name = 'ASIA' AND o.o_orderdate >= DATE '1994-01-01' AND o.o_orderdate < DATE '1995-01-01'
       GROUP BY n.n_name ORDER BY revenue DESC""",
    # a condition Postgres derives for the lake part from the heap side (n_nationkey = 3)
    """SELECT n.n_name, count(*), sum(o.o_totalprice) FROM {d}.nation n, {s}.customer c, {s}.orders o
       WHERE n.n_nationkey = c.c_nationkey AND c.c_custkey = o.o_custkey AND n.n_nationkey = 3
       GROUP BY n.n_name""",
    # conditions on both sides, one mixing them, outer join to the heap table above the lake join
    """SELECT r.r_name, count(c.c_custkey) FROM {s}.customer c JOIN {s}.nation n ON n.n_nationkey = c.c_nationkey
       RIGHT JOIN {d}.region r ON r.r_regionkey = n.n_regionkey AND c.c_acctbal > r.r_regionkey * 1000
       GROUP BY r.r_name ORDER BY r.r_name""",
    """SELECT n.n_name, c.c_name, o.o_orderkey FROM {d}.nation n, {s}.customer c, {s}.orders o
       WHERE n.n_nationkey = c.c_nationkey AND c.c_custkey = o.o_custkey AND o.o_totalprice > 400000
         AND c.c_acctbal > n.n_nationkey * 100 ORDER BY o.o_orderkey""",
    # the same with JOIN ... ON (inner joins at the top of the FROM list)
    """SELECT n.n_name, c.c_name, o.o_orderkey FROM {d}.nation n JOIN {s}.customer c ON n.n_nationkey = c.c_nationkey
       JOIN {s}.orders o ON c.c_custkey = o.o_custkey AND o.o_totalprice > 400000
       WHERE c.c_acctbal > n.n_nationkey * 100 ORDER BY o.o_orderkey""",
    # grouped by lake columns (PostgreSQL 18 keeps the GROUP BY expressions apart)
    """SELECT c.c_mktsegment, n.n_name, count(*), sum(o.o_totalprice) FROM {d}.nation n
       JOIN {s}.customer c ON n.n_nationkey = c.c_nationkey JOIN {s}.orders o ON c.c_custkey = o.o_custkey
       GROUP BY c.c_mktsegment, n.n_name HAVING count(*) > 100 ORDER BY 1, 2""",
    # columns read through a join's alias (Postgres resolves them to the tables' columns)
    """SELECT j.c_name, count(*) FROM ({s}.customer c JOIN {s}.orders o ON c.c_custkey = o.o_custkey) AS j
       JOIN {d}.nation n ON n.n_nationkey = j.c_nationkey GROUP BY j.c_name ORDER BY 2 DESC, 1 LIMIT 5""",
]


@pytest.mark.parametrize("number", range(len(MIXED)))
@pytest.mark.parametrize("dimensions", ["heap", "bigheap"])
def test_lake_joins_of_mixed_queries_run_in_duckdb(session, number, dimensions):
    """Small Postgres tables are sent to DuckDB with the query, which runs whole there.
    With larger ones, the lake tables inner-joined at the top of the query run as one
    DuckDB query and Postgres joins the rest. Answers equal the all-heap query's."""
    query = MIXED[number]
    lake_query, heap_query = query.format(s="lake", d=dimensions), query.format(s="heap", d=dimensions)
    plan = plan_of(session, lake_query)
    if dimensions == "heap":
        assert plan.splitlines()[0].startswith(("Custom Scan (DuckLake Query)", "Sort", "Limit")), plan
        assert "Seq Scan" not in plan and "Foreign Scan" not in plan, plan
    else:
        pushed = "DuckLake Query" in plan
        assert pushed == (number != 2), plan  # 2: its lake join is under an outer join
    assert session.rows(lake_query) == session.rows(heap_query)


def test_mixed_query_parameters_and_settings(session):
    session.conn.execute("PREPARE m(int) AS SELECT count(*), sum(o.o_totalprice) FROM heap.nation n, lake.customer c, "
                         "lake.orders o WHERE n.n_nationkey = c.c_nationkey AND c.c_custkey = o.o_custkey AND o.o_shippriority = 0 "
                         "AND c.c_nationkey < $1")
    session.conn.execute("PREPARE h(int) AS SELECT count(*), sum(o.o_totalprice) FROM heap.nation n, heap.customer c, "
                         "heap.orders o WHERE n.n_nationkey = c.c_nationkey AND c.c_custkey = o.o_custkey AND o.o_shippriority = 0 "
                         "AND c.c_nationkey < $1")
    session.conn.execute("SET plan_cache_mode = force_generic_plan")
    assert "DuckLake Query" in plan_of(session, "EXECUTE m(3)")
    for value in [0, 3, 25]:
        assert session.rows(f"EXECUTE m({value})") == session.rows(f"EXECUTE h({value})")
    session.conn.execute("SET ducklake.query_pushdown = off")
    assert "DuckLake Query" not in plan_of(session, "SELECT count(*) FROM heap.nation n, lake.customer c, lake.orders o "
                                                    "WHERE n.n_nationkey = c.c_nationkey AND c.c_custkey = o.o_custkey")


def test_parameters_of_prepared_statements(session):
    session.conn.execute("PREPARE q(int) AS SELECT count(*) FROM lake.orders o JOIN lake.customer c "
                         "ON c.c_custkey = o.o_custkey WHERE c.c_nationkey = $1")
    session.conn.execute("PREPARE h(int) AS SELECT count(*) FROM heap.orders o JOIN heap.customer c "
                         "ON c.c_custkey = o.o_custkey WHERE c.c_nationkey = $1")
    session.conn.execute("SET plan_cache_mode = force_generic_plan")
    assert "$1" in plan_of(session, "EXECUTE q(3)")
    for value in [0, 3, 24, 99]:
        assert session.rows(f"EXECUTE q({value})") == session.rows(f"EXECUTE h({value})")


def test_parameters_of_several_types_and_nulls(session):
    """Parameters reach DuckDB as session variables the query text reads (it is then
    bound once, not twice): each type, NULL, one parameter read twice, a sub-select
    reading one, and every execution with new values."""
    query = ("SELECT count(*), sum(o.o_totalprice), max(o.o_orderdate) FROM {s}.orders o JOIN {s}.customer c "
             "ON c.c_custkey = o.o_custkey WHERE c.c_mktsegment = $1 AND o.o_totalprice > $2 "
             "AND o.o_orderdate < $3 AND (c.c_nationkey = $4 OR $4 IS NULL) "
             "AND NOT EXISTS (SELECT 1 FROM {s}.lineitem l WHERE l.l_orderkey = o.o_orderkey AND l.l_quantity > $5)")
    types = "(text, int, date, int, bigint)"  # numeric parameters are not pushed
    session.conn.execute(f"PREPARE lq{types} AS {query.format(s='lake')}")
    session.conn.execute(f"PREPARE hq{types} AS {query.format(s='heap')}")
    session.conn.execute("SET plan_cache_mode = force_generic_plan")
    plan = plan_of(session, "EXECUTE lq('BUILDING', 1000, '1995-01-01', 3, 49)")
    assert "DuckLake Query" in plan and "$5" in plan, plan
    for values in ["'BUILDING', 1000, '1995-01-01', 3, 49", "'AUTOMOBILE', 0, '1998-12-31', NULL, 45",
                   "NULL, 0, '1998-12-31', 1, 40", "'MACHINERY', -2147483648, '1992-06-30', NULL, NULL",
                   "'BUILDING', 1000, '1995-01-01', 3, 49"]:
        assert session.rows(f"EXECUTE lq({values})") == session.rows(f"EXECUTE hq({values})"), values
    analyzed = "\n".join(r[0] for r in session.conn.execute(
        "EXPLAIN (ANALYZE, VERBOSE) EXECUTE lq('BUILDING', 1000, '1995-01-01', 3, 49)").fetchall())
    assert "$5" in analyzed and "getvariable" not in analyzed, analyzed


def test_parameters_of_nested_pushed_queries(session):
    """PL/pgSQL runs a pushed query for each row of another, both reading parameters
    in the same places: the outer query's result is buffered when the inner one runs,
    and each reads its own values."""
    for schema in ("lake", "heap"):
        session.conn.execute(f"""
            CREATE OR REPLACE FUNCTION public.customers_of_region_{schema}(region int) RETURNS bigint
            LANGUAGE plpgsql AS $$
            DECLARE total bigint := 0; r record; c bigint;
            BEGIN
              FOR r IN SELECT n.n_nationkey AS k FROM {schema}.nation n JOIN {schema}.region g
                       ON g.r_regionkey = n.n_regionkey WHERE n.n_regionkey = region ORDER BY 1 LOOP
                SELECT count(*) INTO c FROM {schema}.customer cu JOIN {schema}.nation n2
                  ON n2.n_nationkey = cu.c_nationkey WHERE cu.c_nationkey = r.k AND n2.n_regionkey = region;
                total := total * 1000 + c;
              END LOOP;
              RETURN total;
            END $$""")
    session.conn.execute("SET plan_cache_mode = force_generic_plan")
    for region in (0, 1, 4, 7):
        assert (session.rows(f"SELECT public.customers_of_region_lake({region})")
                == session.rows(f"SELECT public.customers_of_region_heap({region})")), region


def test_time_travel_reads_every_table_at_the_snapshot(edge):
    tpch = edge
    s = tpch.session()
    try:
        query = "SELECT count(*) FROM lake.edge e JOIN lake.edge f ON e.id = f.id"
        before = s.rows("SELECT ducklake.ducklake_latest_snapshot_id('lake.edge')")[0][0]
        count = s.rows(query)[0][0]
        s.conn.execute("INSERT INTO lake.edge VALUES (5, 1, 1, 1.00, 'x', 5)")
        assert s.rows(query)[0][0] == count + 1
        assert "DuckLake Query" in plan_of(s, query)
        s.conn.execute(f"SET ducklake.snapshot_id = '{before}'")
        assert s.rows(query)[0][0] == count
        s.conn.execute("RESET ducklake.snapshot_id")
    finally:
        s.conn.execute("DELETE FROM lake.edge WHERE id = 5")
        s.close()


def test_permissions_are_checked_for_every_table(tpch, pg):
    role = lake_reader(tpch, "pushdown_reader", without="lake.supplier")
    with pg.connect(tpch.dbname, user=role) as conn:
        query = "SELECT count(*) FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey"
        assert conn.execute(query).fetchall() == [(25,)]
        assert "DuckLake Query" in "\n".join(r[0] for r in conn.execute("EXPLAIN " + query).fetchall())
        # with parameters (read from DuckDB variables of the role's own instance)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE per_region(int, text) AS {query} WHERE r.r_regionkey = $1 OR r.r_name = $2")
        assert "DuckLake Query" in "\n".join(
            r[0] for r in conn.execute("EXPLAIN EXECUTE per_region(1, NULL)").fetchall())
        for values, count in [("1, NULL", 5), ("NULL, 'ASIA'", 5), ("0, 'ASIA'", 10), ("7, 'NONE'", 0)]:
            assert conn.execute(f"EXECUTE per_region({values})").fetchall() == [(count,)], values
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="supplier"):
            conn.execute("SELECT count(*) FROM lake.nation n JOIN lake.supplier s ON s.s_nationkey = n.n_nationkey")
    # A mixed query's lake part runs in DuckDB for the role too, and its tables stay checked.
    tpch.conn.execute(f"GRANT USAGE ON SCHEMA heap TO {role}")
    tpch.conn.execute(f"GRANT SELECT ON heap.region TO {role}")
    mixed = ("SELECT r.r_name, count(*) FROM heap.region r, lake.nation n, lake.{t} x "
             "WHERE r.r_regionkey = n.n_regionkey AND x.{k} = n.n_nationkey GROUP BY r.r_name ORDER BY 1")
    readable = mixed.format(t="customer", k="c_nationkey")
    with pg.connect(tpch.dbname, user=role) as conn:
        assert "DuckLake Query" in "\n".join(r[0] for r in conn.execute("EXPLAIN " + readable).fetchall())
        assert conn.execute(readable).fetchall() == tpch.rows(readable.replace("lake.", "heap."))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="supplier"):
            conn.execute(mixed.format(t="supplier", k="s_nationkey"))
    # Small Postgres tables sent to DuckDB with the query: privileges checked, columns too.
    joined = "SELECT {c} FROM heap.nation hn JOIN lake.customer c ON c.c_nationkey = hn.n_nationkey"
    with pg.connect(tpch.dbname, user=role) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="nation"):
            conn.execute(joined.format(c="count(*)"))
    tpch.conn.execute(f"GRANT SELECT (n_nationkey) ON heap.nation TO {role}")
    with pg.connect(tpch.dbname, user=role) as conn:
        assert "DuckLake Query" in "\n".join(r[0] for r in conn.execute("EXPLAIN " + joined.format(c="count(*)")).fetchall())
        assert conn.execute(joined.format(c="count(*)")).fetchall() == tpch.rows(
            joined.format(c="count(*)").replace("lake.", "heap."))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="nation"):
            conn.execute(joined.format(c="max(hn.n_name)"))


def test_change_feeds_join_lake_tables_in_duckdb(tpch, session):
    """A change feed joined with lake tables is one DuckDB query reading the feed over
    the range its constant bounds give, with the answer the feed's own scan gives."""
    tpch.conn.execute("CREATE FOREIGN TABLE lake.nation_changes (snapshot_id bigint, rowid bigint, change_type text, "
                      "n_nationkey int, n_name text, n_regionkey int) SERVER lake OPTIONS (table 'nation', changes 'true')")
    before = session.rows("SELECT ducklake.ducklake_latest_snapshot_id('lake.nation')")[0][0]
    try:
        tpch.conn.execute("UPDATE lake.nation SET n_regionkey = 4 - n_regionkey WHERE n_nationkey < 3")
        tpch.conn.execute("INSERT INTO lake.nation VALUES (90, 'NINETY', 1, 'x')")
        query = (f"SELECT f.change_type, r.r_name, count(*) FROM lake.nation_changes f JOIN lake.region r "
                 f"ON r.r_regionkey = f.n_regionkey WHERE f.snapshot_id > {before} GROUP BY 1, 2 ORDER BY 1, 2")
        plan = plan_of(session, query)
        assert "DuckLake Query" in plan and f"ducklake_fdw_changes('analytics', 'main', 'nation', {before + 1}, " in plan
        pushed = session.rows(query)
        session.conn.execute("SET ducklake.query_pushdown = off")
        assert "DuckLake Query" not in plan_of(session, query)
        assert pushed == session.rows(query)
        session.conn.execute("RESET ducklake.query_pushdown")
        assert pushed == [("insert", "AMERICA", 1), ("update_postimage", "EUROPE", 2), ("update_postimage", "MIDDLE EAST", 1),
                          ("update_preimage", "AFRICA", 1), ("update_preimage", "AMERICA", 2)]
        # A bound that is a parameter: the feed's own scan takes it.
        session.conn.execute("PREPARE f(bigint) AS SELECT count(*) FROM lake.nation_changes f JOIN lake.region r "
                             "ON r.r_regionkey = f.n_regionkey WHERE f.snapshot_id > $1")
        session.conn.execute("SET plan_cache_mode = force_generic_plan")
        assert "DuckLake Query" not in plan_of(session, f"EXECUTE f({before})")
        assert session.rows(f"EXECUTE f({before})") == [(7,)]
    finally:
        tpch.conn.execute("DELETE FROM lake.nation WHERE n_nationkey = 90")
        tpch.conn.execute("UPDATE lake.nation SET n_regionkey = 4 - n_regionkey WHERE n_nationkey < 3")
        tpch.conn.execute("DROP FOREIGN TABLE lake.nation_changes")


def test_insert_select_of_lake_tables_runs_in_duckdb(tpch, session, pg):
    query = ("SELECT n.n_name, r.r_name, count(*) FROM lake.nation n JOIN lake.region r ON r.r_regionkey = n.n_regionkey "
             "JOIN lake.customer c ON c.c_nationkey = n.n_nationkey GROUP BY 1, 2")
    session.conn.execute("CREATE TEMP TABLE counts (nation text, region text, n bigint)")
    plan = plan_of(session, "INSERT INTO counts " + query)
    assert "Insert on" in plan and "DuckLake Query" in plan
    session.conn.execute("INSERT INTO counts " + query)
    assert session.rows("SELECT * FROM counts ORDER BY 1") == tpch.rows(query.replace("lake.", "heap.") + " ORDER BY 1")
    # Privileges are checked on the SELECT's tables.
    role = lake_reader(tpch, "insert_select_reader", without="lake.customer")
    tpch.conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    with pg.connect(tpch.dbname, user=role) as conn:
        conn.execute("CREATE TEMP TABLE counts (nation text, region text, n bigint)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="customer"):
            conn.execute("INSERT INTO counts " + query)
        readable = query.replace("JOIN lake.customer c ON c.c_nationkey = n.n_nationkey ", "")
        conn.execute("INSERT INTO counts " + readable)
        assert conn.execute("SELECT count(*), sum(n) FROM counts").fetchone() == (25, 25)


@pytest.mark.parametrize("query", [
    # avg is numeric_div of DuckDB's sum and count, computed by Postgres over the scan
    "SELECT c_mktsegment, avg(c_acctbal) AS a, avg(c_nationkey) AS b, count(*) FROM lake.customer GROUP BY 1",
    # the shape of a stream table's state: a sub-select, two keys, constants, avg of products
    "SELECT s.seg, s.nation, count(*), false AS f, sum(s.bal) AS s1, avg(s.bal) AS a1, avg(s.scaled) AS a2, "
    "sum((s.bal)::numeric) AS s2 "
    "FROM (SELECT c_mktsegment AS seg, c_nationkey AS nation, c_acctbal AS bal, c_acctbal * 1.25 AS scaled "
    "FROM lake.customer WHERE c_acctbal > -500) s GROUP BY 1, 2",
    "SELECT c_mktsegment, avg(c_acctbal) FROM lake.customer WHERE c_acctbal > 1e9 GROUP BY 1",
    # a stream table's delta: a UNION ALL of terms, numerics of varying scale in them
    "SELECT c.c_custkey, CASE WHEN c.c_acctbal > 0 THEN c.c_acctbal ELSE 0 END AS v, 1 AS w FROM lake.customer c "
    "WHERE c.c_nationkey = 3 UNION ALL SELECT o.o_custkey, o.o_totalprice * 0.5, -1 FROM lake.orders o "
    "WHERE o.o_orderkey < 200 UNION ALL SELECT n.n_nationkey::bigint, n.n_regionkey * 1.5, 1 FROM lake.nation n",
])
def test_insert_select_with_items_postgres_computes_runs_in_duckdb(tpch, session, query):
    """An INSERT's SELECT whose select list Postgres computes in part over DuckDB's
    outputs (avg, numerics of varying display scale) runs in DuckDB too, with Postgres
    computing those items over its rows: the same values, display scales included, as
    the query over the heap tables."""
    session.conn.execute(f"CREATE TEMP TABLE lake_result AS {query} WITH NO DATA")
    session.conn.execute(f"CREATE TEMP TABLE heap_result AS {query.replace('lake.', 'heap.')} WITH NO DATA")
    plan = plan_of(session, "INSERT INTO lake_result " + query)
    assert "DuckLake Query" in plan and "Aggregate" not in plan and "Append" not in plan, plan
    session.conn.execute("INSERT INTO lake_result " + query)
    session.conn.execute("INSERT INTO heap_result " + query.replace("lake.", "heap."))
    as_text = "SELECT r::text FROM {} r ORDER BY 1"
    assert session.rows(as_text.format("lake_result")) == session.rows(as_text.format("heap_result"))


def test_insert_select_of_a_set_operation_runs_in_duckdb(tpch, session, pg):
    """An INSERT whose SELECT is a set operation runs it in DuckDB, read through a
    plain SELECT over it; with the set operation's ORDER BY it runs in Postgres (whose
    rows come in that order). Privileges are checked on every branch's tables."""
    union = "SELECT n_name AS name FROM lake.nation WHERE n_regionkey = 1 UNION SELECT r_name FROM lake.region"
    session.conn.execute("CREATE TEMP TABLE names (name text)")
    assert "DuckLake Query" in plan_of(session, "INSERT INTO names " + union)
    session.conn.execute("INSERT INTO names " + union)
    expected = tpch.rows(union.replace("lake.", "heap.") + " ORDER BY 1")
    assert session.rows("SELECT name FROM names ORDER BY 1") == expected
    session.conn.execute("CREATE TEMP TABLE ordered (n bigint GENERATED ALWAYS AS IDENTITY, name text)")
    ordered = union.replace("UNION", "UNION ALL") + " ORDER BY 1 DESC"
    session.conn.execute("INSERT INTO ordered (name) " + ordered)
    assert session.rows("SELECT name FROM ordered ORDER BY n") == tpch.rows(ordered.replace("lake.", "heap."))
    role = lake_reader(tpch, "set_operation_inserter", without="lake.region")
    with pg.connect(tpch.dbname, user=role) as conn:
        conn.execute("CREATE TEMP TABLE names (name text)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="region"):
            conn.execute("INSERT INTO names " + union)


def test_a_lake_column_named_with_the_slot_bytes_is_not_spliced(tpch):
    """The plan's SQL marks table slots with bytes 1 and 2: a lake column named with
    them (a slot of another table, in quotes) is read by a plain scan, and reads its
    own values."""
    tpch.ref.execute('CREATE TABLE analytics.main.weird AS SELECT 7 AS "a\x010\x02b", 1 AS id')
    tpch.conn.execute("CREATE FOREIGN TABLE lake.weird (v int OPTIONS (column_name E'a\\x010\\x02b'), id int) "
                      "SERVER lake OPTIONS (table 'weird')")
    query = "SELECT w.v, n.n_name FROM lake.weird w JOIN lake.nation n ON n.n_nationkey = w.id"
    assert "DuckLake Query" not in plan_of(tpch.session(), query)
    assert tpch.rows(query) == [(7, "ARGENTINA")]
