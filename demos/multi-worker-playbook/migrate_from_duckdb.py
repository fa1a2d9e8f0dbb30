"""Move the tables of a DuckDB database file into the shared lake, with DuckDB itself
(duckdb 1.5.5 and its ducklake + postgres extensions): one DuckLake snapshot for all tables.

    PGPASSWORD=... python migrate_from_duckdb.py legacy.duckdb \
        --catalog "host=127.0.0.1 port=5442 dbname=ducklake_catalog user=ducklake" \
        --data-path /shared/lake/ [--catalog-name analytics] [--extension-dir DIR]

Constraints are not copied: DuckLake has none (PRIMARY KEY, UNIQUE), which is why DuckDB's
COPY FROM DATABASE refuses such files; CREATE TABLE ... AS copies every column and row.
Afterwards, in PostgreSQL: IMPORT FOREIGN SCHEMA main FROM SERVER analytics INTO lake;
"""

import argparse
import sys

import duckdb


def quote(identifier):
    return '"' + identifier.replace('"', '""') + '"'


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("duckdb_file")
    parser.add_argument("--catalog", required=True, help="libpq connection string of the catalog database")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--catalog-name", default="analytics")
    parser.add_argument("--extension-dir", help="load the DuckDB extensions from here instead of installing them")
    args = parser.parse_args()

    con = duckdb.connect()
    for extension in ("ducklake", "postgres_scanner"):
        if args.extension_dir:
            con.execute(f"LOAD {literal(f'{args.extension_dir}/{extension}.duckdb_extension')}")
        else:
            con.execute(f"INSTALL {extension}; LOAD {extension}")
    alias = args.catalog_name
    # The FDW names the metadata schema __ducklake_metadata_<catalog_name>; DuckLake's own
    # default for a PostgreSQL catalog is "public", which would create a second, empty lake.
    con.execute(f"ATTACH {literal('ducklake:postgres:' + args.catalog)} AS {quote(alias)} "
                f"(DATA_PATH {literal(args.data_path)}, METADATA_SCHEMA {literal('__ducklake_metadata_' + alias)})")
    con.execute(f"ATTACH {literal(args.duckdb_file)} AS legacy (READ_ONLY)")
    tables = [name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'legacy' AND schema_name = 'main' "
        "ORDER BY table_name").fetchall()]
    con.execute("BEGIN")
    for table in tables:
        con.execute(f"CREATE TABLE {quote(alias)}.main.{quote(table)} AS FROM legacy.main.{quote(table)}")
    con.execute("COMMIT")
    for table in tables:
        count = con.execute(f"SELECT count(*) FROM {quote(alias)}.main.{quote(table)}").fetchone()[0]
        print(f"{table}: {count} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
