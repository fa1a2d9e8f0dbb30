//! Understanding a defining query through Postgres' parser and analyzer.

pub mod aggregates;
pub mod ctes;
pub mod join_entries;
pub mod manip;
pub mod nullable_joins;
pub mod nullable_subselects;
pub mod outer_joins;
pub mod parse;
pub mod plain_joins;
pub mod relations;
pub mod rows;
pub mod shape;
pub mod sublinks;
pub mod tree;
pub mod types;
pub mod views;
pub mod windows;
