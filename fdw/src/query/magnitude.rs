//! Upper bounds of a numeric expression's magnitude, from bounds of its columns', for
//! the guards that let a sum add 64-bit decimal values (see `numeric::sum_of_widened`).
//!
//! A value built from columns and constants by `+ - *` is at most, in magnitude, the
//! same expression over the operands' magnitudes with `-` read as `+`: a polynomial
//! with non-negative coefficients, increasing in every column's magnitude. Two guards
//! follow from it, each sufficient for every operation to stay inside its limit:
//!
//! - in DOUBLE, per row: the polynomial of the columns' own magnitudes (non-negative
//!   terms, so rounding errs by a few units in 10^15 of the bound, inside the limit's
//!   factor of 2);
//! - by plain comparisons of each column with a constant (`c BETWEEN -k AND k`), with
//!   one column allowed far more than the others (1000): where the lake's column statistics
//!   show every row inside, DuckDB folds the comparison to true and the guard costs
//!   nothing (TPC-H 1: 19 ms where the DOUBLE guard took 60).

/// A bound of a magnitude over the magnitudes of columns numbered from 0.
#[derive(Clone, Debug)]
pub enum Magnitude {
    Column(usize),
    Constant(f64),
    Sum(Box<Magnitude>, Box<Magnitude>),
    Product(Box<Magnitude>, Box<Magnitude>),
}

impl Magnitude {
    /// The same bound with its columns numbered from `by` on.
    pub fn shifted(&self, by: usize) -> Magnitude {
        match self {
            Magnitude::Column(i) => Magnitude::Column(i + by),
            Magnitude::Constant(v) => Magnitude::Constant(*v),
            Magnitude::Sum(a, b) => Magnitude::Sum(Box::new(a.shifted(by)), Box::new(b.shifted(by))),
            Magnitude::Product(a, b) => Magnitude::Product(Box::new(a.shifted(by)), Box::new(b.shifted(by))),
        }
    }

    /// Its value for the columns' magnitudes `columns`.
    pub fn at(&self, columns: &[f64]) -> f64 {
        match self {
            Magnitude::Column(i) => columns[*i],
            Magnitude::Constant(v) => *v,
            Magnitude::Sum(a, b) => a.at(columns) + b.at(columns),
            Magnitude::Product(a, b) => a.at(columns) * b.at(columns),
        }
    }

    /// DuckDB SQL computing it in DOUBLE, `columns` being each column's magnitude.
    pub fn sql(&self, columns: &[String]) -> String {
        match self {
            Magnitude::Column(i) => columns[*i].clone(),
            Magnitude::Constant(v) => format!("{v:e}"),
            Magnitude::Sum(a, b) => format!("({} + {})", a.sql(columns), b.sql(columns)),
            Magnitude::Product(a, b) => format!("({} * {})", a.sql(columns), b.sql(columns)),
        }
    }
}

/// For every bound in `limits` to stay below its limit: per column, the largest
/// magnitude it may have (up to `most`, what its type holds) when every other column
/// has at most `small` (or what its type holds, if less). `None` when the others at
/// `small` already break a limit.
pub fn one_large(limits: &[(Magnitude, f64)], most: &[f64], large: usize, small: f64) -> Option<f64> {
    let mut columns: Vec<f64> = most.iter().map(|m| m.min(small)).collect();
    let holds = |columns: &[f64]| limits.iter().all(|(bound, limit)| bound.at(columns) < *limit);
    if !holds(&columns) {
        return None;
    }
    columns[large] = most[large];
    if holds(&columns) {
        return Some(most[large]);
    }
    // Bisection on the exponent between what holds and what does not: every bound
    // increases with the column.
    let (mut low, mut high) = (most[large].min(small).max(f64::MIN_POSITIVE).log10(), most[large].log10());
    for _ in 0..80 {
        let middle = (low + high) / 2.0;
        columns[large] = 10f64.powf(middle);
        if holds(&columns) {
            low = middle;
        } else {
            high = middle;
        }
    }
    // A margin far beyond the bisection's and DOUBLE's own errors.
    Some(10f64.powf(low) * (1.0 - 1e-6))
}
