//! Where ready tasks run: sending them to workers with room, best placement
//! first, and why a task has nowhere to go.

use super::blocked::Restriction;
use super::*;
use std::collections::BinaryHeap;

/// Room for ready tasks the ready queue keeps however few wait (a MiB):
/// a burst of this many (a submitted batch, a wave of a graph) is queued
/// without the queue growing again.
const READY_KEPT: usize = 1 << 16;

impl Scheduler {
    /// Sends ready tasks to workers with room, best placement first.
    ///
    /// Tasks come from the ready queue and from those set aside by their
    /// restrictions ([`blocked`](super::blocked)), whichever is first in
    /// line. A restricted task that finds no place goes aside with its
    /// kind, and the rest of its kind follow it untried this round; an
    /// unrestricted one that finds none means every worker is full.
    pub(super) fn schedule(&mut self, out: &mut Vec<Command>) {
        let mut batches: HashMap<WorkerId, Vec<RunTask>> = HashMap::default();
        // The first task of each kind set aside, first in line on top.
        let mut heads: BinaryHeap<(i32, Reverse<u64>, Restriction)> =
            self.blocked.heads().collect();
        // Kinds whose first task found no place this round.
        let mut full: HashSet<Restriction> = HashSet::default();
        let mut waiting = None;
        loop {
            let aside_first = match (heads.peek(), self.ready.peek()) {
                (Some((p, s, _)), Some(next)) => (*p, *s) > next,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (entry, kind) = if aside_first {
                let (_, _, kind) = heads.pop().expect("peeked");
                let Some(entry) = self.blocked.pop(&kind) else {
                    continue;
                };
                if let Some((p, s)) = self.blocked.peek(&kind) {
                    heads.push((p, s, kind.clone()));
                }
                (entry, Some(kind))
            } else {
                (self.ready.pop().expect("peeked"), None)
            };
            let Some(task) = self.tasks.get(&entry.key) else {
                continue;
            };
            if !matches!(task.state, State::Pending { waiting_on: 0 }) {
                continue;
            }
            let kind = kind
                .or_else(|| Restriction::of(task.recipe.placement(), task.recipe.memory_limit()));
            if let Some(kind) = kind.as_ref().filter(|k| full.contains(*k)) {
                self.blocked.push(kind.clone(), entry);
                continue;
            }
            self.placements_tried += 1;
            if let Some(worker) = self.place(task) {
                let run = self.assign(&entry.key, worker);
                batches.entry(worker).or_default().push(run);
                continue;
            }
            if self.why_no_worker(task).is_some() {
                // No worker could ever run it, nor the rest of its kind:
                // aside until one joins.
                if let Some(kind) = &kind {
                    heads.retain(|(_, _, k)| k != kind);
                    for e in self.blocked.take(kind) {
                        if self
                            .tasks
                            .get(&e.key)
                            .is_some_and(|t| matches!(t.state, State::Pending { waiting_on: 0 }))
                        {
                            self.no_worker.insert(e.key.clone(), e);
                        }
                    }
                }
                self.no_worker.insert(entry.key.clone(), entry);
                continue;
            }
            let Some(kind) = kind else {
                // Any worker with room could run it: none has.
                waiting = Some(entry);
                break;
            };
            heads.retain(|(_, _, k)| *k != kind);
            self.blocked.push(kind.clone(), entry);
            full.insert(kind);
            if !self.workers.values().any(|w| w.has_room(super::QUEUED_MAX)) {
                break;
            }
        }
        if let Some(entry) = waiting {
            // First in line again, its client's turn kept.
            self.ready.put_back(entry);
        }
        // A burst of ready tasks (a million-task map submitted faster than
        // it runs) grew the ready queue; once it has drained, its room goes
        // back rather than staying with the scheduler for good.
        if self.ready.capacity() > READY_KEPT && self.ready.len() * 4 < self.ready.capacity() {
            self.ready.shrink_to((self.ready.len() * 2).max(READY_KEPT));
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_by_key(|(w, _)| *w);
        for (worker, tasks) in batches {
            self.send_run(worker, tasks, out);
        }
    }

    /// Makes ready task `key` processing on `worker`, which has room: the
    /// task to put in its next `Run`.
    pub(super) fn assign(&mut self, key: &Key, worker: WorkerId) -> RunTask {
        let task = &self.tasks[key];
        let run = self.run_task(key, task);
        let need = task.recipe.placement().resources.clone();
        let mut w = self
            .workers
            .get_mut(&worker)
            .expect("placed on a live worker");
        if w.load() < w.nthreads as usize {
            // It begins at once: the worker's slots turn over.
            w.began_ms = self.activity.now_ms;
        }
        w.take(key, &need);
        w.queued.insert(key.clone());
        self.stats.dispatched += 1;
        let t = self.tasks.get_mut(key).expect("present");
        self.activity.set(
            key,
            t,
            State::Processing {
                worker,
                started: false,
                run: w.runs_sent + 1,
            },
        );
        run
    }

    /// Sends `tasks`, assigned to `worker`, in one `Run`.
    pub(super) fn send_run(
        &mut self,
        worker: WorkerId,
        tasks: Vec<RunTask>,
        out: &mut Vec<Command>,
    ) {
        let mut w = self
            .workers
            .get_mut(&worker)
            .expect("placed on a live worker");
        w.runs_sent += 1;
        out.push(Command::Run {
            worker,
            seq: w.runs_sent,
            tasks,
        });
    }

    /// How many tasks like `task` may queue per slot on a worker: about
    /// [`QUEUED_WORK_S`](super::QUEUED_WORK_S) of work by how long its
    /// export's runs (this function of this module) took lately, within
    /// [`QUEUED_MIN`](super::QUEUED_MIN) and [`QUEUED_MAX`](super::QUEUED_MAX);
    /// [`QUEUED_PER_SLOT`](super::QUEUED_PER_SLOT) before any has ended.
    ///
    /// Placement keeps the ready queue's order: a task of long runs at
    /// its head waits for a worker below its depth, and the tasks behind it
    /// with it. Workers still hold that many queued per slot then, so none
    /// idles, and a later task never passes an earlier one of the same
    /// priority.
    ///
    /// A run is timed from its worker's `Started` to its result. A one-slot
    /// worker sends `Started` as the guest first yields (at its first epoch
    /// tick, 10 ms) or with the result, so runs shorter than a tick read
    /// as about 0 and their tasks queue [`QUEUED_MAX`](super::QUEUED_MAX)
    /// deep: the depth tells tiny tasks from long ones, not 1 ms from 5.
    pub(super) fn queue_depth(&self, task: &Task) -> usize {
        match task.recipe.func.mean_seconds() {
            Some(s) if s > 0.0 => {
                let fit = (super::QUEUED_WORK_S / s).ceil();
                (fit.min(super::QUEUED_MAX as f64) as usize).max(super::QUEUED_MIN)
            }
            Some(_) => super::QUEUED_MAX,
            None => super::QUEUED_PER_SLOT,
        }
    }

    /// The worker holding the most input bytes, else the least busy, among
    /// those the task may use and that have room; `None` if there is none.
    pub(super) fn place(&self, task: &Task) -> Option<WorkerId> {
        let p = task.recipe.placement();
        let memory = task.recipe.memory_limit();
        let depth = self.queue_depth(task);
        let fits = |_: WorkerId, w: &Worker| {
            w.has_room(depth)
                && w.offers(&p.resources)
                && memory.is_none_or(|m| m <= w.memory_limit)
        };
        let named = |id: WorkerId, w: &Worker| {
            p.workers.is_empty() || p.workers.iter().any(|n| w.is(id, n))
        };
        let held = self.input_bytes_by_worker(task);
        // The common case, a task any worker may run with no input held on
        // one: the least loaded, from the index (no walk over them all).
        if p.workers.is_empty() && p.resources.is_empty() && memory.is_none() && held.is_empty() {
            let least = self.workers.least_loaded_with_room(depth);
            if cfg!(test) {
                assert_eq!(
                    least,
                    self.best(&held, fits),
                    "the index agrees with a walk"
                );
            }
            return least;
        }
        self.best(&held, |id, w| fits(id, w) && named(id, w))
            .or_else(|| {
                if p.allow_other_workers {
                    self.best(&held, fits)
                } else {
                    None
                }
            })
    }

    /// Why no connected worker could ever run `task`, even idle: its
    /// `--workers`, `--resources` or memory limit rule them all out.
    /// `None` if one could.
    pub(super) fn why_no_worker(&self, task: &Task) -> Option<String> {
        let p = task.recipe.placement();
        let memory = task.recipe.memory_limit();
        let named_only = !p.workers.is_empty() && !p.allow_other_workers;
        let named = |id: WorkerId, w: &Worker| !named_only || p.workers.iter().any(|n| w.is(id, n));
        if self
            .workers
            .iter()
            .any(|(id, w)| named(*id, w) && w.could_run(&p.resources, memory))
        {
            return None;
        }
        if self.workers.is_empty() {
            return Some("no worker is connected".into());
        }
        let mut wanted = Vec::new();
        if named_only {
            wanted.push(format!("is {}", p.workers.join(" or ")));
        }
        if !p.resources.is_empty() {
            let r: Vec<String> = p
                .resources
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            wanted.push(format!("offers {}", r.join(", ")));
        }
        if let Some(m) = memory {
            wanted.push(format!("allows tasks {} MiB", m.div_ceil(1 << 20)));
        }
        Some(format!("no connected worker {}", wanted.join(" and ")))
    }

    /// Why `key` waits in the `no-worker` state, if it does.
    pub fn no_worker_reason(&self, key: &str) -> Option<String> {
        if !self.no_worker.contains_key(key) {
            return None;
        }
        let t = self.tasks.get(key)?;
        if !matches!(t.state, State::Pending { waiting_on: 0 }) {
            return None;
        }
        self.why_no_worker(t)
    }

    /// Bytes of `task`'s inputs each worker holds (results kept there, not
    /// inline in the scheduler).
    fn input_bytes_by_worker(&self, task: &Task) -> HashMap<WorkerId, u64> {
        let mut held: HashMap<WorkerId, u64> = HashMap::default();
        for d in &task.deps {
            if let Some(State::Finished { result }) = self.tasks.get(d).map(|t| &t.state)
                && result.inline.is_none()
            {
                for w in &result.who_has {
                    *held.entry(*w).or_default() += result.nbytes;
                }
            }
        }
        held
    }

    /// Among the `eligible` workers, the one holding the most of `held`
    /// input bytes, then the least loaded for its slots, then the lowest
    /// id (the order of the workers' index by load).
    pub(super) fn best(
        &self,
        held: &HashMap<WorkerId, u64>,
        eligible: impl Fn(WorkerId, &Worker) -> bool,
    ) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(id, w)| eligible(**id, w))
            .max_by(|(ia, a), (ib, b)| {
                let ha = held.get(ia).copied().unwrap_or(0);
                let hb = held.get(ib).copied().unwrap_or(0);
                // First in the index is best: compare b's key against a's.
                ha.cmp(&hb)
                    .then(LoadKey::of(**ib, b).cmp(&LoadKey::of(**ia, a)))
            })
            .map(|(id, _)| *id)
    }

    pub(super) fn run_task(&self, key: &str, task: &Task) -> RunTask {
        // The inputs are the distinct future arguments in order: walked
        // beside the arguments, each is found by the table's own copy of its
        // key (just looked up to place the task), not by the argument's.
        let mut inputs = task.deps.iter().peekable();
        let args = task
            .recipe
            .args
            .iter()
            .map(|a| match a {
                Arg::Value(v) => RunArg::Value(super::compact::detached(v)),
                Arg::Future(k) => {
                    let input = match inputs.peek() {
                        Some(d) if ***d == **k => inputs.next().map(|d| &**d),
                        _ => None,
                    };
                    let at = match self.tasks.get(input.unwrap_or(k)).map(|t| &t.state) {
                        Some(State::Finished { result }) => self.locate(result),
                        _ => unreachable!("a ready task's dependencies are finished"),
                    };
                    RunArg::Dep { key: k.clone(), at }
                }
            })
            .collect();
        RunTask {
            key: key.to_string(),
            module: task.recipe.func.module.clone(),
            function: task.recipe.func.function.clone(),
            args,
            timeout_ms: task.recipe.timeout_ms(),
            memory_limit: task.recipe.memory_limit(),
            grants: task.recipe.grants().clone(),
            priority: task.recipe.priority(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::READY_KEPT;
    use crate::protocol::{TaskSpec, TaskState};
    use crate::scheduler::state::Input;
    use crate::scheduler::testing::{finish, joined, runs, setup, small, spec, submit, val};
    use std::collections::VecDeque;

    fn pinned(key: &str, to: &str) -> TaskSpec {
        let mut t = spec(key, vec![val(7)]);
        t.placement.workers = vec![to.into()];
        t
    }

    /// Tasks pinned to a full worker while another has room wait aside: a
    /// round of placement (one per event) tries one of them, not each; they
    /// still run on their worker as it frees, in the order they came.
    #[test]
    fn tasks_pinned_to_a_full_worker_are_not_each_tried_at_every_event() {
        let mut s = setup(&[(1, 1), (2, 1)]);
        let n = 10_000;
        let tasks = (0..n)
            .map(|i| pinned(&format!("p-{i}"), "worker-1"))
            .collect();
        let mut on_1: VecDeque<(u64, String)> = runs(&submit(&mut s, tasks)).into();
        assert!(!on_1.is_empty() && on_1.iter().all(|(w, _)| *w == 1));
        assert_eq!(s.blocked.len(), n - on_1.len());
        // Unrestricted tasks run on worker 2, one event each.
        let free = (0..100)
            .map(|i| spec(&format!("f-{i}"), vec![val(i)]))
            .collect();
        let tried = s.placements_tried;
        let mut on_2: VecDeque<(u64, String)> = runs(&submit(&mut s, free)).into();
        let mut rounds = 1;
        while let Some((w, key)) = on_2.pop_front() {
            assert_eq!(w, 2, "{key} ran on the worker with room");
            // Runs known to be short queue deeper: worker 1 takes more of
            // its pinned tasks, in order, as worker 2's runs end.
            for (to, next) in runs(&finish(&mut s, w, &key, small(1))) {
                if to == 1 {
                    assert!(next.starts_with("p-"), "{next} went to worker 1");
                    on_1.push_back((to, next));
                } else {
                    on_2.push_back((to, next));
                }
            }
            rounds += 1;
        }
        assert_eq!(s.state("f-99"), Some(TaskState::Finished));
        let per_round = (s.placements_tried - tried) as f64 / rounds as f64;
        assert!(
            per_round <= 3.0,
            "{per_round} tries a round with {} tasks aside",
            s.blocked.len()
        );
        // Worker 1 frees: the pinned tasks run there, oldest first.
        let mut order = Vec::new();
        while let Some((w, key)) = on_1.pop_front() {
            assert_eq!(w, 1);
            order.push(key.clone());
            on_1.extend(runs(&finish(&mut s, w, &key, small(1))));
        }
        let expected: Vec<String> = (0..n).map(|i| format!("p-{i}")).collect();
        assert_eq!(order, expected);
        assert_eq!(s.blocked.len(), 0);
    }

    /// Aside by their restriction, tasks keep their priority: a later task
    /// of higher priority goes first, across kinds and unrestricted ones.
    #[test]
    fn tasks_set_aside_keep_their_place_in_line() {
        let mut s = setup(&[(1, 1)]);
        // Fill worker 1 (a slot and its queue) with unrestricted tasks.
        let fill: Vec<_> = (0..200)
            .map(|i| spec(&format!("f-{i}"), vec![val(i)]))
            .collect();
        let mut sent: VecDeque<(u64, String)> = runs(&submit(&mut s, fill)).into();
        let mut urgent = pinned("urgent", "worker-1");
        urgent.priority = 5;
        let mut loose = pinned("loose", "worker-1");
        loose.memory_limit = Some(1 << 20);
        submit(&mut s, vec![pinned("old", "worker-1"), loose, urgent]);
        let mut order = Vec::new();
        while let Some((w, key)) = sent.pop_front() {
            order.push(key.clone());
            sent.extend(runs(&finish(&mut s, w, &key, small(1))));
        }
        let at = |k: &str| order.iter().position(|o| o == k).expect(k);
        assert!(at("urgent") < at("f-100"), "urgent went first: {order:?}");
        assert!(at("f-199") < at("old"), "old waits its turn: {order:?}");
        assert!(at("old") < at("loose"));
    }

    /// A worker that leaves takes the only place its pinned tasks had:
    /// they all go to `no-worker`, and run when it comes back.
    #[test]
    fn tasks_aside_for_a_worker_that_leaves_wait_for_one_to_join() {
        let mut s = setup(&[(1, 1), (2, 1)]);
        let tasks = (0..100)
            .map(|i| pinned(&format!("p-{i}"), "worker-1"))
            .collect();
        let sent = runs(&submit(&mut s, tasks));
        assert!(s.blocked.len() > 0);
        assert!(runs(&s.handle(Input::WorkerDisconnected { worker: 1 })).is_empty());
        for i in [0, 99] {
            assert_eq!(s.state(&format!("p-{i}")), Some(TaskState::NoWorker));
        }
        assert_eq!(s.blocked.len(), 0);
        let back = runs(&s.handle(joined(1, 1)));
        assert_eq!(back.len(), sent.len());
        assert!(back.iter().all(|(w, _)| *w == 1));
    }

    /// A burst of ready tasks grows the ready queue; once they have run, the
    /// queue gives back the room beyond what it keeps for the next burst.
    #[test]
    fn the_ready_queue_gives_back_its_room_once_a_burst_has_run() {
        let mut s = setup(&[(1, 1)]);
        let n = 2 * READY_KEPT + 1000;
        let tasks = (0..n)
            .map(|i| spec(&format!("t-{i}"), vec![val((i % 251) as u8)]))
            .collect();
        let mut sent: VecDeque<(u64, String)> = runs(&submit(&mut s, tasks)).into();
        // All but what the worker's slot and queue took wait ready.
        assert!(s.ready.capacity() >= n - sent.len());
        let mut done = 0;
        while let Some((w, key)) = sent.pop_front() {
            sent.extend(runs(&finish(&mut s, w, &key, small(1))));
            done += 1;
        }
        assert_eq!(done, n);
        assert_eq!(s.state("t-0"), Some(TaskState::Finished));
        assert!(s.ready.is_empty());
        assert!(
            s.ready.capacity() <= READY_KEPT,
            "the ready queue kept room for {} tasks",
            s.ready.capacity()
        );
        assert!(
            s.ready.capacity() >= READY_KEPT,
            "the ready queue gave back the room it keeps: {} left",
            s.ready.capacity()
        );
    }

    /// A burst placed all at once (tasks waiting for a worker, then a big
    /// one joins and they all go through the ready queue to it) leaves the
    /// queue empty: it still keeps its room.
    #[test]
    fn a_burst_placed_at_once_leaves_the_ready_queue_its_room() {
        let mut s = setup(&[]);
        let n = 2 * READY_KEPT;
        let tasks = (0..n)
            .map(|i| spec(&format!("t-{i}"), vec![val((i % 251) as u8)]))
            .collect();
        assert!(runs(&submit(&mut s, tasks)).is_empty(), "no worker yet");
        let placed = runs(&s.handle(joined(1, 4096)));
        assert_eq!(placed.len(), n);
        assert!(s.ready.is_empty());
        assert!(
            (READY_KEPT..=2 * READY_KEPT).contains(&s.ready.capacity()),
            "the ready queue kept room for {} tasks, not about {READY_KEPT}",
            s.ready.capacity()
        );
    }
}
