//! What a translated expression is: DuckDB SQL and the Postgres type of its value,
//! with numeric details (the DECIMAL computing it, and whether its display scale varies).

use pgrx::pg_sys::{self, Oid};

use crate::query::magnitude::{self, Magnitude};
use crate::scan::deparse::{is_integer, is_pushable_type};

/// A translated expression: DuckDB SQL and what Postgres' value is.
#[derive(Clone, Debug)]
pub struct Typed {
    pub sql: String,
    pub ty: Ty,
    /// For a numeric of varying display scale (`Ty::varying`): DuckDB SQL giving each
    /// value's Postgres display scale, when it is known (see `numeric`).
    pub scale: Option<String>,
    /// This value in DuckDB's 64-bit arithmetic, for numerics and integers built from
    /// columns and constants by casts, `+ - *` and negation alone. It differs from
    /// `sql` where that computes in 128 bits because the value could pass 18 digits.
    /// Any other construct over this value leaves it unset, so it is NULL exactly
    /// where one of its columns is (`numeric::sum_of_widened` relies on it).
    pub narrow: Option<Narrow>,
}

impl Typed {
    pub fn new(sql: String, ty: Ty) -> Typed {
        Typed { sql, ty, scale: None, narrow: None }
    }

    /// A numeric whose display scale varies from value to value, given by `scale`.
    pub fn varying(sql: String, ty: Ty, scale: Option<String>) -> Typed {
        Typed { sql, ty: Ty { varying: true, ..ty }, scale, narrow: None }
    }

    /// DuckDB SQL for Postgres' display scale of each value: integers have none, a
    /// numeric of one scale has it, a varying one has its scale expression.
    pub fn display_scale(&self) -> Option<String> {
        if is_integer(self.ty.oid) {
            return Some("0".into());
        }
        match (self.ty.varying, self.ty.decimal) {
            (false, Some((_, s))) => Some(s.to_string()),
            (true, Some(_)) => self.scale.clone(),
            _ => None,
        }
    }

    /// A column or an integer constant: its SQL is its own 64-bit form when it is an
    /// integer or a numeric of at most 18 digits.
    pub fn plain(self) -> Typed {
        let most = match (self.ty.oid, self.ty.decimal) {
            (pg_sys::INT2OID, _) => Some(32768.0),
            (pg_sys::INT4OID, _) => Some(2f64.powi(31)),
            (pg_sys::INT8OID, _) => Some(2f64.powi(63)),
            (_, Some((width, scale))) if width <= 18 => Some(10f64.powi((width - scale) as i32)),
            _ => None,
        };
        let narrow = most.map(|most| Narrow::column(&self.sql, most));
        Typed { narrow, ..self }
    }
}

/// A value in DuckDB's 64-bit DECIMAL arithmetic, which raises where a result, or an
/// operand DuckDB rescales to the larger scale of `+`/`-`, passes 18 digits (see
/// `numeric::sum_of_widened`).
#[derive(Clone, Debug)]
pub struct Narrow {
    pub sql: String,
    /// Its columns: their SQL and the largest magnitude their types hold.
    columns: Vec<(String, f64)>,
    /// A bound of its magnitude over its columns' (see `magnitude`).
    magnitude: Magnitude,
    /// The bounds that must stay below their limits for `sql` not to overflow: one per
    /// operation whose result could pass 18 digits.
    limits: Vec<(Magnitude, f64)>,
}

impl Narrow {
    pub fn column(sql: &str, most: f64) -> Narrow {
        Narrow { sql: sql.to_owned(), columns: vec![(sql.to_owned(), most)], magnitude: Magnitude::Column(0), limits: Vec::new() }
    }

    /// A numeric constant of magnitude `value`.
    pub fn constant(sql: &str, value: f64) -> Narrow {
        Narrow { sql: sql.to_owned(), columns: Vec::new(), magnitude: Magnitude::Constant(value), limits: Vec::new() }
    }

    /// An integer constant.
    pub fn integer(sql: &str, value: i64) -> Narrow {
        let magnitude = value.unsigned_abs() as f64;
        // Rounded to the nearest DOUBLE, which may be below it past 2^53: a bound must not be.
        let bound = if value.unsigned_abs() > 1u64 << 53 { magnitude.next_up() } else { magnitude };
        Narrow::constant(sql, bound)
    }

    /// `self op other`, a result of `scale` decimals that may pass 18 digits when
    /// `may_overflow`. Its limit is half the 64-bit range at that scale, which also
    /// holds each operand, so DuckDB's rescaling of an operand of `+`/`-` to that
    /// scale fits too.
    pub fn combine(&self, op: &str, other: &Narrow, scale: u32, may_overflow: bool) -> Narrow {
        let shift = self.columns.len();
        let (left, right) = (Box::new(self.magnitude.clone()), Box::new(other.magnitude.shifted(shift)));
        let magnitude = if op == "*" { Magnitude::Product(left, right) } else { Magnitude::Sum(left, right) };
        let mut limits = self.limits.clone();
        limits.extend(other.limits.iter().map(|(m, l)| (m.shifted(shift), *l)));
        if may_overflow {
            limits.push((magnitude.clone(), 5.0 * 10f64.powi(17 - scale as i32)));
        }
        let columns = [self.columns.clone(), other.columns.clone()].concat();
        Narrow { sql: format!("({} {op} {})", self.sql, other.sql), columns, magnitude, limits }
    }

    /// The same value's bounds over SQL `sql` applied to this one's.
    pub fn map(&self, sql: impl FnOnce(&str) -> String) -> Narrow {
        Narrow { sql: sql(&self.sql), ..self.clone() }
    }

    /// A condition under which `sql` does not overflow (None: it never does): bounds of
    /// each column, one of them allowed as much as the limits leave when the others
    /// are at most 1000 (`magnitude::one_large`), else the bound in DOUBLE.
    pub fn guard(&self) -> Option<Guard> {
        if self.limits.is_empty() {
            return None;
        }
        // What the columns but one are allowed (`magnitude::one_large`).
        const SMALL: f64 = 1000.0;
        let most: Vec<f64> = self.columns.iter().map(|(_, m)| *m).collect();
        // Each alternative as its conditions, each condition as (holds, fails).
        let mut alternatives: Vec<Vec<(String, String)>> = Vec::new();
        for large in 0..self.columns.len() {
            let Some(allowed) = magnitude::one_large(&self.limits, &most, large, SMALL) else { continue };
            let mut conditions = Vec::new();
            for (j, (sql, most)) in self.columns.iter().enumerate() {
                let bound = if j == large { allowed } else { SMALL.min(*most) };
                if bound < *most {
                    let k = bound.floor();
                    conditions.push((
                        format!("{sql} BETWEEN -{k:.0} AND {k:.0}"),
                        format!("{sql} < -{k:.0} OR {sql} > {k:.0}"),
                    ));
                }
            }
            if conditions.is_empty() {
                return None; // the types alone keep it inside
            }
            if !alternatives.contains(&conditions) {
                alternatives.push(conditions);
            }
        }
        let magnitudes: Vec<String> = self.columns.iter().map(|(sql, _)| format!("abs(CAST({sql} AS DOUBLE))")).collect();
        alternatives.push(
            self.limits
                .iter()
                .map(|(m, limit)| {
                    let bound = m.sql(&magnitudes);
                    (format!("{bound} < {limit:e}"), format!("{bound} >= {limit:e}"))
                })
                .collect(),
        );
        let holds = alternatives.iter().map(|conditions| {
            let all: Vec<&str> = conditions.iter().map(|(holds, _)| holds.as_str()).collect();
            format!("({})", all.join(" AND "))
        });
        let fails = alternatives.iter().map(|conditions| {
            let any: Vec<&str> = conditions.iter().map(|(_, fails)| fails.as_str()).collect();
            format!("({})", any.join(" OR "))
        });
        Some(Guard {
            holds: format!("({})", holds.collect::<Vec<_>>().join(" OR ")),
            fails: format!("({})", fails.collect::<Vec<_>>().join(" AND ")),
        })
    }
}

/// When a 64-bit form cannot overflow, and its negation written out by De Morgan's
/// laws, in SQL's three-valued logic: for any row, `fails` is NOT `holds`, so both are
/// NULL together, only where a column is NULL (and with it the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub holds: String,
    pub fails: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ty {
    pub oid: Oid,
    /// For numeric: the DuckDB DECIMAL(width, scale) computing it, whose scale is
    /// Postgres' display scale of every value unless `varying`.
    pub decimal: Option<(u32, u32)>,
    /// A numeric whose values have different display scales in Postgres (a CASE of
    /// branches of different scales, a quotient): the DECIMAL holds each value
    /// exactly, so comparisons and arithmetic are exact, but the DuckDB value alone
    /// does not say how Postgres prints it.
    pub varying: bool,
}

impl Ty {
    pub fn of(oid: Oid) -> Ty {
        Ty { oid, decimal: None, varying: false }
    }

    pub fn decimal(width: u32, scale: u32) -> Ty {
        Ty { oid: pg_sys::NUMERICOID, decimal: Some((width.min(38), scale)), varying: false }
    }

    /// The type of a foreign table column as `kind::comparable_expression` reads it.
    pub fn column(oid: Oid, typmod: i32) -> Option<Ty> {
        if oid == pg_sys::NUMERICOID {
            const VARHDRSZ: i32 = 4;
            if typmod < VARHDRSZ {
                return None; // the lake's own scale, unknown here
            }
            let precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
            let scale = (((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024;
            return (precision <= 38 && (0..=precision).contains(&scale))
                .then(|| Ty::decimal(precision as u32, scale as u32));
        }
        is_pushable_type(oid).then(|| Ty::of(oid))
    }
}

pub fn typed(sql: String, ty: Ty) -> Option<Typed> {
    Some(Typed::new(sql, ty))
}

/// Types whose equality (GROUP BY, DISTINCT, joins) is the same in DuckDB. Floats
/// are left out: Postgres groups all NaNs together and -0 with 0.
pub fn groupable(ty: Ty) -> bool {
    is_pushable_type(ty.oid) && !matches!(ty.oid, pg_sys::FLOAT4OID | pg_sys::FLOAT8OID)
}
