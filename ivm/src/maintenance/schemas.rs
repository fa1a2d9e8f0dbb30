//! The extension's internal schemas: state and definitions, and changes.

/// State tables, work tables and the views holding definitions.
pub const STATE_SCHEMA: &str = "pgtrickle_state";
/// Change buffers, change feeds, change logs and their capture functions.
pub const CHANGES_SCHEMA: &str = "pgtrickle_changes";
