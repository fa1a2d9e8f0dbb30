//! A DECIMAL's value as text that Postgres' numeric input reads exactly.

/// The digits of a DECIMAL's unscaled `value` at `scale`, every one of them, with the
/// scale's digits after the point (the display scale). Arrow's own formatting cuts the
/// digits to the type's precision, and DuckDB's decimal sum checks only its 128-bit
/// range: a DECIMAL(38) sum can hold 39 digits.
pub fn decimal_text(value: i128, scale: i8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = if value == 0 { 0 } else { scale.unsigned_abs() as usize };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::decimal_text;

    #[test]
    fn edge_values() {
        assert_eq!(decimal_text(0, 0), "0");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(5, 2), "0.05");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(-150, 2), "-1.50");
        assert_eq!(decimal_text(123, 0), "123");
        assert_eq!(decimal_text(-7, 0), "-7");
        assert_eq!(decimal_text(12, -2), "1200");
        assert_eq!(decimal_text(1, 38), "0.00000000000000000000000000000000000001");
        // past 38 digits, as a DuckDB DECIMAL(38) sum may be, and the 128-bit extremes
        assert_eq!(decimal_text(108 * 10i128.pow(36), 0), "108000000000000000000000000000000000000");
        assert_eq!(decimal_text(i128::MAX, 4), "17014118346046923173168730371588410.5727");
        assert_eq!(decimal_text(i128::MIN, 0), "-170141183460469231731687303715884105728");
    }
}
