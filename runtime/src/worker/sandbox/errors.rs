//! What went wrong in a run, as a task error of the right kind: a trap's
//! cause (memory, stack, timeout, panic) and message, tidied for users.

use super::*;

/// A task error without guest output.
pub(super) fn task_error(key: &str, kind: ErrorKind, message: String) -> TaskError {
    TaskError {
        kind,
        message,
        stderr: String::new(),
        backtrace: String::new(),
        origin: key.to_string(),
    }
}

/// Turns a wasmtime error into the task's error, keeping what the guest said.
/// The limits a failed call ran under, named in its error.
#[derive(Clone, Copy, Default)]
pub(super) struct Bounds {
    pub(super) timeout: Option<Duration>,
    /// The memory limit, and how to raise it.
    pub(super) memory: Option<(usize, &'static str)>,
}

pub(super) fn classify(e: wasmtime::Error, stderr: String, key: &str, bounds: Bounds) -> TaskError {
    let timeout = bounds.timeout;
    let trap = e.downcast_ref::<Trap>().copied();
    // Its first line repeats the heading every report gives it.
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| {
            let text = b.to_string();
            match text.split_once('\n') {
                Some((first, rest)) if first.contains("wasm backtrace") => rest.to_string(),
                _ => text,
            }
        })
        .unwrap_or_default();
    let panic = panic_message(&stderr);
    // A limiter refusal surfaces as this error (trap_on_grow_failure), and
    // a Rust guest whose allocation failed says so before aborting.
    let out_of_memory = format!("{e:#}").contains("forcing trap when growing memory")
        || stderr.contains("memory allocation of");
    let (kind, message) = match (trap, panic) {
        (Some(Trap::StackOverflow), _) => (
            ErrorKind::Stack,
            format!("task {key} overflowed its stack (unbounded recursion?)"),
        ),
        _ if out_of_memory => (
            ErrorKind::Memory,
            match bounds.memory {
                Some((limit, raise)) => format!(
                    "task {key} ran out of memory: it tried to grow past its limit of {} ({raise})",
                    crate::value::human_bytes(limit as u64)
                ),
                None => format!("task {key} ran out of memory: it tried to grow past its limit"),
            },
        ),
        (Some(Trap::Interrupt), _) => (
            ErrorKind::Timeout,
            match timeout {
                Some(t) => format!("task {key} ran past its time limit of {t:?}"),
                None => format!("task {key} was interrupted"),
            },
        ),
        (_, Some(msg)) => (ErrorKind::Panic, format!("task {key} panicked: {msg}")),
        (Some(t), None) => (ErrorKind::Trap, format!("task {key} trapped: {t}")),
        (None, None) => (ErrorKind::Trap, format!("task {key} failed: {e:#}")),
    };
    TaskError {
        kind,
        message,
        stderr: tidy(&stderr),
        backtrace,
        origin: key.to_string(),
    }
}

/// A guest's stderr as a report shows it: without blank lines around it,
/// and without Rust's hint to set `RUST_BACKTRACE` (tasks have no
/// environment; the wasm backtrace is in the report).
pub(super) fn tidy(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !(l.starts_with("note: run with `RUST_BACKTRACE=") && l.contains("backtrace")))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_matches(|c: char| c == '\n' || c == '\r')
        .to_string()
}

/// The message of a Rust panic as the standard library prints it:
/// `thread '…' panicked at FILE:LINE:COL:\nMESSAGE\nnote: …`.
pub(super) fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    lines.by_ref().find(|l| l.contains("panicked at"))?;
    let msg: Vec<&str> = lines.take_while(|l| !l.starts_with("note:")).collect();
    Some(msg.join("\n").trim().to_string())
}
