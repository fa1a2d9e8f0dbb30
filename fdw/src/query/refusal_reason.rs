//! Why a query that could have run whole in DuckDB did not, in words for `EXPLAIN`:
//! the first of the definite obstacles found in its structure (a relation that is not
//! a lake table, lakes of several servers, LATERAL, grouping sets, row locks, a
//! recursive CTE, a function in FROM), else the general one, an expression or clause
//! whose DuckDB result could differ from Postgres' (see the README's Pushdown list).

use std::ffi::CStr;

use pgrx::pg_sys;

use crate::pg_nodes::list_nodes;
use crate::query::translate::lake_table_server;

pub const GENERAL: &str =
    "an expression, function or clause whose DuckDB result could differ from Postgres' (see Pushdown in fdw/README.md)";

/// The reason for `q`, a query the translator refused.
pub unsafe fn why_not_whole(q: *mut pg_sys::Query) -> String {
    unsafe {
        let mut servers = Vec::new();
        obstacle(q, &mut servers).unwrap_or_else(|| {
            if servers.len() > 1 {
                let names: Vec<String> = servers.iter().map(|s| server_name(*s)).collect();
                format!("it reads lake tables of several servers ({})", names.join(", "))
            } else {
                GENERAL.to_owned()
            }
        })
    }
}

unsafe fn obstacle(q: *mut pg_sys::Query, servers: &mut Vec<pg_sys::Oid>) -> Option<String> {
    unsafe {
        if !(*q).groupingSets.is_null() {
            return Some("grouping sets (ROLLUP, CUBE, GROUPING SETS)".into());
        }
        if !(*q).rowMarks.is_null() || (*q).hasForUpdate {
            return Some("FOR UPDATE/SHARE".into());
        }
        if (*q).hasRecursive {
            return Some("WITH RECURSIVE".into());
        }
        for cte in list_nodes((*q).cteList) {
            let query = (*(cte as *mut pg_sys::CommonTableExpr)).ctequery;
            if pgrx::is_a(query, pg_sys::NodeTag::T_Query) {
                if let Some(found) = obstacle(query as *mut pg_sys::Query, servers) {
                    return Some(found);
                }
            }
        }
        for rte in list_nodes((*q).rtable) {
            let rte = rte as *mut pg_sys::RangeTblEntry;
            if (*rte).lateral {
                return Some("LATERAL".into());
            }
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_RELATION => match lake_table_server(rte) {
                    Some(server) if !servers.contains(&server) => servers.push(server),
                    Some(_) => {}
                    None => return Some(format!("it reads {}, which is not a lake table", relation_name((*rte).relid))),
                },
                pg_sys::RTEKind::RTE_SUBQUERY if !(*rte).subquery.is_null() => {
                    if let Some(found) = obstacle((*rte).subquery, servers) {
                        return Some(found);
                    }
                }
                pg_sys::RTEKind::RTE_FUNCTION | pg_sys::RTEKind::RTE_TABLEFUNC => {
                    return Some("a function in FROM".into());
                }
                _ => {}
            }
        }
        None
    }
}

unsafe fn relation_name(relid: pg_sys::Oid) -> String {
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        let namespace = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if name.is_null() || namespace.is_null() {
            return format!("relation {}", relid.to_u32());
        }
        format!("{}.{}", CStr::from_ptr(namespace).to_string_lossy(), CStr::from_ptr(name).to_string_lossy())
    }
}

unsafe fn server_name(server: pg_sys::Oid) -> String {
    unsafe { CStr::from_ptr((*pg_sys::GetForeignServer(server)).servername).to_string_lossy().into_owned() }
}
