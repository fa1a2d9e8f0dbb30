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
        // (An outer join inside a subquery expression is refused below.)
        let nullable = if q.jointree.is_null() || in_subquery_expression {
            Vec::new()
        } else {
            nullable_sides(q, (*q.jointree).fromlist as *mut pg_sys::Node)?
        };
        let nullable_in = |rtindex: i32| nullable.iter().find(|(relation, _)| *relation == rtindex).map(|(_, join)| *join);
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
                        None => Source::Postgres(postgres_source(relid)?.ok_or_else(|| {
                            IvmError::unsupported(format!(
                                "reading {} (neither a DuckLake foreign table nor a user's Postgres table)",
                                crate::sql::relation_name(relid)
                            ))
                        })?),
                    };
                    occurrences.push(Occurrence { path: path.to_vec(), rtindex, source, nullable_in: nullable_in(rtindex), derived: None });
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
                // Read as a derived relation: a sub-select that aggregates, any on an
                // outer join's nullable side, whose padding asks of it as one relation,
                // and any inside a subquery expression, which is evaluated as it is and
                // as it was for the rows its changes reach.
                pg_sys::RTEKind::RTE_SUBQUERY
                    if (aggregating(&*(*rte).subquery) || nullable_in(rtindex).is_some() || in_subquery_expression)
                        && !(*rte).lateral =>
                {
                    let names = PgList::<pg_sys::Node>::from_pg((*(*rte).eref).colnames)
                        .iter_ptr()
                        .map(|n| std::ffi::CStr::from_ptr((*(n as *mut pg_sys::String)).sval).to_string_lossy().into_owned())
                        .collect();
                    let sub = (*rte).subquery;
                    let derived = if aggregating(&*sub) {
                        derived_of(sub, names, path.len() + 1)?
                    } else if in_subquery_expression {
                        rows_derived_of(sub, names, path.len() + 1, "a sub-select in FROM inside a subquery expression")?
                    } else {
                        rows_derived_of(sub, names, path.len() + 1, "a sub-select on an outer join's nullable side")?
                    };
                    occurrences.push(Occurrence {
                        path: path.to_vec(),
                        rtindex,
                        source: Source::Derived,
                        nullable_in: nullable_in(rtindex),
                        derived: Some(Box::new(derived)),
                    });
                }
                pg_sys::RTEKind::RTE_SUBQUERY => {
                    let sub = (*rte).subquery;
                    let s = &*sub;
                    if (*rte).lateral || !row_preserving(s) {
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

/// Whether a sub-select gives a row for each row of its FROM and WHERE: no aggregates,
/// DISTINCT, window functions, set-returning functions, LIMIT or set operations.
fn row_preserving(s: &pg_sys::Query) -> bool {
    !s.hasAggs
        && s.groupClause.is_null()
        && s.havingQual.is_null()
        && s.distinctClause.is_null()
        && !s.hasWindowFuncs
        && !s.hasTargetSRFs
        && s.cteList.is_null()
        && s.setOperations.is_null()
        && s.limitCount.is_null()
        && s.limitOffset.is_null()
        && s.rowMarks.is_null()
}

/// A sub-select that does not aggregate, on an outer join's nullable side (unless
/// only a filtered table, see `nullable_subselects`) or inside a subquery expression
/// (`place`, for messages), read as a derived relation whose rows are its own (see
/// `rows::Derived`): its change is its rows' change, and it as it was is the
/// sub-select over its sources as they were.
unsafe fn rows_derived_of(sub: *mut pg_sys::Query, names: Vec<String>, depth: usize, place: &str) -> IvmResult<Derived> {
    unsafe {
        let s = &*sub;
        check_computed_again(s, place)?;
        if !s.distinctClause.is_null() {
            return Err(IvmError::unsupported(format!("DISTINCT in {place}")));
        }
        if s.rtable.is_null() {
            return Err(IvmError::unsupported(format!("{place} without a table")));
        }
        // The one thing left that makes a sub-select without aggregates give one row.
        if !row_preserving(s) {
            return Err(IvmError::unsupported(format!("HAVING without GROUP BY or aggregates in {place}")));
        }
        // Its changes are computed on their own: it must not refer to an outer query.
        if (1..=depth as i32).any(|level| pg_sys::contain_vars_of_level(sub as *mut pg_sys::Node, level)) {
            return Err(IvmError::unsupported(format!("a reference to an outer query in {place}")));
        }
        let targets = PgList::<pg_sys::TargetEntry>::from_pg(s.targetList);
        let visible: Vec<*mut pg_sys::TargetEntry> = targets.iter_ptr().filter(|t| !(**t).resjunk).collect();
        if names.len() != visible.len() {
            return Err(IvmError::unsupported(place));
        }
        let mut columns: Vec<(String, *mut pg_sys::Node)> =
            visible.iter().enumerate().map(|(i, t)| (format!("c{}", i + 1), (**t).expr as *mut pg_sys::Node)).collect();
        if columns.is_empty() {
            columns.push(("__pgt_one".into(), int4_one()));
        }
        let occurrences = source_relations(s)?;
        Ok(Derived::of_rows(sub, Rows::new(sub, occurrences, columns), names))
    }
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
/// a LEFT, RIGHT or FULL JOIN in the FROM items `node`. Each must be one relation, a
/// table or a sub-select (a join there is made one, see `nullable_joins`): the rows a
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
                // Other kinds of entries (functions, VALUES) are refused by name with
                // the range table's.
                let relation = pgrx::is_a(side, pg_sys::NodeTag::T_RangeTblRef)
                    .then(|| (*(side as *mut pg_sys::RangeTblRef)).rtindex)
                    .and_then(|index| PgList::<pg_sys::RangeTblEntry>::from_pg(q.rtable).get_ptr(index as usize - 1).map(|rte| (index, rte)));
                match relation {
                    Some((_, rte)) if (*rte).lateral => {
                        return Err(IvmError::unsupported(format!("a LATERAL item on the nullable side of a {name} JOIN")));
                    }
                    Some((index, _)) => found.push((index, (*join).rtindex)),
                    // Made a sub-select before (see `nullable_joins`).
                    None => return Err(IvmError::unsupported(format!("a join on the nullable side of a {name} JOIN"))),
                }
            }
        }
        Ok(found)
    }
}
