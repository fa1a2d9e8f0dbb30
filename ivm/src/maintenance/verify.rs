//! Checking a stream table against its definition: the defining query evaluated at
//! the table's frontier must give exactly the table's rows (as a multiset).

use super::context::RefreshContext;
use super::refresh::{embeddable, owner_of, plan_for};
use crate::catalog::{self, Lock, frontier_snapshot};
use crate::error::{IvmError, IvmResult};
use crate::sql::relation_name;
use pgrx::JsonB;
use pgrx::prelude::*;

/// A row that is in one side only: `missing` from the table, or `extra` in it.
pub type Difference = (String, JsonB);

/// The differences between stream table `id` and its query at its frontier. The
/// catalog row is locked FOR SHARE, so no refresh commits between reading the
/// frontier and reading the table.
pub fn differences(id: i64) -> IvmResult<Vec<Difference>> {
    let table = catalog::load(id, Lock::Share)?.ok_or_else(|| IvmError::no_such_stream_table(&id.to_string()))?;
    let plan = plan_for(&table)?;
    let snapshot = match plan.sources.first() {
        Some(source) => Some(frontier_snapshot(&table.frontier, &source.key, &table.name)?.ok_or_else(|| {
            IvmError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("stream table {} has no frontier yet; refresh it first", table.name),
            )
        })?),
        None => None,
    };
    let context = RefreshContext::enter(owner_of(table.relid)?);
    if let Some(at) = snapshot {
        context.pin_snapshot(at);
    }
    let query = format!(
        "WITH st AS (SELECT * FROM {result}), q AS ({query}) \
         SELECT 'extra', to_jsonb(e) FROM (SELECT * FROM st EXCEPT ALL SELECT * FROM q) e \
         UNION ALL \
         SELECT 'missing', to_jsonb(m) FROM (SELECT * FROM q EXCEPT ALL SELECT * FROM st) m",
        result = relation_name(table.relid),
        query = embeddable(&table.query),
    );
    let rows = Spi::connect(|client| {
        let mut rows = Vec::new();
        for row in client.select(&query, None, &[])? {
            rows.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<JsonB>(2)?.unwrap_or(JsonB(serde_json::Value::Null))));
        }
        Ok::<_, IvmError>(rows)
    })?;
    drop(context); // reverts the pinned snapshot
    Ok(rows)
}
