//! Postgres locks through which the backends of one cluster coordinate on a lake.
//!
//! - The **commit lock**: DuckLake commits optimistically, so concurrent commits race
//!   for the next snapshot id in the catalog and the losers retry after a wait. With
//!   many backends committing small transactions, those retries (and the catalog
//!   work each repeats) cost more than waiting in line, so each commit first takes
//!   the lake's commit lock, held while DuckLake commits. Writers on other clusters
//!   still meet DuckLake's retries, which stay correct.
//! - The **writer marks**: a transaction's Parquet files are on disk from the
//!   statement that writes them until its commit records them in the catalog; until
//!   then they look exactly like the files a killed writer left behind. So every
//!   transaction that changes the lake holds, until it ends, a share lock whose key
//!   carries the time of its first change, and deleting unreferenced files
//!   (`ducklake.maintain`) reads them from `pg_locks` (visible to every role) and
//!   spares every file written since the oldest one. Nobody waits on them: a
//!   transaction holding one for hours delays no writer and no cleanup.
//!
//! Both are advisory locks in key spaces of their own (field 4 = 3 and 4; the SQL
//! functions use 1 and 2), so applications' advisory locks never collide with them.
//! They are cluster-wide (not per database) and keyed by the lake's data path: two
//! databases, or two roles, whose servers reach the same lake share them. `pg_locks` shows them as `advisory` with `objsubid` 3
//! (the lake's key in `classid` and `objid`) or 4 (a 32-bit key in `database`, the
//! first change in microseconds since 1970 in `classid` and `objid`).

use pgrx::pg_sys;
use pgrx::spi::Spi;

use crate::error::{LakeError, LakeResult};

const COMMIT_SPACE: u16 = 3;
const WRITERS_SPACE: u16 = 4;

/// A stable key for the lake whose files are in `data_path` (normalized). The files
/// identify a lake to every backend whatever role, catalog connection string or
/// database reaches it, and the writer marks protect exactly those files.
pub fn key(data_path: &str) -> u64 {
    // FNV-1a: stable across processes, unlike the standard library's hasher.
    data_path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3))
}

/// The commit locks this transaction holds; released when dropped (right after the
/// lake commits, rather than at the end of the Postgres transaction).
pub struct CommitLocks(Vec<pg_sys::LOCKTAG>);

impl Drop for CommitLocks {
    fn drop(&mut self) {
        for tag in &self.0 {
            // SAFETY: releases a lock acquired by `acquire_commit` in this transaction.
            unsafe { pg_sys::LockRelease(tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false) };
        }
    }
}

/// Wait for the commit lock of every key, in order (so two backends committing to
/// the same lakes never wait on each other in a cycle). Cancel and lock_timeout
/// interrupt the wait as for any lock.
pub fn acquire_commit(mut keys: Vec<u64>) -> CommitLocks {
    keys.sort_unstable();
    keys.dedup();
    let tags: Vec<pg_sys::LOCKTAG> =
        keys.iter().map(|key| advisory_tag([0, (key >> 32) as u32, *key as u32], COMMIT_SPACE)).collect();
    for tag in &tags {
        // SAFETY: a transaction-level lock of the user lock method.
        unsafe { pg_sys::LockAcquire(tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false, false) };
    }
    CommitLocks(tags)
}

/// Mark this transaction as a writer of the lake until the top-level transaction
/// ends: it may have files on disk that no snapshot references yet. Marked for the
/// top-level transaction even inside a savepoint, so rolling the savepoint back keeps
/// the mark for the writes that survive.
pub fn mark_writer(key: u64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let tag = advisory_tag([folded(key), (since >> 32) as u32, since as u32], WRITERS_SPACE);
    // SAFETY: switches the resource owner only around the acquisition, to the top
    // transaction's (always set while a transaction is in progress).
    unsafe {
        let previous = pg_sys::CurrentResourceOwner;
        pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
        pg_sys::LockAcquire(&tag, pg_sys::ShareLock as pg_sys::LOCKMODE, false, false);
        pg_sys::CurrentResourceOwner = previous;
    }
}

/// The time before which a file of the lake that no snapshot references may be
/// deleted, as a DuckDB TIMESTAMPTZ literal: `retention` ago, or, if earlier, one
/// second (file times lag the clock by a few milliseconds) before the first change
/// of the oldest transaction of this cluster still writing the lake. Read now: a
/// writer that starts later writes only newer files.
pub fn unreferenced_files_cutoff(key: u64, retention: pgrx::datum::Interval) -> LakeResult<String> {
    let cutoff = Spi::get_one_with_args::<String>(
        "SELECT to_char(least(clock_timestamp() - $1, \
           (SELECT to_timestamp(min(classid::int8 << 32 | objid::int8)::float8 / 1000000) - interval '1 second' \
              FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 4 AND database = $2)) \
           AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        &[retention.into(), pg_sys::Oid::from(folded(key)).into()],
    )
    .map_err(|e| LakeError::DuckDb(format!("reading the lake's writers from pg_locks: {e}")))?
    .ok_or_else(|| LakeError::DuckDb("reading the lake's writers from pg_locks: no time".into()))?;
    Ok(format!("CAST({} AS TIMESTAMPTZ)", crate::duck::sql::literal(&format!("{cutoff}+00"))))
}

fn folded(key: u64) -> u32 {
    (key >> 32) as u32 ^ key as u32
}

fn advisory_tag(fields: [u32; 3], space: u16) -> pg_sys::LOCKTAG {
    // SAFETY: LOCKTAG is plain data; every field is set below.
    let mut tag: pg_sys::LOCKTAG = unsafe { std::mem::zeroed() };
    tag.locktag_field1 = fields[0];
    tag.locktag_field2 = fields[1];
    tag.locktag_field3 = fields[2];
    tag.locktag_field4 = space;
    tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
    tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
    tag
}
