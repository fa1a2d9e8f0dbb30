//! DuckDB transactions follow the Postgres transaction: committed at pre-commit (so a
//! lake failure still aborts the Postgres transaction), rolled back on abort.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::catalog::{cache, replay};
use crate::error::{LakeError, raise};

pub fn register_callbacks() {
    // SAFETY: registering static callbacks once per backend, from _PG_init.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_transaction_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_event), std::ptr::null_mut());
        pg_sys::on_proc_exit(Some(on_exit), pg_sys::Datum::from(0));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_transaction_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => {
            if let Err(e) = cache::commit_all() {
                raise(e);
            }
        }
        XACT_EVENT_PRE_PREPARE => {
            if cache::any_in_transaction() {
                raise(LakeError::NotSupported(
                    "cannot PREPARE a transaction that has used a DuckLake foreign table".into(),
                ));
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => cache::rollback_all(),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    cache::close_all();
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    subxact: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => replay::subtransaction_aborted(subxact),
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => replay::subtransaction_committed(subxact, parent),
        _ => {}
    }
}
