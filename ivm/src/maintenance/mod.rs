//! Keeping stream tables current: the relations behind them, the SQL of the delta
//! rules, the refresh that runs it, and the check of a result against its query.

pub mod capture;
pub mod context;
pub mod lakes;
pub mod objects;
pub mod refresh;
pub mod replay;
pub mod schemas;
pub mod snapshot;
pub mod statements;
pub mod timing;
pub mod verify;
