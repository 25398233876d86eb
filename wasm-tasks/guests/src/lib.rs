//! Paths of dtask's example guest components, built for `wasm32-wasip2` by
//! this crate's build script, and of the committed WASI command fixtures
//! (`wasm-tasks/commands/`). Host tests, examples and benchmarks use them:
//!
//! ```no_run
//! let wasm = std::fs::read(dtask_guests::TASKS_WASM).unwrap();
//! ```

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
