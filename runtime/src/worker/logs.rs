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
    /// Each key's latest output, with the number of its insert.
    by_key: HashMap<String, (u64, Arc<TaskLog>)>,
    /// (key, insert number), oldest first. A key run again is pushed
    /// anew; its older entry is skipped when it comes up (its number no
    /// longer matches), so a rerun costs O(1), not a search.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    inserts: u64,
}

impl Logs {
    /// Keeps `log` as `key`'s latest output, dropping the oldest tasks'
    /// output past [`LOGS_BYTES`].
    pub fn insert(&self, key: &str, log: TaskLog) {
        let mut k = self.0.lock().expect("logs lock");
        k.inserts += 1;
        let n = k.inserts;
        k.bytes += log_bytes(&log);
        if let Some((_, old)) = k.by_key.insert(key.to_string(), (n, Arc::new(log))) {
            k.bytes -= log_bytes(&old);
        }
        k.order.push_back((key.to_string(), n));
        while k.bytes > LOGS_BYTES {
            let Some((oldest, n)) = k.order.pop_front() else {
                break;
            };
            if k.by_key.get(&oldest).is_some_and(|(m, _)| *m == n) {
                let (_, old) = k.by_key.remove(&oldest).expect("just seen");
                k.bytes -= log_bytes(&old);
            }
        }
        // Skipped entries of keys run again are dropped now and then, so
        // the order stays within twice the keys kept.
        if k.order.len() > 2 * k.by_key.len() + 1024 {
            let Kept { by_key, order, .. } = &mut *k;
            order.retain(|(key, n)| by_key.get(key).is_some_and(|(m, _)| m == n));
        }
    }

    /// `key`'s latest output, if it is still kept.
    pub fn get(&self, key: &str) -> Option<Arc<TaskLog>> {
        let k = self.0.lock().expect("logs lock");
        k.by_key.get(key).map(|(_, log)| log.clone())
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
        // A key run again and again keeps the order bounded.
        for _ in 0..10_000 {
            logs.insert(
                "e",
                TaskLog {
                    stdout: "x".into(),
                    stderr: String::new(),
                },
            );
        }
        let order = logs.0.lock().unwrap().order.len();
        assert!(order <= 2 * 4 + 1024, "{order} entries kept in order");
        assert_eq!(logs.get("e").unwrap().stdout, "x");
    }
}
