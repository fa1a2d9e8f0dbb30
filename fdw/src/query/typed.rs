//! What a translated expression is: DuckDB SQL and the Postgres type of its value,
//! with numeric details (the DECIMAL computing it, and whether its display scale varies).

use pgrx::pg_sys::{self, Oid};

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
    /// Any other construct over this value leaves it unset.
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

    /// A column or a constant: its SQL is its own 64-bit form when it is an integer or
    /// a numeric of at most 18 digits.
    pub fn plain(self) -> Typed {
        let fits = is_integer(self.ty.oid) || matches!(self.ty.decimal, Some((width, _)) if width <= 18);
        let narrow = fits.then(|| Narrow { sql: self.sql.clone(), bound: format!("abs(CAST({} AS DOUBLE))", self.sql), guards: Vec::new() });
        Typed { narrow, ..self }
    }
}

/// A value in DuckDB's 64-bit DECIMAL arithmetic, which raises where a result, or an
/// operand DuckDB rescales to the larger scale of `+`/`-`, passes 18 digits (see
/// `numeric::sum_of_widened`).
#[derive(Clone, Debug)]
pub struct Narrow {
    pub sql: String,
    /// An upper bound of the value's magnitude in DOUBLE: a column's or constant's own,
    /// the sum of the operands' bounds for `+`/`-`, their product for `*`. Every term is
    /// non-negative, so rounding errs relative to the bound itself, never by more than
    /// a few units in 10^15 of it; a signed DOUBLE of the value would not do, since the
    /// difference of two nearly equal 18-digit numbers can round to zero.
    pub bound: String,
    /// Conditions under which `sql` does not overflow: one per operation whose result
    /// could pass 18 digits.
    pub guards: Vec<String>,
}

impl Narrow {
    /// `self op other`, a result of `scale` decimals that may pass 18 digits when
    /// `may_overflow`. Its guard asks the bound for half the 64-bit range at that
    /// scale, which also holds each operand, so DuckDB's rescaling of an operand of
    /// `+`/`-` to that scale fits too.
    pub fn combine(&self, op: &str, other: &Narrow, scale: u32, may_overflow: bool) -> Narrow {
        let bound = match op {
            "*" => format!("({} * {})", self.bound, other.bound),
            _ => format!("({} + {})", self.bound, other.bound),
        };
        let mut guards = [self.guards.clone(), other.guards.clone()].concat();
        if may_overflow {
            guards.push(format!("{bound} < 5e{}", 17 - scale as i32));
        }
        Narrow { sql: format!("({} {op} {})", self.sql, other.sql), bound, guards }
    }

    /// The same bound and guards over SQL `sql` applied to this one's.
    pub fn map(&self, sql: impl FnOnce(&str) -> String) -> Narrow {
        Narrow { sql: sql(&self.sql), bound: self.bound.clone(), guards: self.guards.clone() }
    }
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
