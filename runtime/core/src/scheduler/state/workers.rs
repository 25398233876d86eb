//! Workers as the scheduler keeps them: their slots, queues and resources,
//! what they report, and what becomes of their tasks and results when one
//! leaves.

use super::*;

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) nthreads: u32,
    pub(super) data_addr: String,
    pub(super) name: String,
    pub(super) resources: Vec<(String, f64)>,
    /// The largest memory one task may use there, in bytes.
    pub(super) memory_limit: u64,
    /// Times its supervisor replaced a worker that died.
    pub(super) restarts: u32,
    /// Resources held by the tasks in `processing`.
    pub(super) used: HashMap<String, f64>,
    pub(super) processing: HashSet<Key>,
    /// Those of `processing` sent by a `Run` and not yet begun: they wait
    /// there for a slot, and may be stolen.
    pub(super) queued: HashSet<Key>,
    /// While a request to give tasks back is unanswered: the idle worker
    /// they go to, and the last `Run` sent here when it was asked (a task
    /// sent again later is another copy, not one the answer may name).
    pub(super) steal_to: Option<(WorkerId, u64)>,
    /// Whether tasks are being asked back from another worker for this one.
    pub(super) awaiting: bool,
    /// When a task last began here (or it joined), by the scheduler's
    /// clock: a queue behind slots that have not turned over for a while
    /// is stalled.
    pub(super) began_ms: u64,
    /// Those of `processing` that gave their slot back while they wait;
    /// they do not count against the worker's capacity.
    pub(super) seceded: HashSet<Key>,
    pub(super) has: HashSet<Key>,
    /// Bytes of results it has spilled to disk, as of its last heartbeat.
    pub(super) spilled: u64,
    /// Bytes of results it holds, as of its last heartbeat.
    pub(super) held: u64,
    /// Its resident memory, as of its last heartbeat.
    pub(super) rss: u64,
    /// (inputs fetched from other workers, their bytes), as of its last
    /// heartbeat.
    pub(super) fetched: (u64, u64),
    /// Instances in use, (pooled, set up on demand), as of its last
    /// heartbeat.
    pub(super) instances: (u32, u32),
    /// When it joined or last sent a heartbeat, by the scheduler's clock.
    pub(super) heartbeat_ms: u64,
    /// `Run` commands sent to it so far.
    pub(super) runs_sent: u64,
    /// Whether its tasks wait for an instance, every one (pooled and set
    /// up on demand) being held by tasks waiting in host calls and by actors ([`Input::WorkerStarved`]):
    /// it takes no tasks then, and those queued there may be stolen.
    pub(super) starved: bool,
}

impl LoadKey {
    pub(super) fn of(id: WorkerId, w: &Worker) -> Self {
        if w.starved {
            // After every worker that can begin a task.
            return Self {
                load: u64::from(u32::MAX),
                nthreads: 1,
                id,
            };
        }
        Self {
            load: w.load() as u64,
            nthreads: u64::from(w.nthreads.max(1)),
            id,
        }
    }
}

/// The workers, by id, with an index of them by load kept as their loads
/// change (every change goes through [`Workers::get_mut`]'s guard), so the
/// least loaded is found without a walk over all of them.
#[derive(Debug, Default)]
pub(super) struct Workers {
    map: HashMap<WorkerId, Worker>,
    by_load: LoadIndex,
}

impl Workers {
    pub(super) fn get(&self, id: &WorkerId) -> Option<&Worker> {
        self.map.get(id)
    }

    /// The worker, to change; its place in the index follows when the
    /// guard goes.
    pub(super) fn get_mut(&mut self, id: &WorkerId) -> Option<WorkerMut<'_>> {
        let worker = self.map.get_mut(id)?;
        let before = LoadKey::of(*id, worker);
        Some(WorkerMut {
            before,
            worker,
            by_load: &mut self.by_load,
        })
    }

    pub(super) fn insert(&mut self, id: WorkerId, worker: Worker) {
        self.by_load.set(LoadKey::of(id, &worker));
        self.map.insert(id, worker);
    }

    pub(super) fn remove(&mut self, id: &WorkerId) -> Option<Worker> {
        let worker = self.map.remove(id)?;
        self.by_load.remove(*id);
        Some(worker)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&WorkerId, &Worker)> {
        self.map.iter()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Worker> {
        self.map.values()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The least loaded worker for its slots (the lowest id among equals),
    /// if it has room for a task queueing `depth` per slot.
    pub(super) fn least_loaded_with_room(&self, depth: usize) -> Option<WorkerId> {
        let first = self.by_load.first()?;
        // Capacity is proportional to slots: if the least loaded has no
        // room, none has.
        self.map[&first].has_room(depth).then_some(first)
    }
}

impl std::ops::Index<&WorkerId> for Workers {
    type Output = Worker;
    fn index(&self, id: &WorkerId) -> &Worker {
        &self.map[id]
    }
}

/// A worker being changed; puts it in its new place in the index by load
/// when dropped.
pub(super) struct WorkerMut<'a> {
    before: LoadKey,
    worker: &'a mut Worker,
    by_load: &'a mut LoadIndex,
}

impl std::ops::Deref for WorkerMut<'_> {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        self.worker
    }
}

impl std::ops::DerefMut for WorkerMut<'_> {
    fn deref_mut(&mut self) -> &mut Worker {
        self.worker
    }
}

impl Drop for WorkerMut<'_> {
    fn drop(&mut self) {
        let after = LoadKey::of(self.before.id, self.worker);
        let (b, a) = (self.before, after);
        if (b.load, b.nthreads) != (a.load, a.nthreads) {
            self.by_load.set(a);
        }
    }
}

impl Worker {
    /// How many tasks it takes with `depth` queued per slot.
    pub(super) fn capacity(&self, depth: usize) -> usize {
        self.nthreads as usize * (depth + 1)
    }

    /// Tasks that occupy the worker: assigned and not waiting seceded.
    pub(super) fn load(&self) -> usize {
        self.processing.len() - self.seceded.len()
    }

    /// Whether it takes another task of those that queue `depth` per
    /// slot (see [`Scheduler::queue_depth`](super::Scheduler::queue_depth)).
    pub(super) fn has_room(&self, depth: usize) -> bool {
        !self.starved && self.load() < self.capacity(depth)
    }

    /// Tasks sent here beyond its slots, which wait for one (all that
    /// have not begun, while it is starved of instances).
    pub(super) fn backlog(&self) -> usize {
        if self.starved {
            return self.queued.len();
        }
        self.load()
            .saturating_sub(self.nthreads as usize)
            .min(self.queued.len())
    }

    /// Whether `name` (a worker name, data address or id) means this one.
    pub(super) fn is(&self, id: WorkerId, name: &str) -> bool {
        name == self.name || name == self.data_addr || name == id.to_string()
    }

    /// Whether it could ever run a task needing `need` and `memory` (when
    /// idle): it offers that much in all.
    pub(super) fn could_run(&self, need: &[(String, f64)], memory: Option<u64>) -> bool {
        memory.is_none_or(|m| m <= self.memory_limit)
            && need.iter().all(|(r, amount)| {
                self.resources
                    .iter()
                    .any(|(n, total)| n == r && *total >= *amount - 1e-9)
            })
    }

    pub(super) fn offers(&self, need: &[(String, f64)]) -> bool {
        need.iter().all(|(r, amount)| {
            let total = self
                .resources
                .iter()
                .find(|(n, _)| n == r)
                .map_or(0.0, |(_, a)| *a);
            let used = self.used.get(r).copied().unwrap_or(0.0);
            total - used >= *amount - 1e-9
        })
    }

    pub(super) fn take(&mut self, key: &Key, need: &[(String, f64)]) {
        self.processing.insert(key.clone());
        for (r, a) in need {
            *self.used.entry(r.clone()).or_default() += a;
        }
    }

    pub(super) fn give_back(&mut self, key: &str, need: &[(String, f64)]) {
        self.seceded.remove(key);
        self.queued.remove(key);
        if self.processing.remove(key) {
            for (r, a) in need {
                if let Some(u) = self.used.get_mut(r) {
                    *u -= a;
                }
            }
        }
    }
}

impl Scheduler {
    /// A (re)joined worker holds `key`'s result: it is finished there,
    /// unless it already is; a result nobody can use (its task is being
    /// computed on another worker, erred or was cancelled) is freed there.
    pub(super) fn adopt_result(
        &mut self,
        worker: WorkerId,
        key: &str,
        at: Located,
        out: &mut Vec<Command>,
    ) {
        if self.workers.get(&worker).is_none() {
            // A late report from a worker given up on: what it holds is
            // nowhere the scheduler can reach.
            return;
        }
        let Some(key) = self.tasks.key(key) else {
            return out.push(Command::Free {
                worker,
                keys: vec![key.to_string()],
            });
        };
        if !self.unreported_scatters.is_empty() {
            // Reported: from now on it is like any scattered value.
            self.unreported_scatters.remove(&*key);
        }
        let t = self.tasks.get_mut(&key).expect("present");
        let kept = super::lifecycle::keeps_a_copy(&at, t);
        let was_pending = match &t.state {
            State::Released | State::Lost => false,
            State::Pending { .. } => true,
            State::Finished { result } => {
                if kept && !result.who_has.contains(&worker) {
                    if let State::Finished { result } = &mut t.state {
                        result.who_has.push(worker);
                    }
                    if let Some(mut w) = self.workers.get_mut(&worker) {
                        w.has.insert(key);
                    }
                }
                return;
            }
            // Run there again (a rejoining worker is sent the recomputation
            // before its report of what it holds arrives): the run's result
            // replaces this one, and freeing it could free that instead.
            State::Processing { worker: w, .. } if *w == worker => return,
            // Run again elsewhere (after a restart, a recomputation sent to
            // the first worker back before this one reported what it
            // holds): this result stands, and the run is called off.
            State::Processing { worker: w, .. } => {
                let running = *w;
                let need = t.recipe.placement().resources.clone();
                if let Some(mut w) = self.workers.get_mut(&running) {
                    w.give_back(&key, &need);
                }
                out.push(Command::CancelRun {
                    worker: running,
                    keys: vec![key.to_string()],
                });
                self.task_ended(&key, out);
                // Waiting to run, as far as adopting it goes (its run had
                // counted on its inputs): taken as reported, below.
                let t = self.tasks.get_mut(&key).expect("present");
                self.activity.set(&key, t, State::Pending { waiting_on: 0 });
                return self.adopt_result(worker, &key, at, out);
            }
            State::Error(_) | State::Cancelled => {
                return out.push(Command::Free {
                    worker,
                    keys: vec![key.to_string()],
                });
            }
        };
        self.activity.set(
            &key,
            t,
            State::Finished {
                result: Stored {
                    inline: at.inline.map(|b| Box::from(&b[..])),
                    who_has: if kept {
                        thin_vec::thin_vec![worker]
                    } else {
                        ThinVec::new()
                    },
                    nbytes: at.nbytes,
                },
            },
        );
        if kept && let Some(mut w) = self.workers.get_mut(&worker) {
            w.has.insert(key.clone());
        }
        self.notify(&key, out);
        for d in self.tasks[&key].dependents.to_vec() {
            if matches!(
                self.tasks.get(&d).map(|t| &t.state),
                Some(State::Pending { .. })
            ) {
                let waiting = self.unfinished_inputs(&d);
                let dt = self.tasks.get_mut(&d).expect("present");
                self.activity.set(
                    &d,
                    dt,
                    State::Pending {
                        waiting_on: waiting,
                    },
                );
                if waiting == 0 {
                    self.ready.push(dt.ready_entry(d.clone()));
                }
            }
        }
        if was_pending {
            // Its recomputation had counted on its inputs.
            self.ended(&key, out);
        }
    }

    /// Compares what `worker` says it has in hand with what it was
    /// assigned. Messages on a connection arrive in order, and a worker
    /// reports a result before it lets go of the task, so a task whose
    /// `Run` the worker got (its `run_seq` is past it) and that is neither
    /// in hand nor reported finished was certainly lost: it is put back and
    /// placed again, so a lost message can delay a graph but never hang it.
    /// `Run`s it has not acknowledged are covered by a [`Command::Sync`],
    /// which moves its `run_seq` on at its next heartbeat.
    pub(super) fn reconcile(
        &mut self,
        worker: WorkerId,
        run_seq: u64,
        running: &[String],
        out: &mut Vec<Command>,
    ) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if run_seq < w.runs_sent {
            out.push(Command::Sync {
                worker,
                seq: w.runs_sent,
            });
        }
        let running: HashSet<&str> = running.iter().map(String::as_str).collect();
        let mut lost = Vec::new();
        for key in &w.processing {
            if running.contains(&**key) {
                continue;
            }
            match self.tasks.get(key).map(|t| (&t.state, t.is_scattered())) {
                Some((State::Processing { worker: x, run, .. }, false))
                    if *x == worker && *run > 0 && *run <= run_seq =>
                {
                    lost.push(key.clone());
                }
                _ => {}
            }
        }
        for key in lost {
            let need = self.tasks[&key].recipe.placement().resources.clone();
            if let Some(mut w) = self.workers.get_mut(&worker) {
                w.give_back(&key, &need);
            }
            self.stats.resent += 1;
            self.requeue(&key);
        }
    }

    pub(super) fn worker_gone(&mut self, worker: WorkerId, out: &mut Vec<Command>) {
        if self.workers.get(&worker).is_none() {
            return;
        }
        // Keys a big release set aside are let go of first: their holders
        // no longer want them, so what lived only on this worker must not
        // be computed again for them (a worker dying mid-release is rare;
        // the rest of the release then goes at once).
        self.finish_releases_into(out);
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        self.stealing_worker_gone(&w);
        self.activity.worker_gone(worker);
        self.actors_worker_gone(worker, out);
        // Results that lived only there (no inline copy, no replica) are
        // computed again from their lineage if anything still needs them;
        // scattered data has no lineage and is lost.
        let mut lost = self.copies_gone(worker, w.has.iter());
        // Its running and queued tasks go back to the ready queue; their
        // leases end with the instances that held them.
        let mut killers = Vec::new();
        for key in w.processing {
            self.task_ended(&key, out);
            if let Some(t) = self.tasks.get_mut(&key)
                && let State::Processing {
                    worker: x, started, ..
                } = t.state
                && x == worker
            {
                // Tasks queued behind the running ones never touched the
                // worker: they are placed again without blame.
                if started {
                    t.deaths += 1;
                }
                if t.is_scattered() {
                    self.activity.set(&key, t, State::Lost);
                    lost.push(key);
                } else if started && u32::from(t.deaths) >= MAX_WORKER_DEATHS {
                    killers.push(key);
                } else {
                    self.activity.set(&key, t, State::Pending { waiting_on: 0 });
                    self.stats.reruns += 1;
                    self.requeue(&key);
                }
            }
        }
        for key in killers {
            let error = TaskError {
                kind: ErrorKind::KilledWorker,
                message: format!(
                    "task {key} was running on {MAX_WORKER_DEATHS} workers that died; \
                     not trying it on another (does it crash its worker?)"
                ),
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.to_string(),
            };
            self.fail(&key, error, out);
        }
        self.report_lost(lost, out);
        self.scatters_worker_gone(worker, &w.name, out);
    }

    /// `worker` no longer holds `keys` (their spill files could not be
    /// read back): as for results lost with a worker, those left with no
    /// copy are computed again if still wanted, or lost if scattered.
    pub(super) fn copies_dropped(
        &mut self,
        worker: WorkerId,
        keys: Vec<String>,
        out: &mut Vec<Command>,
    ) {
        let Some(mut w) = self.workers.get_mut(&worker) else {
            return;
        };
        let had: Vec<Key> = keys.iter().filter_map(|k| w.has.take(k.as_str())).collect();
        drop(w);
        let lost = self.copies_gone(worker, had.iter());
        self.report_lost(lost, out);
    }

    /// Drops `worker` from where `keys` are held. Results left with no
    /// copy (none inline, no replica) are computed again from their
    /// lineage if anything still needs them; scattered data has no
    /// lineage and is lost: returned, to be reported.
    fn copies_gone<'a>(
        &mut self,
        worker: WorkerId,
        keys: impl Iterator<Item = &'a Key>,
    ) -> Vec<Key> {
        let mut lost = Vec::new();
        let mut gone = Vec::new();
        for key in keys {
            if let Some(t) = self.tasks.get_mut(key)
                && let State::Finished { result } = &mut t.state
            {
                result.who_has.retain(|x| *x != worker);
                if result.who_has.is_empty() && result.inline.is_none() {
                    if t.is_scattered() {
                        self.activity.set(key, t, State::Lost);
                        lost.push(key.clone());
                    } else {
                        self.activity.set(key, t, State::Released);
                        gone.push(key.clone());
                    }
                }
            }
        }
        for key in gone {
            let t = &self.tasks[&key];
            if !t.holders.is_empty() || t.needed_by > 0 {
                self.recompute(&key);
                // Dependents already waiting recount what they wait for.
                for d in self.tasks[&key].dependents.to_vec() {
                    let waiting = match self.tasks.get(&d) {
                        Some(dt) if matches!(dt.state, State::Pending { .. }) => {
                            self.unfinished_inputs(&d)
                        }
                        _ => continue,
                    };
                    if let Some(dt) = self.tasks.get_mut(&d) {
                        self.activity.set(
                            &d,
                            dt,
                            State::Pending {
                                waiting_on: waiting,
                            },
                        );
                    }
                }
            }
        }
        lost
    }

    /// Tells the watchers of `lost` keys and fails their dependents.
    pub(super) fn report_lost(&mut self, lost: Vec<Key>, out: &mut Vec<Command>) {
        for key in lost {
            self.notify(&key, out);
            let dependents = self.tasks[&key].dependents.to_vec();
            for d in dependents {
                self.fail(&d, lost_error(&key), out);
            }
        }
    }
}
