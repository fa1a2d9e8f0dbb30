//! The lake columns a backend last looked up, by (schema, table): what a transaction
//! that has not read the lake uses instead of a lookup, which would take the lake's
//! snapshot (see `writes` and `columns`).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::catalog::staged::LakeColumn;

#[derive(Default)]
pub struct ColumnCache(RefCell<HashMap<(String, String), Vec<LakeColumn>>>);

impl ColumnCache {
    pub fn get(&self, schema: &str, table: &str) -> Option<Vec<LakeColumn>> {
        self.0.borrow().get(&(schema.to_owned(), table.to_owned())).cloned()
    }

    pub fn put(&self, schema: &str, table: &str, columns: Vec<LakeColumn>) {
        self.0.borrow_mut().insert((schema.to_owned(), table.to_owned()), columns);
    }

    /// Forget everything (after DDL this backend ran, which the lookups predate).
    pub fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}
