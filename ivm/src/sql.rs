//! Quoting for generated SQL, done by Postgres' own quoting functions, and looking
//! relations up by name.

use crate::error::{IvmError, IvmResult};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// An identifier, quoted when Postgres would need it quoted.
pub fn ident(name: &str) -> String {
    let c = CString::new(name.replace('\0', "")).expect("no NUL after replace");
    // SAFETY: quote_identifier reads a NUL-terminated string and returns either it or a palloc'd copy.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())).to_string_lossy().into_owned() }
}

/// A string literal, quoted as Postgres' quote_literal does.
pub fn literal(text: &str) -> String {
    let c = CString::new(text.replace('\0', "")).expect("no NUL after replace");
    // SAFETY: quote_literal_cstr reads a NUL-terminated string and returns a palloc'd one.
    unsafe { CStr::from_ptr(pg_sys::quote_literal_cstr(c.as_ptr())).to_string_lossy().into_owned() }
}

/// `schema.name`, both parts quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// The relation's schema-qualified, quoted name.
pub fn relation_name(relid: pg_sys::Oid) -> String {
    let (schema, name) = relation_parts(relid);
    qualified(&schema, &name)
}

/// The relation's schema and name, unquoted.
pub fn relation_parts(relid: pg_sys::Oid) -> (String, String) {
    // SAFETY: catalog lookups; both return NULL for a missing relation.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        let text = |p: *mut std::ffi::c_char| {
            if p.is_null() { format!("{}", relid.to_u32()) } else { CStr::from_ptr(p).to_string_lossy().into_owned() }
        };
        (text(schema), text(name))
    }
}

/// The relation called `name` (as `to_regclass` resolves it), or an error naming it.
pub fn regclass(name: &str) -> IvmResult<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[name.into()])
        .ok()
        .flatten()
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation {name} does not exist")))
}

/// The relation called `name`, or None when there is none.
pub fn try_regclass(name: &str) -> IvmResult<Option<pg_sys::Oid>> {
    Ok(Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[name.into()])?)
}

/// Take a heavyweight lock on relation `oid` in `mode` (a `pg_sys::*Lock`), held until the
/// transaction ends; honours lock_timeout.
pub fn lock_relation(oid: pgrx::pg_sys::Oid, mode: u32) {
    // SAFETY: locks an oid in the lock manager; a dropped relation's oid is just a key.
    unsafe { pgrx::pg_sys::LockRelationOid(oid, mode as pgrx::pg_sys::LOCKMODE) };
}
