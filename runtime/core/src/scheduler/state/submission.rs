//! Submitting tasks and holding them: checks, inserting a spec and its
//! dependencies, holds by clients, and forgetting what nobody holds.

use super::*;

impl Scheduler {
    /// Adds a task to the table, counting it.
    pub(super) fn add_task(&mut self, key: Key, task: Task) {
        self.activity
            .added(&task.recipe.func.function, activity::Phase::of(&task.state));
        if let Some(mut replaced) = self.tasks.insert(key, task) {
            // A key a damaged snapshot lists twice: the copy replaced no
            // longer counts, nor holds anything.
            self.activity.removed(
                &replaced.recipe.func.function,
                activity::Phase::of(&replaced.state),
            );
            let names: Vec<Arc<str>> = replaced.holders.names().cloned().collect();
            for name in names {
                self.holdings.end_hold(&name, &mut replaced.holders);
            }
        }
    }

    /// Makes `holder` hold `key` (and compute it again if its result was
    /// dropped); false if the key is unknown. A hold it has already stays
    /// one (see [`Scheduler::hold_counted`]).
    pub(super) fn hold(&mut self, holder: &str, key: &str) -> bool {
        let Some(k) = self.tasks.key(key) else {
            return false;
        };
        self.hold_known(holder, &k);
        self.recompute(&k);
        true
    }

    /// Makes `holder` hold `key`, a task in the table (once, however often
    /// asked).
    pub(super) fn hold_known(&mut self, holder: &str, key: &Key) {
        let t = self.tasks.get_mut(key).expect("known");
        self.holdings.hold(holder, key, &mut t.holders);
    }

    /// Whether `key` (task `t`) is scattered data its holders released, kept
    /// only as the input its dependents were computed from: its value is
    /// gone for good (unless a restored scheduler still waits for its worker
    /// to report it), so to a client it is unknown.
    pub(super) fn released_scatter(&self, key: &str, t: &Task) -> bool {
        t.is_scattered()
            && matches!(t.state, State::Released)
            && !self.unreported_scatters.contains(key)
    }

    /// Makes `holder` hold `key`, a task in the table, once more: a
    /// counted submit, which one release undoes.
    pub(super) fn hold_counted(&mut self, holder: &str, key: &Key) {
        let t = self.tasks.get_mut(key).expect("known");
        self.holdings.hold_counted(holder, key, &mut t.holders);
    }

    /// Submits `tasks` for `client`, holding their keys: each once more
    /// if `counted`, else a key the client holds already stays held once.
    pub(super) fn submit(
        &mut self,
        client: ClientId,
        tasks: Vec<TaskSpec>,
        counted: bool,
        out: &mut Vec<Command>,
    ) -> (KeyReasons, KeyReasons) {
        let Some((holder, group)) = self
            .clients
            .get(&client)
            .map(|c| (c.holder.clone(), c.group))
        else {
            return (Vec::new(), Vec::new());
        };
        let mut refused = Vec::new();
        let mut unplaceable: Vec<(String, String)> = Vec::new();
        let alone = self.workers.is_empty() && self.workers_joined >= self.own_workers;
        let mut first = None;
        for spec in tasks {
            let key = spec.key.clone();
            if let Some(m) = spec.memory_limit
                && let Err(why) = self.memory_fits(m)
            {
                refused.push((key, why));
                continue;
            }
            if !self.tasks.contains_key(&key) {
                let deps = match self.check(&spec) {
                    Ok(deps) => deps,
                    Err(why) => {
                        refused.push((key, why));
                        continue;
                    }
                };
                let restricted = spec.memory_limit.is_some()
                    || !spec.placement.resources.is_empty()
                    || (!spec.placement.workers.is_empty() && !spec.placement.allow_other_workers);
                self.insert(spec, deps, &holder, group, out);
                if restricted
                    && let Some(why) = self.tasks.get(&key).and_then(|t| self.why_no_worker(t))
                    && !unplaceable.iter().any(|(_, w)| *w == why)
                {
                    unplaceable.push((key.clone(), why));
                }
            } else {
                if let Some(why) = self.another_task(&spec) {
                    refused.push((key, why));
                    continue;
                }
                let k = self.tasks.key(&key).expect("known");
                if counted {
                    self.hold_counted(&holder, &k);
                } else {
                    self.hold_known(&holder, &k);
                }
                self.recompute(&k);
                self.resubmitted(&key, &spec);
            }
            if alone && first.is_none() {
                first = Some(key);
            }
        }
        // Nothing to run them (but workers the scheduler starts itself,
        // which are on their way): said once, unless a task's own reason
        // said it already.
        if let Some(key) = first
            && unplaceable.is_empty()
            && !self.tasks.get(&key).is_some_and(|t| t.is_terminal())
        {
            unplaceable.push((key, "no worker is connected".into()));
        }
        (refused, unplaceable)
    }

    /// Why `spec`'s key, which the scheduler knows, names another task: a
    /// key of the form dtask gives its own (a call's, named by what it
    /// computes) under which the module, function or arguments differ, or
    /// scattered data's. An argument given as a value is the same as one
    /// given as the scattered data of that value (the shell scatters a big
    /// stdin, keeping the key the value gives). `None` for the same task
    /// submitted again, and for any submit under a key of another form
    /// (one a user chose: the same key is the same future, as in Dask,
    /// so a parent task run again that submits its child under the same
    /// chosen key gets the child it had).
    fn another_task(&self, spec: &TaskSpec) -> Option<String> {
        let t = self.tasks.get(&spec.key)?;
        if !t.is_scattered() && !crate::key::has_own_form(&spec.key) {
            return None;
        }
        let same = !t.is_scattered()
            && *t.recipe.func.module == *spec.module
            && *t.recipe.func.function == *spec.function
            && t.recipe.args.len() == spec.args.len()
            && t.recipe.args.iter().zip(&spec.args).all(|pair| match pair {
                (a, b) if a == b => true,
                (Arg::Value(v), Arg::Future(k)) | (Arg::Future(k), Arg::Value(v)) => {
                    k.starts_with("data-")
                        && *k == crate::key::pure_key("", "data", &[Arg::Value(v.clone())])
                }
                _ => false,
            });
        (!same).then(|| {
            let what = if t.is_scattered() {
                "scattered data".to_string()
            } else {
                format!("another call of {}", t.recipe.func.function)
            };
            format!(
                "key {} names {what} already: choose another --key (keys of the form \
                 NAME-<32 hex digits> are dtask's own)",
                spec.key
            )
        })
    }

    /// A memory limit some connected worker allows (any, with none
    /// connected: the task waits for one).
    pub(super) fn memory_fits(&self, limit: u64) -> Result<(), String> {
        let Some(most) = self.workers.values().map(|w| w.memory_limit).max() else {
            return Ok(());
        };
        if limit <= most {
            return Ok(());
        }
        Err(format!(
            "a memory limit of {} MiB is more than any connected worker allows ({} MiB); \
             ask for less, or start workers with a larger --memory-limit-mib",
            limit.div_ceil(1 << 20),
            most >> 20
        ))
    }

    /// A key submitted again that was cancelled runs again, as a new
    /// submission of a key Dask forgot at its cancel would; one that erred
    /// runs again when the submission asks for other limits (timeout,
    /// memory, retries): the same call under new limits is a new attempt,
    /// not the old one, while under the same limits its error stands.
    pub(super) fn resubmitted(&mut self, key: &str, spec: &TaskSpec) {
        let limits = (spec.timeout_ms, spec.memory_limit, spec.retries);
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let cancelled = matches!(t.state, State::Cancelled);
        let erred = matches!(t.state, State::Error(_));
        if !(cancelled || erred && t.recipe.limits() != limits) {
            return;
        }
        if t.recipe.set_limits(limits) {
            t.journaled = 0;
        }
        if cancelled {
            // Its inputs cancelled or erred too: it stays as it is, and
            // runs once they are submitted (or retried) first.
            let _ = self.run_cancelled_again(key);
        } else {
            self.retry(vec![key.to_string()], None);
        }
    }

    /// Runs a cancelled task again, if its inputs can still be had.
    pub(super) fn run_cancelled_again(&mut self, key: &str) -> Result<(), String> {
        let t = self.tasks.get(key).expect("present");
        if t.is_scattered() {
            return Err("it is scattered data, which has no task to run: scatter it again".into());
        }
        let deps = t.deps.clone();
        if let Some(d) = deps.iter().find(|d| {
            matches!(
                self.tasks.get(d).map(|t| &t.state),
                None | Some(State::Error(_) | State::Cancelled)
            )
        }) {
            return Err(format!(
                "its input {d} was cancelled, erred or released: submit or retry it first"
            ));
        }
        let t = self.tasks.get_mut(key).expect("present");
        self.activity.set(key, t, State::Pending { waiting_on: 0 });
        t.start_over();
        for d in &deps {
            self.tasks.get_mut(d).expect("checked").needed_by += 1;
        }
        self.requeue(key);
        Ok(())
    }

    /// Whether `spec` may be added: its module is known and allowed, its
    /// values fit and every future it takes is known. Its inputs, the
    /// distinct keys among its future arguments in order, are returned.
    pub(super) fn check(&self, spec: &TaskSpec) -> Result<Keys, String> {
        if let Some(why) = self.refused_modules.get(&spec.module) {
            return Err(format!("module {} was refused: {why}", spec.module));
        }
        if !self.modules.contains(&spec.module) {
            return Err(format!(
                "module {} was never uploaded to the scheduler",
                spec.module
            ));
        }
        if let Some((name, amount)) = spec
            .placement
            .resources
            .iter()
            .find(|(_, amount)| !(amount.is_finite() && *amount >= 0.0))
        {
            return Err(format!(
                "resource {name}={amount}: an amount is a number, 0 or more"
            ));
        }
        let mut deps = Keys::new();
        for (i, arg) in spec.args.iter().enumerate() {
            match arg {
                Arg::Value(v) => self.value_fits(
                    || format!("argument {} of {}", i + 1, spec.function),
                    v.len(),
                )?,
                Arg::Future(dep) => {
                    let known = self
                        .tasks
                        .get(dep)
                        .filter(|t| !self.released_scatter(dep, t))
                        .and_then(|_| self.tasks.key(dep));
                    let Some(dep) = known else {
                        return Err(format!(
                            "argument @{dep} names no future the scheduler knows \
                             (never submitted, or released)"
                        ));
                    };
                    if !deps.contains(&dep) {
                        deps.push(dep);
                    }
                }
            }
        }
        Ok(deps)
    }

    /// Adds a new task held by `holder`, taking its turns among ready
    /// tasks as `group`; it becomes ready, waits, or errs at once if an
    /// input already erred. `deps` are its inputs, as
    /// [`Scheduler::check`] found them.
    pub(super) fn insert(
        &mut self,
        mut spec: TaskSpec,
        deps: Keys,
        holder: &str,
        group: u32,
        out: &mut Vec<Command>,
    ) {
        let key: Key = Key::from(std::mem::take(&mut spec.key));
        let holders = self.holdings.hold_new(holder, &key);
        self.seq += 1;
        let mut waiting_on = 0;
        let mut inherited: Option<TaskError> = None;
        let mut cancelled = false;
        let mut revive = Vec::new();
        for d in &deps {
            let dep = self.tasks.get_mut(d).expect("checked by submit");
            dep.dependents.push(key.clone());
            dep.needed_by += 1;
            match &dep.state {
                State::Finished { .. } => {}
                State::Error(e) => inherited = Some((**e).clone()),
                State::Lost => inherited = Some(lost_error(d)),
                State::Cancelled => cancelled = true,
                State::Released => {
                    revive.push(d.clone());
                    waiting_on += 1;
                }
                _ => waiting_on += 1,
            }
        }
        for d in revive {
            self.recompute(&d);
        }
        let task = Task {
            seq: self.seq,
            state: State::Pending { waiting_on },
            deps: deps.into_iter().collect(),
            dependents: Dependents::default(),
            needed_by: 0,
            holders,
            watchers: ThinVec::new(),
            retries_left: saturate(spec.retries),
            deaths: 0,
            fetch_misses: 0,
            stamps: activity::Stamps::at(self.activity.now_ms),
            journaled: 0,
            group,
            recipe: Recipe::new(spec, &mut self.names),
        };
        let ready = task.ready_entry(key.clone());
        self.add_task(key.clone(), task);
        if let Some(e) = inherited {
            self.fail(&key, e, out);
        } else if cancelled {
            self.cancel_tree(&key, out);
        } else if waiting_on == 0 {
            self.ready.push(ready);
        }
    }

    /// Releases `holder`'s hold on `key` and forgets the key if nothing
    /// needs it now.
    pub(super) fn unhold(&mut self, holder: &str, key: &str, out: &mut Vec<Command>) -> bool {
        // Looked up by the table's copy of the key from here on: found
        // again from the cache of recent lookups, where a client's copy
        // would be hashed and probed for each.
        let Some(key) = self.tasks.key(key) else {
            return false;
        };
        let held = match self.tasks.get_mut(&key) {
            Some(t) => self.holdings.let_go(holder, &key, &mut t.holders),
            None => false,
        };
        if held && self.holdings.lags(holder) {
            let tasks = &self.tasks;
            self.holdings.compact(holder, |k| {
                tasks.get(k).is_some_and(|t| t.holders.contains(holder))
            });
        }
        self.maybe_forget(&key, Some(holder), out);
        held
    }

    /// Forgets `key` if nothing holds or needs it any more, and then its
    /// inputs likewise. A task forgotten before it ended is cancelled
    /// first (interrupted if running), as Dask forgets work nobody wants:
    /// a `release --all` of a pipeline's pending keys stops it. Not while
    /// a connected client other than the one letting go (`by`, a holder
    /// name; `None`: none) waits for it to end: a `gather` of a key it
    /// does not hold, a task waiting on a key it was handed. Scattered
    /// data still being stored is not cancelled either: it is forgotten
    /// once stored. A worklist, not recursion: releasing the end of a
    /// 100k-task chain must not overflow the scheduler's stack.
    pub(super) fn maybe_forget(&mut self, key: &str, by: Option<&str>, out: &mut Vec<Command>) {
        let unwanted = |t: &Task| {
            t.holders.is_empty() && t.needed_by == 0 && (t.is_terminal() || !t.is_scattered())
        };
        // Most calls find the task still wanted: answered before the key is
        // copied for the walk below.
        if !self.tasks.get(key).is_some_and(unwanted) {
            return;
        }
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack: Keys = smallvec::smallvec![key];
        while let Some(key) = stack.pop() {
            let Some(t) = self.tasks.get(&key).filter(|t| unwanted(t)) else {
                continue;
            };
            if !t.is_terminal() {
                if self.watched(t, by) {
                    continue;
                }
                // A task computed again while dependents of its earlier
                // result still exist keeps its recipe, as a finished one
                // would: its run is called off, and it is released.
                let keep = t.dependents.iter().any(|d| self.tasks.contains_key(d));
                // Read before it ends: ending it may let go of holds (its
                // blocked queue puts) and come back here for other keys.
                let deps: Keys = t.deps.iter().cloned().collect();
                let end = if keep {
                    State::Released
                } else {
                    State::Cancelled
                };
                if self.end_one(&key, end, out) {
                    // It no longer needs its inputs (`ended`, inline: the
                    // inputs are walked here, not by recursion).
                    for d in &deps {
                        if let Some(dep) = self.tasks.get_mut(d) {
                            dep.needed_by = dep.needed_by.saturating_sub(1);
                        }
                    }
                }
                if keep {
                    stack.extend(deps);
                    continue;
                }
            }
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            if let State::Finished { result } = &task.state {
                for w in &result.who_has {
                    if let Some(mut worker) = self.workers.get_mut(w) {
                        worker.has.remove(&key);
                        out.push(Command::Free {
                            worker: *w,
                            keys: vec![key.to_string()],
                        });
                    }
                }
            }
            let finished = matches!(task.state, State::Finished { .. } | State::Released);
            let task = self.tasks.get(&key).expect("present");
            if finished && task.dependents.iter().any(|d| self.tasks.contains_key(d)) {
                // Keep the recipe while dependents exist: if one of their
                // results is lost, this may have to be computed again.
                {
                    let t = self.tasks.get_mut(&key).expect("present");
                    self.activity.set(&key, t, State::Released)
                };
                continue;
            }
            let task = self.tasks.remove(&key).expect("present");
            self.scatter_requests.remove(&key);
            self.activity
                .removed(&task.recipe.func.function, activity::Phase::of(&task.state));
            for d in task.deps {
                if let Some(dep) = self.tasks.get_mut(&d) {
                    dep.dependents.remove(&key);
                }
                stack.push(d);
            }
        }
    }

    /// Whether a connected client whose holder is not `by` waits for `t`
    /// to end.
    fn watched(&self, t: &Task, by: Option<&str>) -> bool {
        t.watchers.iter().any(|w| {
            self.clients
                .get(&w.client)
                .is_some_and(|c| by != Some(&*c.holder))
        })
    }
}
