//! How a task ends and what follows: results recorded, errors and cancels
//! spread to dependents, watchers told, retries, and results computed
//! again from their lineage.

use super::*;

impl Scheduler {
    /// A task began on `worker` (unless it is not that worker's to run, or
    /// began already). Said by the worker's `Started`, or by the task's end
    /// when the worker left the `Started` out of the batch that carried the
    /// end (see `Weigh::coalesce`): then it began as it ended, as far as
    /// the scheduler can tell.
    pub(super) fn began(&mut self, worker: WorkerId, key: &str) {
        let now = self.activity.now_ms;
        if let Some(t) = self.tasks.get_mut(key)
            && let State::Processing {
                worker: w, started, ..
            } = &mut t.state
            && *w == worker
            && !*started
        {
            *started = true;
            t.stamps.began(now);
            if let Some(mut w) = self.workers.get_mut(&worker) {
                w.began_ms = now;
            }
        }
    }

    pub(super) fn finished(
        &mut self,
        worker: WorkerId,
        key: String,
        located: Located,
        out: &mut Vec<Command>,
    ) {
        // The worker's own few keys in flight hold the table's copy of
        // this one: found there, the task is found by that copy (in the
        // table's cache of recent lookups) without probing the index of
        // every task, a cache miss or more each at a million tasks.
        let known = self
            .workers
            .get(&worker)
            .and_then(|w| w.processing.get(key.as_str()).cloned());
        let Some(key) = known.or_else(|| self.tasks.key(&key)) else {
            if let Some(mut w) = self.workers.get_mut(&worker) {
                w.processing.remove(key.as_str());
                w.queued.remove(key.as_str());
            }
            // Forgotten while running: drop the result.
            out.push(Command::Free {
                worker,
                keys: vec![key],
            });
            return;
        };
        self.began(worker, &key);
        let task = self.tasks.get_mut(&key).expect("present");
        if let Some(mut w) = self.workers.get_mut(&worker) {
            w.give_back(&key, &task.recipe.placement().resources);
        }
        if matches!(&task.state, State::Processing { worker: w, .. } if *w == worker) {
            self.task_ended(&key, out);
        }
        let task = self.tasks.get_mut(&key).expect("present");
        let scattered = task.is_scattered();
        match &mut task.state {
            State::Processing { worker: w, .. } if *w == worker || scattered => {}
            // Another copy (broadcast scatter): remember where it is.
            State::Finished { result } if scattered => {
                // A copy told of twice (sent twice) counts once.
                if !result.who_has.contains(&worker) {
                    result.who_has.push(worker);
                    if let Some(mut w) = self.workers.get_mut(&worker) {
                        w.has.insert(key.clone());
                    }
                    let req = self.scatter_requests.get(&key).copied();
                    self.scatter_stored(req, worker, out);
                }
                return;
            }
            // Not a run this worker was asked for (given up on and placed
            // again, cancelled, erred): the result is kept if it is still
            // wanted and freed on the worker otherwise, never left there.
            _ => return self.adopt_result(worker, &key, located, out),
        }
        let req = self.scatter_requests.get(&key).copied();
        let kept = keeps_a_copy(&located, task);
        self.activity.set(
            &key,
            task,
            State::Finished {
                result: Stored {
                    inline: located.inline.map(|b| Box::from(&b[..])),
                    who_has: if kept {
                        thin_vec::thin_vec![worker]
                    } else {
                        ThinVec::new()
                    },
                    nbytes: located.nbytes,
                },
            },
        );
        if kept && let Some(mut w) = self.workers.get_mut(&worker) {
            w.has.insert(key.clone());
        }
        self.scatter_stored(req, worker, out);
        self.notify(&key, out);
        let dependents = self.tasks[&key].dependents.to_vec();
        for d in dependents {
            if let Some(dt) = self.tasks.get_mut(&d)
                && let State::Pending { waiting_on } = &mut dt.state
            {
                *waiting_on -= 1;
                if *waiting_on == 0 {
                    self.ready.push(dt.ready_entry(d.clone()));
                }
            }
        }
        self.ended(&key, out);
    }

    /// `key` reached a terminal state: it no longer needs its inputs.
    pub(super) fn ended(&mut self, key: &str, out: &mut Vec<Command>) {
        let deps = match self.tasks.get_mut(key) {
            Some(t) => {
                t.holders.remove(FIRE_AND_FORGET);
                t.deps.iter().cloned().collect::<Keys>()
            }
            None => return,
        };
        for d in deps {
            if let Some(dep) = self.tasks.get_mut(&d) {
                dep.needed_by = dep.needed_by.saturating_sub(1);
            }
            self.maybe_forget(&d, None, out);
        }
        self.maybe_forget(key, None, out);
    }

    /// Fails `key` and, transitively, every dependent that has not ended.
    pub(super) fn fail(&mut self, key: &str, error: TaskError, out: &mut Vec<Command>) {
        self.end_tree(key, || State::Error(Box::new(error.clone())), out);
    }

    /// Cancels `key` and every dependent that has not ended.
    pub(super) fn cancel_tree(&mut self, key: &str, out: &mut Vec<Command>) {
        self.end_tree(key, || State::Cancelled, out);
    }

    /// Ends `key` and, transitively, every dependent that has not ended, in
    /// the state `end` makes; those running are interrupted.
    pub(super) fn end_tree(&mut self, key: &str, end: impl Fn() -> State, out: &mut Vec<Command>) {
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            if !self.end_one(&k, end(), out) {
                continue;
            }
            stack.extend(self.tasks[&k].dependents.iter().cloned());
            self.ended(&k, out);
        }
    }

    /// Ends `key` alone in state `end`, unless it has ended already
    /// (false): interrupted if running, its watchers told. What follows
    /// for its inputs and dependents is the caller's.
    pub(super) fn end_one(&mut self, k: &Key, end: State, out: &mut Vec<Command>) -> bool {
        let Some(t) = self.tasks.get_mut(k) else {
            return false;
        };
        if t.is_terminal() {
            return false;
        }
        if let State::Processing { worker, .. } = t.state
            && let Some(mut w) = self.workers.get_mut(&worker)
            && w.processing.contains(k)
        {
            w.give_back(k, &t.recipe.placement().resources);
            out.push(Command::CancelRun {
                worker,
                keys: vec![k.to_string()],
            });
        }
        let was_running = matches!(t.state, State::Processing { .. });
        self.activity.set(k, t, end);
        self.no_worker.remove(k);
        if was_running {
            self.task_ended(k, out);
        }
        self.notify(k, out);
        true
    }

    pub(super) fn notify(&mut self, key: &str, out: &mut Vec<Command>) {
        let watchers = match self.tasks.get_mut(key) {
            Some(t) => std::mem::take(&mut t.watchers),
            None => return,
        };
        if watchers.is_empty() {
            return;
        }
        let outcome = self.outcome(key);
        for w in watchers {
            self.tell(w, key.to_string(), outcome.clone(), out);
        }
    }

    /// Tells `w` that `key` ended as `outcome`. A finished result that is
    /// not inline, told to a client that reads it, is held for that
    /// connection until it has read it: its holders letting go meanwhile
    /// must not take it from a reader that has not begun.
    pub(super) fn tell(
        &mut self,
        w: Watcher,
        key: String,
        outcome: Outcome,
        out: &mut Vec<Command>,
    ) {
        if w.reads
            && outcome.held_for_readers()
            && let Some(c) = self.clients.get_mut(&w.client)
            && let Some(k) = self.tasks.key(&key)
        {
            let reader = match &c.reader {
                Some(r) => r.clone(),
                None => {
                    let r: Arc<str> = format!("{READER_PREFIX}{}", w.client).into();
                    c.reader = Some(r.clone());
                    // Not journaled: a restart ends the connection anyway.
                    self.ephemeral_holders.insert(r.to_string());
                    r
                }
            };
            self.hold_known(&reader, &k);
        }
        out.push(Command::Done {
            client: w.client,
            key,
            outcome,
        });
    }

    pub(super) fn outcome(&self, key: &str) -> Outcome {
        match self.tasks.get(key).map(|t| &t.state) {
            Some(State::Finished { result }) => Outcome::Finished(self.locate(result)),
            Some(State::Error(e)) => Outcome::Error((**e).clone()),
            Some(State::Lost) => Outcome::Error(lost_error(key)),
            Some(State::Cancelled) => Outcome::Cancelled,
            _ => Outcome::Unknown,
        }
    }

    pub(super) fn locate(&self, s: &Stored) -> Located {
        Located {
            inline: s.inline.as_deref().map(Bytes::copy_from_slice),
            who_has: s
                .who_has
                .iter()
                .filter_map(|w| self.workers.get(w).map(|w| w.data_addr.clone()))
                .collect(),
            nbytes: s.nbytes,
        }
    }

    pub(super) fn cancel(
        &mut self,
        client: ClientId,
        keys: Vec<String>,
        force: bool,
        out: &mut Vec<Command>,
    ) {
        let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) else {
            return;
        };
        for key in keys {
            let Some(t) = self.tasks.get(&key) else {
                continue;
            };
            // This client's alone (or left to run unheld by it): a key it
            // does not hold, a dependency others' tasks still need say, or
            // one its name holds for other pipelines too (submitted by
            // each), or one that work others hold depends on, is not its to
            // cancel without force.
            let sole = t.holders.iter().any(|h| h == &*holder)
                && t.holders
                    .iter()
                    .all(|h| h == &*holder || h == FIRE_AND_FORGET)
                && self.holdings.extra(&holder, &key) == 0
                && !self.others_depend_on(&key, &holder);
            if force || sole {
                self.cancel_tree(&key, out);
            } else {
                // Others still want it: this client just lets go.
                self.unhold(&holder, &key, out);
            }
        }
    }

    /// Whether work that has not ended and that holders other than
    /// `holder` hold depends on `key`, directly or through other work that
    /// has not ended (the tasks a cancel of `key` would take with it).
    fn others_depend_on(&self, key: &str, holder: &str) -> bool {
        let Some(t) = self.tasks.get(key) else {
            return false;
        };
        let mut stack: Vec<Key> = t.dependents.iter().cloned().collect();
        let mut seen: HashSet<Key> = HashSet::default();
        while let Some(k) = stack.pop() {
            let Some(t) = self.tasks.get(&k) else {
                continue;
            };
            if t.is_terminal() || !seen.insert(k) {
                continue;
            }
            if t.holders
                .iter()
                .any(|h| h != holder && h != FIRE_AND_FORGET)
            {
                return true;
            }
            stack.extend(t.dependents.iter().cloned());
        }
        false
    }

    /// Resets erred keys (and the erred tasks their errors came from, and
    /// everything between) to run again, and cancelled keys whose inputs
    /// can still be had, under new `limits` if given. Returns the keys
    /// refused.
    pub(super) fn retry(
        &mut self,
        keys: Vec<String>,
        limits: Option<&TaskLimits>,
    ) -> Vec<(String, String)> {
        let mut refused = Vec::new();
        for key in keys {
            if let Some(m) = limits.and_then(|l| l.memory_limit)
                && let Err(why) = self.memory_fits(m)
            {
                refused.push((key, why));
                continue;
            }
            let origin = match self.tasks.get(&key).map(|t| &t.state) {
                Some(State::Error(e)) => e.origin.clone(),
                Some(State::Cancelled) => {
                    let t = self.tasks.get_mut(&key).expect("present");
                    if let Some(l) = limits
                        && t.recipe.set_limits(l.over(t.recipe.limits()))
                    {
                        t.journaled = 0;
                    }
                    if let Err(why) = self.run_cancelled_again(&key) {
                        refused.push((key, why));
                    }
                    continue;
                }
                Some(_) => {
                    refused.push((
                        key,
                        "it has neither erred nor been cancelled: nothing to run again".into(),
                    ));
                    continue;
                }
                None => {
                    refused.push((key.clone(), format!("unknown key {key}")));
                    continue;
                }
            };
            // Everything downstream of the origin that erred with its error:
            // from the origin if it erred itself, else (an input lost with
            // its worker, since stored or computed again) from the tasks
            // that erred for want of it.
            let start: Vec<Key> = match self.tasks.get(&origin) {
                Some(t) if matches!(&t.state, State::Error(e) if e.origin == origin) => {
                    self.tasks.key(&origin).into_iter().collect()
                }
                Some(t) if t.is_scattered() && matches!(t.state, State::Lost | State::Released) => {
                    refused.push((
                        key,
                        format!(
                            "its input {origin}, scattered data, is lost (no worker holds it \
                             any more): scatter it again, then retry"
                        ),
                    ));
                    continue;
                }
                Some(t) => t.dependents.iter().cloned().collect(),
                None => Vec::new(),
            };
            let mut reset: Vec<Key> = Vec::new();
            let mut seen: HashSet<Key> = HashSet::default();
            let mut stack: Vec<Key> = start;
            while let Some(k) = stack.pop() {
                if let Some(t) = self.tasks.get(&k)
                    && matches!(&t.state, State::Error(e) if e.origin == origin)
                    && seen.insert(k.clone())
                {
                    stack.extend(t.dependents.iter().cloned());
                    reset.push(k);
                }
            }
            if reset.is_empty() {
                refused.push((
                    key,
                    format!(
                        "its error came from {origin}, which was released and is no \
                         longer known: submit (or scatter) {origin} again, then retry"
                    ),
                ));
                continue;
            }
            if let Some(missing) = reset.iter().find_map(|k| {
                self.tasks[k]
                    .deps
                    .iter()
                    .find(|d| !self.tasks.contains_key(d))
                    .cloned()
            }) {
                refused.push((key, format!("its input {missing} was released")));
                continue;
            }
            for k in &reset {
                let t = self.tasks.get_mut(k).expect("present");
                if let Some(l) = limits
                    && t.recipe.set_limits(l.over(t.recipe.limits()))
                {
                    // The journal records the task anew.
                    t.journaled = 0;
                }
                self.activity.set(k, t, State::Pending { waiting_on: 0 });
                t.start_over();
                for d in t.deps.clone() {
                    self.tasks.get_mut(&d).expect("checked").needed_by += 1;
                }
            }
            for k in &reset {
                // Inputs that were released meanwhile are computed again.
                self.requeue(k);
            }
        }
        refused
    }

    /// Makes a released or lost result wanted again: it and whatever of its
    /// inputs is gone too go back to pending, inputs first (a worklist, for
    /// long chains).
    pub(super) fn recompute(&mut self, key: &str) {
        let mut revived = Vec::new();
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(t) = self.tasks.get_mut(&k) else {
                continue;
            };
            if !matches!(t.state, State::Released | State::Lost) || t.is_scattered() {
                continue;
            }
            if !self.unreported_results.is_empty() && self.unreported_results.contains(&*k) {
                // Its worker may yet report it (see `rejoin_settled`).
                self.deferred.push(k);
                continue;
            }
            self.activity.set(&k, t, State::Pending { waiting_on: 0 });
            self.stats.reruns += 1;
            let deps = t.deps.clone();
            for d in deps {
                if let Some(dep) = self.tasks.get_mut(&d) {
                    dep.needed_by += 1;
                    if matches!(dep.state, State::Released | State::Lost) {
                        stack.push(d);
                    }
                }
            }
            revived.push(k);
        }
        // Inputs were revived after their dependents: count from the end.
        for k in revived.iter().rev() {
            self.requeue(k);
        }
    }

    /// The rejoin after a restore has settled: results that lived on
    /// workers and that none reported are computed again, those asked for
    /// since first, and actors none reported are lost.
    pub(super) fn rejoin_settled(&mut self, out: &mut Vec<Command>) {
        self.rejoin_began_ms = None;
        self.actors_rejoin_settled(out);
        if self.unreported_results.is_empty() {
            return;
        }
        self.unreported_results = HashSet::default();
        for k in std::mem::take(&mut self.deferred) {
            let wanted = self.tasks.get(&k).is_some_and(|t| {
                !t.holders.is_empty() || t.needed_by > 0 || !t.watchers.is_empty()
            });
            if wanted {
                self.recompute(&k);
            }
        }
    }

    /// How many of `key`'s inputs are not finished.
    pub(super) fn unfinished_inputs(&self, key: &str) -> usize {
        self.tasks[key]
            .deps
            .iter()
            .filter(|d| {
                !matches!(
                    self.tasks.get(d).map(|t| &t.state),
                    Some(State::Finished { .. })
                )
            })
            .count()
    }

    /// Sets a pending task's count of unfinished inputs, bringing released
    /// inputs back first, and queues it if it has none.
    /// Scattered data that is gone cannot be brought back: the task is
    /// failed at the end of the event (`doomed`). Restored scattered data
    /// that a worker may still report (the rejoin window is open) is
    /// waited for, as an unfinished input.
    pub(super) fn requeue(&mut self, key: &str) {
        for d in self.tasks[key].deps.clone() {
            match self.tasks.get(&d) {
                Some(t) if matches!(t.state, State::Released | State::Lost) => {
                    if t.is_scattered() {
                        let awaited = matches!(t.state, State::Released)
                            && self.unreported_scatters.contains(&*d);
                        if !awaited {
                            let k = self.tasks.key(key).expect("present");
                            self.doomed.push((k, d));
                        }
                    } else {
                        self.recompute(&d);
                    }
                }
                _ => {}
            }
        }
        let waiting = self.unfinished_inputs(key);
        let k = self.tasks.key(key).expect("present");
        let t = self.tasks.get_mut(key).expect("present");
        self.activity.set(
            key,
            t,
            State::Pending {
                waiting_on: waiting,
            },
        );
        if waiting == 0 {
            self.ready.push(t.ready_entry(k));
        }
    }
}

/// Whether the worker that reports `at` for `task` keeps a copy of it. A
/// task's result small enough to travel inline lives at the scheduler
/// alone: the worker does not keep it, so the scheduler neither notes the
/// worker as holding it nor frees it there. Scattered data is kept where
/// it was stored, whatever its size.
pub(super) fn keeps_a_copy(at: &Located, task: &Task) -> bool {
    at.inline.is_none() || task.is_scattered()
}
