//! Schedules as the SQL API takes them (see `ducklake_formats::schedule`), with the
//! errors it reports.

use crate::error::{IvmError, IvmResult};
use ducklake_formats::schedule::{self, ScheduleError};
use std::time::Duration;

pub use ducklake_formats::schedule::backoff;

pub fn parse(text: &str) -> IvmResult<Duration> {
    schedule::parse(text).map_err(|e| match e {
        ScheduleError::Invalid => IvmError::invalid(format!("invalid schedule \"{text}\""))
            .with_hint("A schedule is a duration such as '500ms', '5s', '1m' or '2h'."),
        ScheduleError::OutOfRange => IvmError::invalid(format!("schedule \"{text}\" is out of range (100ms to 7 days)")),
    })
}
