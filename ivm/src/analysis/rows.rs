//! The rows a stream table aggregates: the defining query's FROM and WHERE (one lake
//! table, or an inner join of several) with its select list replaced by the grouping
//! keys and aggregate arguments. Everything above it (GROUP BY, aggregates, HAVING,
//! DISTINCT, the result expressions) is maintained over these rows in Postgres.
//!
//! The rows' changes between two snapshots follow from each source's change feed.
//! Writing R' = R + ΔR for every source of an inner join (Z-sets: ±1 weights), the
//! change telescopes over the changed sources taken in order, each term reading the
//! sources before it as they are now and those after it as they were:
//!
//!   R'⋈S' − R⋈S = ΔR⋈S + R'⋈ΔS
//!
//! and for changed sources X1..Xk: Σi X1'⋈..⋈X(i−1)'⋈ΔXi⋈X(i+1)⋈..⋈Xk. That is k terms,
//! each reading one change feed. A lake source as it was is its lake table at the
//! frontier's snapshot (time travel: a mirror foreign table reading the snapshot in a
//! setting the refresh pins, see `objects`). A Postgres table cannot be read as it was,
//! so when one of the changed sources is a Postgres table the change is the
//! alternating sum over every non-empty set T of changed sources instead, which reads
//! every source as it is now: (−1)^(|T|+1) · (⋈ of ΔX for X in T and of X' for the
//! others); with R and S, ΔR⋈S' + R'⋈ΔS − ΔR⋈ΔS. Unchanged sources are the same then
//! and now, and with one changed source both forms are the one term ΔR⋈S'. A term's
//! weight is the product of its change rows' weights (an insert or update post-image
//! +1, a delete or pre-image −1) times its sign.
//!
//! A term is the defining query's own tree with each source of T replaced by its
//! changes (a lake table's change feed, a Postgres table's change log: relations that
//! mirror the source's attribute numbers, so every Var stays valid) restricted to
//! the changes not yet seen, and each source read as it was by its mirror, deparsed by
//! ruleutils; no SQL is rewritten as text. The sources a term reads as they are now are
//! read at the snapshot the refresh pins (lake tables) and in the refresh's one read
//! snapshot (Postgres tables, in which the logs' unseen changes are exactly those not
//! visible in the frontier's).

use super::parse::Source;
use crate::sql::ident;
use pgrx::{PgList, pg_sys};
use std::ffi::{CStr, CString};

/// `int8 > int8` and `int8 <= int8` in pg_operator (fixed OIDs, like Postgres' own
/// Int8LessOperator).
const INT8_GREATER: u32 = 413;
const INT8_LESS_EQUAL: u32 = 414;

/// One relation of the query: where it is and what it reads.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// The range-table indexes of the sub-selects in FROM it is inside, outermost
    /// first (empty: the query's own FROM).
    pub path: Vec<i32>,
    /// Its index in the range table of its query level.
    pub rtindex: i32,
    pub source: Source,
}

/// Which of a source's changes a delta term reads.
#[derive(Debug, Clone)]
pub enum Unseen {
    /// A lake change feed: snapshot ids after this one, up to the term's `to`.
    After(i64),
    /// A Postgres change log: rows of transactions not visible in this snapshot
    /// (`pg_snapshot` text).
    NotVisibleIn(String),
}

/// The changes standing in for a source in a delta term.
#[derive(Debug, Clone)]
pub struct Feed {
    pub source: pg_sys::Oid,
    /// The change feed or change log.
    pub relid: pg_sys::Oid,
    pub unseen: Unseen,
    /// The source as it was at the frontier (lake sources: a time-travel mirror).
    pub old: Option<pg_sys::Oid>,
}

/// The keys-and-arguments rows: one query over the defining query's FROM and WHERE,
/// or (for a UNION of SELECTs) one per branch, whose rows are added up.
#[derive(Debug)]
pub struct Rows {
    branches: Vec<Branch>,
}

impl Rows {
    /// The rows of one query (see `Branch::new`).
    pub fn new(query: *mut pg_sys::Query, occurrences: Vec<Occurrence>, columns: Vec<(String, *mut pg_sys::Node)>) -> Rows {
        Rows::union(vec![(query, occurrences, columns)])
    }

    /// The rows of several queries, each with the same column names (of types that a
    /// UNION of them unifies), added up: UNION ALL.
    pub fn union(branches: Vec<(*mut pg_sys::Query, Vec<Occurrence>, Vec<(String, *mut pg_sys::Node)>)>) -> Rows {
        let branches = branches.into_iter().map(|(query, occurrences, columns)| Branch::new(query, occurrences, columns)).collect();
        Rows { branches }
    }

    /// Every relation the rows read, branch by branch.
    pub fn occurrences(&self) -> impl Iterator<Item = &Occurrence> {
        self.branches.iter().flat_map(|b| &b.occurrences)
    }

    /// The rows as the sources are now (the lake at the snapshot the refresh pins).
    pub fn sql(&self) -> String {
        self.branches.iter().map(Branch::sql).collect::<Vec<_>>().join(" UNION ALL ")
    }

    /// The change of the rows (see `Branch::delta_sql`): the branches' changes added
    /// up. None when no feed is given (nothing changed).
    pub fn delta_sql(&self, feeds: &[Feed], to: i64) -> Option<String> {
        let deltas: Vec<String> = self.branches.iter().filter_map(|b| b.delta_sql(feeds, to)).collect();
        (!deltas.is_empty()).then(|| deltas.join(" UNION ALL "))
    }
}

/// The keys-and-arguments query of one SELECT.
#[derive(Debug)]
struct Branch {
    query: *mut pg_sys::Query,
    occurrences: Vec<Occurrence>,
    columns: Vec<String>,
}

impl Branch {
    /// `query` with its select list replaced by `columns` (name, expression over its
    /// range table) and everything above FROM/WHERE removed. `query` is not modified.
    fn new(query: *mut pg_sys::Query, occurrences: Vec<Occurrence>, columns: Vec<(String, *mut pg_sys::Node)>) -> Branch {
        // SAFETY: copies and edits an analyzed Query tree in the current memory context.
        unsafe {
            let rows = pg_sys::copyObjectImpl(query as *const std::ffi::c_void) as *mut pg_sys::Query;
            let mut targets = PgList::<pg_sys::TargetEntry>::new();
            for (i, (name, expression)) in columns.iter().enumerate() {
                let name = CString::new(name.as_str()).expect("column names have no NUL");
                let expression = pg_sys::copyObjectImpl(*expression as *const std::ffi::c_void) as *mut pg_sys::Expr;
                targets.push(pg_sys::makeTargetEntry(expression, (i + 1) as i16, pg_sys::pstrdup(name.as_ptr()), false));
            }
            (*rows).targetList = targets.into_pg();
            (*rows).groupClause = std::ptr::null_mut();
            (*rows).groupingSets = std::ptr::null_mut();
            (*rows).havingQual = std::ptr::null_mut();
            (*rows).distinctClause = std::ptr::null_mut();
            (*rows).sortClause = std::ptr::null_mut();
            (*rows).windowClause = std::ptr::null_mut();
            (*rows).hasAggs = false;
            (*rows).hasDistinctOn = false;
            #[cfg(feature = "pg18")]
            {
                (*rows).hasGroupRTE = false;
            }
            Branch { query: rows, occurrences, columns: columns.into_iter().map(|(name, _)| name).collect() }
        }
    }

    fn sql(&self) -> String {
        // SAFETY: deparses the Query built in `new`.
        unsafe { querydef(self.query) }
    }

    /// The change of the rows when each feed's source moves from what it has seen to
    /// now: the rows' columns plus `__pgt_weight`, one UNION ALL branch per term. None
    /// when none of the feeds is a source of this branch.
    fn delta_sql(&self, feeds: &[Feed], to: i64) -> Option<String> {
        let changed: Vec<(&Occurrence, &Feed)> = self
            .occurrences
            .iter()
            .filter_map(|o| feeds.iter().find(|f| f.source == o.source.relid()).map(|f| (o, f)))
            .collect();
        if changed.is_empty() {
            return None;
        }
        let columns = self.columns.iter().map(|c| format!("d.{}", ident(c))).collect::<Vec<_>>().join(", ");
        // (changes, sources read as they were, sign) per term
        let terms: Vec<(Vec<&(&Occurrence, &Feed)>, Vec<&(&Occurrence, &Feed)>, &str)> =
            if changed.iter().all(|(_, feed)| feed.old.is_some()) {
                (0..changed.len()).map(|i| (vec![&changed[i]], changed[i + 1..].iter().collect(), "")).collect()
            } else {
                (1u64..(1u64 << changed.len()))
                    .map(|subset| {
                        let members: Vec<_> =
                            changed.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, m)| m).collect();
                        let sign = if members.len() % 2 == 1 { "" } else { "-" };
                        (members, Vec::new(), sign)
                    })
                    .collect()
            };
        let terms: Vec<String> = terms
            .into_iter()
            .map(|(members, olds, sign)| {
                let weights = (0..members.len())
                    .map(|i| format!("CASE WHEN d.__pgt_change{i} IN ('insert', 'update_postimage') THEN 1 ELSE -1 END"))
                    .collect::<Vec<_>>()
                    .join(" * ");
                // SAFETY: edits a copy of the Query built in `new`.
                let term = unsafe { self.term(&members, &olds, to) };
                format!("SELECT {columns}, {sign}{weights} AS __pgt_weight FROM ({term}) d")
            })
            .collect();
        Some(terms.join(" UNION ALL "))
    }

    /// The rows with each member's source replaced by its changes, restricted to those
    /// unseen, with each member's change type as column `__pgt_change<i>`, and each of
    /// `olds` read as it was at the frontier.
    unsafe fn term(&self, members: &[&(&Occurrence, &Feed)], olds: &[&(&Occurrence, &Feed)], to: i64) -> String {
        unsafe {
            let query = pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query;
            for (occurrence, feed) in olds {
                let (_, rte) = occurrence_entry(query, occurrence);
                (*rte).relid = feed.old.expect("a source that can be read as it was");
            }
            for (i, (occurrence, feed)) in members.iter().enumerate() {
                let (levels, rte) = occurrence_entry(query, occurrence);
                let level = *levels.last().expect("a level");
                (*rte).relid = feed.relid;
                let mut quals = PgList::<pg_sys::Node>::new();
                if !(*(*level).jointree).quals.is_null() {
                    quals.push((*(*level).jointree).quals);
                }
                match &feed.unseen {
                    Unseen::After(from) => {
                        let snapshot = feed_var(feed.relid, occurrence.rtindex, "snapshot_id");
                        quals.push(int8_clause(INT8_GREATER, snapshot, *from));
                        quals.push(int8_clause(INT8_LESS_EQUAL, pg_sys::copyObjectImpl(snapshot as _) as _, to));
                    }
                    Unseen::NotVisibleIn(seen) => {
                        let xid = feed_var(feed.relid, occurrence.rtindex, "__pgt_xid");
                        quals.push(not_visible_in(xid, seen));
                    }
                }
                (*(*level).jointree).quals = pg_sys::make_andclause(quals.into_pg()) as *mut pg_sys::Node;
                // The change type, as an output of every level up to the top.
                let name = format!("__pgt_change{i}");
                let mut column = feed_var(feed.relid, occurrence.rtindex, "change_type");
                for depth in (0..levels.len()).rev() {
                    let resno = append_output(levels[depth], column, &name);
                    if depth > 0 {
                        let parent = levels[depth - 1];
                        let entry = rt_fetch(parent, occurrence.path[depth - 1]);
                        let c_name = CString::new(name.as_str()).expect("no NUL");
                        (*(*entry).eref).colnames =
                            pg_sys::lappend((*(*entry).eref).colnames, pg_sys::makeString(pg_sys::pstrdup(c_name.as_ptr())) as _);
                        column = pg_sys::makeVar(occurrence.path[depth - 1], resno, pg_sys::TEXTOID, -1, pg_sys::DEFAULT_COLLATION_OID, 0)
                            as *mut pg_sys::Node;
                    }
                }
            }
            querydef(query)
        }
    }
}

/// The query levels from `query` down to the one `occurrence` is in (the sub-selects
/// in FROM above it), and its range-table entry there.
unsafe fn occurrence_entry(query: *mut pg_sys::Query, occurrence: &Occurrence) -> (Vec<*mut pg_sys::Query>, *mut pg_sys::RangeTblEntry) {
    unsafe {
        let mut levels = vec![query];
        for s in &occurrence.path {
            let rte = rt_fetch(*levels.last().expect("a level"), *s);
            levels.push((*rte).subquery);
        }
        let rte = rt_fetch(*levels.last().expect("a level"), occurrence.rtindex);
        (levels, rte)
    }
}

/// Range-table entry `index` of `query`.
unsafe fn rt_fetch(query: *mut pg_sys::Query, index: i32) -> *mut pg_sys::RangeTblEntry {
    unsafe {
        PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable)
            .get_ptr(index as usize - 1)
            .expect("an entry of the range table")
    }
}

/// Add `expression` named `name` to `query`'s select list; its position.
unsafe fn append_output(query: *mut pg_sys::Query, expression: *mut pg_sys::Node, name: &str) -> i16 {
    unsafe {
        let mut targets = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        let resno = (targets.len() + 1) as i16;
        let name = CString::new(name).expect("no NUL");
        targets.push(pg_sys::makeTargetEntry(expression as *mut pg_sys::Expr, resno, pg_sys::pstrdup(name.as_ptr()), false));
        (*query).targetList = targets.into_pg();
        resno
    }
}

/// Column `name` of feed `feed` as a Var of range-table entry `rtindex`.
unsafe fn feed_var(feed: pg_sys::Oid, rtindex: i32, name: &str) -> *mut pg_sys::Node {
    unsafe {
        let name = CString::new(name).expect("no NUL");
        let attno = pg_sys::get_attnum(feed, name.as_ptr());
        let (mut type_oid, mut typmod, mut collation) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
        pg_sys::get_atttypetypmodcoll(feed, attno, &mut type_oid, &mut typmod, &mut collation);
        pg_sys::makeVar(rtindex as _, attno, type_oid, typmod, collation, 0) as *mut pg_sys::Node
    }
}

/// `var <operator> value` for a bigint Var.
unsafe fn int8_clause(operator: u32, var: *mut pg_sys::Node, value: i64) -> *mut pg_sys::Node {
    unsafe {
        let constant = pg_sys::makeConst(pg_sys::INT8OID, -1, pg_sys::InvalidOid, 8, pg_sys::Datum::from(value), false, true);
        pg_sys::make_opclause(
            pg_sys::Oid::from(operator),
            pg_sys::BOOLOID,
            false,
            var as *mut pg_sys::Expr,
            constant as *mut pg_sys::Expr,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
        ) as *mut pg_sys::Node
    }
}

/// `NOT pg_visible_in_snapshot(xid, 'seen'::pg_snapshot)`.
unsafe fn not_visible_in(xid: *mut pg_sys::Node, seen: &str) -> *mut pg_sys::Node {
    unsafe {
        let text = CString::new(seen).unwrap_or_default();
        // Postgres' own input function checks the text (the frontier is editable).
        let datum = pg_sys::OidInputFunctionCall(pg_sys::Oid::from(pg_sys::F_PG_SNAPSHOT_IN), text.as_ptr() as *mut _, pg_sys::InvalidOid, -1);
        let snapshot = pg_sys::makeConst(pg_sys::PG_SNAPSHOTOID, -1, pg_sys::InvalidOid, -1, datum, false, false);
        let mut args = PgList::<pg_sys::Node>::new();
        args.push(xid);
        args.push(snapshot as *mut pg_sys::Node);
        let visible = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_PG_VISIBLE_IN_SNAPSHOT),
            pg_sys::BOOLOID,
            args.into_pg(),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let mut negated = PgList::<pg_sys::Node>::new();
        negated.push(visible as *mut pg_sys::Node);
        pg_sys::makeBoolExpr(pg_sys::BoolExprType::NOT_EXPR, negated.into_pg(), -1) as *mut pg_sys::Node
    }
}

/// SQL text of an analyzed SELECT, by ruleutils.
unsafe fn querydef(query: *mut pg_sys::Query) -> String {
    unsafe { CStr::from_ptr(pg_sys::pg_get_querydef(query, false)).to_string_lossy().into_owned() }
}
