//! The aggregates of a query and how each is maintained: count, sum, avg, min and
//! max keep a running value per group; every other aggregate is recomputed for the
//! groups a change touches, with the query's own call.

use super::tree::{case_when, deparse, int4_one, var_like};
use super::types::{name_of_function, require_key_type, type_name};
use crate::error::{IvmError, IvmResult};
use crate::sql::ident;
use pgrx::{PgList, pg_sys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// Any other aggregate (DISTINCT forms, bool_and/bool_or, string_agg and array_agg
    /// with ORDER BY, ordered-set aggregates, statistics...): no running value follows
    /// it under deletions, so every group a change touches is aggregated again from its
    /// rows at the target snapshot (like a group whose min was deleted), the cost of
    /// reading that group, not the table.
    Recomputed,
}

impl AggKind {
    /// The built-in aggregate of a kind with a running value, qualified so that no
    /// look-alike on the search path can stand in for it in the generated SQL.
    pub fn function(self) -> &'static str {
        match self {
            AggKind::CountStar | AggKind::Count => "pg_catalog.count",
            AggKind::Sum => "pg_catalog.sum",
            AggKind::Avg => "pg_catalog.avg",
            AggKind::Min => "pg_catalog.min",
            AggKind::Max => "pg_catalog.max",
            // Its call is the query's own, see `Aggregate::call`.
            AggKind::Recomputed => "",
        }
    }
}

/// One aggregate of the query, kept in state columns `a<n>`, `a<n>_n`, ...
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub kind: AggKind,
    /// Column prefix in the state table, `a1`, `a2`, ...
    pub column: String,
    /// The argument, a column of the rows (alias `c`); None for count(*).
    pub argument: Option<String>,
    /// For avg: the type the running sum is kept in (`numeric` or `float8`).
    pub avg_sum_type: Option<&'static str>,
    /// A sum or average of floats: its running value is not exact under deletions,
    /// so a group that lost rows is recomputed.
    pub inexact: bool,
    /// A recomputed aggregate: the query's call with every expression in it replaced
    /// by a column of the rows (Vars of relation 1, numbered as the rows' columns).
    call: Option<*mut pg_sys::Node>,
}

impl Aggregate {
    /// `count(c.<column>)` of the rows' column `column`, as state column `column`.
    pub fn count_of_column(column: &str) -> Aggregate {
        Aggregate {
            kind: AggKind::Count,
            column: column.to_string(),
            argument: Some(format!("c.{}", ident(column))),
            avg_sum_type: None,
            inexact: false,
            call: None,
        }
    }

    /// The call of a recomputed aggregate over the rows (alias `c`), deparsed against
    /// `rows_relid`, a table with the rows' columns.
    pub fn call_sql(&self, rows_relid: pg_sys::Oid) -> Option<String> {
        self.call.map(|call| deparse(call, "c", rows_relid))
    }

    /// State columns of this aggregate, in table order.
    pub fn state_columns(&self) -> Vec<String> {
        let suffixes: &[&str] = match self.kind {
            AggKind::CountStar | AggKind::Count => &[""],
            AggKind::Recomputed => &[""],
            AggKind::Sum | AggKind::Min | AggKind::Max => &["", "_n", "_ins", "_del"],
            AggKind::Avg => &["", "_n", "_s", "_ins", "_del"],
        };
        suffixes.iter().map(|s| format!("{}{s}", self.column)).collect()
    }
}

/// Aggregates whose value depends on the order their rows come in: without ORDER BY
/// the query itself has no one answer.
const ORDER_SENSITIVE: &[&str] = &[
    "string_agg", "array_agg", "json_agg", "jsonb_agg", "json_agg_strict", "jsonb_agg_strict", "json_object_agg",
    "jsonb_object_agg", "json_object_agg_strict", "jsonb_object_agg_strict", "json_object_agg_unique",
    "jsonb_object_agg_unique", "json_object_agg_unique_strict", "jsonb_object_agg_unique_strict", "xmlagg",
    "json_arrayagg", "json_objectagg",
];

/// Classify an aggregate call: the plain forms of count, sum, avg, min and max keep a
/// running value (with FILTER as the aggregate of a CASE); every other aggregate is
/// recomputed per touched group. Returns the aggregate and the columns of the rows it
/// reads (named `a<number>` or `a<number>_<i>`, the first at position `first_attno`).
pub unsafe fn aggregate_of(
    aggref: *mut pg_sys::Aggref,
    number: usize,
    first_attno: i16,
) -> IvmResult<(Aggregate, Vec<(String, *mut pg_sys::Node)>)> {
    unsafe {
        let a = &*aggref;
        let (name, builtin) = name_of_function(a.aggfnoid);
        if a.agglevelsup != 0 {
            return Err(IvmError::unsupported(format!("aggregate {name}() of an outer query")));
        }
        let distinct = !a.aggdistinct.is_null();
        let arguments = PgList::<pg_sys::TargetEntry>::from_pg(a.args);
        let argument: Option<*mut pg_sys::Node> = arguments.get_ptr(0).map(|t| (*t).expr as *mut pg_sys::Node);
        let plain = builtin && a.aggkind == b'n' as std::ffi::c_char && a.aggorder.is_null();
        let running = match (plain, name.as_str(), a.aggstar, arguments.len(), distinct) {
            (true, "count", true, 0, false) => Some(AggKind::CountStar),
            (true, "count", false, 1, false) => Some(AggKind::Count),
            (true, "sum", false, 1, false) => Some(AggKind::Sum),
            (true, "avg", false, 1, false) => Some(AggKind::Avg),
            // The extreme of the distinct values is the extreme of all of them.
            (true, "min", false, 1, _) => Some(AggKind::Min),
            (true, "max", false, 1, _) => Some(AggKind::Max),
            _ => None,
        };
        let column = format!("a{number}");
        let Some(kind) = running else {
            return recomputed(aggref, &name, builtin, column, first_attno);
        };
        // agg(x) FILTER (WHERE p) is agg(CASE WHEN p THEN x END): every aggregate above
        // skips NULL inputs, and the CASE is NULL exactly where the filter is not true
        // (false or NULL). count(*) FILTER (WHERE p) counts CASE WHEN p THEN 1 END.
        let (kind, argument) = if a.aggfilter.is_null() {
            (kind, argument)
        } else {
            let (kind, value) = match (kind, argument) {
                (AggKind::CountStar, _) | (_, None) => (AggKind::Count, int4_one()),
                (kind, Some(value)) => (kind, value),
            };
            (kind, Some(case_when(a.aggfilter as *mut pg_sys::Node, value)))
        };
        let mut avg_sum_type = None;
        let mut inexact = false;
        if let (AggKind::Sum | AggKind::Avg, Some(arg)) = (kind, argument) {
            let input = pg_sys::exprType(arg);
            let numeric_input = [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID, pg_sys::NUMERICOID].contains(&input);
            let float_input = [pg_sys::FLOAT4OID, pg_sys::FLOAT8OID].contains(&input);
            if !numeric_input && !float_input {
                return Err(IvmError::unsupported(format!("{name}() over type {}", type_name(input))));
            }
            if kind == AggKind::Avg {
                avg_sum_type = Some(if numeric_input { "numeric" } else { "float8" });
            }
            inexact = float_input;
        }
        if let (AggKind::Min | AggKind::Max, Some(arg)) = (kind, argument) {
            require_key_type(arg, &format!("{name}()"))?;
        }
        let aggregate = Aggregate {
            kind,
            argument: argument.map(|_| format!("c.{}", ident(&column))),
            avg_sum_type,
            inexact,
            call: None,
            column: column.clone(),
        };
        Ok((aggregate, argument.map(|argument| vec![(column, argument)]).unwrap_or_default()))
    }
}

/// An aggregate recomputed per touched group: the query's own call, each of its
/// aggregated arguments, ORDER BY expressions and FILTER read from a column of the
/// rows. Refused when recomputing a group could give another value than the query
/// over the same rows: an order-sensitive aggregate without ORDER BY, arithmetic on
/// floats (its last digits depend on the order of the terms), or direct arguments of
/// an ordered-set aggregate that read columns.
unsafe fn recomputed(
    aggref: *mut pg_sys::Aggref,
    name: &str,
    builtin: bool,
    column: String,
    first_attno: i16,
) -> IvmResult<(Aggregate, Vec<(String, *mut pg_sys::Node)>)> {
    unsafe {
        let a = &*aggref;
        if builtin && a.aggorder.is_null() && ORDER_SENSITIVE.contains(&name) {
            return Err(IvmError::unsupported(format!(
                "{name}() without ORDER BY (its result depends on the order the rows come in)"
            )));
        }
        let arguments = PgList::<pg_sys::TargetEntry>::from_pg(a.args);
        // Sums of floats (and statistics built on them) differ in their last digits
        // with the order of the terms; what a user-defined aggregate does is unknown.
        let summing = !builtin
            || name.starts_with("regr_")
            || ["sum", "avg", "stddev", "stddev_samp", "stddev_pop", "variance", "var_samp", "var_pop", "covar_pop",
                "covar_samp", "corr"]
                .contains(&name);
        for entry in arguments.iter_ptr() {
            let input = pg_sys::exprType((*entry).expr as *mut pg_sys::Node);
            if summing && !(*entry).resjunk && [pg_sys::FLOAT4OID, pg_sys::FLOAT8OID].contains(&input) {
                return Err(IvmError::unsupported(format!(
                    "{name}() of {} recomputed per group (its last digits depend on the order of the rows)",
                    type_name(input)
                )));
            }
        }
        if !builtin && !immutable_aggregate(a.aggfnoid)? {
            return Err(IvmError::unsupported(format!(
                "aggregate {name}() whose transition or final function is not IMMUTABLE (it could read what a refresh does not track)"
            )));
        }
        if !a.aggdirectargs.is_null() && pg_sys::contain_var_clause(a.aggdirectargs as *mut pg_sys::Node) {
            return Err(IvmError::unsupported(format!("{name}() with direct arguments that read columns")));
        }
        let call = pg_sys::copyObjectImpl(aggref as *const std::ffi::c_void) as *mut pg_sys::Aggref;
        let mut columns: Vec<(String, *mut pg_sys::Node)> = Vec::new();
        let mut as_column = |expression: *mut pg_sys::Node| -> *mut pg_sys::Node {
            let attno = first_attno + columns.len() as i16;
            columns.push((format!("{column}_{}", columns.len() + 1), expression));
            let var = var_like(expression, 1);
            (*(var as *mut pg_sys::Var)).varattno = attno;
            (*(var as *mut pg_sys::Var)).varattnosyn = attno;
            var
        };
        // Postgres computes the arguments only of rows that pass FILTER (`100 / y`
        // FILTER (WHERE y <> 0)); as columns of every row they are guarded the same way,
        // and the rows FILTER leaves out never reach the aggregate.
        let filter = (*call).aggfilter as *mut pg_sys::Node;
        for entry in PgList::<pg_sys::TargetEntry>::from_pg((*call).args).iter_ptr() {
            let mut argument = (*entry).expr as *mut pg_sys::Node;
            if !filter.is_null() {
                argument = case_when(pg_sys::copyObjectImpl(filter as *const std::ffi::c_void) as *mut pg_sys::Node, argument);
            }
            (*entry).expr = as_column(argument) as *mut pg_sys::Expr;
        }
        if !filter.is_null() {
            (*call).aggfilter = as_column(filter) as *mut pg_sys::Expr;
        }
        let aggregate = Aggregate {
            kind: AggKind::Recomputed,
            argument: None,
            avg_sum_type: None,
            inexact: false,
            call: Some(call as *mut pg_sys::Node),
            column,
        };
        Ok((aggregate, columns))
    }
}

/// Whether a user-defined aggregate's transition and final functions are IMMUTABLE
/// (the aggregate's own entry in pg_proc always is).
fn immutable_aggregate(aggregate: pg_sys::Oid) -> IvmResult<bool> {
    Ok(pgrx::Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.bool_and(p.provolatile = 'i') FROM pg_catalog.pg_aggregate a \
           JOIN pg_catalog.pg_proc p ON p.oid IN (a.aggtransfn, a.aggfinalfn) WHERE a.aggfnoid = $1",
        &[aggregate.into()],
    )?
    .unwrap_or(false))
}
