//! DuckLake's `rowid` carried in a foreign table's `ctid`.
//!
//! UPDATE and DELETE identify rows by the row-identity column Postgres adds for
//! foreign tables, a `tid`. DuckLake rows are identified by a 64-bit `rowid`; it
//! is packed into the tid's 32-bit block and 15 bits of its offset (offset 0 is
//! invalid in a tid, so 1 is added), which covers rowids below 2^47.

use pgrx::pg_sys;

use crate::error::{LakeError, LakeResult};

const OFFSET_BITS: u32 = 15;
pub const MAX_ROWID: i64 = 1 << (32 + OFFSET_BITS);

/// Where DuckLake numbers the rows the current transaction inserted. Those numbers
/// are not stable: after an UPDATE in the same transaction two rows can share one.
pub const LOCAL_ROWID_START: i64 = 1_000_000_000_000_000_000;

pub fn encode(rowid: i64, tid: &mut pg_sys::ItemPointerData) -> LakeResult<()> {
    if rowid >= LOCAL_ROWID_START {
        return Err(LakeError::NotSupported(
            "cannot UPDATE or DELETE rows inserted by the same transaction row by row: DuckLake gives them \
             no stable rowid before they are committed; commit first, or use a condition DuckDB can evaluate \
             on its own (see EXPLAIN VERBOSE: \"DuckDB SQL\")"
                .into(),
        ));
    }
    if !(0..MAX_ROWID).contains(&rowid) {
        return Err(LakeError::NotSupported(format!(
            "DuckLake rowid {rowid} is beyond the {MAX_ROWID} rows UPDATE and DELETE can address"
        )));
    }
    let block = (rowid >> OFFSET_BITS) as u32;
    tid.ip_blkid.bi_hi = (block >> 16) as u16;
    tid.ip_blkid.bi_lo = (block & 0xffff) as u16;
    tid.ip_posid = ((rowid & ((1 << OFFSET_BITS) - 1)) + 1) as u16;
    Ok(())
}

pub fn decode(tid: &pg_sys::ItemPointerData) -> i64 {
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    ((block as i64) << OFFSET_BITS) | (tid.ip_posid as i64 - 1)
}
