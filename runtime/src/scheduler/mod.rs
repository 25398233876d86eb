//! The scheduler: a pure decision core ([`state`]) behind a tokio server
//! ([`server`]) that moves frames to and from it.

pub mod dashboard;
pub mod faults;
pub mod journal;
mod metrics;
pub mod server;

pub use dtask_core::scheduler::state;

#[cfg(test)]
mod journal_tests;

pub use server::{SchedulerOptions, SchedulerServer};
