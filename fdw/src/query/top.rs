//! The outermost select list of a pushed query: DuckDB outputs, and the Postgres
//! expressions computed over them. Each select item is a Var of one output when DuckDB
//! computes it exactly; else Postgres' own operator or function over such pieces (avg
//! of a bigint as numeric_div(sum, count), which is how Postgres computes avg; a cast
//! through an output function); a numeric of varying display scale is its value and
//! its scale, joined by Postgres' round(value, scale).

use pgrx::pg_sys::{self, Node, NodeTag};

use crate::pg_nodes::list_nodes;
use crate::query::model::{PushedOutput, PushedQuery};
use crate::query::translate::Translator;
use crate::types::kind::Kind;

/// The translated outermost query.
pub struct Top {
    pub query: PushedQuery,
    pub params: Vec<*mut Node>,
    /// The plan's target list: Postgres expressions over the scan's outputs.
    pub targets: Vec<Target>,
    /// The outermost ORDER BY and LIMIT/OFFSET, when Postgres applies them.
    pub postgres_sort: Option<*mut pg_sys::Query>,
}

pub struct Target {
    pub expr: *mut Node,
    pub name: *mut std::ffi::c_char,
    pub sortgroupref: pg_sys::Index,
    pub junk: bool,
}

/// Outputs under construction: DuckDB select items and their Postgres types.
#[derive(Default)]
struct Outputs {
    items: Vec<String>,
    outputs: Vec<PushedOutput>,
    /// Whether Postgres may divide on top of the select item being translated.
    postgres_on_top: bool,
}

impl Outputs {
    /// A DuckDB output of Postgres type `type_oid`; returns the Var reading it.
    unsafe fn add(&mut self, sql: &str, type_oid: pg_sys::Oid, typmod: i32, collation: pg_sys::Oid) -> *mut Node {
        let item = Kind::of(type_oid, typmod).duck_expression_of(sql);
        unsafe { self.add_item(item, type_oid, typmod, collation) }
    }

    /// A numeric output that DuckDB computes as a DECIMAL: read as one (see
    /// `types::decode`), not as its text. An expression in the select list, a cast to
    /// text included, is computed for every row before ORDER BY ... LIMIT, and keeps
    /// DuckDB from reading the other columns of the rows it keeps only (TPC-H 2).
    unsafe fn add_decimal(&mut self, sql: &str, typmod: i32) -> *mut Node {
        unsafe { self.add_item(sql.to_owned(), pg_sys::NUMERICOID, typmod, pg_sys::InvalidOid) }
    }

    unsafe fn add_item(&mut self, item: String, type_oid: pg_sys::Oid, typmod: i32, collation: pg_sys::Oid) -> *mut Node {
        unsafe {
            let position = self.items.len() + 1;
            let name = format!("c{position}");
            self.items.push(format!("{item} AS {}", crate::duck::sql::ident(&name)));
            self.outputs.push(PushedOutput { name, type_oid: type_oid.to_u32(), typmod });
            pg_sys::makeVar(pg_sys::INDEX_VAR as i32, position as i16, type_oid, typmod, collation, 0).cast()
        }
    }
}

pub unsafe fn translate_top(q: *mut pg_sys::Query) -> Option<Top> {
    unsafe {
        let mut translator = Translator::new();
        let outputs = std::cell::RefCell::new(Outputs::default());
        let targets = std::cell::RefCell::new(Vec::new());
        let make_items = |t: &mut Translator| -> Option<Vec<String>> {
            let order_keys: Vec<pg_sys::Index> = list_nodes((*q).sortClause)
                .into_iter()
                .map(|c| (*(c as *mut pg_sys::SortGroupClause)).tleSortGroupRef)
                .collect();
            for tle in list_nodes((*q).targetList) {
                let tle = tle as *mut pg_sys::TargetEntry;
                let sort_key = (*tle).ressortgroupref != 0 && order_keys.contains(&(*tle).ressortgroupref);
                if (*tle).resjunk && !sort_key {
                    continue;
                }
                let expr = (*tle).expr as *mut Node;
                // Dividing in Postgres would move the sort, or DISTINCT, out of DuckDB.
                outputs.borrow_mut().postgres_on_top = !sort_key && (*q).distinctClause.is_null();
                let target = boundary(t, &mut outputs.borrow_mut(), expr)?;
                // What Postgres computes on top is sorted by Postgres, and cannot be
                // de-duplicated in DuckDB.
                let computed_on_top = (*target).type_ != NodeTag::T_Var;
                if computed_on_top && !(*q).distinctClause.is_null() {
                    return None;
                }
                if computed_on_top && sort_key {
                    t.sort_in_postgres = true;
                }
                targets.borrow_mut().push(Target {
                    expr: target,
                    name: (*tle).resname,
                    sortgroupref: (*tle).ressortgroupref,
                    junk: (*tle).resjunk,
                });
            }
            Some(std::mem::take(&mut outputs.borrow_mut().items))
        };
        let sql = translator.top_select(q, &make_items)?;
        if sql.contains('\0') {
            return None;
        }
        let server = translator.server?;
        let outputs = outputs.into_inner();
        Some(Top {
            query: PushedQuery {
                server_oid: server.to_u32(),
                sql,
                tables: translator.tables.clone(),
                outputs: outputs.outputs,
                params: translator.params.len(),
                not_whole: None,
            },
            params: translator.params.clone(),
            targets: targets.into_inner(),
            postgres_sort: (translator.sort_in_postgres && !(*q).sortClause.is_null()).then_some(q),
        })
    }
}

/// A sub-select whose every output DuckDB computes exactly, as Vars of the scan (no
/// Postgres expression on top, no Postgres sort): its query and parameters.
pub unsafe fn translate_exact(q: *mut pg_sys::Query) -> Option<(PushedQuery, Vec<*mut Node>)> {
    unsafe {
        let top = translate_top(q)?;
        let exact = top.postgres_sort.is_none() && top.targets.iter().all(|t| (*t.expr).type_ == NodeTag::T_Var);
        exact.then_some((top.query, top.params))
    }
}

/// The outermost select item `expr` as a Postgres expression over DuckDB outputs:
/// a Var of one output when DuckDB computes it exactly, else Postgres' own operator
/// or function over such pieces (avg(x) becoming numeric_div(sum(x), count(x))).
unsafe fn boundary(t: &mut Translator, outputs: &mut Outputs, expr: *mut Node) -> Option<*mut Node> {
    unsafe {
        let saved_params = t.params.len();
        // Numeric division (avg is sum / count) on top of the query is Postgres' own
        // numeric_div, as cheap per value as DuckDB's emulation of it, whose SQL took
        // DuckDB longer to plan than to run TPC-H 1 (19 of 23 ms of planning).
        if outputs.postgres_on_top && divides_numerics(expr) {
            let saved_outputs = outputs.items.len();
            if let Some(on_top) = postgres_over_outputs(t, outputs, expr) {
                return Some(on_top);
            }
            outputs.items.truncate(saved_outputs);
            outputs.outputs.truncate(saved_outputs);
            t.params.truncate(saved_params);
        }
        let kind = Kind::of(pg_sys::exprType(expr), pg_sys::exprTypmod(expr));
        // A lake column is read as its comparable expression, already of the output's
        // DuckDB type: a second cast would make the select item differ from the same
        // column in ORDER BY, which DuckDB then computes apart from the select list,
        // keeping its top-N from reading the other columns of the rows it keeps only
        // (TPC-H 2).
        let lake_column = (*expr).type_ == NodeTag::T_Var
            && t.is_lake_column(expr as *mut pg_sys::Var)
            && !matches!(kind, Kind::Json | Kind::Array(_) | Kind::ViaInput);
        match t.expr(expr) {
            Some(typed) if lake_column => {
                return Some(outputs.add_item(typed.sql, pg_sys::exprType(expr), pg_sys::exprTypmod(expr), pg_sys::exprCollation(expr)));
            }
            Some(typed) if !typed.ty.varying && typed.ty.oid == pg_sys::NUMERICOID && typed.ty.decimal.is_some() => {
                return Some(outputs.add_decimal(&typed.sql, pg_sys::exprTypmod(expr)));
            }
            Some(typed) if !typed.ty.varying => {
                return Some(outputs.add(&typed.sql, pg_sys::exprType(expr), pg_sys::exprTypmod(expr), pg_sys::exprCollation(expr)));
            }
            // A numeric of varying display scale: its value and its scale, joined by
            // Postgres' round(value, scale), which sets the scale and keeps every digit.
            Some(typed) if typed.scale.is_some() => {
                let scale = typed.scale.as_deref()?;
                let value = match typed.ty.decimal {
                    Some(_) => outputs.add_decimal(&typed.sql, -1),
                    None => outputs.add(&typed.sql, pg_sys::NUMERICOID, -1, pg_sys::InvalidOid),
                };
                let scale = outputs.add(&format!("CAST({scale} AS INTEGER)"), pg_sys::INT4OID, -1, pg_sys::InvalidOid);
                return Some(numeric_call(pg_sys::F_ROUND_NUMERIC_INT4, value, scale));
            }
            _ => {}
        }
        t.params.truncate(saved_params);
        postgres_over_outputs(t, outputs, expr)
    }
}

/// `expr` computed by Postgres over DuckDB outputs.
unsafe fn postgres_over_outputs(t: &mut Translator, outputs: &mut Outputs, expr: *mut Node) -> Option<*mut Node> {
    unsafe {
        match (*expr).type_ {
            NodeTag::T_Aggref => average(t, outputs, expr as *mut pg_sys::Aggref),
            NodeTag::T_OpExpr => {
                let op = pg_sys::copyObjectImpl(expr.cast()) as *mut pg_sys::OpExpr;
                if (*op).opno.to_u32() >= pg_sys::FirstNormalObjectId || pg_sys::op_volatile((*op).opno) as u8 == b'v' {
                    return None;
                }
                (*op).args = boundary_list(t, outputs, (*op).args)?;
                Some(op.cast())
            }
            NodeTag::T_FuncExpr => {
                let f = pg_sys::copyObjectImpl(expr.cast()) as *mut pg_sys::FuncExpr;
                if (*f).funcid.to_u32() >= pg_sys::FirstNormalObjectId || (*f).funcretset || pg_sys::func_volatile((*f).funcid) as u8 == b'v' {
                    return None;
                }
                (*f).args = boundary_list(t, outputs, (*f).args)?;
                Some(f.cast())
            }
            // `x::text` and other casts through a built-in type's output function.
            NodeTag::T_CoerceViaIO => {
                let c = pg_sys::copyObjectImpl(expr.cast()) as *mut pg_sys::CoerceViaIO;
                if pg_sys::exprType((*c).arg.cast()).to_u32() >= pg_sys::FirstNormalObjectId
                    || (*c).resulttype.to_u32() >= pg_sys::FirstNormalObjectId
                {
                    return None;
                }
                (*c).arg = boundary(t, outputs, (*c).arg.cast())?.cast();
                Some(c.cast())
            }
            _ => None,
        }
    }
}

/// avg() of a numeric result, or a numeric division.
unsafe fn divides_numerics(expr: *mut Node) -> bool {
    unsafe {
        match (*expr).type_ {
            NodeTag::T_Aggref => {
                let a = expr as *mut pg_sys::Aggref;
                (*a).aggtype == pg_sys::NUMERICOID
                    && std::ffi::CStr::from_ptr(pg_sys::get_func_name((*a).aggfnoid)).to_bytes() == b"avg"
            }
            NodeTag::T_OpExpr => pg_sys::get_opcode((*(expr as *mut pg_sys::OpExpr)).opno) == pg_sys::Oid::from(pg_sys::F_NUMERIC_DIV),
            _ => false,
        }
    }
}

unsafe fn boundary_list(t: &mut Translator, outputs: &mut Outputs, args: *mut pg_sys::List) -> Option<*mut pg_sys::List> {
    unsafe {
        let mut list: *mut pg_sys::List = std::ptr::null_mut();
        for arg in list_nodes(args) {
            // A constant argument stays a constant of the Postgres expression: some
            // functions need one where they are printed (EXTRACT's field: EXPLAIN
            // VERBOSE crashed the backend deparsing a scan output there).
            let arg = if (*arg).type_ == NodeTag::T_Const {
                pg_sys::copyObjectImpl(arg.cast()) as *mut Node
            } else {
                boundary(t, outputs, arg)?
            };
            list = pg_sys::lappend(list, arg.cast());
        }
        Some(list)
    }
}

/// avg() of integers or numerics: DuckDB's exact sum and count, divided by Postgres'
/// numeric_div, which is what Postgres' avg does (NULL sum over no rows: NULL).
unsafe fn average(t: &mut Translator, outputs: &mut Outputs, a: *mut pg_sys::Aggref) -> Option<*mut Node> {
    unsafe {
        let name = std::ffi::CStr::from_ptr(pg_sys::get_func_name((*a).aggfnoid)).to_string_lossy().into_owned();
        if name != "avg" || (*a).aggfnoid.to_u32() >= pg_sys::FirstNormalObjectId || (*a).aggtype != pg_sys::NUMERICOID {
            return None;
        }
        // sum(x) and count(x) of the same aggregate call (DISTINCT and FILTER included).
        let arg_type = pg_sys::exprType((*(list_nodes((*a).args)[0] as *mut pg_sys::TargetEntry)).expr.cast());
        let sum_sql = sum_sql(t, a, arg_type)?;
        let count_sql = count_sql(t, a)?;
        let sum_var = outputs.add_decimal(&sum_sql, -1);
        let count_var = outputs.add(&count_sql, pg_sys::INT8OID, -1, pg_sys::InvalidOid);
        let count_numeric = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_NUMERIC_INT8),
            pg_sys::NUMERICOID,
            pg_sys::lappend(std::ptr::null_mut(), count_var.cast()),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CAST,
        );
        Some(numeric_call(pg_sys::F_NUMERIC_DIV, sum_var, count_numeric.cast()))
    }
}

/// A call of Postgres' numeric function `funcid` (returning numeric) on two arguments.
unsafe fn numeric_call(funcid: u32, first: *mut Node, second: *mut Node) -> *mut Node {
    unsafe {
        let mut args = pg_sys::lappend(std::ptr::null_mut(), first.cast());
        args = pg_sys::lappend(args, second.cast());
        pg_sys::makeFuncExpr(
            pg_sys::Oid::from(funcid),
            pg_sys::NUMERICOID,
            args,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        )
        .cast()
    }
}

/// sum() over avg's argument, as a numeric.
unsafe fn sum_sql(t: &mut Translator, a: *mut pg_sys::Aggref, arg_type: pg_sys::Oid) -> Option<String> {
    unsafe {
        let typed = t.aggregate_as(a, "sum")?;
        match arg_type {
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => Some(format!("CAST({} AS DECIMAL(38,0))", typed.sql)),
            pg_sys::NUMERICOID if !typed.ty.varying => typed.ty.decimal.map(|_| typed.sql),
            _ => None,
        }
    }
}

unsafe fn count_sql(t: &mut Translator, a: *mut pg_sys::Aggref) -> Option<String> {
    unsafe { t.aggregate_as(a, "count").map(|typed| typed.sql) }
}
