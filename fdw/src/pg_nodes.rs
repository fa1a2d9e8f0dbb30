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
