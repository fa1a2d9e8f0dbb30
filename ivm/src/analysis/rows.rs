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
//! setting the refresh pins, see `objects`); a Postgres table as it was is replayed from
//! its change log into a work table (see `maintenance::replay`), which reads the whole
//! table, so it is done only for queries whose terms need it (`reads_as_it_was`). In
//! the others one changed Postgres table goes first, so no term reads it as it was;
//! with several, the change is the alternating sum over every non-empty set T of changed sources, which reads
//! every source as it is now: (−1)^(|T|+1) · (⋈ of ΔX for X in T and of X' for the
//! others); with R and S, ΔR⋈S' + R'⋈ΔS − ΔR⋈ΔS. Unchanged sources are the same then
//! and now, and with one changed source both forms are the one term ΔR⋈S'. A term's
//! weight is the product of its change rows' weights (an insert or update post-image
//! +1, a delete or pre-image −1) times its sign.
//!
//! A source inside a subquery expression of a WHERE clause is not a factor of a join:
//! its term is the rows whose WHERE clause it changes (see `sublinks`).
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
use super::outer_joins;
use super::parse::analyze;
use super::tree::rt_fetch;
use super::sublinks::{Planner, alias, and, boolean_test, change_filter, conjuncts, keep_keys_in, split_at_sublink, sublinks_in};
use crate::error::IvmResult;
use crate::sql::ident;
use pgrx::{PgList, pg_sys};
use std::ffi::{CStr, CString};

/// `int8 > int8` and `int8 <= int8` in pg_operator (fixed OIDs, like Postgres' own
/// Int8LessOperator).
const INT8_GREATER: u32 = 413;
const INT8_LESS_EQUAL: u32 = 414;

/// One step from a query level down to a level below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Into the sub-select in FROM at this range-table index.
    From(i32),
    /// Into the subquery of the n-th subquery expression of the level's WHERE (in the
    /// order `sublinks::sublinks_in` lists them).
    SubLink(usize),
}

/// One relation of the query: where it is and what it reads.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// The levels it is inside, outermost first (empty: the query's own FROM): the
    /// sub-selects in FROM, then the subquery expressions (a sub-select in FROM inside
    /// a subquery expression is refused).
    pub path: Vec<Step>,
    /// The range-table index of the LEFT or RIGHT JOIN whose nullable side it is.
    pub nullable_in: Option<i32>,
    /// Its index in the range table of its query level.
    pub rtindex: i32,
    pub source: Source,
    /// For `Source::Derived`: the aggregating sub-select.
    pub derived: Option<Box<Derived>>,
}

/// A sub-select in FROM read like a relation: one that aggregates (or a WITH query
/// that does), or any sub-select on an outer join's nullable side.
///
/// An aggregating one is I = γ(R). Its change is its groups that the change of its
/// rows touches, as they are now (+1) and as they were (−1): ΔI = I'|T − I|T for the
/// groups T with a row in ΔR (their keys restricted in its WHERE clause, so only they
/// are aggregated), and I as it was is the sub-select over its sources as they were.
/// Each group's result row is computed by the sub-select itself, so HAVING is exact;
/// its aggregates must give one answer however the rows come (`shape::derived_of`),
/// since a group's old row is computed again and must be the one counted before.
///
/// One that does not aggregate gives a row per row of its FROM and WHERE: its change
/// is its rows' change (each row with weight ±1, an 'insert' or a 'delete'), and it as
/// it was is again the sub-select over its sources as they were.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The sub-select.
    query: *mut pg_sys::Query,
    /// Its rows: its FROM and WHERE projected on its grouping keys, or on its result
    /// columns (named c1, c2, ...) when it does not aggregate.
    rows: Rows,
    grouping: Grouping,
    /// The names the query reads its result columns by (its alias's), which its
    /// changes keep: ruleutils prints them only where they differ from the real ones.
    names: Vec<String>,
}

#[derive(Debug, Clone)]
enum Grouping {
    /// Its grouping keys over its FROM (none: one group).
    Groups(Vec<*mut pg_sys::Node>),
    /// It does not aggregate: its rows are its result.
    Rows,
}

impl Derived {
    /// An aggregating sub-select.
    pub fn new(query: *mut pg_sys::Query, rows: Rows, keys: Vec<*mut pg_sys::Node>, names: Vec<String>) -> Derived {
        Derived { query, rows, grouping: Grouping::Groups(keys), names }
    }

    /// A sub-select that does not aggregate, `rows` being its result columns.
    pub fn of_rows(query: *mut pg_sys::Query, rows: Rows, names: Vec<String>) -> Derived {
        Derived { query, rows, grouping: Grouping::Rows, names }
    }

    pub fn occurrences(&self) -> impl Iterator<Item = &Occurrence> {
        self.rows.occurrences()
    }

    /// The first feed of one of its sources, if any changed.
    fn feed<'a>(&self, feeds: &'a [Feed]) -> Option<&'a Feed> {
        self.occurrences().find_map(|o| feed_of(o, feeds))
    }

    /// The sub-select with each changed source read as it was.
    unsafe fn as_it_was(&self, feeds: &[Feed]) -> IvmResult<*mut pg_sys::Query> {
        unsafe {
            let query = pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query;
            for occurrence in self.occurrences() {
                if let Some(feed) = feed_of(occurrence, feeds) {
                    read_as_it_was(occurrence_entry(query, occurrence), occurrence, feed, feeds)?;
                }
            }
            Ok(query)
        }
    }

    /// ΔI with a `change_type` column after its own, as an analyzed query: the
    /// touched groups as they are ('insert') and as they were ('delete'), or the
    /// changed rows.
    unsafe fn changes(&self, feeds: &[Feed]) -> IvmResult<*mut pg_sys::Query> {
        unsafe {
            let keys = match &self.grouping {
                Grouping::Groups(keys) => keys,
                Grouping::Rows => return self.row_changes(feeds),
            };
            let touched = self.rows.delta_sql(feeds)?.unwrap_or_else(|| "SELECT 1 WHERE false".into());
            let touched = analyze(&touched)?;
            // Postgres runs a sub-select that reads a Postgres table (unless small enough
            // to send to DuckDB with it) or the lakes of several servers (the FDW runs
            // queries over one lake in DuckDB), DuckDB one over one lake's tables alone.
            let occurrences = self.rows.all_occurrences();
            let reads_postgres = occurrences.iter().any(|o| matches!(o.source, Source::Postgres(_)));
            let mut servers = occurrences.iter().filter_map(|o| if let Source::Lake(lake) = &o.source { Some(lake.server) } else { None });
            let first = servers.next();
            let several_lakes = servers.any(|server| Some(server) != first);
            let planner = if reads_postgres || several_lakes { Planner::Postgres } else { Planner::DuckDb };
            let restricted = |query: *mut pg_sys::Query| -> IvmResult<String> {
                let touched = pg_sys::copyObjectImpl(touched as *const std::ffi::c_void) as *mut pg_sys::Query;
                let rte = pgrx::PgBox::<pg_sys::RangeTblEntry>::alloc_node(pg_sys::NodeTag::T_RangeTblEntry).into_pg();
                (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
                (*rte).subquery = touched;
                (*rte).inFromCl = true;
                let names: Vec<String> = PgList::<pg_sys::TargetEntry>::from_pg((*touched).targetList)
                    .iter_ptr()
                    .map(|t| CStr::from_ptr((*t).resname).to_string_lossy().into_owned())
                    .collect();
                (*rte).eref = alias("t", &names);
                keep_keys_in(query, keys, rte, planner);
                Ok(querydef(query))
            };
            let now = restricted(pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query)?;
            let before = restricted(self.as_it_was(feeds)?)?;
            let columns = self.names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ");
            analyze(&format!(
                "SELECT i.*, 'insert'::pg_catalog.text AS change_type FROM ({now}) AS i({columns}) \
                 UNION ALL SELECT i.*, 'delete'::pg_catalog.text FROM ({before}) AS i({columns})"
            ))
        }
    }

    /// The change of a sub-select that does not aggregate: its rows' change, each
    /// row's weight (±1) as its `change_type`.
    unsafe fn row_changes(&self, feeds: &[Feed]) -> IvmResult<*mut pg_sys::Query> {
        unsafe {
            let mut columns: Vec<String> = self.names.iter().enumerate().map(|(i, name)| format!("d.c{} AS {}", i + 1, ident(name))).collect();
            match self.rows.delta_sql(feeds)? {
                Some(delta) => {
                    columns.push("CASE WHEN d.__pgt_weight > 0 THEN 'insert' ELSE 'delete' END::pg_catalog.text AS change_type".into());
                    analyze(&format!("SELECT {} FROM ({delta}) d", columns.join(", ")))
                }
                None => {
                    let now = querydef(pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query);
                    let names = self.names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ");
                    let alias = if self.names.is_empty() { "i".to_string() } else { format!("i({names})") };
                    analyze(&format!("SELECT i.*, 'insert'::pg_catalog.text AS change_type FROM ({now}) AS {alias} WHERE false"))
                }
            }
        }
    }
}

/// The feed of `occurrence`'s table among `feeds` (of one of its sources, for a
/// derived relation): whether it changed.
fn feed_of<'a>(occurrence: &Occurrence, feeds: &'a [Feed]) -> Option<&'a Feed> {
    match &occurrence.derived {
        Some(derived) => derived.feed(feeds),
        None => feeds.iter().find(|f| f.source == occurrence.source.relid()),
    }
}

/// Read `occurrence` (range-table entry `rte`) as it was at the frontier.
unsafe fn read_as_it_was(rte: *mut pg_sys::RangeTblEntry, occurrence: &Occurrence, feed: &Feed, feeds: &[Feed]) -> IvmResult<()> {
    unsafe {
        match &occurrence.derived {
            Some(derived) => (*rte).subquery = derived.as_it_was(feeds)?,
            None => source_as_it_was(rte, feed)?,
        }
        Ok(())
    }
}

/// Make `rte`, which reads `feed`'s source, read it as it was at the frontier: a lake
/// table's time-travel mirror, a Postgres table's replay (see `maintenance::replay`).
pub unsafe fn source_as_it_was(rte: *mut pg_sys::RangeTblEntry, feed: &Feed) -> IvmResult<()> {
    unsafe {
        match feed.old {
            Some(old) => {
                (*rte).relid = old;
                Ok(())
            }
            None => Err(crate::error::IvmError::new(
                pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("no state as it was of {} for this refresh", crate::sql::relation_name(feed.source)),
            )),
        }
    }
}

impl Occurrence {
    /// The range-table indexes of the sub-selects in FROM it is inside.
    fn from_steps(&self) -> Vec<i32> {
        self.path.iter().filter_map(|s| if let Step::From(i) = s { Some(*i) } else { None }).collect()
    }

    /// The subquery expressions it is inside, below its last sub-select in FROM.
    fn sublink_steps(&self) -> Vec<usize> {
        self.path.iter().filter_map(|s| if let Step::SubLink(n) = s { Some(*n) } else { None }).collect()
    }

    /// Whether it is read inside a subquery expression (where its changes are not
    /// rows of the result but changes of the WHERE clause's value, see `sublinks`).
    pub fn in_subquery_expression(&self) -> bool {
        self.path.iter().any(|s| matches!(s, Step::SubLink(_)))
    }

    /// Whether it is a factor of a join: not in a subquery expression, on an outer
    /// join's nullable side or an aggregating sub-select, whose changes' terms read
    /// sources as they were and are no products (see `Branch::delta_sql`).
    fn is_join_factor(&self) -> bool {
        !self.in_subquery_expression() && self.nullable_in.is_none() && self.derived.is_none()
    }
}

/// Which of a source's changes a delta term reads.
#[derive(Debug, Clone)]
pub enum Unseen {
    /// A lake change feed: snapshot ids after the first, up to the second (each lake
    /// has its own).
    Between(i64, i64),
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
    /// The source as it was at the frontier: a lake source's time-travel mirror, a
    /// Postgres table's replay when a term may read it (see `Rows::reads_as_it_was`).
    pub old: Option<pg_sys::Oid>,
}

/// The keys-and-arguments rows: one query over the defining query's FROM and WHERE,
/// or (for a UNION of SELECTs) one per branch, whose rows are added up.
#[derive(Debug, Clone)]
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

    /// Whether a term may read a Postgres table as it was: an occurrence in a subquery
    /// expression, on an outer join's nullable side or in an aggregating sub-select
    /// (without them, one changed Postgres table goes first and several take the
    /// alternating sum, see `Branch::delta_sql`).
    pub fn reads_as_it_was(&self) -> bool {
        !self.all_occurrences().iter().all(|o| o.is_join_factor())
    }

    /// Every occurrence, those inside aggregating sub-selects included: the tables
    /// whose changes a refresh reads.
    pub fn all_occurrences(&self) -> Vec<&Occurrence> {
        let mut all = Vec::new();
        for occurrence in self.occurrences() {
            all.push(occurrence);
            if let Some(derived) = &occurrence.derived {
                all.extend(derived.rows.all_occurrences());
            }
        }
        all
    }

    /// The rows as the sources are now (the lake at the snapshot the refresh pins).
    pub fn sql(&self) -> String {
        self.branches.iter().map(Branch::sql).collect::<Vec<_>>().join(" UNION ALL ")
    }

    /// The change of the rows (see `Branch::delta_sql`): the branches' changes added
    /// up. None when no feed is given (nothing changed).
    pub fn delta_sql(&self, feeds: &[Feed]) -> IvmResult<Option<String>> {
        let mut deltas = Vec::new();
        for branch in &self.branches {
            deltas.extend(branch.delta_sql(feeds)?);
        }
        Ok((!deltas.is_empty()).then(|| deltas.join(" UNION ALL ")))
    }
}

/// The keys-and-arguments query of one SELECT.
#[derive(Debug, Clone)]
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
            (*rows).limitCount = std::ptr::null_mut();
            (*rows).limitOffset = std::ptr::null_mut();
            (*rows).limitOption = pg_sys::LimitOption::LIMIT_OPTION_COUNT;
            (*rows).windowClause = std::ptr::null_mut();
            (*rows).hasAggs = false;
            (*rows).hasWindowFuncs = false;
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
    fn delta_sql(&self, feeds: &[Feed]) -> IvmResult<Option<String>> {
        let changed: Vec<(&Occurrence, &Feed)> = self.occurrences.iter().filter_map(|o| feed_of(o, feeds).map(|f| (o, f))).collect();
        if changed.is_empty() {
            return Ok(None);
        }
        let columns = self.columns.iter().map(|c| format!("d.{}", ident(c))).collect::<Vec<_>>().join(", ");
        // (changes, sources read as they were, sign) per term. The telescoping sum reads
        // every changed source after a term's own as it was, which a Postgres table
        // without a replay (see `Rows::reads_as_it_was`) cannot be: with one such source
        // it goes first; with more, the alternating sum reads every source as it is now,
        // when every source is a factor of a join (its terms are products: none for a
        // subquery expression's change, an outer join's padding or an aggregating
        // sub-select's groups).
        let mut changed = changed;
        changed.sort_by_key(|(_, feed)| feed.old.is_some());
        let products_only = self.occurrences.iter().all(Occurrence::is_join_factor);
        let terms: Vec<(Vec<&(&Occurrence, &Feed)>, Vec<&(&Occurrence, &Feed)>, &str)> =
            if !products_only || changed.iter().filter(|(_, feed)| feed.old.is_none()).count() <= 1 {
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
        let mut sql = Vec::new();
        for (members, olds, sign) in terms {
            let weights = (0..members.len())
                .map(|i| format!("CASE WHEN d.__pgt_change{i} IN ('insert', 'update_postimage') THEN 1 ELSE -1 END"))
                .collect::<Vec<_>>()
                .join(" * ");
            // SAFETY: edits a copy of the Query built in `new`.
            let term = unsafe { self.term(&members, &olds, feeds)? };
            sql.push(format!("SELECT {columns}, {sign}{weights} AS __pgt_weight FROM ({term}) d"));
        }
        Ok(Some(sql.join(" UNION ALL ")))
    }

    /// The rows with each member's source replaced by its changes, restricted to those
    /// unseen, with each member's change type as column `__pgt_change<i>`, and each of
    /// `olds` read as it was at the frontier. A member inside a subquery expression
    /// (always alone in its term) gives the rows whose WHERE clause changed instead,
    /// typed 'insert' where it became true and 'delete' where it stopped being true;
    /// one on the nullable side of an outer join (alone too) gives the pairs it
    /// changes and the padded rows it adds or removes (see `outer_joins`).
    unsafe fn term(&self, members: &[&(&Occurrence, &Feed)], olds: &[&(&Occurrence, &Feed)], feeds: &[Feed]) -> IvmResult<String> {
        unsafe {
            let query = pg_sys::copyObjectImpl(self.query as *const std::ffi::c_void) as *mut pg_sys::Query;
            for (occurrence, feed) in olds {
                read_as_it_was(occurrence_entry(query, occurrence), occurrence, feed, feeds)?;
            }
            if let [member] = members {
                if let Some(join) = member.0.nullable_in {
                    let pairs = pg_sys::copyObjectImpl(query as *const std::ffi::c_void) as *mut pg_sys::Query;
                    outer_joins::keep_linear_part(*from_levels(pairs, &member.0.from_steps()).last().expect("a level"), join, member.0.rtindex);
                    let pairs = with_changes(pairs, members, feeds)?;
                    let padding = padding_change(query, member.0, member.1, join, feeds)?;
                    return Ok(format!("{pairs} UNION ALL {padding}"));
                }
            }
            with_changes(query, members, feeds)
        }
    }
}

/// `query` with each member's source replaced by its changes (see `Branch::term`).
unsafe fn with_changes(query: *mut pg_sys::Query, members: &[&(&Occurrence, &Feed)], feeds: &[Feed]) -> IvmResult<String> {
    unsafe {
        for (i, (occurrence, feed)) in members.iter().enumerate() {
            let from = occurrence.from_steps();
            let levels = from_levels(query, &from);
            let level = *levels.last().expect("a level");
            // A derived relation's changes are a query with its columns and change_type.
            let derived_changes = match &occurrence.derived {
                Some(derived) => Some((derived.changes(feeds)?, derived.names.len())),
                None => None,
            };
            let changes = |q: *mut pg_sys::Query, rtindex: i32| -> Vec<*mut pg_sys::Node> {
                let rte = rt_fetch(q, rtindex);
                match derived_changes {
                    Some((changes, _)) => {
                        read_derived_changes(rte, changes);
                        Vec::new()
                    }
                    None => {
                        (*rte).relid = feed.relid;
                        unseen_conditions(feed, rtindex)
                    }
                }
            };
            let sublinks = occurrence.sublink_steps();
            let column = if sublinks.is_empty() {
                let mut quals = conjuncts((*(*level).jointree).quals);
                quals.extend(changes(level, occurrence.rtindex));
                (*(*level).jointree).quals = and(quals);
                match derived_changes {
                    Some((_, width)) => pg_sys::makeVar(occurrence.rtindex, width as i16 + 1, pg_sys::TEXTOID, -1, pg_sys::DEFAULT_COLLATION_OID, 0)
                        as *mut pg_sys::Node,
                    None => feed_var(feed.relid, occurrence.rtindex, "change_type"),
                }
            } else {
                let (mut quals, now, sublinks) = split_at_sublink((*(*level).jointree).quals, &sublinks);
                let before = pg_sys::copyObjectImpl(now as *const std::ffi::c_void) as *mut pg_sys::Node;
                read_as_it_was(sublink_entry(before, &sublinks, occurrence.rtindex), occurrence, feed, feeds)?;
                let filter = change_filter(now, &sublinks, occurrence.rtindex, &changes);
                let is_true = |node: *mut pg_sys::Node| {
                    boolean_test(pg_sys::copyObjectImpl(node as *const std::ffi::c_void) as _, pg_sys::BoolTestType::IS_TRUE)
                };
                quals.extend([filter, differ(is_true(now), is_true(before))]);
                (*(*level).jointree).quals = and(quals);
                case_text(is_true(now), "insert", "delete")
            };
            output_change(&levels, &from, column, &format!("__pgt_change{i}"));
        }
        Ok(querydef(query))
    }
}

/// The padded rows of outer join `join` that the changes of `feed` to its nullable
/// side `occurrence` add ('insert': the rows' last match went away) or remove
/// ('delete': a first match appeared), see `outer_joins`. A derived relation there is
/// read whole: as it is, as it was, and its changes.
unsafe fn padding_change(query: *mut pg_sys::Query, occurrence: &Occurrence, feed: &Feed, join: i32, feeds: &[Feed]) -> IvmResult<String> {
    unsafe {
        let from = occurrence.from_steps();
        let levels = from_levels(query, &from);
        let level = *levels.last().expect("a level");
        let table = occurrence.rtindex;
        // Every row of the other side, padded.
        let condition = outer_joins::pad_other_side(level, join, table);
        let now = move || outer_joins::has_match(level, condition, table, |_| Ok(()), Vec::new());
        let before = outer_joins::has_match(level, condition, table, |rte| read_as_it_was(rte, occurrence, feed, feeds), Vec::new())?;
        let reached = match &occurrence.derived {
            Some(derived) => {
                let changes = derived.changes(feeds)?;
                outer_joins::has_match(level, condition, table, |rte| Ok(read_derived_changes(rte, changes)), Vec::new())?
            }
            None => outer_joins::has_match(
                level,
                condition,
                table,
                |rte| {
                    (*rte).relid = feed.relid;
                    Ok(())
                },
                unseen_conditions(feed, 1),
            )?,
        };
        let mut quals = conjuncts((*(*level).jointree).quals);
        quals.extend([reached, differ(now()?, before)]);
        (*(*level).jointree).quals = and(quals);
        output_change(&levels, &from, case_text(now()?, "delete", "insert"), "__pgt_change0");
        Ok(querydef(query))
    }
}

/// Make `rte`, a derived relation's entry, read its changes `changes` (see
/// `Derived::changes`), which have a `change_type` column after its own.
unsafe fn read_derived_changes(rte: *mut pg_sys::RangeTblEntry, changes: *mut pg_sys::Query) {
    unsafe {
        (*rte).subquery = pg_sys::copyObjectImpl(changes as *const std::ffi::c_void) as *mut pg_sys::Query;
        let name = pg_sys::makeString(pg_sys::pstrdup(c"change_type".as_ptr()));
        (*(*rte).eref).colnames = pg_sys::lappend((*(*rte).eref).colnames, name as _);
    }
}

/// `a <> b` for booleans that are never NULL.
unsafe fn differ(a: *mut pg_sys::Node, b: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe { boolean_operator(pg_sys::BooleanNotEqualOperator, a, b) }
}

/// `a <op> b` for an operator `op` (by oid) giving a boolean, without collation.
unsafe fn boolean_operator(op: u32, a: *mut pg_sys::Node, b: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        pg_sys::make_opclause(
            pg_sys::Oid::from(op),
            pg_sys::BOOLOID,
            false,
            a as *mut pg_sys::Expr,
            b as *mut pg_sys::Expr,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
        ) as *mut pg_sys::Node
    }
}

/// Add `column` (text) as output `name` of the deepest of `levels` and of every
/// level above it, up to the top (`from`: the sub-selects in FROM between them).
unsafe fn output_change(levels: &[*mut pg_sys::Query], from: &[i32], column: *mut pg_sys::Node, name: &str) {
    unsafe {
        let mut column = column;
        for depth in (0..levels.len()).rev() {
            let resno = append_output(levels[depth], column, name);
            if depth > 0 {
                let parent = levels[depth - 1];
                let entry = rt_fetch(parent, from[depth - 1]);
                let c_name = CString::new(name).expect("no NUL");
                (*(*entry).eref).colnames =
                    pg_sys::lappend((*(*entry).eref).colnames, pg_sys::makeString(pg_sys::pstrdup(c_name.as_ptr())) as _);
                column = pg_sys::makeVar(from[depth - 1], resno, pg_sys::TEXTOID, -1, pg_sys::DEFAULT_COLLATION_OID, 0)
                    as *mut pg_sys::Node;
            }
        }
    }
}

/// The conditions that keep only the changes of `feed` (at range-table index
/// `rtindex` of its level) not yet seen.
unsafe fn unseen_conditions(feed: &Feed, rtindex: i32) -> Vec<*mut pg_sys::Node> {
    unsafe {
        match &feed.unseen {
            Unseen::Between(from, to) => {
                let snapshot = feed_var(feed.relid, rtindex, "snapshot_id");
                vec![
                    int8_clause(INT8_GREATER, snapshot, *from),
                    int8_clause(INT8_LESS_EQUAL, pg_sys::copyObjectImpl(snapshot as _) as _, *to),
                ]
            }
            Unseen::NotVisibleIn(seen) => {
                let xid = feed_var(feed.relid, rtindex, "__pgt_xid");
                vec![not_visible_in(xid, seen)]
            }
        }
    }
}

/// `CASE WHEN condition THEN 'yes' ELSE 'no' END`, of type text.
unsafe fn case_text(condition: *mut pg_sys::Node, yes: &str, no: &str) -> *mut pg_sys::Node {
    unsafe {
        let text = |value: &str| {
            let value = CString::new(value).expect("no NUL");
            let datum = pg_sys::Datum::from(pg_sys::cstring_to_text(value.as_ptr()));
            pg_sys::makeConst(pg_sys::TEXTOID, -1, pg_sys::DEFAULT_COLLATION_OID, -1, datum, false, false) as *mut pg_sys::Expr
        };
        let mut when = pgrx::PgBox::<pg_sys::CaseWhen>::alloc_node(pg_sys::NodeTag::T_CaseWhen);
        when.expr = condition as *mut pg_sys::Expr;
        when.result = text(yes);
        when.location = -1;
        let mut whens = PgList::<pg_sys::CaseWhen>::new();
        whens.push(when.into_pg());
        let mut case = pgrx::PgBox::<pg_sys::CaseExpr>::alloc_node(pg_sys::NodeTag::T_CaseExpr);
        case.casetype = pg_sys::TEXTOID;
        case.casecollid = pg_sys::DEFAULT_COLLATION_OID;
        case.args = whens.into_pg();
        case.defresult = text(no);
        case.location = -1;
        case.into_pg() as *mut pg_sys::Node
    }
}

/// The query levels from `query` down through the sub-selects in FROM at `from`.
unsafe fn from_levels(query: *mut pg_sys::Query, from: &[i32]) -> Vec<*mut pg_sys::Query> {
    unsafe {
        let mut levels = vec![query];
        for index in from {
            let rte = rt_fetch(*levels.last().expect("a level"), *index);
            levels.push((*rte).subquery);
        }
        levels
    }
}

/// The range-table entry of `occurrence` in `query`.
unsafe fn occurrence_entry(query: *mut pg_sys::Query, occurrence: &Occurrence) -> *mut pg_sys::RangeTblEntry {
    unsafe {
        let level = *from_levels(query, &occurrence.from_steps()).last().expect("a level");
        let sublinks = occurrence.sublink_steps();
        if sublinks.is_empty() {
            rt_fetch(level, occurrence.rtindex)
        } else {
            sublink_entry((*(*level).jointree).quals, &sublinks, occurrence.rtindex)
        }
    }
}

/// Range-table entry `rtindex` of the subquery that the subquery expressions `path`
/// lead to from WHERE clause `quals`.
unsafe fn sublink_entry(quals: *mut pg_sys::Node, path: &[usize], rtindex: i32) -> *mut pg_sys::RangeTblEntry {
    unsafe {
        let mut quals = quals;
        let mut sub = std::ptr::null_mut();
        for n in path {
            sub = (*sublinks_in(quals)[*n]).subselect as *mut pg_sys::Query;
            quals = (*(*sub).jointree).quals;
        }
        rt_fetch(sub, rtindex)
    }
}

/// Add `expression` named `name` to `query`'s select list; its position.
/// It goes after the visible outputs and before the hidden ones (an ORDER BY's), so
/// that its position is the one the parent's column names give it.
unsafe fn append_output(query: *mut pg_sys::Query, expression: *mut pg_sys::Node, name: &str) -> i16 {
    unsafe {
        let old = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        let visible = old.iter_ptr().filter(|t| !(**t).resjunk).count();
        let resno = (visible + 1) as i16;
        let name = CString::new(name).expect("no NUL");
        let mut targets = PgList::<pg_sys::TargetEntry>::new();
        for (i, entry) in old.iter_ptr().enumerate() {
            if i == visible {
                targets.push(pg_sys::makeTargetEntry(expression as *mut pg_sys::Expr, resno, pg_sys::pstrdup(name.as_ptr()), false));
            }
            if (*entry).resjunk {
                (*entry).resno += 1;
            }
            targets.push(entry);
        }
        if visible == old.len() {
            targets.push(pg_sys::makeTargetEntry(expression as *mut pg_sys::Expr, resno, pg_sys::pstrdup(name.as_ptr()), false));
        }
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
        boolean_operator(operator, var, constant as *mut pg_sys::Node)
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
