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
//! reports it ([`Input::WorkerHolds`](super::Input::WorkerHolds)), or until
//! something needs it, when it is computed again from its lineage.

use super::primitives::{Leases, Owner, PrimDirty};
use super::{Scheduler, State, Stored, Task};
use crate::protocol::{Arg, Op, OpReply, Stats, TaskError, TaskSpec};
use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use thin_vec::ThinVec;

mod model;
mod scheduler;

pub use model::{Model, Window};

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
    /// Answers kept for clients' sessions, oldest first: (session, request
    /// id, answer).
    answers: Vec<(u64, u64, OpReply)>,
    /// Actors: (key, resource, module, which making).
    actors: Vec<(String, String, String, u64)>,
}

/// One task as a snapshot keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedTask {
    spec: TaskSpec,
    seq: u64,
    state: SavedState,
    holders: HolderNames,
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

    /// The answers kept for clients' sessions, oldest first: (session,
    /// request id, answer).
    pub fn answers(&self) -> &[(u64, u64, OpReply)] {
        &self.answers
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
        self.actors.sort();
        self
    }
}

/// The names holding a task (shared with the scheduler's own copies: no
/// string is copied to record them). Encoded as a list of strings.
pub type HolderNames = smallvec::SmallVec<[std::sync::Arc<str>; 1]>;

/// What may change of a task after it is submitted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    state: SavedState,
    /// Durable holders: named clients (and fire-and-forget).
    holders: HolderNames,
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
    /// An answer to a client's primitive operation, kept for its session:
    /// asked again, it is answered the same, not done again.
    Answer {
        /// The client's session.
        session: u64,
        /// Its request id.
        id: u64,
        /// The answer.
        reply: OpReply,
    },
    /// An actor was made, as journals before makings were numbered wrote
    /// it (read as making 0: any copy a worker reports is taken).
    Actor {
        /// Its key.
        key: String,
        /// Its resource's name.
        resource: String,
        /// Its module.
        module: String,
    },
    /// An actor was deleted, or its constructor failed.
    ActorGone {
        /// Its key.
        key: String,
    },
    /// An actor was made (restored as lost, until a worker that rejoins
    /// says it holds this making of it).
    ActorMade {
        /// Its key.
        key: String,
        /// Its resource's name.
        resource: String,
        /// Its module.
        module: String,
        /// Which making (the number its worker reports it by).
        made: u64,
    },
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
    /// An answer kept for a client's session: (session, request id,
    /// answer). (Written before the tasks, as everything but them is.)
    Answer(u64, u64, OpReply),
    /// An actor, as snapshots before makings were numbered wrote it: key,
    /// resource, module (making 0).
    Actor(String, String, String),
    /// An actor: key, resource, module, which making.
    ActorMade(String, String, String, u64),
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
            Item::Answer(session, id, reply) => vec![Record::Answer { session, id, reply }],
            Item::Actor(key, resource, module) => vec![Record::ActorMade {
                key,
                resource,
                module,
                made: 0,
            }],
            Item::ActorMade(key, resource, module, made) => vec![Record::ActorMade {
                key,
                resource,
                module,
                made,
            }],
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
            .flat_map(|(n, m, i)| queue_items(n, m, i));
        let variables = self
            .variables
            .into_iter()
            .map(|(n, v)| Item::Variable(n, v));
        let events = self.events.into_iter().map(Item::Event);
        let leases = self
            .leases
            .into_iter()
            .map(|(lock, n, max, h)| Item::Lease(lock, n, max, h));
        let answers = self
            .answers
            .into_iter()
            .map(|(s, id, r)| Item::Answer(s, id, r));
        let actors = self
            .actors
            .into_iter()
            .map(|(k, r, m, made)| Item::ActorMade(k, r, m, made));
        rest.chain(queues)
            .chain(variables)
            .chain(events)
            .chain(leases)
            .chain(answers)
            .chain(actors)
            .chain(std::iter::once(Item::Stats(self.stats)))
            .chain(tasks.into_iter().map(Item::Task))
    }
}

/// Most bytes of entries one [`Item::Queue`] carries: a bigger queue is
/// written as several, which recovery joins in order, so no frame of a
/// snapshot grows past what its reader accepts.
const QUEUE_ITEM_BYTES: usize = 1 << 20;

/// The items of one queue: its entries in order, about
/// [`QUEUE_ITEM_BYTES`] at most in each (and one item if it is empty).
fn queue_items(name: String, maxsize: u64, entries: Vec<Arg>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let last = entries.len();
    for (i, e) in entries.into_iter().enumerate() {
        bytes += e.size();
        chunk.push(e);
        if bytes >= QUEUE_ITEM_BYTES && i + 1 < last {
            items.push(Item::Queue(
                name.clone(),
                maxsize,
                std::mem::take(&mut chunk),
            ));
            bytes = 0;
        }
    }
    items.push(Item::Queue(name, maxsize, chunk));
    items
}

/// A change a stretch of log makes to one task.
///
/// Boxed, so a window of a few hundred thousand tasks is a table of small
/// entries: growing one of big entries cost a restore more in fresh pages
/// than anything else it did.
enum Change {
    /// The whole task, encoded (as small as the log that said it), and the
    /// last status recorded for it since, if any: kept beside it rather
    /// than decoding and encoding the task again for each.
    Whole(Box<[u8]>, Option<Box<Status>>),
    /// A new status for a task recorded before the stretch.
    Status(Box<Status>),
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

/// A task a [`Change::Whole`] holds, its later status applied.
fn whole_task(bytes: &[u8], status: Option<Box<Status>>) -> SavedTask {
    let mut task = decode_task(bytes);
    if let Some(status) = status {
        task.set(*status);
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_queue_is_written_as_several_items_and_read_back_whole() {
        let mut model = Model::default();
        for i in 0..5u8 {
            model.apply(Record::QueuePush {
                name: "jobs".into(),
                maxsize: 9,
                item: Arg::Value(Bytes::from(vec![i; 600 << 10])),
            });
        }
        model.apply(Record::QueuePush {
            name: "small".into(),
            maxsize: 0,
            item: Arg::Future("inc-1".into()),
        });
        let before = model.into_records();
        let mut again = Model::default();
        let mut parts = 0;
        let mut source = Model::default();
        for r in before.clone() {
            source.apply(r);
        }
        for item in source.into_snapshot().into_items() {
            if let Item::Queue(name, _, entries) = &item
                && name == "jobs"
            {
                parts += 1;
                let bytes: usize = entries.iter().map(Arg::size).sum();
                assert!(bytes < 2 * QUEUE_ITEM_BYTES, "{bytes} bytes in one item");
            }
            again.apply_item(item);
        }
        assert!(parts >= 2, "the big queue was one item");
        assert_eq!(again.into_records(), before);
    }
}
