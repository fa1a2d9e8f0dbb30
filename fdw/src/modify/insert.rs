//! INSERT (and COPY FROM) into a lake table.

use pgrx::{PgRelation, pg_sys};

use crate::catalog::cache::lake_for_write;
use crate::duck::sql;
use crate::error::{LakeError, LakeResult};
use crate::modify::staging::{StagedColumn, Staging};
use crate::options::{TableOptions, lake_column_name};
use crate::types::encode::Encoder;

pub struct InsertState {
    table: String,
    target: String,
    staging: Staging,
    /// Attribute number of each staged column.
    attnos: Vec<usize>,
}

impl InsertState {
    pub unsafe fn new(relation: pg_sys::Relation) -> LakeResult<InsertState> {
        unsafe {
            let relation = PgRelation::from_pg(relation);
            let relid = relation.oid();
            let table = TableOptions::of(relid);
            if table.changes {
                return Err(LakeError::NotSupported(format!(
                    "cannot insert into \"{}\": it is a change feed (option changes 'true')",
                    relation.name()
                )));
            }
            if table.pinned() {
                return Err(LakeError::NotSupported(format!(
                    "cannot insert into \"{}\": it is pinned to a past snapshot (option snapshot_id, as_of or snapshot_id_setting)",
                    relation.name()
                )));
            }
            let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
            let lake = lake_for_write(server_oid)?;
            let target = sql::qualified(&lake.instance.alias, &table.schema, &table.table);
            let written: Vec<(String, Encoder, usize)> = relation
                .tuple_desc()
                .iter()
                .filter(|a| !a.is_dropped())
                .map(|a| (lake_column_name(relid, a.attnum, a.name()), Encoder::new(a.type_oid().value()), a.attnum as usize))
                .collect();
            let context = |e| with_context(e, &table.display());
            let mut lake_columns = lake.table_columns(&table.schema, &table.table).map_err(context)?;
            if !written.iter().all(|(name, ..)| lake_columns.iter().any(|c| &c.name == name)) {
                // The cached columns may predate another session's ALTER.
                lake_columns = lake.current_columns(&table.schema, &table.table).map_err(context)?;
            }
            let mut columns = Vec::new();
            let mut attnos = Vec::new();
            for (name, encoder, attno) in written {
                columns.push(StagedColumn::for_lake(name, encoder, &lake_columns, &lake.server_name, &table.display())?);
                attnos.push(attno);
            }
            let staging = Staging::create(lake, &table, columns).map_err(|e| with_context(e, &table.display()))?;
            Ok(InsertState { table: table.display(), target, staging, attnos })
        }
    }

    pub unsafe fn add(&mut self, slot: *mut pg_sys::TupleTableSlot) -> LakeResult<()> {
        unsafe {
            let natts = (*(*slot).tts_tupleDescriptor).natts;
            if ((*slot).tts_nvalid as i32) < natts {
                pg_sys::slot_getsomeattrs_int(slot, natts);
            }
            let values = std::slice::from_raw_parts((*slot).tts_values, natts as usize);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, natts as usize);
            let row = self.attnos.iter().map(|attno| (values[attno - 1], nulls[attno - 1]));
            self.staging.push(row).map_err(|e| with_context(e, &self.table))
        }
    }

    /// Write everything staged into the lake table (inside the lake's transaction).
    pub fn finish(&mut self) -> LakeResult<()> {
        let columns = self.staging.columns();
        let names: Vec<String> = columns.iter().map(|c| sql::ident(&c.name)).collect();
        let values: Vec<String> = columns.iter().map(|c| c.value("s")).collect();
        let statement = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} AS s",
            self.target,
            names.join(", "),
            values.join(", "),
            self.staging.table()
        );
        self.staging.finish(&statement).map_err(|e| with_context(e, &self.table))
    }
}

fn with_context(e: LakeError, table: &str) -> LakeError {
    match e {
        LakeError::DuckDb(message) => LakeError::DuckDb(format!("writing to DuckLake table {table}: {message}")),
        other => other,
    }
}
