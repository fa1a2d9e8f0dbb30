//! UPDATE and DELETE of lake rows, identified by DuckLake's rowid (see `rowid`).
//!
//! The scan below the ModifyTable node returns each row's rowid in its ctid. Rows
//! to delete (rowids) or update (rowid + new values of the assigned columns) are
//! staged like inserts, and the statement ends with one
//! `DELETE FROM t WHERE rowid IN (...)` or `UPDATE t SET ... FROM staging`.

use pgrx::prelude::*;
use pgrx::{PgRelation, pg_sys};

use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::modify::staging::{StagedColumn, Staging};
use crate::error::{LakeError, LakeResult};
use crate::modify::rowid;
use crate::pg_nodes::attribute_numbers;
use crate::options::{TableOptions, lake_column_name};
use crate::types::encode::Encoder;

/// The staging column of the rowids.
const ROWID: &str = "__rowid";

pub struct ChangeState {
    table: String,
    target: String,
    staging: Staging,
    /// Position of the ctid junk column in the subplan's output.
    ctid_attno: i16,
    /// Attribute numbers of the assigned columns (UPDATE only), staged after the rowid.
    columns: Vec<usize>,
    update: bool,
    /// For RETURNING: (attno, position of its old value in the subplan's output).
    old_values: Vec<(i16, i16)>,
}

/// Row identity: the ctid system column, which our scans fill with the rowid. With
/// RETURNING, also the old values of the columns it reads, as junk columns named
/// `ducklake_old_<attno>`: the executor gives an FDW no old row of its own.
#[pg_guard]
pub unsafe extern "C-unwind" fn add_foreign_update_targets(
    root: *mut pg_sys::PlannerInfo,
    rtindex: pg_sys::Index,
    _target_rte: *mut pg_sys::RangeTblEntry,
    target_relation: pg_sys::Relation,
) {
    unsafe {
        let var = pg_sys::makeVar(
            rtindex as _,
            pg_sys::SelfItemPointerAttributeNumber as i16,
            pg_sys::TIDOID,
            -1,
            pg_sys::InvalidOid,
            0,
        );
        pg_sys::add_row_identity_var(root, var, rtindex, c"ctid".as_ptr());
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*target_relation).rd_att);
        for attno in returned_columns(root, rtindex, &desc) {
            let attr = desc.get(attno as usize - 1).expect("a column of the relation");
            let var = pg_sys::makeVar(rtindex as _, attno, attr.atttypid, attr.atttypmod, attr.attcollation, 0);
            let name = std::ffi::CString::new(old_value_name(attno)).expect("no NUL");
            pg_sys::add_row_identity_var(root, var, rtindex, pg_sys::pstrdup(name.as_ptr()));
        }
    }
}

fn old_value_name(attno: i16) -> String {
    format!("ducklake_old_{attno}")
}

/// The user columns of the result relation that RETURNING reads (all of them for a
/// whole-row reference).
unsafe fn returned_columns(root: *mut pg_sys::PlannerInfo, rtindex: pg_sys::Index, desc: &pgrx::PgTupleDesc) -> Vec<i16> {
    unsafe {
        let returning = (*(*root).parse).returningList;
        if returning.is_null() {
            return Vec::new();
        }
        let mut set: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(returning.cast(), rtindex, &mut set);
        let numbers = attribute_numbers(set);
        let natts = desc.len() as i16;
        let live = |a: i16| desc.get(a as usize - 1).is_some_and(|attr| !attr.is_dropped());
        if numbers.contains(&0) {
            (1..=natts).filter(|a| live(*a)).collect()
        } else {
            numbers.into_iter().filter(|a| *a > 0).map(|a| a as i16).filter(|a| live(*a)).collect()
        }
    }
}

/// The attribute numbers an UPDATE assigns, kept in the plan.
#[pg_guard]
pub unsafe extern "C-unwind" fn plan_foreign_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: std::ffi::c_int,
) -> *mut pg_sys::List {
    unsafe {
        let operation = (*plan).operation;
        let mut attnos: *mut pg_sys::List = std::ptr::null_mut();
        if operation == pg_sys::CmdType::CMD_UPDATE {
            let rte = *(*root).simple_rte_array.add(result_relation as usize);
            for attno in attribute_numbers(updated_columns(root, rte)).into_iter().filter(|a| *a > 0) {
                attnos = pg_sys::lappend_int(attnos, attno);
            }
        }
        attnos
    }
}

#[cfg(feature = "pg15")]
unsafe fn updated_columns(_root: *mut pg_sys::PlannerInfo, rte: *mut pg_sys::RangeTblEntry) -> *mut pg_sys::Bitmapset {
    unsafe { (*rte).updatedCols }
}

#[cfg(not(feature = "pg15"))]
unsafe fn updated_columns(root: *mut pg_sys::PlannerInfo, rte: *mut pg_sys::RangeTblEntry) -> *mut pg_sys::Bitmapset {
    unsafe { (*pg_sys::getRTEPermissionInfo((*(*root).parse).rteperminfos, rte)).updatedCols }
}

/// Why a table's rows cannot be changed: they are not its current ones.
pub const PINNED: &str = "it is a change feed or reads a past snapshot (its options snapshot_id, as_of or \
                          snapshot_id_setting, or the settings ducklake.snapshot_id and ducklake.as_of)";

impl ChangeState {
    pub unsafe fn new(
        mtstate: *mut pg_sys::ModifyTableState,
        rinfo: *mut pg_sys::ResultRelInfo,
        fdw_private: *mut pg_sys::List,
    ) -> LakeResult<ChangeState> {
        unsafe {
            let update = (*mtstate).operation == pg_sys::CmdType::CMD_UPDATE;
            let relation = PgRelation::from_pg((*rinfo).ri_RelationDesc);
            let relid = relation.oid();
            let table = TableOptions::of(relid);
            if table.changes || crate::scan::snapshot::reads_the_past(&table)? {
                return Err(LakeError::NotSupported(format!(
                    "cannot change \"{}\": {PINNED}",
                    relation.name()
                )));
            }
            let subplan = (*(*mtstate).ps.lefttree).plan;
            let ctid_attno = pg_sys::ExecFindJunkAttributeInTlist((*subplan).targetlist, c"ctid".as_ptr());
            if ctid_attno <= 0 {
                return Err(LakeError::NotSupported("internal error: no ctid row identity in the plan".into()));
            }
            let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
            let lake = lake_for(server_oid)?;
            let tupdesc = relation.tuple_desc();
            let attnos: Vec<i16> = if update && !fdw_private.is_null() {
                (0..(*fdw_private).length as usize).map(|i| (*(*fdw_private).elements.add(i)).int_value as i16).collect()
            } else {
                Vec::new()
            };
            let lake_columns = if attnos.is_empty() { Vec::new() } else { lake.table_columns(&table.schema, &table.table)? };
            let mut staged = vec![StagedColumn { name: ROWID.into(), encoder: Encoder::rowid(), lake: None }];
            let mut columns = Vec::new();
            for attno in attnos {
                let attr = tupdesc.get((attno - 1) as usize).expect("an assigned column");
                let name = lake_column_name(relid, attno, attr.name());
                let encoder = Encoder::new(attr.type_oid().value());
                staged.push(StagedColumn::for_lake(name, encoder, &lake_columns, &lake.server_name, &table.display())?);
                columns.push(attno as usize);
            }
            let target = sql::qualified(&lake.instance.alias, &table.schema, &table.table);
            let staging = Staging::create(lake, &table, staged)?;
            // Present only with RETURNING (see add_foreign_update_targets); the
            // executor sets up RETURNING only after this callback.
            let mut old_values = Vec::new();
            for attno in 1..=tupdesc.len() as i16 {
                let name = std::ffi::CString::new(old_value_name(attno)).expect("no NUL");
                let position = pg_sys::ExecFindJunkAttributeInTlist((*subplan).targetlist, name.as_ptr());
                if position > 0 {
                    old_values.push((attno, position));
                }
            }
            Ok(ChangeState { table: table.display(), target, staging, ctid_attno, columns, update, old_values })
        }
    }

    pub unsafe fn add(&mut self, slot: *mut pg_sys::TupleTableSlot, plan_slot: *mut pg_sys::TupleTableSlot) -> LakeResult<()> {
        unsafe {
            let attno = self.ctid_attno as i32;
            let needed = self.old_values.iter().map(|(_, p)| *p as i32).chain([attno]).max().unwrap_or(attno);
            if ((*plan_slot).tts_nvalid as i32) < needed {
                pg_sys::slot_getsomeattrs_int(plan_slot, needed);
            }
            if *(*plan_slot).tts_isnull.add(attno as usize - 1) {
                return Err(LakeError::NotSupported("internal error: a row without rowid".into()));
            }
            let tid = (*(*plan_slot).tts_values.add(attno as usize - 1)).cast_mut_ptr::<pg_sys::ItemPointerData>();
            let rowid = pg_sys::Datum::from(rowid::decode(&*tid));
            if self.update {
                let natts = (*(*slot).tts_tupleDescriptor).natts;
                if ((*slot).tts_nvalid as i32) < natts {
                    pg_sys::slot_getsomeattrs_int(slot, natts);
                }
            }
            let assigned = self.columns.iter().map(|attno| (*(*slot).tts_values.add(attno - 1), *(*slot).tts_isnull.add(attno - 1)));
            self.staging.push(std::iter::once((rowid, false)).chain(assigned))?;
            if !self.old_values.is_empty() {
                self.fill_returned_row(slot, plan_slot);
            }
            Ok(())
        }
    }

    /// The row RETURNING sees: for DELETE the old values; for UPDATE the new values of
    /// the assigned columns and the old values of the others (which the executor
    /// leaves NULL for a foreign table).
    unsafe fn fill_returned_row(&self, slot: *mut pg_sys::TupleTableSlot, plan_slot: *mut pg_sys::TupleTableSlot) {
        unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            if self.update {
                if ((*slot).tts_nvalid as usize) < natts {
                    pg_sys::slot_getsomeattrs_int(slot, natts as i32);
                }
            } else {
                if let Some(clear) = (*(*slot).tts_ops).clear {
                    clear(slot);
                }
                for i in 0..natts {
                    *(*slot).tts_values.add(i) = pg_sys::Datum::from(0);
                    *(*slot).tts_isnull.add(i) = true;
                }
            }
            for (attno, position) in &self.old_values {
                if self.update && self.columns.contains(&(*attno as usize)) {
                    continue;
                }
                let i = *attno as usize - 1;
                *(*slot).tts_values.add(i) = *(*plan_slot).tts_values.add(*position as usize - 1);
                *(*slot).tts_isnull.add(i) = *(*plan_slot).tts_isnull.add(*position as usize - 1);
            }
            if !self.update {
                pg_sys::ExecStoreVirtualTuple(slot);
            }
        }
    }

    pub fn finish(&mut self) -> LakeResult<()> {
        let staging = self.staging.table();
        let statement = if self.update {
            let assignments: Vec<String> = self.staging.columns()[1..]
                .iter()
                .map(|c| format!("{} = {}", sql::ident(&c.name), c.value("__staged")))
                .collect();
            format!(
                "UPDATE {} SET {} FROM {staging} AS __staged WHERE {}.rowid = __staged.{ROWID}",
                self.target,
                assignments.join(", "),
                self.target
            )
        } else {
            format!("DELETE FROM {} WHERE rowid IN (SELECT {ROWID} FROM {staging})", self.target)
        };
        self.staging
            .finish(&statement)
            .map_err(|e| match e {
                LakeError::DuckDb(m) => LakeError::DuckDb(format!("changing DuckLake table {}: {m}", self.table)),
                other => other,
            })
    }
}
