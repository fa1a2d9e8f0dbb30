//! A query that mixes lake tables with Postgres tables (or anything else the whole-query
//! translation refuses): its lake tables that are inner-joined at the top of the FROM
//! list, with the WHERE conditions that read only them, become one sub-select that
//! runs in DuckDB as one query, and Postgres joins its result with the rest.
//!
//! The rewrite is done on a copy of the analyzed query before Postgres plans it:
//!
//! ```text
//! SELECT ... FROM heap h, lake.a, lake.b WHERE a.x = b.x AND a.y > 0 AND h.k = b.k
//!   becomes
//! SELECT ... FROM heap h, (SELECT a.x, a.y, b.k FROM lake.a, lake.b
//!                          WHERE a.x = b.x AND a.y > 0 OFFSET 0) s WHERE h.k = s.k
//! ```
//!
//! (`OFFSET 0` keeps Postgres from pulling the sub-select back up.) Postgres plans the
//! sub-select as usual; the `set_rel_pathlist` hook then replaces its paths by one
//! custom path, planned as the same custom scan as a whole pushed query. Conditions
//! Postgres derives for the sub-select from the outer query (`h.k = s.k AND h.k = 5`
//! gives `s.k = 5`) are applied by Postgres over the scan's rows.
//!
//! Exactness: the sub-select computes nothing but columns of an inner join and the
//! conditions on them, each translated as in a whole pushed query (or the rewrite is
//! not done); inner joins commute with the rest of the FROM list, so the query means
//! what it meant. The original lake tables stay in the range table (not in the join
//! tree), so Postgres checks their privileges and locks them as before.
//!
//! Inner joins written as `JOIN ... ON` at the top of the FROM list count as FROM-list
//! items. Not rewritten: queries with sub-links, LATERAL, CTEs, set operations or row
//! locks, lake tables under outer joins, whole-row references. They run as before.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys::{self, Node, NodeTag};
use pgrx::prelude::*;

use crate::pg_nodes::{QueryVisitor, list_nodes, walk_queries};
use crate::query::exec;
use crate::query::top::{Top, translate_exact, translate_top};
use crate::query::model::PushedQuery;
use crate::query::translate::lake_table_server;

/// The sub-selects of the query being planned that run in DuckDB: the sub-select (by
/// address) and its translation.
struct Pending {
    subquery: usize,
    /// Also written into the sub-select's `queryId`, which copies keep: the planner
    /// plans a copy of a sub-select it pulls up a level, at another address.
    token: u64,
    query: PushedQuery,
    params: Vec<*mut Node>,
    /// Whether the planner planned it, as the custom scan.
    used: bool,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static NEXT_TOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Marks a sub-select of this module in `queryId` (which Postgres leaves alone below
/// the top level): a fixed high half and a counter.
const TOKEN_MARK: u64 = 0xD0C4_1A4E_0000_0000;

static mut PREVIOUS_PATHLIST: pg_sys::set_rel_pathlist_hook_type = None;

static mut PATH_METHODS: pg_sys::CustomPathMethods = pg_sys::CustomPathMethods {
    CustomName: c"DuckLake Query".as_ptr(),
    PlanCustomPath: Some(plan_path),
    ReparameterizeCustomPathByChild: None,
};

pub fn install() {
    // SAFETY: _PG_init runs once per backend, before any planning.
    unsafe {
        PREVIOUS_PATHLIST = pg_sys::set_rel_pathlist_hook;
        pg_sys::set_rel_pathlist_hook = Some(set_rel_pathlist);
    }
}

/// Forgets, when dropped, the sub-selects registered since it was made: those of one
/// planning, which has ended (or failed: an ERROR unwinds through it).
pub struct PendingScope(usize);

impl PendingScope {
    pub fn new() -> PendingScope {
        PendingScope(PENDING.with(|p| p.borrow().len()))
    }

    /// Whether every sub-select registered since it was made was planned as the custom
    /// scan. One that was not ran as Postgres planned it, which for the reshaped
    /// sub-select of `compute_on_top` gives its placeholder NULLs: the caller plans the
    /// original query instead.
    pub fn all_used(&self) -> bool {
        PENDING.with(|p| p.borrow()[self.0..].iter().all(|e| e.used))
    }
}

impl Drop for PendingScope {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().truncate(self.0));
    }
}

/// The query with its lake-only inner join as a sub-select run in DuckDB, or `None`
/// when there is nothing to gain or the rewrite does not apply.
pub unsafe fn split(original: *mut pg_sys::Query) -> Option<*mut pg_sys::Query> {
    unsafe {
        let q = pg_sys::copyObjectImpl(original.cast()) as *mut pg_sys::Query;
        if (*q).commandType != pg_sys::CmdType::CMD_SELECT
            || !(*q).utilityStmt.is_null()
            || (*q).hasSubLinks
            || (*q).hasRecursive
            || (*q).hasModifyingCTE
            || (*q).hasForUpdate
            || (*q).hasTargetSRFs
            || !(*q).rowMarks.is_null()
            || !(*q).setOperations.is_null()
            || !(*q).cteList.is_null()
        {
            return None;
        }
        let rtable = list_nodes((*q).rtable);
        if rtable.iter().any(|rte| (*(*rte as *mut pg_sys::RangeTblEntry)).lateral) {
            return None;
        }
        let jointree = (*q).jointree;
        flatten_inner_joins(q);
        // Lake tables directly in the FROM list, by server.
        let mut by_server: HashMap<u32, Vec<u32>> = HashMap::new();
        for item in list_nodes((*jointree).fromlist) {
            if (*item).type_ != NodeTag::T_RangeTblRef {
                continue;
            }
            let index = (*(item as *mut pg_sys::RangeTblRef)).rtindex as u32;
            let rte = *rtable.get(index as usize - 1)? as *mut pg_sys::RangeTblEntry;
            if let Some(server) = lake_table_server(rte) {
                by_server.entry(server.to_u32()).or_default().push(index);
            }
        }
        let mut lake: Vec<u32> = by_server.into_values().max_by_key(|v| v.len())?;
        if lake.len() < 2 {
            return None; // one table alone is already scanned by DuckDB with its conditions
        }
        lake.sort_unstable();
        let is_lake = |varnos: *mut pg_sys::Bitmapset| {
            let members = crate::pg_nodes::members(varnos);
            !members.is_empty() && members.iter().all(|m| lake.contains(&(*m as u32)))
        };
        // WHERE conditions on the lake tables alone go inside.
        let mut inside = Vec::new();
        let mut outside = Vec::new();
        if !(*jointree).quals.is_null() {
            for conjunct in list_nodes(pg_sys::make_ands_implicit((*jointree).quals.cast())) {
                let varnos = pg_sys::pull_varnos(std::ptr::null_mut(), conjunct);
                if is_lake(varnos) && !pg_sys::contain_volatile_functions(conjunct) {
                    inside.push(conjunct);
                } else {
                    outside.push(conjunct);
                }
            }
        }
        let outside_list = node_list(&outside);
        // The columns the rest of the query reads, in sub-select output order.
        let mut columns: HashMap<(u32, i16), (u32, i16)> = HashMap::new();
        let mut target_list: *mut pg_sys::List = std::ptr::null_mut();
        let subselect_index = rtable.len() as u32 + 1;
        for (position, &varno) in lake.iter().enumerate() {
            let mut attnos: *mut pg_sys::Bitmapset = std::ptr::null_mut();
            let mut read = vec![(*q).targetList.cast::<Node>(), outside_list.cast(), (*q).havingQual];
            read.extend(group_expressions(q));
            for node in read {
                if !node.is_null() {
                    pg_sys::pull_varattnos(node, varno, &mut attnos);
                }
            }
            let rte = *rtable.get(varno as usize - 1)? as *mut pg_sys::RangeTblEntry;
            for attno in crate::pg_nodes::attribute_numbers(attnos) {
                if attno <= 0 {
                    return None; // whole-row or system column
                }
                let (mut type_oid, mut typmod, mut collation) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
                pg_sys::get_atttypetypmodcoll((*rte).relid, attno as i16, &mut type_oid, &mut typmod, &mut collation);
                let resno = list_nodes(target_list).len() as i16 + 1;
                let var = pg_sys::makeVar(position as i32 + 1, attno as i16, type_oid, typmod, collation, 0);
                let name = std::ffi::CString::new(format!("c{resno}")).expect("no NUL");
                let tle = pg_sys::makeTargetEntry(var.cast(), resno, pg_sys::pstrdup(name.as_ptr()), false);
                target_list = pg_sys::lappend(target_list, tle.cast());
                columns.insert((varno, attno as i16), (subselect_index, resno));
            }
        }
        if target_list.is_null() {
            return None; // nothing read from the lake tables (count(*) of a join): not worth it
        }
        // The sub-select, its tables renumbered 1..n.
        let renumber: HashMap<u32, u32> = lake.iter().enumerate().map(|(i, v)| (*v, i as u32 + 1)).collect();
        let mut sub_rtable: *mut pg_sys::List = std::ptr::null_mut();
        #[cfg(not(feature = "pg15"))]
        let mut sub_perminfos: *mut pg_sys::List = std::ptr::null_mut();
        let mut sub_from: *mut pg_sys::List = std::ptr::null_mut();
        for (i, &varno) in lake.iter().enumerate() {
            let original = *rtable.get(varno as usize - 1)? as *mut pg_sys::RangeTblEntry;
            let rte = pg_sys::copyObjectImpl(original.cast()) as *mut pg_sys::RangeTblEntry;
            // Privileges are checked on the originals, which stay in the outer range
            // table; the copies keep the same permission records (the user whose user
            // mapping reads the lake), in the sub-select's own list.
            #[cfg(not(feature = "pg15"))]
            {
                let info = pg_sys::getRTEPermissionInfo((*q).rteperminfos, original);
                sub_perminfos = pg_sys::lappend(sub_perminfos, pg_sys::copyObjectImpl(info.cast()));
                (*rte).perminfoindex = list_nodes(sub_perminfos).len() as pg_sys::Index;
            }
            sub_rtable = pg_sys::lappend(sub_rtable, rte.cast());
            sub_from = pg_sys::lappend(sub_from, range_table_ref(i as i32 + 1).cast());
        }
        let inside_quals = if inside.is_empty() {
            std::ptr::null_mut()
        } else {
            let mapped: Vec<*mut Node> = inside.iter().map(|c| map_vars(*c, &Mapping::Renumber(&renumber))).collect();
            pg_sys::make_ands_explicit(node_list(&mapped)).cast::<Node>()
        };
        let sub = pg_sys::palloc0(std::mem::size_of::<pg_sys::Query>()) as *mut pg_sys::Query;
        (*sub).type_ = NodeTag::T_Query;
        (*sub).commandType = pg_sys::CmdType::CMD_SELECT;
        (*sub).querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        (*sub).canSetTag = true;
        (*sub).rtable = sub_rtable;
        #[cfg(not(feature = "pg15"))]
        {
            (*sub).rteperminfos = sub_perminfos;
        }
        (*sub).jointree = pg_sys::makeFromExpr(sub_from, inside_quals);
        (*sub).targetList = target_list;
        let (pushed, params) = translate_exact(sub)?;
        // OFFSET 0: a sub-select Postgres does not pull up into the outer query.
        (*sub).limitOffset =
            pg_sys::makeConst(pg_sys::INT8OID, -1, pg_sys::InvalidOid, 8, pg_sys::Datum::from(0i64), false, true).cast();
        // The outer query reads the sub-select's outputs instead of the lake tables.
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        for tle in list_nodes(target_list) {
            names = pg_sys::lappend(names, pg_sys::makeString((*(tle as *mut pg_sys::TargetEntry)).resname).cast());
        }
        let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>()) as *mut pg_sys::RangeTblEntry;
        (*rte).type_ = NodeTag::T_RangeTblEntry;
        (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
        (*rte).subquery = sub;
        (*rte).eref = pg_sys::makeAlias(c"ducklake_query".as_ptr(), names);
        (*rte).inFromCl = true;
        (*q).rtable = pg_sys::lappend((*q).rtable, rte.cast());
        let mut from: *mut pg_sys::List = std::ptr::null_mut();
        for item in list_nodes((*jointree).fromlist) {
            let lake_item = (*item).type_ == NodeTag::T_RangeTblRef
                && lake.contains(&((*(item as *mut pg_sys::RangeTblRef)).rtindex as u32));
            if !lake_item {
                from = pg_sys::lappend(from, item.cast());
            }
        }
        (*jointree).fromlist = pg_sys::lappend(from, range_table_ref(subselect_index as i32).cast());
        let columns = Mapping::Columns(&columns);
        let outside: Vec<*mut Node> = outside.iter().map(|c| map_vars(*c, &columns)).collect();
        (*jointree).quals =
            if outside.is_empty() { std::ptr::null_mut() } else { pg_sys::make_ands_explicit(node_list(&outside)).cast() };
        (*q).targetList = map_vars((*q).targetList.cast(), &columns).cast();
        if !(*q).havingQual.is_null() {
            (*q).havingQual = map_vars((*q).havingQual, &columns);
        }
        #[cfg(feature = "pg18")]
        for rte in group_entries(q) {
            if !(*rte).groupexprs.is_null() {
                (*rte).groupexprs = map_vars((*rte).groupexprs.cast(), &columns).cast();
            }
        }
        register(sub, pushed, params);
        Some(q)
    }
}

/// `INSERT INTO t SELECT ...` whose SELECT reads only lake tables of one server and is
/// translated exactly (every output a DuckDB column): the SELECT runs in DuckDB as one
/// query, as a sub-select does in `split`, and Postgres inserts its rows. Privileges
/// and locks are Postgres' own: the SELECT's tables stay in its range table.
pub unsafe fn insert_source(original: *mut pg_sys::Query) -> Option<*mut pg_sys::Query> {
    unsafe {
        if (*original).commandType != pg_sys::CmdType::CMD_INSERT
            || !(*original).utilityStmt.is_null()
            || !(*original).cteList.is_null()
            || (*original).hasModifyingCTE
        {
            return None;
        }
        let q = pg_sys::copyObjectImpl(original.cast()) as *mut pg_sys::Query;
        let from = list_nodes((*(*q).jointree).fromlist);
        let [item] = from.as_slice() else { return None };
        if (**item).type_ != NodeTag::T_RangeTblRef {
            return None;
        }
        let index = (*(*item as *mut pg_sys::RangeTblRef)).rtindex as usize;
        let rte = *list_nodes((*q).rtable).get(index - 1)? as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY || (*rte).lateral {
            return None;
        }
        let sub = (*rte).subquery;
        if !(*sub).limitOffset.is_null() || !(*sub).limitCount.is_null() {
            return None;
        }
        // A set operation's select list is its branches': `compute_on_top` cannot
        // reshape it, but can a plain SELECT over it.
        let sub = if (*sub).setOperations.is_null() {
            sub
        } else {
            // Its ORDER BY would sort inside the wrapper, where DuckDB keeps no order.
            if !(*sub).sortClause.is_null() {
                return None;
            }
            let over = over_set_operation(sub)?;
            (*rte).subquery = over;
            over
        };
        let top = translate_top(sub)?;
        if top.postgres_sort.is_some() {
            return None;
        }
        keep_permission_checks(q, sub);
        let exact = top.targets.iter().all(|t| (*t.expr).type_ == NodeTag::T_Var);
        let pushed = if exact { sub } else { compute_on_top(rte, sub, &top) };
        // OFFSET 0: Postgres plans the SELECT as a sub-select of its own (a UNION ALL
        // is not pulled up into an append of its branches).
        (*pushed).limitOffset =
            pg_sys::makeConst(pg_sys::INT8OID, -1, pg_sys::InvalidOid, 8, pg_sys::Datum::from(0i64), false, true).cast();
        register(pushed, top.query, top.params);
        Some(q)
    }
}

/// Make `rte`, whose sub-select `sub` runs in DuckDB as `top` with some of its select
/// items computed by Postgres over DuckDB's outputs (avg as numeric_div of a sum and a
/// count, a numeric of varying display scale rounded to its scale, see `top`), read
/// `SELECT <those items> FROM (sub) s`: the items over the columns of `s`, which is
/// `sub` reshaped to have DuckDB's outputs as its columns. That is what the custom
/// scan that replaces `s`'s plan returns; until then they are typed NULLs, and `sub`'s
/// own items stay as hidden columns, so that its GROUP BY still finds them for the
/// estimates Postgres plans it with. Returns `sub`.
unsafe fn compute_on_top(rte: *mut pg_sys::RangeTblEntry, sub: *mut pg_sys::Query, top: &Top) -> *mut pg_sys::Query {
    unsafe {
        let mut inner: *mut pg_sys::List = std::ptr::null_mut();
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        for (i, output) in top.query.outputs.iter().enumerate() {
            let type_oid = pg_sys::Oid::from(output.type_oid);
            let (mut length, mut by_value) = (0i16, false);
            pg_sys::get_typlenbyval(type_oid, &mut length, &mut by_value);
            let null = pg_sys::makeConst(
                type_oid,
                output.typmod,
                pg_sys::get_typcollation(type_oid),
                length as i32,
                pg_sys::Datum::from(0usize),
                true,
                by_value,
            );
            let name = pg_sys::pstrdup(std::ffi::CString::new(output.name.as_str()).expect("no NUL").as_ptr());
            inner = pg_sys::lappend(inner, pg_sys::makeTargetEntry(null.cast(), i as i16 + 1, name, false).cast());
            names = pg_sys::lappend(names, pg_sys::makeString(name).cast());
        }
        let width = top.query.outputs.len() as i16;
        for (i, tle) in list_nodes((*sub).targetList).into_iter().enumerate() {
            let tle = tle as *mut pg_sys::TargetEntry;
            (*tle).resno = width + i as i16 + 1;
            (*tle).resjunk = true;
            inner = pg_sys::lappend(inner, tle.cast());
        }
        (*sub).targetList = inner;

        let mut targets: *mut pg_sys::List = std::ptr::null_mut();
        // Over DuckDB's outputs (INDEX_VAR) becomes over the columns of `s`.
        let outputs = HashMap::from([(pg_sys::INDEX_VAR as i32 as u32, 1u32)]);
        for target in top.targets.iter().filter(|t| !t.junk) {
            let expr = map_vars(target.expr, &Mapping::Renumber(&outputs));
            let resno = pg_sys::list_length(targets) as i16 + 1;
            targets = pg_sys::lappend(targets, pg_sys::makeTargetEntry(expr.cast(), resno, target.name, false).cast());
        }
        (*rte).subquery = select_from(sub, c"s", names, targets);
        sub
    }
}

/// `SELECT <targets> FROM (sub) <alias>`, the columns of `sub` named `names`.
unsafe fn select_from(
    sub: *mut pg_sys::Query,
    alias: &std::ffi::CStr,
    names: *mut pg_sys::List,
    targets: *mut pg_sys::List,
) -> *mut pg_sys::Query {
    unsafe {
        let item = pgrx::PgBox::<pg_sys::RangeTblEntry>::alloc_node(NodeTag::T_RangeTblEntry).into_pg();
        (*item).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
        (*item).subquery = sub;
        (*item).alias = pg_sys::makeAlias(alias.as_ptr(), std::ptr::null_mut());
        (*item).eref = pg_sys::makeAlias(alias.as_ptr(), names);
        (*item).inFromCl = true;
        let outer = pgrx::PgBox::<pg_sys::Query>::alloc_node(NodeTag::T_Query).into_pg();
        (*outer).commandType = pg_sys::CmdType::CMD_SELECT;
        (*outer).querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        (*outer).canSetTag = true;
        (*outer).rtable = pg_sys::lappend(std::ptr::null_mut(), item.cast());
        let from = pgrx::PgBox::<pg_sys::RangeTblRef>::alloc_node(NodeTag::T_RangeTblRef).into_pg();
        (*from).rtindex = 1;
        (*outer).jointree = pg_sys::makeFromExpr(pg_sys::lappend(std::ptr::null_mut(), from.cast()), std::ptr::null_mut());
        (*outer).targetList = targets;
        outer
    }
}

/// `SELECT u.* FROM (sub) u` for set operation `sub` (None when its select list has
/// hidden columns, which `u.*` would leave out).
unsafe fn over_set_operation(sub: *mut pg_sys::Query) -> Option<*mut pg_sys::Query> {
    unsafe {
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        let mut targets: *mut pg_sys::List = std::ptr::null_mut();
        for tle in list_nodes((*sub).targetList) {
            let tle = tle as *mut pg_sys::TargetEntry;
            if (*tle).resjunk {
                return None;
            }
            let expr = (*tle).expr as *mut Node;
            let column = pg_sys::makeVar(
                1,
                (*tle).resno,
                pg_sys::exprType(expr),
                pg_sys::exprTypmod(expr),
                pg_sys::exprCollation(expr),
                0,
            );
            let name = if (*tle).resname.is_null() { pg_sys::pstrdup(c"?column?".as_ptr()) } else { (*tle).resname };
            names = pg_sys::lappend(names, pg_sys::makeString(name).cast());
            targets = pg_sys::lappend(targets, pg_sys::makeTargetEntry(column.cast(), (*tle).resno, name, false).cast());
        }
        Some(select_from(sub, c"u", names, targets))
    }
}

/// Copies of every relation `sub` reads, at any depth (sub-selects in FROM and in
/// expressions, CTEs), with their permission records, appended to `outer`'s range
/// table outside its join tree. The custom scan replaces the sub-select's own plan,
/// whose range-table entries would then never reach the executor's: there, Postgres
/// checks the privileges and takes the locks of these copies as it would have of the
/// originals.
unsafe fn keep_permission_checks(outer: *mut pg_sys::Query, sub: *mut pg_sys::Query) {
    struct Copies {
        outer: *mut pg_sys::Query,
        levels: Vec<*mut pg_sys::Query>,
    }

    impl QueryVisitor for Copies {
        fn enter(&mut self, query: *mut pg_sys::Query) {
            self.levels.push(query);
        }

        fn leave(&mut self, _query: *mut pg_sys::Query) {
            self.levels.pop();
        }

        fn entry(&mut self, original: *mut pg_sys::RangeTblEntry) {
            // SAFETY: an entry of the query being walked; copies go in palloc'd lists.
            unsafe {
                if (*original).rtekind != pg_sys::RTEKind::RTE_RELATION {
                    return;
                }
                let copy = pg_sys::copyObjectImpl(original.cast()) as *mut pg_sys::RangeTblEntry;
                #[cfg(not(feature = "pg15"))]
                if (*original).perminfoindex != 0 {
                    let level = *self.levels.last().expect("an entry belongs to a query");
                    let info = pg_sys::getRTEPermissionInfo((*level).rteperminfos, original);
                    (*self.outer).rteperminfos = pg_sys::lappend((*self.outer).rteperminfos, pg_sys::copyObjectImpl(info.cast()));
                    (*copy).perminfoindex = list_nodes((*self.outer).rteperminfos).len() as pg_sys::Index;
                }
                (*copy).inFromCl = false;
                (*self.outer).rtable = pg_sys::lappend((*self.outer).rtable, copy.cast());
            }
        }
    }

    unsafe { walk_queries(sub, &mut Copies { outer, levels: Vec::new() }) };
}

/// Run sub-select `sub` of the query being planned as `query` (see `set_rel_pathlist`).
unsafe fn register(sub: *mut pg_sys::Query, mut query: PushedQuery, params: Vec<*mut Node>) {
    unsafe {
        query.not_whole = crate::refusal::current();
        let token = TOKEN_MARK | NEXT_TOKEN.with(|n| {
            n.set(n.get().wrapping_add(1) & 0xFFFF_FFFF);
            n.get()
        });
        (*sub).queryId = token as _;
        PENDING.with(|p| {
            let mut pending = p.borrow_mut();
            pending.retain(|e| e.subquery != sub as usize);
            pending.push(Pending { subquery: sub as usize, token, query, params, used: false });
        });
    }
}

/// Inner joins written with JOIN ... ON at the top of the FROM list become FROM-list
/// items and WHERE conditions, which is what they mean (Postgres' planner does the
/// same). A join whose alias columns the query reads (`USING` columns, `(a JOIN b) AS
/// j`) stays as written.
unsafe fn flatten_inner_joins(q: *mut pg_sys::Query) {
    unsafe {
        let jointree = (*q).jointree;
        let mut read: Vec<i32> = Vec::new();
        let mut pending: Vec<*mut Node> = vec![(*q).targetList.cast(), (*jointree).quals, (*q).havingQual];
        pending.extend(group_expressions(q));
        let mut joins: Vec<*mut Node> = list_nodes((*jointree).fromlist);
        while let Some(item) = joins.pop() {
            if (*item).type_ == NodeTag::T_JoinExpr {
                let j = item as *mut pg_sys::JoinExpr;
                pending.push((*j).quals);
                joins.push((*j).larg);
                joins.push((*j).rarg);
            }
        }
        for node in pending.into_iter().filter(|n| !n.is_null()) {
            read.extend(crate::pg_nodes::members(pg_sys::pull_varnos(std::ptr::null_mut(), node)));
        }
        let mut from: Vec<*mut Node> = Vec::new();
        let mut conditions: Vec<*mut Node> = Vec::new();
        let mut items: Vec<*mut Node> = list_nodes((*jointree).fromlist);
        items.reverse();
        while let Some(item) = items.pop() {
            let j = item as *mut pg_sys::JoinExpr;
            let flat = (*item).type_ == NodeTag::T_JoinExpr
                && (*j).jointype == pg_sys::JoinType::JOIN_INNER
                && !read.contains(&(*j).rtindex);
            if !flat {
                from.push(item);
                continue;
            }
            items.push((*j).rarg);
            items.push((*j).larg);
            if !(*j).quals.is_null() {
                conditions.extend(list_nodes(pg_sys::make_ands_implicit((*j).quals.cast())));
            }
        }
        if conditions.is_empty() && from.len() == list_nodes((*jointree).fromlist).len() {
            return;
        }
        if !(*jointree).quals.is_null() {
            conditions.extend(list_nodes(pg_sys::make_ands_implicit((*jointree).quals.cast())));
        }
        (*jointree).fromlist = node_list(&from);
        (*jointree).quals =
            if conditions.is_empty() { std::ptr::null_mut() } else { pg_sys::make_ands_explicit(node_list(&conditions)).cast() };
    }
}

/// PostgreSQL 18 keeps the GROUP BY expressions in a range-table entry of their own
/// (RTE_GROUP), which the target list's Vars point to: they read the tables too.
#[cfg(feature = "pg18")]
unsafe fn group_entries(q: *mut pg_sys::Query) -> Vec<*mut pg_sys::RangeTblEntry> {
    unsafe {
        list_nodes((*q).rtable)
            .into_iter()
            .map(|n| n as *mut pg_sys::RangeTblEntry)
            .filter(|rte| (**rte).rtekind == pg_sys::RTEKind::RTE_GROUP)
            .collect()
    }
}

unsafe fn group_expressions(q: *mut pg_sys::Query) -> Vec<*mut Node> {
    #[cfg(feature = "pg18")]
    unsafe {
        group_entries(q).into_iter().map(|rte| (*rte).groupexprs.cast::<Node>()).filter(|n| !n.is_null()).collect()
    }
    #[cfg(not(feature = "pg18"))]
    {
        let _ = q;
        Vec::new()
    }
}

/// A FROM-list item naming range-table entry `index` (Postgres has no maker for it).
unsafe fn range_table_ref(index: i32) -> *mut pg_sys::RangeTblRef {
    unsafe {
        let reference = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblRef>()) as *mut pg_sys::RangeTblRef;
        (*reference).type_ = NodeTag::T_RangeTblRef;
        (*reference).rtindex = index;
        reference
    }
}

unsafe fn node_list(nodes: &[*mut Node]) -> *mut pg_sys::List {
    let mut list: *mut pg_sys::List = std::ptr::null_mut();
    for node in nodes {
        list = unsafe { pg_sys::lappend(list, (*node).cast()) };
    }
    list
}

/// How Vars of the outer query's level change.
enum Mapping<'a> {
    /// Lake table varno → its index in the sub-select.
    Renumber(&'a HashMap<u32, u32>),
    /// (varno, attno) of a lake column → (sub-select's varno, output number).
    Columns(&'a HashMap<(u32, i16), (u32, i16)>),
}

/// A copy of `node` with this level's Vars mapped. There are no sub-links (checked by
/// `split`), so every Var of the level has varlevelsup 0.
unsafe fn map_vars(node: *mut Node, mapping: &Mapping) -> *mut Node {
    unsafe {
        let copy = pg_sys::copyObjectImpl(node.cast()) as *mut Node;
        mutate(copy, (mapping as *const Mapping).cast_mut().cast())
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn mutate(node: *mut Node, context: *mut std::ffi::c_void) -> *mut Node {
    unsafe {
        if node.is_null() {
            return node;
        }
        if (*node).type_ == NodeTag::T_Var {
            let var = node as *mut pg_sys::Var;
            let mapping = &*(context as *const Mapping);
            if (*var).varlevelsup == 0 {
                let key = (*var).varno as u32;
                let target = match mapping {
                    Mapping::Renumber(map) => map.get(&key).map(|v| (*v, (*var).varattno)),
                    Mapping::Columns(map) => map.get(&(key, (*var).varattno)).copied(),
                };
                if let Some((varno, attno)) = target {
                    let mapped = pg_sys::makeVar(varno as i32, attno, (*var).vartype, (*var).vartypmod, (*var).varcollid, 0);
                    (*mapped).location = (*var).location;
                    return mapped.cast();
                }
            }
            return node;
        }
        expression_tree_mutator(node, context)
    }
}

#[cfg(feature = "pg15")]
unsafe fn expression_tree_mutator(node: *mut Node, context: *mut std::ffi::c_void) -> *mut Node {
    // PostgreSQL 15 declares the callback without its parameters.
    type Callback = unsafe extern "C-unwind" fn(*mut Node, *mut std::ffi::c_void) -> *mut Node;
    type Untyped = unsafe extern "C-unwind" fn() -> *mut Node;
    unsafe {
        let callback: Untyped = std::mem::transmute::<Callback, Untyped>(mutate);
        pg_sys::expression_tree_mutator(node, Some(callback), context)
    }
}

#[cfg(not(feature = "pg15"))]
unsafe fn expression_tree_mutator(node: *mut Node, context: *mut std::ffi::c_void) -> *mut Node {
    unsafe { pg_sys::expression_tree_mutator(node, Some(mutate), context) }
}

#[pg_guard]
unsafe extern "C-unwind" fn set_rel_pathlist(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rti: pg_sys::Index,
    rte: *mut pg_sys::RangeTblEntry,
) {
    unsafe {
        if let Some(previous) = PREVIOUS_PATHLIST {
            pg_sys::ffi::pg_guard_ffi_boundary(|| previous(root, rel, rti, rte));
        }
        if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY {
            return;
        }
        let token = (*(*rte).subquery).queryId as u64;
        if token & TOKEN_MARK != TOKEN_MARK {
            return;
        }
        let found = PENDING.with(|p| {
            p.borrow().iter().rev().find(|e| e.token == token).map(|e| (e.query.clone(), e.params.clone()))
        });
        let Some((query, params)) = found else { return };
        // Postgres' own estimate of the sub-select, for the outer join's planning.
        let (mut startup, mut total) = (f64::MAX, f64::MAX);
        for path in list_nodes((*rel).pathlist) {
            let path = path as *mut pg_sys::Path;
            if (*path).total_cost < total {
                (startup, total) = ((*path).startup_cost, (*path).total_cost);
            }
        }
        if total == f64::MAX {
            return;
        }
        let path = pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomPath>()) as *mut pg_sys::CustomPath;
        (*path).path.type_ = NodeTag::T_CustomPath;
        (*path).path.pathtype = NodeTag::T_CustomScan;
        (*path).path.parent = rel;
        (*path).path.pathtarget = (*rel).reltarget;
        (*path).path.rows = (*rel).rows;
        (*path).path.startup_cost = startup;
        (*path).path.total_cost = total;
        let mut private = query.to_list();
        private = pg_sys::lappend(private, node_list(&params).cast());
        (*path).custom_private = private;
        (*path).methods = &raw const PATH_METHODS;
        (*rel).pathlist = std::ptr::null_mut();
        (*rel).partial_pathlist = std::ptr::null_mut();
        pg_sys::add_path(rel, path.cast());
        PENDING.with(|p| {
            if let Some(entry) = p.borrow_mut().iter_mut().rev().find(|e| e.token == token) {
                entry.used = true;
            }
        });
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn plan_path(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    best_path: *mut pg_sys::CustomPath,
    tlist: *mut pg_sys::List,
    clauses: *mut pg_sys::List,
    _custom_plans: *mut pg_sys::List,
) -> *mut pg_sys::Plan {
    unsafe {
        let private = list_nodes((*best_path).custom_private);
        let scan = pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomScan>()) as *mut pg_sys::CustomScan;
        (*scan).scan.plan.type_ = NodeTag::T_CustomScan;
        (*scan).scan.plan.targetlist = tlist;
        // Conditions Postgres puts on the sub-select (derived from the outer query).
        (*scan).scan.plan.qual = pg_sys::extract_actual_clauses(clauses, false);
        (*scan).scan.scanrelid = 0;
        // The scan's tuple: the sub-select's outputs, as Vars of its range-table entry.
        let rte = *(*root).simple_rte_array.add((*rel).relid as usize);
        let mut scan_tlist: *mut pg_sys::List = std::ptr::null_mut();
        for tle in list_nodes((*(*rte).subquery).targetList) {
            let tle = tle as *mut pg_sys::TargetEntry;
            let expr = (*tle).expr as *mut Node;
            let var = pg_sys::makeVar(
                (*rel).relid as i32,
                (*tle).resno,
                pg_sys::exprType(expr),
                pg_sys::exprTypmod(expr),
                pg_sys::exprCollation(expr),
                0,
            );
            let entry = pg_sys::makeTargetEntry(var.cast(), (*tle).resno, (*tle).resname, false);
            scan_tlist = pg_sys::lappend(scan_tlist, entry.cast());
        }
        (*scan).custom_scan_tlist = scan_tlist;
        (*scan).custom_exprs = private.get(1).copied().unwrap_or(std::ptr::null_mut()).cast();
        (*scan).custom_private = pg_sys::lappend(std::ptr::null_mut(), (*private.first().expect("the pushed query")).cast());
        (*scan).methods = exec::scan_methods();
        scan.cast()
    }
}
