//! ducklake_fdw.so links to the official libduckdb.so, installed beside it in
//! Postgres' library directory (scripts/install.sh): look for it there first.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN");
}
