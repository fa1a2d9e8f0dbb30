//! Keeping stream tables current: the relations behind them, the SQL of the delta
//! rules, and the refresh that runs it.

pub mod context;
pub mod objects;
pub mod refresh;
pub mod statements;
