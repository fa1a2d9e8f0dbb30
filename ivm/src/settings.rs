//! The settings a stream table's query depends on, recorded when the query is defined
//! and applied to every refresh of it (FULL or differential, by the scheduler or by
//! hand), so its contents never depend on who refreshes it: `date_trunc('day', ts)`
//! of a timestamptz is another day in Tokyo than in UTC.

use crate::error::IvmResult;
use pgrx::prelude::*;
use serde_json::{Map, Value};

/// Settings that change what a query computes or how values print.
const RECORDED: &[&str] = &[
    "TimeZone",
    "DateStyle",
    "IntervalStyle",
    "extra_float_digits",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "bytea_output",
    "xmlbinary",
    "xmloption",
    "default_text_search_config",
    "search_path",
];

/// The current values of the recorded settings. The search path is recorded as the
/// schemas it resolves to, with `pg_catalog` first and `pg_temp` last, so that
/// nothing the query's functions look up at run time can be shadowed by a look-alike
/// of a built-in or by a temporary object of whichever session refreshes.
pub fn capture() -> IvmResult<Value> {
    let mut settings = Map::new();
    for name in RECORDED.iter().filter(|n| **n != "search_path") {
        let value: Option<String> = Spi::get_one_with_args("SELECT pg_catalog.current_setting($1)", &[(*name).into()])?;
        settings.insert((*name).to_owned(), Value::String(value.unwrap_or_default()));
    }
    let path: Option<String> = Spi::get_one(
        "SELECT pg_catalog.concat_ws(', ', 'pg_catalog', \
                (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY n) \
                   FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS t(s, n) \
                  WHERE s <> 'pg_catalog' AND s NOT LIKE 'pg\\_temp%'), 'pg_temp')",
    )?;
    settings.insert("search_path".to_owned(), Value::String(path.unwrap_or_else(|| "pg_catalog, pg_temp".into())));
    Ok(Value::Object(settings))
}

/// Apply `recorded` for the rest of the current GUC nesting level (see
/// `maintenance::context`). A setting missing from the record (a stream table defined
/// before it was recorded) keeps the session's value, except the search path, which
/// then is `pg_catalog, pg_temp`.
pub fn apply(recorded: &Value) -> IvmResult<()> {
    for name in RECORDED {
        let value = match recorded.get(*name).and_then(Value::as_str) {
            Some(value) => value.to_owned(),
            None if *name == "search_path" => "pg_catalog, pg_temp".to_owned(),
            None => continue,
        };
        Spi::run_with_args("SELECT pg_catalog.set_config($1, $2, true)", &[(*name).into(), value.into()])?;
    }
    Ok(())
}
