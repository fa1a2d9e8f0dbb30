//! Reading Postgres node containers from Rust.

use pgrx::pg_sys;

/// Members of a Postgres `List` of nodes.
///
/// # Safety
/// `list` must be NIL or a valid pointer List.
pub unsafe fn list_nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    unsafe {
        if list.is_null() {
            return Vec::new();
        }
        (0..(*list).length as usize).map(|i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node).collect()
    }
}

/// Attribute numbers in a Bitmapset built by `pull_varattnos` or kept in
/// `updatedCols` (members are offset by `FirstLowInvalidHeapAttributeNumber`), in
/// ascending order; 0 is a whole-row reference, negative numbers are system columns.
///
/// # Safety
/// `set` must be NULL or a valid Bitmapset.
pub unsafe fn attribute_numbers(set: *const pg_sys::Bitmapset) -> Vec<i32> {
    unsafe { members(set) }.into_iter().map(|m| m + pg_sys::FirstLowInvalidHeapAttributeNumber).collect()
}

/// Members of a Bitmapset (such as the range-table indexes of `pull_varnos`), ascending.
///
/// # Safety
/// `set` must be NULL or a valid Bitmapset.
pub unsafe fn members(set: *const pg_sys::Bitmapset) -> Vec<i32> {
    let mut numbers = Vec::new();
    let mut member = -1;
    loop {
        member = unsafe { pg_sys::bms_next_member(set, member) };
        if member < 0 {
            return numbers;
        }
        numbers.push(member);
    }
}

/// The value of an integer constant (int4 or int8), if `node` is one and not NULL.
pub unsafe fn const_int(node: *mut pg_sys::Node) -> Option<i64> {
    unsafe {
        if (*node).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull {
            return None;
        }
        match (*c).consttype {
            pg_sys::INT4OID => Some((*c).constvalue.value() as i32 as i64),
            pg_sys::INT8OID => Some((*c).constvalue.value() as i64),
            _ => None,
        }
    }
}

/// What `walk_queries` shows a visitor.
pub trait QueryVisitor {
    /// A query, before its range table and expressions are walked.
    fn enter(&mut self, query: *mut pg_sys::Query);
    /// The same query, after.
    fn leave(&mut self, _query: *mut pg_sys::Query) {}
    /// A range-table entry, before a sub-select entry's query is walked.
    fn entry(&mut self, rte: *mut pg_sys::RangeTblEntry);
}

/// Show `visitor` every query and range-table entry of `query` at any depth: sub-selects
/// in FROM and in expressions, CTEs.
///
/// # Safety
/// `query` must be a valid analyzed Query.
pub unsafe fn walk_queries(query: *mut pg_sys::Query, visitor: &mut dyn QueryVisitor) {
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        unsafe {
            if node.is_null() {
                return false;
            }
            let visitor = &mut **(context as *mut &mut dyn QueryVisitor);
            match (*node).type_ {
                pg_sys::NodeTag::T_Query => {
                    let query = node as *mut pg_sys::Query;
                    visitor.enter(query);
                    let done =
                        pg_sys::query_tree_walker(query, Some(walker), context, pg_sys::QTW_EXAMINE_RTES_BEFORE as i32);
                    visitor.leave(query);
                    done
                }
                pg_sys::NodeTag::T_RangeTblEntry => {
                    visitor.entry(node as *mut pg_sys::RangeTblEntry);
                    false // the walker goes on into a sub-select entry's query
                }
                _ => pg_sys::expression_tree_walker(node, Some(walker), context),
            }
        }
    }

    let mut visitor = visitor;
    unsafe { walker(query.cast(), (&mut visitor as *mut &mut dyn QueryVisitor).cast()) };
}
