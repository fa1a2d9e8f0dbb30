//! Expression trees: rewriting onto the state table's columns, and deparsing back to
//! SQL with Postgres' own ruleutils.

use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};
use std::ffi::{CStr, CString, c_void};

/// SQL text of `node`, whose Vars (varno 1) name columns of `relid`, written with `alias.`.
pub fn deparse(node: *mut pg_sys::Node, alias: &str, relid: pg_sys::Oid) -> String {
    let alias = CString::new(alias).expect("alias without NUL");
    // SAFETY: deparse_context_for builds a one-relation namespace for an existing relation;
    // deparse_expression returns a palloc'd string.
    unsafe {
        let context = pg_sys::deparse_context_for(alias.as_ptr(), relid);
        let text = pg_sys::deparse_expression(node, context, true, false);
        CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

/// A Var of relation 1, column `attno`, typed like `node`.
pub unsafe fn var_like(node: *mut pg_sys::Node, attno: i16) -> *mut pg_sys::Node {
    unsafe {
        pg_sys::makeVar(
            1 as _,
            attno,
            pg_sys::exprType(node),
            pg_sys::exprTypmod(node),
            pg_sys::exprCollation(node),
            0 as _,
        ) as *mut pg_sys::Node
    }
}

pub unsafe fn equal(a: *mut pg_sys::Node, b: *mut pg_sys::Node) -> bool {
    unsafe { pg_sys::equal(a as *const c_void, b as *const c_void) }
}

/// Rebuild `node` bottom-up, calling `replace` on every sub-node first: when it returns
/// Some, that replaces the sub-node and its children are not visited.
pub fn mutate<F>(node: *mut pg_sys::Node, replace: &mut F) -> *mut pg_sys::Node
where
    F: FnMut(*mut pg_sys::Node) -> Option<*mut pg_sys::Node>,
{
    struct Context<'a> {
        replace: &'a mut dyn FnMut(*mut pg_sys::Node) -> Option<*mut pg_sys::Node>,
    }

    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn callback(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node {
        if node.is_null() {
            return node;
        }
        // SAFETY: context is the Context passed to the walk below.
        let ctx = unsafe { &mut *(context as *mut Context) };
        if let Some(replacement) = (ctx.replace)(node) {
            return replacement;
        }
        unsafe { tree_mutator(node, context) }
    }

    #[cfg(not(feature = "pg15"))]
    unsafe fn tree_mutator(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node {
        unsafe { pg_sys::expression_tree_mutator_impl(node, Some(callback), context) }
    }

    #[cfg(feature = "pg15")]
    unsafe fn tree_mutator(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node {
        // PG15 declares the callback without a prototype.
        let untyped: unsafe extern "C-unwind" fn() -> *mut pg_sys::Node =
            unsafe { std::mem::transmute(callback as unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> *mut pg_sys::Node) };
        unsafe { pg_sys::expression_tree_mutator(node, Some(untyped), context) }
    }

    let mut context = Context { replace };
    // SAFETY: the callback only runs during this call, while `context` lives.
    unsafe { callback(node, &mut context as *mut Context as *mut c_void) }
}

/// `CASE WHEN condition THEN value END`, of value's type and collation.
pub unsafe fn case_when(condition: *mut pg_sys::Node, value: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        let (typid, typmod, collid) = (pg_sys::exprType(value), pg_sys::exprTypmod(value), pg_sys::exprCollation(value));
        let mut when = pgrx::PgBox::<pg_sys::CaseWhen>::alloc_node(pg_sys::NodeTag::T_CaseWhen);
        when.expr = condition as *mut pg_sys::Expr;
        when.result = value as *mut pg_sys::Expr;
        when.location = -1;
        let mut whens = PgList::<pg_sys::CaseWhen>::new();
        whens.push(when.into_pg());
        let mut case = pgrx::PgBox::<pg_sys::CaseExpr>::alloc_node(pg_sys::NodeTag::T_CaseExpr);
        case.casetype = typid;
        case.casecollid = collid;
        case.args = whens.into_pg();
        case.defresult = pg_sys::makeNullConst(typid, typmod, collid) as *mut pg_sys::Expr;
        case.location = -1;
        case.into_pg() as *mut pg_sys::Node
    }
}

/// The integer constant 1.
pub unsafe fn int4_one() -> *mut pg_sys::Node {
    unsafe {
        pg_sys::makeConst(pg_sys::INT4OID, -1, pg_sys::InvalidOid, 4, pg_sys::Datum::from(1i32), false, true)
            as *mut pg_sys::Node
    }
}

/// The JoinExprs of a FROM tree (a FromExpr, a list of FROM items, or one item),
/// outer ones before the joins they contain.
pub unsafe fn joins_of(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::JoinExpr> {
    unsafe {
        let mut found = Vec::new();
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            if node.is_null() {
                continue;
            }
            match (*node).type_ {
                pg_sys::NodeTag::T_List => stack.extend(PgList::<pg_sys::Node>::from_pg(node as *mut pg_sys::List).iter_ptr()),
                pg_sys::NodeTag::T_FromExpr => stack.push((*(node as *mut pg_sys::FromExpr)).fromlist as *mut pg_sys::Node),
                pg_sys::NodeTag::T_JoinExpr => {
                    let join = node as *mut pg_sys::JoinExpr;
                    found.push(join);
                    stack.push((*join).larg);
                    stack.push((*join).rarg);
                }
                _ => {}
            }
        }
        found
    }
}

/// The sides of `join` that it pads with NULLs: none for an inner join, the right
/// one for LEFT JOIN, the left one for RIGHT JOIN, both for FULL JOIN.
pub unsafe fn nullable_sides_of(join: *mut pg_sys::JoinExpr) -> Vec<*mut pg_sys::Node> {
    unsafe {
        match (*join).jointype {
            pg_sys::JoinType::JOIN_LEFT => vec![(*join).rarg],
            pg_sys::JoinType::JOIN_RIGHT => vec![(*join).larg],
            pg_sys::JoinType::JOIN_FULL => vec![(*join).larg, (*join).rarg],
            _ => Vec::new(),
        }
    }
}

/// Call `f` on the query of each subquery expression of `query`'s level (not on those
/// nested in them, nor on sub-selects in FROM or WITH), stopping at its first error.
pub unsafe fn each_subquery_expression(
    query: *mut pg_sys::Query,
    f: &mut dyn FnMut(*mut pg_sys::Query) -> IvmResult<()>,
) -> IvmResult<()> {
    struct Context<'a> {
        f: &'a mut dyn FnMut(*mut pg_sys::Query) -> IvmResult<()>,
        failure: Option<IvmError>,
    }

    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
        unsafe {
            if node.is_null() {
                return false;
            }
            if pgrx::is_a(node, pg_sys::NodeTag::T_SubLink) {
                let ctx = &mut *(context as *mut Context);
                let sublink = node as *mut pg_sys::SubLink;
                if let Err(e) = (ctx.f)((*sublink).subselect as *mut pg_sys::Query) {
                    ctx.failure = Some(e);
                    return true;
                }
                return pg_sys::expression_tree_walker((*sublink).testexpr, Some(walker), context);
            }
            pg_sys::expression_tree_walker(node, Some(walker), context)
        }
    }

    let mut context = Context { f, failure: None };
    // SAFETY: the walker only runs during this call, while `context` lives.
    unsafe {
        pg_sys::query_tree_walker(
            query,
            Some(walker),
            &mut context as *mut Context as *mut c_void,
            (pg_sys::QTW_IGNORE_RT_SUBQUERIES | pg_sys::QTW_IGNORE_CTE_SUBQUERIES) as i32,
        );
    }
    context.failure.map_or(Ok(()), Err)
}

/// Range-table entry `index` of `query`.
pub unsafe fn rt_fetch(query: *mut pg_sys::Query, index: i32) -> *mut pg_sys::RangeTblEntry {
    unsafe {
        PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable)
            .get_ptr(index as usize - 1)
            .expect("an entry of the range table")
    }
}

/// `node` moved one query level down (into a subquery of its level): every Var
/// reaches one level further up.
pub fn one_level_down(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    mutate(node, &mut |node| {
        // SAFETY: reads the tag of, and copies, a node of the tree being rebuilt.
        unsafe {
            if !pgrx::is_a(node, pg_sys::NodeTag::T_Var) {
                return None;
            }
            let var = pg_sys::copyObjectImpl(node as *const std::ffi::c_void) as *mut pg_sys::Var;
            (*var).varlevelsup += 1;
            Some(var as *mut pg_sys::Node)
        }
    })
}
