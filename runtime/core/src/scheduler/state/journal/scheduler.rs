//! The scheduler's side of the journal: taking a snapshot, restoring
//! from one, and turning what each event touched into records.

use super::*;

impl Scheduler {
    /// The durable part of the state, to write to the journal.
    pub fn snapshot(&self) -> Snapshot {
        let mut tasks: Vec<SavedTask> = self
            .tasks
            .iter()
            .map(|(key, t)| {
                let status = self.status_of(key, t);
                SavedTask {
                    spec: t.recipe.spec(key),
                    seq: t.seq,
                    state: status.state,
                    holders: status.holders,
                    retries_left: status.retries_left,
                    deaths: status.deaths,
                    scattered: t.is_scattered(),
                }
            })
            .collect();
        tasks.sort_by_key(|t| t.seq);
        let p = &self.prims;
        let leases = |lock: bool, all: &rustc_hash::FxHashMap<String, Leases>| {
            all.iter()
                .map(|(name, l)| (lock, name.clone(), l.max, self.durable_lease_holders(l)))
                .collect::<Vec<_>>()
        };
        let mut all_leases = leases(true, &p.locks);
        all_leases.extend(leases(false, &p.semaphores));
        Snapshot {
            version: SNAPSHOT_VERSION,
            modules: self.modules.iter().cloned().collect(),
            tasks,
            queues: p
                .queues
                .iter()
                .map(|(n, q)| {
                    let items = q.items.iter().map(|k| k.item.clone()).collect();
                    (n.clone(), q.maxsize, items)
                })
                .collect(),
            variables: p
                .variables
                .iter()
                .filter_map(|(n, v)| Some((n.clone(), v.item.as_ref()?.item.clone())))
                .collect(),
            events: p
                .events
                .iter()
                .filter(|(_, f)| f.set)
                .map(|(n, _)| n.clone())
                .collect(),
            leases: all_leases,
            stats: self.stats.clone(),
            answers: p
                .answered
                .in_order()
                .map(|(s, id, r)| (s, id, r.clone()))
                .collect(),
            actors: self.saved_actors(),
        }
    }

    /// A scheduler in the state `snapshot` saved: finished keys stay
    /// finished, unfinished tasks wait to run again.
    pub fn restore(mut self, mut snapshot: Snapshot) -> Result<Self, String> {
        for saved in std::mem::take(&mut snapshot.tasks) {
            self.restore_task(saved);
        }
        self.finish_restore(snapshot)
    }

    /// Makes room for `n` more tasks, before restoring that many.
    pub fn reserve_tasks(&mut self, n: usize) {
        self.tasks.reserve(n);
    }

    /// Restores one task of a snapshot, in any order; then
    /// [`Scheduler::finish_restore`].
    pub fn restore_task(&mut self, saved: SavedTask) {
        let key: super::super::Key = saved.spec.key.as_str().into();
        let mut deps: Vec<super::super::Key> = Vec::new();
        for arg in &saved.spec.args {
            if let Arg::Future(d) = arg
                && !deps.iter().any(|k| **k == **d)
            {
                // Shared with the input's entry by finish_restore.
                deps.push(d.as_str().into());
            }
        }
        let mut holders = super::super::Holders::default();
        // A damaged snapshot's second copy of a key: the holders' logs take
        // the table's copy, the one it keeps (see `Holdings::compact`).
        let key = self.tasks.key(&key).unwrap_or(key);
        // Listed once per hold.
        for h in &saved.holders {
            self.restored_holder(h);
            self.holdings.hold_counted(h, &key, &mut holders);
        }
        let state = match saved.state {
            // Scattered data still being stored has no recipe to run: it
            // is known once a worker reports it, as below.
            SavedState::Unfinished if saved.scattered => {
                self.unreported_scatters.insert(key.to_string());
                State::Released
            }
            SavedState::Unfinished => State::Pending { waiting_on: 0 },
            SavedState::Finished {
                inline: Some(inline),
                nbytes,
            } => State::Finished {
                result: Stored {
                    inline: Some(Box::from(&inline[..])),
                    who_has: ThinVec::new(),
                    nbytes,
                },
            },
            // Its data is on a worker, if anywhere: until that worker
            // reports it, it is known by its recipe (scattered data has
            // none, and is lost if no worker reports it in time).
            SavedState::Finished { inline: None, .. } => {
                if saved.scattered {
                    self.unreported_scatters.insert(key.to_string());
                } else {
                    self.unreported_results.insert(key.to_string());
                }
                State::Released
            }
            SavedState::Error(e) => State::Error(e),
            SavedState::Cancelled => State::Cancelled,
            SavedState::Lost => State::Lost,
            SavedState::Released => State::Released,
        };
        self.seq = self.seq.max(saved.seq);
        let recipe = super::super::Recipe::new(saved.spec, &mut self.names);
        self.add_task(
            key,
            Task {
                recipe,
                seq: saved.seq,
                state,
                deps: deps.into_iter().collect(),
                dependents: super::super::Dependents::default(),
                needed_by: 0,
                holders,
                watchers: ThinVec::new(),
                retries_left: super::super::saturate(saved.retries_left),
                deaths: super::super::saturate(saved.deaths),
                fetch_misses: 0,
                stamps: super::super::activity::Stamps::at(0),
                journaled: 0,
                group: 0,
            },
        );
    }

    /// Ends a restore begun with [`Scheduler::restore_task`]: links inputs
    /// to their dependents, queues unfinished tasks, and restores the rest
    /// of `snapshot` (its modules, counters and primitives; its tasks, if
    /// any, are ignored).
    pub fn finish_restore(mut self, snapshot: Snapshot) -> Result<Self, String> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(format!(
                "the journal has snapshot version {}, this dtask reads version {SNAPSHOT_VERSION}",
                snapshot.version
            ));
        }
        self.modules.extend(snapshot.modules);
        self.stats = snapshot.stats;
        self.restore_actors(snapshot.actors);
        let mut keys: Vec<(u64, super::super::Key)> =
            self.tasks.iter().map(|(k, t)| (t.seq, k.clone())).collect();
        // In submission order, as the tasks were first queued.
        keys.sort_unstable_by_key(|(seq, _)| *seq);
        let mut unfinished = Vec::new();
        for (_, key) in keys {
            let task = self.tasks.get_mut_untracked(&key).expect("listed");
            if matches!(task.state, State::Pending { .. }) {
                unfinished.push(key.clone());
            }
            if task.deps.is_empty() {
                continue;
            }
            let mut deps = std::mem::take(&mut task.deps);
            for d in &mut deps {
                if let Some(shared) = self.tasks.key(d) {
                    *d = shared;
                }
                if let Some(dep) = self.tasks.get_mut(d) {
                    dep.dependents.push(key.clone());
                }
            }
            self.tasks.get_mut_untracked(&key).expect("listed").deps = deps;
        }
        for key in &unfinished {
            for d in self.tasks[key].deps.clone() {
                if let Some(dep) = self.tasks.get_mut(&d) {
                    dep.needed_by += 1;
                }
            }
        }
        for key in &unfinished {
            self.requeue(key);
        }
        let mut out = Vec::new();
        // Primitives, through their own operations so stored futures are
        // held again, as a client 0 of the restore's own.
        self.clients.insert(
            0,
            super::super::Client {
                holder: RESTORE.into(),
                reader: None,
                ephemeral: false,
                session: false,
                group: 0,
            },
        );
        for (name, maxsize, items) in snapshot.queues {
            for (i, item) in items.into_iter().enumerate() {
                let op = Op::QueuePut {
                    name: name.clone(),
                    item,
                    maxsize: Some(maxsize),
                    timeout_ms: Some(0),
                };
                self.primitive(0, (i as u64, 0), None, op, &mut out);
            }
        }
        for (name, item) in snapshot.variables {
            self.primitive(0, (0, 0), None, Op::VarSet { name, item }, &mut out);
        }
        for name in snapshot.events {
            self.primitive(0, (0, 0), None, Op::EventSet { name }, &mut out);
        }
        for (lock, name, max, holders) in snapshot.leases {
            for holder in holders {
                self.restored_holder(&holder);
                self.clients.insert(
                    0,
                    super::super::Client {
                        holder: holder.into(),
                        reader: None,
                        ephemeral: false,
                        session: false,
                        group: 0,
                    },
                );
                let op = if lock {
                    Op::LockAcquire {
                        name: name.clone(),
                        timeout_ms: Some(0),
                    }
                } else {
                    Op::SemAcquire {
                        name: name.clone(),
                        max_leases: max,
                        timeout_ms: Some(0),
                    }
                };
                self.primitive(0, (0, 0), None, op, &mut out);
            }
        }
        self.clients.remove(&0);
        for (session, id, reply) in snapshot.answers {
            self.prims.answered.insert((session, id), reply);
        }
        Ok(self)
    }
}

/// What `Task::journaled` says of a task the journal holds, whose status
/// it has not fingerprinted: even, so no fingerprint (odd) equals it.
const RECORDED: u64 = 2;

/// A nonzero, odd fingerprint of what the journal records of a task's
/// status.
fn fingerprint(status: &Status) -> u64 {
    use std::hash::Hasher;
    /// Feeds the encoding to the hasher as it is made: no buffer.
    struct Hashing(rustc_hash::FxHasher);
    impl postcard::ser_flavors::Flavor for Hashing {
        type Output = u64;
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.0.write_u8(data);
            Ok(())
        }
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            self.0.write(data);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<u64> {
            Ok(self.0.finish())
        }
    }
    postcard::serialize_with_flavor(status, Hashing(Default::default()))
        .expect("a status serializes")
        | 1
}

impl Scheduler {
    /// Starts noting changes for the journal ([`Scheduler::journal_records`]),
    /// taking the current state as already recorded (call it right after
    /// [`Scheduler::restore`], or on an empty scheduler).
    pub fn enable_journal(&mut self) {
        // Recorded, though not by a fingerprint: a task touched later
        // records its status once more, which is cheaper than
        // fingerprinting every task of a big restore now.
        for t in self.tasks.values_mut_untracked() {
            t.journaled = RECORDED;
        }
        self.tasks.noted = Some(Default::default());
        self.prims.dirty = Some(PrimDirty::default());
        self.journal_stats = self.stats.clone();
        self.journal_modules = Some(Vec::new());
        self.journal_actors = Some(Vec::new());
    }

    /// The durable part of task `key`'s state. A holder holding it more
    /// than once is listed as many times.
    fn status_of(&self, key: &str, t: &Task) -> Status {
        Status {
            state: match &t.state {
                State::Pending { .. } | State::Processing { .. } => SavedState::Unfinished,
                State::Finished { result } => SavedState::Finished {
                    inline: result.inline.as_deref().map(Bytes::copy_from_slice),
                    nbytes: result.nbytes,
                },
                State::Error(e) => SavedState::Error(e.clone()),
                State::Cancelled => SavedState::Cancelled,
                State::Lost => SavedState::Lost,
                State::Released => SavedState::Released,
            },
            holders: t
                .holders
                .names()
                .filter(|h| self.durable_holder(h))
                .flat_map(|h| {
                    let n = 1 + self.holdings.extra(h, key) as usize;
                    std::iter::repeat_n(h.clone(), n)
                })
                .collect(),
            retries_left: t.retries_left.into(),
            deaths: t.deaths.into(),
        }
    }

    /// Whether holds under `holder` outlive a restart: named clients' and
    /// unnamed clients' sessions' do (a session's for its grace, see
    /// [`Scheduler::restored_holder`]); those of unnamed connections without
    /// a session, of connections reading, and of futures stored in
    /// primitives (which the primitives restore) do not.
    fn durable_holder(&self, holder: &str) -> bool {
        if holder.starts_with(super::super::SESSION_PREFIX) {
            return true;
        }
        !self.ephemeral_holders.contains(holder)
            && !holder.starts_with(super::super::primitives::STORED)
    }

    /// A restored hold or lease is `holder`'s: an unnamed client's session
    /// has the grace to come back for it (once, whatever it held).
    fn restored_holder(&mut self, holder: &str) {
        if holder.starts_with(super::super::SESSION_PREFIX)
            && !self.ephemeral_holders.contains(holder)
        {
            self.ephemeral_holders.insert(holder.to_string());
            self.restored_sessions.push(holder.to_string());
        }
    }

    /// The named clients and unnamed clients' sessions holding leases of
    /// `l` (tasks' leases end with them; unnamed clients' without a
    /// session with their connections, which a restart ends).
    fn durable_lease_holders(&self, l: &Leases) -> Vec<String> {
        l.holders
            .iter()
            .filter_map(|o| match o {
                Owner::Holder(h) if self.durable_holder(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    /// What changed since the last call, as journal records (empty without
    /// [`Scheduler::enable_journal`]). Costs what changed: the keys and
    /// primitives the events since touched, not the whole state.
    pub fn journal_records(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        self.journal_records_into(&mut out);
        self.journal_stats_into(&mut out);
        out
    }

    /// [`Scheduler::journal_records`] but the counters, appended to `out`
    /// (a buffer the caller keeps, so that recording allocates no vector
    /// per event). The caller adds the counters with
    /// [`Scheduler::journal_stats_into`] once per batch of events: one
    /// record per event would be half of a busy journal.
    pub fn journal_records_into(&mut self, out: &mut Vec<Record>) {
        if let Some(modules) = &mut self.journal_modules {
            out.extend(modules.drain(..).map(|hash| Record::Module { hash }));
        }
        if let Some(actors) = &mut self.journal_actors {
            out.append(actors);
        }
        let forgotten = std::mem::take(&mut self.tasks.forgotten);
        out.extend(forgotten.into_iter().map(|seq| Record::Forget { seq }));
        let noted = self.tasks.take_noted();
        out.reserve(noted.len());
        for id in noted {
            let (key, t) = self.tasks.slot(id);
            let status = self.status_of(key, t);
            let fp = fingerprint(&status);
            if t.journaled == 0 {
                out.push(Record::Task {
                    seq: t.seq,
                    spec: Box::new(t.recipe.spec(key)),
                    scattered: t.is_scattered(),
                    status,
                });
            } else if t.journaled != fp {
                out.push(Record::Status { seq: t.seq, status });
            }
            self.tasks.slot_mut_untracked(id).journaled = fp;
        }
        if let Some(d) = self.prims.dirty.as_mut() {
            let d = std::mem::take(d);
            out.extend(d.queue_ops);
            out.extend(
                d.answers
                    .into_iter()
                    .map(|(session, id, reply)| Record::Answer { session, id, reply }),
            );
            for name in d.variables {
                let item = self
                    .prims
                    .variables
                    .get(&name)
                    .and_then(|v| v.item.as_ref())
                    .map(|k| k.item.clone());
                out.push(Record::Variable { name, item });
            }
            for name in d.events {
                let set = self.prims.events.get(&name).is_some_and(|f| f.set);
                out.push(Record::Event { name, set });
            }
            for (lock, name) in d.leases {
                let all = if lock {
                    &self.prims.locks
                } else {
                    &self.prims.semaphores
                };
                let (max, holders) = all
                    .get(&name)
                    .map_or((0, Vec::new()), |l| (l.max, self.durable_lease_holders(l)));
                out.push(Record::Leases {
                    lock,
                    name,
                    max,
                    holders,
                });
            }
        }
    }

    /// The counters, if they changed since last recorded (with a journal).
    pub fn journal_stats_into(&mut self, out: &mut Vec<Record>) {
        if self.tasks.noted.is_some() && self.stats != self.journal_stats {
            self.journal_stats = self.stats.clone();
            out.push(Record::Stats(self.stats.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{Input, Scheduler};
    use crate::protocol::TaskState;
    use crate::scheduler::testing::{M, big, finish, setup, small, spec, submit, val};

    /// A damaged snapshot that lists a key twice: the key is restored
    /// once, held once, and released for good by `release --all`.
    #[test]
    fn a_key_a_snapshot_lists_twice_is_restored_and_held_once() {
        let mut s = setup(&[(10, 1)]);
        submit(&mut s, vec![spec("t", vec![val(1)])]);
        finish(&mut s, 10, "t", small(2));
        let snapshot = s.snapshot();
        let mut tasks = snapshot.tasks.clone();
        assert_eq!(tasks.len(), 1);
        tasks.push(tasks[0].clone());
        let mut r = Scheduler::new()
            .restore(snapshot.with_tasks(tasks))
            .expect("restored");
        assert_eq!(r.task_count(), 1);
        r.handle(Input::ModuleStored { hash: M.into() });
        r.handle(Input::ClientConnected {
            client: 1,
            name: Some("cli".into()),
            session: 0,
        });
        assert_eq!(r.held_keys(), 1);
        r.handle(Input::ReleaseAll { client: 1 });
        assert_eq!(r.held_keys(), 0);
        assert_eq!(r.task_count(), 0);
    }

    /// A held key whose result lived on a worker is pending after a
    /// restart until that worker reports it (or it is computed again),
    /// not unknown; one nobody holds is gone to users.
    #[test]
    fn a_held_key_whose_data_has_not_come_back_yet_is_pending_not_unknown() {
        let mut s = setup(&[(10, 1)]);
        submit(
            &mut s,
            vec![spec("held", vec![val(1)]), spec("dropped", vec![val(2)])],
        );
        finish(&mut s, 10, "held", big(10_000));
        finish(&mut s, 10, "dropped", big(10_000));
        s.handle(Input::Release {
            client: 1,
            keys: vec!["dropped".into()],
        });
        let r = Scheduler::new().restore(s.snapshot()).expect("restored");
        assert_eq!(r.state("held"), Some(TaskState::Pending));
        assert_eq!(r.state("dropped"), None);
    }
}
