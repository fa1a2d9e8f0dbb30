//! What the catalog says about the functions and types a query uses.

use crate::error::{IvmError, IvmResult};
use pgrx::pg_sys;
use std::ffi::CStr;

/// A function's name, and whether it is a built-in (in pg_catalog).
pub fn name_of_function(oid: pg_sys::Oid) -> (String, bool) {
    // SAFETY: syscache lookups; get_func_name returns NULL for a missing function.
    unsafe {
        let name = pg_sys::get_func_name(oid);
        let name = if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() };
        (name, pg_sys::get_func_namespace(oid) == pg_sys::PG_CATALOG_NAMESPACE.into())
    }
}

pub fn type_name(type_oid: pg_sys::Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd name for any type oid.
    unsafe { CStr::from_ptr(pg_sys::format_type_be(type_oid)).to_string_lossy().into_owned() }
}

/// Types whose values can be state keys: those with a default btree equality (unique
/// index, grouping and `=` agree on them).
pub fn require_key_type(node: *mut pg_sys::Node, what: &str) -> IvmResult<()> {
    // SAFETY: typcache lookup of an existing type.
    unsafe {
        let type_oid = pg_sys::exprType(node);
        let cache = pg_sys::lookup_type_cache(type_oid, (pg_sys::TYPECACHE_BTREE_OPFAMILY | pg_sys::TYPECACHE_EQ_OPR) as i32);
        if (*cache).btree_opf == pg_sys::InvalidOid || (*cache).eq_opr == pg_sys::InvalidOid {
            return Err(IvmError::unsupported(format!("{what} of type {} (it has no btree equality)", type_name(type_oid))));
        }
    }
    Ok(())
}

