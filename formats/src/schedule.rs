//! Stream-table schedules: durations such as '500ms', '5s', '1m', '2h' or plain
//! seconds, between 100 ms and 7 days; and how long to wait after failures.

use std::time::Duration;

pub const SHORTEST: Duration = Duration::from_millis(100);
pub const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest wait after repeated failures.
pub const LONGEST_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// Not a duration at all.
    Invalid,
    /// A duration outside SHORTEST..=LONGEST.
    OutOfRange,
}

pub fn parse(text: &str) -> Result<Duration, ScheduleError> {
    let trimmed = text.trim().to_ascii_lowercase();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: u64 = number.parse().map_err(|_| ScheduleError::Invalid)?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" | "sec" | "second" | "seconds" => 1_000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        _ => return Err(ScheduleError::Invalid),
    };
    let duration = value.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or(ScheduleError::OutOfRange)?;
    if duration < SHORTEST || duration > LONGEST {
        return Err(ScheduleError::OutOfRange);
    }
    Ok(duration)
}

/// The wait after `errors` consecutive failures: the schedule doubled per failure,
/// at most LONGEST_BACKOFF (but never shorter than the schedule itself).
pub fn backoff(schedule: Duration, errors: i32) -> Duration {
    if errors <= 0 {
        return schedule;
    }
    let factor = 1u32 << errors.clamp(0, 16);
    schedule.saturating_mul(factor).min(LONGEST_BACKOFF).max(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(" 5s "), Ok(Duration::from_secs(5)));
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1 minute"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("168h"), Ok(LONGEST));
        assert_eq!(parse("100ms"), Ok(SHORTEST));
    }

    #[test]
    fn refused() {
        assert_eq!(parse(""), Err(ScheduleError::Invalid));
        assert_eq!(parse("s"), Err(ScheduleError::Invalid));
        assert_eq!(parse("-5s"), Err(ScheduleError::Invalid));
        assert_eq!(parse("1.5s"), Err(ScheduleError::Invalid));
        assert_eq!(parse("5 fortnights"), Err(ScheduleError::Invalid));
        assert_eq!(parse("99ms"), Err(ScheduleError::OutOfRange));
        assert_eq!(parse("0"), Err(ScheduleError::OutOfRange));
        assert_eq!(parse("169h"), Err(ScheduleError::OutOfRange));
        // would overflow a u64 of milliseconds
        assert_eq!(parse("18446744073709551615h"), Err(ScheduleError::OutOfRange));
        assert_eq!(parse("99999999999999999999999s"), Err(ScheduleError::Invalid));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 0), s);
        assert_eq!(backoff(s, -3), s);
        assert_eq!(backoff(s, 1), Duration::from_secs(2));
        assert_eq!(backoff(s, 3), Duration::from_secs(8));
        assert_eq!(backoff(s, 30), LONGEST_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(3600), 2), Duration::from_secs(3600));
    }
}
