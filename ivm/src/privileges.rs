//! Who may do what to a stream table, and the identity the extension acts with.
//!
//! - The catalog (`pgtrickle.pgt_stream_tables`) and the internal schemas belong to
//!   the extension's owner. Roles read their own catalog rows and may edit their
//!   frontier; every other change goes through the functions, which check that the
//!   caller owns the stream table (is a member of its result table's owner role) and
//!   then write as the extension's owner.
//! - A stream table's internal relations are created as the extension's owner and
//!   handed to the stream table's owner, whose refreshes read and write them.
//! - A refresh runs as the stream table's owner (see `maintenance::context`).

use crate::error::{IvmError, IvmResult};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The role that owns the extension (and so its catalog and internal schemas).
pub fn extension_owner() -> IvmResult<pg_sys::Oid> {
    Spi::get_one::<pg_sys::Oid>("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'ducklake_ivm'")?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "extension ducklake_ivm is not installed"))
}

/// Run `body` as the extension's owner, still inside the caller's security
/// restrictions (a security-restricted operation stays one).
pub fn as_extension_owner<T>(body: impl FnOnce() -> IvmResult<T>) -> IvmResult<T> {
    let owner = extension_owner()?;
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_security = 0;
    // SAFETY: plain backend state, restored below or, if an ERROR unwinds through
    // here, by the (sub)transaction abort.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_security);
        pg_sys::SetUserIdAndSecContext(owner, saved_security | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                // SAFETY: undoes the switch above.
                unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
            }
        }
    }
    let _restore = Restore(saved_user, saved_security);
    body()
}

/// The owner of relation `relid`.
pub fn owner_of(relid: pg_sys::Oid) -> IvmResult<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1", &[relid.into()])?
        .ok_or_else(|| IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "the stream table's result table no longer exists"))
}

/// Fail unless the current user may manage the stream table whose result table is
/// `relid` (owns it, or is a member of its owner), as for ALTER TABLE.
pub fn require_owner(relid: pg_sys::Oid, name: &str) -> IvmResult<()> {
    let owner = owner_of(relid)?;
    // SAFETY: a role-membership check of existing roles.
    let member = unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) };
    if member {
        return Ok(());
    }
    Err(IvmError::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be owner of stream table {name}")))
}

/// Whether row-level security applies to `role` reading `relation` (its policies are
/// enabled, and `role` neither owns the table without FORCE nor bypasses them). The
/// capture triggers ask it for the stream table's owner (see `maintenance::capture`).
#[pg_extern(stable, parallel_safe)]
fn row_security_applies(relation: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups; with noError it raises nothing.
    unsafe { pg_sys::check_enable_rls(relation, role, true) == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 }
}
