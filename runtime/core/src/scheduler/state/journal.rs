//! The scheduler's durable state, and bringing it back.
//!
//! A [`Snapshot`] is what must survive a scheduler restart: the modules'
//! hashes, every task's spec, holders and outcome (small results inline),
//! and the queues, variables, events and the leases named clients hold.
//!
//! Between snapshots, the journal records changes as [`Record`]s: after
//! each event, [`Scheduler::journal_records`] turns what the event touched
//! into records (a task's spec once, then its status whenever it changes;
//! queue operations; the state of touched variables, events and leases),
//! so what the journal costs grows with what changes, never with what is
//! held. [`Model`] folds a snapshot and records back into a snapshot, for
//! recovery and for compaction.
//! What lives only in connections does not survive: unnamed clients' holds,
//! waiters, subscriptions, leases of running tasks (those tasks run again),
//! and actors.
//!
//! On restore, unfinished tasks wait to run again; a result that lived only
//! on a worker stays known as "released" until that worker reconnects and
//! reports it ([`Event::WorkerHolds`](super::Event::WorkerHolds)), or until
//! something needs it, when it is computed again from its lineage.

use super::primitives::{Leases, Owner, PrimDirty};
use super::{Scheduler, State, Stored, Task};
use crate::protocol::{Arg, Op, Stats, TaskError, TaskSpec};
use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use thin_vec::ThinVec;

/// The holder name primitives are restored under (it holds nothing).
const RESTORE: &str = "journal-restore";

/// Version of the snapshot format; another version is not restored.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The scheduler's durable state.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
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

/// One task as a snapshot keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedTask {
    spec: TaskSpec,
    seq: u64,
    state: SavedState,
    holders: Vec<String>,
    retries_left: u32,
    deaths: u32,
    scattered: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
enum SavedState {
    Unfinished,
    Finished {
        inline: Option<Bytes>,
        nbytes: u64,
    },
    /// Boxed, as in the scheduler's own state: rare, and large.
    Error(Box<TaskError>),
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

    /// This snapshot with `tasks` (in any order) instead of its own.
    pub fn with_tasks(mut self, tasks: Vec<SavedTask>) -> Self {
        self.tasks = tasks;
        self
    }

    /// An empty snapshot.
    pub fn empty() -> Self {
        Model::default().into_snapshot()
    }

    /// The same state with every list in one order, to compare snapshots.
    pub fn canonical(mut self) -> Self {
        self.modules.sort();
        self.tasks.sort_by_key(|t| t.seq);
        self.queues.sort_by(|a, b| a.0.cmp(&b.0));
        self.variables.sort_by(|a, b| a.0.cmp(&b.0));
        self.events.sort();
        for l in &mut self.leases {
            l.3.sort();
        }
        self.leases.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        self
    }
}

/// What may change of a task after it is submitted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    state: SavedState,
    /// Durable holders: named clients (and fire-and-forget).
    holders: Vec<String>,
    retries_left: u32,
    deaths: u32,
}

/// One change to the durable state, as the journal records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Record {
    /// A module was stored.
    Module {
        /// Its hash.
        hash: String,
    },
    /// A task, first recorded (or recorded whole again).
    Task {
        /// Its submission order.
        seq: u64,
        /// What it runs (boxed: a batch of a million small records, a
        /// release of everything, should not cost a million specs' room).
        spec: Box<TaskSpec>,
        /// Scattered data rather than a computation.
        scattered: bool,
        /// Its status.
        status: Status,
    },
    /// A recorded task's new status.
    Status {
        /// The task, by its submission order (its `Task` record names its
        /// key): a few bytes instead of a key.
        seq: u64,
        /// Its status.
        status: Status,
    },
    /// A task is forgotten.
    Forget {
        /// The task, by its submission order.
        seq: u64,
    },
    /// An item was added to the end of a queue.
    QueuePush {
        /// The queue.
        name: String,
        /// Its bound (0: none).
        maxsize: u64,
        /// The item.
        item: Arg,
    },
    /// The first item of a queue was taken.
    QueuePop {
        /// The queue.
        name: String,
    },
    /// A variable's value (`None`: deleted).
    Variable {
        /// The variable.
        name: String,
        /// Its item.
        item: Option<Arg>,
    },
    /// Whether an event is set.
    Event {
        /// The event.
        name: String,
        /// Set or clear.
        set: bool,
    },
    /// Who holds a lock's or semaphore's leases (named clients only).
    Leases {
        /// A lock (else a semaphore).
        lock: bool,
        /// Its name.
        name: String,
        /// Leases it has.
        max: u32,
        /// Holder names.
        holders: Vec<String>,
    },
    /// The counters.
    Stats(Stats),
}

/// The durable state as a map, to fold records into: recovery (snapshot,
/// then every record after it) and compaction (the same, written back as a
/// snapshot).
#[derive(Debug, Default)]
pub struct Model {
    modules: Vec<String>,
    module_set: HashSet<String>,
    /// By submission order.
    tasks: HashMap<u64, SavedTask>,
    queues: HashMap<String, (u64, VecDeque<Arg>)>,
    variables: HashMap<String, Arg>,
    events: HashSet<String>,
    leases: HashMap<(bool, String), (u32, Vec<String>)>,
    stats: Stats,
}

impl Model {
    /// The model of a snapshot.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut m = Model {
            stats: s.stats,
            ..Model::default()
        };
        for h in s.modules {
            m.add_module(h);
        }
        for t in s.tasks {
            m.tasks.insert(t.seq, t);
        }
        for (name, maxsize, items) in s.queues {
            m.queues.insert(name, (maxsize, items.into()));
        }
        m.variables.extend(s.variables);
        m.events.extend(s.events);
        for (lock, name, max, holders) in s.leases {
            m.leases.insert((lock, name), (max, holders));
        }
        m
    }

    fn add_module(&mut self, hash: String) {
        if self.module_set.insert(hash.clone()) {
            self.modules.push(hash);
        }
    }

    /// Applies one item of a snapshot file.
    pub fn apply_item(&mut self, item: Item) {
        match item {
            Item::Task(t) => {
                self.tasks.insert(t.seq, t);
            }
            Item::Queue(name, maxsize, items) => {
                self.queues.insert(name, (maxsize, items.into()));
            }
            Item::Stats(s) => self.stats = s,
            Item::End { .. } => {}
            other => {
                for r in other.into_records() {
                    self.apply(r);
                }
            }
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Module { hash } => self.add_module(hash),
            Record::Task {
                seq,
                spec,
                scattered,
                status,
            } => {
                self.tasks
                    .insert(seq, SavedTask::recorded(seq, *spec, scattered, status));
            }
            Record::Status { seq, status } => {
                if let Some(t) = self.tasks.get_mut(&seq) {
                    t.set(status);
                }
            }
            Record::Forget { seq } => {
                self.tasks.remove(&seq);
            }
            Record::QueuePush {
                name,
                maxsize,
                item,
            } => {
                let q = self.queues.entry(name).or_default();
                q.0 = maxsize;
                q.1.push_back(item);
            }
            Record::QueuePop { name } => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.1.pop_front();
                    if q.1.is_empty() {
                        self.queues.remove(&name);
                    }
                }
            }
            Record::Variable { name, item } => match item {
                Some(i) => {
                    self.variables.insert(name, i);
                }
                None => {
                    self.variables.remove(&name);
                }
            },
            Record::Event { name, set } => {
                if set {
                    self.events.insert(name);
                } else {
                    self.events.remove(&name);
                }
            }
            Record::Leases {
                lock,
                name,
                max,
                holders,
            } => {
                if holders.is_empty() {
                    self.leases.remove(&(lock, name));
                } else {
                    self.leases.insert((lock, name), (max, holders));
                }
            }
            Record::Stats(s) => self.stats = s,
        }
    }

    /// How many tasks it holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// This state as records that build it from nothing (for export).
    pub fn into_records(self) -> Vec<Record> {
        self.into_snapshot()
            .into_items()
            .flat_map(Item::into_records)
            .collect()
    }

    /// The snapshot of this state.
    pub fn into_snapshot(self) -> Snapshot {
        let mut tasks: Vec<SavedTask> = self.tasks.into_values().collect();
        tasks.sort_by_key(|t| t.seq);
        Snapshot {
            version: SNAPSHOT_VERSION,
            modules: self.modules,
            tasks,
            queues: self
                .queues
                .into_iter()
                .map(|(n, (m, items))| (n, m, items.into()))
                .collect(),
            variables: self.variables.into_iter().collect(),
            events: self.events.into_iter().collect(),
            leases: self
                .leases
                .into_iter()
                .map(|((lock, name), (max, holders))| (lock, name, max, holders))
                .collect(),
            stats: self.stats,
        }
    }
}

impl SavedTask {
    /// The task a `Record::Task` records.
    fn recorded(seq: u64, spec: TaskSpec, scattered: bool, status: Status) -> Self {
        SavedTask {
            spec,
            seq,
            state: status.state,
            holders: status.holders,
            retries_left: status.retries_left,
            deaths: status.deaths,
            scattered,
        }
    }

    /// The task's key.
    pub fn key(&self) -> &str {
        &self.spec.key
    }

    fn set(&mut self, status: Status) {
        self.state = status.state;
        self.holders = status.holders;
        self.retries_left = status.retries_left;
        self.deaths = status.deaths;
    }

    fn into_record(self) -> Record {
        Record::Task {
            seq: self.seq,
            spec: Box::new(self.spec),
            scattered: self.scattered,
            status: Status {
                state: self.state,
                holders: self.holders,
                retries_left: self.retries_left,
                deaths: self.deaths,
            },
        }
    }
}

/// One entry of a snapshot as written to disk: first everything but the
/// tasks, then the tasks in submission order (so a compaction can merge a
/// snapshot with later changes as a stream, and a restore meets inputs
/// before their dependents), then [`Item::End`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// A module's hash.
    Module(String),
    /// A queue: name, bound, items.
    Queue(String, u64, Vec<Arg>),
    /// A variable and its item.
    Variable(String, Arg),
    /// An event that is set.
    Event(String),
    /// A lock (`true`) or semaphore: name, leases, holder names.
    Lease(bool, String, u32, Vec<String>),
    /// The counters.
    Stats(Stats),
    /// A task.
    Task(SavedTask),
    /// The end, and how many tasks came before it: a snapshot without it
    /// was cut short.
    End {
        /// Tasks written.
        tasks: u64,
    },
}

impl Item {
    /// The records that build this item from nothing (for export).
    pub fn into_records(self) -> Vec<Record> {
        match self {
            Item::Module(hash) => vec![Record::Module { hash }],
            Item::Queue(name, maxsize, items) => items
                .into_iter()
                .map(|item| Record::QueuePush {
                    name: name.clone(),
                    maxsize,
                    item,
                })
                .collect(),
            Item::Variable(name, item) => vec![Record::Variable {
                name,
                item: Some(item),
            }],
            Item::Event(name) => vec![Record::Event { name, set: true }],
            Item::Lease(lock, name, max, holders) => vec![Record::Leases {
                lock,
                name,
                max,
                holders,
            }],
            Item::Stats(s) => vec![Record::Stats(s)],
            Item::Task(t) => vec![t.into_record()],
            Item::End { .. } => Vec::new(),
        }
    }
}

impl Snapshot {
    /// This snapshot as the items a snapshot file holds, tasks in
    /// submission order ([`Item::End`] not included).
    pub fn into_items(self) -> impl Iterator<Item = Item> {
        let mut tasks = self.tasks;
        tasks.sort_unstable_by_key(|t| t.seq);
        let rest = self.modules.into_iter().map(Item::Module);
        let queues = self
            .queues
            .into_iter()
            .map(|(n, m, i)| Item::Queue(n, m, i));
        let variables = self
            .variables
            .into_iter()
            .map(|(n, v)| Item::Variable(n, v));
        let events = self.events.into_iter().map(Item::Event);
        let leases = self
            .leases
            .into_iter()
            .map(|(lock, n, max, h)| Item::Lease(lock, n, max, h));
        rest.chain(queues)
            .chain(variables)
            .chain(events)
            .chain(leases)
            .chain(std::iter::once(Item::Stats(self.stats)))
            .chain(tasks.into_iter().map(Item::Task))
    }
}

/// A change a stretch of log makes to one task.
enum Change {
    /// The whole task, encoded (as small as the log that said it).
    Whole(Box<[u8]>),
    /// A new status for a task recorded before the stretch.
    Status(Status),
    /// Forgotten.
    Forget,
}

fn encode_task(t: &SavedTask) -> Box<[u8]> {
    postcard::to_allocvec(t)
        .expect("tasks serialize")
        .into_boxed_slice()
}

fn decode_task(bytes: &[u8]) -> SavedTask {
    postcard::from_bytes(bytes).expect("a task this process encoded decodes")
}

/// The task changes of the logs a compaction folds, by task: what it costs
/// grows with those logs, never with the tasks the snapshot already holds,
/// which stream past it ([`Window::merge`]).
#[derive(Default)]
pub struct Window {
    /// By submission order.
    changes: HashMap<u64, Change>,
}

impl Window {
    /// How many tasks it changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether it changes no task.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Folds one record: changes to tasks into the window, everything else
    /// into `rest` (which holds no tasks).
    pub fn apply(&mut self, record: Record, rest: &mut Model) {
        match record {
            Record::Task {
                seq,
                spec,
                scattered,
                status,
            } => {
                let task = SavedTask::recorded(seq, *spec, scattered, status);
                self.changes.insert(seq, Change::Whole(encode_task(&task)));
            }
            Record::Status { seq, status } => match self.changes.get_mut(&seq) {
                Some(Change::Whole(bytes)) => {
                    let mut task = decode_task(bytes);
                    task.set(status);
                    *bytes = encode_task(&task);
                }
                Some(Change::Forget) => {}
                Some(c @ Change::Status(_)) => *c = Change::Status(status),
                None => {
                    self.changes.insert(seq, Change::Status(status));
                }
            },
            Record::Forget { seq } => {
                self.changes.insert(seq, Change::Forget);
            }
            other => rest.apply(other),
        }
    }

    /// Merges the window into `old`, a snapshot's tasks in submission
    /// order, handing each task of the result to `out`, in submission
    /// order. An `old` out of order is an error.
    pub fn merge<E: From<String>>(
        self,
        old: impl Iterator<Item = Result<SavedTask, E>>,
        mut out: impl FnMut(SavedTask) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut changes: Vec<(u64, Change)> = self.changes.into_iter().collect();
        changes.sort_unstable_by_key(|c| c.0);
        let mut changes = changes.into_iter().peekable();
        let mut last: Option<u64> = None;
        for task in old {
            let mut task = task?;
            if last.is_some_and(|l| l >= task.seq) {
                return Err(E::from(format!(
                    "its tasks are out of order at {} (submitted {})",
                    task.key(),
                    task.seq
                )));
            }
            // Tasks only the window has, before this one.
            while let Some((seq, _)) = changes.peek()
                && *seq < task.seq
            {
                let (_, change) = changes.next().expect("peeked");
                if let Change::Whole(bytes) = change {
                    out(decode_task(&bytes))?;
                }
            }
            last = Some(task.seq);
            let change = match changes.peek() {
                Some((seq, _)) if *seq == task.seq => changes.next().map(|(_, c)| c),
                _ => None,
            };
            match change {
                None => out(task)?,
                Some(Change::Whole(bytes)) => out(decode_task(&bytes))?,
                Some(Change::Status(status)) => {
                    task.set(status);
                    out(task)?
                }
                Some(Change::Forget) => {}
            }
        }
        for (_, change) in changes {
            if let Change::Whole(bytes) = change {
                out(decode_task(&bytes))?;
            }
        }
        Ok(())
    }
}

impl Scheduler {
    /// The durable part of the state, to write to the journal.
    pub fn snapshot(&self) -> Snapshot {
        let mut tasks: Vec<SavedTask> = self
            .tasks
            .map
            .iter()
            .map(|(key, t)| {
                let status = self.status_of(t);
                SavedTask {
                    spec: t.recipe.spec(key),
                    seq: t.seq,
                    state: status.state,
                    holders: status.holders,
                    retries_left: status.retries_left,
                    deaths: status.deaths,
                    scattered: t.scatter.is_some(),
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
        self.tasks.map.reserve(n);
    }

    /// Restores one task of a snapshot, in any order; then
    /// [`Scheduler::finish_restore`].
    pub fn restore_task(&mut self, saved: SavedTask) {
        let key: super::Key = saved.spec.key.as_str().into();
        let mut deps: Vec<super::Key> = Vec::new();
        for arg in &saved.spec.args {
            if let Arg::Future(d) = arg
                && !deps.iter().any(|k| **k == **d)
            {
                // Shared with the input's entry by finish_restore.
                deps.push(d.as_str().into());
            }
        }
        let mut holders = super::Holders::default();
        for h in &saved.holders {
            let name = self.note_hold(h, key.clone());
            holders.insert(&name);
        }
        let state = match saved.state {
            SavedState::Unfinished => State::Pending { waiting_on: 0 },
            SavedState::Finished {
                inline: Some(inline),
                nbytes,
            } => State::Finished {
                result: Stored {
                    inline: Some(inline),
                    who_has: ThinVec::new(),
                    nbytes,
                },
            },
            // Its data is on a worker, if anywhere: until that worker
            // reports it, it is known by its recipe (scattered data has
            // none, and is lost if no worker reports it in time).
            SavedState::Finished { inline: None, .. } => {
                if saved.scattered {
                    self.unreported_scatters.push(key.to_string());
                }
                State::Released
            }
            SavedState::Error(e) => State::Error(e),
            SavedState::Cancelled => State::Cancelled,
            SavedState::Lost => State::Lost,
            SavedState::Released => State::Released,
        };
        self.seq = self.seq.max(saved.seq);
        let recipe = super::Recipe::new(saved.spec, &mut self.names);
        self.add_task(
            key,
            Task {
                recipe,
                seq: saved.seq,
                state,
                deps: deps.into_boxed_slice(),
                dependents: super::Dependents::default(),
                needed_by: 0,
                holders,
                watchers: ThinVec::new(),
                retries_left: super::saturate(saved.retries_left),
                deaths: super::saturate(saved.deaths),
                stamps: super::activity::Stamps::at(0),
                journaled: 0,
                // No request waits for restored scattered data.
                scatter: saved.scattered.then(|| Box::new((0, 0))),
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
        let mut keys: Vec<(u64, super::Key)> = self
            .tasks
            .map
            .iter()
            .map(|(k, t)| (t.seq, k.clone()))
            .collect();
        // In submission order, as the tasks were first queued.
        keys.sort_unstable_by_key(|(seq, _)| *seq);
        let mut unfinished = Vec::new();
        for (_, key) in keys {
            let task = self.tasks.map.get_mut(&key).expect("listed");
            if matches!(task.state, State::Pending { .. }) {
                unfinished.push(key.clone());
            }
            if task.deps.is_empty() {
                continue;
            }
            let mut deps = std::mem::take(&mut task.deps).into_vec();
            for d in &mut deps {
                if let Some(shared) = self.tasks.key(d) {
                    *d = shared;
                }
                if let Some(dep) = self.tasks.get_mut(d) {
                    dep.dependents.push(key.clone());
                }
            }
            self.tasks.map.get_mut(&key).expect("listed").deps = deps.into_boxed_slice();
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
                holder: RESTORE.into(),
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
                        holder: holder.into(),
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

/// What `Task::journaled` says of a task the journal holds, whose status
/// it has not fingerprinted: even, so no fingerprint (odd) equals it.
const RECORDED: u64 = 2;

/// A nonzero, odd fingerprint of what the journal records of a task's
/// status.
fn fingerprint(status: &Status) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(&postcard::to_allocvec(status).expect("a status serializes"));
    h.finish() | 1
}

impl Scheduler {
    /// Starts noting changes for the journal ([`Scheduler::journal_records`]),
    /// taking the current state as already recorded (call it right after
    /// [`Scheduler::restore`], or on an empty scheduler).
    pub fn enable_journal(&mut self) {
        // Recorded, though not by a fingerprint: a task touched later
        // records its status once more, which is cheaper than
        // fingerprinting every task of a big restore now.
        for t in self.tasks.map.values_mut() {
            t.journaled = RECORDED;
        }
        self.tasks.dirty = Some(HashSet::default());
        self.prims.dirty = Some(PrimDirty::default());
        self.journal_stats = self.stats.clone();
        self.journal_modules = Some(Vec::new());
    }

    /// The durable part of a task's state.
    fn status_of(&self, t: &Task) -> Status {
        Status {
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
            holders: t
                .holders
                .iter()
                .filter(|h| self.durable_holder(h))
                .map(str::to_string)
                .collect(),
            retries_left: t.retries_left.into(),
            deaths: t.deaths.into(),
        }
    }

    /// Whether holds under `holder` outlive a restart: named clients' do;
    /// unnamed clients' and those of futures stored in primitives (which
    /// the primitives restore) do not.
    fn durable_holder(&self, holder: &str) -> bool {
        !self.ephemeral_holders.contains(holder) && !holder.starts_with(super::primitives::STORED)
    }

    /// The named clients holding leases of `l` (tasks' leases end with
    /// them; unnamed clients' with their connections).
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
        if let Some(modules) = &mut self.journal_modules {
            out.extend(modules.drain(..).map(|hash| Record::Module { hash }));
        }
        let dirty = match &mut self.tasks.dirty {
            Some(d) if !d.is_empty() => std::mem::take(d),
            _ => HashSet::default(),
        };
        let forgotten = std::mem::take(&mut self.tasks.forgotten);
        out.extend(forgotten.into_iter().map(|seq| Record::Forget { seq }));
        for key in dirty {
            // Gone: its Forget (if it was ever recorded) is out already.
            let Some(t) = self.tasks.map.get(&key) else {
                continue;
            };
            let status = self.status_of(t);
            let fp = fingerprint(&status);
            let t = self.tasks.map.get_mut(&key).expect("present");
            if t.journaled == 0 {
                out.push(Record::Task {
                    seq: t.seq,
                    spec: Box::new(t.recipe.spec(&key)),
                    scattered: t.scatter.is_some(),
                    status,
                });
            } else if t.journaled != fp {
                out.push(Record::Status { seq: t.seq, status });
            }
            t.journaled = fp;
        }
        if let Some(d) = self.prims.dirty.as_mut() {
            let d = std::mem::take(d);
            out.extend(d.queue_ops);
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
        if !out.is_empty() && self.stats != self.journal_stats {
            self.journal_stats = self.stats.clone();
            out.push(Record::Stats(self.stats.clone()));
        }
        out
    }
}
