//! Whether a refresh with changes to fold in should rebuild instead.
//!
//! A differential refresh costs what its terms read, and a lake has no index: the
//! term of one source's changes reads the other sources whole (as they are or as
//! they were), and DuckLake reads a deleted row's values by scanning its data file.
//! Over joins of large tables that can cost more than a rebuild, which reads each
//! source once. Both are exact, so each stream table's last differential and last
//! full refresh are timed, and a refresh rebuilds when the differential one took
//! longer. A differential refresh's cost follows the size of the change, which
//! varies, so one is tried again after `RETRY_AFTER` rebuilds chosen in a row.

/// What the catalog recorded of a stream table's refreshes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshCosts {
    /// The duration of its last full refresh (any: at creation, asked for, chosen).
    pub full_ms: Option<f64>,
    /// The duration of its last differential refresh that had changes to read.
    pub differential_ms: Option<f64>,
    /// Refreshes in a row that rebuilt because that was cheaper.
    pub rebuilds_chosen: i32,
}

/// After this many rebuilds chosen in a row, a differential refresh is tried again.
pub const RETRY_AFTER: i32 = 8;

impl RefreshCosts {
    /// Whether a refresh that could fold changes in differentially should rebuild.
    pub fn rebuild_is_cheaper(&self) -> bool {
        match (self.full_ms, self.differential_ms) {
            (Some(full), Some(differential)) => differential > full && self.rebuilds_chosen < RETRY_AFTER,
            _ => false,
        }
    }
}

/// How a refresh that did something ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    Differential,
    /// Rebuilt; `chosen` when a differential refresh was possible and costlier.
    Rebuilt { chosen: bool },
}

impl Ran {
    /// The catalog's `last_refresh_mode`.
    pub fn mode(self) -> &'static str {
        match self {
            Ran::Differential => "DIFFERENTIAL",
            Ran::Rebuilt { .. } => "FULL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(full: Option<f64>, differential: Option<f64>, rebuilds_chosen: i32) -> RefreshCosts {
        RefreshCosts { full_ms: full, differential_ms: differential, rebuilds_chosen }
    }

    #[test]
    fn differential_until_both_were_timed() {
        assert!(!costs(None, None, 0).rebuild_is_cheaper());
        assert!(!costs(Some(10.0), None, 0).rebuild_is_cheaper());
        assert!(!costs(None, Some(10.0), 0).rebuild_is_cheaper());
    }

    #[test]
    fn rebuilds_while_the_differential_refresh_took_longer() {
        assert!(costs(Some(10.0), Some(10.5), 0).rebuild_is_cheaper());
        assert!(!costs(Some(10.0), Some(10.0), 0).rebuild_is_cheaper());
        assert!(!costs(Some(10.0), Some(2.0), 0).rebuild_is_cheaper());
    }

    #[test]
    fn tries_differential_again_after_retry_after_rebuilds() {
        assert!(costs(Some(1.0), Some(9.0), RETRY_AFTER - 1).rebuild_is_cheaper());
        assert!(!costs(Some(1.0), Some(9.0), RETRY_AFTER).rebuild_is_cheaper());
    }
}
