//! dtask's pure core: what every other part agrees on, with no async
//! runtime, no WebAssembly engine and no sockets in its dependency tree.
//!
//! - [`protocol`]: every message between clients, the scheduler and
//!   workers; [`blob`] lays big byte strings out of band in a frame.
//! - [`key`]: how futures are named; [`secret`]: credentials that never
//!   show in logs and compare in constant time.
//! - [`wit`]: the WIT types of task parameters and results, as plain data.
//! - [`scheduler::state`]: the scheduler's decisions as a plain state
//!   machine, inputs in and commands out, tested deterministically.
//!
//! `dtask-runtime` builds the tokio server, the wasmtime worker and the
//! client on it.

pub mod blob;
pub mod key;
pub mod protocol;
pub mod scheduler;
pub mod secret;
pub mod wit;
