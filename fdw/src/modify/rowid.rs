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

pub fn encode(rowid: i64, tid: &mut pg_sys::ItemPointerData) -> LakeResult<()> {
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
