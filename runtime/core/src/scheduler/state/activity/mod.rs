//! What the dashboard, `/metrics` and `dtask status --json` show of the
//! scheduler's work: tasks counted by phase, overall and per function; the
//! recent task stream; recent failures; each task's timings.
//!
//! Everything here is kept up to date as tasks change state (O(1) per
//! change, through [`Activity::set`]), and every list is capped, so reading it
//! costs the same with a million tasks known as with ten. The clock is an
//! input like any event's ([`super::Scheduler::set_clock`]): the core
//! stays a pure state machine.

use super::{Scheduler, State, Task, WorkerId};
use crate::protocol::TaskTimings;
use crate::protocol::{ErrorKind, TaskError};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;

mod reports;

/// Where a task is in its life, as the dashboard counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for inputs or a slot.
    Waiting,
    /// Sent to a worker.
    Processing,
    /// Finished; its result is held.
    Memory,
    /// Failed.
    Erred,
    /// Cancelled.
    Cancelled,
    /// Its result was lost with every worker holding it.
    Lost,
    /// Its result was dropped, but dependents may need it again.
    Released,
}

impl Phase {
    /// Every phase, in the order of [`Phase::index`].
    pub const ALL: [Phase; 7] = [
        Phase::Waiting,
        Phase::Processing,
        Phase::Memory,
        Phase::Erred,
        Phase::Cancelled,
        Phase::Lost,
        Phase::Released,
    ];

    /// Its position in [`Phase::ALL`] and in [`PhaseCounts`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name, as JSON and Prometheus labels spell it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Processing => "processing",
            Phase::Memory => "memory",
            Phase::Erred => "erred",
            Phase::Cancelled => "cancelled",
            Phase::Lost => "lost",
            Phase::Released => "released",
        }
    }

    pub(super) fn of(state: &State) -> Self {
        match state {
            State::Pending { .. } => Phase::Waiting,
            State::Processing { .. } => Phase::Processing,
            State::Finished { .. } => Phase::Memory,
            State::Error(_) => Phase::Erred,
            State::Cancelled => Phase::Cancelled,
            State::Lost => Phase::Lost,
            State::Released => Phase::Released,
        }
    }
}

/// Tasks known now, by phase (indexed by [`Phase::index`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts(pub [u64; 7]);

impl PhaseCounts {
    /// How many are in `phase`.
    pub fn get(&self, phase: Phase) -> u64 {
        self.0[phase.index()]
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for PhaseCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(7))?;
        for p in Phase::ALL {
            m.serialize_entry(p.name(), &self.get(p))?;
        }
        m.end()
    }
}

/// One function's tasks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FunctionTally {
    /// Its tasks known now, by phase.
    pub tasks: PhaseCounts,
    /// Its tasks that have finished, ever (forgotten ones included).
    pub finished: u64,
    /// Its tasks that have failed, ever.
    pub failed: u64,
    /// Seconds its tasks spent running on workers, in all (as the
    /// scheduler saw them begin and end).
    pub compute_seconds: f64,
}

impl FunctionTally {
    fn is_idle(&self) -> bool {
        self.tasks.total() == 0
    }
}

/// A task run that ended, for the task stream.
#[derive(Clone, Debug, Serialize)]
pub struct Span {
    /// Its place in the stream (grows by one per span).
    pub id: u64,
    /// The task.
    pub key: Arc<str>,
    /// Its function.
    pub function: Arc<str>,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// When it began, in ms since the Unix epoch.
    pub began_ms: u64,
    /// When it ended, in ms since the Unix epoch.
    pub ended_ms: u64,
    /// Whether it failed.
    pub failed: bool,
}

/// A recent failure.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The task.
    pub key: Arc<str>,
    /// Its function.
    pub function: Arc<str>,
    /// The error's kind.
    pub kind: ErrorKind,
    /// The error's message (cut at [`MESSAGE_CHARS`]).
    pub message: String,
    /// The task where the error first happened.
    pub origin: String,
    /// When it failed, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// Spans the task stream keeps.
pub const SPANS: usize = 8192;
/// Failures kept.
pub const FAILURES: usize = 100;
/// Characters of a failure's message kept for the list.
pub const MESSAGE_CHARS: usize = 300;
/// Functions tallied before those with no task known are forgotten.
const FUNCTIONS: usize = 1024;

/// A task's timings, in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Times {
    /// When it was submitted (`None`: before the scheduler last started).
    submitted_ms: Option<u64>,
    /// When its last run began on a worker.
    began_ms: Option<u64>,
    /// When it last ended (finished, failed, cancelled).
    ended_ms: Option<u64>,
}

/// A task's clock, as it keeps it: the time of submission and two offsets
/// (16 bytes). Offsets are seconds after submission (NaN: not yet).
#[derive(Clone, Copy, Debug)]
pub(super) struct Stamps {
    submitted_ms: u64,
    began: f32,
    ended: f32,
}

impl Stamps {
    /// A task submitted at `now_ms` (0: unknown).
    pub(super) fn at(now_ms: u64) -> Self {
        Self {
            submitted_ms: now_ms,
            began: f32::NAN,
            ended: f32::NAN,
        }
    }

    fn offset(&self, now_ms: u64) -> f32 {
        now_ms.saturating_sub(self.submitted_ms) as f32 / 1e3
    }

    fn time(&self, offset: f32) -> Option<u64> {
        (self.submitted_ms != 0 && !offset.is_nan())
            .then(|| self.submitted_ms + (offset as f64 * 1e3).round() as u64)
    }

    /// Notes that a run began at `now_ms` (and has not ended).
    pub(super) fn began(&mut self, now_ms: u64) {
        self.began = self.offset(now_ms);
        self.ended = f32::NAN;
    }

    fn ended(&mut self, now_ms: u64) {
        self.ended = self.offset(now_ms);
    }

    /// As times since the epoch.
    pub(super) fn times(&self) -> Times {
        Times {
            submitted_ms: (self.submitted_ms != 0).then_some(self.submitted_ms),
            began_ms: self.time(self.began),
            ended_ms: self.time(self.ended),
        }
    }
}

/// The scheduler's running account of its tasks.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Now, in ms since the Unix epoch (0 until a clock is set).
    pub(super) now_ms: u64,
    /// Tasks moved by work stealing, ever.
    pub(super) stolen: u64,
    tasks: PhaseCounts,
    /// Tasks forgotten (released by everyone and needed by nothing), ever.
    forgotten: u64,
    finished: u64,
    failed: u64,
    /// By the address of the function's interned name: every task of a
    /// function shares one name (the interner keeps it while this does),
    /// so a lookup hashes a pointer, not the string.
    functions: HashMap<usize, (Arc<str>, FunctionTally)>,
    spans: VecDeque<Span>,
    next_span: u64,
    /// Seconds each worker's runs took, by worker (entries go with the
    /// worker: [`Activity::worker_gone`]).
    worker_seconds: HashMap<WorkerId, f64>,
    failures: VecDeque<Failure>,
}

impl Activity {
    fn tally(&mut self, function: &Arc<str>) -> &mut FunctionTally {
        let at = Arc::as_ptr(function) as *const u8 as usize;
        if self.functions.len() >= FUNCTIONS && !self.functions.contains_key(&at) {
            self.functions.retain(|_, (_, f)| !f.is_idle());
        }
        &mut self
            .functions
            .entry(at)
            .or_insert_with(|| (function.clone(), FunctionTally::default()))
            .1
    }

    /// A task became known in `phase`.
    pub(super) fn added(&mut self, function: &Arc<str>, phase: Phase) {
        self.tasks.0[phase.index()] += 1;
        self.tally(function).tasks.0[phase.index()] += 1;
    }

    /// A task was forgotten in `phase`.
    pub(super) fn removed(&mut self, function: &Arc<str>, phase: Phase) {
        self.tasks.0[phase.index()] -= 1;
        self.forgotten += 1;
        let at = Arc::as_ptr(function) as *const u8 as usize;
        if let Some((_, f)) = self.functions.get_mut(&at) {
            f.tasks.0[phase.index()] -= 1;
        }
    }

    /// Puts `task` (known as `key`) in `state`, accounting for the move.
    pub(super) fn set(&mut self, key: &str, task: &mut Task, state: State) {
        let before = Phase::of(&task.state);
        let worker = match task.state {
            State::Processing { worker, .. } => Some(worker),
            _ => None,
        };
        task.state = state;
        if Phase::of(&task.state) != before {
            self.moved(key, task, before, worker);
        }
    }

    /// `task` (known as `key`) went from `before` (on `worker`, if it was
    /// processing) to its phase now.
    fn moved(&mut self, key: &str, task: &mut Task, before: Phase, worker: Option<WorkerId>) {
        let after = Phase::of(&task.state);
        self.tasks.0[before.index()] -= 1;
        self.tasks.0[after.index()] += 1;
        let now = self.now_ms;
        let f = self.tally(&task.recipe.func.function);
        f.tasks.0[before.index()] -= 1;
        f.tasks.0[after.index()] += 1;
        let (finished, failed) = (after == Phase::Memory, after == Phase::Erred);
        if !(finished || failed || after == Phase::Cancelled) {
            return;
        }
        task.stamps.ended(now);
        f.finished += finished as u64;
        f.failed += failed as u64;
        // A run that ended on a worker: its time, and a bar in the stream.
        let ran = match worker {
            Some(w) if finished || failed => {
                let began_ms = task.stamps.times().began_ms.unwrap_or(now).min(now);
                let seconds = now.saturating_sub(began_ms) as f64 / 1e3;
                f.compute_seconds += seconds;
                task.recipe.func.ran(seconds);
                Some((w, began_ms, seconds))
            }
            _ => None,
        };
        self.finished += finished as u64;
        self.failed += failed as u64;
        let error = match &task.state {
            State::Error(e) => Some(e),
            _ => None,
        };
        if ran.is_none() && error.is_none() {
            return;
        }
        let function = &task.recipe.func.function;
        let key: Arc<str> = Arc::from(key);
        if let Some((worker, began_ms, seconds)) = ran {
            *self.worker_seconds.entry(worker).or_default() += seconds;
            if self.spans.len() == SPANS {
                self.spans.pop_front();
            }
            self.spans.push_back(Span {
                id: self.next_span,
                key: key.clone(),
                function: function.clone(),
                worker,
                began_ms,
                ended_ms: now,
                failed,
            });
            self.next_span += 1;
        }
        if let Some(e) = error {
            self.failure(key, function.clone(), e);
        }
    }

    fn failure(&mut self, key: Arc<str>, function: Arc<str>, e: &TaskError) {
        if self.failures.len() == FAILURES {
            self.failures.pop_back();
        }
        let message = match e.message.char_indices().nth(MESSAGE_CHARS) {
            Some((at, _)) => format!("{}…", &e.message[..at]),
            None => e.message.clone(),
        };
        self.failures.push_front(Failure {
            key,
            function,
            kind: e.kind,
            message,
            origin: e.origin.clone(),
            at_ms: self.now_ms,
        });
    }

    /// The summary the dashboard's totals show.
    pub(super) fn totals(&self) -> Totals {
        Totals {
            tasks: self.tasks,
            forgotten: self.forgotten,
            finished: self.finished,
            failed: self.failed,
            stolen: self.stolen,
        }
    }

    /// Functions, busiest first (tasks known, then finished), at most
    /// `limit` of them.
    pub(super) fn functions(&self, limit: usize) -> Vec<(Arc<str>, FunctionTally)> {
        let mut all: Vec<(&Arc<str>, &FunctionTally)> =
            self.functions.values().map(|(n, f)| (n, f)).collect();
        all.sort_by(|a, b| {
            (b.1.tasks.total(), b.1.finished, a.0).cmp(&(a.1.tasks.total(), a.1.finished, b.0))
        });
        all.into_iter()
            .take(limit)
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect()
    }

    /// Spans after `after` (an id; 0 for all kept), the newest `limit`.
    pub(super) fn spans(&self, after: u64, limit: usize) -> Vec<Span> {
        let newer = self.spans.iter().rev().take_while(|s| s.id >= after);
        let mut out: Vec<Span> = newer.take(limit).cloned().collect();
        out.reverse();
        out
    }

    /// Forgets a worker that left.
    pub(super) fn worker_gone(&mut self, worker: WorkerId) {
        self.worker_seconds.remove(&worker);
    }

    /// Failures, newest first, at most `limit`.
    pub(super) fn failures(&self, limit: usize) -> Vec<Failure> {
        self.failures.iter().take(limit).cloned().collect()
    }
}

/// Counts for the dashboard's totals and `/json/counts.json`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    /// Tasks known now, by phase.
    pub tasks: PhaseCounts,
    /// Tasks forgotten since the scheduler started.
    pub forgotten: u64,
    /// Tasks finished since the scheduler started.
    pub finished: u64,
    /// Tasks failed since the scheduler started.
    pub failed: u64,
    /// Tasks an idle worker took from a busy one's queue since the
    /// scheduler started (work stealing).
    pub stolen: u64,
}

/// Keys named in a task's detail, at most this many of each list.
pub const DETAIL_KEYS: usize = 100;

/// Everything the dashboard's task page shows of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskDetail {
    /// The key.
    pub key: String,
    /// Its function.
    pub function: String,
    /// Its module's hash.
    pub module: String,
    /// Its phase.
    pub phase: Phase,
    /// When it was submitted, began and ended, and where it ran.
    pub timings: TaskTimings,
    /// Its inputs' keys (the first [`DETAIL_KEYS`]).
    pub inputs: Vec<String>,
    /// How many inputs it has.
    pub inputs_total: usize,
    /// Keys of the tasks that take its result (the first [`DETAIL_KEYS`]).
    pub dependents: Vec<String>,
    /// How many dependents it has.
    pub dependents_total: usize,
    /// Names of the clients holding it.
    pub holders: Vec<String>,
    /// Bytes of its result, when it has one.
    pub nbytes: Option<u64>,
    /// Its error, when it failed.
    pub error: Option<TaskError>,
}

/// Queues, variables, locks, semaphores, events, topics and actors, for
/// the dashboard (each list cut at the limit asked for, names in order).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PrimitivesSummary {
    /// (name, items waiting, getters waiting).
    pub queues: Vec<(String, usize, usize)>,
    /// (name, whether it is set, waiters).
    pub variables: Vec<(String, bool, usize)>,
    /// (name, holders, waiters).
    pub locks: Vec<(String, Vec<String>, usize)>,
    /// (name, leases, holders, waiters).
    pub semaphores: Vec<(String, u32, Vec<String>, usize)>,
    /// (name, whether it is set, waiters).
    pub events: Vec<(String, bool, usize)>,
    /// (topic, subscribers).
    pub topics: Vec<(String, usize)>,
    /// Actors.
    pub actors: Vec<crate::protocol::ActorInfo>,
    /// How many of each there are in all: queues, variables, locks,
    /// semaphores, events, topics, actors.
    pub totals: [usize; 7],
}

#[cfg(test)]
mod size_tests {
    /// A million held tasks must stay small: a task fits the allocator's
    /// 224-byte size class (its timings were paid for by narrowing
    /// counters); growing it costs 32 MB per million tasks.
    #[test]
    fn a_task_fits_its_size_class() {
        assert!(std::mem::size_of::<super::Task>() <= 224);
    }
}
