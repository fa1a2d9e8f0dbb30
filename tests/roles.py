"""Roles for tests that run as users who are not superusers."""

import uuid


def new_role(conn, prefix, *attributes):
    """A new login role with a unique name (roles outlive the test's database)."""
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE ROLE {name} LOGIN {' '.join(attributes)}")
    return name


def grant_lake_reading(lake, role):
    """What a role needs to read the lake of the `lake` fixture: the server, the foreign
    tables, and the embedded catalog's tables (its DuckDB connects as the role)."""
    conn = lake.conn
    conn.execute("SELECT ducklake.current_snapshot('lake')")  # attached: the catalog schema exists
    conn.execute(f"GRANT USAGE ON FOREIGN SERVER lake TO {role}")
    conn.execute(f"GRANT USAGE ON SCHEMA lake TO {role}")
    conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA lake TO {role}")
    conn.execute(f"GRANT USAGE ON SCHEMA __ducklake_metadata_analytics TO {role}")
    conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA __ducklake_metadata_analytics TO {role}")
    conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA __ducklake_metadata_analytics GRANT SELECT ON TABLES TO {role}")


def new_stream_owner(lake, prefix):
    """A new role that reads the lake and may create stream tables in schema public."""
    role = new_role(lake.conn, prefix)
    grant_lake_reading(lake, role)
    lake.conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    return role
