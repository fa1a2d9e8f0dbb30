//! Postgres' numeric semantics that a DuckDB DECIMAL does not carry by itself.
//!
//! A Postgres numeric value has a display scale of its own (`1.50` and `1.5` are
//! equal but print differently), while a DuckDB DECIMAL has one scale per column.
//! Where every value of an expression has the same display scale (a column of type
//! numeric(p,s), a constant, `+ - *` of such), the DECIMAL's scale is it. Where it
//! varies from value to value (a CASE whose branches have different scales, a sum
//! of those, a quotient), the DECIMAL is chosen to hold every value exactly (so
//! comparisons and further arithmetic are exact) and, when the scale matters (an
//! output of the query), a second DuckDB expression computes each value's display
//! scale by Postgres' rules; Postgres then applies it with `round(value, scale)`,
//! which changes no digit of a value that has no more digits than that scale.
//!
//! Division follows `numeric_div` exactly: the quotient is rounded half away from
//! zero at the scale `select_div_scale` picks from the operands' leading base-10000
//! digits (at least 16 significant digits, and no less than either operand's
//! display scale), computed in DuckDB with 128-bit integer arithmetic on the
//! operands' unscaled integers. `avg` is Postgres' `sum / count` by that division.

use crate::query::typed::{Narrow, Ty, Typed};

/// How DuckDB SQL names values computed once, DuckDB's expressions having no `let`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A one-element `list_transform`: `list_transform([struct_pack(a := x)], lambda n: body)[1]`.
    Lambda,
    /// None: each use repeats the value's SQL, which DuckDB plans more slowly. DuckDB's
    /// binder refuses lambdas over aggregates in HAVING ("column a must appear in the
    /// GROUP BY clause"), and a scalar sub-select instead would bind `count(*)` to
    /// itself (one row) and run for every group, guarded or not.
    Repeated,
}

impl Binding {
    /// `body`, in which `name.field` is each of `fields` computed once (or written out
    /// in its place). The body is SQL this module wrote: the fields' values, which may
    /// hold a query's text, are put in, never searched.
    pub fn bind(self, fields: &[(&str, String)], name: &str, body: &str) -> String {
        match self {
            Binding::Lambda => {
                let fields: Vec<String> = fields.iter().map(|(f, v)| format!("{f} := {v}")).collect();
                format!("list_transform([struct_pack({})], lambda {name}: {body})[1]", fields.join(", "))
            }
            Binding::Repeated => substitute(body, name, fields),
        }
    }
}

/// `body` with each `name.field` (a whole identifier) replaced by `(value)`.
fn substitute(body: &str, name: &str, fields: &[(&str, String)]) -> String {
    let prefix = format!("{name}.");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(&prefix) {
        let before_ok = !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        let after = &rest[at + prefix.len()..];
        let field_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let field = &after[..field_len];
        match fields.iter().find(|(f, _)| *f == field) {
            Some((_, value)) if before_ok => {
                out.push_str(&rest[..at]);
                out.push_str(&format!("({value})"));
                rest = &after[field_len..];
            }
            _ => {
                out.push_str(&rest[..at + prefix.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Postgres' NUMERIC_MIN_SIG_DIGITS and NUMERIC_MAX_DISPLAY_SCALE (numeric.c, the same
/// in PostgreSQL 15 and 18).
const MIN_SIG_DIGITS: u32 = 16;
const MAX_DISPLAY_SCALE: u32 = 1000;

/// The DECIMAL scale a quotient is kept at must leave room for the 16 significant
/// digits Postgres computes for quotients near 1; below that, division is not pushed.
const MIN_QUOTIENT_SCALE: u32 = 20;

/// A power of ten as a HUGEINT; `exponent` is DuckDB SQL (an out-of-range power is a
/// conversion error, never a wrong value).
fn power_of_ten(exponent: &str) -> String {
    format!("CAST(rpad('1', ({exponent}) + 1, '0') AS HUGEINT)")
}

/// A numeric's value as the integer of its DECIMAL's digits (value × 10^scale). DuckDB
/// prints a DECIMAL with exactly its scale's decimals; multiplying by 10^scale instead
/// would overflow DuckDB's 38-digit product for a value of a wide scale (a quotient).
fn unscaled(t: &Typed) -> Option<String> {
    let (_, scale) = t.ty.decimal?;
    Some(if scale == 0 {
        format!("CAST({} AS HUGEINT)", t.sql)
    } else {
        format!("CAST(replace(CAST({} AS VARCHAR), '.', '') AS HUGEINT)", t.sql)
    })
}

/// Postgres' weight (position of the leading base-10000 digit) and that digit, of the
/// value whose unscaled integer is `unscaled` at `scale`; weight 0 and digit 0 for zero,
/// as `select_div_scale` takes them.
fn leading_digit(unscaled: &str, scale: u32) -> (String, String) {
    let digits = format!("CAST(abs({unscaled}) AS VARCHAR)");
    // The decimal exponent of the leading digit, and the base-10000 group it falls in.
    let exponent = format!("(length({digits}) - {})", scale + 1);
    let weight = format!("CAST(floor({exponent} / 4) AS INTEGER)");
    // The group's digits from the leading one down, padded with the zeros beyond the
    // value's last digit.
    let first = format!("CAST(left({digits} || '000', {exponent} - 4 * {weight} + 1) AS INTEGER)");
    (
        format!("(CASE WHEN {unscaled} = 0 THEN 0 ELSE {weight} END)"),
        format!("(CASE WHEN {unscaled} = 0 THEN 0 ELSE {first} END)"),
    )
}

/// Postgres' `a / b` for numerics, `int_digits` bounding the integer digits of any
/// quotient. `None` when that leaves a DECIMAL too narrow for its usual scales; a
/// quotient whose scale exceeds the DECIMAL's (a tiny nonzero quotient, 10^-8 or less
/// for the widest operands accepted) raises an error instead of being rounded.
///
/// Each intermediate value is bound once (see `Binding`): written out inline, as in
/// HAVING, the operands are repeated dozens of times and the SQL takes DuckDB longer
/// to plan than to run.
pub fn quotient(a: &Typed, b: &Typed, int_digits: u32, binding: Binding) -> Option<Typed> {
    let out_scale = 38u32.checked_sub(int_digits)?;
    if out_scale < MIN_QUOTIENT_SCALE {
        return None;
    }
    let (_, s1) = a.ty.decimal?;
    let (_, s2) = b.ty.decimal?;
    let (ds1, ds2) = (a.display_scale()?, b.display_scale()?);
    let (ua, ub) = (unscaled(a)?, unscaled(b)?);
    // pg_q1: the unscaled operands and display scales.
    let (w1, f1) = leading_digit("pg_q1.a", s1);
    let (w2, f2) = leading_digit("pg_q1.b", s2);
    let qweight = format!("({w1} - {w2} - CASE WHEN {f1} <= {f2} THEN 1 ELSE 0 END)");
    let rscale = format!("least(greatest({MIN_SIG_DIGITS} - 4 * {qweight}, pg_q1.ds1, pg_q1.ds2, 0), {MAX_DISPLAY_SCALE})");
    // pg_q2: the result scale r; |a/b| × 10^r = |A| × 10^k / |B| for the unscaled A and
    // B, k = r + s2 - s1.
    // k from r, not bound beside it: r's SQL is most of the quotient's, and DuckDB's
    // binding time grows faster than the SQL's length.
    let k = format!("(pg_q2.r + {})", s2 as i64 - s1 as i64);
    let d = format!("(CASE WHEN {k} >= 0 THEN abs(pg_q2.b) ELSE abs(pg_q2.b) * {} END)", power_of_ten(&format!("- {k}")));
    let m = power_of_ten(&format!("greatest({k}, 0)"));
    // pg_q3: long division by d, the remainder multiplied by m, so |A| × 10^k never forms.
    let remainder = "((abs(pg_q3.a) % pg_q3.d) * pg_q3.m)";
    let truncated = format!("((abs(pg_q3.a) // pg_q3.d) * pg_q3.m + {remainder} // pg_q3.d)");
    let rest = format!("({remainder} % pg_q3.d)");
    // Half away from zero, as Postgres' round_var; `rest >= d - rest` cannot overflow.
    let rounded = format!("({truncated} + CASE WHEN {rest} >= pg_q3.d - {rest} THEN 1 ELSE 0 END)");
    let signed = format!("(CASE WHEN pg_q3.negative THEN - {rounded} ELSE {rounded} END)");
    let one_unit = format!("0.{}1", "0".repeat(out_scale as usize - 1));
    let value = format!(
        "CAST({signed} * {} AS DECIMAL(38,0)) * CAST('{one_unit}' AS DECIMAL({out_scale},{out_scale}))",
        power_of_ten(&format!("{out_scale} - pg_q3.r"))
    );
    let divide = binding.bind(
        &[
            ("a", "pg_q2.a".into()),
            ("d", d),
            ("m", m),
            ("negative", "(pg_q2.a < 0) <> (pg_q2.b < 0)".into()),
            ("r", "pg_q2.r".into()),
        ],
        "pg_q3",
        &value,
    );
    // The scale is checked before d and m are formed (their powers of ten could not be).
    let scaled = binding.bind(
        &[
            ("a", "pg_q1.a".into()),
            ("b", "pg_q1.b".into()),
            ("r", rscale.clone()),
        ],
        "pg_q2",
        &format!(
            "CASE WHEN pg_q2.r > {out_scale} THEN error('a numeric quotient needs more than {out_scale} decimal digits; \
             run the query in Postgres (SET ducklake.query_pushdown = off)') ELSE {divide} END"
        ),
    );
    // Each operand once: NULL where it is (its unscaled integer is NULL then).
    let operands = [("a", ua), ("b", ub), ("ds1", ds1), ("ds2", ds2)];
    let sql = binding.bind(
        &operands,
        "pg_q1",
        &format!(
            "CAST((CASE WHEN pg_q1.a IS NULL OR pg_q1.b IS NULL THEN NULL \
             WHEN pg_q1.b = 0 THEN error('division by zero') ELSE {scaled} END) AS DECIMAL(38,{out_scale}))"
        ),
    );
    // The scale again, for outputs: it is small next to the value's SQL.
    let scale = binding.bind(&operands, "pg_q1", &rscale);
    Some(Typed::varying(sql, Ty::decimal(38, out_scale), Some(scale)))
}

/// `sum(x)` of a numeric whose SQL `wide` computes it in 128 bits, `narrow` being the
/// same value in DuckDB's 64-bit arithmetic. 128-bit products cost DuckDB ten times
/// more (TPC-H 1 at scale factor 1: 209 ms against 16 ms for
/// `sum(l_extendedprice * (1 - l_discount) * (1 + l_tax))`), so the 64-bit values are
/// summed for the rows where its guard holds, so that it cannot overflow, and the wide
/// ones for the rows where it fails: the two parts add up to the sum of all values.
/// Where the guard is NULL, a column is, and so is the value: it counts in neither.
///
/// The guards choose rows by CASE, not by TRY, which would also make the 64-bit form
/// NULL where it overflows: DuckDB's common-subexpression elimination moves a product
/// that two TRY expressions share out of both, where it raises, but it leaves the
/// branches of a CASE alone, as it must for their short-circuiting.
///
/// The second part tests the guard's negation written out, not `CASE WHEN guard THEN
/// NULL ELSE wide END`. With the same guard in both CASEs, that elimination computed
/// it once below them, before DuckDB's statistics could fold it: where the columns'
/// ranges prove it true (every TPC-H sum), it was still a column each CASE tested for
/// every row, and TPC-H 1 ran 20% slower than with the guard folded away.
/// `clauses` follows each call (FILTER).
pub fn sum_of_widened(narrow: &Narrow, wide: &str, clauses: &str) -> String {
    let Some(guard) = narrow.guard() else {
        return format!("sum({}){clauses}", narrow.sql);
    };
    let fast = format!("sum(CASE WHEN {} THEN {} END){clauses}", guard.holds, narrow.sql);
    let rest = format!("sum(CASE WHEN {} THEN {wide} END){clauses}", guard.fails);
    // NULL only when both are: no value was summed.
    format!("coalesce({fast} + {rest}, {fast}, {rest})")
}

/// `left <op> right` for two numerics, by value. DuckDB compares decimals in one
/// DECIMAL of the larger scale and the larger integer part. When that needs more than
/// 38 digits:
///
/// - If the operand with fewer integer digits (k of them) fits with the larger scale,
///   the other one, when its magnitude reaches 10^k, is beyond every value of the
///   first, and its sign decides (`big op small` is `big op 0`); below 10^k both fit
///   DECIMAL(k + scale, scale) and are compared there. TPC-H 11 compares a sum of
///   36 integer digits with one scaled by 0.0001 (scale 12).
/// - Else the integer parts (floor) and the fractions (in [0, 1)) are compared apart,
///   each fitting (a 10-digit integer against a quotient of scale 29 with as many
///   integer digits). DuckDB took a third of TPC-H 11's time on it.
///
/// The operands are bound once where DuckDB can (see `Binding`): written out in each
/// comparison, a scalar sub-select among them was run three times (TPC-H 17 scanned
/// `lineitem` four times instead of twice).
pub fn comparison(op: &str, left: &Typed, right: &Typed, binding: Binding) -> Option<String> {
    let ((w1, s1), (w2, s2)) = (left.ty.decimal?, right.ty.decimal?);
    let scale = s1.max(s2);
    let (i1, i2) = (w1 - s1, w2 - s2);
    if i1.max(i2) + scale <= 38 {
        return Some(format!("({} {op} {})", left.sql, right.sql));
    }
    let narrower = i1.min(i2);
    let body = |l: &str, r: &str| {
        if narrower + scale <= 38 {
            let (big, small, big_is_left) = if i1 > i2 { (l, r, true) } else { (r, l, false) };
            // 10^k has k + 1 integer digits, at most the big operand's: compared in its type.
            let bound = format!("CAST('1{}' AS DECIMAL({},0))", "0".repeat(narrower as usize), narrower + 1);
            let zero = "CAST(0 AS DECIMAL(1,0))";
            let by_sign = if big_is_left { format!("{big} {op} {zero}") } else { format!("{zero} {op} {big}") };
            let fitted = |side: &str| format!("CAST({side} AS DECIMAL({},{scale}))", narrower + scale);
            // A NULL operand makes the comparison NULL, whatever the sign of the other.
            return format!(
                "(CASE WHEN {small} IS NULL THEN NULL WHEN abs({big}) >= {bound} THEN {by_sign} ELSE {} {op} {} END)",
                fitted(l),
                fitted(r)
            );
        }
        let whole = |side: &str| format!("CAST(floor({side}) AS DECIMAL(38,0))");
        let fraction = |side: &str| format!("CAST({side} - floor({side}) AS DECIMAL({scale},{scale}))");
        let (wl, wr, fl, fr) = (whole(l), whole(r), fraction(l), fraction(r));
        match op {
            "=" => format!("({wl} = {wr} AND {fl} = {fr})"),
            "<>" => format!("({wl} <> {wr} OR {fl} <> {fr})"),
            _ => format!("(CASE WHEN {wl} <> {wr} THEN {wl} {op} {wr} ELSE {fl} {op} {fr} END)"),
        }
    };
    Some(binding.bind(&[("l", left.sql.clone()), ("r", right.sql.clone())], "pg_c", &body("pg_c.l", "pg_c.r")))
}

/// The integer digits a numeric of DECIMAL(width, scale) can have.
pub fn integer_digits(ty: Ty) -> Option<u32> {
    if crate::scan::deparse::is_integer(ty.oid) {
        return Some(match ty.oid {
            pgrx::pg_sys::INT2OID => 5,
            pgrx::pg_sys::INT4OID => 10,
            _ => 19,
        });
    }
    ty.decimal.map(|(w, s)| w - s)
}

/// Branches of a CASE or COALESCE as one type, and when numeric scales vary, the
/// scale expression `scale_of` makes of the branches' ones (when all are known), the
/// way the construct chooses its value. Numerics of different (or varying) scales
/// are cast to one DECIMAL holding them all. Other types must agree (text and
/// varchar are one type in DuckDB).
pub fn common_type(items: &mut [Typed], scale_of: impl FnOnce(&[String]) -> String) -> Option<(Ty, Option<String>)> {
    let first = items.first()?.ty;
    if first.oid != pgrx::pg_sys::NUMERICOID {
        let agree = items.iter().all(|i| crate::scan::deparse::one_type_in_duckdb(i.ty.oid, first.oid));
        return agree.then_some((first, None));
    }
    let decimals = items.iter().map(|i| (i.ty.oid == first.oid).then_some(i.ty.decimal).flatten()).collect::<Option<Vec<_>>>()?;
    let scale = decimals.iter().map(|(_, s)| *s).max()?;
    let integers = decimals.iter().map(|(w, s)| w - s).max()?;
    if integers + scale > 38 {
        return None;
    }
    let varying = items.iter().any(|i| i.ty.varying) || decimals.iter().any(|(_, s)| *s != scale);
    let ty = Ty::decimal(integers + scale, scale);
    if !varying {
        return Some((ty, None));
    }
    let scales = items.iter().map(Typed::display_scale).collect::<Option<Vec<_>>>();
    for item in items.iter_mut() {
        item.sql = format!("CAST({} AS DECIMAL({},{scale}))", item.sql, integers + scale);
        item.narrow = None;
    }
    Some((Ty { varying: true, ..ty }, scales.map(|s| scale_of(&s))))
}
