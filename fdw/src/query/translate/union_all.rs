//! A set operation made only of UNION ALL: no row is compared with another, so each
//! row keeps what its branch gave it, numerics their own display scales (Postgres
//! gives the column no typmod when the branches' differ). Each numeric column whose
//! scale varies (in a branch, or between branches) travels with a scale column, as
//! out of a sub-select (see `Outputs`), and every branch's value is cast to one
//! DECIMAL holding them all (more integer digits and scale than any branch: exact).
//! This is the shape of a stream table's delta query, one branch per delta term.

use pgrx::pg_sys::{self, Node, NodeTag};

use super::{Outputs, Translator};
use crate::duck::sql;
use crate::pg_nodes::list_nodes;
use crate::query::typed::Ty;
use crate::scan::deparse::one_type_in_duckdb;

impl Translator {
    /// DuckDB SQL for a UNION ALL of the sub-selects `leaves` (range-table indexes, see
    /// `union_all_leaves`) whose columns have Postgres types `column_types`, with its
    /// outputs; None when a column cannot be read exactly.
    pub(super) unsafe fn union_all(&mut self, leaves: Vec<usize>, column_types: &[pg_sys::Oid]) -> Option<(String, Outputs)> {
        unsafe {
            let mut branches = Vec::new();
            for rtindex in leaves {
                let rte = self.rte_of(rtindex)?;
                if (*rte).rtekind != pg_sys::RTEKind::RTE_SUBQUERY {
                    return None;
                }
                // Postgres converts a branch's column of another type above it (an
                // integer under a bigint or numeric column): not done here, refused.
                let shown = list_nodes((*(*rte).subquery).targetList)
                    .into_iter()
                    .map(|tle| tle as *mut pg_sys::TargetEntry)
                    .filter(|tle| !(**tle).resjunk)
                    .map(|tle| pg_sys::exprType((*tle).expr.cast()))
                    .collect::<Vec<_>>();
                if shown.len() != column_types.len() || shown.iter().zip(column_types).any(|(b, c)| !one_type_in_duckdb(*b, *c)) {
                    return None;
                }
                branches.push(self.derived_sql((*rte).subquery)?);
            }
            let columns = branches.first()?.1.types.len();
            if branches.iter().any(|(_, outputs)| outputs.types.len() != columns) {
                return None;
            }
            // Per column: its type, and whether it travels with a scale column.
            let mut outputs = Outputs::default();
            for i in 0..columns {
                let (ty, scaled) = column_of(branches.iter().map(|(_, o)| (o.types[i], o.scaled.get(i).copied().unwrap_or(false))))?;
                outputs.types.push(Some(ty));
                outputs.scaled.push(scaled);
            }
            let mut selects = Vec::new();
            for (branch_sql, branch) in &branches {
                let mut items = Vec::new();
                for (i, ty) in outputs.types.iter().enumerate() {
                    let ty = (*ty)?;
                    let name = format!("c{}", i + 1);
                    let value = format!("b.{}", sql::ident(&name));
                    match ty.decimal {
                        Some((width, scale)) => items.push(format!("CAST({value} AS DECIMAL({width},{scale})) AS {}", sql::ident(&name))),
                        None => items.push(format!("{value} AS {}", sql::ident(&name))),
                    }
                    if outputs.scaled[i] {
                        let scale_column = format!("{name}_scale");
                        let scale = match (branch.scaled.get(i).copied().unwrap_or(false), branch.types[i]?.decimal) {
                            (true, _) => format!("b.{}", sql::ident(&scale_column)),
                            (false, Some((_, s))) => format!("CAST({s} AS INTEGER)"),
                            (false, None) => return None,
                        };
                        items.push(format!("{scale} AS {}", sql::ident(&scale_column)));
                    }
                }
                // No column at all (`SELECT FROM t`): DuckDB needs one.
                if items.is_empty() {
                    items.push("NULL".into());
                }
                selects.push(format!("SELECT {} FROM ({branch_sql}) AS b", items.join(", ")));
            }
            Some((format!("({})", selects.join(" UNION ALL ")), outputs))
        }
    }
}

/// The branches of `node` in order, when every operation in it is UNION ALL.
pub(super) unsafe fn union_all_leaves(node: *mut Node, leaves: &mut Vec<usize>) -> Option<()> {
    unsafe {
        match (*node).type_ {
            NodeTag::T_RangeTblRef => {
                leaves.push((*(node as *mut pg_sys::RangeTblRef)).rtindex as usize);
                Some(())
            }
            NodeTag::T_SetOperationStmt => {
                let s = node as *mut pg_sys::SetOperationStmt;
                if (*s).op != pg_sys::SetOperation::SETOP_UNION || !(*s).all {
                    return None;
                }
                union_all_leaves((*s).larg, leaves)?;
                union_all_leaves((*s).rarg, leaves)
            }
            _ => None,
        }
    }
}

/// One column of a UNION ALL from its branches' (type, has a scale column): its type,
/// and whether it needs a scale column (a numeric whose scale varies).
fn column_of(branches: impl Iterator<Item = (Option<Ty>, bool)>) -> Option<(Ty, bool)> {
    let mut first: Option<Ty> = None;
    let (mut integers, mut scale, mut varying) = (0u32, 0u32, false);
    for (ty, scaled) in branches {
        let ty = ty?;
        let head = *first.get_or_insert(ty);
        if !one_type_in_duckdb(ty.oid, head.oid) {
            return None;
        }
        if ty.oid != pg_sys::NUMERICOID {
            continue;
        }
        let (w, s) = ty.decimal?;
        // A varying value without its scales cannot be printed as Postgres would.
        if ty.varying && !scaled {
            return None;
        }
        varying |= ty.varying || (head.decimal.is_some_and(|(_, hs)| hs != s));
        integers = integers.max(w - s);
        scale = scale.max(s);
    }
    let head = first?;
    if head.oid != pg_sys::NUMERICOID {
        return Some((head, false));
    }
    if integers + scale > 38 {
        return None;
    }
    let ty = Ty::decimal(integers + scale, scale);
    Some((Ty { varying, ..ty }, varying))
}
