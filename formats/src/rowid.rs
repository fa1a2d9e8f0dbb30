//! DuckLake's `rowid` carried in a Postgres tuple id.
//!
//! UPDATE and DELETE identify rows by the row-identity column Postgres adds for
//! foreign tables, a `tid`: a 32-bit block number and a 16-bit offset (never 0). A
//! DuckLake rowid is packed into the block and the low 15 bits of the offset, plus
//! one, which covers rowids below 2^47.

const OFFSET_BITS: u32 = 15;
/// The first rowid a tuple id cannot carry.
pub const MAX_ROWID: i64 = 1 << (32 + OFFSET_BITS);

/// Where DuckLake numbers the rows the current transaction inserted. Those numbers
/// are not stable: after an UPDATE in the same transaction two rows can share one.
pub const LOCAL_ROWID_START: i64 = 1_000_000_000_000_000_000;

/// A tuple id: block number and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleId {
    pub block: u32,
    pub offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowidError {
    /// A row the current transaction inserted (no stable rowid yet).
    Uncommitted,
    /// Beyond what a tuple id can carry, or negative.
    OutOfRange(i64),
}

pub fn encode(rowid: i64) -> Result<TupleId, RowidError> {
    if rowid >= LOCAL_ROWID_START {
        return Err(RowidError::Uncommitted);
    }
    if !(0..MAX_ROWID).contains(&rowid) {
        return Err(RowidError::OutOfRange(rowid));
    }
    Ok(TupleId { block: (rowid >> OFFSET_BITS) as u32, offset: ((rowid & ((1 << OFFSET_BITS) - 1)) + 1) as u16 })
}

pub fn decode(tid: TupleId) -> i64 {
    ((tid.block as i64) << OFFSET_BITS) | (tid.offset as i64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rowids_round_trip_at_the_edges() {
        for rowid in [0, 1, (1 << 15) - 1, 1 << 15, 123_456_789_012, MAX_ROWID - 1] {
            let tid = encode(rowid).unwrap();
            assert_ne!(tid.offset, 0, "offset 0 is not a valid tuple id");
            assert!(tid.offset <= 1 << 15);
            assert_eq!(decode(tid), rowid);
        }
        assert_eq!(encode(0).unwrap(), TupleId { block: 0, offset: 1 });
        assert_eq!(encode(MAX_ROWID - 1).unwrap(), TupleId { block: u32::MAX, offset: 1 << 15 });
    }

    #[test]
    fn rowids_beyond_a_tuple_id_are_refused() {
        assert_eq!(encode(MAX_ROWID), Err(RowidError::OutOfRange(MAX_ROWID)));
        assert_eq!(encode(-1), Err(RowidError::OutOfRange(-1)));
        assert_eq!(encode(LOCAL_ROWID_START), Err(RowidError::Uncommitted));
        assert_eq!(encode(i64::MAX), Err(RowidError::Uncommitted));
    }
}
