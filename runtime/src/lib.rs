//! dtask's engine: everything but argument parsing and printing.
//!
//! A cluster is one scheduler and any number of workers, talking the
//! [`protocol`] over [`connection`]s. The [`scheduler`] keeps the task graph
//! in a pure state machine ([`scheduler::state`]) behind a thin tokio server.
//! A [`worker`] runs tasks as WebAssembly components in wasmtime
//! ([`worker::sandbox`]) and serves results to peers ([`peer`]). The
//! [`client`] is the async API the CLI is written on; [`module`] loads and
//! types components, [`value`] converts between dtask's dynamic values,
//! JSON and WIT values, [`key`] names futures, and [`config`] and [`local`]
//! find (or start) the scheduler to talk to.

pub mod busy_poll;
pub mod client;
pub mod config;
pub mod connection;
pub mod embedded;
pub mod local;
pub mod module;
pub mod peer;
pub mod scheduler;
pub mod tls;

pub use dtask_core::{blob, key, protocol, secret, wit};
pub mod value;
pub mod worker;

#[cfg(test)]
mod fuzz;

/// This process's resident memory in bytes (0 where /proc is not there).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
