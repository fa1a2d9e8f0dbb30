//! Where a refresh's time goes: each statement's duration, logged at DEBUG2.

use crate::error::IvmResult;

/// Run `body`, logging at DEBUG2 how long statement `sql` took.
pub fn timed<T>(sql: &str, body: impl FnOnce() -> IvmResult<T>) -> IvmResult<T> {
    let started = std::time::Instant::now();
    let result = body();
    pgrx::debug2!("pgtrickle: {:.1} ms: {}", started.elapsed().as_secs_f64() * 1000.0, sql);
    result
}
