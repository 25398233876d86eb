//! What the scheduler reports about itself, its workers and its tasks.

use super::*;

/// What the scheduler has done, counted since its journal began (or since
/// it started, without one).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Keys it knows now.
    pub tasks: u64,
    /// Task runs sent to workers.
    pub dispatched: u64,
    /// Runs again because a worker died or a result was lost with one
    /// (lineage recomputation).
    pub reruns: u64,
    /// Runs sent again because a worker never got them (its heartbeats
    /// did not have them).
    pub resent: u64,
}

/// How the scheduler is doing, for `dtask info`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// Keys that named clients hold (the CLI's until `dtask release`).
    pub held: u64,
    /// The scheduler's resident memory, in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// Its journal, if it keeps one.
    pub journal: Option<JournalHealth>,
    /// The dashboard's address (`HOST:PORT`, as bound), if it serves one.
    pub dashboard: Option<String>,
    /// Tasks an idle worker took from a busy one's queue since the
    /// scheduler started (work stealing).
    pub stolen: u64,
}

/// The scheduler's journal, for `dtask info`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JournalHealth {
    /// Its directory.
    pub dir: String,
    /// Bytes of records written since the scheduler started.
    pub bytes: u64,
    /// Records written since the scheduler started.
    pub records: u64,
    /// What is wrong with it, if anything (records are not being kept).
    pub problem: Option<String>,
}

/// A worker as `dtask workers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    /// Scheduler-assigned id.
    pub id: u64,
    /// Host and pid.
    pub name: String,
    /// Data address.
    pub address: String,
    /// Execution slots.
    pub nthreads: u32,
    /// Resources it offers.
    pub resources: Vec<(String, f64)>,
    /// Tasks assigned to it and not yet reported.
    pub processing: usize,
    /// Those of `processing` that have begun running (the rest wait in
    /// the worker's queue).
    pub executing: usize,
    /// Results it holds.
    pub holding: usize,
    /// Bytes of results it holds, in memory and spilled (as of its last
    /// heartbeat, each second).
    pub nbytes: u64,
    /// Of those, bytes it has spilled to disk (as of its last heartbeat).
    pub spilled_bytes: u64,
    /// The largest memory one task may use there, in bytes.
    pub memory_limit: u64,
    /// Times its supervisor started a worker in its place after one died.
    pub restarts: u32,
    /// Its resident memory, in bytes, as of its last heartbeat (0 where
    /// unknown).
    pub rss_bytes: u64,
    /// Milliseconds since its last heartbeat (by the scheduler's clock).
    pub heartbeat_age_ms: u64,
    /// Inputs it fetched from other workers since it started (as of its
    /// last heartbeat).
    pub fetched: u64,
    /// Bytes of those.
    pub fetched_bytes: u64,
    /// Seconds its task runs took, in all (instantiate and call, as the
    /// scheduler saw them begin and end).
    pub compute_seconds: f64,
    /// Whether its tasks wait for an instance, every one (pooled and set up
    /// on demand) being held by tasks waiting in host calls and by actors:
    /// it takes no new tasks meanwhile (`dtask worker --max-instances`
    /// gives it more).
    #[serde(default)]
    pub instances_full: bool,
    /// Pooled instances in use, by tasks running or waiting and by actors
    /// (as of its last heartbeat).
    #[serde(default)]
    pub instances_pooled: u32,
    /// Instances set up on demand in use, past the pool (as of its last
    /// heartbeat): each of their tasks costs some tens of microseconds
    /// more.
    #[serde(default)]
    pub instances_on_demand: u32,
}

/// When a task was submitted, began and ended (ms since the Unix epoch, by
/// the scheduler's clock; `None`: not yet, or before the scheduler last
/// started), where it ran and how often it was retried.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskTimings {
    /// When it was submitted.
    pub submitted_ms: Option<u64>,
    /// When its last run began on a worker.
    pub started_ms: Option<u64>,
    /// When it last ended.
    pub finished_ms: Option<u64>,
    /// The name of the worker it runs or ran on, while known.
    pub worker: Option<String>,
    /// Times it ran again after an error.
    pub retries: u32,
}

/// Limits of a task's runs that `retry` may change; `None` keeps what the
/// task was submitted with.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskLimits {
    /// Wall-clock limit of one run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one run, in bytes.
    pub memory_limit: Option<u64>,
    /// Runs again up to this many times after an error.
    pub retries: Option<u32>,
}

impl TaskLimits {
    /// `limits` (timeout, memory, retries) with those given here in place
    /// of theirs.
    pub fn over(&self, limits: (Option<u64>, Option<u64>, u32)) -> (Option<u64>, Option<u64>, u32) {
        let (timeout, memory, retries) = limits;
        (
            self.timeout_ms.or(timeout),
            self.memory_limit.or(memory),
            self.retries.unwrap_or(retries),
        )
    }
}
