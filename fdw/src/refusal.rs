//! Why the query being planned does not run whole in DuckDB: set by the planner hook
//! (`query::hook`) for the length of planning, frozen into each foreign scan's plan
//! (`scan::plan`) and shown by `EXPLAIN (VERBOSE)`. A stack, since planning nests
//! (a function the planner folds may plan queries of its own).

use std::cell::RefCell;

thread_local! {
    static REASONS: RefCell<Vec<Option<String>>> = const { RefCell::new(Vec::new()) };
}

/// The reason of the query being planned, for as long as the scope lives.
pub struct RefusalScope;

impl RefusalScope {
    pub fn new(reason: Option<String>) -> RefusalScope {
        REASONS.with(|r| r.borrow_mut().push(reason));
        RefusalScope
    }
}

impl Drop for RefusalScope {
    fn drop(&mut self) {
        REASONS.with(|r| r.borrow_mut().pop());
    }
}

/// Why the query being planned stays (partly) in Postgres, if it could have run whole.
pub fn current() -> Option<String> {
    REASONS.with(|r| r.borrow().last().cloned().flatten())
}
