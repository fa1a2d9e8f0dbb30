//! DuckDB runs its tasks only on the backend's thread and on threads lent to it while
//! a statement that benefits from them runs.
//!
//! DuckDB's own worker threads take any task scheduled on the instance, including the
//! only task of a one-task query; the thread that started that query then finds no
//! task of its own to run and spins until the worker is done. A DuckLake commit is a
//! chain of such queries to the Postgres catalog, each a network round trip, so with
//! a worker every round trip also burns the backend's core while the catalog's
//! backend and the other writers wait for one. The instance is therefore opened with
//! no workers of its own (`external_threads` = `threads`), and `ducklake.threads - 1`
//! threads of a per-instance pool are lent to it for the length of a scan, a write
//! reaching the lake as its statement runs, or a maintenance step; commits (with the
//! small writes deferred to them) and catalog lookups run on the backend's thread
//! alone. Between lendings the threads wait on a channel (their allocator caches
//! stay warm, unlike threads started per statement).
//!
//! A lent thread only executes DuckDB tasks: it never calls Postgres, and it starts
//! with every signal blocked.
//!
//! A lent thread polls for tasks rather than waiting in DuckDB's own worker loop
//! (`duckdb_execute_tasks_state`): when a thread leaves that loop, DuckDB marks it idle
//! to its allocator, and jemalloc then returns the thread's arena to the kernel. Lent
//! once per scan, the thread left it once per query, and every query faulted its
//! memory back in (TPC-H 19: 3,800 page faults per query against 700, and 5% of its
//! time). Between tasks the thread sleeps, from 20 µs doubling up to 1 ms, or 20 ms
//! once it found no task for 200 ms (a cursor left open); a scan wakes it each time it
//! asks DuckDB for rows, and the end of a lending wakes it. A statement that is one
//! DuckDB call (a write, a maintenance step) cannot wake it: after a single-threaded
//! phase of 200 ms, its next parallel phase starts up to 20 ms late. The threads never
//! leave that loop, so DuckDB never flushes their allocator caches: an idle backend
//! keeps what its threads last held until its instance closes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::ffi;

use super::signals::SignalsBlocked;

struct TaskState(ffi::duckdb_task_state);

// SAFETY: DuckDB's task state is shared by the threads executing tasks with it and
// the thread that finishes it; its marker is atomic.
unsafe impl Send for TaskState {}

struct Worker {
    /// A task state to execute until it is finished; closed to stop the thread.
    work: Option<Sender<TaskState>>,
    done: Receiver<()>,
    /// Set to make the thread look for tasks at once (see `Lent::wake`).
    woken: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The threads an instance lends to DuckDB, started on first use.
pub struct Pool {
    database: ffi::duckdb_database,
    size: usize,
    workers: RefCell<Vec<Worker>>,
    lent: Cell<bool>,
}

impl Pool {
    /// A pool of `size` threads for `database`, which must outlive it.
    pub fn new(database: ffi::duckdb_database, size: usize) -> Rc<Pool> {
        Rc::new(Pool { database, size, workers: RefCell::new(Vec::new()), lent: Cell::new(false) })
    }

    /// Lend the pool's threads to DuckDB until the result is dropped. Inside another
    /// lending (a write that first buffers a running scan) this lends nothing more.
    pub fn lend(self: &Rc<Pool>) -> Lent {
        if self.size == 0 || self.lent.get() {
            return Lent { pool: None, state: None };
        }
        // SAFETY: a valid, open database; the state is destroyed when the lending ends.
        let state = unsafe { ffi::duckdb_create_task_state(self.database) };
        if state.is_null() {
            return Lent { pool: None, state: None };
        }
        self.start_workers();
        let mut workers = self.workers.borrow_mut();
        workers.retain(|w| w.work.as_ref().is_some_and(|tx| tx.send(TaskState(state)).is_ok()));
        self.lent.set(true);
        Lent { pool: Some(self.clone()), state: Some(state) }
    }

    fn start_workers(&self) {
        let mut workers = self.workers.borrow_mut();
        if !workers.is_empty() {
            return;
        }
        let _blocked = SignalsBlocked::new();
        for _ in 0..self.size {
            let (work, tasks) = channel::<TaskState>();
            let (finished, done) = channel::<()>();
            let woken = Arc::new(AtomicBool::new(false));
            let wake = woken.clone();
            let spawned = std::thread::Builder::new().name("ducklake-duckdb".into()).spawn(move || {
                while let Ok(state) = tasks.recv() {
                    // SAFETY: the state lives until this thread reports `done`.
                    unsafe { execute_until_finished(state.0, &wake) };
                    if finished.send(()).is_err() {
                        break;
                    }
                }
            });
            // Threads the system refuses to start are simply not lent.
            if let Ok(thread) = spawned {
                workers.push(Worker { work: Some(work), done, woken, thread: Some(thread) });
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for worker in self.workers.get_mut().iter_mut() {
            worker.work.take();
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The pool's threads execute the instance's tasks for as long as this value lives.
pub struct Lent {
    pool: Option<Rc<Pool>>,
    state: Option<ffi::duckdb_task_state>,
}

impl Lent {
    /// Make the lent threads look for tasks at once: DuckDB is about to be asked for
    /// more of a result, and may schedule work for it.
    pub fn wake(&self) {
        if let Some(pool) = &self.pool {
            for worker in pool.workers.borrow().iter() {
                worker.woken.store(true, Ordering::Relaxed);
                if let Some(thread) = &worker.thread {
                    thread.thread().unpark();
                }
            }
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(state) = self.state else { return };
        // SAFETY: marks the execution finished; each lent thread sees it once its
        // current task ends (woken if it naps) and reports back before the state is
        // destroyed.
        unsafe { ffi::duckdb_finish_execution(state) };
        self.wake();
        let Some(pool) = self.pool.take() else { return };
        pool.workers.borrow_mut().retain(|worker| worker.done.recv().is_ok());
        unsafe { ffi::duckdb_destroy_task_state(state) };
        pool.lent.set(false);
    }
}

/// Execute the tasks of `state`'s instance until `duckdb_finish_execution` is called on
/// it, napping while there are none (see the module's comment). The current task, if
/// any, is finished first.
///
/// # Safety
/// `state` must stay valid until this returns.
unsafe fn execute_until_finished(state: ffi::duckdb_task_state, woken: &AtomicBool) {
    const FIRST_NAP: Duration = Duration::from_micros(20);
    const LONGEST_NAP: Duration = Duration::from_millis(1);
    const DROWSY_AFTER: Duration = Duration::from_millis(200);
    const DROWSY_NAP: Duration = Duration::from_millis(20);
    let mut nap = FIRST_NAP;
    let mut last_work = Instant::now();
    loop {
        // Returns at once when no task is queued, or when the execution is finished.
        // A task that blocks (a streaming result's full buffer) is not counted as
        // executed, so the time the call took tells work from an empty queue.
        let called = Instant::now();
        let executed = unsafe { ffi::duckdb_execute_n_tasks_state(state, 64) };
        if unsafe { ffi::duckdb_task_state_is_finished(state) } {
            return;
        }
        let worked = executed > 0 || called.elapsed() > Duration::from_micros(50);
        if worked || woken.swap(false, Ordering::Relaxed) {
            nap = FIRST_NAP;
            last_work = Instant::now();
        }
        if worked {
            continue;
        }
        std::thread::park_timeout(nap);
        let longest = if last_work.elapsed() < DROWSY_AFTER { LONGEST_NAP } else { DROWSY_NAP };
        nap = (nap * 2).min(longest);
    }
}
