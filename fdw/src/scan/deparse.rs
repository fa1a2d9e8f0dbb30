//! Postgres expressions over one foreign table, translated to DuckDB SQL.
//!
//! Only constructs whose DuckDB meaning is the Postgres meaning are translated;
//! anything else makes `deparse` return `None` and the expression stays with
//! Postgres. Pushed:
//! - column references of scalar types (bool, integers, floats, numeric, text,
//!   date/time/timestamp(tz), interval, uuid, bytea), constants and parameters of those types;
//! - `= <> < <= > >=` between them; for text and bytea only where ordering is
//!   collation-independent: equality under a deterministic collation, ordering
//!   under a collation that sorts bytewise as DuckDB does (`scan::collation`);
//! - `LIKE`/`NOT LIKE` (with Postgres' backslash escape made explicit) and
//!   `ILIKE`/`NOT ILIKE` on text, the latter where Postgres lowers as DuckDB does;
//! - `IN`/`NOT IN` lists (`= ANY(array)`, `<> ALL(array)`), `IS [NOT] NULL`,
//!   `IS [NOT] TRUE/FALSE`, `AND`, `OR`, `NOT`, and binary-compatible casts.
//!
//! Parameters (`$1` of a prepared statement, or the outer value of a nested loop)
//! become DuckDB parameters; the expressions that compute them are kept in
//! `params` and evaluated by the executor at every (re)scan.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Node, NodeTag, Oid};
use pgrx::FromDatum;

use ducklake_formats::calendar;

use crate::duck::sql;
use crate::scan::collation::{collation_is_deterministic, collation_lowers_as_duckdb, collation_sorts_bytewise};
use crate::pg_nodes::list_nodes;

/// A column of the scanned relation as conditions see it.
#[derive(Clone, Debug)]
pub struct ColumnRef {
    /// DuckDB expression for the value as Postgres sees it (see
    /// `kind::comparable_expression`); `None` when it cannot be compared in DuckDB.
    pub expr: Option<String>,
}

pub struct Deparser<'a> {
    /// Range-table index of the scanned relation.
    pub varno: pg_sys::Index,
    pub columns: &'a dyn Fn(i16) -> Option<ColumnRef>,
    /// Expressions evaluated at execution time, bound as `$1`, `$2`, ...
    pub params: Vec<*mut pg_sys::Expr>,
}

impl Deparser<'_> {
    /// DuckDB SQL for a boolean condition, or `None` if any part cannot be pushed.
    ///
    /// # Safety
    /// `node` must be a valid expression tree of the relation being planned.
    pub unsafe fn condition(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            let saved = self.params.len();
            let result = self.bool_expr(node);
            if result.is_none() {
                self.params.truncate(saved);
            }
            result
        }
    }

    unsafe fn bool_expr(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            if node.is_null() {
                return None;
            }
            match (*node).type_ {
                NodeTag::T_BoolExpr => {
                    let b = node as *mut pg_sys::BoolExpr;
                    let args = list_nodes((*b).args);
                    let mut parts = Vec::with_capacity(args.len());
                    for arg in args {
                        parts.push(self.bool_expr(arg)?);
                    }
                    match (*b).boolop {
                        pg_sys::BoolExprType::AND_EXPR => Some(format!("({})", parts.join(" AND "))),
                        pg_sys::BoolExprType::OR_EXPR => Some(format!("({})", parts.join(" OR "))),
                        pg_sys::BoolExprType::NOT_EXPR => Some(format!("(NOT {})", parts.first()?)),
                        _ => None,
                    }
                }
                NodeTag::T_OpExpr => self.op_expr(node as *mut pg_sys::OpExpr),
                NodeTag::T_ScalarArrayOpExpr => self.array_op_expr(node as *mut pg_sys::ScalarArrayOpExpr),
                NodeTag::T_NullTest => {
                    let t = node as *mut pg_sys::NullTest;
                    if (*t).argisrow {
                        return None;
                    }
                    let arg = self.value((*t).arg.cast())?;
                    Some(match (*t).nulltesttype {
                        pg_sys::NullTestType::IS_NULL => format!("({arg} IS NULL)"),
                        _ => format!("({arg} IS NOT NULL)"),
                    })
                }
                NodeTag::T_BooleanTest => {
                    let t = node as *mut pg_sys::BooleanTest;
                    let arg = self.value((*t).arg.cast())?;
                    use pg_sys::BoolTestType::*;
                    Some(match (*t).booltesttype {
                        IS_TRUE => format!("({arg} IS NOT DISTINCT FROM TRUE)"),
                        IS_NOT_TRUE => format!("({arg} IS DISTINCT FROM TRUE)"),
                        IS_FALSE => format!("({arg} IS NOT DISTINCT FROM FALSE)"),
                        IS_NOT_FALSE => format!("({arg} IS DISTINCT FROM FALSE)"),
                        IS_UNKNOWN => format!("({arg} IS NULL)"),
                        IS_NOT_UNKNOWN => format!("({arg} IS NOT NULL)"),
                        _ => return None,
                    })
                }
                // A bare boolean column or constant.
                _ if expr_type(node) == pg_sys::BOOLOID => self.value(node),
                _ => None,
            }
        }
    }

    unsafe fn op_expr(&mut self, op: *mut pg_sys::OpExpr) -> Option<String> {
        unsafe {
            let args = list_nodes((*op).args);
            let [left, right] = args.as_slice() else { return None };
            let name = builtin_operator_name((*op).opno)?;
            let (lt, rt) = (expr_type(*left), expr_type(*right));
            let collation = (*op).inputcollid;
            // Text without a collation: implicit ones in conflict, which Postgres raises on.
            if (is_collatable(lt) || is_collatable(rt)) && collation == pg_sys::InvalidOid {
                return None;
            }
            let sql_op = match name.as_str() {
                "=" | "<>" => {
                    if is_collatable(lt) && !collation_is_deterministic(collation) {
                        return None;
                    }
                    name.as_str()
                }
                "<" | "<=" | ">" | ">=" => {
                    if (is_collatable(lt) || is_collatable(rt)) && !collation_sorts_bytewise(collation) {
                        return None;
                    }
                    name.as_str()
                }
                "~~" | "!~~" | "~~*" | "!~~*" => {
                    if lt != pg_sys::TEXTOID && lt != pg_sys::VARCHAROID {
                        return None;
                    }
                    if !collation_is_deterministic(collation) {
                        return None;
                    }
                    if name.ends_with('*') && !collation_lowers_as_duckdb(collation) {
                        return None;
                    }
                    let pattern = self.value(*right)?;
                    let left = self.value(*left)?;
                    let keyword = match name.as_str() {
                        "~~" => "LIKE",
                        "!~~" => "NOT LIKE",
                        "~~*" => "ILIKE",
                        _ => "NOT ILIKE",
                    };
                    return Some(like(&left, keyword, &pattern, *right));
                }
                _ => return None,
            };
            if !comparable(lt, rt) {
                return None;
            }
            let left = self.value(*left)?;
            let right = self.value(*right)?;
            Some(format!("({left} {sql_op} {right})"))
        }
    }

    unsafe fn array_op_expr(&mut self, op: *mut pg_sys::ScalarArrayOpExpr) -> Option<String> {
        unsafe {
            let args = list_nodes((*op).args);
            let [left, right] = args.as_slice() else { return None };
            let name = builtin_operator_name((*op).opno)?;
            let keyword = match (name.as_str(), (*op).useOr) {
                ("=", true) => "IN",
                ("<>", false) => "NOT IN",
                _ => return None,
            };
            let lt = expr_type(*left);
            if is_collatable(lt) && !collation_is_deterministic((*op).inputcollid) {
                return None;
            }
            // Each element is compared with the left side as by the plain operator:
            // the same type-family rule applies (`timestamp IN (timestamptz, ...)`
            // converts with TimeZone in Postgres, in UTC in DuckDB).
            if !comparable(lt, pg_sys::get_element_type(expr_type(*right))) {
                return None;
            }
            let left_sql = self.value(*left)?;
            let elements = self.array_elements(*right)?;
            if elements.is_empty() {
                // x = ANY('{}') is false, x <> ALL('{}') is true, even for NULL x.
                return Some(if keyword == "IN" { "FALSE".into() } else { "TRUE".into() });
            }
            Some(format!("({left_sql} {keyword} ({}))", elements.join(", ")))
        }
    }

    /// Elements of a constant array or an ARRAY[...] of pushable values.
    pub unsafe fn array_elements(&mut self, node: *mut Node) -> Option<Vec<String>> {
        unsafe {
            match (*node).type_ {
                NodeTag::T_Const => {
                    let c = node as *mut pg_sys::Const;
                    if (*c).constisnull {
                        return None;
                    }
                    let element_type = pg_sys::get_element_type((*c).consttype);
                    if element_type == pg_sys::InvalidOid || !is_pushable_type(element_type) {
                        return None;
                    }
                    let array = pgrx::AnyArray::from_polymorphic_datum((*c).constvalue, false, (*c).consttype)?;
                    let (mut len, mut by_val, mut align) = (0i16, false, 0 as std::ffi::c_char);
                    pg_sys::get_typlenbyvalalign(element_type, &mut len, &mut by_val, &mut align);
                    let mut values: *mut pg_sys::Datum = std::ptr::null_mut();
                    let mut nulls: *mut bool = std::ptr::null_mut();
                    let mut count = 0;
                    pg_sys::deconstruct_array(
                        array.datum().cast_mut_ptr(),
                        element_type,
                        len as i32,
                        by_val,
                        align,
                        &mut values,
                        &mut nulls,
                        &mut count,
                    );
                    (0..count as usize)
                        .map(|i| {
                            if *nulls.add(i) {
                                Some("NULL".to_owned())
                            } else {
                                literal(*values.add(i), element_type)
                            }
                        })
                        .collect()
                }
                NodeTag::T_ArrayExpr => {
                    let a = node as *mut pg_sys::ArrayExpr;
                    if (*a).multidims {
                        return None;
                    }
                    list_nodes((*a).elements).into_iter().map(|e| self.value(e)).collect()
                }
                _ => None,
            }
        }
    }

    /// DuckDB SQL for the new value of an UPDATE's column: a scalar `value`, or
    /// integer `+ - *` (and unary minus) or text `||` over such values. Integer
    /// results are cast to the Postgres result type, so they overflow where Postgres
    /// would. `None` for anything else (or a parameter, which a direct UPDATE cannot bind).
    ///
    /// # Safety
    /// `node` must be a valid expression tree of the relation being planned.
    pub unsafe fn assigned_value(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            let saved = self.params.len();
            let result = self.computed(node).filter(|_| self.params.len() == saved);
            self.params.truncate(saved);
            result
        }
    }

    unsafe fn computed(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            match (*node).type_ {
                NodeTag::T_OpExpr => {
                    let op = node as *mut pg_sys::OpExpr;
                    let name = builtin_operator_name((*op).opno)?;
                    let args = list_nodes((*op).args);
                    let result_type = (*op).opresulttype;
                    let all = |pred: fn(Oid) -> bool| args.iter().all(|a| pred(expr_type(*a)));
                    match (name.as_str(), args.as_slice()) {
                        ("+" | "-" | "*", [left, right]) if is_integer(result_type) && all(is_integer) => {
                            let (left, right) = (self.computed(*left)?, self.computed(*right)?);
                            Some(format!("CAST(({left} {name} {right}) AS {})", param_duck_type(result_type)?))
                        }
                        ("-", [arg]) if is_integer(result_type) && all(is_integer) => {
                            let arg = self.computed(*arg)?;
                            Some(format!("CAST((- {arg}) AS {})", param_duck_type(result_type)?))
                        }
                        ("||", [left, right]) if result_type == pg_sys::TEXTOID && all(is_text) => {
                            Some(format!("({} || {})", self.computed(*left)?, self.computed(*right)?))
                        }
                        _ => None,
                    }
                }
                NodeTag::T_RelabelType => self.computed((*(node as *mut pg_sys::RelabelType)).arg.cast()),
                _ => self.value(node),
            }
        }
    }

    /// A scalar value: column, constant, parameter, or a binary-compatible cast of one.
    unsafe fn value(&mut self, node: *mut Node) -> Option<String> {
        unsafe {
            match (*node).type_ {
                NodeTag::T_Var => {
                    let var = node as *mut pg_sys::Var;
                    if (*var).varno as pg_sys::Index != self.varno || (*var).varlevelsup != 0 || (*var).varattno <= 0
                    {
                        return None;
                    }
                    if !is_pushable_type((*var).vartype) {
                        return None;
                    }
                    (self.columns)((*var).varattno)?.expr
                }
                NodeTag::T_Const => {
                    let c = node as *mut pg_sys::Const;
                    if !is_pushable_type((*c).consttype) {
                        return None;
                    }
                    if (*c).constisnull {
                        return Some("NULL".into());
                    }
                    literal((*c).constvalue, (*c).consttype)
                }
                NodeTag::T_Param => {
                    let p = node as *mut pg_sys::Param;
                    let duck_type = param_duck_type((*p).paramtype)?;
                    self.params.push(node.cast());
                    Some(format!("CAST(${} AS {duck_type})", self.params.len()))
                }
                NodeTag::T_RelabelType => {
                    let r = node as *mut pg_sys::RelabelType;
                    self.value((*r).arg.cast())
                }
                _ => None,
            }
        }
    }
}

pub unsafe fn expr_type(node: *mut Node) -> Oid {
    unsafe { pg_sys::exprType(node) }
}

/// The operator's name if it is one of Postgres' own (pg_catalog) operators.
pub unsafe fn builtin_operator_name(opno: Oid) -> Option<String> {
    unsafe {
        if opno.to_u32() >= pg_sys::FirstNormalObjectId {
            return None;
        }
        let name = pg_sys::get_opname(opno);
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

pub fn is_integer(type_oid: Oid) -> bool {
    matches!(type_oid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID)
}

/// text or varchar: one type, VARCHAR, in DuckDB.
pub fn is_text(type_oid: Oid) -> bool {
    matches!(type_oid, pg_sys::TEXTOID | pg_sys::VARCHAROID)
}

/// Whether values of Postgres types `a` and `b` are of one type in DuckDB (the same
/// type, or text and varchar).
pub fn one_type_in_duckdb(a: Oid, b: Oid) -> bool {
    a == b || (is_text(a) && is_text(b))
}

pub fn is_collatable(type_oid: Oid) -> bool {
    matches!(type_oid, pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID | pg_sys::NAMEOID)
}

/// Types whose values, comparisons and ordering mean the same in DuckDB.
pub fn is_pushable_type(type_oid: Oid) -> bool {
    matches!(
        type_oid,
        pg_sys::BOOLOID
            | pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::FLOAT4OID
            | pg_sys::FLOAT8OID
            | pg_sys::NUMERICOID
            | pg_sys::TEXTOID
            | pg_sys::VARCHAROID
            | pg_sys::BYTEAOID
            | pg_sys::DATEOID
            | pg_sys::TIMEOID
            | pg_sys::TIMESTAMPOID
            | pg_sys::TIMESTAMPTZOID
            | pg_sys::INTERVALOID
            | pg_sys::UUIDOID
    )
}

/// Both sides are of one family (numbers with numbers, text with text, ...), so
/// DuckDB's implicit casts cannot change the comparison.
pub fn comparable(a: Oid, b: Oid) -> bool {
    fn family(t: Oid) -> u8 {
        match t {
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID | pg_sys::FLOAT4OID | pg_sys::FLOAT8OID
            | pg_sys::NUMERICOID => 1,
            pg_sys::TEXTOID | pg_sys::VARCHAROID => 2,
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID => 3,
            pg_sys::TIMESTAMPTZOID => 4,
            pg_sys::BOOLOID => 5,
            pg_sys::UUIDOID => 6,
            pg_sys::TIMEOID => 7,
            pg_sys::INTERVALOID => 8,
            pg_sys::BYTEAOID => 9,
            _ => 0,
        }
    }
    let (fa, fb) = (family(a), family(b));
    fa != 0 && fa == fb && !(a != b && (a == pg_sys::FLOAT4OID || b == pg_sys::FLOAT4OID))
}

/// The DuckDB type a parameter of `type_oid` is bound as.
pub fn param_duck_type(type_oid: Oid) -> Option<&'static str> {
    Some(match type_oid {
        pg_sys::BOOLOID => "BOOLEAN",
        pg_sys::INT2OID => "SMALLINT",
        pg_sys::INT4OID => "INTEGER",
        pg_sys::INT8OID => "BIGINT",
        pg_sys::FLOAT8OID => "DOUBLE",
        pg_sys::TEXTOID | pg_sys::VARCHAROID => "VARCHAR",
        pg_sys::DATEOID => "DATE",
        pg_sys::TIMESTAMPOID => "TIMESTAMP",
        pg_sys::TIMESTAMPTZOID => "TIMESTAMPTZ",
        pg_sys::UUIDOID => "UUID",
        _ => return None,
    })
}

/// DuckDB literal for a non-null datum of a pushable type.
pub unsafe fn literal(datum: pg_sys::Datum, type_oid: Oid) -> Option<String> {
    unsafe {
        Some(match type_oid {
            pg_sys::BOOLOID => (if bool::from_datum(datum, false)? { "TRUE" } else { "FALSE" }).into(),
            pg_sys::INT2OID => format!("CAST({} AS SMALLINT)", i16::from_datum(datum, false)?),
            pg_sys::INT4OID => format!("CAST({} AS INTEGER)", i32::from_datum(datum, false)?),
            pg_sys::INT8OID => format!("CAST({} AS BIGINT)", i64::from_datum(datum, false)?),
            pg_sys::FLOAT4OID => {
                let value = f32::from_datum(datum, false)?;
                float_literal(format!("{value:?}"), value.is_nan(), "FLOAT")
            }
            pg_sys::FLOAT8OID => {
                let value = f64::from_datum(datum, false)?;
                float_literal(format!("{value:?}"), value.is_nan(), "DOUBLE")
            }
            pg_sys::NUMERICOID => {
                let text = output_text(datum, type_oid);
                let digits = text.trim_start_matches('-').replace('.', "");
                if !digits.chars().all(|c| c.is_ascii_digit()) || digits.trim_start_matches('0').len() > 38 {
                    return None; // NaN, infinity, or beyond DuckDB's 38 digits
                }
                let scale = text.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
                format!("CAST({} AS DECIMAL(38,{scale}))", sql::literal(&text))
            }
            pg_sys::TEXTOID | pg_sys::VARCHAROID => sql::literal(&String::from_datum(datum, false)?),
            pg_sys::BYTEAOID => {
                let bytes = <&[u8]>::from_datum(datum, false)?;
                let hex: String = bytes.iter().map(|b| format!("\\x{b:02X}")).collect();
                format!("CAST({} AS BLOB)", sql::literal(&hex))
            }
            pg_sys::UUIDOID => format!("CAST({} AS UUID)", sql::literal(&output_text(datum, type_oid))),
            pg_sys::DATEOID => {
                let days = datum.value() as i32;
                match days {
                    i32::MAX => "CAST('infinity' AS DATE)".into(),
                    i32::MIN => "CAST('-infinity' AS DATE)".into(),
                    d => format!("DATE '{}'", calendar::date_from_unix_days(d as i64 + calendar::PG_EPOCH_DAYS)?),
                }
            }
            pg_sys::TIMEOID => format!("TIME '{}'", calendar::time_of_day(datum.value() as i64)),
            pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                let micros = datum.value() as i64;
                let (keyword, suffix) =
                    if type_oid == pg_sys::TIMESTAMPOID { ("TIMESTAMP", "") } else { ("TIMESTAMPTZ", "+00") };
                match micros {
                    i64::MAX => format!("CAST('infinity' AS {keyword})"),
                    i64::MIN => format!("CAST('-infinity' AS {keyword})"),
                    m => {
                        let (date, time) = calendar::timestamp_parts(m)?;
                        format!("{keyword} '{date} {time}{suffix}'")
                    }
                }
            }
            pg_sys::INTERVALOID => {
                let interval = datum.cast_mut_ptr::<pg_sys::Interval>();
                format!(
                    "(INTERVAL ({}) MONTH + INTERVAL ({}) DAY + INTERVAL ({}) MICROSECOND)",
                    (*interval).month,
                    (*interval).day,
                    (*interval).time
                )
            }
            _ => return None,
        })
    }
}

/// A float constant as text DuckDB parses to exactly this value: a bare `1.5` would be
/// a DECIMAL first, losing the sign of -0 and, past 2^53, the last bit of a double.
/// `text` is Rust's shortest text that round-trips (of the f32 itself for FLOAT).
fn float_literal(text: String, is_nan: bool, duck_type: &str) -> String {
    if is_nan {
        format!("CAST('nan' AS {duck_type})")
    } else {
        format!("CAST('{text}' AS {duck_type})")
    }
}

/// `value LIKE pattern` (or NOT LIKE, ILIKE...). Postgres' LIKE escapes with backslash
/// by default and DuckDB's has no default escape character, so the escape is spelled
/// out, unless the pattern is a constant without backslashes: DuckDB runs the plain
/// form several times faster (as `contains`/`prefix` where it can).
pub unsafe fn like(value: &str, keyword: &str, pattern: &str, pattern_node: *mut pg_sys::Node) -> String {
    unsafe {
        let plain = (*pattern_node).type_ == pg_sys::NodeTag::T_Const && {
            let c = pattern_node as *mut pg_sys::Const;
            !(*c).constisnull
                && matches!((*c).consttype, pg_sys::TEXTOID | pg_sys::VARCHAROID)
                && !output_text((*c).constvalue, (*c).consttype).contains('\\')
        };
        if plain {
            format!("({value} {keyword} {pattern})")
        } else {
            format!("({value} {keyword} {pattern} ESCAPE '\\')")
        }
    }
}

pub unsafe fn output_text(datum: pg_sys::Datum, type_oid: Oid) -> String {
    unsafe {
        let mut output = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, datum)).to_string_lossy().into_owned()
    }
}

