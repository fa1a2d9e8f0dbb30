//! Quoting for SQL text sent to DuckDB. Every identifier and literal that reaches a
//! generated statement goes through one of these.

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"catalog"."schema"."table"`
pub fn qualified(catalog: &str, schema: &str, table: &str) -> String {
    format!("{}.{}.{}", ident(catalog), ident(schema), ident(table))
}
