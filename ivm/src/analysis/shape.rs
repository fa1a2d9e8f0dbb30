//! What a defining query computes, as far as differential maintenance needs to know:
//! the rows it reads (see `rows`: one lake table or an inner join of several, with
//! their WHERE), its grouping keys and its aggregates.
//!
//! Every stream table is maintained through a *state table* holding one row per
//! group: the group key, the number of source rows in it (`__pgt_count`) and the
//! running state of each aggregate. A query without aggregates is the special case of
//! grouping by every output column (the count is the row's multiplicity).

use super::parse::{PostgresSource, Source, lake_source, postgres_source};
use super::relations::source_relations;
use super::rows::Rows;
pub use super::aggregates::{AggKind, Aggregate};
use super::sublinks::{aggregates_in, check_sublink, sublinks_in};
use super::aggregates::aggregate_of;
use super::tree::{deparse, equal, int4_one, mutate, var_like};
use super::types::{name_of_function, require_key_type};
use super::windows;
use crate::sql::ident;
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};
use std::ffi::CStr;

/// How result rows relate to state rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SELECT without aggregates or DISTINCT: each state row appears `__pgt_count` times.
    Plain,
    /// SELECT DISTINCT: each state row with a positive count appears once.
    Distinct,
    /// GROUP BY: one row per group with a positive count that passes HAVING.
    Grouped,
    /// Aggregates without GROUP BY: always exactly one state row (key `__pgt_one`).
    Scalar,
    /// INTERSECT or EXCEPT [ALL] of two SELECTs: each state row (all columns) counts
    /// its rows on either side (`a1` left, `a2` right), and appears as often as the
    /// set operation says.
    Counted(SetOp),
    /// Window functions, all partitioned by the keys (result columns): the rows'
    /// changes name the partitions they touch, whose result rows are computed again
    /// by the query itself (see `windows`); the state is not used.
    Windowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Intersect,
    IntersectAll,
    Except,
    ExceptAll,
}

impl SetOp {
    /// How often a row appears with `left` copies on the left and `right` on the
    /// right, as the SQL standard and Postgres define it.
    pub fn copies(self, left: &str, right: &str) -> String {
        match self {
            // LEAST and GREATEST are SQL syntax, not functions a search path could shadow.
            SetOp::IntersectAll => format!("LEAST({left}, {right})"),
            SetOp::ExceptAll => format!("GREATEST({left} - {right}, 0)"),
            SetOp::Intersect => format!("CASE WHEN {left} > 0 AND {right} > 0 THEN 1 ELSE 0 END"),
            SetOp::Except => format!("CASE WHEN {left} > 0 AND {right} = 0 THEN 1 ELSE 0 END"),
        }
    }
}

/// A grouping key: its column of the rows and where it appears in the result.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key's column of the rows (alias `c`).
    pub expression: String,
    /// State column name (`k1`, ...).
    pub column: String,
    /// The result column holding this key (None for the Scalar kind's constant key).
    pub output: Option<String>,
}

/// A differential maintenance plan's view of the query.
#[derive(Debug)]
pub struct Shape {
    /// Keys and aggregate arguments of the rows FROM and WHERE produce.
    pub rows: Rows,
    pub kind: Kind,
    pub keys: Vec<Key>,
    pub aggregates: Vec<Aggregate>,
    /// Result column names, in order.
    pub outputs: Vec<String>,
    /// Result expressions and HAVING rewritten onto state columns (Vars of relation 1);
    /// deparsed once the state table exists (see `final_sql`).
    output_trees: Vec<*mut pg_sys::Node>,
    having_tree: Option<*mut pg_sys::Node>,
    /// Whether HAVING reads tables (in uncorrelated subquery expressions).
    having_reads: bool,
    /// The Postgres tables HAVING reads: captured like the rows' sources, so that their
    /// changes make a refresh take the result again.
    having_postgres: Vec<PostgresSource>,
    /// ORDER BY and LIMIT/OFFSET, when the result is the first rows of the state.
    top_n: Option<TopN>,
    /// A windowed query: how to compute its rows of chosen partitions.
    pub partitions: Option<super::windows::Partitions>,
}

/// One ORDER BY item, rewritten onto state columns.
#[derive(Debug)]
struct SortKey {
    tree: *mut pg_sys::Node,
    direction: &'static str,
    nulls_first: bool,
}

/// The first rows of the result in an order (see `top_n_of`).
#[derive(Debug)]
struct TopN {
    order: Vec<SortKey>,
    /// LIMIT and OFFSET: expressions without columns, as the query has them.
    count: Option<*mut pg_sys::Node>,
    offset: Option<*mut pg_sys::Node>,
    with_ties: bool,
}

/// What the state becomes in the result, as SQL over the state table (alias `s`).
pub struct FinalSql {
    pub outputs: Vec<String>,
    pub having: Option<String>,
    /// `ORDER BY ... LIMIT ...` taking the result's rows, when the query has LIMIT.
    pub top_n: Option<String>,
}

const STATE_KEY_PREFIX: &str = "k";

impl Shape {
    /// A shape whose result is computed again per partition (see `windows`): its keys
    /// are the partitions, with no aggregates or result expressions over the state.
    pub fn windowed(rows: Rows, keys: Vec<Key>, outputs: Vec<String>, partitions: super::windows::Partitions) -> Shape {
        Shape {
            partitions: Some(partitions),
            rows,
            kind: Kind::Windowed,
            keys,
            aggregates: Vec::new(),
            outputs,
            output_trees: Vec::new(),
            having_tree: None,
            having_reads: false,
            having_postgres: Vec::new(),
            top_n: None,
        }
    }

}

impl Shape {
    /// State-table column names in order: keys, `__pgt_count`, `__pgt_rescan`, aggregates.
    pub fn state_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self.keys.iter().map(|k| k.column.clone()).collect();
        columns.push("__pgt_count".into());
        columns.push("__pgt_rescan".into());
        for aggregate in &self.aggregates {
            columns.extend(aggregate.state_columns());
        }
        columns
    }

    /// Result expressions, HAVING and top-N over the state table `state_relid`, alias `s`.
    pub fn final_sql(&self, state_relid: pg_sys::Oid) -> FinalSql {
        let sql = |tree: *mut pg_sys::Node| deparse(tree, "s", state_relid);
        let outputs = self.output_trees.iter().map(|t| sql(*t)).collect();
        let having = self.having_tree.map(sql);
        let top_n = self.top_n.as_ref().map(|top| {
            let order = top
                .order
                .iter()
                .map(|k| format!("({}) {} NULLS {}", sql(k.tree), k.direction, if k.nulls_first { "FIRST" } else { "LAST" }))
                .collect::<Vec<_>>()
                .join(", ");
            let offset = top.offset.map(|o| format!(" OFFSET ({}) ROWS", sql(o))).unwrap_or_default();
            let count = match (top.count, top.with_ties) {
                // Every row ties under an order of constants: WITH TIES keeps them all.
                (Some(_), true) if order.is_empty() => String::new(),
                (Some(c), true) => format!(" FETCH FIRST ({}) ROWS WITH TIES", sql(c)),
                (Some(c), false) => format!(" FETCH FIRST ({}) ROWS ONLY", sql(c)),
                (None, _) => String::new(),
            };
            let order = if order.is_empty() { String::new() } else { format!("ORDER BY {order}") };
            format!("{order}{offset}{count}")
        });
        FinalSql { outputs, having, top_n }
    }

    /// Each aggregate's call over the rows (alias `c`) when it is recomputed, deparsed
    /// against `rows_relid`, a table with the rows' columns (the change buffer).
    pub fn aggregate_calls(&self, rows_relid: pg_sys::Oid) -> Vec<Option<String>> {
        self.aggregates.iter().map(|a| a.call_sql(rows_relid)).collect()
    }

    /// Whether every refresh with changes takes the result from the whole state again:
    /// it is the state's first rows (LIMIT), or HAVING compares each group with a
    /// subquery, whose value a change of its tables can move for every group (TPC-H
    /// 11). The projection then reads the lake at the refresh's snapshot, and Postgres
    /// tables in the refresh's read snapshot.
    pub fn reprojects_all(&self) -> bool {
        self.top_n.is_some() || self.having_reads
    }

    /// The Postgres tables whose changes a refresh must see: those of the rows (at any
    /// depth) and those HAVING's subqueries read, each once.
    pub fn postgres_sources(&self) -> Vec<PostgresSource> {
        let mut sources: Vec<PostgresSource> = Vec::new();
        let of_rows = self.rows.all_occurrences().into_iter().filter_map(|o| match &o.source {
            Source::Postgres(source) => Some(source.clone()),
            _ => None,
        });
        for source in of_rows.chain(self.having_postgres.iter().cloned()) {
            if !sources.iter().any(|s| s.relid == source.relid) {
                sources.push(source);
            }
        }
        sources
    }
}

/// Analyze `query` for differential maintenance, or say which construct prevents it.
pub fn shape_of(query: *mut pg_sys::Query) -> IvmResult<Shape> {
    // SAFETY: reads an analyzed Query tree produced by parse::analyze.
    unsafe {
        super::ctes::inline_ctes(query)?;
        // Before the rewrites below, which make a whole-row reference a ROW of columns.
        if let Some(construct) = changing_between_refreshes(query as *mut pg_sys::Node) {
            return Err(IvmError::unsupported(construct));
        }
        super::plain_joins::spell_out_joins(query)?;
        super::nullable_joins::wrap_nullable_joins(query)?;
        super::nullable_subselects::merge_nullable_subselects(query)?;
        let q = &*query;
        if q.hasTargetSRFs {
            return Err(IvmError::unsupported("a set-returning function in the select list"));
        }
        if !q.rowMarks.is_null() {
            return Err(IvmError::unsupported("FOR UPDATE/SHARE"));
        }
        if !q.groupingSets.is_null() {
            return Err(IvmError::unsupported("GROUPING SETS/ROLLUP/CUBE"));
        }
        if q.hasDistinctOn {
            return Err(IvmError::unsupported("DISTINCT ON"));
        }
        if pg_sys::contain_volatile_functions(query as *mut pg_sys::Node) {
            return Err(IvmError::unsupported("a volatile function (its result would differ between refreshes)"));
        }
        if !q.setOperations.is_null() {
            return union_shape(query);
        }
        if q.hasWindowFuncs {
            return windowed_shape(windows::windowed(query)?);
        }
        if let Some(rtindex) = windows::windowed_subselect(q) {
            return windowed_shape(windows::windowed_below(query, rtindex)?);
        }

        let occurrences = source_relations(q)?;
        // Expressions in messages: as SQL over the source when there is one relation.
        let joined = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr().any(|r| (*r).rtekind == pg_sys::RTEKind::RTE_JOIN);
        let describe = |node: *mut pg_sys::Node, fallback: String| match occurrences.as_slice() {
            [only] if !joined && only.path.is_empty() && only.derived.is_none() => deparse(node, "c", only.source.relid()),
            _ => fallback,
        };

        #[cfg_attr(not(feature = "pg18"), allow(unused_mut))]
        let mut target_list = q.targetList as *mut pg_sys::Node;
        #[cfg_attr(not(feature = "pg18"), allow(unused_mut))]
        let mut having = q.havingQual;
        #[cfg(feature = "pg18")]
        if q.hasGroupRTE {
            target_list = pg_sys::flatten_group_exprs(std::ptr::null_mut(), query, target_list);
            having = pg_sys::flatten_group_exprs(std::ptr::null_mut(), query, having);
        }
        let target_list = PgList::<pg_sys::TargetEntry>::from_pg(target_list as *mut pg_sys::List);
        let visible: Vec<*mut pg_sys::TargetEntry> = target_list.iter_ptr().filter(|t| !(**t).resjunk).collect();
        let outputs: Vec<String> = visible
            .iter()
            .map(|t| if (**t).resname.is_null() { "?column?".into() } else { CStr::from_ptr((**t).resname).to_string_lossy().into_owned() })
            .collect();

        let grouped = q.hasAggs || !q.groupClause.is_null();
        let kind = if grouped {
            if !q.distinctClause.is_null() {
                return Err(IvmError::unsupported("DISTINCT together with GROUP BY or aggregates"));
            }
            if q.groupClause.is_null() { Kind::Scalar } else { Kind::Grouped }
        } else if !q.distinctClause.is_null() {
            Kind::Distinct
        } else {
            Kind::Plain
        };

        // Keys: the GROUP BY expressions, or every output column; each is a column of
        // the rows named like its state column.
        let mut key_trees: Vec<*mut pg_sys::Node> = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        let mut row_columns: Vec<(String, *mut pg_sys::Node)> = Vec::new();
        let mut add_key = |keys: &mut Vec<Key>, column: String, tree: *mut pg_sys::Node, output: Option<String>| {
            keys.push(Key { expression: format!("c.{}", ident(&column)), column: column.clone(), output });
            row_columns.push((column, tree));
        };
        match kind {
            Kind::Grouped => {
                for (position, clause) in PgList::<pg_sys::SortGroupClause>::from_pg(q.groupClause).iter_ptr().enumerate() {
                    let entry = target_list
                        .iter_ptr()
                        .find(|t| (**t).ressortgroupref == (*clause).tleSortGroupRef)
                        .ok_or_else(|| IvmError::unsupported("a GROUP BY expression outside the select list"))?;
                    let expression = (*entry).expr as *mut pg_sys::Node;
                    let text = describe(expression, format!("item {}", position + 1));
                    let output = match visible.iter().position(|t| equal((**t).expr as _, expression)) {
                        Some(i) => outputs[i].clone(),
                        None => {
                            return Err(IvmError::unsupported(format!("GROUP BY {text} without that expression in the select list")));
                        }
                    };
                    require_key_type(expression, &format!("grouping by {}", describe(expression, format!("\"{output}\""))))?;
                    let column = format!("{STATE_KEY_PREFIX}{}", keys.len() + 1);
                    add_key(&mut keys, column, expression, Some(output));
                    key_trees.push(expression);
                }
            }
            Kind::Scalar => {
                // The one group's constant key; as a column of the rows too, so that
                // they have a column when the only aggregate is count(*).
                let one = pg_sys::makeConst(pg_sys::INT4OID, -1, pg_sys::InvalidOid, 4, pg_sys::Datum::from(1i32), false, true);
                add_key(&mut keys, "__pgt_one".into(), one as *mut pg_sys::Node, None);
                keys[0].expression = "1".into();
            }
            // Set operations are shaped by `union_shape` and windows by `windows`, never here.
            Kind::Plain | Kind::Distinct | Kind::Counted(_) | Kind::Windowed => {
                for (i, entry) in visible.iter().enumerate() {
                    let expression = (**entry).expr as *mut pg_sys::Node;
                    require_key_type(expression, &format!("result column \"{}\"", outputs[i]))?;
                    add_key(&mut keys, format!("{STATE_KEY_PREFIX}{}", i + 1), expression, Some(outputs[i].clone()));
                    key_trees.push(expression);
                }
            }
        }
        if keys.len() > 32 {
            return Err(IvmError::unsupported("more than 32 grouping keys"));
        }

        // Rewrite the result expressions and HAVING onto state columns, registering
        // each distinct aggregate (and its argument as a column of the rows) on the way.
        let mut aggregates: Vec<(Aggregate, *mut pg_sys::Node, i16)> = Vec::new();
        let mut next_attno = keys.len() as i16 + 3; // keys, __pgt_count, __pgt_rescan
        let mut failure: Option<IvmError> = None;
        let mut to_state = |node: *mut pg_sys::Node| -> Option<*mut pg_sys::Node> {
            if let Some(i) = key_trees.iter().position(|k| equal(node, *k)) {
                return Some(var_like(node, i as i16 + 1));
            }
            // A column neither grouped nor aggregated: Postgres allows one that a grouped
            // primary key determines, which the state does not keep.
            if pgrx::is_a(node, pg_sys::NodeTag::T_Var) && (*(node as *mut pg_sys::Var)).varlevelsup == 0 {
                failure.get_or_insert(IvmError::unsupported(
                    "a column that is neither grouped nor aggregated (one a grouped primary key determines)",
                ));
                return Some(node);
            }
            if pgrx::is_a(node, pg_sys::NodeTag::T_Aggref) {
                if let Some((_, _, attno)) = aggregates.iter().find(|(_, n, _)| equal(*n, node)) {
                    return Some(var_like(node, *attno));
                }
                match aggregate_of(node as *mut pg_sys::Aggref, aggregates.len() + 1, row_columns.len() as i16 + 1) {
                    Ok((aggregate, columns)) => {
                        row_columns.extend(columns);
                        let attno = next_attno;
                        next_attno += aggregate.state_columns().len() as i16;
                        aggregates.push((aggregate, node, attno));
                        return Some(var_like(node, attno));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        return Some(node);
                    }
                }
            }
            None
        };
        let output_trees: Vec<*mut pg_sys::Node> = visible.iter().map(|t| mutate((**t).expr as _, &mut to_state)).collect();
        let having_postgres = having_subqueries(having)?;
        let having_reads = having_postgres.is_some();
        let having_postgres = having_postgres.unwrap_or_default();
        let having_tree = if having.is_null() { None } else { Some(mutate(having, &mut to_state)) };
        let top_n = top_n_of(q, &target_list, kind, &key_trees, &mut to_state)?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Shape {
            rows: Rows::new(query, occurrences, row_columns),
            kind,
            keys,
            aggregates: aggregates.into_iter().map(|(a, _, _)| a).collect(),
            outputs,
            output_trees,
            having_tree,
            having_reads,
            having_postgres,
            top_n,
            partitions: None,
        })
    }
}

/// A query local to partitions (see `windows`): its keys are the partitions, shown by
/// result columns; its rows, the partitioned level's FROM and WHERE.
unsafe fn windowed_shape(windowed: windows::Windowed) -> IvmResult<Shape> {
    unsafe {
        let mut keys = Vec::new();
        let mut columns = Vec::new();
        for (expression, output) in &windowed.partition {
            require_key_type(*expression, &format!("partitioning by result column \"{output}\""))?;
            let column = format!("{STATE_KEY_PREFIX}{}", keys.len() + 1);
            keys.push(Key { expression: format!("c.{}", ident(&column)), column: column.clone(), output: Some(output.clone()) });
            columns.push((column, *expression));
        }
        if keys.len() > 32 {
            return Err(IvmError::unsupported("more than 32 partition columns"));
        }
        let occurrences = source_relations(&*windowed.level)?;
        Ok(Shape::windowed(Rows::new(windowed.level, occurrences, columns), keys, windowed.outputs, windowed.partitions))
    }
}

/// Whether HAVING holds subquery expressions, each uncorrelated (the same value for
/// every group) and reading lake tables (read at the refresh's snapshot when the
/// result is projected) and Postgres tables (read in the refresh's read snapshot,
/// their changes captured): the Postgres tables, or None without subqueries.
/// Refused otherwise.
unsafe fn having_subqueries(having: *mut pg_sys::Node) -> IvmResult<Option<Vec<PostgresSource>>> {
    unsafe {
        // Inside an aggregate, a subquery's value is folded into the group's running
        // value when its rows arrive: a later change of its tables would not reach it.
        for aggregate in aggregates_in(having) {
            if !sublinks_in(aggregate as *mut pg_sys::Node).is_empty() {
                return Err(IvmError::unsupported("a subquery expression inside an aggregate"));
            }
        }
        let sublinks = sublinks_in(having);
        let mut postgres = Vec::new();
        for sublink in &sublinks {
            check_sublink(*sublink)?;
            let sub = (**sublink).subselect;
            if pg_sys::contain_vars_of_level(sub, 1) {
                return Err(IvmError::unsupported("a subquery expression in HAVING that refers to the group"));
            }
            for relid in super::parse::relations_read(sub as *mut pg_sys::Query) {
                if lake_source(relid)?.is_some() {
                    continue;
                }
                match postgres_source(relid)? {
                    Some(source) => postgres.push(source),
                    None => {
                        return Err(IvmError::unsupported(format!(
                            "reading {} in a subquery expression in HAVING (only lake and Postgres tables can be read there)",
                            crate::sql::relation_name(relid)
                        )));
                    }
                }
            }
        }
        Ok((!sublinks.is_empty()).then_some(postgres))
    }
}

/// The ORDER BY and LIMIT of a query whose result is its first rows in that order:
/// the rows of every group are kept in the state as without LIMIT, and the result is
/// the first rows of the state in the query's order, taken again after every
/// refresh that changed the state (the cost of sorting the groups, not of reading
/// the lake). Ties at the limit are broken as any run of the query may break them,
/// unless WITH TIES keeps them all.
unsafe fn top_n_of(
    q: &pg_sys::Query,
    target_list: &PgList<pg_sys::TargetEntry>,
    kind: Kind,
    key_trees: &[*mut pg_sys::Node],
    to_state: &mut dyn FnMut(*mut pg_sys::Node) -> Option<*mut pg_sys::Node>,
) -> IvmResult<Option<TopN>> {
    unsafe {
        if q.limitCount.is_null() && q.limitOffset.is_null() {
            return Ok(None);
        }
        if q.sortClause.is_null() {
            return Err(IvmError::unsupported("LIMIT/OFFSET without ORDER BY (which rows it keeps is arbitrary)"));
        }
        for bound in [q.limitCount, q.limitOffset] {
            if !bound.is_null() && !sublinks_in(bound).is_empty() {
                return Err(IvmError::unsupported("a subquery expression in LIMIT/OFFSET"));
            }
        }
        let mut order = Vec::new();
        for clause in PgList::<pg_sys::SortGroupClause>::from_pg(q.sortClause).iter_ptr() {
            let entry = target_list
                .iter_ptr()
                .find(|t| (**t).ressortgroupref == (*clause).tleSortGroupRef)
                .ok_or_else(|| IvmError::unsupported("this ORDER BY"))?;
            let expression = (*entry).expr as *mut pg_sys::Node;
            // Without aggregates the state holds the result columns only.
            if matches!(kind, Kind::Plain | Kind::Distinct) && !key_trees.iter().any(|k| equal(*k, expression)) {
                return Err(IvmError::unsupported("ORDER BY an expression that is not a result column, with LIMIT"));
            }
            let type_oid = pg_sys::exprType(expression);
            let cache = pg_sys::lookup_type_cache(type_oid, (pg_sys::TYPECACHE_LT_OPR | pg_sys::TYPECACHE_GT_OPR) as i32);
            let direction = if (*clause).sortop == (*cache).lt_opr {
                "ASC"
            } else if (*clause).sortop == (*cache).gt_opr {
                "DESC"
            } else {
                return Err(IvmError::unsupported("ORDER BY ... USING an operator other than the type's < or >, with LIMIT"));
            };
            let tree = mutate(expression, &mut |n| to_state(n));
            // A constant does not order anything, and printed alone it would name a
            // column position.
            if !pgrx::is_a(tree, pg_sys::NodeTag::T_Const) {
                order.push(SortKey { tree, direction, nulls_first: (*clause).nulls_first });
            }
        }
        Ok(Some(TopN {
            order,
            count: (!q.limitCount.is_null()).then_some(q.limitCount),
            offset: (!q.limitOffset.is_null()).then_some(q.limitOffset),
            with_ties: q.limitOption == pg_sys::LimitOption::LIMIT_OPTION_WITH_TIES,
        }))
    }
}

/// A UNION [ALL] of SELECTs, each of the rows of one table or an inner join (no
/// aggregates): its rows are the branches' rows added up, each a state row keyed by
/// all its columns, counted (UNION ALL) or present once (UNION, which removes the
/// duplicates of every branch below it too).
unsafe fn union_shape(query: *mut pg_sys::Query) -> IvmResult<Shape> {
    unsafe {
        let q = &*query;
        if !q.limitCount.is_null() || !q.limitOffset.is_null() {
            return Err(IvmError::unsupported("LIMIT/OFFSET on a set operation"));
        }
        let top = q.setOperations as *mut pg_sys::SetOperationStmt;
        let mut leaves = Vec::new();
        let kind = match ((*top).op, (*top).all) {
            (pg_sys::SetOperation::SETOP_UNION, all) => {
                let mut all_along = true;
                union_leaves(top as *mut pg_sys::Node, &mut leaves, &mut all_along)?;
                match (all, all_along) {
                    (false, _) => Kind::Distinct,
                    (true, true) => Kind::Plain,
                    (true, false) => return Err(IvmError::unsupported("UNION below UNION ALL")),
                }
            }
            (op, all) => {
                let name = if op == pg_sys::SetOperation::SETOP_INTERSECT { "INTERSECT" } else { "EXCEPT" };
                for side in [(*top).larg, (*top).rarg] {
                    if !pgrx::is_a(side, pg_sys::NodeTag::T_RangeTblRef) {
                        return Err(IvmError::unsupported(format!("{name} of set operations (only of two SELECTs)")));
                    }
                    leaves.push((*(side as *mut pg_sys::RangeTblRef)).rtindex as usize);
                }
                Kind::Counted(match (op, all) {
                    (pg_sys::SetOperation::SETOP_INTERSECT, false) => SetOp::Intersect,
                    (pg_sys::SetOperation::SETOP_INTERSECT, true) => SetOp::IntersectAll,
                    (_, false) => SetOp::Except,
                    (_, true) => SetOp::ExceptAll,
                })
            }
        };
        let target_list = PgList::<pg_sys::TargetEntry>::from_pg(q.targetList);
        let visible: Vec<*mut pg_sys::TargetEntry> = target_list.iter_ptr().filter(|t| !(**t).resjunk).collect();
        let outputs: Vec<String> = visible
            .iter()
            .map(|t| if (**t).resname.is_null() { "?column?".into() } else { CStr::from_ptr((**t).resname).to_string_lossy().into_owned() })
            .collect();
        let mut keys = Vec::new();
        let mut key_trees = Vec::new();
        for (i, entry) in visible.iter().enumerate() {
            let expression = (**entry).expr as *mut pg_sys::Node;
            require_key_type(expression, &format!("result column \"{}\"", outputs[i]))?;
            let column = format!("{STATE_KEY_PREFIX}{}", i + 1);
            keys.push(Key { expression: format!("c.{}", ident(&column)), column, output: Some(outputs[i].clone()) });
            key_trees.push(expression);
        }
        // INTERSECT/EXCEPT: per side, a column that is 1 on that side's rows (NULL on
        // the other's), counted as aggregates a1 and a2.
        let sides = matches!(kind, Kind::Counted(_));
        let aggregates: Vec<Aggregate> = if sides {
            ["a1", "a2"]
                .iter()
                .map(|column| Aggregate::count_of_column(column))
                .collect()
        } else {
            Vec::new()
        };
        let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable);
        let mut branches = Vec::new();
        for (side, leaf) in leaves.into_iter().enumerate() {
            let rte = rtable.get_ptr(leaf - 1).ok_or_else(|| IvmError::unsupported("this UNION"))?;
            let branch = (*rte).subquery;
            if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY || branch.is_null() {
                return Err(IvmError::unsupported("this UNION"));
            }
            let b = &*branch;
            if b.hasAggs || !b.groupClause.is_null() || !b.havingQual.is_null() || !b.distinctClause.is_null()
                || b.hasWindowFuncs || !b.cteList.is_null() || b.hasTargetSRFs
                || !b.limitCount.is_null() || !b.limitOffset.is_null() || !b.setOperations.is_null()
            {
                return Err(IvmError::unsupported("a UNION branch with aggregates, DISTINCT, WITH or LIMIT"));
            }
            let occurrences = source_relations(b)?;
            let mut columns: Vec<(String, *mut pg_sys::Node)> = PgList::<pg_sys::TargetEntry>::from_pg(b.targetList)
                .iter_ptr()
                .filter(|t| !(**t).resjunk)
                .zip(&keys)
                .map(|(t, key)| (key.column.clone(), (*t).expr as *mut pg_sys::Node))
                .collect();
            if sides {
                let one = int4_one();
                let null = pg_sys::makeNullConst(pg_sys::INT4OID, -1, pg_sys::InvalidOid) as *mut pg_sys::Node;
                columns.push(("a1".into(), if side == 0 { one } else { null }));
                columns.push(("a2".into(), if side == 0 { null } else { one }));
            }
            branches.push((branch, occurrences, columns));
        }
        let mut to_state = |node: *mut pg_sys::Node| -> Option<*mut pg_sys::Node> {
            key_trees.iter().position(|k| equal(node, *k)).map(|i| var_like(node, i as i16 + 1))
        };
        let output_trees: Vec<*mut pg_sys::Node> = visible.iter().map(|t| mutate((**t).expr as _, &mut to_state)).collect();
        Ok(Shape {
            rows: Rows::union(branches),
            kind,
            keys,
            aggregates,
            outputs,
            output_trees,
            having_tree: None,
            having_reads: false,
            having_postgres: Vec::new(),
            top_n: None,
            partitions: None,
        })
    }
}

/// The range-table indexes of a UNION tree's SELECTs; `all_along` turns false below
/// a UNION that removes duplicates.
unsafe fn union_leaves(node: *mut pg_sys::Node, leaves: &mut Vec<usize>, all_along: &mut bool) -> IvmResult<()> {
    unsafe {
        if pgrx::is_a(node, pg_sys::NodeTag::T_RangeTblRef) {
            leaves.push((*(node as *mut pg_sys::RangeTblRef)).rtindex as usize);
            return Ok(());
        }
        let s = node as *mut pg_sys::SetOperationStmt;
        match (*s).op {
            pg_sys::SetOperation::SETOP_UNION => {}
            pg_sys::SetOperation::SETOP_INTERSECT => return Err(IvmError::unsupported("INTERSECT below a UNION")),
            _ => return Err(IvmError::unsupported("EXCEPT below a UNION")),
        }
        *all_along &= (*s).all;
        union_leaves((*s).larg, leaves, all_along)?;
        union_leaves((*s).rarg, leaves, all_along)
    }
}

/// What in the query gives another value at another refresh although the data is
/// the same (the time, a setting not recorded with the definition), or reads what
/// a delta term cannot mirror (system columns, whole rows): its name.
unsafe fn changing_between_refreshes(node: *mut pg_sys::Node) -> Option<String> {
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        unsafe {
            if node.is_null() {
                return false;
            }
            let found = &mut *(context as *mut Option<String>);
            match (*node).type_ {
                pg_sys::NodeTag::T_Query => {
                    return pg_sys::query_tree_walker(node as *mut pg_sys::Query, Some(walker), context, 0);
                }
                pg_sys::NodeTag::T_SQLValueFunction => {
                    *found = Some("CURRENT_DATE, CURRENT_TIMESTAMP and the like (their value changes between refreshes)".into());
                    return true;
                }
                pg_sys::NodeTag::T_FuncExpr => {
                    let (name, builtin) = name_of_function((*(node as *mut pg_sys::FuncExpr)).funcid);
                    if builtin && matches!(name.as_str(), "now" | "transaction_timestamp" | "statement_timestamp" | "current_setting") {
                        *found = Some(format!("{name}() (its value changes between refreshes)"));
                        return true;
                    }
                }
                pg_sys::NodeTag::T_Var if (*(node as *mut pg_sys::Var)).varattno <= 0 => {
                    *found = Some("a system column or whole-row reference".into());
                    return true;
                }
                _ => {}
            }
            pg_sys::expression_tree_walker(node, Some(walker), context)
        }
    }
    let mut found: Option<String> = None;
    unsafe { walker(node, &mut found as *mut Option<String> as *mut std::ffi::c_void) };
    found
}
