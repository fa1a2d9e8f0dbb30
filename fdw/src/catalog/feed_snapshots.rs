//! Snapshots whose change feed this backend reads by time travel (see
//! `duck::change_feed`): found by `ducklake.resolve_changes`, kept for the lake's life
//! in this backend (a committed snapshot's changes never change).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// A lake table: schema and name.
type Table = (String, String);

#[derive(Default)]
pub struct FeedSnapshots {
    by_time_travel: RefCell<HashMap<Table, BTreeSet<i64>>>,
}

impl FeedSnapshots {
    /// The snapshots of `schema.table` in `lower..=upper` read by time travel.
    pub fn in_range(&self, schema: &str, table: &str, lower: i64, upper: i64) -> Vec<i64> {
        let known = self.by_time_travel.borrow();
        known
            .get(&(schema.to_owned(), table.to_owned()))
            .map(|set| set.range(lower..=upper).copied().collect())
            .unwrap_or_default()
    }

    /// Read these snapshots of `schema.table` by time travel from now on.
    pub fn add(&self, schema: &str, table: &str, snapshots: impl IntoIterator<Item = i64>) {
        self.by_time_travel.borrow_mut().entry((schema.to_owned(), table.to_owned())).or_default().extend(snapshots);
    }
}
