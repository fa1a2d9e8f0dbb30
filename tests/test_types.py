"""Every mapped type, read through the FDW and compared with DuckDB's own answer."""

import datetime
import os
import uuid
from decimal import Decimal

from compare import compare, normalize_row

ALL_TYPES = """
CREATE TABLE alltypes (
    id INTEGER,
    b BOOLEAN,
    i1 TINYINT, i2 SMALLINT, i4 INTEGER, i8 BIGINT,
    u1 UTINYINT, u2 USMALLINT, u4 UINTEGER, u8 UBIGINT, h HUGEINT,
    f4 FLOAT, f8 DOUBLE,
    d DECIMAL(38,10), d2 DECIMAL(4,2), d3 DECIMAL(18,3),
    s VARCHAR, bl BLOB,
    dt DATE, tm TIME, ts TIMESTAMP, tsns TIMESTAMP_NS, tstz TIMESTAMPTZ,
    iv INTERVAL, u UUID, j JSON,
    li INTEGER[], ls VARCHAR[], ld DATE[], lnum DECIMAL(10,2)[],
    st STRUCT(a INTEGER, b VARCHAR), m MAP(VARCHAR, INTEGER), lst STRUCT(x DOUBLE)[], ll INTEGER[][]
)
"""

ROWS = [
    # typical values
    (1, True, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1.5, 2.25, Decimal("123.4567890123"), Decimal("12.34"),
     Decimal("-1.500"), "hello", b"\x00\x01\xff", datetime.date(2025, 1, 6), datetime.time(10, 0, 1, 500),
     datetime.datetime(2025, 1, 6, 10, 0, 0, 123456), datetime.datetime(2025, 1, 6, 10, 0, 0, 654321),
     datetime.datetime(2025, 1, 6, 10, 0, 0, 1, tzinfo=datetime.timezone.utc),
     datetime.timedelta(days=3, seconds=7384, microseconds=5),
     uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), '{"a": [1, 2, null], "b": {"c": "d"}}',
     [1, None, 3], ["x", None, "it's"], [datetime.date(2000, 2, 29)], [Decimal("1.25"), None],
     {"a": 1, "b": "x"}, "MAP {'k': 1, 'z': NULL}", [{"x": 1.5}, None], [[1, 2], [3]]),
    # extremes
    (2, False, -128, -32768, -2147483648, -9223372036854775808, 255, 65535, 4294967295,
     18446744073709551615, 170141183460469231731687303715884105727,
     3.4028234663852886e38, 1.7976931348623157e308,
     Decimal("9999999999999999999999999999.9999999999"), Decimal("-99.99"), Decimal("999999999999999.999"),
     "héllo ✓ 🦆 \\ \"q\" 'x'", b"", datetime.date(1, 1, 1), datetime.time(23, 59, 59, 999999),
     datetime.datetime(1, 1, 1, 0, 0, 0), datetime.datetime(2262, 4, 11, 23, 47, 16, 854775),
     datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc),
     datetime.timedelta(days=-10000, microseconds=1),
     uuid.UUID("00000000-0000-0000-0000-000000000000"), "[]",
     [], [""], [], [], {"a": None, "b": None}, "MAP {}", [], []),
    (3, True, 127, 32767, 2147483647, 9223372036854775807, 0, 0, 0, 0,
     -170141183460469231731687303715884105727, -1.0e-38, 5e-324,
     Decimal("-9999999999999999999999999999.9999999999"), Decimal("0.01"), Decimal("0"),
     "", b"\xde\xad\xbe\xef", datetime.date(9999, 12, 31), datetime.time(0, 0),
     datetime.datetime(1970, 1, 1), datetime.datetime(1677, 9, 22, 0, 0, 0, 1),
     datetime.datetime(1900, 1, 1, tzinfo=datetime.timezone.utc), datetime.timedelta(0),
     uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"), '"just a string"',
     [2147483647, -2147483648], ["a"], [datetime.date(1970, 1, 1), None], [Decimal("-99999999.99")],
     {"a": -1, "b": ""}, "MAP {'': 0}", [{"x": None}], [[None]]),
    # all NULL
    (4,) + (None,) * 30 + ("NULL",) + (None,) * 2,
]
MAP_COLUMN = 31  # maps are written as SQL literals: the Python client cannot bind them


def create_all_types(lake):
    lake.ref.execute(ALL_TYPES)
    for row in ROWS:
        values = ", ".join(row[i] if i == MAP_COLUMN else "?" for i in range(len(row)))
        params = [v for i, v in enumerate(row) if i != MAP_COLUMN]
        lake.ref.execute(f"INSERT INTO alltypes VALUES ({values})", params)
    lake.import_schema("alltypes")


def test_imported_column_types(lake):
    create_all_types(lake)
    types = lake.rows(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'lake.alltypes'::regclass AND attnum > 0 ORDER BY attnum"
    )
    assert types == [
        ("id", "integer"), ("b", "boolean"),
        ("i1", "smallint"), ("i2", "smallint"), ("i4", "integer"), ("i8", "bigint"),
        ("u1", "smallint"), ("u2", "integer"), ("u4", "bigint"), ("u8", "numeric(20,0)"), ("h", "numeric(39,0)"),
        ("f4", "real"), ("f8", "double precision"),
        ("d", "numeric(38,10)"), ("d2", "numeric(4,2)"), ("d3", "numeric(18,3)"),
        ("s", "text"), ("bl", "bytea"),
        ("dt", "date"), ("tm", "time without time zone"), ("ts", "timestamp without time zone"),
        ("tsns", "timestamp without time zone"), ("tstz", "timestamp with time zone"),
        ("iv", "interval"), ("u", "uuid"), ("j", "jsonb"),
        ("li", "integer[]"), ("ls", "text[]"), ("ld", "date[]"), ("lnum", "numeric(10,2)[]"),
        ("st", "jsonb"), ("m", "jsonb"), ("lst", "jsonb"), ("ll", "jsonb"),
    ]


def test_every_type_matches_duckdb(lake):
    create_all_types(lake)
    json_columns = {25, 30, 31, 32, 33}
    rows = compare(lake, "SELECT * FROM lake.alltypes ORDER BY id", "SELECT * FROM alltypes ORDER BY id",
                   json_columns)
    assert len(rows) == 4
    assert rows[3][1:] == (None,) * 33


def test_values_as_postgres_text(lake):
    """Spot checks of exact text forms, independent of either Python driver."""
    create_all_types(lake)
    rows = lake.rows(
        "SELECT h::text, u8::text, d::text, f8::text, tstz AT TIME ZONE 'UTC', iv::text, "
        "j::text, st::text, m::text, li::text, ls::text FROM lake.alltypes WHERE id IN (1, 2) ORDER BY id"
    )
    assert rows[0] == (
        "9", "8", "123.4567890123", "2.25", datetime.datetime(2025, 1, 6, 10, 0, 0, 1),
        "3 days 02:03:04.000005", '{"a": [1, 2, null], "b": {"c": "d"}}', '{"a": 1, "b": "x"}',
        '{"k": 1, "z": null}', "{1,NULL,3}", "{x,NULL,it's}",
    )
    assert rows[1][:4] == (
        "170141183460469231731687303715884105727", "18446744073709551615",
        "9999999999999999999999999999.9999999999", "1.7976931348623157e+308",
    )


def test_special_float_and_time_values(lake):
    lake.ref.execute("CREATE TABLE specials (id INTEGER, f4 FLOAT, f8 DOUBLE, d DATE, ts TIMESTAMP, "
                     "tstz TIMESTAMPTZ, iv INTERVAL)")
    lake.ref.execute("""INSERT INTO specials VALUES
        (1, 'nan', 'nan', 'infinity', 'infinity', 'infinity', INTERVAL 14 MONTH),
        (2, 'inf', '-inf', '-infinity', '-infinity', '-infinity', INTERVAL '1 year 2 months 3 days 4 hours'),
        (3, '-0.0', '-0.0', '2000-01-01', '2000-01-01', '2000-01-01 00:00:00+00', INTERVAL (-1) MONTH)""")
    lake.import_schema("specials")
    rows = lake.rows("SELECT id, f4::text, f8::text, d::text, ts::text, (tstz AT TIME ZONE 'UTC')::text, "
                     "iv::text FROM lake.specials ORDER BY id")
    assert rows == [
        (1, "NaN", "NaN", "infinity", "infinity", "infinity", "1 year 2 mons"),
        (2, "Infinity", "-Infinity", "-infinity", "-infinity", "-infinity", "1 year 2 mons 3 days 04:00:00"),
        (3, "-0", "-0", "2000-01-01", "2000-01-01 00:00:00", "2000-01-01 00:00:00", "-1 mons"),
    ]


def test_hand_written_foreign_table_reads_with_postgres_types(lake):
    """A foreign table may declare narrower or different types; values are cast in DuckDB
    and checked by Postgres' own input functions (typmods included)."""
    lake.ref.execute("CREATE TABLE narrow (id BIGINT, amount DECIMAL(10,4), label VARCHAR, payload JSON)")
    lake.ref.execute("INSERT INTO narrow VALUES (1, 12.3456, 'abc', '{\"k\": [1]}'), (2, NULL, 'x', 'null')")
    lake.conn.execute(
        "CREATE FOREIGN TABLE lake.narrow_view (id integer, amount numeric(12,2), label varchar(3), "
        "payload json, code text OPTIONS (column_name 'label')) SERVER lake OPTIONS (table 'narrow')"
    )
    rows = lake.rows("SELECT id, amount, label, payload::text, code FROM lake.narrow_view ORDER BY id")
    assert rows == [(1, Decimal("12.35"), "abc", '{"k":[1]}', "abc"), (2, None, "x", "null", "x")]


def test_every_type_written_back(lake):
    """Postgres values of every mapped type, written into a lake table of the same
    DuckDB types, read back by the reference client equal the originals: INSERT
    (staged as Arrow columns) and row-by-row UPDATE (arrays, structs and maps included)."""
    create_all_types(lake)
    # the reference client (another OS user) created the lake's directories
    for directory, _, _ in os.walk(lake.data_path):
        os.chmod(directory, 0o777)
    lake.ref.execute(ALL_TYPES.replace("alltypes", "written"))
    lake.import_schema("written")
    lake.conn.execute("INSERT INTO lake.written SELECT * FROM lake.alltypes")
    columns = [r[0] for r in lake.ref.rows(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'alltypes' ORDER BY column_index")]
    json_columns = {columns.index("j")}

    def lake_rows(table, where=""):
        return [normalize_row(r, json_columns) for r in lake.ref.rows(
            f"SELECT * EXCLUDE (m), CAST(m AS VARCHAR) FROM {table} {where} ORDER BY id")]

    assert lake_rows("written") == lake_rows("alltypes")
    # every column of row 4 (all NULL) set from row 1 by the row path (a join)
    assignments = ", ".join(f"{c} = a.{c}" for c in columns if c != "id")
    lake.conn.execute(f"UPDATE lake.written AS w SET {assignments} FROM lake.alltypes AS a "
                      "WHERE a.id = 1 AND w.id = 4")
    assert [r[1:] for r in lake_rows("written", "WHERE id = 4")] == [r[1:] for r in lake_rows("alltypes", "WHERE id = 1")]
