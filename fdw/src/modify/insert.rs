//! INSERT (and COPY FROM) into a lake table.

use pgrx::{PgRelation, pg_sys};

use crate::catalog::cache::lake_for;
use crate::duck::sql;
use crate::modify::staging::Staging;
use crate::error::{LakeError, LakeResult};
use crate::options::{TableOptions, lake_column_name};
use crate::types::encode::Encoder;

struct Column {
    attno: usize,
    encoder: Encoder,
}

pub struct InsertState {
    table: String,
    target: String,
    column_list: String,
    /// What the final INSERT selects from the staging table.
    select_list: String,
    staging: Staging,
    columns: Vec<Column>,
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
            if table.snapshot_id.is_some() || table.as_of.is_some() {
                return Err(LakeError::NotSupported(format!(
                    "cannot insert into \"{}\": it is pinned to a past snapshot (option snapshot_id or as_of)",
                    relation.name()
                )));
            }
            let server_oid = (*pg_sys::GetForeignTable(relid)).serverid;
            let lake = lake_for(server_oid)?;
            lake.note_write();
            let target = sql::qualified(&lake.instance.alias, &table.schema, &table.table);
            let lake_types = lake.table_columns(&table.schema, &table.table).map_err(|e| with_context(e, &table.display()))?;
            let mut names = Vec::new();
            let mut staged = Vec::new();
            let mut selected = Vec::new();
            let mut columns = Vec::new();
            for attr in relation.tuple_desc().iter().filter(|a| !a.is_dropped()) {
                let lake_name = lake_column_name(relid, attr.attnum, attr.name());
                let name = sql::ident(&lake_name);
                let encoder = Encoder::new(attr.type_oid().value());
                if encoder.is_array() {
                    let lake_type = lake_types.iter().find(|(n, _)| *n == lake_name).map(|(_, t)| t.clone());
                    let lake_type = lake_type.ok_or_else(|| LakeError::DuckDb(format!(
                        "column \"{lake_name}\" does not exist in DuckLake table {}", table.display()
                    )))?;
                    staged.push(format!("CAST(NULL AS VARCHAR) AS {name}"));
                    selected.push(format!("CAST(CAST({name} AS JSON) AS {lake_type})"));
                } else {
                    staged.push(name.clone());
                    selected.push(name.clone());
                }
                names.push(name);
                columns.push(Column { attno: attr.attnum as usize, encoder });
            }
            let staging = Staging::create(lake, &staged.join(", "), &target)
                .map_err(|e| with_context(e, &table.display()))?;
            Ok(InsertState {
                table: table.display(),
                target,
                column_list: names.join(", "),
                select_list: selected.join(", "),
                staging,
                columns,
            })
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
            let row = self
                .columns
                .iter()
                .map(|c| c.encoder.encode(values[c.attno - 1], nulls[c.attno - 1]))
                .collect();
            self.staging.push(row).map_err(|e| with_context(e, &self.table))
        }
    }

    /// Write everything staged into the lake table (inside the lake's transaction).
    pub fn finish(&mut self) -> LakeResult<()> {
        let statement = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            self.target,
            self.column_list,
            self.select_list,
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
