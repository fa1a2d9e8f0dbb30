//! Views the defining query reads, expanded into the sub-selects they stand for.
//!
//! Postgres' rewriter replaces a view by its query when a query runs; the analysis
//! does the same to its copy of the defining query, so a view's tables are sources
//! like a written sub-select's, and the view is maintained as that sub-select (in
//! FROM, WITH, a subquery expression, nested in other views). What differs from a
//! written sub-select, and how each difference is kept exact:
//!
//! - Whose privileges: a view reads its tables with its owner's privileges (unless it
//!   is `security_invoker`); the delta terms, printed from the expanded tree, read
//!   them as the stream table's owner. So that owner must be able to read each of them
//!   (refused otherwise, naming the table and the view), and a table whose row-level
//!   security applies to the view's owner is refused: through the view its policies
//!   filter the rows, in a term they would not (those applying to the stream table's
//!   owner are refused for every source, see `parse::postgres_source`).
//! - Redefinition: `CREATE OR REPLACE VIEW` changes what the defining query means
//!   without changing any source. A refresh compares each view's definition with the
//!   one recorded at the last refresh and rebuilds in full when one changed (see
//!   `catalog::view_definitions`).
//! - Dependencies: the stream table's definition depends on the view, the view on its
//!   tables; what the refresh locks, the columns it replays and the snapshots it holds
//!   follow views (`pgtrickle.view_reads`).

use super::manip::drop_entries;
use super::tree::each_subquery_expression;
use crate::error::{IvmError, IvmResult};
use pgrx::prelude::*;
use pgrx::{PgList, pg_sys};

/// Replace every view `query` reads, at any depth, by its query. Returns the views.
pub fn expand_views(query: *mut pg_sys::Query) -> IvmResult<Vec<pg_sys::Oid>> {
    let mut views = Vec::new();
    // SAFETY: edits an analyzed Query tree (a copy the analysis owns) in place.
    unsafe { expand(query, &mut Vec::new(), &mut views)? };
    Ok(views)
}

/// Expand the views of `query`'s level and of every level below it. `within`: the
/// views whose queries `query` is part of, innermost last (a view met again among them
/// reads itself: Postgres' rewriter refuses that too). `views`: every view met.
unsafe fn expand(query: *mut pg_sys::Query, within: &mut Vec<pg_sys::Oid>, views: &mut Vec<pg_sys::Oid>) -> IvmResult<()> {
    unsafe {
        for cte in PgList::<pg_sys::CommonTableExpr>::from_pg((*query).cteList).iter_ptr() {
            expand((*cte).ctequery as *mut pg_sys::Query, within, views)?;
        }
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_RELATION if (*rte).relkind as u8 == pg_sys::RELKIND_VIEW => {
                    let view = (*rte).relid;
                    if within.contains(&view) {
                        return Err(IvmError::new(
                            PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                            format!("infinite recursion detected in rules for relation {}", crate::sql::relation_name(view)),
                        ));
                    }
                    // The query names it: the stream table's owner must be able to read
                    // it (a view inside it is read with its owner's privileges).
                    if within.is_empty() {
                        check_select(view, None)?;
                    }
                    let sub = view_query(view)?;
                    within.push(view);
                    let expanded = expand(sub, within, views);
                    within.pop();
                    expanded?;
                    if !views.contains(&view) {
                        views.push(view);
                    }
                    become_subselect(rte, sub, view);
                }
                pg_sys::RTEKind::RTE_RELATION => {
                    if let Some(view) = within.last() {
                        check_read_through(query, rte, *view)?;
                    }
                }
                pg_sys::RTEKind::RTE_SUBQUERY => expand((*rte).subquery, within, views)?,
                _ => {}
            }
        }
        each_subquery_expression(query, &mut |sub| expand(sub, within, views))
    }
}

/// The query of view `view`: a copy of its rule's, locked as the rewriter locks it,
/// without the placeholder entries for the view itself that PostgreSQL 15 keeps.
unsafe fn view_query(view: pg_sys::Oid) -> IvmResult<*mut pg_sys::Query> {
    unsafe {
        let relation = pg_sys::relation_open(view, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let stored = pg_sys::get_view_query(relation);
        let query = pg_sys::copyObjectImpl(stored as *const std::ffi::c_void) as *mut pg_sys::Query;
        pg_sys::relation_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::AcquireRewriteLocks(query, true, false);
        #[cfg(feature = "pg15")]
        {
            // *OLD* and *NEW*: entries for the view that nothing in its query refers to.
            let placeholders: Vec<i32> = PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable)
                .iter_ptr()
                .enumerate()
                .filter(|(_, rte)| (**rte).rtekind == pg_sys::RTEKind::RTE_RELATION && (**rte).relid == view)
                .map(|(i, _)| i as i32 + 1)
                .collect();
            drop_entries(query, &placeholders);
        }
        #[cfg(not(feature = "pg15"))]
        let _ = drop_entries;
        Ok(query)
    }
}

/// Make `rte`, which reads view `view`, the sub-select `sub`, as the rewriter does. (Not
/// marked a security barrier, which only orders the planner's conditions: the stream
/// table's owner may read the view's tables, see `check_read_through`.)
///
/// The sub-select's columns get the names the query reads them by: a view's stored
/// query keeps the names its columns had when it was defined (`ALTER VIEW ... RENAME
/// COLUMN` does not change it), and a view inside another one may have gained columns
/// since the outer one was defined (its entry there lists only those it had then).
unsafe fn become_subselect(rte: *mut pg_sys::RangeTblEntry, sub: *mut pg_sys::Query, view: pg_sys::Oid) {
    unsafe {
        let outputs: Vec<*mut pg_sys::TargetEntry> =
            PgList::<pg_sys::TargetEntry>::from_pg((*sub).targetList).iter_ptr().filter(|t| !(**t).resjunk).collect();
        let mut names = PgList::<pg_sys::Node>::new();
        for (position, entry) in outputs.iter().enumerate() {
            let known = PgList::<pg_sys::Node>::from_pg((*(*rte).eref).colnames).get_ptr(position);
            let name = match known {
                Some(name) => (*(name as *mut pg_sys::String)).sval,
                None => pg_sys::get_attname(view, position as i16 + 1, false),
            };
            (**entry).resname = pg_sys::pstrdup(name);
            names.push(pg_sys::makeString(pg_sys::pstrdup(name)) as *mut pg_sys::Node);
        }
        let names = names.into_pg();
        (*(*rte).eref).colnames = names;
        let alias_name = if (*rte).alias.is_null() { (*(*rte).eref).aliasname } else { (*(*rte).alias).aliasname };
        // A sub-select in FROM needs a name where the view had its own; the column
        // names printed with it are those above.
        (*rte).alias = pg_sys::makeAlias(alias_name, pg_sys::copyObjectImpl(names as *const std::ffi::c_void) as *mut pg_sys::List);
        (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
        (*rte).subquery = sub;
        (*rte).relid = pg_sys::InvalidOid;
        (*rte).relkind = 0;
        (*rte).rellockmode = 0;
        (*rte).tablesample = std::ptr::null_mut();
        (*rte).inh = false;
        #[cfg(not(feature = "pg15"))]
        {
            (*rte).perminfoindex = 0;
        }
    }
}

/// Refuse table `rte` of `query`, part of view `view`'s query, unless a delta term
/// can read it as the view does: the current user (the stream table's owner) may read
/// it, and no row-level security applies to whoever the view reads it as.
unsafe fn check_read_through(query: *mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry, view: pg_sys::Oid) -> IvmResult<()> {
    unsafe {
        let relid = (*rte).relid;
        check_select(relid, Some(view))?;
        let reader = reads_as(query, rte);
        let (table, view_name) = (crate::sql::relation_name(relid), crate::sql::relation_name(view));
        if pg_sys::check_enable_rls(relid, reader, true) == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
            return Err(IvmError::unsupported(format!("row-level security of {table} that applies to the owner of view {view_name}")));
        }
        Ok(())
    }
}

/// Refuse relation `relid` unless the current user may read it; `through`: the view
/// whose query reads it, if any.
unsafe fn check_select(relid: pg_sys::Oid, through: Option<pg_sys::Oid>) -> IvmResult<()> {
    unsafe {
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK {
            return Ok(());
        }
        let name = crate::sql::relation_name(relid);
        let error = match through {
            None => IvmError::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("permission denied for view {name}")),
            Some(view) => IvmError::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for table {name}, which view {} reads", crate::sql::relation_name(view)),
            )
            .with_hint(
                "A DIFFERENTIAL stream table reads a view's tables with its owner's privileges: grant SELECT on them, or use refresh_mode => 'FULL'.",
            ),
        };
        Err(error)
    }
}

/// The role a view reads table `rte` (of its query `query`) as: its owner, or
/// InvalidOid (the current user) for a `security_invoker` view.
unsafe fn reads_as(query: *mut pg_sys::Query, rte: *mut pg_sys::RangeTblEntry) -> pg_sys::Oid {
    unsafe {
        #[cfg(feature = "pg15")]
        {
            let _ = query;
            (*rte).checkAsUser
        }
        #[cfg(not(feature = "pg15"))]
        {
            if (*rte).perminfoindex == 0 {
                return pg_sys::InvalidOid;
            }
            PgList::<pg_sys::RTEPermissionInfo>::from_pg((*query).rteperminfos)
                .get_ptr((*rte).perminfoindex as usize - 1)
                .map_or(pg_sys::InvalidOid, |info| (*info).checkAsUser)
        }
    }
}
