//! DuckLake's `rowid` carried in a foreign table's `ctid` (the packing is
//! `ducklake_formats::rowid`), with the errors UPDATE and DELETE report.

use pgrx::pg_sys;

pub use ducklake_formats::rowid::LOCAL_ROWID_START;
use ducklake_formats::rowid::{MAX_ROWID, RowidError, TupleId};

use crate::error::{LakeError, LakeResult};

pub fn encode(rowid: i64, tid: &mut pg_sys::ItemPointerData) -> LakeResult<()> {
    let packed = ducklake_formats::rowid::encode(rowid).map_err(|e| match e {
        RowidError::Uncommitted => LakeError::NotSupported(
            "cannot UPDATE or DELETE rows inserted by the same transaction row by row: DuckLake gives them \
             no stable rowid before they are committed; commit first, or use a condition DuckDB can evaluate \
             on its own (see EXPLAIN VERBOSE: \"DuckDB SQL\")"
                .into(),
        ),
        RowidError::OutOfRange(rowid) => LakeError::NotSupported(format!(
            "DuckLake rowid {rowid} is beyond the {MAX_ROWID} rows UPDATE and DELETE can address"
        )),
    })?;
    tid.ip_blkid.bi_hi = (packed.block >> 16) as u16;
    tid.ip_blkid.bi_lo = (packed.block & 0xffff) as u16;
    tid.ip_posid = packed.offset;
    Ok(())
}

pub fn decode(tid: &pg_sys::ItemPointerData) -> i64 {
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    ducklake_formats::rowid::decode(TupleId { block, offset: tid.ip_posid })
}
