"""Lakes whose data path is an S3 prefix, against a real S3-protocol server on loopback
(moto's, with IAM authentication: see object_store.py)."""

import os
import pathlib
import pwd

import psycopg
import pytest

from conftest import Lake, database_name, drop_database, free_port, new_s3_lake, option_list
from object_store import S3Server
from roles import new_role

CREATE_EVENTS = "SELECT ducklake.execute('lake', 'CREATE TABLE events (id BIGINT, kind VARCHAR, value DOUBLE)')"
LOAD_EVENTS = ("INSERT INTO lake.events SELECT g, 'k' || g % 3, g / 4.0 FROM generate_series(1, 1000) g")


def server_user():
    return os.environ.get("DUCKLAKE_SERVER_USER", "pgducklake")


def error_of(conn, sql, params=None):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    return caught.value


def snapshot(lake):
    return lake.rows("SELECT ducklake.current_snapshot('lake')")[0][0]


def events_lake(lake):
    lake.conn.execute(CREATE_EVENTS)
    lake.import_schema("events")
    lake.conn.execute(LOAD_EVENTS)
    return lake


def changed_events(lake):
    """The events, then an UPDATE of ids 1..10 and a DELETE of ids 991..1000: the
    snapshot before both, and each remaining id's kind."""
    events_lake(lake)
    loaded = snapshot(lake)
    lake.conn.execute("UPDATE lake.events SET kind = 'changed' WHERE id <= 10")
    lake.conn.execute("DELETE FROM lake.events WHERE id > 990")
    return loaded, {i: "changed" if i <= 10 else f"k{i % 3}" for i in range(1, 991)}


def test_a_lake_on_s3_is_read_written_and_travelled(s3_lake, s3):
    lake = s3_lake
    loaded, _ = changed_events(lake)
    summary = "SELECT kind, count(*), sum(value) FROM lake.events GROUP BY kind ORDER BY kind"
    expected = {}
    for g in range(1, 991):
        kind = "changed" if g <= 10 else f"k{g % 3}"
        count, total = expected.get(kind, (0, 0.0))
        expected[kind] = (count + 1, total + g / 4.0)
    assert lake.rows(summary) == [(kind, *expected[kind]) for kind in sorted(expected)]
    # the rows are Parquet objects under the prefix, none elsewhere in the bucket
    objects = s3.keys(lake.bucket)
    assert objects and all(key.startswith("lake/main/events/") and key.endswith(".parquet") for key in objects)
    # time travel
    with lake.connect() as conn:
        conn.execute(f"SET ducklake.snapshot_id = '{loaded}'")
        assert conn.execute("SELECT count(*), min(kind) FILTER (WHERE id = 1) FROM lake.events").fetchall() == \
            [(1000, "k1")]
    # the change feed of the UPDATE and the DELETE
    lake.conn.execute("CREATE FOREIGN TABLE lake.events_changes (snapshot_id bigint, rowid bigint, "
                      "change_type text, id bigint, kind text, value float8) "
                      "SERVER lake OPTIONS (table 'events', changes 'true')")
    feed = lake.rows("SELECT change_type, count(*), sum(id) FROM lake.events_changes "
                     f"WHERE snapshot_id > {loaded} GROUP BY 1 ORDER BY 1")
    assert feed == [("delete", 10, sum(range(991, 1001))), ("update_postimage", 10, 55), ("update_preimage", 10, 55)]
    # the reference client reads what the FDW wrote, and the FDW what it writes
    assert lake.ref.rows("SELECT kind, count(*), sum(value) FROM events GROUP BY kind ORDER BY kind") == \
        lake.rows(summary)
    lake.ref.execute("INSERT INTO events SELECT range, 'ref', 0.5 FROM range(5000, 6000)")
    assert lake.rows("SELECT count(*), sum(value) FROM lake.events WHERE kind = 'ref'") == [(1000, 500.0)]
    # a join runs as one DuckDB query over the bucket
    join = ("SELECT a.kind, count(*) FROM lake.events a JOIN lake.events b ON b.id = a.id + 1 "
            "WHERE a.id < 100 GROUP BY a.kind ORDER BY a.kind")
    plan = "\n".join(r[0] for r in lake.rows("EXPLAIN (VERBOSE) " + join))
    assert "Custom Scan (DuckLake Query)" in plan and "Join" not in plan.split("DuckDB Query")[0], plan
    kinds = ["changed" if i <= 10 else f"k{i % 3}" for i in range(1, 100)]
    assert lake.rows(join) == [(kind, kinds.count(kind)) for kind in sorted(set(kinds))]


def test_maintenance_cleans_the_bucket(s3_lake, s3):
    lake = events_lake(s3_lake)
    lake.conn.execute("INSERT INTO lake.events SELECT g, 'more', 1 FROM generate_series(2001, 3000) g")
    lake.conn.execute("DELETE FROM lake.events WHERE id <= 970")
    # an object no snapshot references, and one outside the lake's prefix
    s3.admin.put_object(Bucket=lake.bucket, Key="lake/main/events/orphan.parquet", Body=b"not a lake file")
    s3.admin.put_object(Bucket=lake.bucket, Key="elsewhere/keep.parquet", Body=b"not the lake's")
    before = lake.rows("SELECT count(*), sum(id) FROM lake.events")
    steps = dict(lake.rows("SELECT step, affected FROM ducklake.maintain('lake', older_than => '0 seconds')"))
    assert steps["delete_unreferenced_files"] == 1 and steps["cleanup_old_files"] >= 1, steps
    assert lake.rows("SELECT count(*), sum(id) FROM lake.events") == before
    live = lake.ref.rows("SELECT data_file, delete_file FROM ducklake_list_files('analytics', 'events')")
    assert sorted(s3.keys(lake.bucket, "lake/")) == sorted(path.removeprefix(f"s3://{lake.bucket}/")
                                                          for row in live for path in row if path is not None)
    assert s3.keys(lake.bucket, "elsewhere/") == ["elsewhere/keep.parquet"]


def test_a_stream_table_follows_an_s3_lake(s3_lake):
    lake = events_lake(s3_lake)
    lake.conn.execute("CREATE EXTENSION ducklake_ivm")
    query = "SELECT kind, count(*) AS n, sum(id) AS ids FROM lake.events GROUP BY kind"
    lake.conn.execute("SELECT pgtrickle.create_stream_table('kinds', %s, '1h')", (query,))
    lake.conn.execute("SELECT pgtrickle.pause_scheduler(ARRAY['kinds'])")  # refreshed here, not by the scheduler
    lake.conn.execute("INSERT INTO lake.events SELECT g, 'new', 0 FROM generate_series(1001, 1100) g")
    lake.conn.execute("DELETE FROM lake.events WHERE id <= 100")
    notices = []
    lake.conn.add_notice_handler(lambda notice: notices.append(notice.message_primary))
    lake.conn.execute("SELECT pgtrickle.refresh('kinds')")
    assert notices == []  # differential: a rebuild would say why
    mode = lake.rows("SELECT refresh_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'kinds'")
    assert mode == [("DIFFERENTIAL",)]
    ordered = " ORDER BY kind"
    assert lake.rows("SELECT kind, n, ids FROM kinds" + ordered) == lake.rows(query + ordered)
    assert lake.rows("SELECT n FROM kinds WHERE kind = 'new'") == [(100,)]


def test_credentials_live_in_user_mappings_and_stay_hidden(s3_lake, s3):
    lake = events_lake(s3_lake)
    key_id, secret = lake.s3_keys
    err = error_of(lake.conn, f"ALTER SERVER lake OPTIONS (ADD secret '{secret}')")
    assert err.sqlstate == "HV024" and "credentials belong in a user mapping" in str(err)
    assert secret not in str(err)
    plan = "\n".join(r[0] for r in lake.rows("EXPLAIN (VERBOSE) SELECT count(*) FROM lake.events"))
    assert key_id not in plan and secret not in plan
    # a message that quotes a secret, raised after the lake was attached, hides it
    err = error_of(lake.conn, f"SELECT ducklake.execute('lake', 'SELECT CAST(''{secret}'' AS INTEGER)')")
    assert "Could not convert string '********' to INT32" in str(err), str(err)
    # a wrong secret: S3 refuses the signature, the message names neither key nor secret
    wrong = secret[:-4] + "abcd"
    lake.conn.execute(f"ALTER USER MAPPING FOR PUBLIC SERVER lake OPTIONS (SET secret '{wrong}')")
    with lake.connect() as conn:
        err = error_of(conn, "SELECT sum(id) FROM lake.events")
        assert err.sqlstate == "HV000", str(err)
        assert "403" in str(err) and "SignatureDoesNotMatch" in str(err), str(err)
        assert wrong not in str(err) and key_id not in str(err)
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    # keys that may read but not write: reads work, a write fails and commits nothing
    reader_key, reader_secret, _ = s3.new_user("reader", ["s3:GetObject", "s3:ListBucket"])
    lake.conn.execute(f"ALTER USER MAPPING FOR PUBLIC SERVER lake OPTIONS (SET key_id '{reader_key}', "
                      f"SET secret '{reader_secret}')")
    with lake.connect() as conn:
        assert conn.execute("SELECT count(*) FROM lake.events").fetchall() == [(1000,)]
        before = conn.execute("SELECT ducklake.current_snapshot('lake')").fetchall()
        err = error_of(conn, "INSERT INTO lake.events SELECT g, 'x', 0 FROM generate_series(1, 500) g")
        assert err.sqlstate == "HV000" and "403" in str(err), str(err)
        assert reader_secret not in str(err)
        assert conn.execute("SELECT count(*) FROM lake.events").fetchall() == [(1000,)]
        assert conn.execute("SELECT ducklake.current_snapshot('lake')").fetchall() == before


def test_access_revoked_in_the_middle_of_a_transaction(s3_lake, s3):
    lake = events_lake(s3_lake)
    before = lake.rows("SELECT count(*), sum(value) FROM lake.events")
    snapshot_before = snapshot(lake)
    with lake.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO lake.events SELECT g, 'in txn', 1 FROM generate_series(5001, 6000) g")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchone() == (2000,)
        s3.set_policy(lake.s3_user, ["s3:GetObject", "s3:ListBucket"])  # writes are refused from now on
        err = error_of(conn, "UPDATE lake.events SET value = value + 1 WHERE id <= 500")
        assert err.sqlstate == "HV000" and "403" in str(err), str(err)
        conn.rollback()
    s3.set_policy(lake.s3_user, ["s3:*"])
    assert lake.rows("SELECT count(*), sum(value) FROM lake.events") == before
    assert snapshot(lake) == snapshot_before


def test_lost_objects_and_an_unreachable_store_are_errors(pg, request, s3):
    """A second endpoint of the same store, stopped and started again by this test."""
    outage = S3Server(free_port())
    try:
        with new_s3_lake(pg, request, s3, endpoint_server=outage) as lake:
            events_lake(lake)
            before = lake.rows("SELECT count(*), sum(id) FROM lake.events")
            outage.stop()
            with lake.connect() as conn:
                err = error_of(conn, "SELECT sum(value) FROM lake.events")
                assert err.sqlstate == "HV000", str(err)
                assert "HTTP" in str(err) or "IO Error" in str(err), str(err)
                assert conn.execute("SELECT 1").fetchall() == [(1,)]
                err = error_of(conn, "INSERT INTO lake.events SELECT g, 'lost', 0 FROM generate_series(1, 500) g")
                assert err.sqlstate == "HV000", str(err)
            outage.restart()
            # nothing of the failed insert was committed
            assert lake.rows("SELECT count(*), sum(id) FROM lake.events") == before
            lake.conn.execute("INSERT INTO lake.events SELECT g, 'back', 0 FROM generate_series(1, 500) g")
            assert lake.rows("SELECT count(*) FROM lake.events WHERE kind = 'back'") == [(500,)]
            # objects deleted behind the lake's back
            for key in s3.keys(lake.bucket, "lake/"):
                s3.admin.delete_object(Bucket=lake.bucket, Key=key)
            with lake.connect() as conn:
                err = error_of(conn, "SELECT sum(value) FROM lake.events")
                assert err.sqlstate == "HV000" and "404" in str(err), str(err)
                assert conn.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        outage.stop()


@pytest.fixture
def s3_admin(database, pg, s3):
    """A role that is not a superuser but may create DuckLake servers, and a bucket."""
    conn, dbname = database
    role = new_role(conn, "s3admin")
    conn.execute(f"GRANT USAGE ON FOREIGN DATA WRAPPER ducklake TO {role}")
    conn.execute(f"GRANT CREATE ON DATABASE \"{dbname}\" TO {role}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    bucket = s3.new_bucket()
    # keys for the role's own prefix only, as the README recommends
    keys = s3.new_user("s3admin", ["s3:*"], [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{role}/*"])
    yield role, dbname, bucket, keys


def test_non_superusers_reach_only_allowed_prefixes_and_endpoints(s3_admin, pg, s3):
    role, dbname, bucket, keys = s3_admin
    store = option_list(s3.server_options())
    create = f"CREATE SERVER mine FOREIGN DATA WRAPPER ducklake OPTIONS (data_path 's3://{bucket}/{role}/', {store})"
    with pg.connect(dbname, user=role) as session:
        err = error_of(session, create)
        assert err.sqlstate == "42501" and f'data path "s3://{bucket}/{role}/" is not under' in str(err)
        assert error_of(session, "SET ducklake.allowed_endpoints = '127.0.0.1'").sqlstate == "42501"
    with pg.connect(dbname) as admin:
        admin.execute(f"ALTER ROLE {role} SET ducklake.allowed_data_paths = 's3://{bucket}/{role}/'")
    with pg.connect(dbname, user=role) as session:
        err = error_of(session, create)
        assert err.sqlstate == "42501"
        assert f'endpoint "{s3.endpoint}" is not in ducklake.allowed_endpoints' in str(err)
        err = error_of(session, f"CREATE SERVER chain FOREIGN DATA WRAPPER ducklake OPTIONS "
                                f"(data_path 's3://{bucket}/{role}/', credential_chain 'true')")
        assert err.sqlstate == "42501" and "the database server's own cloud credentials" in str(err)
        assert error_of(session, f"CREATE SERVER up FOREIGN DATA WRAPPER ducklake OPTIONS "
                                 f"(data_path 's3://{bucket}/{role}/../x/')").sqlstate == "HV024"
    with pg.connect(dbname) as admin:
        admin.execute(f"ALTER ROLE {role} SET ducklake.allowed_endpoints = '{s3.endpoint}'")
    with pg.connect(dbname, user=role) as session:
        session.execute(create)
        session.execute(f"CREATE USER MAPPING FOR CURRENT_USER SERVER mine OPTIONS "
                        f"(key_id '{keys[0]}', secret '{keys[1]}')")
        session.execute("CREATE FOREIGN TABLE t (x bigint) SERVER mine")
        session.execute("SELECT ducklake.create_table('t')")
        session.execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        assert session.execute("SELECT count(*), sum(x) FROM t").fetchall() == [(1000, 500_500)]
        assert s3.keys(bucket) and all(k.startswith(f"{role}/") for k in s3.keys(bucket))
        # DuckDB SQL could create a secret with any endpoint: only superusers run it here
        endpoint_secret = ("CREATE SECRET x (TYPE s3, ENDPOINT ''10.0.0.5:80'', URL_STYLE ''path'', "
                           f"SCOPE ''s3://{bucket}/{role}/z/'')")
        err = error_of(session, f"SELECT ducklake.execute('mine', '{endpoint_secret}')")
        assert err.sqlstate == "42501", str(err)
        assert 'ducklake.execute on server "mine", whose data is in an object store, needs a superuser' in str(err)
    # the instance reaches nothing outside the prefix, and keeps no secret on disk
    s3.admin.put_object(Bucket=bucket, Key="other/x.csv", Body=b"a\n1\n")
    with pg.connect(dbname) as admin:
        # the rules of the server's owner hold whoever uses the server
        admin.execute(f"SET ducklake.allowed_data_paths = 's3://{bucket}/{role}/'")
        admin.execute(f"SET ducklake.allowed_endpoints = '{s3.endpoint}'")
        admin.execute(f"CREATE USER MAPPING FOR CURRENT_USER SERVER mine OPTIONS (key_id '{keys[0]}', secret '{keys[1]}')")
        err = error_of(admin, "SELECT ducklake.execute('mine', "
                              f"'CREATE TABLE leak AS SELECT * FROM read_csv(''s3://{bucket}/other/x.csv'')')")
        assert "file system operations are disabled by configuration" in str(err), str(err)
        # DuckDB's check does not resolve ".." in URLs: what stops it is the keys
        err = error_of(admin, "SELECT ducklake.execute('mine', "
                              f"'CREATE TABLE leak AS SELECT * FROM read_csv(''s3://{bucket}/{role}/../other/x.csv'')')")
        assert "403" in str(err), str(err)
        # persistent secrets would go to the instance's own directory, which DuckDB,
        # locked down, refuses to create
        err = error_of(admin, "SELECT ducklake.execute('mine', 'CREATE PERSISTENT SECRET kept (TYPE s3)')")
        assert "file system operations are disabled by configuration" in str(err), str(err)
        home = pathlib.Path(pwd.getpwnam(server_user()).pw_dir)
        assert not list(home.rglob("kept.duckdb_secret"))
    # a superuser's server with a credential chain, handed to the role, is refused when used
    with pg.connect(dbname) as admin:
        admin.execute(f"CREATE SERVER handed FOREIGN DATA WRAPPER ducklake OPTIONS "
                      f"(data_path 's3://{bucket}/{role}/handed/', credential_chain 'true')")
        admin.execute(f"ALTER SERVER handed OWNER TO {role}")
    with pg.connect(dbname, user=role) as session:
        err = error_of(session, "SELECT ducklake.current_snapshot('handed')")
        assert err.sqlstate == "42501" and 'credential_chain of server "handed"' in str(err), str(err)


def test_object_store_options_are_checked(database):
    conn, _ = database
    cases = {
        "data_path 'http://host/lake/'": "not an object store a lake can use",
        "data_path 'azure://container/lake/'": "not an object store a lake can use",
        "account_name 'dev;x'": "must be a storage account name",
        "data_path 's3://bucket//x/'": "must not contain an empty",
        "data_path 's3:///x/'": "must name a bucket",
        "url_style 'virtual'": "must be 'path' or 'vhost'",
        "use_ssl 'yes'": "must be 'true' or 'false'",
        "endpoint 'http://127.0.0.1:9000'": "must be a host with an optional port",
    }
    for options, message in cases.items():
        err = error_of(conn, f"CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS ({options})")
        assert err.sqlstate == "HV024" and message in str(err), (options, str(err))
    for option in ("key_id", "secret", "session_token"):
        err = error_of(conn, f"CREATE SERVER s FOREIGN DATA WRAPPER ducklake OPTIONS ({option} 'AKIAXYZ')")
        assert err.sqlstate == "HV024" and "credentials belong in a user mapping" in str(err)
        assert "AKIAXYZ" not in str(err)
    # accepted by the validator (a superuser), refused when attached
    conn.execute("CREATE SERVER gs FOREIGN DATA WRAPPER ducklake OPTIONS (data_path 'gs://bucket/lake/', "
                 "credential_chain 'true')")
    err = error_of(conn, "SELECT ducklake.current_snapshot('gs')")
    assert err.sqlstate == "HV024" and "credential_chain is available for s3:// and az:// lakes, not gs://" in str(err), \
        str(err)


def test_a_gs_prefix_uses_the_same_protocol(database, s3):
    """gs:// lakes speak GCS's S3-compatible API with HMAC keys; pointed at the loopback
    server, the same store answers."""
    conn, _ = database
    bucket = s3.new_bucket()
    key_id, secret, _ = s3.new_user("gcs", ["s3:*"])
    conn.execute(f"CREATE SERVER g FOREIGN DATA WRAPPER ducklake OPTIONS (data_path 'gs://{bucket}/lake/', "
                 f"{option_list(s3.server_options())})")
    conn.execute(f"CREATE USER MAPPING FOR CURRENT_USER SERVER g OPTIONS (key_id '{key_id}', secret '{secret}')")
    conn.execute("SELECT ducklake.execute('g', 'CREATE TABLE t AS SELECT range AS x FROM range(2000)')")
    conn.execute("CREATE FOREIGN TABLE t (x bigint) SERVER g")
    assert conn.execute("SELECT count(*), sum(x) FROM t").fetchall() == [(2000, 1999 * 1000)]
    assert s3.keys(bucket) and all(k.startswith("lake/main/t/") for k in s3.keys(bucket))


@pytest.fixture
def azure_lake(pg, request, azurite):
    """A Lake on `az://<new container>/lake/` of Azurite, reached with the account key."""
    container = azurite.new_container()
    data_path = f"az://{container}/lake/"
    dbname = database_name(request)
    pg.execute(f'CREATE DATABASE "{dbname}"')
    lake = Lake(pg, dbname, data_path, server_options=azurite.server_options(), mapping={"account_key": azurite.KEY},
                store_secret=("azure", azurite.secret_statement(data_path)))
    lake.container = container
    try:
        yield lake
    finally:
        lake.close()
        drop_database(pg, dbname)


def test_a_lake_on_azure_blob_storage(azure_lake, azurite):
    lake = azure_lake
    loaded, kinds = changed_events(lake)
    summary = "SELECT kind, count(*), sum(id) FROM lake.events GROUP BY kind ORDER BY kind"
    assert lake.rows(summary) == [(k, list(kinds.values()).count(k), sum(i for i, x in kinds.items() if x == k))
                                  for k in sorted(set(kinds.values()))]
    blobs = azurite.blobs(lake.container)
    assert blobs and all(b.startswith("lake/main/events/") and b.endswith(".parquet") for b in blobs)
    with lake.connect() as conn:
        conn.execute(f"SET ducklake.snapshot_id = '{loaded}'")
        assert conn.execute("SELECT count(*) FROM lake.events").fetchall() == [(1000,)]
    assert lake.rows("SELECT count(*) FROM ducklake.table_changes('lake.events', %s, %s)",
                     (loaded + 1, snapshot(lake))) == [(30,)]
    assert lake.ref.rows("SELECT kind, count(*), sum(id) FROM events GROUP BY kind ORDER BY kind") == lake.rows(summary)
    lake.ref.execute("INSERT INTO events SELECT range, 'ref', 0.5 FROM range(5000, 6000)")
    assert lake.rows("SELECT count(*) FROM lake.events WHERE kind = 'ref'") == [(1000,)]
    # maintenance deletes what no snapshot needs, and nothing outside the prefix
    azurite.client.get_container_client(lake.container).upload_blob("elsewhere/keep.parquet", b"not the lake's")
    lake.rows("SELECT * FROM ducklake.maintain('lake', older_than => '0 seconds')")
    live = lake.ref.rows("SELECT data_file, delete_file FROM ducklake_list_files('analytics', 'events')")
    assert azurite.blobs(lake.container, "lake/") == sorted(p.removeprefix(f"az://{lake.container}/")
                                                           for row in live for p in row if p is not None)
    assert azurite.blobs(lake.container, "elsewhere/") == ["elsewhere/keep.parquet"]
    # the instance reaches nothing outside its prefix
    err = error_of(lake.conn, "SELECT ducklake.execute('lake', "
                              f"'SELECT * FROM read_parquet(''az://{lake.container}/elsewhere/keep.parquet'')')")
    assert "file system operations are disabled by configuration" in str(err), str(err)
    # a wrong key: refused, and never shown
    wrong = "d3Jvbmcta2V5LWZvci10aGUtdGVzdA=="
    lake.conn.execute(f"ALTER USER MAPPING FOR PUBLIC SERVER lake OPTIONS (SET account_key '{wrong}')")
    with lake.connect() as conn:
        err = error_of(conn, "SELECT sum(value) FROM lake.events")
        assert err.sqlstate == "HV000" and "AuthorizationFailure" in str(err), str(err)
        assert wrong not in str(err) and azurite.KEY not in str(err)
