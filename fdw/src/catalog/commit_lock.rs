//! Backends of one Postgres database take turns committing to the same lake.
//!
//! DuckLake commits optimistically: concurrent commits race for the next snapshot
//! id in the catalog, and the losers retry after a wait. With many backends of one
//! instance committing small transactions, those retries (and the catalog work each
//! repeats) cost more than waiting in line, so each commit first takes a
//! lock of the lake, held while DuckLake commits.
//! Writers on other instances still meet DuckLake's retries, which stay correct.
//!
//! The lock is an advisory lock in a key space of its own (field 4 = 3; the SQL
//! functions use 1 and 2), so applications' advisory locks never collide with it;
//! it shows in `pg_locks` as an advisory lock with `objsubid` 3.

use pgrx::pg_sys;

const DUCKLAKE_ADVISORY_SPACE: u16 = 3;

/// A stable key for the lake at `identity` (catalog connection and metadata schema).
pub fn key(identity: &str) -> u64 {
    // FNV-1a: stable across processes, unlike the standard library's hasher.
    identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3))
}

/// The commit locks this transaction holds; released when dropped (right after the
/// lake commits, rather than at the end of the Postgres transaction).
pub struct CommitLocks(Vec<pg_sys::LOCKTAG>);

/// Wait for the commit lock of every key, in order (so two backends committing to
/// the same lakes never wait on each other in a cycle). Cancel and lock_timeout
/// interrupt the wait as for any lock.
pub fn acquire(mut keys: Vec<u64>) -> CommitLocks {
    keys.sort_unstable();
    keys.dedup();
    let tags: Vec<pg_sys::LOCKTAG> = keys.iter().map(|key| tag(*key)).collect();
    for tag in &tags {
        // SAFETY: a transaction-level lock of the user lock method; released by
        // CommitLocks, or by Postgres when the transaction aborts.
        unsafe { pg_sys::LockAcquire(tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false, false) };
    }
    CommitLocks(tags)
}

impl Drop for CommitLocks {
    fn drop(&mut self) {
        for tag in &self.0 {
            // SAFETY: releases a lock acquired above by this transaction.
            unsafe { pg_sys::LockRelease(tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false) };
        }
    }
}

fn tag(key: u64) -> pg_sys::LOCKTAG {
    // SAFETY: LOCKTAG is plain data; every field is set below.
    let mut tag: pg_sys::LOCKTAG = unsafe { std::mem::zeroed() };
    // SAFETY: MyDatabaseId is set for the whole life of a backend.
    tag.locktag_field1 = unsafe { pg_sys::MyDatabaseId }.to_u32();
    tag.locktag_field2 = (key >> 32) as u32;
    tag.locktag_field3 = key as u32;
    tag.locktag_field4 = DUCKLAKE_ADVISORY_SPACE;
    tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
    tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
    tag
}
