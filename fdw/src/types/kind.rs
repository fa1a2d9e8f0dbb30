//! How each Postgres column type is read from DuckDB.
//!
//! The scan casts every lake column to the DuckDB type whose Arrow form matches the
//! Postgres column exactly, so DuckDB does range checking and the decoder only sees
//! the shapes listed here. Types without a native decoder travel as text and go
//! through the Postgres type's own input function (exact for numeric, and honours
//! typmods such as numeric(10,2) or varchar(20)).

use pgrx::pg_sys::{self, Oid};

use crate::duck::sql;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    /// json/jsonb: DuckDB renders the value (any type, STRUCT and MAP included) as JSON.
    Json,
    /// Any other type: DuckDB's text form through the Postgres input function.
    ViaInput,
    /// A one-dimensional array of the element type.
    Array(Oid),
}

impl Kind {
    pub fn of(type_oid: Oid, typmod: i32) -> Kind {
        match type_oid {
            pg_sys::BOOLOID => Kind::Bool,
            pg_sys::INT2OID => Kind::Int16,
            pg_sys::INT4OID => Kind::Int32,
            pg_sys::INT8OID => Kind::Int64,
            pg_sys::FLOAT4OID => Kind::Float32,
            pg_sys::FLOAT8OID => Kind::Float64,
            pg_sys::TEXTOID => Kind::Text,
            pg_sys::VARCHAROID if typmod < 0 => Kind::Text,
            pg_sys::BYTEAOID => Kind::Bytea,
            pg_sys::DATEOID => Kind::Date,
            pg_sys::TIMEOID => Kind::Time,
            pg_sys::TIMESTAMPOID => Kind::Timestamp,
            pg_sys::TIMESTAMPTZOID => Kind::TimestampTz,
            pg_sys::INTERVALOID => Kind::Interval,
            pg_sys::UUIDOID => Kind::Uuid,
            pg_sys::JSONOID | pg_sys::JSONBOID => Kind::Json,
            other => {
                // SAFETY: catalog lookup of an existing type.
                let element = unsafe { pg_sys::get_element_type(other) };
                if element != pg_sys::InvalidOid {
                    Kind::Array(element)
                } else {
                    Kind::ViaInput
                }
            }
        }
    }

    /// The DuckDB type the column is cast to (for arrays: the element's), spelled as
    /// DuckDB names it in `pragma_table_info`.
    pub fn duck_type(self) -> &'static str {
        match self {
            Kind::Bool => "BOOLEAN",
            Kind::Int16 => "SMALLINT",
            Kind::Int32 => "INTEGER",
            Kind::Int64 => "BIGINT",
            Kind::Float32 => "FLOAT",
            Kind::Float64 => "DOUBLE",
            Kind::Bytea => "BLOB",
            Kind::Date => "DATE",
            Kind::Time => "TIME",
            Kind::Timestamp => "TIMESTAMP",
            Kind::TimestampTz => "TIMESTAMP WITH TIME ZONE",
            Kind::Interval => "INTERVAL",
            Kind::Uuid => "UUID",
            Kind::Text | Kind::Json | Kind::ViaInput | Kind::Array(_) => "VARCHAR",
        }
    }

    /// DuckDB expression reading lake column `column` as this kind.
    pub fn duck_expression(self, column: &str) -> String {
        self.duck_expression_of(&sql::ident(column))
    }

    /// DuckDB expression turning the SQL expression `col` into this kind's shape.
    pub fn duck_expression_of(self, col: &str) -> String {
        match self {
            Kind::Json => format!("CAST(to_json({col}) AS VARCHAR)"),
            Kind::Array(element) => match Kind::of(element, -1) {
                Kind::Json => format!("list_transform({col}, x -> CAST(to_json(x) AS VARCHAR))"),
                element_kind => format!("CAST({col} AS {}[])", element_kind.duck_type()),
            },
            other => format!("CAST({col} AS {})", other.duck_type()),
        }
    }
}

/// DuckDB expression for a column's value exactly as Postgres sees it, in a type
/// DuckDB compares the way Postgres does; `None` when there is no such expression.
/// Casts to the lake column's own type are free in DuckDB (and keep its filter
/// pushdown into Parquet statistics).
pub fn comparable_expression(column: &str, type_oid: Oid, typmod: i32) -> Option<String> {
    comparable_expression_of(&sql::ident(column), type_oid, typmod)
}

/// `comparable_expression` of an already quoted (possibly qualified) column.
pub fn comparable_expression_of(column: &str, type_oid: Oid, typmod: i32) -> Option<String> {
    const VARHDRSZ: i32 = 4;
    match type_oid {
        pg_sys::NUMERICOID if typmod >= VARHDRSZ => {
            let precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
            let scale = (((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024;
            // numeric(p,s) rounds on input; DuckDB's decimal cast rounds the same way.
            (precision <= 38 && (0..=precision).contains(&scale))
                .then(|| format!("CAST({column} AS DECIMAL({precision},{scale}))"))
        }
        pg_sys::NUMERICOID => Some(column.to_owned()),
        pg_sys::VARCHAROID => Some(Kind::Text.duck_expression_of(column)),
        _ => match Kind::of(type_oid, typmod) {
            Kind::Json | Kind::Array(_) | Kind::ViaInput => None,
            kind => Some(kind.duck_expression_of(column)),
        },
    }
}
