//! Postgres datums to DuckDB values, for writing rows into a lake.
//!
//! Values are handed to DuckDB in the closest native form (integers, floats,
//! dates, timestamps, intervals, blobs); types without one travel as their Postgres
//! text form (numeric, uuid, json, ...; arrays as JSON) and DuckDB casts them to the
//! lake column's type, so a value that does not fit is DuckDB's error, never a
//! silent change.

use std::ffi::CStr;

use duckdb::types::{TimeUnit, Value};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::FromDatum;

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Converts one column's datums; built once per statement.
pub struct Encoder {
    type_oid: Oid,
    output_fn: Oid,
    is_array: bool,
}

impl Encoder {
    pub fn new(type_oid: Oid) -> Encoder {
        // SAFETY: catalog lookups of an existing type.
        unsafe {
            let mut output_fn = pg_sys::InvalidOid;
            let mut varlena = false;
            pg_sys::getTypeOutputInfo(type_oid, &mut output_fn, &mut varlena);
            let is_array = pg_sys::get_element_type(type_oid) != pg_sys::InvalidOid;
            Encoder { type_oid, output_fn, is_array }
        }
    }

    /// # Safety
    /// `datum` must be a value of this encoder's type (ignored when `isnull`).
    pub unsafe fn encode(&self, datum: Datum, isnull: bool) -> Value {
        if isnull {
            return Value::Null;
        }
        unsafe {
            match self.type_oid {
                pg_sys::BOOLOID => Value::Boolean(datum.value() != 0),
                pg_sys::INT2OID => Value::SmallInt(datum.value() as i16),
                pg_sys::INT4OID => Value::Int(datum.value() as i32),
                pg_sys::INT8OID => Value::BigInt(datum.value() as i64),
                pg_sys::FLOAT4OID => Value::Float(f32::from_datum(datum, false).unwrap_or(f32::NAN)),
                pg_sys::FLOAT8OID => Value::Double(f64::from_datum(datum, false).unwrap_or(f64::NAN)),
                pg_sys::TEXTOID | pg_sys::VARCHAROID => Value::Text(String::from_datum(datum, false).unwrap_or_default()),
                pg_sys::BYTEAOID => Value::Blob(<&[u8]>::from_datum(datum, false).unwrap_or_default().to_vec()),
                pg_sys::DATEOID => match datum.value() as i32 {
                    i32::MAX => Value::Date32(i32::MAX),
                    i32::MIN => Value::Date32(-i32::MAX),
                    days => Value::Date32(days + PG_EPOCH_DAYS),
                },
                pg_sys::TIMEOID => Value::Time64(TimeUnit::Microsecond, datum.value() as i64),
                pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => Value::Timestamp(
                    TimeUnit::Microsecond,
                    match datum.value() as i64 {
                        i64::MAX => i64::MAX,
                        i64::MIN => -i64::MAX,
                        micros => micros + PG_EPOCH_MICROS,
                    },
                ),
                pg_sys::INTERVALOID => {
                    let interval = datum.cast_mut_ptr::<pg_sys::Interval>();
                    Value::Interval {
                        months: (*interval).month,
                        days: (*interval).day,
                        nanos: (*interval).time.saturating_mul(1000),
                    }
                }
                // DuckDB's appender cannot bind lists: arrays travel as JSON text and
                // are cast to the lake's list type by the final INSERT.
                _ if self.is_array() => Value::Text(array_json(datum)),
                _ => Value::Text(self.text(datum)),
            }
        }
    }

    unsafe fn text(&self, datum: Datum) -> String {
        unsafe { CStr::from_ptr(pg_sys::OidOutputFunctionCall(self.output_fn, datum)).to_string_lossy().into_owned() }
    }

    /// Arrays are staged as JSON text (see `modify::insert`).
    pub fn is_array(&self) -> bool {
        self.is_array
    }
}

unsafe fn array_json(datum: Datum) -> String {
    unsafe {
        let json = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::array_to_json, &[Some(datum)])
            .expect("array_to_json returns a value for a non-null array");
        String::from_datum(json, false).unwrap_or_default()
    }
}
