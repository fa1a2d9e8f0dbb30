//! Arrow values to Postgres datums.
//!
//! A `Decoder` is built once per scan column from its Postgres type; `decode` turns
//! row `row` of an Arrow array into a datum allocated in the current (per-tuple)
//! memory context. DuckDB was asked for exactly the Arrow shape each decoder expects
//! (see `kind`), so a mismatch is a bug reported as an error, never a crash.

use std::cell::RefCell;

use arrow::array::{Array, AsArray, GenericListArray, OffsetSizeTrait};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType,
};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;

use crate::error::{LakeError, LakeResult};
use crate::types::kind::Kind;

/// Days and microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Valid Postgres ranges, in Postgres-epoch units (see datatype/timestamp.h).
const MIN_DATE: i32 = -2_451_545;
const END_DATE: i32 = 2_145_031_949;
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

pub struct Decoder {
    kind: Kind,
    /// For `ViaInput` (and array elements read that way): the type's input function.
    input: Option<InputFunction>,
    /// For arrays: how to build the array and read its elements.
    element: Option<Box<ElementInfo>>,
    column: String,
    type_oid: Oid,
}

struct InputFunction {
    flinfo: Box<pg_sys::FmgrInfo>,
    typioparam: Oid,
    typmod: i32,
    buffer: RefCell<Vec<u8>>,
}

struct ElementInfo {
    decoder: Decoder,
    type_oid: Oid,
    len: i16,
    by_val: bool,
    align: std::ffi::c_char,
}

impl InputFunction {
    fn for_type(type_oid: Oid, typmod: i32) -> InputFunction {
        // SAFETY: catalog lookups for an existing type; fmgr_info fills the struct and
        // caches in the current (per-query) memory context.
        unsafe {
            let mut input_fn = pg_sys::InvalidOid;
            let mut typioparam = pg_sys::InvalidOid;
            pg_sys::getTypeInputInfo(type_oid, &mut input_fn, &mut typioparam);
            let mut flinfo: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
            pg_sys::fmgr_info(input_fn, flinfo.as_mut());
            InputFunction { flinfo, typioparam, typmod, buffer: RefCell::new(Vec::with_capacity(64)) }
        }
    }

    fn call(&self, text: &str) -> Datum {
        let mut buffer = self.buffer.borrow_mut();
        buffer.clear();
        buffer.extend_from_slice(text.as_bytes());
        buffer.push(0);
        // SAFETY: NUL-terminated buffer; the input function may raise an ERROR, which
        // pgrx turns into a Rust panic that unwinds to the executor's guard.
        unsafe {
            pg_sys::InputFunctionCall(
                (self.flinfo.as_ref() as *const pg_sys::FmgrInfo).cast_mut(),
                buffer.as_mut_ptr().cast(),
                self.typioparam,
                self.typmod,
            )
        }
    }
}

impl Decoder {
    pub fn new(column: &str, type_oid: Oid, typmod: i32) -> Decoder {
        let kind = Kind::of(type_oid, typmod);
        let input = matches!(kind, Kind::ViaInput | Kind::Json)
            .then(|| InputFunction::for_type(type_oid, typmod));
        let element = match kind {
            Kind::Array(element_oid) => {
                let (mut len, mut by_val, mut align) = (0i16, false, 0 as std::ffi::c_char);
                // SAFETY: catalog lookup of an existing type.
                unsafe { pg_sys::get_typlenbyvalalign(element_oid, &mut len, &mut by_val, &mut align) };
                Some(Box::new(ElementInfo {
                    decoder: Decoder::new(column, element_oid, -1),
                    type_oid: element_oid,
                    len,
                    by_val,
                    align,
                }))
            }
            _ => None,
        };
        Decoder { kind, input, element, column: column.to_owned(), type_oid }
    }

    fn mismatch(&self, data_type: &DataType) -> LakeError {
        LakeError::DuckDb(format!(
            "column \"{}\" arrived as Arrow {data_type}, which does not match Postgres type {}",
            self.column,
            type_name(self.type_oid)
        ))
    }

    fn out_of_range(&self, reason: &str) -> LakeError {
        LakeError::ValueOutOfRange {
            column: self.column.clone(),
            pg_type: type_name(self.type_oid),
            reason: reason.to_owned(),
        }
    }

    /// The datum for row `row` of `array`, `None` for NULL.
    pub fn decode(&self, array: &dyn Array, row: usize) -> LakeResult<Option<Datum>> {
        if array.is_null(row) {
            return Ok(None);
        }
        let wrong = || self.mismatch(array.data_type());
        let datum = match self.kind {
            Kind::Bool => array.as_boolean_opt().ok_or_else(wrong)?.value(row).into_datum(),
            Kind::Int16 => array.as_primitive_opt::<Int16Type>().ok_or_else(wrong)?.value(row).into_datum(),
            Kind::Int32 => array.as_primitive_opt::<Int32Type>().ok_or_else(wrong)?.value(row).into_datum(),
            Kind::Int64 => array.as_primitive_opt::<Int64Type>().ok_or_else(wrong)?.value(row).into_datum(),
            Kind::Float32 => {
                array.as_primitive_opt::<Float32Type>().ok_or_else(wrong)?.value(row).into_datum()
            }
            Kind::Float64 => {
                array.as_primitive_opt::<Float64Type>().ok_or_else(wrong)?.value(row).into_datum()
            }
            Kind::Text => text_value(array, row).ok_or_else(wrong)?.into_datum(),
            Kind::Json | Kind::ViaInput => {
                let input = self.input.as_ref().expect("input function for text-read kinds");
                match array.data_type() {
                    // A numeric that DuckDB computed as a DECIMAL (see `query::top`):
                    // its digits at the DECIMAL's scale, which is the display scale.
                    DataType::Decimal128(_, scale) if self.type_oid == pg_sys::NUMERICOID => {
                        let value = array.as_primitive_opt::<Decimal128Type>().ok_or_else(wrong)?.value(row);
                        Some(input.call(&ducklake_formats::decimal::decimal_text(value, *scale)))
                    }
                    _ => Some(input.call(text_value(array, row).ok_or_else(wrong)?)),
                }
            }
            Kind::Bytea => binary_value(array, row).ok_or_else(wrong)?.into_datum(),
            Kind::Uuid => Some(self.uuid(array, row)?),
            Kind::Date => {
                let days = array.as_primitive_opt::<Date32Type>().ok_or_else(wrong)?.value(row);
                Some(Datum::from(self.date(days)?))
            }
            Kind::Time => {
                Some(Datum::from(array.as_primitive_opt::<Time64MicrosecondType>().ok_or_else(wrong)?.value(row)))
            }
            Kind::Timestamp | Kind::TimestampTz => {
                let micros = array.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(wrong)?.value(row);
                Some(Datum::from(self.timestamp(micros)?))
            }
            Kind::Interval => {
                let v = array.as_primitive_opt::<IntervalMonthDayNanoType>().ok_or_else(wrong)?.value(row);
                // SAFETY: palloc in the current memory context, fully initialised below.
                unsafe {
                    let interval = pg_sys::palloc(std::mem::size_of::<pg_sys::Interval>()) as *mut pg_sys::Interval;
                    (*interval).time = v.nanoseconds / 1_000;
                    (*interval).day = v.days;
                    (*interval).month = v.months;
                    Some(Datum::from(interval))
                }
            }
            Kind::Array(_) => Some(match array.data_type() {
                DataType::List(_) => self.array(array.as_list::<i32>(), row)?,
                DataType::LargeList(_) => self.array(array.as_list::<i64>(), row)?,
                other => return Err(self.mismatch(other)),
            }),
        };
        Ok(datum)
    }

    fn date(&self, days: i32) -> LakeResult<i32> {
        Ok(match days {
            i32::MAX => i32::MAX,
            d if d == -i32::MAX || d == i32::MIN => i32::MIN,
            d => {
                let pg = d as i64 - PG_EPOCH_DAYS as i64;
                if pg < MIN_DATE as i64 || pg >= END_DATE as i64 {
                    return Err(self.out_of_range("date out of range"));
                }
                pg as i32
            }
        })
    }

    fn timestamp(&self, micros: i64) -> LakeResult<i64> {
        Ok(match micros {
            i64::MAX => i64::MAX,
            m if m == -i64::MAX || m == i64::MIN => i64::MIN,
            m => {
                let pg = m
                    .checked_sub(PG_EPOCH_MICROS)
                    .filter(|pg| (MIN_TIMESTAMP..END_TIMESTAMP).contains(pg))
                    .ok_or_else(|| self.out_of_range("timestamp out of range"))?;
                pg
            }
        })
    }

    fn uuid(&self, array: &dyn Array, row: usize) -> LakeResult<Datum> {
        let bytes: [u8; 16] = if let Some(fixed) = array.as_fixed_size_binary_opt() {
            fixed.value(row).try_into().map_err(|_| self.mismatch(array.data_type()))?
        } else {
            let text = text_value(array, row).ok_or_else(|| self.mismatch(array.data_type()))?;
            parse_uuid(text).ok_or_else(|| self.out_of_range(&format!("\"{text}\" is not a uuid")))?
        };
        Ok(pgrx::Uuid::from_bytes(bytes).into_datum().expect("uuid datum"))
    }

    fn array<O: OffsetSizeTrait>(&self, list: &GenericListArray<O>, row: usize) -> LakeResult<Datum> {
        let element = self.element.as_ref().expect("element info for array kinds");
        let offsets = list.value_offsets();
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        let values = list.values();
        let mut datums = Vec::with_capacity(end - start);
        let mut nulls = Vec::with_capacity(end - start);
        for i in start..end {
            match element.decoder.decode(values.as_ref(), i)? {
                Some(d) => {
                    datums.push(d);
                    nulls.push(false);
                }
                None => {
                    datums.push(Datum::from(0));
                    nulls.push(true);
                }
            }
        }
        // SAFETY: datums/nulls have `n` entries of the element type described by `element`.
        unsafe {
            if datums.is_empty() {
                return Ok(Datum::from(pg_sys::construct_empty_array(element.type_oid)));
            }
            let mut dims = [datums.len() as i32];
            let mut lbs = [1i32];
            let array = pg_sys::construct_md_array(
                datums.as_mut_ptr(),
                nulls.as_mut_ptr(),
                1,
                dims.as_mut_ptr(),
                lbs.as_mut_ptr(),
                element.type_oid,
                element.len as i32,
                element.by_val,
                element.align,
            );
            Ok(Datum::from(array))
        }
    }
}

fn text_value(array: &dyn Array, row: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

fn binary_value(array: &dyn Array, row: usize) -> Option<&[u8]> {
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => Some(array.as_binary_view().value(row)),
        _ => None,
    }
}

pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

pub fn type_name(type_oid: Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd C string for any type oid.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::format_type_be(type_oid)).to_string_lossy().into_owned()
    }
}
