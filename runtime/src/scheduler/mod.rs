//! The scheduler: a pure decision core ([`state`]) behind a tokio server
//! ([`server`]) that moves frames to and from it.

pub mod dashboard;
pub mod faults;
pub mod journal;
mod metrics;
pub mod server;
pub mod state;

#[cfg(test)]
mod actor_tests;
#[cfg(test)]
mod nemesis_tests;
#[cfg(test)]
mod primitive_tests;
#[cfg(test)]
mod stealing_tests;
#[cfg(test)]
mod tests;

pub use server::{Scheduler as SchedulerServer, SchedulerOptions};
