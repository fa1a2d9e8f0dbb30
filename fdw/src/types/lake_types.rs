//! Type names across the boundary: the Postgres type a DuckLake column is imported
//! as, and the DuckLake type a Postgres column is created as. `None` means there is
//! no faithful mapping; callers refuse the column and name it.

use pgrx::pg_sys::{self, Oid};

/// Postgres type (as SQL text) for a DuckDB type name from `duckdb_columns()`.
pub fn pg_type_for(duck_type: &str) -> Option<String> {
    let t = duck_type.trim();
    if let Some(element) = list_element(t) {
        let element_type = pg_type_for(element)?;
        // Postgres arrays are flat and rectangular; nested or composite elements
        // are kept whole as JSON.
        return Some(if element_type.ends_with("[]") || element_type == "jsonb" {
            "jsonb".into()
        } else {
            format!("{element_type}[]")
        });
    }
    let upper = t.to_ascii_uppercase();
    if upper.starts_with("STRUCT(") || upper.starts_with("MAP(") {
        return Some("jsonb".into());
    }
    if let Some(args) = upper.strip_prefix("DECIMAL(").and_then(|r| r.strip_suffix(')')) {
        let (precision, scale) = args.split_once(',')?;
        let (precision, scale): (u32, u32) = (precision.trim().parse().ok()?, scale.trim().parse().ok()?);
        return Some(format!("numeric({precision},{scale})"));
    }
    Some(
        match upper.as_str() {
            "BOOLEAN" => "boolean",
            "TINYINT" | "SMALLINT" | "UTINYINT" => "smallint",
            "INTEGER" | "USMALLINT" => "integer",
            "BIGINT" | "UINTEGER" => "bigint",
            "UBIGINT" => "numeric(20,0)",
            "HUGEINT" | "UHUGEINT" => "numeric(39,0)",
            "FLOAT" => "real",
            "DOUBLE" => "double precision",
            "VARCHAR" => "text",
            "BLOB" => "bytea",
            "DATE" => "date",
            "TIME" => "time",
            "TIME WITH TIME ZONE" => "time with time zone",
            "TIMESTAMP" | "TIMESTAMP_S" | "TIMESTAMP_MS" | "TIMESTAMP_NS" => "timestamp",
            "TIMESTAMP WITH TIME ZONE" => "timestamp with time zone",
            "INTERVAL" => "interval",
            "UUID" => "uuid",
            "JSON" => "jsonb",
            _ => return None,
        }
        .to_owned(),
    )
}

/// `X[]` or `X[n]` → `X`.
fn list_element(t: &str) -> Option<&str> {
    let open = t.rfind('[')?;
    let inside = t[open..].strip_prefix('[')?.strip_suffix(']')?;
    inside.chars().all(|c| c.is_ascii_digit()).then(|| &t[..open])
}

/// DuckLake type (as DuckDB SQL) for a Postgres column type.
pub fn duck_type_for(type_oid: Oid, typmod: i32) -> Result<String, String> {
    let simple = match type_oid {
        pg_sys::BOOLOID => "BOOLEAN",
        pg_sys::INT2OID => "SMALLINT",
        pg_sys::INT4OID => "INTEGER",
        pg_sys::INT8OID => "BIGINT",
        pg_sys::FLOAT4OID => "FLOAT",
        pg_sys::FLOAT8OID => "DOUBLE",
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => "VARCHAR",
        pg_sys::BYTEAOID => "BLOB",
        pg_sys::DATEOID => "DATE",
        pg_sys::TIMEOID => "TIME",
        pg_sys::TIMETZOID => "TIMETZ",
        pg_sys::TIMESTAMPOID => "TIMESTAMP",
        pg_sys::TIMESTAMPTZOID => "TIMESTAMPTZ",
        pg_sys::INTERVALOID => "INTERVAL",
        pg_sys::UUIDOID => "UUID",
        pg_sys::JSONOID | pg_sys::JSONBOID => "JSON",
        pg_sys::NUMERICOID => return numeric_type(typmod),
        other => {
            // SAFETY: catalog lookup of an existing type.
            let element = unsafe { pg_sys::get_element_type(other) };
            if element == pg_sys::InvalidOid {
                return Err("has no DuckLake equivalent".into());
            }
            return Ok(format!("{}[]", duck_type_for(element, -1)?));
        }
    };
    Ok(simple.to_owned())
}

fn numeric_type(typmod: i32) -> Result<String, String> {
    const VARHDRSZ: i32 = 4;
    if typmod < VARHDRSZ {
        return Err("is numeric without precision, which DuckLake cannot store exactly; \
                    declare it as numeric(p,s) with p <= 38"
            .into());
    }
    let precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
    // The scale is an 11-bit signed field since PostgreSQL 15.
    let scale = (((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024;
    if precision > 38 || scale < 0 || scale > precision {
        return Err(format!(
            "is numeric({precision},{scale}), but DuckLake decimals need 0 <= scale <= precision <= 38"
        ));
    }
    Ok(format!("DECIMAL({precision},{scale})"))
}
