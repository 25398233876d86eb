//! The scheduler's durable state, and bringing it back.
//!
//! A [`Snapshot`] is what must survive a scheduler restart: the modules'
//! hashes, every task's spec, holders and outcome (small results inline),
//! and the queues, variables, events and the leases named clients hold.
//! What lives only in connections does not survive: unnamed clients' holds,
//! waiters, subscriptions, leases of running tasks (those tasks run again),
//! and actors.
//!
//! On restore, unfinished tasks wait to run again; a result that lived only
//! on a worker stays known as "released" until that worker reconnects and
//! reports it ([`Event::WorkerHolds`](super::Event::WorkerHolds)), or until
//! something needs it, when it is computed again from its lineage.

use super::primitives::{Leases, Owner};
use super::{Scheduler, State, Stored, Task};
use crate::protocol::{Arg, Op, TaskError, TaskSpec};
use bytes::Bytes;
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};

/// The holder name primitives are restored under (it holds nothing).
const RESTORE: &str = "journal-restore";

/// Version of the snapshot format; another version is not restored.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The scheduler's durable state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    version: u32,
    modules: Vec<String>,
    tasks: Vec<SavedTask>,
    queues: Vec<(String, u64, Vec<Arg>)>,
    variables: Vec<(String, Arg)>,
    events: Vec<String>,
    /// (is a lock, name, max leases, holder names).
    leases: Vec<(bool, String, u32, Vec<String>)>,
    stats: crate::protocol::Stats,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedTask {
    spec: TaskSpec,
    seq: u64,
    state: SavedState,
    holders: Vec<String>,
    retries_left: u32,
    deaths: u32,
    scattered: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum SavedState {
    Unfinished,
    Finished { inline: Option<Bytes>, nbytes: u64 },
    Error(TaskError),
    Cancelled,
    Lost,
    Released,
}

impl Snapshot {
    /// The modules the scheduler had, by hash.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// How many tasks it holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Scheduler {
    /// The durable part of the state, to write to the journal.
    pub fn snapshot(&self) -> Snapshot {
        let ephemeral: HashSet<&str> = self
            .clients
            .values()
            .filter(|c| c.ephemeral)
            .map(|c| c.holder.as_str())
            .collect();
        let durable = |h: &String| {
            !ephemeral.contains(h.as_str()) && !h.starts_with(super::primitives::STORED)
        };
        let mut tasks: Vec<SavedTask> = self
            .tasks
            .values()
            .map(|t| SavedTask {
                spec: t.spec.clone(),
                seq: t.seq,
                state: match &t.state {
                    State::Pending { .. } | State::Processing { .. } => SavedState::Unfinished,
                    State::Finished { result } => SavedState::Finished {
                        inline: result.inline.clone(),
                        nbytes: result.nbytes,
                    },
                    State::Error(e) => SavedState::Error(e.clone()),
                    State::Cancelled => SavedState::Cancelled,
                    State::Lost => SavedState::Lost,
                    State::Released => SavedState::Released,
                },
                holders: t.holders.iter().filter(|h| durable(h)).cloned().collect(),
                retries_left: t.retries_left,
                deaths: t.deaths,
                scattered: t.scatter.is_some(),
            })
            .collect();
        tasks.sort_by_key(|t| t.seq);
        let p = &self.prims;
        let leases = |lock: bool, all: &rustc_hash::FxHashMap<String, Leases>| {
            all.iter()
                .map(|(name, l)| {
                    let holders = l
                        .holders
                        .iter()
                        .filter_map(|o| match o {
                            Owner::Holder(h) if !ephemeral.contains(h.as_str()) => Some(h.clone()),
                            _ => None,
                        })
                        .collect();
                    (lock, name.clone(), l.max, holders)
                })
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
        }
    }

    /// A scheduler in the state `snapshot` saved: finished keys stay
    /// finished, unfinished tasks wait to run again.
    pub fn restore(mut self, snapshot: Snapshot) -> Result<Self, String> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(format!(
                "the journal has snapshot version {}, this dtask reads version {SNAPSHOT_VERSION}",
                snapshot.version
            ));
        }
        self.modules.extend(snapshot.modules);
        self.stats = snapshot.stats;
        let mut unfinished = Vec::new();
        for saved in snapshot.tasks {
            let key = saved.spec.key.clone();
            let mut deps: Vec<String> = Vec::new();
            for arg in &saved.spec.args {
                if let Arg::Future(d) = arg
                    && !deps.contains(d)
                {
                    deps.push(d.clone());
                }
            }
            for d in &deps {
                if let Some(dep) = self.tasks.get_mut(d) {
                    dep.dependents.push(key.clone());
                }
            }
            for h in &saved.holders {
                self.holdings
                    .entry(h.clone())
                    .or_default()
                    .insert(key.clone());
            }
            let state = match saved.state {
                SavedState::Unfinished => {
                    unfinished.push(key.clone());
                    State::Pending { waiting_on: 0 }
                }
                SavedState::Finished {
                    inline: Some(inline),
                    nbytes,
                } => State::Finished {
                    result: Stored {
                        inline: Some(inline),
                        who_has: Vec::new(),
                        nbytes,
                    },
                },
                // Its data is on a worker, if anywhere: until that worker
                // reports it, it is known by its recipe.
                SavedState::Finished { inline: None, .. } => State::Released,
                SavedState::Error(e) => State::Error(e),
                SavedState::Cancelled => State::Cancelled,
                SavedState::Lost => State::Lost,
                SavedState::Released => State::Released,
            };
            self.seq = self.seq.max(saved.seq);
            self.tasks.insert(
                key,
                Task {
                    spec: saved.spec,
                    seq: saved.seq,
                    state,
                    deps,
                    dependents: Vec::new(),
                    needed_by: 0,
                    holders: saved.holders.into_iter().collect(),
                    watchers: Vec::new(),
                    retries_left: saved.retries_left,
                    deaths: saved.deaths,
                    // No request waits for restored scattered data.
                    scatter: saved.scattered.then_some((0, 0)),
                },
            );
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
            super::Client {
                holder: RESTORE.to_string(),
                ephemeral: false,
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
                self.primitive(0, i as u64, None, op, &mut out);
            }
        }
        for (name, item) in snapshot.variables {
            self.primitive(0, 0, None, Op::VarSet { name, item }, &mut out);
        }
        for name in snapshot.events {
            self.primitive(0, 0, None, Op::EventSet { name }, &mut out);
        }
        for (lock, name, max, holders) in snapshot.leases {
            for holder in holders {
                self.clients.insert(
                    0,
                    super::Client {
                        holder,
                        ephemeral: false,
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
                self.primitive(0, 0, None, op, &mut out);
            }
        }
        self.clients.remove(&0);
        Ok(self)
    }
}
