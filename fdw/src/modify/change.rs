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
use crate::modify::staging::Staging;
use crate::error::{LakeError, LakeResult, raise};
use crate::modify::rowid;
use crate::pg_nodes::attribute_numbers;
use crate::options::{TableOptions, lake_column_name};
use crate::types::encode::Encoder;

struct Column {
    attno: usize,
    name: String,
    encoder: Encoder,
}

pub struct ChangeState {
    table: String,
    target: String,
    staging: Staging,
    /// Position of the ctid junk column in the subplan's output.
    ctid_attno: i16,
    /// Assigned columns (UPDATE only).
    columns: Vec<Column>,
    update: bool,
}

/// Row identity: the ctid system column, which our scans fill with the rowid.
#[pg_guard]
pub unsafe extern "C-unwind" fn add_foreign_update_targets(
    root: *mut pg_sys::PlannerInfo,
    rtindex: pg_sys::Index,
    _target_rte: *mut pg_sys::RangeTblEntry,
    _target_relation: pg_sys::Relation,
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
        if operation != pg_sys::CmdType::CMD_INSERT && !(*plan).returningLists.is_null() {
            raise(LakeError::NotSupported("RETURNING is not supported for UPDATE or DELETE on DuckLake tables".into()));
        }
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
            if table.changes || table.snapshot_id.is_some() || table.as_of.is_some() {
                return Err(LakeError::NotSupported(format!(
                    "cannot change \"{}\": it is a change feed or pinned to a past snapshot",
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
            lake.note_write();
            let tupdesc = relation.tuple_desc();
            let columns: Vec<Column> = if update {
                let attnos: Vec<i16> = if fdw_private.is_null() {
                    Vec::new()
                } else {
                    (0..(*fdw_private).length as usize).map(|i| (*(*fdw_private).elements.add(i)).int_value as i16).collect()
                };
                attnos
                    .into_iter()
                    .map(|attno| {
                        let attr = tupdesc.get((attno - 1) as usize).expect("an assigned column");
                        Column {
                            attno: attno as usize,
                            name: lake_column_name(relid, attno, attr.name()),
                            encoder: Encoder::new(attr.type_oid().value()),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if columns.iter().any(|c| c.encoder.is_array()) {
                return Err(LakeError::NotSupported("UPDATE of array columns is not supported yet".into()));
            }
            let target = sql::qualified(&lake.instance.alias, &table.schema, &table.table);
            let staged: Vec<String> = std::iter::once("CAST(NULL AS BIGINT) AS __rowid".to_owned())
                .chain(columns.iter().map(|c| sql::ident(&c.name)))
                .collect();
            let staging = Staging::create(lake, &staged.join(", "), &target)?;
            Ok(ChangeState { table: table.display(), target, staging, ctid_attno, columns, update })
        }
    }

    pub unsafe fn add(&mut self, slot: *mut pg_sys::TupleTableSlot, plan_slot: *mut pg_sys::TupleTableSlot) -> LakeResult<()> {
        unsafe {
            let attno = self.ctid_attno as i32;
            if ((*plan_slot).tts_nvalid as i32) < attno {
                pg_sys::slot_getsomeattrs_int(plan_slot, attno);
            }
            if *(*plan_slot).tts_isnull.add(attno as usize - 1) {
                return Err(LakeError::NotSupported("internal error: a row without rowid".into()));
            }
            let tid = (*(*plan_slot).tts_values.add(attno as usize - 1)).cast_mut_ptr::<pg_sys::ItemPointerData>();
            let mut row = vec![duckdb::types::Value::BigInt(rowid::decode(&*tid))];
            if self.update {
                let natts = (*(*slot).tts_tupleDescriptor).natts;
                if ((*slot).tts_nvalid as i32) < natts {
                    pg_sys::slot_getsomeattrs_int(slot, natts);
                }
                for c in &self.columns {
                    row.push(c.encoder.encode(*(*slot).tts_values.add(c.attno - 1), *(*slot).tts_isnull.add(c.attno - 1)));
                }
            }
            self.staging.push(row)
        }
    }

    pub fn finish(&mut self) -> LakeResult<()> {
        let staging = self.staging.table();
        let statement = if self.update {
            let assignments: Vec<String> = self
                .columns
                .iter()
                .map(|c| format!("{} = __staged.{}", sql::ident(&c.name), sql::ident(&c.name)))
                .collect();
            format!(
                "UPDATE {} SET {} FROM {staging} AS __staged WHERE {}.rowid = __staged.__rowid",
                self.target,
                assignments.join(", "),
                self.target
            )
        } else {
            format!("DELETE FROM {} WHERE rowid IN (SELECT __rowid FROM {staging})", self.target)
        };
        self.staging
            .finish(&statement)
            .map_err(|e| match e {
                LakeError::DuckDb(m) => LakeError::DuckDb(format!("changing DuckLake table {}: {m}", self.table)),
                other => other,
            })
    }
}
