//! The relations a query reads, where they are (FROM, sub-selects, subquery
//! expressions, outer joins' nullable sides) and which of them are read as derived
//! relations (aggregating sub-selects): what a delta term replaces by its changes.

use super::parse::{Source, lake_source, postgres_source};
use super::rows::{Derived, Occurrence, Rows, Step};
use super::sublinks::{
    aggregates_in, check_aggregate, check_computed_again, check_placement, check_placement_but_having, check_sublink, sublinks_in,
};
use super::tree::{int4_one, joins_of, nullable_sides_of};
use super::types::require_key_type;
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};

/// A SELECT reads at most this many tables: a refresh has a delta term per set of
/// changed ones.
const MAX_RELATIONS: usize = 16;

/// The query's relations: DuckLake foreign tables and Postgres tables, inner-joined
/// (by commas or `[INNER] JOIN`), also inside sub-selects in FROM that only filter
/// and compute columns (no aggregates, DISTINCT, LIMIT or set operations: rows in,
/// rows out, so their changes are their tables' changes), and inside subquery
/// expressions of a WHERE clause (see `sublinks`); every one a source.
pub unsafe fn source_relations(q: &pg_sys::Query) -> IvmResult<Vec<Occurrence>> {
    unsafe {
        let mut occurrences = Vec::new();
        collect_relations(q, &[], &mut occurrences)?;
        if !occurrences.iter().any(|o| !o.in_subquery_expression()) {
            return Err(IvmError::unsupported("a query without a table in FROM"));
        }
        if occurrences.len() > MAX_RELATIONS {
            return Err(IvmError::unsupported(format!("a query of more than {MAX_RELATIONS} tables")));
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
                        None => Source::Postgres(postgres_source(relid).ok_or_else(|| {
                            IvmError::unsupported(format!(
                                "reading {} (neither a DuckLake foreign table nor a user's Postgres table)",
                                crate::sql::relation_name(relid)
                            ))
                        })?),
                    };
                    let nullable_in = nullable.iter().find(|(relation, _)| *relation == rtindex).map(|(_, join)| *join);
                    occurrences.push(Occurrence { path: path.to_vec(), rtindex, source, nullable_in, derived: None });
                }
                #[cfg(feature = "pg18")]
                pg_sys::RTEKind::RTE_GROUP => {}
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
/// columns; each group's result row is computed by the sub-select itself, so HAVING
/// is exact. Its sources must be lake tables (read as they were).
unsafe fn derived_of(sub: *mut pg_sys::Query, names: Vec<String>, depth: usize) -> IvmResult<Derived> {
    unsafe {
        let s = &*sub;
        let refuse = |what: &str| Err(IvmError::unsupported(format!("{what} in an aggregating sub-select")));
        check_computed_again(s, "an aggregating sub-select")?;
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
            columns.push((format!("k{}", columns.len() + 1), expression));
        }
        if columns.is_empty() {
            columns.push(("__pgt_one".into(), int4_one()));
        }
        let occurrences = source_relations(s)?;
        if names.len() != targets.iter_ptr().filter(|t| !(**t).resjunk).count() {
            return Err(IvmError::unsupported("this aggregating sub-select"));
        }
        Ok(Derived::new(sub, Rows::new(sub, occurrences, columns), keys, names))
    }
}

/// The (relation, join) range-table indexes of the relations on the nullable side of
/// a LEFT or RIGHT JOIN in the FROM items `node`. Each must be one table: the rows a
/// change to it pads or unpads are the other side's rows it matches (see `rows`).
unsafe fn nullable_sides(q: &pg_sys::Query, node: *mut pg_sys::Node) -> IvmResult<Vec<(i32, i32)>> {
    unsafe {
        let mut found = Vec::new();
        for join in joins_of(node) {
            let name = match (*join).jointype {
                pg_sys::JoinType::JOIN_LEFT => "LEFT",
                pg_sys::JoinType::JOIN_RIGHT => "RIGHT",
                _ => "FULL",
            };
            for side in nullable_sides_of(join) {
                let relation = pgrx::is_a(side, pg_sys::NodeTag::T_RangeTblRef)
                    .then(|| (*(side as *mut pg_sys::RangeTblRef)).rtindex)
                    .filter(|index| {
                        let rte = PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).get_ptr(*index as usize - 1);
                        rte.is_some_and(|rte| (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION)
                    });
                let Some(relation) = relation else {
                    return Err(IvmError::unsupported(format!(
                        "a {name} JOIN whose nullable side is not one table (a parenthesized join, or a sub-select that does more than filter one table and select its columns)"
                    )));
                };
                found.push((relation, (*join).rtindex));
            }
        }
        Ok(found)
    }
}

