//! Why a query that could have run whole in DuckDB did not, in words for `EXPLAIN`:
//! the first of the definite obstacles found anywhere in it, sub-selects in FROM and in
//! expressions and CTEs included (a relation that is not a lake table, lakes of several
//! servers, row locks, a recursive CTE, a function in FROM),
//! else the general one, an expression or clause whose DuckDB result could differ from
//! Postgres' (see the README's Pushdown list). None for a query that reads no lake
//! table: its plan has nothing of this extension to explain.

use std::ffi::CStr;

use pgrx::pg_sys;

use crate::pg_nodes::{QueryVisitor, walk_queries};
use crate::query::postgres_rows;
use crate::query::translate::lake_table_server;

pub const GENERAL: &str =
    "an expression, function or clause whose DuckDB result could differ from Postgres' (see Pushdown in fdw/README.md)";

#[derive(Default)]
struct Walk {
    servers: Vec<pg_sys::Oid>,
    first_obstacle: Option<String>,
}

impl Walk {
    fn obstacle(&mut self, reason: impl FnOnce() -> String) {
        if self.first_obstacle.is_none() {
            self.first_obstacle = Some(reason());
        }
    }
}

/// The reason for `q`, a query the translator refused.
pub unsafe fn why_not_whole(q: *mut pg_sys::Query) -> Option<String> {
    unsafe {
        let mut walk = Walk::default();
        walk_queries(q, &mut walk);
        if walk.servers.is_empty() {
            return None;
        }
        Some(match walk.first_obstacle {
            Some(reason) => reason,
            None if walk.servers.len() > 1 => {
                let names: Vec<String> = walk.servers.iter().map(|s| server_name(*s)).collect();
                format!("it reads lake tables of several servers ({})", names.join(", "))
            }
            None => GENERAL.to_owned(),
        })
    }
}

impl QueryVisitor for Walk {
    fn enter(&mut self, q: *mut pg_sys::Query) {
        // SAFETY: a query of the tree being walked.
        unsafe {
            if !(*q).rowMarks.is_null() || (*q).hasForUpdate {
                self.obstacle(|| "FOR UPDATE/SHARE".into());
            }
            if (*q).hasRecursive {
                self.obstacle(|| "WITH RECURSIVE".into());
            }
        }
    }

    fn entry(&mut self, rte: *mut pg_sys::RangeTblEntry) {
        // SAFETY: an entry of the tree being walked; catalog lookups.
        unsafe {
            match (*rte).rtekind {
                pg_sys::RTEKind::RTE_RELATION => match lake_table_server(rte) {
                    Some(server) => {
                        if !self.servers.contains(&server) {
                            self.servers.push(server);
                        }
                    }
                    None if is_foreign_table((*rte).relid) && !(*rte).tablesample.is_null() => {
                        self.obstacle(|| format!("TABLESAMPLE of {}", relation_name((*rte).relid)));
                    }
                    None if is_foreign_table((*rte).relid) => self.obstacle(|| {
                        format!("it reads {}, a foreign table of another wrapper or with child tables", relation_name((*rte).relid))
                    }),
                    None if postgres_rows::is_small_plain_table(rte) => {}
                    None => self.obstacle(|| {
                        format!(
                            "it reads {}, which is neither a lake table nor a plain table small enough to send to DuckDB",
                            relation_name((*rte).relid)
                        )
                    }),
                },
                pg_sys::RTEKind::RTE_FUNCTION | pg_sys::RTEKind::RTE_TABLEFUNC => {
                    self.obstacle(|| "a function in FROM".into());
                }
                _ => {}
            }
        }
    }
}

unsafe fn is_foreign_table(relid: pg_sys::Oid) -> bool {
    unsafe { pg_sys::get_rel_relkind(relid) as u8 == pg_sys::RELKIND_FOREIGN_TABLE }
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
