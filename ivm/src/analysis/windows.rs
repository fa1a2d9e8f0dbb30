//! Window functions. A window partitioned by P computes each row's value from the
//! rows of its partition alone, so the result rows of a partition depend only on that
//! partition's rows: when rows change, the partitions they belong to (before or after
//! the change) are the only ones whose result rows can change. A refresh deletes the
//! result rows of those partitions and inserts the query's own rows for them: the
//! query with a condition in the WHERE clause of its windowed level (applied before
//! the windows) keeping the rows of partitions with a change. The windows are computed
//! for the touched partitions only. Every
//! window of the query must share the partition columns P (each may partition
//! further), and P must be result columns, by which the result rows are found.

use super::sublinks::{Planner, alias, keep_keys_in};
use super::tree::{equal, rt_fetch};
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};
use std::ffi::CStr;

/// A query whose result is local to partitions: the level whose rows the windows
/// partition (the query, or its sub-select in FROM), the partition expressions there
/// with the result column showing each, and the query's result columns.
pub struct Windowed {
    pub level: *mut pg_sys::Query,
    pub partition: Vec<(*mut pg_sys::Node, String)>,
    pub outputs: Vec<String>,
    pub partitions: Partitions,
}

/// The query's rows of chosen partitions (see `touched_sql`).
#[derive(Debug, Clone)]
pub struct Partitions {
    query: *mut pg_sys::Query,
    /// The sub-select in FROM holding the windows (None: the query itself).
    level: Option<i32>,
    /// The partition expressions there, in key order.
    expressions: Vec<*mut pg_sys::Node>,
}

impl Partitions {
    /// The query restricted to the partitions that have a row in `buffer` (its first
    /// columns: the partition keys in order): `EXISTS (SELECT 1 FROM buffer b WHERE
    /// b.k1 = p1 OR b.k1 IS NULL AND p1 IS NULL ...)` added to the WHERE clause of the
    /// windowed level.
    pub fn touched_sql(&self, buffer: pg_sys::Oid, buffer_columns: &[String]) -> String {
        // SAFETY: edits a copy of an analyzed Query tree.
        unsafe {
            let query = pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query;
            let level = match self.level {
                None => query,
                Some(index) => (*rt_fetch(query, index)).subquery,
            };
            let rte = pgrx::PgBox::<pg_sys::RangeTblEntry>::alloc_node(pg_sys::NodeTag::T_RangeTblEntry).into_pg();
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = buffer;
            (*rte).relkind = pg_sys::RELKIND_RELATION as std::ffi::c_char;
            (*rte).rellockmode = pg_sys::AccessShareLock as i32;
            (*rte).inFromCl = true;
            (*rte).eref = alias("b", buffer_columns);
            keep_keys_in(level, &self.expressions, rte, Planner::Postgres);
            CStr::from_ptr(pg_sys::pg_get_querydef(query, false)).to_string_lossy().into_owned()
        }
    }
}

/// The query itself has the windows.
pub unsafe fn windowed(query: *mut pg_sys::Query) -> IvmResult<Windowed> {
    unsafe {
        let q = &*query;
        check_windowed_level(q)?;
        let outputs = output_names(q);
        let visible = visible_targets(q);
        let mut partition = Vec::new();
        for expression in shared_partition(q)? {
            let Some(position) = visible.iter().position(|t| equal((**t).expr as *mut pg_sys::Node, expression)) else {
                return Err(IvmError::unsupported("PARTITION BY an expression that is not a result column"));
            };
            partition.push((expression, outputs[position].clone()));
        }
        let partitions = Partitions { query, level: None, expressions: partition.iter().map(|(e, _)| *e).collect() };
        Ok(Windowed { level: query, partition, outputs, partitions })
    }
}

/// The sub-select in FROM with window functions of a query that only filters and
/// computes columns over it (`SELECT .. FROM (SELECT .., row_number() OVER (PARTITION
/// BY g ORDER BY x) AS rn FROM ..) s WHERE rn <= 3`: top-N per group), or None. Such a
/// query is as local to the partitions as its sub-select.
pub unsafe fn windowed_subselect(q: &pg_sys::Query) -> Option<i32> {
    unsafe {
        // (GROUP BY adds an entry for the grouping, not a FROM item.)
        #[cfg(feature = "pg18")]
        let is_from_item = |rte: &*mut pg_sys::RangeTblEntry| (**rte).rtekind != pg_sys::RTEKind::RTE_GROUP;
        #[cfg(not(feature = "pg18"))]
        let is_from_item = |_: &*mut pg_sys::RangeTblEntry| true;
        let entries: Vec<*mut pg_sys::RangeTblEntry> =
            PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr().filter(is_from_item).collect();
        if entries.len() != 1 || q.hasWindowFuncs || !q.setOperations.is_null() {
            return None;
        }
        let rte = entries[0];
        let windowed = (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY && !(*rte).lateral && (*(*rte).subquery).hasWindowFuncs;
        windowed.then(|| PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).iter_ptr().position(|r| r == rte).map(|i| i as i32 + 1))?
    }
}

/// The shape of a query over a windowed sub-select (see `windowed_subselect`): the
/// partitions are the sub-select's, found in the result through the columns that
/// pass them up.
pub unsafe fn windowed_below(query: *mut pg_sys::Query, rtindex: i32) -> IvmResult<Windowed> {
    unsafe {
        let q = &*query;
        if q.hasAggs || !q.groupClause.is_null() || !q.havingQual.is_null() || !q.distinctClause.is_null() {
            return Err(IvmError::unsupported("aggregates or DISTINCT over a sub-select with window functions"));
        }
        if !q.limitCount.is_null() || !q.limitOffset.is_null() {
            return Err(IvmError::unsupported("LIMIT/OFFSET over a sub-select with window functions"));
        }
        if q.hasSubLinks {
            return Err(IvmError::unsupported("a subquery expression over a sub-select with window functions"));
        }
        let sub = (*rt_fetch(query, rtindex)).subquery;
        let s = &*sub;
        check_windowed_level(s)?;
        let inner_visible = visible_targets(s);
        let outputs = output_names(q);
        let visible = visible_targets(q);
        let mut partition = Vec::new();
        for expression in shared_partition(s)? {
            // The sub-select's column holding it, and the result column passing that up.
            let resno = inner_visible.iter().find(|t| equal((***t).expr as *mut pg_sys::Node, expression)).map(|t| (**t).resno);
            let position = resno.and_then(|resno| {
                visible.iter().position(|t| {
                    let e = (**t).expr as *mut pg_sys::Node;
                    pgrx::is_a(e, pg_sys::NodeTag::T_Var) && {
                        let v = e as *mut pg_sys::Var;
                        (*v).varno == rtindex && (*v).varattno == resno && (*v).varlevelsup == 0
                    }
                })
            });
            let Some(position) = position else {
                return Err(IvmError::unsupported("PARTITION BY an expression that is not a result column"));
            };
            partition.push((expression, outputs[position].clone()));
        }
        let partitions = Partitions { query, level: Some(rtindex), expressions: partition.iter().map(|(e, _)| *e).collect() };
        Ok(Windowed { level: sub, partition, outputs, partitions })
    }
}

/// What a level with window functions may not have.
unsafe fn check_windowed_level(q: &pg_sys::Query) -> IvmResult<()> {
    if q.hasAggs || !q.groupClause.is_null() || !q.havingQual.is_null() {
        return Err(IvmError::unsupported("a window function over GROUP BY or aggregates"));
    }
    if !q.distinctClause.is_null() {
        return Err(IvmError::unsupported("DISTINCT over window functions"));
    }
    if !q.limitCount.is_null() || !q.limitOffset.is_null() {
        return Err(IvmError::unsupported("LIMIT/OFFSET over window functions"));
    }
    Ok(())
}

/// The partition expressions every window of `q` shares (each may partition further).
unsafe fn shared_partition(q: &pg_sys::Query) -> IvmResult<Vec<*mut pg_sys::Node>> {
    unsafe {
        let targets = PgList::<pg_sys::TargetEntry>::from_pg(q.targetList);
        let expression_of = |clause: *mut pg_sys::SortGroupClause| -> Option<*mut pg_sys::Node> {
            targets.iter_ptr().find(|t| (**t).ressortgroupref == (*clause).tleSortGroupRef).map(|t| (*t).expr as *mut pg_sys::Node)
        };
        let mut shared: Option<Vec<*mut pg_sys::Node>> = None;
        for window in PgList::<pg_sys::WindowClause>::from_pg(q.windowClause).iter_ptr() {
            let partition: Vec<*mut pg_sys::Node> = PgList::<pg_sys::SortGroupClause>::from_pg((*window).partitionClause)
                .iter_ptr()
                .filter_map(|c| expression_of(c))
                .collect();
            shared = Some(match shared {
                None => partition,
                Some(previous) => previous.into_iter().filter(|e| partition.iter().any(|p| equal(*p, *e))).collect(),
            });
        }
        let shared = shared.unwrap_or_default();
        if shared.is_empty() {
            return Err(IvmError::unsupported(
                "a window function without PARTITION BY columns that every window shares (each change would recompute the whole result)",
            ));
        }
        Ok(shared)
    }
}

unsafe fn visible_targets(q: &pg_sys::Query) -> Vec<*mut pg_sys::TargetEntry> {
    unsafe { PgList::<pg_sys::TargetEntry>::from_pg(q.targetList).iter_ptr().filter(|t| !(**t).resjunk).collect() }
}

unsafe fn output_names(q: &pg_sys::Query) -> Vec<String> {
    unsafe {
        visible_targets(q)
            .iter()
            .map(|t| if (**t).resname.is_null() { "?column?".into() } else { CStr::from_ptr((**t).resname).to_string_lossy().into_owned() })
            .collect()
    }
}
