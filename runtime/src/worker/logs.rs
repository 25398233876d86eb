//! What tasks wrote to stdout and stderr, kept on the worker that ran them
//! for `dtask logs`: the last 64 KiB of each stream per task, and the
//! latest tasks' output up to [`LOGS_BYTES`] per worker (older tasks'
//! output is dropped first). Tasks that wrote nothing cost nothing.

pub use crate::protocol::TaskLog;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Bytes of task output one worker keeps.
pub const LOGS_BYTES: usize = 16 << 20;

fn log_bytes(log: &TaskLog) -> usize {
    log.stdout.len() + log.stderr.len()
}

/// The output of the latest tasks a worker ran, by key.
#[derive(Debug, Default)]
pub struct Logs(Mutex<Kept>);

#[derive(Debug, Default)]
struct Kept {
    by_key: HashMap<String, Arc<TaskLog>>,
    /// Keys, oldest first (a key run again moves to the back).
    order: VecDeque<String>,
    bytes: usize,
}

impl Logs {
    /// Keeps `log` as `key`'s latest output, dropping the oldest tasks'
    /// output past [`LOGS_BYTES`].
    pub fn insert(&self, key: &str, log: TaskLog) {
        let mut k = self.0.lock().expect("logs lock");
        if let Some(old) = k.by_key.remove(key) {
            k.bytes -= log_bytes(&old);
            k.order.retain(|o| o != key);
        }
        k.bytes += log_bytes(&log);
        k.by_key.insert(key.to_string(), Arc::new(log));
        k.order.push_back(key.to_string());
        while k.bytes > LOGS_BYTES {
            let Some(oldest) = k.order.pop_front() else {
                break;
            };
            if let Some(old) = k.by_key.remove(&oldest) {
                k.bytes -= log_bytes(&old);
            }
        }
    }

    /// `key`'s latest output, if it is still kept.
    pub fn get(&self, key: &str) -> Option<Arc<TaskLog>> {
        self.0.lock().expect("logs lock").by_key.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_output_goes_first_past_the_budget() {
        let logs = Logs::default();
        let big = "x".repeat(LOGS_BYTES / 3);
        for k in ["a", "b", "c", "d"] {
            logs.insert(
                k,
                TaskLog {
                    stdout: String::new(),
                    stderr: big.clone(),
                },
            );
        }
        assert!(logs.get("a").is_none());
        assert!(logs.get("b").is_some() && logs.get("d").is_some());
        // Run again: replaced, not counted twice.
        logs.insert(
            "b",
            TaskLog {
                stdout: "again".into(),
                stderr: String::new(),
            },
        );
        assert_eq!(logs.get("b").unwrap().stdout, "again");
        assert!(logs.get("c").is_some());
    }
}
