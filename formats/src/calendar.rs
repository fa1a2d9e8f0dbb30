//! Dates and times as ISO text, from the integer forms Postgres keeps them in: days
//! and microseconds since 2000-01-01 (Postgres' epoch) or 1970-01-01 (Unix').
//! Proleptic Gregorian, as both Postgres and DuckDB count.

/// Days from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `YYYY-MM-DD` for days since 1970-01-01; None outside years 1 to 9999 (which a
/// plain ISO date cannot spell: BC years and five-digit years need other syntax).
pub fn date_from_unix_days(days: i64) -> Option<String> {
    // Howard Hinnant's civil_from_days.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (1..=9999).contains(&year).then(|| format!("{year:04}-{month:02}-{day:02}"))
}

/// `HH:MM:SS.ffffff` for microseconds since midnight (0 to 24:00:00 inclusive, as
/// Postgres' `time` allows).
pub fn time_of_day(micros: i64) -> String {
    let (secs, us) = (micros / 1_000_000, micros % 1_000_000);
    format!("{:02}:{:02}:{:02}.{us:06}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Date and time of day of a timestamp in microseconds since 2000-01-01 (UTC for a
/// timestamptz); None when the date is outside years 1 to 9999.
pub fn timestamp_parts(micros_since_pg_epoch: i64) -> Option<(String, String)> {
    let unix = micros_since_pg_epoch.checked_add(PG_EPOCH_MICROS)?;
    let date = date_from_unix_days(unix.div_euclid(MICROS_PER_DAY))?;
    Some((date, time_of_day(unix.rem_euclid(MICROS_PER_DAY))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_at_the_edges() {
        assert_eq!(date_from_unix_days(0).unwrap(), "1970-01-01");
        assert_eq!(date_from_unix_days(PG_EPOCH_DAYS).unwrap(), "2000-01-01");
        assert_eq!(date_from_unix_days(-1).unwrap(), "1969-12-31");
        assert_eq!(date_from_unix_days(11_016).unwrap(), "2000-02-29"); // a leap day of a century year
        assert_eq!(date_from_unix_days(-25_508).unwrap(), "1900-03-01"); // 1900 is no leap year
        assert_eq!(date_from_unix_days(-719_162).unwrap(), "0001-01-01");
        assert_eq!(date_from_unix_days(-719_163), None); // 1 BC
        assert_eq!(date_from_unix_days(2_932_896).unwrap(), "9999-12-31");
        assert_eq!(date_from_unix_days(2_932_897), None);
        assert_eq!(date_from_unix_days(i64::MAX), None);
    }

    #[test]
    fn times_of_day() {
        assert_eq!(time_of_day(0), "00:00:00.000000");
        assert_eq!(time_of_day(1), "00:00:00.000001");
        assert_eq!(time_of_day(MICROS_PER_DAY - 1), "23:59:59.999999");
        assert_eq!(time_of_day(MICROS_PER_DAY), "24:00:00.000000");
    }

    #[test]
    fn timestamps_split_with_floor_division() {
        assert_eq!(timestamp_parts(0).unwrap(), ("2000-01-01".into(), "00:00:00.000000".into()));
        assert_eq!(timestamp_parts(-1).unwrap(), ("1999-12-31".into(), "23:59:59.999999".into()));
        assert_eq!(timestamp_parts(-PG_EPOCH_MICROS).unwrap(), ("1970-01-01".into(), "00:00:00.000000".into()));
        assert_eq!(timestamp_parts(i64::MAX), None);
    }
}
