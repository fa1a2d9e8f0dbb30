"""Row-for-row comparison of a Postgres result with DuckDB's answer on the same lake."""

import json
import math
from decimal import Decimal


def normalize(value):
    """Make equal values compare equal across the two drivers.

    DuckDB hands JSON back as text and Postgres' jsonb as parsed objects; NaN never
    equals itself; Postgres numerics arrive as Decimal where DuckDB gives int.
    """
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def normalize_row(row, json_columns=()):
    out = []
    for i, value in enumerate(row):
        if i in json_columns and isinstance(value, str):
            value = json.loads(value)
        out.append(normalize(value))
    return out


def assert_same_rows(pg_rows, duck_rows, json_columns=()):
    """`json_columns`: positions where DuckDB returns JSON text and Postgres a parsed jsonb."""
    pg = [normalize_row(r) for r in pg_rows]
    duck = [normalize_row(r, json_columns) for r in duck_rows]
    assert len(pg) == len(duck), f"{len(pg)} rows from Postgres, {len(duck)} from DuckDB"
    for i, (a, b) in enumerate(zip(pg, duck)):
        assert a == b, f"row {i} differs:\n  postgres: {a!r}\n  duckdb:   {b!r}"


def compare(lake, pg_query, duck_query, json_columns=()):
    with lake.conn.cursor(binary=True) as cur:
        pg_rows = cur.execute(pg_query).fetchall()
    duck_rows = lake.ref.rows(duck_query)
    assert_same_rows(pg_rows, duck_rows, json_columns)
    return pg_rows
