//! What a defining query computes, as far as differential maintenance needs to know:
//! the rows it reads (see `rows`: one lake table or an inner join of several, with
//! their WHERE), its grouping keys and its aggregates.
//!
//! Every stream table is maintained through a *state table* holding one row per
//! group: the group key, the number of source rows in it (`__pgt_count`) and the
//! running state of each aggregate. A query without aggregates is the special case of
//! grouping by every output column (the count is the row's multiplicity).

use super::parse::{Source, lake_source, postgres_source};
use super::rows::{Derived, Occurrence, Rows, Step};
use super::sublinks::{aggregates_in, check_aggregate, check_placement, check_placement_but_having, check_sublink, sublinks_in};
use super::tree::{deparse, equal, mutate, var_like};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// Any other aggregate (DISTINCT forms, bool_and/bool_or, string_agg and array_agg
    /// with ORDER BY, ordered-set aggregates, statistics...): no running value follows
    /// it under deletions, so every group a change touches is aggregated again from its
    /// rows at the target snapshot (like a group whose min was deleted), the cost of
    /// reading that group, not the table.
    Recomputed,
}

impl AggKind {
    /// The built-in aggregate of a kind with a running value, qualified so that no
    /// look-alike on the search path can stand in for it in the generated SQL.
    pub fn function(self) -> &'static str {
        match self {
            AggKind::CountStar | AggKind::Count => "pg_catalog.count",
            AggKind::Sum => "pg_catalog.sum",
            AggKind::Avg => "pg_catalog.avg",
            AggKind::Min => "pg_catalog.min",
            AggKind::Max => "pg_catalog.max",
            // Its call is the query's own, see `Aggregate::call`.
            AggKind::Recomputed => "",
        }
    }
}

/// One aggregate of the query, kept in state columns `a<n>`, `a<n>_n`, ...
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub kind: AggKind,
    /// Column prefix in the state table, `a1`, `a2`, ...
    pub column: String,
    /// The argument, a column of the rows (alias `c`); None for count(*).
    pub argument: Option<String>,
    /// For avg: the type the running sum is kept in (`numeric` or `float8`).
    pub avg_sum_type: Option<&'static str>,
    /// A sum or average of floats: its running value is not exact under deletions,
    /// so a group that lost rows is recomputed.
    pub inexact: bool,
    /// A recomputed aggregate: the query's call with every expression in it replaced
    /// by a column of the rows (Vars of relation 1, numbered as the rows' columns).
    call: Option<*mut pg_sys::Node>,
}

impl Aggregate {
    /// State columns of this aggregate, in table order.
    pub fn state_columns(&self) -> Vec<String> {
        let suffixes: &[&str] = match self.kind {
            AggKind::CountStar | AggKind::Count => &[""],
            AggKind::Recomputed => &[""],
            AggKind::Sum | AggKind::Min | AggKind::Max => &["", "_n", "_ins", "_del"],
            AggKind::Avg => &["", "_n", "_s", "_ins", "_del"],
        };
        suffixes.iter().map(|s| format!("{}{s}", self.column)).collect()
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
    /// Whether HAVING reads lake tables (in uncorrelated subquery expressions).
    having_reads: bool,
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
            top_n: None,
        }
    }

    /// The name of state key number `n` (1-based) and the rows' column holding it.
    pub fn key_column(n: usize) -> String {
        format!("{STATE_KEY_PREFIX}{n}")
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
        self.aggregates.iter().map(|a| a.call.map(|call| deparse(call, "c", rows_relid))).collect()
    }

    /// Whether every refresh with changes takes the result from the whole state again:
    /// it is the state's first rows (LIMIT), or HAVING compares each group with a
    /// subquery over lake tables, whose value a change can move for every group (TPC-H
    /// 11). The projection then reads the lake at the refresh's snapshot.
    pub fn reprojects_all(&self) -> bool {
        self.top_n.is_some() || self.having_reads
    }
}

fn name_of_function(oid: pg_sys::Oid) -> (String, bool) {
    // SAFETY: syscache lookups; get_func_name returns NULL for a missing function.
    unsafe {
        let name = pg_sys::get_func_name(oid);
        let name = if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() };
        (name, pg_sys::get_func_namespace(oid) == pg_sys::PG_CATALOG_NAMESPACE.into())
    }
}

fn type_name(type_oid: pg_sys::Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd name for any type oid.
    unsafe { CStr::from_ptr(pg_sys::format_type_be(type_oid)).to_string_lossy().into_owned() }
}

/// Types whose values can be state keys: those with a default btree equality (unique
/// index, grouping and `=` agree on them).
pub(super) fn require_key_type(node: *mut pg_sys::Node, what: &str) -> IvmResult<()> {
    // SAFETY: typcache lookup of an existing type.
    unsafe {
        let type_oid = pg_sys::exprType(node);
        let cache = pg_sys::lookup_type_cache(type_oid, (pg_sys::TYPECACHE_BTREE_OPFAMILY | pg_sys::TYPECACHE_EQ_OPR) as i32);
        if (*cache).btree_opf == pg_sys::InvalidOid || (*cache).eq_opr == pg_sys::InvalidOid {
            return Err(IvmError::unsupported(format!("{what} of type {} (it has no btree equality)", type_name(type_oid))));
        }
    }
    Ok(())
}

/// Analyze `query` for differential maintenance, or say which construct prevents it.
pub fn shape_of(query: *mut pg_sys::Query) -> IvmResult<Shape> {
    // SAFETY: reads an analyzed Query tree produced by parse::analyze.
    unsafe {
        super::ctes::inline_ctes(query)?;
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
        if let Some(construct) = changing_between_refreshes(query as *mut pg_sys::Node) {
            return Err(IvmError::unsupported(construct));
        }
        if !q.setOperations.is_null() {
            return union_shape(query);
        }
        if q.hasWindowFuncs {
            return super::windows::windowed_shape(query);
        }
        if let Some(rtindex) = super::windows::windowed_subselect(q) {
            return super::windows::per_partition_shape(query, rtindex);
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
        let having_reads = having_subqueries(having)?;
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
            top_n,
            partitions: None,
        })
    }
}

/// Whether HAVING holds subquery expressions, each uncorrelated (the same value for
/// every group) and reading lake tables only (read at the refresh's snapshot when the
/// result is projected; a Postgres table's changes would not be seen). Refused
/// otherwise.
unsafe fn having_subqueries(having: *mut pg_sys::Node) -> IvmResult<bool> {
    unsafe {
        // Inside an aggregate, a subquery's value is folded into the group's running
        // value when its rows arrive: a later change of its tables would not reach it.
        for aggregate in aggregates_in(having) {
            if !sublinks_in(aggregate as *mut pg_sys::Node).is_empty() {
                return Err(IvmError::unsupported("a subquery expression inside an aggregate"));
            }
        }
        let sublinks = sublinks_in(having);
        for sublink in &sublinks {
            check_sublink(*sublink)?;
            let sub = (**sublink).subselect;
            if pg_sys::contain_vars_of_level(sub, 1) {
                return Err(IvmError::unsupported("a subquery expression in HAVING that refers to the group"));
            }
            for relid in super::parse::relations_read(sub as *mut pg_sys::Query) {
                if lake_source(relid)?.is_none() {
                    return Err(IvmError::unsupported(format!(
                        "reading {} in a subquery expression in HAVING (only lake tables can be read there)",
                        crate::sql::relation_name(relid)
                    )));
                }
            }
        }
        Ok(!sublinks.is_empty())
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
                .map(|column| Aggregate {
                    kind: AggKind::Count,
                    column: column.to_string(),
                    argument: Some(format!("c.{}", ident(column))),
                    avg_sum_type: None,
                    inexact: false,
                    call: None,
                })
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

/// A SELECT reads at most this many tables: a refresh has a delta term per set of
/// changed ones.
const MAX_RELATIONS: usize = 16;

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

/// The query's relations: DuckLake foreign tables and Postgres tables, inner-joined
/// (by commas or `[INNER] JOIN`), also inside sub-selects in FROM that only filter
/// and compute columns (no aggregates, DISTINCT, LIMIT or set operations: rows in,
/// rows out, so their changes are their tables' changes), and inside subquery
/// expressions of a WHERE clause (see `sublinks`); every one a source.
pub(super) unsafe fn source_relations(q: &pg_sys::Query) -> IvmResult<Vec<Occurrence>> {
    unsafe {
        let mut occurrences = Vec::new();
        collect_relations(q, &[], &mut occurrences)?;
        if !occurrences.iter().any(|o| !o.in_subquery_expression()) {
            return Err(IvmError::unsupported("a query without a table in FROM"));
        }
        if occurrences.len() > MAX_RELATIONS {
            return Err(IvmError::unsupported(format!("a query of more than {MAX_RELATIONS} tables")));
        }
        // Changes of several Postgres tables are added up by the alternating sum,
        // whose terms are joins: it has no term for a subquery expression's change.
        let postgres = occurrences.iter().filter(|o| matches!(o.source, Source::Postgres(_))).count();
        if postgres > 1 && occurrences.iter().any(|o| o.in_subquery_expression()) {
            return Err(IvmError::unsupported(
                "a subquery expression over lake tables in a query that reads more than one Postgres table",
            ));
        }
        if postgres > 1 && occurrences.iter().any(|o| o.derived.is_some()) {
            return Err(IvmError::unsupported("an aggregating sub-select in a query that reads more than one Postgres table"));
        }
        if postgres > 1 && occurrences.iter().any(|o| o.nullable_in.is_some()) {
            return Err(IvmError::unsupported("an outer join in a query that reads more than one Postgres table"));
        }
        Ok(occurrences)
    }
}

unsafe fn collect_relations(q: &pg_sys::Query, path: &[Step], occurrences: &mut Vec<Occurrence>) -> IvmResult<()> {
    unsafe {
        let in_subquery_expression = path.iter().any(|s| matches!(s, Step::SubLink(_)));
        let nullable = if q.jointree.is_null() { Vec::new() } else { nullable_sides(q, (*q.jointree).fromlist as *mut pg_sys::Node)? };
        for (index, rte) in PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr().enumerate() {
            let rtindex = index as i32 + 1;
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_RELATION => {
                    let relid = (*rte).relid;
                    if !(*rte).tablesample.is_null() {
                        return Err(IvmError::unsupported("TABLESAMPLE"));
                    }
                    let source = match lake_source(relid)? {
                        Some(lake) => Source::Lake(lake),
                        // A refresh reads a subquery expression's sources as they were,
                        // by time travel.
                        None if in_subquery_expression => {
                            return Err(IvmError::unsupported(format!(
                                "reading {} in a subquery expression (only lake tables can be read there: a refresh reads them as they were)",
                                crate::sql::relation_name(relid)
                            )));
                        }
                        None => Source::Postgres(postgres_source(relid).ok_or_else(|| {
                            IvmError::unsupported(format!(
                                "reading {} (neither a DuckLake foreign table nor a user's Postgres table)",
                                crate::sql::relation_name(relid)
                            ))
                        })?),
                    };
                    let nullable_in = nullable.iter().find(|(relation, _)| *relation == rtindex).map(|(_, join)| *join);
                    if nullable_in.is_some() && !matches!(source, Source::Lake(_)) {
                        // Its rows' padding is compared with the table as it was.
                        return Err(IvmError::unsupported(format!(
                            "reading {} on the nullable side of an outer join (only lake tables can be read there: a refresh reads them as they were)",
                            crate::sql::relation_name(relid)
                        )));
                    }
                    occurrences.push(Occurrence { path: path.to_vec(), rtindex, source, nullable_in, derived: None });
                }
                #[cfg(feature = "pg18")]
                pg_sys::RTEKind::RTE_GROUP => {}
                // A join's alias would hide the names of its tables, which the delta
                // terms' conditions on their changes use.
                pg_sys::RTEKind::RTE_JOIN if !(*rte).alias.is_null() => {
                    return Err(IvmError::unsupported("a join with an alias (AS after a parenthesized join)"));
                }
                pg_sys::RTEKind::RTE_JOIN => match (*rte).jointype {
                    pg_sys::JoinType::JOIN_INNER => {}
                    pg_sys::JoinType::JOIN_LEFT | pg_sys::JoinType::JOIN_RIGHT | pg_sys::JoinType::JOIN_FULL if in_subquery_expression => {
                        return Err(IvmError::unsupported("an outer join inside a subquery expression"));
                    }
                    pg_sys::JoinType::JOIN_LEFT | pg_sys::JoinType::JOIN_RIGHT | pg_sys::JoinType::JOIN_FULL => {}
                    _ => return Err(IvmError::unsupported("this kind of join")),
                },
                pg_sys::RTEKind::RTE_SUBQUERY if aggregating(&*(*rte).subquery) && !(*rte).lateral => {
                    let names = PgList::<pg_sys::Node>::from_pg((*(*rte).eref).colnames)
                        .iter_ptr()
                        .map(|n| std::ffi::CStr::from_ptr((*(n as *mut pg_sys::String)).sval).to_string_lossy().into_owned())
                        .collect();
                    let derived = derived_of((*rte).subquery, names, path.len() + 1)?;
                    occurrences.push(Occurrence {
                        path: path.to_vec(),
                        rtindex,
                        source: Source::Derived,
                        nullable_in: None,
                        derived: Some(Box::new(derived)),
                    });
                }
                pg_sys::RTEKind::RTE_SUBQUERY if in_subquery_expression => {
                    return Err(IvmError::unsupported("a subquery in FROM inside a subquery expression"));
                }
                pg_sys::RTEKind::RTE_SUBQUERY => {
                    let sub = (*rte).subquery;
                    let s = &*sub;
                    let row_preserving = !(*rte).lateral
                        && !s.hasAggs
                        && s.groupClause.is_null()
                        && s.havingQual.is_null()
                        && s.distinctClause.is_null()
                        && !s.hasWindowFuncs
                        && !s.hasTargetSRFs
                        && s.cteList.is_null()
                        && s.setOperations.is_null()
                        && s.limitCount.is_null()
                        && s.limitOffset.is_null()
                        && s.rowMarks.is_null();
                    if !row_preserving {
                        return Err(IvmError::unsupported(
                            "a subquery in FROM with DISTINCT, window functions, LIMIT or set operations",
                        ));
                    }
                    let mut inner = path.to_vec();
                    inner.push(Step::From(rtindex));
                    collect_relations(s, &inner, occurrences)?;
                }
                pg_sys::RTEKind::RTE_FUNCTION => return Err(IvmError::unsupported("a function in FROM")),
                pg_sys::RTEKind::RTE_VALUES => return Err(IvmError::unsupported("VALUES in FROM")),
                _ => return Err(IvmError::unsupported("this kind of FROM item")),
            }
        }
        if path.is_empty() {
            check_placement_but_having(q)?;
        } else {
            check_placement(q)?;
        }
        if q.hasSubLinks && !q.jointree.is_null() {
            for (n, sublink) in sublinks_in((*q.jointree).quals).into_iter().enumerate() {
                check_sublink(sublink)?;
                let mut inner = path.to_vec();
                inner.push(Step::SubLink(n));
                collect_relations(&*((*sublink).subselect as *mut pg_sys::Query), &inner, occurrences)?;
            }
        }
        Ok(())
    }
}

/// Whether a sub-select aggregates (and is then read as a derived relation).
fn aggregating(s: &pg_sys::Query) -> bool {
    (s.hasAggs || !s.groupClause.is_null()) && s.setOperations.is_null()
}

/// An aggregating sub-select in FROM as a derived relation (see `rows::Derived`): its
/// rows are its FROM and WHERE projected on its grouping keys, which must be result
/// columns; each group's result row is computed by the sub-select itself, so any
/// aggregate and HAVING are exact. Its sources must be lake tables (read as they were).
unsafe fn derived_of(sub: *mut pg_sys::Query, names: Vec<String>, depth: usize) -> IvmResult<Derived> {
    unsafe {
        let s = &*sub;
        let refuse = |what: &str| Err(IvmError::unsupported(format!("{what} in an aggregating sub-select")));
        if !s.limitCount.is_null() || !s.limitOffset.is_null() {
            return refuse("LIMIT/OFFSET");
        }
        if s.hasWindowFuncs {
            return refuse("a window function");
        }
        if s.hasTargetSRFs {
            return refuse("a set-returning function");
        }
        if !s.groupingSets.is_null() {
            return refuse("GROUPING SETS/ROLLUP/CUBE");
        }
        if s.hasDistinctOn {
            return refuse("DISTINCT ON");
        }
        if !sublinks_in(s.havingQual).is_empty() {
            return refuse("a subquery expression in HAVING");
        }
        // Its changes are computed on their own: it must not refer to an outer query.
        if (1..=depth as i32).any(|level| pg_sys::contain_vars_of_level(sub as *mut pg_sys::Node, level)) {
            return refuse("a reference to an outer query");
        }
        for aggregate in aggregates_in(s.targetList as *mut pg_sys::Node).into_iter().chain(aggregates_in(s.havingQual)) {
            check_aggregate(aggregate, "an aggregating sub-select")?;
        }
        #[cfg_attr(not(feature = "pg18"), allow(unused_mut))]
        let mut targets_node = s.targetList as *mut pg_sys::Node;
        #[cfg(feature = "pg18")]
        if s.hasGroupRTE {
            targets_node = pg_sys::flatten_group_exprs(std::ptr::null_mut(), sub, targets_node);
        }
        let targets = PgList::<pg_sys::TargetEntry>::from_pg(targets_node as *mut pg_sys::List);
        let mut keys = Vec::new();
        let mut columns: Vec<(String, *mut pg_sys::Node)> = Vec::new();
        for clause in PgList::<pg_sys::SortGroupClause>::from_pg(s.groupClause).iter_ptr() {
            let entry = targets
                .iter_ptr()
                .find(|t| (**t).ressortgroupref == (*clause).tleSortGroupRef)
                .ok_or_else(|| IvmError::unsupported("a GROUP BY expression outside the select list of an aggregating sub-select"))?;
            if (*entry).resjunk {
                return Err(IvmError::unsupported("a GROUP BY expression outside the select list of an aggregating sub-select"));
            }
            let expression = (*entry).expr as *mut pg_sys::Node;
            require_key_type(expression, "grouping an aggregating sub-select")?;
            keys.push(expression);
            columns.push((format!("{STATE_KEY_PREFIX}{}", columns.len() + 1), expression));
        }
        if columns.is_empty() {
            columns.push(("__pgt_one".into(), int4_one()));
        }
        let occurrences = source_relations(s)?;
        if let Some(postgres) = occurrences.iter().find(|o| matches!(o.source, Source::Postgres(_))) {
            return Err(IvmError::unsupported(format!(
                "reading {} in an aggregating sub-select (only lake tables can be read there: a refresh reads them as they were)",
                crate::sql::relation_name(postgres.source.relid())
            )));
        }
        let width = targets.iter_ptr().filter(|t| !(**t).resjunk).count();
        if names.len() != width {
            return Err(IvmError::unsupported("this aggregating sub-select"));
        }
        Ok(Derived::new(sub, Rows::new(sub, occurrences, columns), keys, width, names))
    }
}

/// The (relation, join) range-table indexes of the relations on the nullable side of
/// a LEFT or RIGHT JOIN in the FROM items `node`. Each must be one table: the rows a
/// change to it pads or unpads are the other side's rows it matches (see `rows`).
unsafe fn nullable_sides(q: &pg_sys::Query, node: *mut pg_sys::Node) -> IvmResult<Vec<(i32, i32)>> {
    unsafe {
        let mut found = Vec::new();
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            if node.is_null() {
                continue;
            }
            if pgrx::is_a(node, pg_sys::NodeTag::T_List) {
                stack.extend(PgList::<pg_sys::Node>::from_pg(node as *mut pg_sys::List).iter_ptr());
            } else if pgrx::is_a(node, pg_sys::NodeTag::T_JoinExpr) {
                let join = node as *mut pg_sys::JoinExpr;
                let sides = match (*join).jointype {
                    pg_sys::JoinType::JOIN_LEFT => vec![((*join).rarg, "LEFT")],
                    pg_sys::JoinType::JOIN_RIGHT => vec![((*join).larg, "RIGHT")],
                    pg_sys::JoinType::JOIN_FULL => vec![((*join).larg, "FULL"), ((*join).rarg, "FULL")],
                    _ => Vec::new(),
                };
                for (side, name) in sides {
                    // The padded rows are the join with its condition made false, which
                    // USING (printed instead of a condition) has no place for.
                    if !(*join).usingClause.is_null() {
                        return Err(IvmError::unsupported(format!("a {name} JOIN with USING or NATURAL (write its condition with ON)")));
                    }
                    let relation = pgrx::is_a(side, pg_sys::NodeTag::T_RangeTblRef)
                        .then(|| (*(side as *mut pg_sys::RangeTblRef)).rtindex)
                        .filter(|index| {
                            let rte = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).get_ptr(*index as usize - 1);
                            rte.is_some_and(|rte| (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION)
                        });
                    let Some(relation) = relation else {
                        return Err(IvmError::unsupported(format!(
                            "a {name} JOIN whose nullable side is not one table (a sub-select or a parenthesized join)"
                        )));
                    };
                    found.push((relation, (*join).rtindex));
                }
                stack.push((*join).larg);
                stack.push((*join).rarg);
            }
        }
        Ok(found)
    }
}

/// `CASE WHEN condition THEN value END`, of value's type and collation.
unsafe fn case_when(condition: *mut pg_sys::Node, value: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        let (typid, typmod, collid) = (pg_sys::exprType(value), pg_sys::exprTypmod(value), pg_sys::exprCollation(value));
        let mut when = pgrx::PgBox::<pg_sys::CaseWhen>::alloc_node(pg_sys::NodeTag::T_CaseWhen);
        when.expr = condition as *mut pg_sys::Expr;
        when.result = value as *mut pg_sys::Expr;
        when.location = -1;
        let mut whens = PgList::<pg_sys::CaseWhen>::new();
        whens.push(when.into_pg());
        let mut case = pgrx::PgBox::<pg_sys::CaseExpr>::alloc_node(pg_sys::NodeTag::T_CaseExpr);
        case.casetype = typid;
        case.casecollid = collid;
        case.args = whens.into_pg();
        case.defresult = pg_sys::makeNullConst(typid, typmod, collid) as *mut pg_sys::Expr;
        case.location = -1;
        case.into_pg() as *mut pg_sys::Node
    }
}

/// The integer constant 1.
unsafe fn int4_one() -> *mut pg_sys::Node {
    unsafe {
        pg_sys::makeConst(pg_sys::INT4OID, -1, pg_sys::InvalidOid, 4, pg_sys::Datum::from(1i32), false, true)
            as *mut pg_sys::Node
    }
}

/// Aggregates whose value depends on the order their rows come in: without ORDER BY
/// the query itself has no one answer.
const ORDER_SENSITIVE: &[&str] = &[
    "string_agg", "array_agg", "json_agg", "jsonb_agg", "json_agg_strict", "jsonb_agg_strict", "json_object_agg",
    "jsonb_object_agg", "json_object_agg_strict", "jsonb_object_agg_strict", "json_object_agg_unique",
    "jsonb_object_agg_unique", "json_object_agg_unique_strict", "jsonb_object_agg_unique_strict", "xmlagg",
    "json_arrayagg", "json_objectagg",
];

/// Classify an aggregate call: the plain forms of count, sum, avg, min and max keep a
/// running value (with FILTER as the aggregate of a CASE); every other aggregate is
/// recomputed per touched group. Returns the aggregate and the columns of the rows it
/// reads (named `a<number>` or `a<number>_<i>`, the first at position `first_attno`).
unsafe fn aggregate_of(
    aggref: *mut pg_sys::Aggref,
    number: usize,
    first_attno: i16,
) -> IvmResult<(Aggregate, Vec<(String, *mut pg_sys::Node)>)> {
    unsafe {
        let a = &*aggref;
        let (name, builtin) = name_of_function(a.aggfnoid);
        if a.agglevelsup != 0 {
            return Err(IvmError::unsupported(format!("aggregate {name}() of an outer query")));
        }
        let distinct = !a.aggdistinct.is_null();
        let arguments = PgList::<pg_sys::TargetEntry>::from_pg(a.args);
        let argument: Option<*mut pg_sys::Node> = arguments.get_ptr(0).map(|t| (*t).expr as *mut pg_sys::Node);
        let plain = builtin && a.aggkind == b'n' as std::ffi::c_char && a.aggorder.is_null();
        let running = match (plain, name.as_str(), a.aggstar, arguments.len(), distinct) {
            (true, "count", true, 0, false) => Some(AggKind::CountStar),
            (true, "count", false, 1, false) => Some(AggKind::Count),
            (true, "sum", false, 1, false) => Some(AggKind::Sum),
            (true, "avg", false, 1, false) => Some(AggKind::Avg),
            // The extreme of the distinct values is the extreme of all of them.
            (true, "min", false, 1, _) => Some(AggKind::Min),
            (true, "max", false, 1, _) => Some(AggKind::Max),
            _ => None,
        };
        let column = format!("a{number}");
        let Some(kind) = running else {
            return recomputed(aggref, &name, builtin, column, first_attno);
        };
        // agg(x) FILTER (WHERE p) is agg(CASE WHEN p THEN x END): every aggregate above
        // skips NULL inputs, and the CASE is NULL exactly where the filter is not true
        // (false or NULL). count(*) FILTER (WHERE p) counts CASE WHEN p THEN 1 END.
        let (kind, argument) = if a.aggfilter.is_null() {
            (kind, argument)
        } else {
            let (kind, value) = match (kind, argument) {
                (AggKind::CountStar, _) | (_, None) => (AggKind::Count, int4_one()),
                (kind, Some(value)) => (kind, value),
            };
            (kind, Some(case_when(a.aggfilter as *mut pg_sys::Node, value)))
        };
        let mut avg_sum_type = None;
        let mut inexact = false;
        if let (AggKind::Sum | AggKind::Avg, Some(arg)) = (kind, argument) {
            let input = pg_sys::exprType(arg);
            let numeric_input = [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID, pg_sys::NUMERICOID].contains(&input);
            let float_input = [pg_sys::FLOAT4OID, pg_sys::FLOAT8OID].contains(&input);
            if !numeric_input && !float_input {
                return Err(IvmError::unsupported(format!("{name}() over type {}", type_name(input))));
            }
            if kind == AggKind::Avg {
                avg_sum_type = Some(if numeric_input { "numeric" } else { "float8" });
            }
            inexact = float_input;
        }
        if let (AggKind::Min | AggKind::Max, Some(arg)) = (kind, argument) {
            require_key_type(arg, &format!("{name}()"))?;
        }
        let aggregate = Aggregate {
            kind,
            argument: argument.map(|_| format!("c.{}", ident(&column))),
            avg_sum_type,
            inexact,
            call: None,
            column: column.clone(),
        };
        Ok((aggregate, argument.map(|argument| vec![(column, argument)]).unwrap_or_default()))
    }
}

/// An aggregate recomputed per touched group: the query's own call, each of its
/// aggregated arguments, ORDER BY expressions and FILTER read from a column of the
/// rows. Refused when recomputing a group could give another value than the query
/// over the same rows: an order-sensitive aggregate without ORDER BY, arithmetic on
/// floats (its last digits depend on the order of the terms), or direct arguments of
/// an ordered-set aggregate that read columns.
unsafe fn recomputed(
    aggref: *mut pg_sys::Aggref,
    name: &str,
    builtin: bool,
    column: String,
    first_attno: i16,
) -> IvmResult<(Aggregate, Vec<(String, *mut pg_sys::Node)>)> {
    unsafe {
        let a = &*aggref;
        if builtin && a.aggorder.is_null() && ORDER_SENSITIVE.contains(&name) {
            return Err(IvmError::unsupported(format!(
                "{name}() without ORDER BY (its result depends on the order the rows come in)"
            )));
        }
        let arguments = PgList::<pg_sys::TargetEntry>::from_pg(a.args);
        // Sums of floats (and statistics built on them) differ in their last digits
        // with the order of the terms; what a user-defined aggregate does is unknown.
        let summing = !builtin
            || name.starts_with("regr_")
            || ["sum", "avg", "stddev", "stddev_samp", "stddev_pop", "variance", "var_samp", "var_pop", "covar_pop",
                "covar_samp", "corr"]
                .contains(&name);
        for entry in arguments.iter_ptr() {
            let input = pg_sys::exprType((*entry).expr as *mut pg_sys::Node);
            if summing && !(*entry).resjunk && [pg_sys::FLOAT4OID, pg_sys::FLOAT8OID].contains(&input) {
                return Err(IvmError::unsupported(format!(
                    "{name}() of {} recomputed per group (its last digits depend on the order of the rows)",
                    type_name(input)
                )));
            }
        }
        if !builtin && !immutable_aggregate(a.aggfnoid)? {
            return Err(IvmError::unsupported(format!(
                "aggregate {name}() whose transition or final function is not IMMUTABLE (it could read what a refresh does not track)"
            )));
        }
        if !a.aggdirectargs.is_null() && pg_sys::contain_var_clause(a.aggdirectargs as *mut pg_sys::Node) {
            return Err(IvmError::unsupported(format!("{name}() with direct arguments that read columns")));
        }
        let call = pg_sys::copyObjectImpl(aggref as *const std::ffi::c_void) as *mut pg_sys::Aggref;
        let mut columns: Vec<(String, *mut pg_sys::Node)> = Vec::new();
        let mut as_column = |expression: *mut pg_sys::Node| -> *mut pg_sys::Node {
            let attno = first_attno + columns.len() as i16;
            columns.push((format!("{column}_{}", columns.len() + 1), expression));
            let var = var_like(expression, 1);
            (*(var as *mut pg_sys::Var)).varattno = attno;
            (*(var as *mut pg_sys::Var)).varattnosyn = attno;
            var
        };
        // Postgres computes the arguments only of rows that pass FILTER (`100 / y`
        // FILTER (WHERE y <> 0)); as columns of every row they are guarded the same way,
        // and the rows FILTER leaves out never reach the aggregate.
        let filter = (*call).aggfilter as *mut pg_sys::Node;
        for entry in PgList::<pg_sys::TargetEntry>::from_pg((*call).args).iter_ptr() {
            let mut argument = (*entry).expr as *mut pg_sys::Node;
            if !filter.is_null() {
                argument = case_when(pg_sys::copyObjectImpl(filter as *const std::ffi::c_void) as *mut pg_sys::Node, argument);
            }
            (*entry).expr = as_column(argument) as *mut pg_sys::Expr;
        }
        if !filter.is_null() {
            (*call).aggfilter = as_column(filter) as *mut pg_sys::Expr;
        }
        let aggregate = Aggregate {
            kind: AggKind::Recomputed,
            argument: None,
            avg_sum_type: None,
            inexact: false,
            call: Some(call as *mut pg_sys::Node),
            column,
        };
        Ok((aggregate, columns))
    }
}

/// Whether a user-defined aggregate's transition and final functions are IMMUTABLE
/// (the aggregate's own entry in pg_proc always is).
fn immutable_aggregate(aggregate: pg_sys::Oid) -> IvmResult<bool> {
    Ok(pgrx::Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.bool_and(p.provolatile = 'i') FROM pg_catalog.pg_aggregate a \
           JOIN pg_catalog.pg_proc p ON p.oid IN (a.aggtransfn, a.aggfinalfn) WHERE a.aggfnoid = $1",
        &[aggregate.into()],
    )?
    .unwrap_or(false))
}
