//! The state of one lake's part in the current Postgres transaction: which phase its
//! DuckDB transaction is in, the snapshot it reads, and the writes it recorded.
//!
//! Only states and their transitions live here; `cache`, `writes` and `replay` run
//! the DuckDB statements each transition stands for. The phases:
//!
//! ```text
//!            begin                 first read of the lake
//!   Idle ───────────► Staging ─────────────────────────► Reading
//!    ▲                  │  ▲                               │  ▲
//!    │          a change│  │done                   a change│  │done
//!    │                  ▼  │                               ▼  │
//!    │               Restarting ◄──── a subtransaction rolled back ── (any open phase)
//!    │                  │             writes it had applied, or a
//!    │                  │             statement aborted DuckDB's
//!    │   finish         │ replay failed
//!    └──── (any) ◄───── ▼
//!                     Doomed
//! ```
//!
//! - **Idle**: no DuckDB transaction.
//! - **Staging**: a DuckDB transaction that has not read the lake, so it holds no
//!   DuckLake snapshot yet; writes wait in their staging tables (deferred).
//! - **Reading**: the DuckDB transaction has read the lake (it holds a snapshot);
//!   writes may have been applied to it.
//! - **Restarting**: the DuckDB transaction may hold a change the records lack or
//!   lack one they have: while a change runs (cut short, it leaves this phase), or
//!   after a rolled-back subtransaction or a failed statement. Its next use rolls it
//!   back and replays the records (`replay`).
//! - **Doomed**: it can no longer commit; the commit fails with the reason.
//!
//! The records: writes applied to the DuckDB transaction and writes deferred, in
//! statement order, each with the subtransaction that made it; and whether the
//! transaction holds its writer mark (see `lake_locks`).

use pgrx::pg_sys;

use crate::catalog::staged::StagedRows;
use crate::error::LakeError;

/// A write of the current transaction: the statement that changes the lake (and
/// drops the staging table it reads, if any).
pub struct Write {
    pub subxact: pg_sys::SubTransactionId,
    pub statement: String,
    pub staged: Option<StagedRows>,
}

impl Write {
    pub fn rows(&self) -> usize {
        self.staged.as_ref().map_or(0, |s| s.rows)
    }

    pub fn kept_bytes(&self) -> usize {
        self.staged.as_ref().and_then(|s| s.copy.as_ref()).map_or(0, |c| c.bytes)
    }

    /// Whether it can be replayed (its staged rows, if any, were kept).
    pub fn replayable(&self) -> bool {
        self.staged.as_ref().is_none_or(|s| s.copy.is_some())
    }
}

/// Why the lake transaction can no longer commit.
#[derive(Clone)]
pub enum Doom {
    Failed(String),
    /// Another session committed between the snapshot the transaction read and its
    /// restart: a retry of the whole transaction succeeds.
    Overtaken(String),
}

impl Doom {
    pub fn error(&self) -> LakeError {
        match self {
            Doom::Failed(reason) => LakeError::TransactionDoomed(reason.clone()),
            Doom::Overtaken(reason) => LakeError::ConcurrentChange(reason.clone()),
        }
    }
}

#[derive(Clone)]
pub enum Phase {
    Idle,
    Staging,
    Reading,
    /// `read`: whether the DuckDB transaction had read the lake.
    Restarting { read: bool },
    Doomed(Doom),
}

/// How a transaction ended, for the DuckDB statements that end it.
pub struct Ended {
    /// A DuckDB transaction was open.
    pub open: bool,
    /// It holds writes (the snapshot it commits gets an author and message).
    pub wrote: bool,
    pub doom: Option<Doom>,
}

pub struct LakeTransaction {
    phase: Phase,
    snapshot: Option<u64>,
    applied: Vec<Write>,
    deferred: Vec<Write>,
    marked_writer: bool,
}

impl Default for LakeTransaction {
    fn default() -> Self {
        LakeTransaction { phase: Phase::Idle, snapshot: None, applied: Vec::new(), deferred: Vec::new(), marked_writer: false }
    }
}

impl LakeTransaction {
    /// A DuckDB transaction is open (whatever its phase).
    pub fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// The DuckDB transaction has read the lake (and so holds a DuckLake snapshot).
    pub fn has_read(&self) -> bool {
        matches!(self.phase, Phase::Reading | Phase::Restarting { read: true })
    }

    pub fn doom(&self) -> Option<&Doom> {
        match &self.phase {
            Phase::Doomed(doom) => Some(doom),
            _ => None,
        }
    }

    pub fn restart_pending(&self) -> bool {
        matches!(self.phase, Phase::Restarting { .. })
    }

    /// Idle → Staging: DuckDB's BEGIN ran.
    pub fn began(&mut self) {
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Staging;
        }
    }

    /// The DuckDB transaction reads the lake from now on.
    pub fn read(&mut self) {
        match self.phase {
            Phase::Staging => self.phase = Phase::Reading,
            Phase::Restarting { .. } => self.phase = Phase::Restarting { read: true },
            _ => {}
        }
    }

    /// A change to the DuckDB transaction starts: until `change_done`, it may hold
    /// what the records do not.
    pub fn change_starts(&mut self) {
        if let Phase::Staging | Phase::Reading = self.phase {
            self.phase = Phase::Restarting { read: self.has_read() };
        }
    }

    /// The change completed and is recorded.
    pub fn change_done(&mut self) {
        if let Phase::Restarting { read } = self.phase {
            self.phase = if read { Phase::Reading } else { Phase::Staging };
        }
    }

    /// The DuckDB transaction no longer matches the records: rebuild it at next use.
    pub fn needs_restart(&mut self) {
        if let Phase::Staging | Phase::Reading = self.phase {
            self.phase = Phase::Restarting { read: self.has_read() };
        }
    }

    /// Restarting → Staging/Reading: the records were replayed into a fresh DuckDB
    /// transaction. With nothing replayed, it holds no snapshot yet.
    pub fn restarted(&mut self, replayed: bool) {
        if let Phase::Restarting { read } = self.phase {
            if replayed {
                self.phase = if read { Phase::Reading } else { Phase::Staging };
            } else {
                self.phase = Phase::Staging;
                self.snapshot = None;
            }
        }
    }

    pub fn doomed(&mut self, doom: Doom) {
        self.phase = Phase::Doomed(doom);
    }

    /// The DuckDB transaction was committed early (lake maintenance runs in one of
    /// its own); a new one will read the lake's snapshot afresh.
    pub fn closed_early(&mut self) -> bool {
        let open = self.is_open();
        self.phase = Phase::Idle;
        self.snapshot = None;
        open
    }

    /// Back to Idle, forgetting everything (the records, the mark, the doom).
    pub fn finish(&mut self) -> Ended {
        let ended = Ended { open: self.is_open(), wrote: !self.applied.is_empty(), doom: self.doom().cloned() };
        *self = LakeTransaction::default();
        ended
    }

    pub fn snapshot(&self) -> Option<u64> {
        self.snapshot
    }

    pub fn record_snapshot(&mut self, id: u64) {
        self.snapshot = Some(id);
    }

    /// Whether the writer mark must be taken now (the first change of the transaction).
    pub fn mark_writer(&mut self) -> bool {
        !std::mem::replace(&mut self.marked_writer, true)
    }

    pub fn applied(&self) -> &[Write] {
        &self.applied
    }

    pub fn deferred(&self) -> &[Write] {
        &self.deferred
    }

    pub fn has_writes(&self) -> bool {
        !self.applied.is_empty() || !self.deferred.is_empty()
    }

    pub fn defer(&mut self, write: Write) {
        self.deferred.push(write);
    }

    pub fn applied_one(&mut self, write: Write) {
        self.applied.push(write);
    }

    /// Take the deferred writes to apply them; what is not applied must be handed
    /// back with `return_unapplied`.
    pub fn take_deferred(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.deferred)
    }

    /// Put writes not applied back in front of the deferred ones.
    pub fn return_unapplied(&mut self, writes: impl IntoIterator<Item = Write>) {
        self.deferred.splice(0..0, writes);
    }

    pub fn kept_bytes(&self) -> usize {
        self.applied.iter().chain(self.deferred.iter()).map(Write::kept_bytes).sum()
    }

    /// Subtransaction `subxact` (and its children) rolled back: their deferred writes
    /// are dropped (returned, to drop their staging tables) and their applied ones
    /// forgotten; returns those, and whether any applied write was undone.
    pub fn roll_back_subtransaction(&mut self, subxact: pg_sys::SubTransactionId) -> (Vec<Write>, bool) {
        let (undone, kept) = std::mem::take(&mut self.deferred).into_iter().partition(|w| w.subxact >= subxact);
        self.deferred = kept;
        let before = self.applied.len();
        self.applied.retain(|w| w.subxact < subxact);
        (undone, self.applied.len() < before)
    }

    /// Subtransaction `subxact` committed: its writes now belong to `parent`.
    pub fn commit_subtransaction(&mut self, subxact: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        for w in self.applied.iter_mut().chain(self.deferred.iter_mut()) {
            if w.subxact >= subxact {
                w.subxact = parent;
            }
        }
    }
}

/// Whether the current statement runs inside a savepoint or exception block, where
/// writes are deferred (see `writes`).
pub fn in_subtransaction() -> bool {
    // SAFETY: reads backend transaction state.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() > 1 }
}

pub fn current_subtransaction() -> pg_sys::SubTransactionId {
    // SAFETY: reads backend transaction state.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}
