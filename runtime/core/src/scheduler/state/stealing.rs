//! Work stealing: an idle worker takes tasks queued on a busy one.
//!
//! Tasks wait on a worker beyond its slots (up to
//! [`QUEUED_MAX`](super::QUEUED_MAX) per slot, fewer the longer their runs:
//! `Scheduler::queue_depth`) so that small tasks never wait for a round trip. When that
//! queue backs up on one worker while another has a free slot (tasks placed
//! by where their inputs are, uneven durations, the tail of a map), the
//! scheduler asks the busy worker to give back the tasks that would run
//! there last and have not begun ([`Command::Steal`]). The worker answers
//! with those it dropped ([`Input::Stolen`]) — one that began meanwhile
//! stays — and they go straight to the idle worker.
//!
//! A task is worth moving when waiting for it on the busy worker costs more
//! than the round trip and fetching the inputs the idle worker lacks: when
//! its function's runs take long (judged by how long they took so far), or
//! when no task has begun on the busy worker for a while, so that the queue
//! is stalled behind long runs (Dask's stealing weighs the same things).
//!
//! A worker whose pooled instances are all held (by tasks waiting in host
//! calls, and actors) says so ([`Input::WorkerStarved`](super::Input)):
//! until it says otherwise it takes no tasks, and every task queued there
//! counts as waiting, worth moving whatever its runs take.
//! At most one request is in flight per busy worker and per idle one, and
//! the workers are looked over at most once per millisecond of scheduler
//! clock, on a heartbeat, or after an answer: never per task.

use super::{Command, Key, Scheduler, State, Task, Worker, WorkerId};
use std::cmp::Reverse;
use std::collections::VecDeque;

/// Runs shorter than this, on average, are not moved while the busy
/// worker's queue moves: it is through them before a request arrives.
const WORTH_MOVING_S: f64 = 0.001;

/// A queue where no task has begun for this long is stalled: whatever
/// waits in it is worth moving.
const STALLED_S: f64 = 0.005;

/// Input bytes per second assumed between workers when weighing a move.
const TRANSFER_BYTES_PER_S: f64 = 200e6;

/// Input bytes a task of a function with no finished run yet may need
/// fetched to be moved.
const UNKNOWN_MOVE_BYTES: u64 = 1 << 20;

impl Scheduler {
    /// Asks busy workers to give back queued tasks for idle ones, if any
    /// worker idles while another has tasks waiting for a slot.
    pub(super) fn balance(&mut self, out: &mut Vec<Command>) {
        if self.workers.len() < 2 || !self.balance_due() {
            return;
        }
        // The workers with tasks beyond their slots, most first (then the
        // lowest id). Each is looked over at most once a pass: it is asked
        // to give some back, or nothing there is worth moving now, and the
        // next idle worker goes to the next in line.
        let mut victims: VecDeque<(usize, Reverse<WorkerId>)> = {
            let mut v: Vec<_> = self
                .workers
                .iter()
                .filter(|(_, w)| w.steal_to.is_none())
                .map(|(id, w)| (w.backlog(), Reverse(*id)))
                .filter(|&(backlog, _)| backlog > 0)
                .collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v.into()
        };
        if victims.is_empty() {
            return;
        }
        let mut idle: Vec<(WorkerId, usize)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.awaiting && !w.starved && w.load() < w.nthreads as usize)
            .map(|(id, w)| (*id, w.nthreads as usize - w.load()))
            .collect();
        if idle.is_empty() {
            return;
        }
        idle.sort_unstable();
        for (thief, free) in idle {
            let Some(at) = victims.iter().position(|&(_, Reverse(id))| id != thief) else {
                return;
            };
            let (excess, Reverse(victim)) = victims.remove(at).expect("found");
            // Half of what waits there, and no more than fills the idle
            // worker's free slots and their queues.
            let want = excess.div_ceil(2).min(free * (super::QUEUED_MAX + 1));
            let keys = self.worth_moving(victim, thief, want);
            if keys.is_empty() {
                continue;
            }
            {
                let mut v = self.workers.get_mut(&victim).expect("listed");
                v.steal_to = Some((thief, v.runs_sent));
            }
            self.workers.get_mut(&thief).expect("listed").awaiting = true;
            out.push(Command::Steal {
                worker: victim,
                keys: keys.iter().map(|k| k.to_string()).collect(),
            });
        }
    }

    /// Whether looking over the workers is due: the clock moved since the
    /// last look (or a heartbeat or answer forced one).
    fn balance_due(&mut self) -> bool {
        let now = self.activity.now_ms;
        if self.balanced_ms == Some(now) && !self.balance_now {
            return false;
        }
        self.balanced_ms = Some(now);
        self.balance_now = false;
        true
    }

    /// Up to `want` of the tasks waiting on `victim` that `thief` may run
    /// and that are worth moving there, those that would run last first.
    fn worth_moving(&self, victim: WorkerId, thief: WorkerId, want: usize) -> Vec<Key> {
        let (v, t) = (&self.workers[&victim], &self.workers[&thief]);
        // Nothing begins on a worker starved of instances.
        let stalled_s = if v.starved {
            f64::INFINITY
        } else {
            self.activity.now_ms.saturating_sub(v.began_ms) as f64 / 1e3
        };
        let mut candidates: Vec<(i32, Reverse<u64>, &Key)> = v
            .queued
            .iter()
            .filter_map(|k| {
                let task = self.tasks.get(k)?;
                let waiting = matches!(
                    task.state,
                    State::Processing { worker, started: false, run } if worker == victim && run > 0
                );
                (waiting && self.may_move(task, thief, t, stalled_s))
                    .then(|| (task.recipe.priority(), Reverse(task.seq), k))
            })
            .collect();
        // Lowest priority, then latest submitted, first: the busy worker
        // would run those last.
        candidates.sort_unstable_by_key(|&(priority, seq, _)| (priority, seq));
        candidates
            .into_iter()
            .take(want)
            .map(|(_, _, k)| k.clone())
            .collect()
    }

    /// Whether `task` may run on `thief` (`t`): its restrictions allow it
    /// and it offers what the task needs.
    fn may_run_on(task: &Task, thief: WorkerId, t: &Worker) -> bool {
        let p = task.recipe.placement();
        let named = p.workers.is_empty()
            || p.allow_other_workers
            || p.workers.iter().any(|n| t.is(thief, n));
        let memory = task.recipe.memory_limit();
        named && t.offers(&p.resources) && memory.is_none_or(|m| m <= t.memory_limit)
    }

    /// Whether `task` may run on `thief` (`t`), and waiting for it where it
    /// is (a queue stalled for `stalled_s`) or its run takes longer than
    /// fetching the inputs `thief` lacks.
    fn may_move(&self, task: &Task, thief: WorkerId, t: &Worker, stalled_s: f64) -> bool {
        if !Self::may_run_on(task, thief, t) {
            return false;
        }
        let missing: u64 = task
            .deps
            .iter()
            .filter_map(|d| match self.tasks.get(d).map(|t| &t.state) {
                Some(State::Finished { result })
                    if result.inline.is_none() && !result.who_has.contains(&thief) =>
                {
                    Some(result.nbytes)
                }
                _ => None,
            })
            .sum();
        let fetch_s = missing as f64 / TRANSFER_BYTES_PER_S;
        if stalled_s >= STALLED_S.max(2.0 * fetch_s) {
            return true;
        }
        match task.recipe.func.mean_seconds() {
            Some(s) => s >= WORTH_MOVING_S + fetch_s,
            None => missing <= UNKNOWN_MOVE_BYTES,
        }
    }

    /// `victim` gave back `keys`: they go to the worker they were asked
    /// for, where they fit, or are placed afresh.
    pub(super) fn stolen(&mut self, victim: WorkerId, keys: Vec<String>, out: &mut Vec<Command>) {
        // An answer nobody asked this worker for (one sent before its
        // connection broke, arriving under its new id) moves nothing.
        let Some((thief, asked_at)) = self
            .workers
            .get_mut(&victim)
            .and_then(|mut w| w.steal_to.take())
        else {
            return;
        };
        if let Some(mut t) = self.workers.get_mut(&thief) {
            t.awaiting = false;
        }
        self.balance_now = true;
        let mut tasks = Vec::new();
        for key in keys {
            let Some(key) = self.tasks.key(&key) else {
                continue;
            };
            let t = self.tasks.get_mut(&key).expect("known");
            let waiting = matches!(
                t.state,
                State::Processing { worker, started: false, run } if worker == victim && run <= asked_at
            );
            if !waiting {
                continue;
            }
            if let Some(mut w) = self.workers.get_mut(&victim) {
                w.give_back(&key, &t.recipe.placement().resources);
            }
            self.activity.stolen += 1;
            // An input lost meanwhile (its only holder died) is being
            // computed again: the task waits for it like any other.
            if self.unfinished_inputs(&key) > 0 {
                self.requeue(&key);
                continue;
            }
            let t = self.tasks.get_mut(&key).expect("known");
            self.activity.set(&key, t, State::Pending { waiting_on: 0 });
            let fits = self.workers.get(&thief).is_some_and(|w| {
                let task = &self.tasks[&key];
                w.has_room(self.queue_depth(task)) && Self::may_run_on(task, thief, w)
            });
            if fits {
                tasks.push(self.assign(&key, thief));
            } else {
                let t = &self.tasks[&key];
                self.ready.push(t.ready_entry(key));
            }
        }
        if !tasks.is_empty() {
            self.send_run(thief, tasks, out);
        }
    }

    /// Forgets the request `w`, a worker just gone, was asked to answer.
    /// (A request on its behalf stays in flight: the answer places the
    /// tasks afresh, as it is gone.)
    pub(super) fn stealing_worker_gone(&mut self, w: &Worker) {
        if let Some((thief, _)) = w.steal_to
            && let Some(mut t) = self.workers.get_mut(&thief)
        {
            t.awaiting = false;
        }
        self.balance_now = true;
    }
}
