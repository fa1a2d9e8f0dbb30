//! Background refreshes: a launcher per cluster starts one scheduler per database,
//! which refreshes each ACTIVE stream table when its schedule is due, and as soon as a
//! lake commit of its database lands (`commits`).

pub mod commits;
pub mod launcher;
pub mod process;
pub mod schedule;
pub mod worker;
