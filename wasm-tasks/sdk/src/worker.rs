//! Facts about the running task, and control of its execution slot.

use crate::bindings::dtask::task::worker as wit;

/// Key of the running task, such as `inc-5c1e…`.
pub fn current_key() -> String {
    wit::current_key()
}

/// Identifier of the worker process running the task.
pub fn worker_id() -> String {
    wit::worker_id()
}

/// Hex BLAKE3 hash of the running task's module.
pub fn current_module() -> String {
    wit::current_module()
}

/// Gives the task's execution slot back for a long wait, such as a monitor
/// loop, so the worker can run another task in its place; call [`rejoin`]
/// before working again. Blocking calls give the slot back on their own
/// while they wait; `secede` keeps it free in between.
pub fn secede() {
    wit::secede()
}

/// Takes an execution slot again after [`secede`], waiting for one.
pub fn rejoin() {
    wit::rejoin()
}
