//! The `ducklake` foreign data wrapper as supabase-wrappers sees it: handler,
//! validator and IMPORT FOREIGN SCHEMA. Its scan callbacks are replaced by ours
//! (see `scan`), so the trait's scan methods are never called.

use std::collections::HashMap;

use pgrx::pg_sys;
use supabase_wrappers::FdwRoutine;
use supabase_wrappers::prelude::*;

use crate::error::LakeError;
use crate::{import, modify, options, scan};

#[wrappers_fdw(
    version = "0.1.0",
    author = "ducklake-pg",
    website = "https://ducklake.select",
    error_type = "LakeError"
)]
pub(crate) struct DucklakeFdw {
    server_oid: pg_sys::Oid,
}

fn scan_path_not_used() -> LakeError {
    LakeError::NotSupported("internal error: the supabase-wrappers scan path is not used by ducklake".into())
}

impl ForeignDataWrapper<LakeError> for DucklakeFdw {
    fn new(server: ForeignServer) -> Result<Self, LakeError> {
        Ok(DucklakeFdw { server_oid: server.server_oid })
    }

    fn begin_scan(
        &mut self,
        _quals: &[Qual],
        _columns: &[Column],
        _sorts: &[Sort],
        _limit: &Option<Limit>,
        _options: &HashMap<String, String>,
    ) -> Result<(), LakeError> {
        Err(scan_path_not_used())
    }

    fn iter_scan(&mut self, _row: &mut Row) -> Result<Option<()>, LakeError> {
        Err(scan_path_not_used())
    }

    fn end_scan(&mut self) -> Result<(), LakeError> {
        Ok(())
    }

    fn import_foreign_schema(&mut self, stmt: ImportForeignSchemaStmt) -> Result<Vec<String>, LakeError> {
        import::create_statements(self.server_oid, &stmt)
    }

    fn validator(options: Vec<Option<String>>, catalog: Option<pg_sys::Oid>) -> Result<(), LakeError> {
        let Some(catalog) = catalog else { return Ok(()) };
        let pairs: Vec<(String, String)> = options
            .into_iter()
            .flatten()
            .map(|option| match option.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (option, String::new()),
            })
            .collect();
        options::validate(&pairs, catalog)
    }

    fn fdw_routine_hook(routine: &mut FdwRoutine<pgrx::AllocatedByRust>) {
        scan::install(routine);
        modify::install(routine);
    }
}
