//! Schedules are durations: '500ms', '5s', '1m', '2h', or plain seconds.

use crate::error::{IvmError, IvmResult};
use std::time::Duration;

pub fn parse_schedule(text: &str) -> IvmResult<Duration> {
    let trimmed = text.trim().to_ascii_lowercase();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid = || {
        IvmError::invalid(format!("invalid schedule \"{text}\""))
            .with_hint("A schedule is a duration such as '500ms', '5s', '1m' or '2h'.")
    };
    let value: u64 = number.parse().map_err(|_| invalid())?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(value),
        "" | "s" | "sec" | "second" | "seconds" => Duration::from_secs(value),
        "m" | "min" | "minute" | "minutes" => Duration::from_secs(value * 60),
        "h" | "hour" | "hours" => Duration::from_secs(value * 3600),
        _ => return Err(invalid()),
    };
    if duration < Duration::from_millis(100) || duration > Duration::from_secs(7 * 24 * 3600) {
        return Err(IvmError::invalid(format!("schedule \"{text}\" is out of range (100ms to 7 days)")));
    }
    Ok(duration)
}

/// Wait after `errors` consecutive failures: the schedule doubled per failure, at most 5 minutes.
pub fn backoff(schedule: Duration, errors: i32) -> Duration {
    if errors <= 0 {
        return schedule;
    }
    let factor = 1u32 << errors.clamp(0, 16);
    schedule.saturating_mul(factor).min(Duration::from_secs(300)).max(schedule)
}
