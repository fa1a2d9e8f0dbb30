//! The structure of an analyzed query in DuckDB SQL: FROM lists and joins (inner,
//! outer; semi and anti joins come as EXISTS/IN sub-selects, which DuckDB turns back
//! into joins), sub-selects in FROM, non-recursive CTEs, WHERE, GROUP BY, HAVING,
//! DISTINCT, UNION/INTERSECT/EXCEPT [ALL], window functions, grouping sets, LATERAL
//! sub-selects, ORDER BY and constant LIMIT/OFFSET. Lake tables and change feeds of the
//! query's one server are read, and small Postgres tables (`postgres_rows`). Anything
//! else (recursive CTEs, row locks, functions in FROM, other tables) refuses the whole
//! query.
//!
//! Every relation gets a fresh alias `t<n>`, every sub-select output the name
//! `c<resno>`, so no user identifier needs to survive DuckDB's name resolution.

mod union_all;

use std::collections::HashMap;

use pgrx::pg_sys::{self, Node, NodeTag, Oid};
use pgrx::PgRelation;

use crate::duck::sql;
use crate::options::{TableOptions, lake_column_name};
use crate::pg_nodes::{const_int, list_nodes};
use crate::query::numeric::Binding;
use crate::query::postgres_rows::{self, PostgresColumn};
use crate::query::typed::{Ty, Typed, groupable};
use crate::query::model::{PushedQuery, PushedTable, SLOT_CLOSE, SLOT_OPEN};
use crate::scan::model::Bound;
use crate::scan::plan::{constant_bound, snapshot_bounds};
use crate::scan::collation::{collation_is_deterministic, collation_sorts_bytewise};
use crate::scan::deparse::{builtin_operator_name, is_collatable, one_type_in_duckdb};
use crate::types::kind::comparable_expression_of;

/// How a range-table entry of one query level is referred to.
enum Relation {
    Lake { alias: String, relid: Oid },
    /// A small Postgres table read into the query (see `postgres_rows`), once the FROM
    /// list has named it: its table slot.
    Postgres { alias: String, relid: Oid, slot: Option<usize> },
    /// A sub-select or CTE reference: `alias."c<n>"`, with its outputs.
    Derived { alias: String, outputs: Outputs },
    /// A join's alias columns stand for expressions of its inputs.
    Join { rte: *mut pg_sys::RangeTblEntry },
    #[cfg(feature = "pg18")]
    Group { query: *mut pg_sys::Query },
    /// Not referable (a view kept for permission checks, an empty FROM).
    None,
}

/// What a sub-select or CTE gives the query around it: the types of its outputs
/// `c1..cn`, and which of them are numerics of varying display scale with a second
/// column `c<n>_scale` holding each value's scale, computed where the value is, so
/// that the query around can print, sum or divide it as Postgres does (see `numeric`).
#[derive(Clone, Default)]
struct Outputs {
    types: Vec<Option<Ty>>,
    scaled: Vec<bool>,
}

impl Outputs {
    fn unscaled(types: Vec<Option<Ty>>) -> Outputs {
        Outputs { types, scaled: Vec::new() }
    }
}

struct Level {
    query: *mut pg_sys::Query,
    rtable: *mut pg_sys::List,
    relations: Vec<Relation>,
    /// CTEs defined at this level: name → (alias, outputs).
    ctes: HashMap<String, (String, Outputs)>,
    /// Its HAVING clause is being translated, where DuckDB cannot bind lambdas.
    in_having: bool,
    /// Uncorrelated sub-selects of its HAVING clause, as materialized CTEs (see `hoist`).
    hoisted: Vec<String>,
}

pub struct Translator {
    levels: Vec<Level>,
    pub params: Vec<*mut Node>,
    pub tables: Vec<PushedTable>,
    pub server: Option<Oid>,
    /// The subject of the CASE being translated (`CASE x WHEN ...`).
    pub case_value: Vec<Option<Typed>>,
    aliases: usize,
    /// The outermost ORDER BY (and so its LIMIT/OFFSET) runs in Postgres: DuckDB
    /// cannot sort exactly as Postgres does (text under a non-C collation), or a key
    /// is computed by Postgres on top.
    pub sort_in_postgres: bool,
}

impl Translator {
    pub fn new() -> Translator {
        Translator { levels: Vec::new(), params: Vec::new(), tables: Vec::new(), server: None, case_value: Vec::new(), aliases: 0, sort_in_postgres: false }
    }

    /// How a value computed once is named in DuckDB SQL at this point (see `Binding`).
    pub fn binding(&self) -> Binding {
        if self.levels.last().is_some_and(|l| l.in_having) { Binding::Repeated } else { Binding::Lambda }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// DuckDB SQL for a sub-select of an expression, and the types of its outputs
    /// `c1..cn` (and no other column).
    pub unsafe fn query_sql(&mut self, query: *mut pg_sys::Query) -> Option<(String, Vec<Option<Ty>>)> {
        unsafe { self.select(query, None, false).map(|(sql, outputs)| (sql, outputs.types)) }
    }

    /// DuckDB SQL for a sub-select in FROM or a CTE, with its outputs' scale columns.
    unsafe fn derived_sql(&mut self, query: *mut pg_sys::Query) -> Option<(String, Outputs)> {
        unsafe { self.select(query, None, true) }
    }

    /// The outermost SELECT, its select list made by `top_items` (the query's outputs,
    /// chosen by the planner hook).
    pub unsafe fn top_select(&mut self, q: *mut pg_sys::Query, top_items: &dyn Fn(&mut Translator) -> Option<Vec<String>>) -> Option<String> {
        unsafe { self.select(q, Some(top_items), false).map(|(sql, _)| sql) }
    }

    /// A SELECT at a new level. `top_items` replaces the select list (see
    /// `top_select`); `scale_columns`: see `Outputs`.
    unsafe fn select(
        &mut self,
        q: *mut pg_sys::Query,
        top_items: Option<&dyn Fn(&mut Translator) -> Option<Vec<String>>>,
        scale_columns: bool,
    ) -> Option<(String, Outputs)> {
        unsafe {
            if !supported_shape(q) {
                return None;
            }
            self.levels.push(Level {
                query: q,
                rtable: (*q).rtable,
                relations: Vec::new(),
                ctes: HashMap::new(),
                in_having: false,
                hoisted: Vec::new(),
            });
            let result = self.select_at_level(q, top_items, scale_columns);
            self.levels.pop();
            result
        }
    }

    unsafe fn select_at_level(
        &mut self,
        q: *mut pg_sys::Query,
        top_items: Option<&dyn Fn(&mut Translator) -> Option<Vec<String>>>,
        scale_columns: bool,
    ) -> Option<(String, Outputs)> {
        unsafe {
            let mut sql = String::new();
            // CTEs see no outer query level (Postgres allows none in a CTE we push).
            let mut ctes = Vec::new();
            for cte in list_nodes((*q).cteList) {
                let cte = cte as *mut pg_sys::CommonTableExpr;
                let saved = std::mem::take(&mut self.levels);
                let translated = self.derived_sql((*cte).ctequery.cast());
                self.levels = saved;
                let (cte_sql, outputs) = translated?;
                let alias = self.alias("w");
                ctes.push(format!("{} AS ({cte_sql})", sql::ident(&alias)));
                let name = std::ffi::CStr::from_ptr((*cte).ctename).to_string_lossy().into_owned();
                self.levels.last_mut()?.ctes.insert(name, (alias, outputs));
            }
            self.register_relations(q)?;

            let mut from = Vec::new();
            let jointree = (*q).jointree;
            for item in list_nodes((*jointree).fromlist) {
                if let Some(item_sql) = self.from_item(item)? {
                    from.push(item_sql);
                }
            }
            if !(*q).setOperations.is_null() {
                let mut leaves = Vec::new();
                let (set_sql, outputs) = if union_all::union_all_leaves((*q).setOperations, &mut leaves).is_some() {
                    let operation = (*q).setOperations as *mut pg_sys::SetOperationStmt;
                    let column_types = list_oids((*operation).colTypes);
                    self.union_all(leaves, &column_types)?
                } else {
                    let (set_sql, types) = self.set_operation((*q).setOperations)?;
                    (set_sql, Outputs::unscaled(types))
                };
                // The query's columns are Vars of its leftmost branch (Postgres' convention).
                let alias = self.alias("t");
                let leftmost = leftmost_branch((*q).setOperations)?;
                *self.levels.last_mut()?.relations.get_mut(leftmost.checked_sub(1)?)? =
                    Relation::Derived { alias: alias.clone(), outputs };
                from.push(format!("({set_sql}) AS {}", sql::ident(&alias)));
            }
            let items = match top_items {
                Some(make) => {
                    let items = make(self)?;
                    (items, Outputs::default())
                }
                None => {
                    let mut items = Vec::new();
                    let mut outputs = Outputs::default();
                    for tle in list_nodes((*q).targetList) {
                        let tle = tle as *mut pg_sys::TargetEntry;
                        if (*tle).resjunk {
                            continue;
                        }
                        let t = self.expr((*tle).expr.cast())?;
                        let name = format!("c{}", (*tle).resno);
                        items.push(format!("{} AS {}", t.sql, sql::ident(&name)));
                        while outputs.types.len() + 1 < (*tle).resno as usize {
                            outputs.types.push(None);
                            outputs.scaled.push(false);
                        }
                        outputs.types.push(Some(t.ty));
                        let scale = t.scale.as_ref().filter(|_| scale_columns && t.ty.varying);
                        if let Some(scale) = scale {
                            items.push(format!("{scale} AS {}", sql::ident(&format!("{name}_scale"))));
                        }
                        outputs.scaled.push(scale.is_some());
                    }
                    (items, outputs)
                }
            };
            let (items, outputs) = items;
            let distinct = if (*q).distinctClause.is_null() {
                ""
            } else {
                for clause in list_nodes((*q).distinctClause) {
                    self.grouping_key(q, clause as *mut pg_sys::SortGroupClause)?;
                }
                "DISTINCT "
            };
            sql.push_str(&format!("SELECT {distinct}{}", if items.is_empty() { "NULL".into() } else { items.join(", ") }));
            if !from.is_empty() {
                sql.push_str(&format!(" FROM {}", from.join(", ")));
            }
            if !(*jointree).quals.is_null() {
                sql.push_str(&format!(" WHERE {}", self.condition((*jointree).quals)?));
            }
            let mut group_by = Vec::new();
            for clause in list_nodes((*q).groupClause) {
                group_by.push(self.grouping_key(q, clause as *mut pg_sys::SortGroupClause)?);
            }
            if !(*q).groupingSets.is_null() {
                sql.push_str(&format!(" GROUP BY GROUPING SETS ({})", self.grouping_sets(q)?.join(", ")));
            } else if !group_by.is_empty() {
                sql.push_str(&format!(" GROUP BY {}", group_by.join(", ")));
            }
            if !(*q).havingQual.is_null() {
                self.levels.last_mut()?.in_having = true;
                let having = self.condition((*q).havingQual);
                self.levels.last_mut()?.in_having = false;
                sql.push_str(&format!(" HAVING {}", having?));
            }
            let is_top = top_items.is_some();
            let order_by = match self.order_by(q) {
                Some(items) if !(is_top && self.sort_in_postgres) => items,
                None if is_top => {
                    self.sort_in_postgres = true;
                    Vec::new()
                }
                Some(_) => Vec::new(),
                None => return None,
            };
            if is_top && self.sort_in_postgres {
                return Some((self.with_clause(ctes, sql)?, outputs)); // Postgres sorts and limits the result
            }
            if !order_by.is_empty() {
                sql.push_str(&format!(" ORDER BY {}", order_by.join(", ")));
            }
            if let Some(limit) = limit_value((*q).limitCount)? {
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            if let Some(offset) = limit_value((*q).limitOffset)? {
                sql.push_str(&format!(" OFFSET {offset}"));
            }
            Some((self.with_clause(ctes, sql)?, outputs))
        }
    }

    /// `sql` (this level's SELECT) after its CTEs and those `hoist` made of its
    /// HAVING clause's sub-selects, which may read the former.
    fn with_clause(&mut self, mut ctes: Vec<String>, sql: String) -> Option<String> {
        ctes.append(&mut self.levels.last_mut()?.hoisted);
        Some(if ctes.is_empty() { sql } else { format!("WITH {} {sql}", ctes.join(", ")) })
    }

    /// In HAVING, a value used twice is written out twice (see `Binding::Repeated`),
    /// and a wide comparison uses each operand up to four times: a sub-select would
    /// run each time. One that reads nothing of the queries around it (`sql`, one
    /// column `c1`) is computed once, as a materialized CTE of this level, and read
    /// where it is used. None: it is correlated, or not in HAVING.
    pub unsafe fn hoist(&mut self, sub: *mut pg_sys::Query, sql: &str) -> Option<String> {
        unsafe {
            let depth = self.levels.len();
            let level = self.levels.last()?;
            if !level.in_having || (1..=depth).any(|up| pg_sys::contain_vars_of_level(sub.cast(), up as i32)) {
                return None;
            }
            // Nor inside a correlated level: DuckDB has had wrong results and internal
            // errors with a materialized CTE in a correlated subquery.
            if (1..depth).any(|up| pg_sys::contain_vars_of_level(level.query.cast(), up as i32)) {
                return None;
            }
            let alias = self.alias("h");
            self.levels.last_mut()?.hoisted.push(format!("{} AS MATERIALIZED ({sql})", sql::ident(&alias)));
            Some(format!("(SELECT {} FROM {})", sql::ident("c1"), sql::ident(&alias)))
        }
    }

    /// A boolean condition.
    pub unsafe fn condition(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            // Fold constants first, as the planner would (`date '...' - interval '...'`).
            let node = pg_sys::eval_const_expressions(std::ptr::null_mut(), pg_sys::copyObjectImpl(node.cast()).cast());
            let t = self.expr(node)?;
            (t.ty.oid == pg_sys::BOOLOID).then_some(t.sql)
        }
    }

    /// A GROUP BY or DISTINCT key: an expression whose equality DuckDB shares.
    unsafe fn grouping_key(&mut self, q: *mut pg_sys::Query, clause: *mut pg_sys::SortGroupClause) -> Option<String> {
        unsafe {
            let tle = pg_sys::get_sortgroupref_tle((*clause).tleSortGroupRef, (*q).targetList);
            let expr = (*tle).expr as *mut Node;
            let t = self.expr(expr)?;
            // A group shows one of its equal values: with varying scales, which one prints is not defined.
            if !groupable(t.ty) || (t.ty.oid == pg_sys::NUMERICOID && (t.ty.decimal.is_none() || t.ty.varying)) {
                return None;
            }
            if is_collatable(t.ty.oid) && !collation_is_deterministic(pg_sys::exprCollation(expr)) {
                return None;
            }
            if builtin_operator_name((*clause).eqop).as_deref() != Some("=") {
                return None;
            }
            Some(t.sql)
        }
    }

    /// ROLLUP, CUBE and GROUPING SETS as the grouping sets Postgres expands them to, each
    /// a list of grouping keys; DuckDB keeps repeated sets, as Postgres does (each one
    /// gives its rows).
    unsafe fn grouping_sets(&mut self, q: *mut pg_sys::Query) -> Option<Vec<String>> {
        unsafe {
            const MAX_SETS: i32 = 4096;
            let (grouping_sets, distinct) = ((*q).groupingSets, (*q).groupDistinct);
            let sets = pg_sys::ffi::pg_guard_ffi_boundary(|| expand_grouping_sets(grouping_sets, distinct, MAX_SETS));
            if sets.is_null() {
                return None;
            }
            let clauses = list_nodes((*q).groupClause);
            let mut printed = Vec::new();
            for set in list_nodes(sets) {
                let set = set as *mut pg_sys::List;
                // The empty grouping set `()` is NIL.
                let length = if set.is_null() { 0 } else { (*set).length };
                let mut keys = Vec::new();
                for i in 0..length {
                    let reference = pg_sys::list_nth_int(set, i) as pg_sys::Index;
                    let clause = clauses
                        .iter()
                        .map(|c| *c as *mut pg_sys::SortGroupClause)
                        .find(|c| (**c).tleSortGroupRef == reference)?;
                    keys.push(self.grouping_key(q, clause)?);
                }
                printed.push(format!("({})", keys.join(", ")));
            }
            Some(printed)
        }
    }

    /// ORDER BY items, each with the direction and NULLS placement Postgres uses.
    pub unsafe fn order_by(&mut self, q: *mut pg_sys::Query) -> Option<Vec<String>> {
        unsafe { self.sort_items(q, (*q).sortClause) }
    }

    /// Sort keys (of ORDER BY or a window's ORDER BY): DuckDB orders them as Postgres
    /// does (not floats; text only under a bytewise collation (`scan::collation`)), with explicit NULLS placement.
    unsafe fn sort_items(&mut self, q: *mut pg_sys::Query, clauses: *mut pg_sys::List) -> Option<Vec<String>> {
        unsafe {
            let mut items = Vec::new();
            for clause in list_nodes(clauses) {
                let clause = clause as *mut pg_sys::SortGroupClause;
                let tle = pg_sys::get_sortgroupref_tle((*clause).tleSortGroupRef, (*q).targetList);
                let expr = (*tle).expr as *mut Node;
                let t = self.expr(expr)?;
                if matches!(t.ty.oid, pg_sys::FLOAT4OID | pg_sys::FLOAT8OID) {
                    return None;
                }
                if is_collatable(t.ty.oid) && !collation_sorts_bytewise(pg_sys::exprCollation(expr)) {
                    return None;
                }
                let direction = match builtin_operator_name((*clause).sortop)?.as_str() {
                    "<" => "ASC",
                    ">" => "DESC",
                    _ => return None,
                };
                let nulls = if (*clause).nulls_first { "NULLS FIRST" } else { "NULLS LAST" };
                items.push(format!("{} {direction} {nulls}", t.sql));
            }
            Some(items)
        }
    }

    /// The OVER clause of window `winref` of the current level: partition keys with
    /// equality DuckDB shares, sort keys it orders as Postgres does, and the frame
    /// spelled out (ROWS or RANGE, unbounded or current-row bounds; no offsets, no
    /// exclusions).
    pub unsafe fn window_spec(&mut self, winref: pg_sys::Index) -> Option<String> {
        unsafe {
            let q = self.levels.last()?.query;
            let clause = list_nodes((*q).windowClause)
                .into_iter()
                .map(|c| c as *mut pg_sys::WindowClause)
                .find(|c| (**c).winref == winref)?;
            let options = (*clause).frameOptions as u32;
            let rows = options & pg_sys::FRAMEOPTION_ROWS != 0;
            // Offsets count rows alike in ROWS mode; RANGE offsets add to the sort key
            // (numeric, date and interval arithmetic) and stay with Postgres, as do
            // GROUPS and exclusions.
            let offsets = pg_sys::FRAMEOPTION_START_OFFSET | pg_sys::FRAMEOPTION_END_OFFSET;
            if options & (pg_sys::FRAMEOPTION_EXCLUSION | pg_sys::FRAMEOPTION_GROUPS) != 0 || (!rows && options & offsets != 0) {
                return None;
            }
            let mode = if rows { "ROWS" } else { "RANGE" };
            // A constant, not negative (Postgres raises an error for a negative one). The
            // analyzer leaves a literal's cast to bigint unevaluated: fold it.
            let offset = |node: *mut Node| -> Option<i64> {
                const_int(pg_sys::eval_const_expressions(std::ptr::null_mut(), node)).filter(|n| *n >= 0)
            };
            let start = if options & pg_sys::FRAMEOPTION_START_UNBOUNDED_PRECEDING != 0 {
                "UNBOUNDED PRECEDING".to_owned()
            } else if options & pg_sys::FRAMEOPTION_START_CURRENT_ROW != 0 {
                "CURRENT ROW".to_owned()
            } else if options & pg_sys::FRAMEOPTION_START_OFFSET_PRECEDING != 0 {
                format!("{} PRECEDING", offset((*clause).startOffset)?)
            } else if options & pg_sys::FRAMEOPTION_START_OFFSET_FOLLOWING != 0 {
                format!("{} FOLLOWING", offset((*clause).startOffset)?)
            } else {
                return None;
            };
            let end = if options & pg_sys::FRAMEOPTION_END_UNBOUNDED_FOLLOWING != 0 {
                "UNBOUNDED FOLLOWING".to_owned()
            } else if options & pg_sys::FRAMEOPTION_END_CURRENT_ROW != 0 {
                "CURRENT ROW".to_owned()
            } else if options & pg_sys::FRAMEOPTION_END_OFFSET_PRECEDING != 0 {
                format!("{} PRECEDING", offset((*clause).endOffset)?)
            } else if options & pg_sys::FRAMEOPTION_END_OFFSET_FOLLOWING != 0 {
                format!("{} FOLLOWING", offset((*clause).endOffset)?)
            } else {
                return None;
            };
            let mut parts = Vec::new();
            let mut keys = Vec::new();
            for key in list_nodes((*clause).partitionClause) {
                keys.push(self.grouping_key(q, key as *mut pg_sys::SortGroupClause)?);
            }
            if !keys.is_empty() {
                parts.push(format!("PARTITION BY {}", keys.join(", ")));
            }
            let order = self.sort_items(q, (*clause).orderClause)?;
            if !order.is_empty() {
                parts.push(format!("ORDER BY {}", order.join(", ")));
            }
            parts.push(format!("{mode} BETWEEN {start} AND {end}"));
            Some(format!(" OVER ({})", parts.join(" ")))
        }
    }

    unsafe fn register_relations(&mut self, q: *mut pg_sys::Query) -> Option<()> {
        unsafe {
            let mut relations = Vec::new();
            for rte in list_nodes((*q).rtable) {
                let rte = rte as *mut pg_sys::RangeTblEntry;
                let relation = match (*rte).rtekind {
                    pg_sys::RTEKind::RTE_RELATION => {
                        let relkind = pg_sys::get_rel_relkind((*rte).relid) as u8;
                        if relkind == pg_sys::RELKIND_VIEW {
                            Relation::None
                        } else if relkind == pg_sys::RELKIND_RELATION
                            && postgres_rows::is_small_plain_table(rte)
                            && postgres_rows::read_as_current_user(q, rte)
                        {
                            Relation::Postgres { alias: self.alias("t"), relid: (*rte).relid, slot: None }
                        } else {
                            self.lake_relation(rte)?
                        }
                    }
                    pg_sys::RTEKind::RTE_SUBQUERY => {
                        // Translated where the FROM list names it (see from_item); a
                        // LATERAL one reads the items before it, translated by then.
                        Relation::Derived { alias: String::new(), outputs: Outputs::default() }
                    }
                    pg_sys::RTEKind::RTE_JOIN => Relation::Join { rte },
                    pg_sys::RTEKind::RTE_CTE => {
                        if (*rte).self_reference {
                            return None;
                        }
                        Relation::Derived { alias: String::new(), outputs: Outputs::default() }
                    }
                    #[cfg(feature = "pg18")]
                    pg_sys::RTEKind::RTE_GROUP => Relation::Group { query: q },
                    pg_sys::RTEKind::RTE_RESULT => Relation::None,
                    _ => return None,
                };
                relations.push(relation);
            }
            self.levels.last_mut()?.relations = relations;
            Some(())
        }
    }

    unsafe fn lake_relation(&mut self, rte: *mut pg_sys::RangeTblEntry) -> Option<Relation> {
        unsafe {
            let server = lake_table_server(rte)?;
            if *self.server.get_or_insert(server) != server {
                return None;
            }
            let alias = self.alias("t");
            Some(Relation::Lake { alias, relid: (*rte).relid })
        }
    }

    /// A FROM-list item; `Some(None)` for an item that reads nothing (`RTE_RESULT`).
    unsafe fn from_item(&mut self, node: *mut Node) -> Option<Option<String>> {
        unsafe {
            match (*node).type_ {
                NodeTag::T_RangeTblRef => {
                    let index = (*(node as *mut pg_sys::RangeTblRef)).rtindex as usize;
                    let level = self.levels.len() - 1;
                    let q_rte = self.rte_of(index)?;
                    match (*q_rte).rtekind {
                        pg_sys::RTEKind::RTE_RELATION => match &self.levels[level].relations[index - 1] {
                            Relation::Lake { alias, relid } => {
                                let (alias, relid) = (alias.clone(), *relid);
                                let changes = if TableOptions::of(relid).changes {
                                    Some(snapshot_range(self.levels[level].query, index, relid)?)
                                } else {
                                    None
                                };
                                let slot = self.tables.len();
                                self.tables.push(PushedTable { relid: relid.to_u32(), alias: alias.clone(), changes, postgres: None });
                                Some(Some(format!("{} AS {}", PushedQuery::slot(slot), sql::ident(&alias))))
                            }
                            Relation::Postgres { alias, relid, .. } => {
                                let (alias, relid) = (alias.clone(), *relid);
                                let slot = self.tables.len();
                                self.tables.push(PushedTable { relid: relid.to_u32(), alias: alias.clone(), changes: None, postgres: Some(Vec::new()) });
                                self.levels[level].relations[index - 1] = Relation::Postgres { alias: alias.clone(), relid, slot: Some(slot) };
                                Some(Some(format!("{} AS {}", PushedQuery::slot(slot), sql::ident(&alias))))
                            }
                            _ => None,
                        },
                        pg_sys::RTEKind::RTE_SUBQUERY => {
                            let (sub_sql, outputs) = self.derived_sql((*q_rte).subquery)?;
                            let alias = self.alias("t");
                            self.levels[level].relations[index - 1] = Relation::Derived { alias: alias.clone(), outputs };
                            let lateral = if (*q_rte).lateral { "LATERAL " } else { "" };
                            Some(Some(format!("{lateral}({sub_sql}) AS {}", sql::ident(&alias))))
                        }
                        pg_sys::RTEKind::RTE_CTE => {
                            let up = (*q_rte).ctelevelsup as usize;
                            let cte_level = level.checked_sub(up)?;
                            let name = std::ffi::CStr::from_ptr((*q_rte).ctename).to_string_lossy().into_owned();
                            let (cte_alias, outputs) = self.levels[cte_level].ctes.get(&name)?.clone();
                            let alias = self.alias("t");
                            self.levels[level].relations[index - 1] = Relation::Derived { alias: alias.clone(), outputs };
                            Some(Some(format!("{} AS {}", sql::ident(&cte_alias), sql::ident(&alias))))
                        }
                        pg_sys::RTEKind::RTE_RESULT => Some(None),
                        _ => None,
                    }
                }
                NodeTag::T_JoinExpr => {
                    let j = node as *mut pg_sys::JoinExpr;
                    let left = self.from_item((*j).larg)??;
                    let right = self.from_item((*j).rarg)??;
                    let kind = match (*j).jointype {
                        pg_sys::JoinType::JOIN_INNER => "INNER JOIN",
                        pg_sys::JoinType::JOIN_LEFT => "LEFT JOIN",
                        pg_sys::JoinType::JOIN_RIGHT => "RIGHT JOIN",
                        pg_sys::JoinType::JOIN_FULL => "FULL JOIN",
                        _ => return None,
                    };
                    let on = if (*j).quals.is_null() { "TRUE".to_owned() } else { self.condition((*j).quals)? };
                    Some(Some(format!("({left} {kind} {right} ON {on})")))
                }
                _ => None,
            }
        }
    }

    /// UNION / INTERSECT / EXCEPT [ALL] of sub-selects (UNION ALL alone: see `union_all`).
    /// Each column must have one type in both branches (numerics one scale: Postgres
    /// keeps each row's own); all but UNION ALL compare rows, which needs columns whose
    /// equality DuckDB shares, as GROUP BY.
    unsafe fn set_operation(&mut self, node: *mut Node) -> Option<(String, Vec<Option<Ty>>)> {
        unsafe {
            match (*node).type_ {
                NodeTag::T_RangeTblRef => {
                    let rte = self.rte_of((*(node as *mut pg_sys::RangeTblRef)).rtindex as usize)?;
                    if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY {
                        return None;
                    }
                    let (sub_sql, types) = self.query_sql((*rte).subquery)?;
                    Some((format!("({sub_sql})"), types))
                }
                NodeTag::T_SetOperationStmt => {
                    let s = node as *mut pg_sys::SetOperationStmt;
                    let (left, left_types) = self.set_operation((*s).larg)?;
                    let (right, right_types) = self.set_operation((*s).rarg)?;
                    let keyword = match (*s).op {
                        pg_sys::SetOperation::SETOP_UNION => "UNION",
                        pg_sys::SetOperation::SETOP_INTERSECT => "INTERSECT",
                        pg_sys::SetOperation::SETOP_EXCEPT => "EXCEPT",
                        _ => return None,
                    };
                    if left_types.len() != right_types.len() {
                        return None;
                    }
                    let mut types = Vec::new();
                    for (i, (l, r)) in left_types.iter().zip(&right_types).enumerate() {
                        let (l, r) = ((*l)?, (*r)?);
                        if !one_type_in_duckdb(l.oid, r.oid) {
                            return None;
                        }
                        let decimal = match (l.decimal, r.decimal) {
                            (Some((w1, s1)), Some((w2, s2))) if s1 == s2 && !l.varying && !r.varying => Some((w1.max(w2), s1)),
                            (None, None) if l.oid != pg_sys::NUMERICOID => None,
                            _ => return None,
                        };
                        let ty = Ty { decimal, ..l };
                        // Only UNION ALL compares no values: INTERSECT/EXCEPT ALL match rows.
                        let compares = !((*s).op == pg_sys::SetOperation::SETOP_UNION && (*s).all);
                        if compares {
                            if !groupable(ty) {
                                return None;
                            }
                            if is_collatable(ty.oid) && !collation_is_deterministic(list_oid((*s).colCollations, i)?) {
                                return None;
                            }
                        }
                        types.push(Some(ty));
                    }
                    let all = if (*s).all { " ALL" } else { "" };
                    Some((format!("({left} {keyword}{all} {right})"), types))
                }
                _ => None,
            }
        }
    }

    unsafe fn rte_of(&self, index: usize) -> Option<*mut pg_sys::RangeTblEntry> {
        let rtable = self.levels.last()?.rtable;
        unsafe { list_nodes(rtable).get(index.checked_sub(1)?).map(|n| *n as *mut pg_sys::RangeTblEntry) }
    }

    /// Whether `var` is a column of a lake table, which the query reads as
    /// `comparable_expression` makes it.
    pub unsafe fn is_lake_column(&self, var: *mut pg_sys::Var) -> bool {
        unsafe {
            let Some(level) = self.levels.len().checked_sub(1 + (*var).varlevelsup as usize) else { return false };
            let index = ((*var).varno as usize).wrapping_sub(1);
            (*var).varattno > 0 && matches!(self.levels[level].relations.get(index), Some(Relation::Lake { .. }))
        }
    }

    /// A column of some query level.
    pub unsafe fn var(&mut self, var: *mut pg_sys::Var) -> Option<Typed> {
        unsafe {
            let level = self.levels.len().checked_sub(1 + (*var).varlevelsup as usize)?;
            let index = ((*var).varno as usize).checked_sub(1)?;
            let attno = (*var).varattno;
            if attno <= 0 {
                return None;
            }
            match self.levels[level].relations.get(index)? {
                Relation::Lake { alias, relid } => {
                    let relid = *relid;
                    let name = std::ffi::CStr::from_ptr(pg_sys::get_attname(relid, attno, false)).to_string_lossy().into_owned();
                    let lake_name = lake_column_name(relid, attno, &name);
                    // The plan's SQL marks its slots with these two bytes: a column named
                    // with them would splice a table's SQL into its own.
                    if lake_name.contains([SLOT_OPEN, SLOT_CLOSE]) {
                        return None;
                    }
                    let ty = Ty::column((*var).vartype, (*var).vartypmod)?;
                    let column = format!("{}.{}", sql::ident(alias), sql::ident(&lake_name));
                    let expr = comparable_expression_of(&column, (*var).vartype, (*var).vartypmod)?;
                    Some(Typed::new(expr, ty).plain())
                }
                Relation::Postgres { alias, slot, .. } => {
                    let (alias, slot) = (alias.clone(), (*slot)?);
                    let ty = Ty::column((*var).vartype, (*var).vartypmod)?;
                    postgres_rows::duck_type((*var).vartype, (*var).vartypmod)?;
                    let columns = self.tables.get_mut(slot)?.postgres.as_mut()?;
                    if !columns.iter().any(|c| c.attno == attno) {
                        columns.push(PostgresColumn { attno, type_oid: (*var).vartype.to_u32(), typmod: (*var).vartypmod });
                    }
                    let column = PostgresColumn::name(attno);
                    Some(Typed::new(format!("{}.{}", sql::ident(&alias), sql::ident(&column)), ty).plain())
                }
                Relation::Derived { alias, outputs } => {
                    let ty = (*outputs.types.get(attno as usize - 1)?)?;
                    if alias.is_empty() {
                        return None;
                    }
                    let column = |name: String| format!("{}.{}", sql::ident(alias), sql::ident(&name));
                    if outputs.scaled.get(attno as usize - 1).copied().unwrap_or(false) {
                        return Some(Typed::varying(column(format!("c{attno}")), ty, Some(column(format!("c{attno}_scale")))));
                    }
                    Some(Typed::new(column(format!("c{attno}")), ty).plain())
                }
                Relation::Join { rte } => {
                    let alias_var = *list_nodes((**rte).joinaliasvars).get(attno as usize - 1)?;
                    self.at_level(level, |t| t.expr(alias_var))
                }
                #[cfg(feature = "pg18")]
                Relation::Group { query } => {
                    let group_rte = *list_nodes((**query).rtable).get(index)? as *mut pg_sys::RangeTblEntry;
                    let expr = *list_nodes((*group_rte).groupexprs).get(attno as usize - 1)?;
                    self.at_level(level, |t| t.expr(expr))
                }
                Relation::None => None,
            }
        }
    }

    /// Translate an expression of query level `level` (outer levels of the current one).
    unsafe fn at_level(&mut self, level: usize, f: impl FnOnce(&mut Translator) -> Option<Typed>) -> Option<Typed> {
        let inner = self.levels.split_off(level + 1);
        let result = f(self);
        self.levels.extend(inner);
        result
    }
}

/// The bounds that the WHERE conjuncts of query `q` put on the `snapshot_id` of change
/// feed `relid`, range-table entry `index`. They become the range DuckLake reads, as
/// in a change feed's own scan, and stay in the WHERE clause as well. None when a
/// bound is not a constant (a parameter): the feed's own scan takes those, where a
/// pushed query would read every change from snapshot 0.
unsafe fn snapshot_range(q: *mut pg_sys::Query, index: usize, relid: Oid) -> Option<(Vec<Bound>, Vec<Bound>)> {
    unsafe {
        let attno = pg_sys::get_attnum(relid, c"snapshot_id".as_ptr());
        let quals = (*(*q).jointree).quals;
        if attno == pg_sys::InvalidAttrNumber as i16 || quals.is_null() {
            return Some((Vec::new(), Vec::new()));
        }
        let conjuncts = list_nodes(pg_sys::make_ands_implicit(quals as *mut pg_sys::Expr));
        let mut constant = true;
        let bounds = snapshot_bounds(&conjuncts, index as pg_sys::Index, attno, |node| {
            let bound = constant_bound(node);
            constant &= bound.is_some();
            bound
        });
        constant.then_some(bounds)
    }
}

/// The server of a range-table entry that a pushed query can read: a lake foreign table
/// or change feed (of this wrapper) without TABLESAMPLE or inheritance children.
pub unsafe fn lake_table_server(rte: *mut pg_sys::RangeTblEntry) -> Option<Oid> {
    unsafe {
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
            return None;
        }
        let relid = (*rte).relid;
        if pg_sys::get_rel_relkind(relid) as u8 != pg_sys::RELKIND_FOREIGN_TABLE || !(*rte).tablesample.is_null() {
            return None;
        }
        let relation = PgRelation::open(relid);
        if (*relation.rd_rel).relhassubclass {
            return None;
        }
        drop(relation);
        let table = pg_sys::GetForeignTable(relid);
        let server = pg_sys::GetForeignServer((*table).serverid);
        let wrapper = pg_sys::GetForeignDataWrapper((*server).fdwid);
        if std::ffi::CStr::from_ptr((*wrapper).fdwname).to_bytes() != b"ducklake" {
            return None;
        }
        Some((*table).serverid)
    }
}

unsafe extern "C-unwind" {
    /// parse_agg.c (not in pgrx's bindings): the grouping sets ROLLUP, CUBE and GROUPING
    /// SETS stand for, each an integer list of `tleSortGroupRef`s (NIL for `()`); NIL
    /// when there would be more than `limit`.
    fn expand_grouping_sets(grouping_sets: *mut pg_sys::List, group_distinct: bool, limit: std::ffi::c_int) -> *mut pg_sys::List;
}

/// The range-table index of the leftmost branch of a set operation.
unsafe fn leftmost_branch(node: *mut Node) -> Option<usize> {
    unsafe {
        match (*node).type_ {
            NodeTag::T_RangeTblRef => Some((*(node as *mut pg_sys::RangeTblRef)).rtindex as usize),
            NodeTag::T_SetOperationStmt => leftmost_branch((*(node as *mut pg_sys::SetOperationStmt)).larg),
            _ => None,
        }
    }
}

/// The members of an OID list.
unsafe fn list_oids(list: *mut pg_sys::List) -> Vec<Oid> {
    unsafe {
        let length = if list.is_null() { 0 } else { (*list).length as usize };
        (0..length).filter_map(|i| list_oid(list, i)).collect()
    }
}

/// Member `i` of an OID list.
unsafe fn list_oid(list: *mut pg_sys::List, i: usize) -> Option<Oid> {
    unsafe {
        if list.is_null() || i >= (*list).length as usize {
            return None;
        }
        Some((*(*list).elements.add(i)).oid_value)
    }
}

/// What this translation does not cover refuses the query up front.
unsafe fn supported_shape(q: *mut pg_sys::Query) -> bool {
    unsafe {
        (*q).commandType == pg_sys::CmdType::CMD_SELECT
            && (*q).utilityStmt.is_null()
            && !(*q).hasTargetSRFs
            && !(*q).hasRecursive
            && !(*q).hasModifyingCTE
            && !(*q).hasForUpdate
            && !(*q).hasDistinctOn
            && (*q).rowMarks.is_null()
            && (*q).limitOption != pg_sys::LimitOption::LIMIT_OPTION_WITH_TIES
    }
}

/// A LIMIT/OFFSET: absent, or a non-negative constant.
unsafe fn limit_value(node: *mut Node) -> Option<Option<i64>> {
    unsafe {
        if node.is_null() {
            return Some(None);
        }
        // `LIMIT 10` is int8(10) until constants are folded.
        let node = pg_sys::eval_const_expressions(std::ptr::null_mut(), pg_sys::copyObjectImpl(node.cast()).cast());
        if (*node).type_ != NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull {
            return Some(None);
        }
        if (*c).consttype != pg_sys::INT8OID {
            return None;
        }
        let v = (*c).constvalue.value() as i64;
        (v >= 0).then_some(Some(v))
    }
}
