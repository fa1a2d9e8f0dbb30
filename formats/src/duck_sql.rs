//! Quoting for SQL text sent to DuckDB. Every identifier and literal that reaches a
//! generated statement goes through one of these.

/// `"name"`, with embedded double quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'`, with embedded single quotes doubled (DuckDB has no backslash escapes
/// in standard string literals).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"catalog"."schema"."table"`
pub fn qualified(catalog: &str, schema: &str, table: &str) -> String {
    format!("{}.{}.{}", ident(catalog), ident(schema), ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(ident("events"), "\"events\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident(""), "\"\"");
        assert_eq!(ident("a, b"), "\"a, b\"");
    }

    #[test]
    fn literals_double_their_quotes_and_keep_backslashes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("\\x"), "'\\x'");
        assert_eq!(literal("'; DROP TABLE t; --"), "'''; DROP TABLE t; --'");
    }

    #[test]
    fn qualified_names_quote_each_part() {
        assert_eq!(qualified("lake", "main", "my\"t"), "\"lake\".\"main\".\"my\"\"t\"");
    }
}
