//! Running a query's SQL text through a statement prepared without it.
//!
//! DuckDB binds a statement that reads a lake again each time it runs (a scan of data
//! files is never cached), so a statement prepared and then run was bound twice. A
//! query without parameters is run as [`RUN_QUERY_TEXT`] instead, its text passed as
//! the parameter: nothing is bound before it runs, and DuckDB plans the text as if it
//! had been sent itself. Parameters become session variables the text reads
//! ([`parameter_variable`]).

/// A statement running the single SELECT that is its one parameter. DuckDB's own
/// `query()`, qualified: the connection uses the lake's catalog, whose table macros
/// come first, and one named `query` would otherwise receive the query's text.
pub const RUN_QUERY_TEXT: &str = "SELECT * FROM system.main.query($1)";

/// The DuckDB variable holding parameter `n` (from 1) of a query run this way: its
/// text reads `getvariable(...)` of it where a prepared statement would read `$n`,
/// and the value is set (by a prepared `SET VARIABLE`) just before it runs. DuckDB
/// folds the variable into the plan as a constant when it binds the query.
pub fn parameter_variable(n: usize) -> String {
    format!("ducklake_parameter_{n}")
}

/// `message` without DuckDB's pointer into the statement that failed (`LINE 1: ...`
/// and a caret below it) when that statement is [`RUN_QUERY_TEXT`], which shows nothing
/// of the query. Only a pointer that ends the message is removed: a value the message
/// quotes may hold the same text.
pub fn without_wrapper_context(message: String) -> String {
    let context = format!("\n\nLINE 1: {RUN_QUERY_TEXT}\n");
    match message.rfind(&context) {
        Some(at) if message[at + context.len()..].chars().all(|c| c == ' ' || c == '^') => message[..at].to_owned(),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrappers_context_is_removed() {
        let message = "Binder Error: Referenced column \"nope\" not found in FROM clause!\n\
                       Candidate bindings: \"n_name\"\n\nLINE 1: SELECT * FROM system.main.query($1)\n                      ^";
        assert_eq!(
            without_wrapper_context(message.to_owned()),
            "Binder Error: Referenced column \"nope\" not found in FROM clause!\nCandidate bindings: \"n_name\""
        );
    }

    #[test]
    fn other_messages_are_kept_whole() {
        let own = "Binder Error: x\n\nLINE 1: SELECT nope FROM nation\n               ^";
        assert_eq!(without_wrapper_context(own.to_owned()), own);
        assert_eq!(without_wrapper_context("Invalid Input Error: boom".to_owned()), "Invalid Input Error: boom");
        assert_eq!(without_wrapper_context(String::new()), "");
        // the wrapper's text quoted inside the message, not the pointer that ends it
        let quoted = format!("Conversion Error: Could not convert string 'x\n\nLINE 1: {RUN_QUERY_TEXT}\n' to INT32");
        assert_eq!(without_wrapper_context(quoted.clone()), quoted);
    }
}
