//! Understanding a defining query through Postgres' parser and analyzer.

pub mod ctes;
pub mod outer_joins;
pub mod parse;
pub mod rows;
pub mod shape;
pub mod sublinks;
pub mod tree;
pub mod windows;
