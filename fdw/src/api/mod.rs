//! SQL functions of the extension (schema `ducklake`).

pub mod ddl;
pub mod lake_info;
pub mod maintenance;
pub mod servers;
