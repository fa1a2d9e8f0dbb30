//! Expressions of an analyzed query, translated to DuckDB SQL with their Postgres
//! meaning, or refused (`None`). Each construct says why DuckDB's answer is Postgres':
//!
//! - Values: columns, constants and parameters of the types whose values and
//!   comparisons agree (`deparse::is_pushable_type`); numeric constants get the
//!   narrowest DECIMAL holding them, so DuckDB's result scales are Postgres' display
//!   scales (+ - keep the larger scale, * adds them, in both).
//! - Comparisons, LIKE, IN lists, IS [NOT] NULL/TRUE/FALSE, AND/OR/NOT: the rules of
//!   the single-table scan (`scan::deparse`): text ordering only under a bytewise collation,
//!   ILIKE only where Postgres lowers as DuckDB does (`scan::collation`),
//!   equality only under deterministic ones.
//! - Integer `+ - *` are cast to Postgres' result type (DuckDB raises on overflow, as
//!   Postgres does); `/` and `%` truncate toward zero in both, division by zero raises.
//! - Numeric `+ - *`: DuckDB decimals are exact. DuckDB keeps an operation on two
//!   64-bit decimals in 64 bits and raises past 18 digits, so a result that could get
//!   there is computed in 128 bits (with its 64-bit form beside it for sums, see
//!   `numeric::sum_of_widened`); one whose scale would pass 38 (where DuckDB refuses)
//!   is not pushed. Numeric division is Postgres' `numeric_div`, see `numeric`.
//! - `CASE`/`COALESCE` only when every branch has the same type; numerics of several
//!   scales become one DECIMAL holding them all, each value's display scale computed
//!   beside it (see `numeric::common_type`).
//! - Casts between integers and from integers to numeric; `extract` of year, month,
//!   day or quarter from a date (numeric in Postgres); `substring(text, s, n)` with
//!   constant s ≥ 1 and n ≥ 0.
//! - Aggregates count, count(DISTINCT), sum (int → bigint, bigint → numeric, numeric
//!   keeps its scale), min/max, avg (numeric_div of the sum and the count), with FILTER.
//! - Sub-selects: EXISTS, `x = ANY (SELECT ...)` (IN; NOT IN with SQL's NULL rule, as
//!   DuckDB implements it), and scalar sub-selects; DuckDB decorrelates them.

use pgrx::pg_sys::{self, Node, NodeTag, Oid};

use crate::pg_nodes::{const_int, list_nodes};
use crate::query::numeric::{self, common_type};
use crate::query::translate::Translator;
use crate::query::typed::{Narrow, Ty, Typed, groupable, typed};
use crate::scan::collation::{collation_lowers_as_duckdb, collation_sorts_bytewise, text_equality_is_bytewise};
use crate::scan::deparse::{
    Deparser, builtin_operator_name, comparable, is_integer, is_pushable_type, is_text,
    literal, output_text, param_duck_type,
};

impl Translator {
    /// DuckDB SQL for `node`, or `None` when its meaning in DuckDB could differ.
    pub unsafe fn expr(&mut self, node: *mut Node) -> Option<Typed> {
        unsafe {
            if node.is_null() {
                return None;
            }
            match (*node).type_ {
                NodeTag::T_Var => self.var(node as *mut pg_sys::Var),
                NodeTag::T_Const => self.constant(node as *mut pg_sys::Const),
                NodeTag::T_Param => self.param(node as *mut pg_sys::Param),
                NodeTag::T_RelabelType => {
                    let r = node as *mut pg_sys::RelabelType;
                    let inner = self.expr((*r).arg.cast())?;
                    // varchar ↔ text: one type in DuckDB.
                    let same = crate::scan::deparse::one_type_in_duckdb(inner.ty.oid, (*r).resulttype);
                    same.then(|| Typed { ty: Ty { oid: (*r).resulttype, ..inner.ty }, ..inner })
                }
                // COLLATE changes no value, only the collation that the operators, sort
                // keys and aggregates above compare under; they read it from the tree
                // (inputcollid, exprCollation) and decide for themselves.
                NodeTag::T_CollateExpr => self.expr((*(node as *mut pg_sys::CollateExpr)).arg.cast()),
                NodeTag::T_BoolExpr => {
                    let b = node as *mut pg_sys::BoolExpr;
                    let mut parts = Vec::new();
                    for arg in list_nodes((*b).args) {
                        let t = self.expr(arg)?;
                        if t.ty.oid != pg_sys::BOOLOID {
                            return None;
                        }
                        parts.push(t.sql);
                    }
                    let sql = match (*b).boolop {
                        pg_sys::BoolExprType::AND_EXPR => format!("({})", parts.join(" AND ")),
                        pg_sys::BoolExprType::OR_EXPR => format!("({})", parts.join(" OR ")),
                        pg_sys::BoolExprType::NOT_EXPR => format!("(NOT {})", parts.first()?),
                        _ => return None,
                    };
                    typed(sql, Ty::of(pg_sys::BOOLOID))
                }
                NodeTag::T_NullTest => {
                    let t = node as *mut pg_sys::NullTest;
                    if (*t).argisrow {
                        return None;
                    }
                    let arg = self.expr((*t).arg.cast())?;
                    let not = if (*t).nulltesttype == pg_sys::NullTestType::IS_NULL { "" } else { "NOT " };
                    typed(format!("({} IS {not}NULL)", arg.sql), Ty::of(pg_sys::BOOLOID))
                }
                NodeTag::T_BooleanTest => {
                    let t = node as *mut pg_sys::BooleanTest;
                    let arg = self.expr((*t).arg.cast())?.sql;
                    use pg_sys::BoolTestType::*;
                    let sql = match (*t).booltesttype {
                        IS_TRUE => format!("({arg} IS NOT DISTINCT FROM TRUE)"),
                        IS_NOT_TRUE => format!("({arg} IS DISTINCT FROM TRUE)"),
                        IS_FALSE => format!("({arg} IS NOT DISTINCT FROM FALSE)"),
                        IS_NOT_FALSE => format!("({arg} IS DISTINCT FROM FALSE)"),
                        IS_UNKNOWN => format!("({arg} IS NULL)"),
                        IS_NOT_UNKNOWN => format!("({arg} IS NOT NULL)"),
                        _ => return None,
                    };
                    typed(sql, Ty::of(pg_sys::BOOLOID))
                }
                NodeTag::T_OpExpr => self.op_expr(node as *mut pg_sys::OpExpr),
                NodeTag::T_ScalarArrayOpExpr => self.in_list(node as *mut pg_sys::ScalarArrayOpExpr),
                NodeTag::T_CaseExpr => self.case_expr(node as *mut pg_sys::CaseExpr),
                NodeTag::T_CaseTestExpr => self.case_value.last().cloned().flatten(),
                NodeTag::T_CoalesceExpr => {
                    let c = node as *mut pg_sys::CoalesceExpr;
                    let args = list_nodes((*c).args);
                    let mut items = args.into_iter().map(|a| self.expr(a)).collect::<Option<Vec<_>>>()?;
                    // The scale of the first value that is not NULL.
                    let values: Vec<String> = items.iter().map(|t| t.sql.clone()).collect();
                    let (ty, scale) = common_type(&mut items, |scales| {
                        let whens: String =
                            values.iter().zip(scales).map(|(v, s)| format!(" WHEN ({v}) IS NOT NULL THEN {s}")).collect();
                        format!("(CASE{whens} END)")
                    })?;
                    let sql = format!("COALESCE({})", items.iter().map(|t| t.sql.as_str()).collect::<Vec<_>>().join(", "));
                    Some(Typed { sql, ty, scale, narrow: None })
                }
                // NULLIF(a, b): NULL where a = b is true, else a (also where it is NULL),
                // with the equality pushed under the rules of `=` below.
                NodeTag::T_NullIfExpr => {
                    let op = node as *mut pg_sys::OpExpr;
                    let args = list_nodes((*op).args);
                    let [first, _] = args.as_slice() else { return None };
                    if builtin_operator_name((*op).opno)? != "=" {
                        return None;
                    }
                    let equal = self.op_expr(op)?;
                    let value = self.expr(*first)?;
                    Some(Typed { sql: format!("(CASE WHEN {} THEN NULL ELSE {} END)", equal.sql, value.sql), narrow: None, ..value })
                }
                NodeTag::T_FuncExpr => self.func_expr(node as *mut pg_sys::FuncExpr),
                NodeTag::T_Aggref => self.aggregate(node as *mut pg_sys::Aggref),
                // GROUPING(a, b): a bit per argument, the first the most significant, set
                // where the row's grouping set leaves the argument out (the SQL standard's,
                // in both); DuckDB's is a BIGINT.
                NodeTag::T_GroupingFunc => {
                    let g = node as *mut pg_sys::GroupingFunc;
                    if (*g).agglevelsup != 0 {
                        return None;
                    }
                    let args = list_nodes((*g).args).into_iter().map(|a| self.expr(a).map(|t| t.sql)).collect::<Option<Vec<_>>>()?;
                    typed(format!("CAST(GROUPING({}) AS INTEGER)", args.join(", ")), Ty::of(pg_sys::INT4OID))
                }
                NodeTag::T_WindowFunc => self.window_function(node as *mut pg_sys::WindowFunc),
                NodeTag::T_SubLink => self.sublink(node as *mut pg_sys::SubLink),
                _ => None,
            }
        }
    }

    unsafe fn constant(&mut self, c: *mut pg_sys::Const) -> Option<Typed> {
        unsafe {
            let oid = (*c).consttype;
            if !is_pushable_type(oid) {
                return None;
            }
            if oid == pg_sys::NUMERICOID {
                if (*c).constisnull {
                    // No scale of its own (a CASE without ELSE): a varying one, NULL.
                    return Some(Typed::varying("CAST(NULL AS DECIMAL(1,0))".into(), Ty::decimal(1, 0), Some("CAST(NULL AS INTEGER)".into())));
                }
                let text = output_text((*c).constvalue, oid);
                let unsigned = text.trim_start_matches('-');
                if !unsigned.chars().all(|ch| ch.is_ascii_digit() || ch == '.') {
                    return None; // NaN, Infinity
                }
                let (int_part, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
                let int_digits = int_part.trim_start_matches('0').len() as u32;
                let scale = frac.len() as u32;
                let width = (int_digits + scale).max(1);
                if width > 38 {
                    return None;
                }
                let sql = format!("CAST('{text}' AS DECIMAL({width},{scale}))");
                let value: f64 = unsigned.parse().ok()?;
                let narrow = (width <= 18).then(|| Narrow::constant(&sql, value));
                return Some(Typed { narrow, ..Typed::new(sql, Ty::decimal(width, scale)) });
            }
            if (*c).constisnull {
                let duck = crate::types::kind::Kind::of(oid, -1).duck_type();
                return typed(format!("CAST(NULL AS {duck})"), Ty::of(oid));
            }
            let sql = literal((*c).constvalue, oid)?;
            if sql.contains(crate::query::model::SLOT_OPEN) || sql.contains(crate::query::model::SLOT_CLOSE) {
                return None;
            }
            if let Some(value) = const_int(c.cast()) {
                // Known exactly: a guard need not bound it as it bounds a column.
                return Some(Typed { narrow: Some(Narrow::integer(&sql, value)), ..Typed::new(sql, Ty::of(oid)) });
            }
            Some(Typed::new(sql, Ty::of(oid)).plain())
        }
    }

    unsafe fn param(&mut self, p: *mut pg_sys::Param) -> Option<Typed> {
        unsafe {
            if (*p).paramkind != pg_sys::ParamKind::PARAM_EXTERN {
                return None;
            }
            let duck_type = param_duck_type((*p).paramtype)?;
            self.params.push(p.cast());
            let slot = crate::query::model::PushedQuery::parameter_slot(self.params.len());
            typed(format!("CAST({slot} AS {duck_type})"), Ty::of((*p).paramtype))
        }
    }

    unsafe fn op_expr(&mut self, op: *mut pg_sys::OpExpr) -> Option<Typed> {
        unsafe {
            let name = builtin_operator_name((*op).opno)?;
            let args = list_nodes((*op).args);
            let result = (*op).opresulttype;
            let collation = (*op).inputcollid;
            let bool_ty = Ty::of(pg_sys::BOOLOID);
            match (name.as_str(), args.as_slice()) {
                ("=" | "<>" | "<" | "<=" | ">" | ">=", [l, r]) => {
                    let (left, right) = (self.expr(*l)?, self.expr(*r)?);
                    if !comparable(left.ty.oid, right.ty.oid) {
                        return None;
                    }
                    let text = crate::scan::deparse::is_collatable(left.ty.oid);
                    if text && !text_equality_is_bytewise(collation) {
                        return None;
                    }
                    if text && !matches!(name.as_str(), "=" | "<>") && !collation_sorts_bytewise(collation) {
                        return None;
                    }
                    if left.ty.oid == pg_sys::NUMERICOID || right.ty.oid == pg_sys::NUMERICOID {
                        return typed(numeric::comparison(&name, &left, &right, self.binding())?, bool_ty);
                    }
                    typed(format!("({} {name} {})", left.sql, right.sql), bool_ty)
                }
                ("~~" | "!~~" | "~~*" | "!~~*", [l, r]) => {
                    let (left, pattern) = (self.expr(*l)?, self.expr(*r)?);
                    if !is_text(left.ty.oid) || !text_equality_is_bytewise(collation) {
                        return None;
                    }
                    if name.ends_with('*') && !collation_lowers_as_duckdb(collation) {
                        return None;
                    }
                    let keyword = match name.as_str() {
                        "~~" => "LIKE",
                        "!~~" => "NOT LIKE",
                        "~~*" => "ILIKE",
                        _ => "NOT ILIKE",
                    };
                    typed(crate::scan::deparse::like(&left.sql, keyword, &pattern.sql, *r), bool_ty)
                }
                ("||", [l, r]) if result == pg_sys::TEXTOID => {
                    let (left, right) = (self.expr(*l)?, self.expr(*r)?);
                    (is_text(left.ty.oid) && is_text(right.ty.oid))
                        .then(|| Typed::new(format!("({} || {})", left.sql, right.sql), Ty::of(pg_sys::TEXTOID)))
                }
                ("+" | "-" | "*" | "/" | "%", [l, r]) => {
                    let (left, right) = (self.expr(*l)?, self.expr(*r)?);
                    self.arithmetic(&name, left, right, result)
                }
                ("-", [arg]) => {
                    let arg = self.expr(*arg)?;
                    if is_integer(result) && is_integer(arg.ty.oid) {
                        return typed(format!("CAST((- {}) AS {})", arg.sql, param_duck_type(result)?), Ty::of(result));
                    }
                    (arg.ty.decimal.is_some() && result == pg_sys::NUMERICOID)
                        .then(|| Typed { sql: format!("(- {})", arg.sql), narrow: arg.narrow.as_ref().map(|n| n.map(|s| format!("(- {s})"))), ..arg })
                }
                _ => None,
            }
        }
    }

    fn arithmetic(&mut self, op: &str, left: Typed, right: Typed, result: Oid) -> Option<Typed> {
        if is_integer(result) && is_integer(left.ty.oid) && is_integer(right.ty.oid) {
            let duck = param_duck_type(result)?;
            let sql = match op {
                "+" | "-" | "*" => format!("CAST(({} {op} {}) AS {duck})", left.sql, right.sql),
                // DuckDB's // and % truncate toward zero like Postgres; both give NULL
                // for a zero divisor in DuckDB, an error in Postgres.
                "/" | "%" => {
                    let duck_op = if op == "/" { "//" } else { "%" };
                    format!(
                        "CAST((CASE WHEN {r} = 0 THEN error('division by zero') ELSE {l} {duck_op} {r} END) AS {duck})",
                        l = left.sql,
                        r = right.sql
                    )
                }
                _ => return None,
            };
            return typed(sql, Ty::of(result));
        }
        if result == pg_sys::NUMERICOID {
            let ((w1, s1), (w2, s2)) = (left.ty.decimal?, right.ty.decimal?);
            // Display scales: the larger one for + and -, their sum for * (add_var,
            // mul_var); a quotient's is numeric_div's (see `numeric`).
            let varying = left.ty.varying || right.ty.varying;
            let scales = left.display_scale().zip(right.display_scale());
            let result = |sql: String, ty: Ty, scale: Option<String>, narrow: Option<Narrow>| {
                let value = if varying { Typed::varying(sql, ty, scale) } else { Typed::new(sql, ty) };
                Some(Typed { narrow, ..value })
            };
            // DuckDB keeps `+ - *` of two 64-bit decimals in 64 bits, raising where the
            // value passes 18 digits (Postgres has no such limit): a result that could
            // get there is computed in 128 bits, with its 64-bit form kept as `narrow`
            // for sums, which use it wherever it does not overflow.
            let narrow = |op: &str, scale: u32, width: u32| match (&left.narrow, &right.narrow) {
                (Some(l), Some(r)) if scale < 18 => Some(l.combine(op, r, scale, width > 18)),
                _ => None,
            };
            let widened = |width: u32| {
                if width > 18 && w1 <= 18 { format!("CAST({} AS DECIMAL(38,{s1}))", left.sql) } else { left.sql.clone() }
            };
            return match op {
                "+" | "-" => {
                    let width = (w1 - s1).max(w2 - s2) + s1.max(s2) + 1;
                    result(
                        format!("({} {op} {})", widened(width), right.sql),
                        Ty::decimal(width, s1.max(s2)),
                        scales.map(|(l, r)| format!("greatest({l}, {r})")),
                        narrow(op, s1.max(s2), width),
                    )
                }
                "*" => {
                    if s1 + s2 > 38 {
                        return None;
                    }
                    result(
                        format!("({} * {})", widened(w1 + w2), right.sql),
                        Ty::decimal(w1 + w2, s1 + s2),
                        scales.map(|(l, r)| format!("({l} + {r})")),
                        narrow("*", s1 + s2, w1 + w2),
                    )
                }
                // Any nonzero divisor is at least 10^-s2 in magnitude.
                "/" => numeric::quotient(&left, &right, numeric::integer_digits(left.ty)? + s2, self.binding()),
                _ => None,
            };
        }
        None
    }

    unsafe fn in_list(&mut self, op: *mut pg_sys::ScalarArrayOpExpr) -> Option<Typed> {
        unsafe {
            let args = list_nodes((*op).args);
            let [left, right] = args.as_slice() else { return None };
            let keyword = match (builtin_operator_name((*op).opno)?.as_str(), (*op).useOr) {
                ("=", true) => "IN",
                ("<>", false) => "NOT IN",
                _ => return None,
            };
            let left = self.expr(*left)?;
            if left.ty.oid == pg_sys::NUMERICOID
                || (crate::scan::deparse::is_collatable(left.ty.oid) && !text_equality_is_bytewise((*op).inputcollid))
            {
                return None;
            }
            if !comparable(left.ty.oid, pg_sys::get_element_type(pg_sys::exprType(*right))) {
                return None;
            }
            let elements = match (**right).type_ {
                NodeTag::T_ArrayExpr => {
                    let a = *right as *mut pg_sys::ArrayExpr;
                    if (*a).multidims {
                        return None;
                    }
                    list_nodes((*a).elements).into_iter().map(|e| self.expr(e).map(|t| t.sql)).collect::<Option<Vec<_>>>()?
                }
                NodeTag::T_Const => {
                    let mut deparser = Deparser { varno: 0, columns: &|_| None, params: Vec::new() };
                    deparser.array_elements(*right)?
                }
                _ => return None,
            };
            if elements.is_empty() {
                return typed((if keyword == "IN" { "FALSE" } else { "TRUE" }).into(), Ty::of(pg_sys::BOOLOID));
            }
            typed(format!("({} {keyword} ({}))", left.sql, elements.join(", ")), Ty::of(pg_sys::BOOLOID))
        }
    }

    unsafe fn case_expr(&mut self, c: *mut pg_sys::CaseExpr) -> Option<Typed> {
        unsafe {
            let subject = if (*c).arg.is_null() { None } else { Some(self.expr((*c).arg.cast())?) };
            self.case_value.push(subject);
            let result = (|| {
                let mut conditions = Vec::new();
                let mut branches = Vec::new();
                for when in list_nodes((*c).args) {
                    let w = when as *mut pg_sys::CaseWhen;
                    conditions.push(self.expr((*w).expr.cast())?.sql);
                    branches.push(self.expr((*w).result.cast())?);
                }
                if (*c).defresult.is_null() {
                    return None;
                }
                branches.push(self.expr((*c).defresult.cast())?);
                // The same CASE, choosing the scale of the branch it chooses.
                let case_of = |values: &[String]| {
                    let whens: String = conditions.iter().zip(values).map(|(c, v)| format!(" WHEN {c} THEN {v}")).collect();
                    format!("(CASE{whens} ELSE {} END)", values.last().expect("a default branch"))
                };
                let (ty, scale) = common_type(&mut branches, case_of)?;
                let values: Vec<String> = branches.into_iter().map(|b| b.sql).collect();
                Some(Typed { sql: case_of(&values), ty, scale, narrow: None })
            })();
            self.case_value.pop();
            result
        }
    }

    unsafe fn func_expr(&mut self, f: *mut pg_sys::FuncExpr) -> Option<Typed> {
        unsafe {
            if (*f).funcid.to_u32() >= pg_sys::FirstNormalObjectId || (*f).funcretset || (*f).funcvariadic {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(pg_sys::get_func_name((*f).funcid)).to_string_lossy().into_owned();
            let args = list_nodes((*f).args);
            let result = (*f).funcresulttype;
            match (name.as_str(), args.as_slice()) {
                // Integer widening and narrowing casts (DuckDB raises out of range).
                ("int2" | "int4" | "int8", [arg]) if is_integer(result) => {
                    let a = self.expr(*arg)?;
                    is_integer(a.ty.oid).then(|| {
                        Typed::new(format!("CAST({} AS {})", a.sql, param_duck_type(result).unwrap_or("BIGINT")), Ty::of(result))
                    })
                }
                ("numeric", [arg]) if result == pg_sys::NUMERICOID => {
                    let a = self.expr(*arg)?;
                    let width = match a.ty.oid {
                        pg_sys::INT2OID => 5,
                        pg_sys::INT4OID => 10,
                        pg_sys::INT8OID => 19,
                        _ => return None,
                    };
                    let narrow = a.narrow.filter(|_| width <= 18).map(|n| n.map(|s| format!("CAST({s} AS DECIMAL({width},0))")));
                    Some(Typed { narrow, ..Typed::new(format!("CAST({} AS DECIMAL({width},0))", a.sql), Ty::decimal(width, 0)) })
                }
                ("extract" | "date_part", [field, source]) if name == "extract" => {
                    let field = const_text(*field)?.to_ascii_lowercase();
                    let source = self.expr(*source)?;
                    // Integral fields both compute alike on the proleptic Gregorian calendar
                    // (Sunday is day 0 of the week, ISO weeks start on Monday). A timestamp's
                    // second has a fraction in Postgres (numeric), not in DuckDB: not pushed.
                    let date_fields = ["year", "month", "day", "quarter", "dow", "isodow", "doy", "week"];
                    let fields_of = match source.ty.oid {
                        pg_sys::DATEOID => &date_fields[..],
                        pg_sys::TIMESTAMPOID => &["year", "month", "day", "quarter", "dow", "isodow", "doy", "week", "hour", "minute"][..],
                        _ => return None,
                    };
                    if !fields_of.contains(&field.as_str()) {
                        return None;
                    }
                    // Dates before year 1 are BC in Postgres, negative years in DuckDB. The
                    // year of an infinite date or timestamp is Infinity in Postgres, which
                    // no DuckDB decimal holds (the other fields are NULL in both).
                    let year_of_infinity = if field == "year" {
                        format!(" WHEN isinf({}) THEN error('extract(year) of an infinite date or timestamp is not pushed: SET ducklake.query_pushdown = off')", source.sql)
                    } else {
                        String::new()
                    };
                    typed(
                        format!(
                            "CAST((CASE WHEN year({s}) <= 0 THEN error('extract of a BC date is not pushed'){year_of_infinity} ELSE extract({field} FROM {s}) END) AS DECIMAL(18,0))",
                            s = source.sql
                        ),
                        Ty::decimal(18, 0),
                    )
                }
                // Same value and type; the minimum integer overflows in both (22003).
                ("abs", [arg]) if is_integer(result) || result == pg_sys::NUMERICOID => {
                    let a = self.expr(*arg)?;
                    if a.ty.oid != result {
                        return None;
                    }
                    let sql = match param_duck_type(result) {
                        Some(duck) if is_integer(result) => format!("CAST(abs({}) AS {duck})", a.sql),
                        _ => format!("abs({})", a.sql),
                    };
                    Some(Typed { sql, narrow: None, ..a })
                }
                // Searching and replacing text compares characters exactly in both, as a
                // deterministic collation does (Postgres refuses the others); an empty
                // search string is at position 1 and replaces nothing in both.
                ("strpos" | "position", [text, search]) if text_equality_is_bytewise((*f).inputcollid) => {
                    let (text, search) = (self.expr(*text)?, self.expr(*search)?);
                    if !is_text(text.ty.oid) || !is_text(search.ty.oid) {
                        return None;
                    }
                    typed(format!("CAST(strpos({}, {}) AS INTEGER)", text.sql, search.sql), Ty::of(pg_sys::INT4OID))
                }
                ("replace", [text, from, to]) if text_equality_is_bytewise((*f).inputcollid) => {
                    let (text, from, to) = (self.expr(*text)?, self.expr(*from)?, self.expr(*to)?);
                    if !is_text(text.ty.oid) || !is_text(from.ty.oid) || !is_text(to.ty.oid) {
                        return None;
                    }
                    typed(format!("replace({}, {}, {})", text.sql, from.sql, to.sql), Ty::of(pg_sys::TEXTOID))
                }
                // The first or last n characters; a negative n drops that many from the
                // other end, in both.
                ("left" | "right", [text, count]) => {
                    let (text, count) = (self.expr(*text)?, self.expr(*count)?);
                    if !is_text(text.ty.oid) || count.ty.oid != pg_sys::INT4OID {
                        return None;
                    }
                    // A count of -2147483648 cannot be negated: what Postgres then returns
                    // depends on its version (all of s, or nothing), so it is an error here.
                    let sql = format!(
                        "(CASE WHEN {n} = -2147483648 THEN error('{name}() with a count of -2147483648 is not pushed: \
                         SET ducklake.query_pushdown = off') ELSE {name}({s}, {n}) END)",
                        s = text.sql,
                        n = count.sql
                    );
                    typed(sql, Ty::of(pg_sys::TEXTOID))
                }
                // Characters (code points) in both: Postgres counts them for UTF-8 text,
                // DuckDB's length too ('e' + a combining accent is 2, an emoji with a
                // skin tone 2).
                ("length" | "char_length" | "character_length", [text]) if result == pg_sys::INT4OID => {
                    let text = self.expr(*text)?;
                    if !is_text(text.ty.oid) {
                        return None;
                    }
                    typed(format!("CAST(length({}) AS INTEGER)", text.sql), Ty::of(pg_sys::INT4OID))
                }
                // A timestamp (without time zone) truncated to a field both define alike:
                // ISO weeks start on Monday in both, infinities stay infinite, and a BC year
                // is DuckDB's year one less (1 BC is year 0), the same instant. Decades,
                // centuries and millennia count differently (no year 0 in Postgres), and a
                // timestamptz would be truncated in DuckDB's time zone, not the session's.
                ("date_trunc", [field, source]) if result == pg_sys::TIMESTAMPOID => {
                    let field = const_text(*field)?.to_ascii_lowercase();
                    let source = self.expr(*source)?;
                    let fields = ["second", "minute", "hour", "day", "week", "month", "quarter", "year"];
                    if source.ty.oid != pg_sys::TIMESTAMPOID || !fields.contains(&field.as_str()) {
                        return None;
                    }
                    typed(format!("date_trunc('{field}', {})", source.sql), Ty::of(pg_sys::TIMESTAMPOID))
                }
                ("substring" | "substr", [text, start, length]) => {
                    let text = self.expr(*text)?;
                    let (start, length) = (const_int(*start)?, const_int(*length)?);
                    if !is_text(text.ty.oid) || start < 1 || length < 0 {
                        return None;
                    }
                    typed(format!("substring({}, {start}, {length})", text.sql), Ty::of(pg_sys::TEXTOID))
                }
                _ => None,
            }
        }
    }

    unsafe fn aggregate(&mut self, a: *mut pg_sys::Aggref) -> Option<Typed> {
        unsafe {
            let name = std::ffi::CStr::from_ptr(pg_sys::get_func_name((*a).aggfnoid)).to_string_lossy().into_owned();
            self.aggregate_as(a, &name)
        }
    }

    /// Aggregate call `a` (its arguments, DISTINCT and FILTER) with function `name`.
    pub unsafe fn aggregate_as(&mut self, a: *mut pg_sys::Aggref, name: &str) -> Option<Typed> {
        unsafe { self.aggregate_over(a, name, "") }
    }

    /// The same, over a window when `over` is an OVER clause: it follows every call this
    /// aggregate makes (and nothing its argument or FILTER contains).
    unsafe fn aggregate_over(&mut self, a: *mut pg_sys::Aggref, name: &str, over: &str) -> Option<Typed> {
        unsafe {
            if (*a).agglevelsup != 0
                || !(*a).aggorder.is_null()
                || (*a).aggvariadic
                || (*a).aggkind != b'n' as std::ffi::c_char
                || (*a).aggfnoid.to_u32() >= pg_sys::FirstNormalObjectId
            {
                return None;
            }
            let name = name.to_owned();
            let filter = if (*a).aggfilter.is_null() {
                String::new()
            } else {
                let f = self.expr((*a).aggfilter.cast())?;
                format!(" FILTER (WHERE {})", f.sql)
            };
            let distinct = !(*a).aggdistinct.is_null();
            if (*a).aggstar {
                return (name == "count" && !distinct)
                    .then(|| Typed::new(format!("count(*){filter}{over}"), Ty::of(pg_sys::INT8OID)));
            }
            let args = list_nodes((*a).args);
            let [arg] = args.as_slice() else { return None };
            let arg = self.expr((*(*arg as *mut pg_sys::TargetEntry)).expr.cast())?;
            if distinct && (name != "count" || !groupable(arg.ty)) {
                return None;
            }
            // DISTINCT de-duplicates under the argument's collation, DuckDB by bytes.
            if distinct && crate::scan::deparse::is_collatable(arg.ty.oid) && !text_equality_is_bytewise((*a).inputcollid) {
                return None;
            }
            let d = if distinct { "DISTINCT " } else { "" };
            let call = |f: &str| format!("{f}({d}{}){filter}{over}", arg.sql);
            // A widened numeric sums its 64-bit values where they do not overflow.
            let sum_call = || match (&arg.narrow, distinct, over.is_empty()) {
                (Some(narrow), false, true) if narrow.sql != arg.sql => numeric::sum_of_widened(narrow, &arg.sql, &filter),
                _ => call("sum"),
            };
            // Over a window with ORDER BY, Postgres adds floats in the frame's row order,
            // DuckDB in its own: the last bits could differ.
            if !over.is_empty() && matches!(arg.ty.oid, pg_sys::FLOAT4OID | pg_sys::FLOAT8OID) {
                return None;
            }
            match name.as_str() {
                "count" => typed(call("count"), Ty::of(pg_sys::INT8OID)),
                "sum" => match arg.ty.oid {
                    pg_sys::INT2OID | pg_sys::INT4OID => typed(format!("CAST({} AS BIGINT)", call("sum")), Ty::of(pg_sys::INT8OID)),
                    pg_sys::INT8OID => typed(format!("CAST({} AS DECIMAL(38,0))", call("sum")), Ty::decimal(38, 0)),
                    pg_sys::NUMERICOID if !arg.ty.varying => {
                        let (_, s) = arg.ty.decimal?;
                        typed(format!("CAST({} AS DECIMAL(38,{s}))", sum_call()), Ty::decimal(38, s))
                    }
                    // A sum's display scale is the largest of its terms' (add_var); DISTINCT
                    // would keep one of several equal values of different scales.
                    pg_sys::NUMERICOID if !distinct => {
                        let (_, s) = arg.ty.decimal?;
                        // Only values that are not NULL reach Postgres' sum (a strict transition).
                        let scale = arg
                            .scale
                            .as_ref()
                            .map(|scale| format!("max(CASE WHEN ({}) IS NOT NULL THEN {scale} END){filter}{over}", arg.sql));
                        Some(Typed::varying(format!("CAST({} AS DECIMAL(38,{s}))", sum_call()), Ty::decimal(38, s), scale))
                    }
                    pg_sys::FLOAT8OID => typed(call("sum"), Ty::of(pg_sys::FLOAT8OID)),
                    _ => None,
                },
                "min" | "max" => {
                    if crate::scan::deparse::is_collatable(arg.ty.oid)
                        && !(text_equality_is_bytewise((*a).inputcollid) && collation_sorts_bytewise((*a).inputcollid))
                    {
                        return None;
                    }
                    if matches!(arg.ty.oid, pg_sys::FLOAT4OID | pg_sys::FLOAT8OID) || arg.ty.varying {
                        return None;
                    }
                    typed(call(&name), arg.ty)
                }
                // Postgres' avg of integers and numerics: numeric_div(sum, count).
                "avg" if !distinct && (is_integer(arg.ty.oid) || arg.ty.oid == pg_sys::NUMERICOID) => {
                    let sum = match arg.ty.oid {
                        pg_sys::NUMERICOID => self.aggregate_over(a, "sum", over)?,
                        _ => Typed::new(format!("CAST({} AS DECIMAL(38,0))", call("sum")), Ty::decimal(38, 0)),
                    };
                    let count = Typed::new(call("count"), Ty::decimal(19, 0));
                    numeric::quotient(&sum, &count, numeric::integer_digits(arg.ty)?, self.binding())
                }
                _ => None,
            }
        }
    }

    /// A window function: ranking (row_number, rank, dense_rank), values of other rows
    /// (lag/lead with a constant offset, first_value/last_value), or an aggregate over
    /// the window, typed as the plain aggregate is (see `aggregate_as`).
    unsafe fn window_function(&mut self, w: *mut pg_sys::WindowFunc) -> Option<Typed> {
        unsafe {
            if (*w).winfnoid.to_u32() >= pg_sys::FirstNormalObjectId {
                return None;
            }
            let over = self.window_spec((*w).winref)?;
            let name = std::ffi::CStr::from_ptr(pg_sys::get_func_name((*w).winfnoid)).to_string_lossy().into_owned();
            let args = list_nodes((*w).args);
            if (*w).winagg {
                // The same call as an aggregate, its OVER clause after it.
                let a = pg_sys::palloc0(std::mem::size_of::<pg_sys::Aggref>()) as *mut pg_sys::Aggref;
                (*a).xpr.type_ = NodeTag::T_Aggref;
                (*a).aggfnoid = (*w).winfnoid;
                (*a).aggtype = (*w).wintype;
                (*a).inputcollid = (*w).inputcollid;
                (*a).aggstar = (*w).winstar;
                (*a).aggfilter = (*w).aggfilter;
                (*a).aggkind = b'n' as std::ffi::c_char;
                let mut entries: *mut pg_sys::List = std::ptr::null_mut();
                for (i, arg) in args.iter().enumerate() {
                    let entry = pg_sys::makeTargetEntry((*arg).cast(), i as i16 + 1, std::ptr::null_mut(), false);
                    entries = pg_sys::lappend(entries, entry.cast());
                }
                (*a).args = entries;
                return self.aggregate_over(a, &name, &over);
            }
            match (name.as_str(), args.as_slice()) {
                ("row_number" | "rank" | "dense_rank", []) => typed(format!("{name}(){over}"), Ty::of(pg_sys::INT8OID)),
                ("lag" | "lead", [value, rest @ ..]) => {
                    let value = self.expr(*value)?;
                    let offset = match rest {
                        [] => String::new(),
                        [offset] => {
                            let n = const_int(*offset)?;
                            if n < 0 {
                                return None;
                            }
                            format!(", {n}")
                        }
                        _ => return None, // a default value: its type rules are not checked here
                    };
                    // Another row's value: a varying scale would be the current row's.
                    if value.ty.varying {
                        return None;
                    }
                    Some(Typed { sql: format!("{name}({}{offset}){over}", value.sql), narrow: None, ..value })
                }
                ("first_value" | "last_value", [value]) => {
                    let value = self.expr(*value)?;
                    if value.ty.varying {
                        return None;
                    }
                    Some(Typed { sql: format!("{name}({}){over}", value.sql), narrow: None, ..value })
                }
                _ => None,
            }
        }
    }

    unsafe fn sublink(&mut self, s: *mut pg_sys::SubLink) -> Option<Typed> {
        unsafe {
            let sub = (*s).subselect as *mut pg_sys::Query;
            let bool_ty = Ty::of(pg_sys::BOOLOID);
            match (*s).subLinkType {
                pg_sys::SubLinkType::EXISTS_SUBLINK => {
                    let (sql, _) = self.query_sql(sub)?;
                    typed(format!("(EXISTS ({sql}))"), bool_ty)
                }
                pg_sys::SubLinkType::EXPR_SUBLINK => {
                    let (sql, types) = self.query_sql(sub)?;
                    let [Some(ty)] = types.as_slice() else { return None };
                    match self.hoist(sub, &sql) {
                        Some(read) => typed(read, *ty),
                        None => typed(format!("({sql})"), *ty),
                    }
                }
                pg_sys::SubLinkType::ANY_SUBLINK => {
                    // testexpr: `lhs = $param` for a one-column IN.
                    let test = (*s).testexpr as *mut Node;
                    if test.is_null() || (*test).type_ != NodeTag::T_OpExpr {
                        return None;
                    }
                    let op = test as *mut pg_sys::OpExpr;
                    if builtin_operator_name((*op).opno)?.as_str() != "=" {
                        return None;
                    }
                    let args = list_nodes((*op).args);
                    let [lhs, _] = args.as_slice() else { return None };
                    let lhs = self.expr(*lhs)?;
                    let (sql, types) = self.query_sql(sub)?;
                    let [Some(ty)] = types.as_slice() else { return None };
                    if !groupable(lhs.ty) || !comparable(lhs.ty.oid, ty.oid) || lhs.ty.oid == pg_sys::NUMERICOID && lhs.ty.decimal.is_none() {
                        return None;
                    }
                    if crate::scan::deparse::is_collatable(lhs.ty.oid) && !text_equality_is_bytewise((*op).inputcollid) {
                        return None;
                    }
                    if lhs.ty.oid == pg_sys::NUMERICOID {
                        // DuckDB gives IN one DECIMAL for both sides and, past 38 digits, cuts
                        // its scale (rounding values); compare at the larger scale explicitly
                        // (a value too large for it is an error).
                        let scale = lhs.ty.decimal?.1.max(ty.decimal?.1);
                        return typed(
                            format!(
                                "(CAST({} AS DECIMAL(38,{scale})) IN (SELECT CAST(\"c1\" AS DECIMAL(38,{scale})) FROM ({sql}) AS pg_in))",
                                lhs.sql
                            ),
                            bool_ty,
                        );
                    }
                    typed(format!("({} IN ({sql}))", lhs.sql), bool_ty)
                }
                _ => None,
            }
        }
    }
}

unsafe fn const_text(node: *mut Node) -> Option<String> {
    unsafe {
        if (*node).type_ != NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull || (*c).consttype != pg_sys::TEXTOID {
            return None;
        }
        Some(output_text((*c).constvalue, pg_sys::TEXTOID).to_lowercase())
    }
}

