//! Postgres datums to Arrow columns, for writing rows into a lake.
//!
//! Each written column is collected in an Arrow builder of the closest native
//! form (integers, floats, text, dates, timestamps, intervals, uuids, blobs), so
//! a batch reaches DuckDB's appender as whole columns rather than one boxed value
//! per cell. Types without a native form travel as their Postgres text (numeric,
//! json, ...; arrays as JSON), and the statement that moves the staged rows into the
//! lake casts each column to the lake column's type, so a value that does not fit
//! is DuckDB's error, never a silent change.

use std::collections::HashMap;
use std::ffi::CStr;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, StructBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use pgrx::pg_sys::{self, Datum, Oid};

use crate::types::kind::Kind;

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const UUID_BYTES: i32 = 16;

/// Converts one column's datums; built once per statement.
#[derive(Clone)]
pub struct Encoder {
    /// How the value is staged: as the kind a scan reads it as, text (through the
    /// output function) for `ViaInput` and `Json`, JSON text for arrays.
    kind: Kind,
    output_fn: Oid,
}

impl Encoder {
    pub fn new(type_oid: Oid) -> Encoder {
        // Postgres has already applied the column's typmod to the values written.
        let kind = Kind::of(type_oid, -1);
        let mut output_fn = pg_sys::InvalidOid;
        if matches!(kind, Kind::ViaInput | Kind::Json) {
            let mut varlena = false;
            // SAFETY: catalog lookup of an existing type.
            unsafe { pg_sys::getTypeOutputInfo(type_oid, &mut output_fn, &mut varlena) };
        }
        Encoder { kind, output_fn }
    }

    /// An encoder for DuckLake rowids (int8 datums).
    pub fn rowid() -> Encoder {
        Encoder { kind: Kind::Int64, output_fn: pg_sys::InvalidOid }
    }

    /// Staged as JSON text, which reaches a nested lake type through DuckDB's JSON.
    pub fn via_json(&self) -> bool {
        matches!(self.kind, Kind::Json | Kind::Array(_))
    }

    /// The DuckDB type of the staging column.
    pub fn staging_column_type(&self) -> &'static str {
        match self.kind {
            Kind::Interval => "STRUCT(months INTEGER, days INTEGER, micros BIGINT)",
            _ => self.staged_type(),
        }
    }

    /// `column` (of the staging table) as a value of `staged_type()`.
    pub fn staged_value(&self, column: &str) -> String {
        match self.kind {
            // duckdb-rs drops the nulls of Arrow interval arrays, so intervals are
            // staged as a struct of their three fields.
            Kind::Interval => {
                format!("(to_months({column}.months) + to_days({column}.days) + to_microseconds({column}.micros))")
            }
            _ => column.to_owned(),
        }
    }

    /// The DuckDB type of the staged values (arrays, json and text forms as VARCHAR).
    pub fn staged_type(&self) -> &'static str {
        self.kind.duck_type()
    }

    /// The Arrow field DuckDB's appender maps to `staged_type()`.
    pub fn field(&self, name: &str) -> Field {
        let data_type = match self.kind {
            Kind::Bool => DataType::Boolean,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Text | Kind::ViaInput | Kind::Json | Kind::Array(_) => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Interval => DataType::Struct(interval_fields()),
            Kind::Uuid => DataType::FixedSizeBinary(UUID_BYTES),
        };
        let field = Field::new(name, data_type, true);
        if self.kind == Kind::Uuid {
            field.with_metadata(HashMap::from([("ARROW:extension:name".to_owned(), "arrow.uuid".to_owned())]))
        } else {
            field
        }
    }

    pub fn builder(&self, capacity: usize) -> ColumnBuilder {
        match self.kind {
            Kind::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int16 => ColumnBuilder::Int16(Int16Builder::with_capacity(capacity)),
            Kind::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(capacity)),
            Kind::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            Kind::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(capacity)),
            Kind::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            Kind::Text | Kind::ViaInput | Kind::Json | Kind::Array(_) => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            Kind::Bytea => ColumnBuilder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            Kind::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Kind::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity)),
            Kind::TimestampTz => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            Kind::Interval => ColumnBuilder::Interval(StructBuilder::from_fields(interval_fields(), capacity)),
            Kind::Uuid => ColumnBuilder::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, UUID_BYTES)),
        }
    }

    /// Append one value to `builder` (made by `self.builder`).
    ///
    /// # Safety
    /// `datum` must be a value of this encoder's type (ignored when `isnull`).
    pub unsafe fn append(&self, builder: &mut ColumnBuilder, datum: Datum, isnull: bool) {
        if isnull {
            builder.append_null();
            return;
        }
        unsafe {
            match (self.kind, builder) {
                (Kind::Bool, ColumnBuilder::Bool(b)) => b.append_value(datum.value() != 0),
                (Kind::Int16, ColumnBuilder::Int16(b)) => b.append_value(datum.value() as i16),
                (Kind::Int32, ColumnBuilder::Int32(b)) => b.append_value(datum.value() as i32),
                (Kind::Int64, ColumnBuilder::Int64(b)) => b.append_value(datum.value() as i64),
                (Kind::Float32, ColumnBuilder::Float32(b)) => b.append_value(f32::from_bits(datum.value() as u32)),
                (Kind::Float64, ColumnBuilder::Float64(b)) => b.append_value(f64::from_bits(datum.value() as u64)),
                (Kind::Text, ColumnBuilder::Text(b)) => {
                    with_varlena_bytes(datum, |bytes| b.append_value(String::from_utf8_lossy(bytes)))
                }
                (Kind::Bytea, ColumnBuilder::Bytes(b)) => with_varlena_bytes(datum, |bytes| b.append_value(bytes)),
                (Kind::Date, ColumnBuilder::Date(b)) => b.append_value(match datum.value() as i32 {
                    i32::MAX => i32::MAX,
                    i32::MIN => -i32::MAX,
                    days => days + PG_EPOCH_DAYS,
                }),
                (Kind::Time, ColumnBuilder::Time(b)) => b.append_value(datum.value() as i64),
                (Kind::Timestamp | Kind::TimestampTz, ColumnBuilder::Timestamp(b)) => {
                    b.append_value(match datum.value() as i64 {
                        i64::MAX => i64::MAX,
                        i64::MIN => -i64::MAX,
                        micros => micros + PG_EPOCH_MICROS,
                    })
                }
                (Kind::Interval, ColumnBuilder::Interval(b)) => {
                    let interval = &*datum.cast_mut_ptr::<pg_sys::Interval>();
                    interval_field::<Int32Builder>(b, 0).append_value(interval.month);
                    interval_field::<Int32Builder>(b, 1).append_value(interval.day);
                    interval_field::<Int64Builder>(b, 2).append_value(interval.time);
                    b.append(true);
                }
                (Kind::Uuid, ColumnBuilder::Uuid(b)) => {
                    let bytes = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), UUID_BYTES as usize);
                    b.append_value(bytes).expect("a uuid has 16 bytes")
                }
                (Kind::ViaInput | Kind::Json, ColumnBuilder::Text(b)) => {
                    let text = pg_sys::OidOutputFunctionCall(self.output_fn, datum);
                    b.append_value(CStr::from_ptr(text).to_string_lossy());
                    pg_sys::pfree(text.cast());
                }
                (Kind::Array(_), ColumnBuilder::Text(b)) => b.append_value(array_json(datum)),
                (kind, _) => unreachable!("a {kind:?} encoder appends to its own builder"),
            }
        }
    }
}

/// One staged column being filled.
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(StructBuilder),
    Uuid(FixedSizeBinaryBuilder),
}

impl ColumnBuilder {
    fn inner(&mut self) -> &mut dyn ArrayBuilder {
        match self {
            ColumnBuilder::Bool(b) => b,
            ColumnBuilder::Int16(b) => b,
            ColumnBuilder::Int32(b) => b,
            ColumnBuilder::Int64(b) => b,
            ColumnBuilder::Float32(b) => b,
            ColumnBuilder::Float64(b) => b,
            ColumnBuilder::Text(b) => b,
            ColumnBuilder::Bytes(b) => b,
            ColumnBuilder::Date(b) => b,
            ColumnBuilder::Time(b) => b,
            ColumnBuilder::Timestamp(b) => b,
            ColumnBuilder::Interval(b) => b,
            ColumnBuilder::Uuid(b) => b,
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Interval(b) => {
                // DuckDB reads a struct's fields even where the struct is NULL.
                interval_field::<Int32Builder>(b, 0).append_null();
                interval_field::<Int32Builder>(b, 1).append_null();
                interval_field::<Int64Builder>(b, 2).append_null();
                b.append_null();
            }
            ColumnBuilder::Uuid(b) => b.append_null(),
        }
    }

    /// The values appended so far, as an array; the builder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        self.inner().finish()
    }
}

fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, true),
        Field::new("days", DataType::Int32, true),
        Field::new("micros", DataType::Int64, true),
    ])
}

fn interval_field<T: ArrayBuilder>(builder: &mut StructBuilder, index: usize) -> &mut T {
    builder.field_builder::<T>(index).expect("the interval struct's fields")
}

/// `f` of the bytes of a text/bytea datum; a detoasted copy is freed afterwards, so
/// a million-row statement does not keep a million copies.
unsafe fn with_varlena_bytes<R>(datum: Datum, f: impl FnOnce(&[u8]) -> R) -> R {
    unsafe {
        let original = datum.cast_mut_ptr::<pg_sys::varlena>();
        let value = pg_sys::pg_detoast_datum_packed(original);
        let result = f(std::slice::from_raw_parts(pgrx::vardata_any(value) as *const u8, pgrx::varsize_any_exhdr(value)));
        if value != original {
            pg_sys::pfree(value.cast());
        }
        result
    }
}

unsafe fn array_json(datum: Datum) -> String {
    unsafe {
        let json = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::array_to_json, &[Some(datum)])
            .expect("array_to_json returns a value for a non-null array");
        with_varlena_bytes(json, |bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}
