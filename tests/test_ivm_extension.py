"""The stream-table extension builds, installs and loads."""


def test_ivm_extension_installs(database):
    conn, _ = database
    conn.execute("CREATE EXTENSION ducklake_ivm")
    assert conn.execute("SELECT pgtrickle.version()").fetchone() == ("0.1.0",)
    assert conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                        "WHERE extname = 'ducklake_ivm'").fetchone() == ("pgtrickle",)
