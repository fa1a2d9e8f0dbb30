//! Where a buffered result waits (see `stream`): in memory up to `work_mem`, as
//! Postgres keeps a sort or a hash, and beyond it in a file of the instance's private
//! temp directory, as Arrow IPC. The file is unlinked as soon as it is created, so it
//! disappears with the buffer however the backend ends.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::{LakeError, LakeResult};

/// Batches in arrival order: first those in memory, then those in the file.
pub struct Buffer {
    memory: VecDeque<RecordBatch>,
    memory_bytes: usize,
    limit: usize,
    state: FileState,
}

enum FileState {
    None,
    Writing(StreamWriter<BufWriter<File>>),
    Reading(StreamReader<BufReader<File>>),
    Done,
}

impl Buffer {
    /// A buffer keeping at most `limit` bytes in memory (the rest goes to a file).
    pub fn new(limit: usize) -> Buffer {
        Buffer { memory: VecDeque::new(), memory_bytes: 0, limit, state: FileState::None }
    }

    /// The limit Postgres applies to each sort or hash of a query.
    pub fn work_mem_limit() -> usize {
        // SAFETY: reads a GUC variable (kB) of the backend thread.
        (unsafe { pgrx::pg_sys::work_mem }).max(64) as usize * 1024
    }

    /// Append a batch (while filling; `finish` ends that).
    pub fn push(&mut self, batch: RecordBatch, directory: &Path) -> LakeResult<()> {
        let size = batch.get_array_memory_size();
        if matches!(self.state, FileState::None) && self.memory_bytes + size <= self.limit {
            self.memory_bytes += size;
            self.memory.push_back(batch);
            return Ok(());
        }
        if matches!(self.state, FileState::None) {
            let file = tempfile_in(directory)?;
            let writer = StreamWriter::try_new(BufWriter::new(file), &batch.schema()).map_err(spill_error)?;
            self.state = FileState::Writing(writer);
        }
        match &mut self.state {
            FileState::Writing(writer) => writer.write(&batch).map_err(spill_error),
            _ => Err(LakeError::DuckDb("internal error: a batch arrived after the buffer was filled".into())),
        }
    }

    /// No more batches: switch the file (if any) to reading from its start.
    pub fn finish(&mut self) -> LakeResult<()> {
        if let FileState::Writing(mut writer) = std::mem::replace(&mut self.state, FileState::Done) {
            writer.finish().map_err(spill_error)?;
            let mut file = writer.into_inner().map_err(spill_error)?.into_inner().map_err(|e| spill_error(e.into_error()))?;
            file.seek(SeekFrom::Start(0)).map_err(spill_error)?;
            self.state = FileState::Reading(StreamReader::try_new(BufReader::new(file), None).map_err(spill_error)?);
        }
        Ok(())
    }

    /// The next batch in arrival order, None once all were taken.
    pub fn pop(&mut self) -> LakeResult<Option<RecordBatch>> {
        if let Some(batch) = self.memory.pop_front() {
            self.memory_bytes -= batch.get_array_memory_size();
            return Ok(Some(batch));
        }
        match &mut self.state {
            FileState::Reading(reader) => match reader.next() {
                Some(batch) => Ok(Some(batch.map_err(spill_error)?)),
                None => {
                    self.state = FileState::Done;
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }

    /// Whether the buffer spilled to a file.
    #[allow(dead_code)]
    pub fn spilled(&self) -> bool {
        matches!(self.state, FileState::Writing(_) | FileState::Reading(_))
    }
}

/// A new file in `directory` that is already unlinked.
fn tempfile_in(directory: &Path) -> LakeResult<File> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = directory.join(format!("buffered_{}_{n}.arrow", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(spill_error)?;
    std::fs::remove_file(&path).map_err(spill_error)?;
    Ok(file)
}

fn spill_error(e: impl std::fmt::Display) -> LakeError {
    LakeError::DuckDb(format!("IO Error: buffering a lake result in a temporary file: {e}"))
}
