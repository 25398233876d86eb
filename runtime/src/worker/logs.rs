//! What tasks wrote to stdout and stderr, kept on the worker that ran them
//! for `dtask logs`: the last 64 KiB of each stream per task, and the
//! latest tasks' output up to [`LOGS_BYTES`] per worker (older tasks'
//! output is dropped first). Of the latest tasks that wrote nothing, a
//! table of hashes of their keys says so ([`SILENT`] slots, 8 bytes each).

pub use crate::protocol::TaskLog;
use rustc_hash::FxBuildHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Slots of the table of tasks that ran here and wrote nothing: a task
/// there is answered as having written nothing, one whose slot another
/// took since as "not kept" (the same as output dropped).
pub const SILENT: usize = 1 << 16;

/// Bytes of task output one worker keeps.
pub const LOGS_BYTES: usize = 16 << 20;

fn log_bytes(log: &TaskLog) -> usize {
    log.stdout.len() + log.stderr.len()
}

/// The output of the latest tasks a worker ran, by key.
#[derive(Debug)]
pub struct Logs {
    kept: Mutex<Kept>,
    /// How many keys `kept` holds output of, as last set under its lock:
    /// a silent run takes the lock only when some output is kept.
    kept_keys: AtomicUsize,
    /// Hashes of keys of tasks that wrote nothing, each in the slot its
    /// hash names (0: none).
    silent: Box<[AtomicU64]>,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            kept: Mutex::default(),
            kept_keys: AtomicUsize::new(0),
            silent: (0..SILENT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A key's hash for the table of silent tasks (never 0: an empty slot),
/// and its slot (from other bits than the one set).
fn silent_slot(key: &str) -> (u64, usize) {
    let h = FxBuildHasher.hash_one(key);
    (h | 1, (h >> 32) as usize % SILENT)
}

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
        // Its latest run wrote something: no longer a silent one.
        let (h, slot) = silent_slot(key);
        let _ = self.silent[slot].compare_exchange(h, 0, Ordering::Relaxed, Ordering::Relaxed);
        let mut k = self.kept.lock().expect("logs lock");
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
        self.kept_keys.store(k.by_key.len(), Ordering::Relaxed);
    }

    /// Notes that a run of `key` here wrote nothing: its latest run, so
    /// an earlier run's output is no longer what it wrote.
    pub fn wrote_nothing(&self, key: &str) {
        let (h, slot) = silent_slot(key);
        self.silent[slot].store(h, Ordering::Relaxed);
        // Most tasks write nothing: no lock for them while nothing is kept.
        if self.kept_keys.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut k = self.kept.lock().expect("logs lock");
        if let Some((_, old)) = k.by_key.remove(key) {
            k.bytes -= log_bytes(&old);
            self.kept_keys.store(k.by_key.len(), Ordering::Relaxed);
        }
    }

    /// `key`'s latest output, if it is still kept: empty if it is among
    /// the latest tasks that wrote nothing.
    pub fn get(&self, key: &str) -> Option<Arc<TaskLog>> {
        let k = self.kept.lock().expect("logs lock");
        if let Some((_, log)) = k.by_key.get(key) {
            return Some(log.clone());
        }
        let (h, slot) = silent_slot(key);
        (self.silent[slot].load(Ordering::Relaxed) == h).then(|| Arc::new(TaskLog::default()))
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
        let order = logs.kept.lock().unwrap().order.len();
        assert!(order <= 2 * 4 + 1024, "{order} entries kept in order");
        assert_eq!(logs.get("e").unwrap().stdout, "x");
    }

    #[test]
    fn a_task_that_wrote_nothing_reads_as_empty_until_its_slot_is_taken() {
        let logs = Logs::default();
        assert!(logs.get("quiet").is_none(), "never ran here");
        logs.wrote_nothing("quiet");
        let got = logs.get("quiet").expect("ran here");
        assert!(got.stdout.is_empty() && got.stderr.is_empty());
        // A later silent task whose hash names the same slot takes it:
        // then it is not known, never known as another's.
        let slot = |k: &str| silent_slot(k).1;
        let later = (0..)
            .map(|i| format!("later-{i}"))
            .find(|k| slot(k) == slot("quiet"))
            .expect("some key shares the slot");
        logs.wrote_nothing(&later);
        assert!(logs.get("quiet").is_none());
        assert!(logs.get(&later).is_some());
        // The latest run is what counts: output, then silence, then
        // output again.
        let said = |s: &str| TaskLog {
            stdout: String::new(),
            stderr: s.into(),
        };
        logs.insert("k", said("first"));
        logs.wrote_nothing("k");
        assert_eq!(logs.get("k").unwrap().stderr, "");
        logs.insert("k", said("third"));
        assert_eq!(logs.get("k").unwrap().stderr, "third");
        // Every slot is used, not only odd ones.
        assert!((0..1000).any(|i| silent_slot(&format!("k{i}")).1.is_multiple_of(2)));
    }
}
