//! Joins on an outer join's nullable side, made sub-selects.
//!
//! The padding of an outer join changes when whether a row of the preserved side has
//! a match changes (see `outer_joins`), and the analysis asks that of the nullable
//! side as one relation: a table, or a sub-select read as a derived relation (see
//! `rows::Derived`), whose changes and state as it was it computes whole. A join
//! there is the sub-select of its tables' columns:
//!
//!   L ⟕ (B ⋈ C ON φ) ON θ(B, C)  ≡  L ⟕ (SELECT B.*, C.* FROM B ⋈ C ON φ) n ON θ(n)
//!
//! Both pair each row of L with the rows of B ⋈ C that satisfy θ and pad the rows of L
//! that have none, with NULL in every column of B and C; a reference to `B.x` above
//! the join is `n.x`, NULL on a padded row either way (a whole-row reference, which
//! would be a ROW of NULLs instead of NULL, is refused before this rewrite). The same
//! holds for a RIGHT or FULL JOIN's nullable sides and whatever kind of join the side
//! is. An ON condition can read only the join's own inputs, and a LATERAL item inside
//! the side is refused, so the sub-select reads nothing of the level around it but
//! what the levels above it read.
//!
//! The rewrite moves the side's range-table entries into the sub-select (renumbered
//! from 1, in their order) and puts the sub-select in the side's join entry, so the
//! other entries keep their order and are only renumbered over the gap.

use super::join_entries;
use super::outer_joins::join_expr;
use super::manip::{change_var_nodes, drop_entries, has_sublink, increment_var_sublevels_up, replace_vars};
use super::sublinks::alias;
use super::tree::{joins_of, nullable_sides_of, rt_fetch};
use crate::error::{IvmError, IvmResult};
use pgrx::{PgList, pg_sys};
use std::ffi::{CStr, CString};

/// Make every join on a nullable side of `query`'s outer joins, at any depth, a
/// sub-select.
pub unsafe fn wrap_nullable_joins(query: *mut pg_sys::Query) -> IvmResult<()> {
    unsafe {
        // Outermost first; each rewrite renumbers the level, so the next is looked
        // up again. Joins nested in a wrapped one are wrapped inside its sub-select.
        while let Some((outer, side)) = first_joined_side(query) {
            wrap(query, outer, side)?;
        }
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_SUBQUERY {
                wrap_nullable_joins((*rte).subquery)?;
            }
        }
        Ok(())
    }
}

/// The range-table indexes of the first outer join of `query`'s FROM items with a
/// join as a nullable side, and of that side. (Indexes: the rewrites below copy the
/// tree.)
unsafe fn first_joined_side(query: *mut pg_sys::Query) -> Option<(i32, i32)> {
    unsafe {
        joins_of((*query).jointree as *mut pg_sys::Node).into_iter().find_map(|join| {
            nullable_sides_of(join)
                .into_iter()
                .find(|side| pgrx::is_a(*side, pg_sys::NodeTag::T_JoinExpr))
                .map(|side| ((*join).rtindex, (*(side as *mut pg_sys::JoinExpr)).rtindex))
        })
    }
}


/// Replace join `slot`, an input of join `outer`, by a sub-select of its tables'
/// columns (see the module's comment).
unsafe fn wrap(query: *mut pg_sys::Query, outer: i32, slot: i32) -> IvmResult<()> {
    unsafe {
        let mut inside = Vec::new();
        entries_under(join_expr(query, slot) as *mut pg_sys::Node, &mut inside);
        inside.sort_unstable();
        let leaves: Vec<i32> = inside.iter().copied().filter(|i| (*rt_fetch(query, *i)).rtekind != pg_sys::RTEKind::RTE_JOIN).collect();
        if leaves.iter().any(|i| (*rt_fetch(query, *i)).lateral) {
            return Err(IvmError::unsupported("a LATERAL item inside a join on an outer join's nullable side"));
        }
        // Nothing may refer to the joins' columns: their entries move or go.
        join_entries::flatten_join_vars(query);

        // The sub-select's columns: those of its tables that the query reads (only
        // they: a Postgres table read as it was has no others, see
        // `maintenance::capture`), named uniquely (two tables may both have an `id`).
        let read = read_columns(query, &leaves);
        let mut names: Vec<String> = Vec::new();
        let mut outputs = PgList::<pg_sys::TargetEntry>::new();
        // Per table, what each of its columns becomes above: the sub-select's column.
        let mut replacements: Vec<(i32, *mut pg_sys::List)> = Vec::new();
        for &leaf in &leaves {
            let (columns, vars) = join_entries::columns(query, leaf);
            let mut above = PgList::<pg_sys::TargetEntry>::new();
            for (name, var) in PgList::<pg_sys::Node>::from_pg(columns).iter_ptr().zip(PgList::<pg_sys::Var>::from_pg(vars).iter_ptr()) {
                if !read.contains(&(leaf, (*var).varattno)) {
                    continue;
                }
                let name = CStr::from_ptr((*(name as *mut pg_sys::String)).sval).to_string_lossy().into_owned();
                let name = unique(&names, &name);
                let resno = (names.len() + 1) as i16;
                let c_name = CString::new(name.as_str()).expect("a column name has no NUL");
                outputs.push(pg_sys::makeTargetEntry(var as *mut pg_sys::Expr, resno, pg_sys::pstrdup(c_name.as_ptr()), false));
                let reference = pg_sys::makeVar(slot, resno, (*var).vartype, (*var).vartypmod, (*var).varcollid, 0);
                above.push(pg_sys::makeTargetEntry(reference as *mut pg_sys::Expr, (*var).varattno, std::ptr::null_mut(), false));
                names.push(name);
            }
            replacements.push((leaf, above.into_pg()));
        }
        let sub = subselect(query, join_expr(query, slot), &inside, outputs.into_pg());

        // Above the side, its tables' columns are the sub-select's. The joins' records
        // of their columns list every column of their inputs, read or not: they are
        // rebuilt below, from what the joins then read (those inside the side moved
        // whole into the sub-select).
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_JOIN {
                (*rte).joinaliasvars = std::ptr::null_mut();
            }
        }
        for (leaf, above) in replacements {
            *query = *replace_vars(query, leaf, rt_fetch(query, leaf), above);
        }
        let rte = pgrx::PgBox::<pg_sys::RangeTblEntry>::alloc_node(pg_sys::NodeTag::T_RangeTblEntry).into_pg();
        (*rte).rtekind = pg_sys::RTEKind::RTE_SUBQUERY;
        (*rte).subquery = sub;
        let name = format!("nullable_{slot}");
        (*rte).alias = alias(&name, &[]);
        (*rte).eref = alias(&name, &names);
        (*rte).inFromCl = true;
        (*(*(*query).rtable).elements.add(slot as usize - 1)).ptr_value = rte.cast();
        // The side's place in the FROM tree is its sub-select (the same index).
        let mut reference = pgrx::PgBox::<pg_sys::RangeTblRef>::alloc_node(pg_sys::NodeTag::T_RangeTblRef);
        reference.rtindex = slot;
        let reference = reference.into_pg() as *mut pg_sys::Node;
        let outer = join_expr(query, outer);
        let is_slot = |node: *mut pg_sys::Node| pgrx::is_a(node, pg_sys::NodeTag::T_JoinExpr) && (*(node as *mut pg_sys::JoinExpr)).rtindex == slot;
        if is_slot((*outer).larg) {
            (*outer).larg = reference;
        } else {
            debug_assert!(is_slot((*outer).rarg));
            (*outer).rarg = reference;
        }
        drop_entries(query, &inside.into_iter().filter(|i| *i != slot).collect::<Vec<_>>());
        join_entries::rebuild_join_entries(query);
        Ok(())
    }
}

/// The range-table indexes of the FROM tree `node`: its tables and joins.
unsafe fn entries_under(node: *mut pg_sys::Node, found: &mut Vec<i32>) {
    unsafe {
        if pgrx::is_a(node, pg_sys::NodeTag::T_RangeTblRef) {
            found.push((*(node as *mut pg_sys::RangeTblRef)).rtindex);
        } else if pgrx::is_a(node, pg_sys::NodeTag::T_JoinExpr) {
            let join = node as *mut pg_sys::JoinExpr;
            found.push((*join).rtindex);
            entries_under((*join).larg, found);
            entries_under((*join).rarg, found);
        }
    }
}

/// `name`, or `name_2`, `name_3`... if `taken` has it; cut to fit in an identifier
/// (63 bytes), as the parser would cut it, so that it names the column printed.
fn unique(taken: &[String], name: &str) -> String {
    const MAX: usize = pg_sys::NAMEDATALEN as usize - 1;
    let cut = |text: &str, bytes: usize| -> String {
        let mut end = bytes.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    };
    (1..)
        .map(|n| {
            let suffix = if n == 1 { String::new() } else { format!("_{n}") };
            cut(name, MAX - suffix.len()) + &suffix
        })
        .find(|candidate| !taken.contains(candidate))
        .expect("some suffix is free")
}

/// The (entry, column) pairs of the entries `leaves` of `query`'s level that the
/// query reads anywhere, its subqueries included; not those a join's record of its
/// columns lists (nothing refers to them, see `wrap`).
unsafe fn read_columns(query: *mut pg_sys::Query, leaves: &[i32]) -> std::collections::HashSet<(i32, i16)> {
    struct Context<'a> {
        leaves: &'a [i32],
        depth: u32,
        found: std::collections::HashSet<(i32, i16)>,
    }

    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walker(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        unsafe {
            if node.is_null() {
                return false;
            }
            let ctx = &mut *(context as *mut Context);
            match (*node).type_ {
                pg_sys::NodeTag::T_Var => {
                    let var = node as *mut pg_sys::Var;
                    if (*var).varlevelsup == ctx.depth && ctx.leaves.contains(&(*var).varno) {
                        ctx.found.insert(((*var).varno, (*var).varattno));
                    }
                    false
                }
                pg_sys::NodeTag::T_Query => {
                    ctx.depth += 1;
                    let flags = pg_sys::QTW_IGNORE_JOINALIASES as i32;
                    let done = pg_sys::query_tree_walker(node as *mut pg_sys::Query, Some(walker), context, flags);
                    ctx.depth -= 1;
                    done
                }
                _ => pg_sys::expression_tree_walker(node, Some(walker), context),
            }
        }
    }

    let mut context = Context { leaves, depth: 0, found: std::collections::HashSet::new() };
    // SAFETY: the walker only runs during this call, while `context` lives.
    unsafe {
        pg_sys::query_tree_walker(query, Some(walker), &mut context as *mut Context as *mut std::ffi::c_void, pg_sys::QTW_IGNORE_JOINALIASES as i32);
    }
    context.found
}

/// `SELECT outputs FROM side`: a new query level whose range table is the entries
/// `inside` (sorted) of `query`, renumbered from 1. `outputs` refer to them by their
/// numbers in `query`.
unsafe fn subselect(query: *mut pg_sys::Query, side: *mut pg_sys::JoinExpr, inside: &[i32], outputs: *mut pg_sys::List) -> *mut pg_sys::Query {
    unsafe {
        let mut rtable = PgList::<pg_sys::RangeTblEntry>::new();
        #[cfg(not(feature = "pg15"))]
        let mut permissions = PgList::<pg_sys::RTEPermissionInfo>::new();
        for &index in inside {
            let rte = pg_sys::copyObjectImpl(rt_fetch(query, index) as *const std::ffi::c_void) as *mut pg_sys::RangeTblEntry;
            #[cfg(not(feature = "pg15"))]
            if (*rte).perminfoindex > 0 {
                let info = PgList::<pg_sys::RTEPermissionInfo>::from_pg((*query).rteperminfos)
                    .get_ptr((*rte).perminfoindex as usize - 1)
                    .expect("a table's permission entry");
                permissions.push(pg_sys::copyObjectImpl(info as *const std::ffi::c_void) as *mut pg_sys::RTEPermissionInfo);
                (*rte).perminfoindex = permissions.len() as pg_sys::Index;
            }
            rtable.push(rte);
        }
        let from = pg_sys::copyObjectImpl(side as *const std::ffi::c_void) as *mut pg_sys::Node;
        let mut items = PgList::<pg_sys::Node>::new();
        items.push(from);
        let mut sub = pgrx::PgBox::<pg_sys::Query>::alloc_node(pg_sys::NodeTag::T_Query);
        sub.commandType = pg_sys::CmdType::CMD_SELECT;
        sub.querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        sub.canSetTag = true;
        sub.rtable = rtable.into_pg();
        #[cfg(not(feature = "pg15"))]
        {
            sub.rteperminfos = permissions.into_pg();
        }
        sub.jointree = pg_sys::makeFromExpr(items.into_pg(), std::ptr::null_mut());
        sub.targetList = pg_sys::copyObjectImpl(outputs as *const std::ffi::c_void) as *mut pg_sys::List;
        sub.hasSubLinks = has_sublink(from);
        let sub = sub.into_pg();
        // What it reads of the levels above its own (its entries' too: sub-selects,
        // WITH references) is one level further up.
        increment_var_sublevels_up(sub as *mut pg_sys::Node, 1, 1);
        // Each index to its position; both ascend, so no renumbered index is one
        // still to be renumbered.
        for (position, &index) in inside.iter().enumerate() {
            let new = position as i32 + 1;
            if new != index {
                change_var_nodes(sub as *mut pg_sys::Node, index, new);
            }
        }
        sub
    }
}
