//! The SQL that maintains one stream table: building its state from the lake, folding
//! a change buffer into the state (the delta rules), and projecting changed groups
//! into the result table. Every name is quoted; expressions come from ruleutils.

use crate::analysis::shape::{AggKind, FinalSql, Kind, SetOp, Shape};
use crate::error::{IvmError, IvmResult};
use crate::sql::ident;

/// Relations of one stream table.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The result table users query.
    pub result: String,
    /// One row per group with aggregate state.
    pub state: String,
    /// The state rows a refresh touched (same columns as `state`).
    pub affected: String,
    /// The rows' changes fetched for the current refresh, weighted ±1.
    pub buffer: String,
    /// Per lake source (by oid): the foreign table reading its change feed.
    pub feeds: Vec<(pgrx::pg_sys::Oid, String)>,
    /// Per lake source (by oid): the foreign table reading it as of the frontier.
    pub olds: Vec<(pgrx::pg_sys::Oid, String)>,
    /// Per Postgres source (by oid): its change log (see `capture`).
    pub logs: Vec<(pgrx::pg_sys::Oid, String)>,
    /// Per Postgres source (by oid): the work table it is replayed into as it was (see
    /// `replay`).
    pub was: Vec<(pgrx::pg_sys::Oid, String)>,
}

pub struct Statements<'a> {
    shape: &'a Shape,
    objects: &'a Objects,
    /// Result expressions and HAVING over the state (alias `s`).
    outputs: Vec<String>,
    having: Option<String>,
    top_n: Option<String>,
    calls: Vec<Option<String>>,
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

fn where_clause(extra: Option<String>) -> String {
    extra.map(|condition| format!(" WHERE {condition}")).unwrap_or_default()
}

fn group_by(shape: &Shape) -> String {
    if shape.kind == Kind::Scalar {
        String::new()
    } else {
        format!(" GROUP BY {}", list((1..=shape.keys.len()).map(|i| i.to_string())))
    }
}

/// The state computed from the rows themselves (alias `c`): the state table's
/// definition, the full rebuild, and (with `extra`) the rescan of groups whose min/max
/// was deleted. `calls`: the recomputed aggregates' calls (see `Shape::aggregate_calls`).
pub fn state_from_source(shape: &Shape, calls: &[Option<String>], extra: Option<String>) -> String {
    let mut columns: Vec<String> =
        shape.keys.iter().map(|k| format!("{} AS {}", k.expression, ident(&k.column))).collect();
    columns.push("pg_catalog.count(*) AS __pgt_count".into());
    columns.push("false AS __pgt_rescan".into());
    for (a, call) in shape.aggregates.iter().zip(calls) {
        let arg = a.argument.clone().unwrap_or_default();
        let col = |suffix: &str| ident(&format!("{}{suffix}", a.column));
        match a.kind {
            AggKind::CountStar => columns.push(format!("pg_catalog.count(*) AS {}", col(""))),
            AggKind::Count => columns.push(format!("pg_catalog.count({arg}) AS {}", col(""))),
            AggKind::Recomputed => columns.push(format!("{} AS {}", call.as_deref().unwrap_or("NULL"), col(""))),
            AggKind::Sum | AggKind::Min | AggKind::Max => {
                let f = a.kind.function();
                columns.push(format!("{f}({arg}) AS {}", col("")));
                columns.push(format!("pg_catalog.count({arg}) AS {}", col("_n")));
                columns.push(format!("{f}({arg}) AS {}", col("_ins")));
                columns.push(format!("{f}({arg}) AS {}", col("_del")));
            }
            AggKind::Avg => {
                let t = a.avg_sum_type.unwrap_or("numeric");
                columns.push(format!("pg_catalog.avg({arg}) AS {}", col("")));
                columns.push(format!("pg_catalog.count({arg}) AS {}", col("_n")));
                for suffix in ["_s", "_ins", "_del"] {
                    columns.push(format!("pg_catalog.sum(({arg})::{t}) AS {}", col(suffix)));
                }
            }
        }
    }
    format!("SELECT {} FROM ({}) c{}{}", list(columns), shape.rows.sql(), where_clause(extra), group_by(shape))
}

impl<'a> Statements<'a> {
    /// The statements of a stream table whose state table exists (the result
    /// expressions are deparsed against it).
    pub fn new(shape: &'a Shape, objects: &'a Objects) -> IvmResult<Self> {
        let state_relid = crate::sql::regclass(&objects.state)?;
        let FinalSql { outputs, having, top_n } = shape.final_sql(state_relid);
        let calls = shape.aggregate_calls(crate::sql::regclass(&objects.buffer)?);
        Ok(Statements { shape, objects, outputs, having, top_n, calls })
    }

    fn key_columns(&self) -> Vec<String> {
        self.shape.keys.iter().map(|k| ident(&k.column)).collect()
    }

    pub fn state_from_source(&self, extra: Option<String>) -> String {
        state_from_source(self.shape, &self.calls, extra)
    }

    /// Net change per group in the buffer (alias `c`, weight +1/-1 per change row).
    fn delta(&self) -> String {
        let mut columns: Vec<String> =
            self.shape.keys.iter().map(|k| format!("{} AS {}", k.expression, ident(&k.column))).collect();
        columns.push("coalesce(pg_catalog.sum(c.__pgt_weight), 0)::bigint AS __pgt_count".into());
        for a in &self.shape.aggregates {
            let arg = a.argument.clone().unwrap_or_default();
            let col = |suffix: &str| ident(&format!("d{}{suffix}", a.column));
            let nonnull = format!("coalesce(pg_catalog.sum(c.__pgt_weight) FILTER (WHERE ({arg}) IS NOT NULL), 0)::bigint AS {}", col("_n"));
            match a.kind {
                AggKind::CountStar => {}
                AggKind::Recomputed => {}
                AggKind::Count => columns.push(nonnull),
                AggKind::Sum | AggKind::Min | AggKind::Max => {
                    let f = a.kind.function();
                    columns.push(nonnull);
                    columns.push(format!("{f}({arg}) FILTER (WHERE c.__pgt_weight > 0) AS {}", col("_ins")));
                    columns.push(format!("{f}({arg}) FILTER (WHERE c.__pgt_weight < 0) AS {}", col("_del")));
                }
                AggKind::Avg => {
                    let t = a.avg_sum_type.unwrap_or("numeric");
                    columns.push(nonnull);
                    columns.push(format!("pg_catalog.sum(({arg})::{t}) FILTER (WHERE c.__pgt_weight > 0) AS {}", col("_ins")));
                    columns.push(format!("pg_catalog.sum(({arg})::{t}) FILTER (WHERE c.__pgt_weight < 0) AS {}", col("_del")));
                }
            }
        }
        format!("SELECT {} FROM {} c{}", list(columns), self.objects.buffer, group_by(self.shape))
    }

    /// Fold the buffer into the state; every state row touched lands in `affected`.
    pub fn apply_delta(&self) -> String {
        let mut insert_columns = self.key_columns();
        let mut proposed: Vec<String> = self.shape.keys.iter().map(|k| format!("d.{}", ident(&k.column))).collect();
        let mut updates: Vec<String> = vec!["__pgt_count = s.__pgt_count + excluded.__pgt_count".into()];
        let mut rescan_new: Vec<String> = Vec::new();
        let mut rescan_update: Vec<String> = Vec::new();
        insert_columns.push("__pgt_count".into());
        proposed.push("d.__pgt_count".into());
        for a in &self.shape.aggregates {
            let c = |suffix: &str| ident(&format!("{}{suffix}", a.column));
            let d = |suffix: &str| format!("d.{}", ident(&format!("d{}{suffix}", a.column)));
            let x = |suffix: &str| format!("excluded.{}", c(suffix));
            let s = |suffix: &str| format!("s.{}", c(suffix));
            let n_after = format!("({} + {})", s("_n"), x("_n"));
            match a.kind {
                AggKind::CountStar => {
                    insert_columns.push(c(""));
                    proposed.push("d.__pgt_count".into());
                    updates.push(format!("{} = {} + {}", c(""), s(""), x("")));
                }
                AggKind::Recomputed => {
                    // Unknown until the group is aggregated again, which every group
                    // the change touches is: one left with rows, and the one group of
                    // a query without GROUP BY even when it has none left (its value
                    // is then the aggregate over no rows, 0 for a count, NULL for most).
                    insert_columns.push(c(""));
                    proposed.push("NULL".into()); // untyped: the column's type
                    let scalar = self.shape.kind == Kind::Scalar;
                    rescan_new.push(if scalar { "true".into() } else { "d.__pgt_count > 0".into() });
                    rescan_update.push(if scalar { "true".into() } else { "(s.__pgt_count + excluded.__pgt_count) > 0".into() });
                }
                AggKind::Count => {
                    insert_columns.push(c(""));
                    proposed.push(d("_n"));
                    updates.push(format!("{} = {} + {}", c(""), s(""), x("")));
                }
                AggKind::Sum => {
                    insert_columns.extend([c(""), c("_n"), c("_ins"), c("_del")]);
                    proposed.push(format!(
                        "CASE WHEN {n} > 0 THEN coalesce({i}, 0) - coalesce({del}, 0) END",
                        n = d("_n"), i = d("_ins"), del = d("_del")
                    ));
                    proposed.extend([d("_n"), d("_ins"), d("_del")]);
                    updates.push(format!(
                        "{} = CASE WHEN {n_after} > 0 THEN coalesce({}, 0) + coalesce({}, 0) - coalesce({}, 0) END",
                        c(""), s(""), x("_ins"), x("_del")
                    ));
                    updates.push(format!("{} = {n_after}", c("_n")));
                    if a.inexact {
                        // old + inserted - deleted is not the float sum of the remaining
                        // rows (rounding; inf - inf is NaN): such groups are recomputed.
                        rescan_new.push(format!("{} IS NOT NULL", d("_del")));
                        rescan_update.push(format!("({n_after} > 0 AND {} IS NOT NULL)", x("_del")));
                    }
                }
                AggKind::Avg => {
                    insert_columns.extend([c(""), c("_n"), c("_s"), c("_ins"), c("_del")]);
                    let new_sum = format!("coalesce({}, 0) - coalesce({}, 0)", d("_ins"), d("_del"));
                    proposed.push(format!("CASE WHEN {n} > 0 THEN ({new_sum}) / {n} END", n = d("_n")));
                    proposed.push(d("_n"));
                    proposed.push(format!("CASE WHEN {} > 0 THEN {new_sum} END", d("_n")));
                    proposed.extend([d("_ins"), d("_del")]);
                    let updated_sum = format!("(coalesce({}, 0) + coalesce({}, 0) - coalesce({}, 0))", s("_s"), x("_ins"), x("_del"));
                    updates.push(format!("{} = CASE WHEN {n_after} > 0 THEN {updated_sum} / {n_after} END", c("")));
                    updates.push(format!("{} = CASE WHEN {n_after} > 0 THEN {updated_sum} END", c("_s")));
                    updates.push(format!("{} = {n_after}", c("_n")));
                    if a.inexact {
                        rescan_new.push(format!("{} IS NOT NULL", d("_del")));
                        rescan_update.push(format!("({n_after} > 0 AND {} IS NOT NULL)", x("_del")));
                    }
                }
                AggKind::Min | AggKind::Max => {
                    let (pick, cmp) = if a.kind == AggKind::Min { ("least", "<=") } else { ("greatest", ">=") };
                    insert_columns.extend([c(""), c("_n"), c("_ins"), c("_del")]);
                    proposed.extend([d("_ins"), d("_n"), d("_ins"), d("_del")]);
                    // A deleted value at or beyond the current extreme may have been
                    // the extreme: that group is recomputed from the lake.
                    rescan_new.push(format!("coalesce({del} {cmp} {ins}, {del} IS NOT NULL)", del = d("_del"), ins = d("_ins")));
                    let candidate = format!("{pick}({}, {})", s(""), x("_ins"));
                    updates.push(format!("{} = CASE WHEN {n_after} > 0 THEN {candidate} END", c("")));
                    updates.push(format!("{} = {n_after}", c("_n")));
                    rescan_update.push(format!(
                        "({n_after} > 0 AND {xd} IS NOT NULL AND coalesce({xd} {cmp} {candidate}, true))",
                        xd = x("_del")
                    ));
                }
            }
        }
        insert_columns.push("__pgt_rescan".into());
        proposed.push(if rescan_new.is_empty() { "false".into() } else { rescan_new.join(" OR ") });
        updates.push(format!(
            "__pgt_rescan = {}",
            if rescan_update.is_empty() { "false".into() } else { rescan_update.join(" OR ") }
        ));
        format!(
            "WITH up AS (INSERT INTO {state} AS s ({cols}) SELECT {proposed} FROM ({delta}) d \
             ON CONFLICT ({keys}) DO UPDATE SET {updates} RETURNING s.*) \
             INSERT INTO {affected} SELECT * FROM up",
            state = self.objects.state,
            cols = list(insert_columns),
            proposed = list(proposed),
            delta = self.delta(),
            keys = list(self.key_columns()),
            updates = list(updates),
            affected = self.objects.affected,
        )
    }

    /// Does any affected group need its min/max recomputed?
    pub fn needs_rescan(&self) -> String {
        format!("SELECT EXISTS (SELECT 1 FROM {} a WHERE a.__pgt_rescan AND {})", self.objects.affected, self.has_rows())
    }

    /// A flagged group is recomputed when it has rows, and the one group of a query
    /// without GROUP BY always (over no rows, its aggregates have their empty values).
    fn has_rows(&self) -> &'static str {
        if self.shape.kind == Kind::Scalar { "true" } else { "a.__pgt_count > 0" }
    }

    /// Recompute the flagged groups from the lake and record their new state.
    pub fn rescan(&self) -> String {
        let matches = self
            .shape
            .keys
            .iter()
            .map(|k| format!("a.{} IS NOT DISTINCT FROM ({})", ident(&k.column), k.expression))
            .collect::<Vec<_>>()
            .join(" AND ");
        let flagged = format!(
            "EXISTS (SELECT 1 FROM {} a WHERE a.__pgt_rescan AND {} AND {matches})",
            self.objects.affected,
            self.has_rows()
        );
        let state_columns = self.shape.state_columns();
        let keys = self.shape.keys.len();
        let updates = list(state_columns[keys..].iter().map(|c| format!("{0} = excluded.{0}", ident(c))));
        format!(
            "WITH up AS (INSERT INTO {state} AS s ({cols}) {select} ON CONFLICT ({keys}) DO UPDATE SET {updates} RETURNING s.*) \
             INSERT INTO {affected} SELECT * FROM up",
            state = self.objects.state,
            cols = list(state_columns.iter().map(|c| ident(c))),
            select = self.state_from_source(Some(flagged)),
            keys = list(self.key_columns()),
            affected = self.objects.affected,
        )
    }

    fn result_columns(&self) -> String {
        list(self.shape.outputs.iter().map(|c| ident(c)))
    }

    /// Result rows of the state rows in `from` (alias `s`).
    fn project(&self, from: &str, extra: Option<&str>) -> String {
        let copies = |count: String| format!(" CROSS JOIN LATERAL pg_catalog.generate_series(1::bigint, {count}) AS __pgt_copy");
        let repeat = match self.shape.kind {
            Kind::Plain => copies("s.__pgt_count".into()),
            Kind::Counted(op) => copies(op.copies("s.a1", "s.a2")),
            _ => String::new(),
        };
        let mut conditions: Vec<String> = extra.iter().map(|e| e.to_string()).collect();
        if self.shape.kind != Kind::Scalar {
            conditions.push("s.__pgt_count > 0".into());
        }
        if let Some(having) = &self.having {
            conditions.push(format!("({having})"));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let top_n = self.top_n.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {from} s{repeat}{filter}{top_n}",
            self.objects.result,
            self.result_columns(),
            list(self.outputs.iter().cloned())
        )
    }

    /// Remove every result row (before `insert_all_results`).
    pub fn delete_all_results(&self) -> String {
        format!("DELETE FROM {}", self.objects.result)
    }

    /// Insert the result rows of the affected groups (after `delete_affected_results`).
    pub fn insert_affected_results(&self) -> String {
        self.project(&self.objects.affected, Some("NOT s.__pgt_rescan"))
    }

    /// Result rows from the whole state (full rebuild).
    pub fn insert_all_results(&self) -> String {
        self.project(&self.objects.state, None)
    }

    /// Result columns holding keys, paired with their state columns.
    fn keyed_result_columns(&self) -> Vec<(String, String)> {
        self.shape.keys.iter().filter_map(|k| k.output.as_ref().map(|o| (ident(o), ident(&k.column)))).collect()
    }

    /// Remove the result rows of affected groups: by index-friendly equality for keys
    /// without NULLs, then (`with_nulls`) NULL-safely for the few groups with a NULL key.
    pub fn delete_affected_results(&self, with_nulls: bool) -> String {
        if self.shape.kind == Kind::Scalar {
            return format!("DELETE FROM {}", self.objects.result);
        }
        self.delete_matching(&self.objects.result, &self.keyed_result_columns(), None, with_nulls)
    }

    /// Drop state rows of groups that became empty. Whatever else such a row holds
    /// (a min flagged for recomputing, the running values of rows inserted and
    /// deleted within one refresh) describes no row any more: a group that is
    /// refilled later starts afresh.
    pub fn delete_empty_groups(&self, with_nulls: bool) -> String {
        let pairs: Vec<(String, String)> = self.key_columns().into_iter().map(|k| (k.clone(), k)).collect();
        self.delete_matching(&self.objects.state, &pairs, Some("a.__pgt_count = 0"), with_nulls)
    }

    fn delete_matching(&self, target: &str, pairs: &[(String, String)], condition: Option<&str>, with_nulls: bool) -> String {
        self.delete_matching_in(&self.objects.affected, target, pairs, condition, with_nulls)
    }

    fn delete_matching_in(&self, source: &str, target: &str, pairs: &[(String, String)], condition: Option<&str>, with_nulls: bool) -> String {
        let operator = if with_nulls { "IS NOT DISTINCT FROM" } else { "=" };
        let mut conditions: Vec<String> =
            pairs.iter().map(|(target_col, state_col)| format!("t.{target_col} {operator} a.{state_col}")).collect();
        if with_nulls {
            conditions.push(format!("({})", pairs.iter().map(|(_, s)| format!("a.{s} IS NULL")).collect::<Vec<_>>().join(" OR ")));
        }
        conditions.extend(condition.map(str::to_string));
        format!("DELETE FROM {target} t USING {source} a WHERE {}", conditions.join(" AND "))
    }

    /// Remove the result rows of the partitions the changes touch: by equality (a
    /// hash or index join), then (`with_nulls`) NULL-safely for partitions with a
    /// NULL key.
    pub fn delete_touched_partitions(&self, with_nulls: bool) -> String {
        self.delete_matching_in(&self.objects.buffer, &self.objects.result, &self.keyed_result_columns(), None, with_nulls)
    }

    /// Does any change name a partition with a NULL key?
    pub fn buffer_has_null_key(&self) -> String {
        let any_null = self.key_columns().iter().map(|k| format!("{k} IS NULL")).collect::<Vec<_>>().join(" OR ");
        format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {any_null})", self.objects.buffer)
    }

    /// The query's rows of the partitions the changes touch, the windows computed for
    /// those partitions only.
    pub fn insert_touched_partitions(&self) -> IvmResult<String> {
        let partitions = self.shape.partitions.as_ref().ok_or_else(|| IvmError::invalid("not a windowed stream table"))?;
        let mut columns: Vec<String> = self.shape.keys.iter().map(|k| k.column.clone()).collect();
        columns.push("__pgt_weight".into());
        let query = partitions.touched_sql(crate::sql::regclass(&self.objects.buffer)?, &columns);
        Ok(format!("INSERT INTO {} {query}", self.objects.result))
    }

    /// Does any affected group have a NULL key?
    pub fn affected_has_null_key(&self) -> String {
        let any_null = self.key_columns().iter().map(|k| format!("{k} IS NULL")).collect::<Vec<_>>().join(" OR ");
        format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {any_null})", self.objects.affected)
    }

    /// Unique (GROUP BY, DISTINCT) or plain (multiset) index on the result's key columns.
    pub fn result_index(&self) -> Option<String> {
        let columns: Vec<String> = self.keyed_result_columns().into_iter().map(|(r, _)| r).collect();
        if columns.is_empty() {
            return None;
        }
        Some(match self.shape.kind {
            Kind::Plain | Kind::Windowed | Kind::Counted(SetOp::IntersectAll | SetOp::ExceptAll) => {
                format!("CREATE INDEX ON {} ({})", self.objects.result, list(columns))
            }
            _ => format!("CREATE UNIQUE INDEX ON {} ({}) NULLS NOT DISTINCT", self.objects.result, list(columns)),
        })
    }

    pub fn state_index(&self) -> String {
        format!("CREATE UNIQUE INDEX ON {} ({}) NULLS NOT DISTINCT", self.objects.state, list(self.key_columns()))
    }
}
