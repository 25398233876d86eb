//! The scheduler's decisions as a plain state machine: events in, commands
//! out, no sockets, clocks or wasm.
//!
//! [`Scheduler::handle`] takes one [`Event`] (a submit, a finished task, a
//! worker joining or leaving…) and returns the [`Command`]s that follow from
//! it (run these tasks there, tell this client that key is done, free that
//! data). The tokio server in [`super::server`] only moves frames to and from
//! it, so every rule here is tested directly and deterministically.
//!
//! Rules, briefly:
//! - A key lives while a client holds it or an unfinished task needs it.
//! - A task with future arguments waits for them; when it is ready it goes to
//!   the worker that already holds the most bytes of its inputs, otherwise to
//!   the least busy one; higher priority first, then submission order.
//! - An error spreads to every dependent, which errs with the same error;
//!   a cancel spreads the same way, and interrupts what is running.
//! - A task with retries left runs again after an error instead of erring.
//! - Scattered data is a task whose "run" is storing a value on a worker.

mod activity;
mod actors;
mod compact;
mod journal;
mod primitives;
mod stealing;

pub use activity::{
    DETAIL_KEYS, Failure, FunctionTally, Phase, PhaseCounts, PrimitivesSummary, Span, TaskDetail,
    Totals,
};
pub use actors::lost_message;
pub use journal::{Item, Model, Record, SavedTask, Snapshot, Status, Window};

use crate::protocol::{
    ActorSpec, Arg, ErrorKind, FromScheduler, Located, Op, OpReply, Outcome, RunArg, RunTask,
    TaskError, TaskLimits, TaskSpec, TaskState, WorkerInfo,
};
use bytes::Bytes;
use compact::{Dependents, Holders, Interner, Recipe};
use primitives::{Owner, Primitives};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use thin_vec::ThinVec;

/// A task's key as the scheduler keeps it: one allocation, shared by the
/// task table and every index that names the task.
type Key = Arc<str>;

/// Identifies a client connection.
pub type ClientId = u64;
/// Identifies a worker connection.
pub type WorkerId = u64;

/// Keys, each with a reason (refused, or no worker could run it).
type KeyReasons = Vec<(String, String)>;

/// Tasks queued on a worker beyond its slots keep it busy between the
/// scheduler's refills: this many per execution slot.
pub(super) const QUEUED_PER_SLOT: usize = 32;

/// A task that was running on this many workers when they died is failed
/// instead of being tried on yet another (it is probably what kills them).
const MAX_WORKER_DEATHS: u32 = 3;

/// The pseudo-holder that keeps fire-and-forget keys alive until they end.
const FIRE_AND_FORGET: &str = "fire-and-forget";

/// Something that happened, for the scheduler to react to.
#[derive(Debug)]
pub enum Event {
    /// A client connected; `name` makes its holds outlive the connection.
    ClientConnected {
        /// Its id.
        client: ClientId,
        /// Its holder name, if it has one.
        name: Option<String>,
    },
    /// A client's connection closed.
    ClientDisconnected {
        /// Its id.
        client: ClientId,
    },
    /// A module's bytes are now stored.
    ModuleStored {
        /// Its hash.
        hash: String,
    },
    /// An uploaded module was refused; tasks naming it are refused with
    /// `reason`.
    ModuleRefused {
        /// Its hash.
        hash: String,
        /// Why, for the user.
        reason: String,
    },
    /// A client submitted tasks.
    Submit {
        /// Who.
        client: ClientId,
        /// Request id to answer.
        id: u64,
        /// The tasks, dependencies first.
        tasks: Vec<TaskSpec>,
    },
    /// A client wants to know when keys end.
    Watch {
        /// Who.
        client: ClientId,
        /// Which keys.
        keys: Vec<String>,
    },
    /// A client no longer holds keys.
    Release {
        /// Who.
        client: ClientId,
        /// Which keys.
        keys: Vec<String>,
    },
    /// A client no longer holds any key under its name.
    ReleaseAll {
        /// Who.
        client: ClientId,
    },
    /// A worker joined.
    WorkerConnected {
        /// Its id.
        worker: WorkerId,
        /// Its execution slots.
        nthreads: u32,
        /// Where it serves data.
        data_addr: String,
        /// Host and pid.
        name: String,
        /// Abstract resources it offers.
        resources: Vec<(String, f64)>,
        /// The largest memory one task may use there, in bytes.
        memory_limit: u64,
        /// Times its supervisor replaced a worker that died.
        restarts: u32,
    },
    /// Keep keys until they end, though nobody holds them.
    FireAndForget {
        /// Keys.
        keys: Vec<String>,
    },
    /// A client cancels keys.
    Cancel {
        /// Who.
        client: ClientId,
        /// Which keys.
        keys: Vec<String>,
        /// Even if others hold them.
        force: bool,
    },
    /// A client asks to run erred keys again.
    Retry {
        /// Who.
        client: ClientId,
        /// Request id to answer.
        id: u64,
        /// Which keys.
        keys: Vec<String>,
        /// New limits for their runs.
        limits: TaskLimits,
    },
    /// A client stores values on workers.
    Scatter {
        /// Who.
        client: ClientId,
        /// Request id to answer once stored.
        id: u64,
        /// (key, encoded value) pairs.
        values: Vec<(String, Bytes)>,
        /// A copy on every (allowed) worker.
        broadcast: bool,
        /// Allowed workers; empty: all.
        workers: Vec<String>,
    },
    /// A worker left or died.
    WorkerDisconnected {
        /// Its id.
        worker: WorkerId,
    },
    /// Tasks finished on a worker.
    Finished {
        /// Which worker.
        worker: WorkerId,
        /// (key, location) of each.
        results: Vec<(String, Located)>,
    },
    /// Tasks failed on a worker.
    Erred {
        /// Which worker.
        worker: WorkerId,
        /// (key, error) of each.
        errors: Vec<(String, TaskError)>,
    },
    /// A task gave its execution slot back while it waits.
    Seceded {
        /// Its worker.
        worker: WorkerId,
        /// The task.
        key: String,
    },
    /// A worker gave back tasks it had not begun, answering a
    /// [`Command::Steal`].
    Stolen {
        /// Its worker.
        worker: WorkerId,
        /// The tasks given back.
        keys: Vec<String>,
    },
    /// Tasks took an execution slot on their worker and began running.
    Started {
        /// Its worker.
        worker: WorkerId,
        /// The tasks.
        keys: Vec<String>,
    },
    /// A seceded task took a slot again.
    Rejoined {
        /// Its worker.
        worker: WorkerId,
        /// The task.
        key: String,
    },
    /// An operation on a coordination primitive.
    Primitive {
        /// Who asks.
        client: ClientId,
        /// Request id to answer.
        id: u64,
        /// The running task it is on behalf of, if any.
        task: Option<String>,
        /// The operation.
        op: Op,
    },
    /// A message for a topic's subscribers.
    Publish {
        /// The topic.
        topic: String,
        /// The encoded message.
        message: Bytes,
    },
    /// A worker's heartbeat: what it has in hand and has spilled.
    WorkerHeartbeat {
        /// Which worker.
        worker: WorkerId,
        /// Bytes of results it has spilled.
        spilled: u64,
        /// Bytes of results it holds, spilled ones included.
        held: u64,
        /// Its resident memory, in bytes.
        rss: u64,
        /// (inputs fetched from other workers, their bytes), ever.
        fetched: (u64, u64),
        /// The `seq` of the last `Run` it got.
        run_seq: u64,
        /// The tasks it has in hand (running or queued).
        running: Vec<String>,
    },
    /// The window for workers to rejoin after a restore has closed: data
    /// they had to report and did not is lost.
    RejoinWindowClosed,
    /// The timeout of a waiting primitive request passed.
    PrimitiveTimeout {
        /// Who asked.
        client: ClientId,
        /// Its request id.
        id: u64,
    },
    /// A client asks for an actor.
    ActorNew {
        /// Who.
        client: ClientId,
        /// Request id to answer.
        id: u64,
        /// What to construct.
        spec: ActorSpec,
    },
    /// A worker constructed an actor, or failed to.
    ActorStarted {
        /// The worker.
        worker: WorkerId,
        /// The actor.
        key: String,
        /// How its constructor went.
        outcome: Result<(), TaskError>,
    },
    /// A call trapped in an actor: it takes no more calls.
    ActorBroken {
        /// The worker holding it.
        worker: WorkerId,
        /// The actor.
        key: String,
    },
    /// A client deletes an actor.
    ActorDelete {
        /// The actor.
        key: String,
    },
    /// A worker that (re)joined reports the results it holds.
    WorkerHolds {
        /// The worker.
        worker: WorkerId,
        /// (key, where and how big).
        results: Vec<(String, Located)>,
    },
}

/// Something the server must do.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Send tasks to a worker.
    Run {
        /// The worker.
        worker: WorkerId,
        /// The worker's count of `Run` commands so far.
        seq: u64,
        /// The tasks.
        tasks: Vec<RunTask>,
    },
    /// Tell a worker that every `Run` up to `seq` has been sent.
    Sync {
        /// The worker.
        worker: WorkerId,
        /// Its count of `Run` commands so far.
        seq: u64,
    },
    /// Tell a worker to drop results.
    Free {
        /// The worker.
        worker: WorkerId,
        /// The keys.
        keys: Vec<String>,
    },
    /// Tell a client a watched key ended.
    Done {
        /// The client.
        client: ClientId,
        /// The key.
        key: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// Answer a submit.
    Submitted {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
        /// Refused tasks with reasons.
        refused: Vec<(String, String)>,
        /// Restricted tasks no connected worker could run, with why (one
        /// per distinct reason).
        unplaceable: Vec<(String, String)>,
    },
    /// Ask a busy worker to give back tasks it has not begun, for an idle
    /// one; answered by [`Event::Stolen`].
    Steal {
        /// The busy worker.
        worker: WorkerId,
        /// The keys.
        keys: Vec<String>,
    },
    /// Give a worker values to hold (scatter).
    Store {
        /// The worker.
        worker: WorkerId,
        /// (key, encoded value).
        values: Vec<(String, Bytes)>,
    },
    /// Interrupt tasks running on a worker.
    CancelRun {
        /// The worker.
        worker: WorkerId,
        /// The keys.
        keys: Vec<String>,
    },
    /// Answer a retry.
    Retried {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
        /// Keys that could not be retried, with reasons.
        refused: Vec<(String, String)>,
    },
    /// Answer a scatter: all stored.
    Scattered {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
    },
    /// A request failed as a whole.
    Failed {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
        /// Why.
        message: String,
    },
    /// Answer a primitive operation.
    Reply {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
        /// The answer.
        reply: OpReply,
    },
    /// Call back with [`Event::PrimitiveTimeout`] after `after_ms`.
    Timer {
        /// The client.
        client: ClientId,
        /// Its request id.
        id: u64,
        /// Milliseconds from now.
        after_ms: u64,
    },
    /// Send a message to a client or worker connection.
    Send {
        /// The connection.
        to: u64,
        /// The message.
        msg: FromScheduler,
    },
    /// Deliver a published message to a subscription.
    Message {
        /// The subscriber.
        client: ClientId,
        /// Its subscription id.
        subscription: u64,
        /// The encoded message.
        message: Bytes,
    },
}

#[derive(Debug)]
enum State {
    /// Waiting for `waiting_on` dependencies, or (at zero) for a slot.
    Pending {
        waiting_on: usize,
    },
    Processing {
        worker: WorkerId,
        /// The worker said it took a slot and began running it (not merely
        /// queued it): only then is it a suspect if the worker dies.
        started: bool,
        /// The `seq` of the `Run` that sent it (0: not sent by a `Run`,
        /// as scattered data is stored instead).
        run: u64,
    },
    Finished {
        result: Stored,
    },
    /// Boxed: errors are rare, and the state of every task is as large as
    /// its largest variant.
    Error(Box<TaskError>),
    Cancelled,
    Lost,
    /// Its result was dropped (nobody needed it) or lost with its worker,
    /// but dependents still exist, so it is kept to compute it again if
    /// they ever need it (lineage).
    Released,
}

#[derive(Debug)]
struct Stored {
    inline: Option<Bytes>,
    /// Thin: a pointer when empty, as it is for results kept inline.
    who_has: ThinVec<WorkerId>,
    nbytes: u64,
}

#[derive(Debug)]
struct Task {
    recipe: Recipe,
    seq: u64,
    state: State,
    /// Distinct keys among the future arguments.
    deps: Box<[Key]>,
    /// Tasks that take this one's result (thin: most tasks have none).
    dependents: Dependents,
    /// Unfinished dependents that still need this result.
    needed_by: u32,
    /// Names of the clients holding this key.
    holders: Holders,
    /// Clients to tell when it ends (thin: empty once it has).
    watchers: ThinVec<ClientId>,
    /// Runs left after an error.
    retries_left: u16,
    /// Workers that died while running it.
    deaths: u16,
    /// When it was submitted, began and ended.
    stamps: activity::Stamps,
    /// Fingerprint of what the journal last recorded of it (0: nothing
    /// yet, so the next record carries its spec).
    journaled: u64,
    /// Scattered data: (client, request) to answer once stored (boxed:
    /// rare).
    scatter: Option<Box<(ClientId, u64)>>,
}

impl Task {
    fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            State::Finished { .. }
                | State::Error(_)
                | State::Cancelled
                | State::Lost
                | State::Released
        )
    }
}

#[derive(Debug)]
struct Worker {
    nthreads: u32,
    data_addr: String,
    name: String,
    resources: Vec<(String, f64)>,
    /// The largest memory one task may use there, in bytes.
    memory_limit: u64,
    /// Times its supervisor replaced a worker that died.
    restarts: u32,
    /// Resources held by the tasks in `processing`.
    used: HashMap<String, f64>,
    processing: HashSet<Key>,
    /// Those of `processing` sent by a `Run` and not yet begun: they wait
    /// there for a slot, and may be stolen.
    queued: HashSet<Key>,
    /// The idle worker that tasks asked back from this one go to, while
    /// that request is unanswered.
    steal_to: Option<WorkerId>,
    /// Whether tasks are being asked back from another worker for this one.
    awaiting: bool,
    /// When a task last began here (or it joined), by the scheduler's
    /// clock: a queue behind slots that have not turned over for a while
    /// is stalled.
    began_ms: u64,
    /// Those of `processing` that gave their slot back while they wait;
    /// they do not count against the worker's capacity.
    seceded: HashSet<Key>,
    has: HashSet<Key>,
    /// Bytes of results it has spilled to disk, as of its last heartbeat.
    spilled: u64,
    /// Bytes of results it holds, as of its last heartbeat.
    held: u64,
    /// Its resident memory, as of its last heartbeat.
    rss: u64,
    /// (inputs fetched from other workers, their bytes), as of its last
    /// heartbeat.
    fetched: (u64, u64),
    /// When it joined or last sent a heartbeat, by the scheduler's clock.
    heartbeat_ms: u64,
    /// `Run` commands sent to it so far.
    runs_sent: u64,
}

impl Worker {
    fn capacity(&self) -> usize {
        self.nthreads as usize * (QUEUED_PER_SLOT + 1)
    }

    /// Tasks that occupy the worker: assigned and not waiting seceded.
    fn load(&self) -> usize {
        self.processing.len() - self.seceded.len()
    }

    fn has_room(&self) -> bool {
        self.load() < self.capacity()
    }

    /// Tasks sent here beyond its slots, which wait for one.
    fn backlog(&self) -> usize {
        self.load()
            .saturating_sub(self.nthreads as usize)
            .min(self.queued.len())
    }

    /// Whether `name` (a worker name, data address or id) means this one.
    fn is(&self, id: WorkerId, name: &str) -> bool {
        name == self.name || name == self.data_addr || name == id.to_string()
    }

    /// Whether it could ever run a task needing `need` and `memory` (when
    /// idle): it offers that much in all.
    fn could_run(&self, need: &[(String, f64)], memory: Option<u64>) -> bool {
        memory.is_none_or(|m| m <= self.memory_limit)
            && need.iter().all(|(r, amount)| {
                self.resources
                    .iter()
                    .any(|(n, total)| n == r && *total >= *amount - 1e-9)
            })
    }

    fn offers(&self, need: &[(String, f64)]) -> bool {
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

    fn take(&mut self, key: &Key, need: &[(String, f64)]) {
        self.processing.insert(key.clone());
        for (r, a) in need {
            *self.used.entry(r.clone()).or_default() += a;
        }
    }

    fn give_back(&mut self, key: &str, need: &[(String, f64)]) {
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

#[derive(Debug)]
struct Client {
    holder: Arc<str>,
    /// An unnamed client's holds end with its connection.
    ephemeral: bool,
}

/// The task table. With a journal, it notes every key it hands out for
/// change, so the journal records what changed (and only that) after each
/// event: see [`Scheduler::journal_records`].
#[derive(Debug, Default)]
struct Tasks {
    /// Boxed: the table's spare capacity then costs a pointer per slot,
    /// not a whole task.
    map: HashMap<Key, Box<Task>>,
    /// Keys touched since the journal last drained them; `None` without a
    /// journal.
    dirty: Option<HashSet<Key>>,
    /// Submission numbers of recorded tasks removed since the journal last
    /// drained them (with a journal only).
    forgotten: Vec<u64>,
}

impl Tasks {
    fn touch(&mut self, key: &str) {
        if let Some(d) = &mut self.dirty
            && !d.contains(key)
            && let Some((k, _)) = self.map.get_key_value(key)
        {
            d.insert(k.clone());
        }
    }

    /// The shared copy of a known key.
    fn key(&self, key: &str) -> Option<Key> {
        self.map.get_key_value(key).map(|(k, _)| k.clone())
    }

    fn get(&self, key: &str) -> Option<&Task> {
        self.map.get(key).map(|t| &**t)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Task> {
        self.touch(key);
        self.map.get_mut(key).map(|t| &mut **t)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn insert(&mut self, key: Key, task: Task) {
        if let Some(d) = &mut self.dirty {
            d.insert(key.clone());
        }
        self.map.insert(key, Box::new(task));
    }

    fn remove(&mut self, key: &str) -> Option<Task> {
        self.touch(key);
        let task = self.map.remove(key).map(|t| *t);
        if let Some(t) = &task
            && self.dirty.is_some()
            && t.journaled != 0
        {
            self.forgotten.push(t.seq);
        }
        task
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;
    fn index(&self, key: &str) -> &Task {
        &self.map[key]
    }
}

/// The scheduler's whole decision state. See the module docs.
#[derive(Debug, Default)]
pub struct Scheduler {
    tasks: Tasks,
    /// Counts, the task stream and failures, kept as tasks change.
    activity: activity::Activity,
    workers: HashMap<WorkerId, Worker>,
    clients: HashMap<ClientId, Client>,
    holdings: HashMap<Arc<str>, HashSet<Key>>,
    /// Module hashes and function names, shared by the tasks using them.
    names: Interner,
    modules: HashSet<String>,
    /// Ready tasks: highest priority, then oldest, first.
    ready: BinaryHeap<(i32, Reverse<u64>, Key)>,
    /// Ready tasks no connected worker could run (`no-worker`), with their
    /// place in `ready`: set aside until a worker joins, so they cost
    /// nothing while others are placed.
    no_worker: HashMap<Key, (i32, Reverse<u64>)>,
    seq: u64,
    /// Scatter requests still waiting for values to be stored.
    /// per worker the copies it has still to confirm.
    scatters: HashMap<(ClientId, u64), HashMap<WorkerId, usize>>,
    /// Scattered keys restored from the journal whose data no worker has
    /// reported yet; lost if none has once the rejoin window closes.
    unreported_scatters: Vec<String>,
    /// Next worker for round-robin scatter.
    scatter_rr: usize,
    /// Queues, variables, locks, semaphores, events and topics.
    prims: Primitives,
    /// Actors by key.
    actors: actors::Actors,
    /// Modules refused at upload, with the reason.
    refused_modules: HashMap<String, String>,
    /// Largest value accepted as an argument, scattered or stored.
    max_value: Option<usize>,
    /// Counters.
    stats: crate::protocol::Stats,
    /// The counters as last journaled.
    journal_stats: crate::protocol::Stats,
    /// Modules stored since the journal last drained them; `None` without
    /// a journal.
    journal_modules: Option<Vec<String>>,
    /// Holder names of unnamed clients (their holds are not journaled).
    ephemeral_holders: HashSet<String>,
    /// The scheduler clock when work stealing last looked at the workers.
    balanced_ms: Option<u64>,
    /// Whether it should look again at once (a heartbeat, an answer).
    balance_now: bool,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses values (arguments, scattered data, stored items) larger than
    /// `max` bytes.
    pub fn with_max_value(mut self, max: usize) -> Self {
        self.max_value = Some(max);
        self
    }

    /// Whether `bytes` of value fit; the refusal says what to do.
    fn value_fits(&self, what: &str, bytes: usize) -> Result<(), String> {
        match self.max_value {
            Some(max) if bytes > max => Err(format!(
                "{what} is {bytes} bytes, more than this scheduler accepts ({max} bytes); \
                 pass it as a file the task reads, or raise the scheduler's --max-value-size"
            )),
            _ => Ok(()),
        }
    }

    /// Reacts to one event; returns what to do about it.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::ClientConnected { client, name } => {
                let ephemeral = name.is_none();
                let holder = name.unwrap_or_else(|| format!("client-{client}"));
                if ephemeral {
                    self.ephemeral_holders.insert(holder.clone());
                }
                let holder = holder.into();
                self.clients.insert(client, Client { holder, ephemeral });
            }
            Event::ClientDisconnected { client } => {
                self.primitives_client_gone(client, &mut out);
                if let Some(c) = self.clients.remove(&client)
                    && c.ephemeral
                {
                    self.ephemeral_holders.remove(&*c.holder);
                    self.owner_ended(&Owner::Holder(c.holder.to_string()), &mut out);
                    let keys: Vec<Key> = self
                        .holdings
                        .remove(&c.holder)
                        .map(|s| s.into_iter().collect())
                        .unwrap_or_default();
                    for key in keys {
                        self.unhold(&c.holder, &key, &mut out);
                    }
                }
            }
            Event::ModuleStored { hash } => {
                self.refused_modules.remove(&hash);
                if let Some(m) = &mut self.journal_modules
                    && !self.modules.contains(&hash)
                {
                    m.push(hash.clone());
                }
                self.modules.insert(hash);
            }
            Event::ModuleRefused { hash, reason } => {
                self.refused_modules.insert(hash, reason);
            }
            Event::Submit { client, id, tasks } => {
                let (refused, unplaceable) = self.submit(client, tasks, &mut out);
                out.push(Command::Submitted {
                    client,
                    id,
                    refused,
                    unplaceable,
                });
            }
            Event::Watch { client, keys } => {
                for key in keys {
                    match self.tasks.get_mut(&key) {
                        None => out.push(Command::Done {
                            client,
                            key,
                            outcome: Outcome::Unknown,
                        }),
                        // Dropped or lost with its worker, but still known:
                        // computed again for whoever asks.
                        Some(t) if matches!(t.state, State::Released) => {
                            t.watchers.push(client);
                            self.recompute(&key);
                        }
                        Some(t) if t.is_terminal() => {
                            let outcome = self.outcome(&key);
                            out.push(Command::Done {
                                client,
                                key,
                                outcome,
                            });
                        }
                        Some(t) => t.watchers.push(client),
                    }
                }
            }
            Event::Release { client, keys } => {
                if let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) {
                    for key in keys {
                        self.drop_hold(&holder, &key, &mut out);
                    }
                }
            }
            Event::ReleaseAll { client } => {
                if let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) {
                    let keys = self.holdings.remove(&holder).unwrap_or_default();
                    for key in keys {
                        self.unhold(&holder, &key, &mut out);
                    }
                }
            }
            Event::WorkerConnected {
                worker,
                nthreads,
                data_addr,
                name,
                resources,
                memory_limit,
                restarts,
            } => {
                // Tasks no worker could run may fit this one.
                self.ready
                    .extend(self.no_worker.drain().map(|(k, (p, s))| (p, s, k)));
                self.workers.insert(
                    worker,
                    Worker {
                        nthreads: nthreads.max(1),
                        data_addr,
                        name,
                        resources,
                        memory_limit,
                        restarts,
                        used: HashMap::default(),
                        processing: HashSet::default(),
                        queued: HashSet::default(),
                        steal_to: None,
                        awaiting: false,
                        began_ms: self.activity.now_ms,
                        seceded: HashSet::default(),
                        has: HashSet::default(),
                        spilled: 0,
                        held: 0,
                        rss: 0,
                        fetched: (0, 0),
                        heartbeat_ms: self.activity.now_ms,
                        runs_sent: 0,
                    },
                );
                self.balance_now = true;
            }
            Event::FireAndForget { keys } => {
                for key in keys {
                    if let Some(t) = self.tasks.get_mut(&key)
                        && !t.is_terminal()
                    {
                        t.holders.insert(&Arc::from(FIRE_AND_FORGET));
                    }
                }
            }
            Event::Cancel {
                client,
                keys,
                force,
            } => self.cancel(client, keys, force, &mut out),
            Event::Retry {
                client,
                id,
                keys,
                limits,
            } => {
                let refused = self.retry(keys, Some(&limits));
                out.push(Command::Retried {
                    client,
                    id,
                    refused,
                });
            }
            Event::Scatter {
                client,
                id,
                values,
                broadcast,
                workers,
            } => self.scatter(client, id, values, broadcast, &workers, &mut out),
            Event::WorkerDisconnected { worker } => self.worker_gone(worker, &mut out),
            Event::Finished { worker, results } => {
                for (key, located) in results {
                    self.finished(worker, key, located, &mut out);
                }
            }
            Event::Erred { worker, errors } => {
                for (key, error) in errors {
                    let on_it = matches!(
                        self.tasks.get(&key).map(|t| &t.state),
                        Some(State::Processing { worker: w, .. }) if *w == worker
                    );
                    if !on_it {
                        continue;
                    }
                    let t = self.tasks.get_mut(&key).expect("on a worker");
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.give_back(&key, &t.recipe.placement().resources);
                    }
                    self.owner_ended(&Owner::Task(key.clone()), &mut out);
                    let input_gone =
                        error.kind == ErrorKind::Lost && self.unfinished_inputs(&key) > 0;
                    let t = self.tasks.get_mut(&key).expect("on a worker");
                    if input_gone {
                        // Its input died with a worker and is being computed
                        // again: run it once that is back.
                        self.activity.set(&key, t, State::Pending { waiting_on: 0 });
                        self.requeue(&key);
                    } else if t.retries_left > 0 && error.kind != ErrorKind::Input {
                        t.retries_left -= 1;
                        // An input may have been lost with its worker while
                        // this ran: count them again, recomputing lost ones.
                        self.requeue(&key);
                    } else {
                        let mut error = error;
                        let retried = t.recipe.retries();
                        if retried > 0 && error.kind != ErrorKind::Input {
                            error.message = format!(
                                "{} (after {} attempts: it was retried {retried} times)",
                                error.message,
                                retried + 1
                            );
                        }
                        // A scattered value the worker could not keep: its
                        // request fails with the reason.
                        if let Some(req) = t.scatter.as_deref().copied()
                            && self.scatters.remove(&req).is_some()
                        {
                            out.push(Command::Failed {
                                client: req.0,
                                id: req.1,
                                message: error.message.clone(),
                            });
                        }
                        self.fail(&key, error, &mut out);
                    }
                }
            }
            Event::Seceded { worker, key } => {
                if let Some(w) = self.workers.get_mut(&worker)
                    && let Some(k) = w.processing.get(key.as_str()).cloned()
                {
                    w.seceded.insert(k);
                }
            }
            Event::Stolen { worker, keys } => self.stolen(worker, keys, &mut out),
            Event::Started { worker, keys } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    for key in &keys {
                        w.queued.remove(key.as_str());
                    }
                    w.began_ms = self.activity.now_ms;
                }
                for key in keys {
                    if let Some(t) = self.tasks.get_mut(&key)
                        && let State::Processing {
                            worker: w, started, ..
                        } = &mut t.state
                        && *w == worker
                    {
                        *started = true;
                        t.stamps.began(self.activity.now_ms);
                    }
                }
            }
            Event::Rejoined { worker, key } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.seceded.remove(key.as_str());
                }
            }
            Event::Primitive {
                client,
                id,
                task,
                op,
            } => self.primitive(client, id, task, op, &mut out),
            Event::Publish { topic, message } => self.publish(&topic, message, &mut out),
            Event::RejoinWindowClosed => self.rejoin_window_closed(&mut out),
            Event::PrimitiveTimeout { client, id } => {
                self.primitive_timed_out(client, id, &mut out)
            }
            Event::ActorNew { client, id, spec } => self.actor_new(client, id, spec, &mut out),
            Event::ActorStarted {
                worker,
                key,
                outcome,
            } => self.actor_started(worker, &key, outcome, &mut out),
            Event::ActorDelete { key } => self.actor_delete(&key, &mut out),
            Event::ActorBroken { worker, key } => self.actor_broken(worker, &key),
            Event::WorkerHeartbeat {
                worker,
                spilled,
                held,
                rss,
                fetched,
                run_seq,
                running,
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.spilled = spilled;
                    w.held = held;
                    w.rss = rss;
                    w.fetched = fetched;
                    w.heartbeat_ms = self.activity.now_ms;
                }
                self.reconcile(worker, run_seq, &running, &mut out);
                self.balance_now = true;
            }
            Event::WorkerHolds { worker, results } => {
                for (key, at) in results {
                    self.adopt_result(worker, &key, at, &mut out);
                }
            }
        }
        self.schedule(&mut out);
        self.balance(&mut out);
        out
    }

    /// Adds a task to the table, counting it.
    fn add_task(&mut self, key: Key, task: Task) {
        self.activity
            .added(&task.recipe.function, activity::Phase::of(&task.state));
        self.tasks.insert(key, task);
    }

    /// Makes `holder` hold `key` (and compute it again if its result was
    /// dropped); false if the key is unknown.
    fn hold(&mut self, holder: &str, key: &str) -> bool {
        let Some(k) = self.tasks.key(key) else {
            return false;
        };
        let name = self.note_hold(holder, k);
        self.tasks
            .get_mut(key)
            .expect("known")
            .holders
            .insert(&name);
        self.recompute(key);
        true
    }

    /// Notes in the holdings index that `holder` holds `key`; returns the
    /// index's copy of the holder's name, which the task's holders share.
    fn note_hold(&mut self, holder: &str, key: Key) -> Arc<str> {
        if let Some((name, keys)) = self.holdings.get_key_value(holder) {
            let name = name.clone();
            if !keys.contains(&key) {
                self.holdings.get_mut(holder).expect("present").insert(key);
            }
            return name;
        }
        let name: Arc<str> = Arc::from(holder);
        self.holdings
            .insert(name.clone(), HashSet::from_iter([key]));
        name
    }

    /// Ends `holder`'s hold on `key`, forgetting the key if nothing else
    /// needs it.
    fn drop_hold(&mut self, holder: &str, key: &str, out: &mut Vec<Command>) {
        if let Some(h) = self.holdings.get_mut(holder) {
            h.remove(key);
            if h.is_empty() {
                self.holdings.remove(holder);
            }
        }
        self.unhold(holder, key, out);
    }

    fn submit(
        &mut self,
        client: ClientId,
        tasks: Vec<TaskSpec>,
        out: &mut Vec<Command>,
    ) -> (KeyReasons, KeyReasons) {
        let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) else {
            return (Vec::new(), Vec::new());
        };
        let mut refused = Vec::new();
        let mut unplaceable: Vec<(String, String)> = Vec::new();
        for spec in tasks {
            let key = spec.key.clone();
            if let Some(m) = spec.memory_limit
                && let Err(why) = self.memory_fits(m)
            {
                refused.push((key, why));
                continue;
            }
            if !self.tasks.contains_key(&key) {
                if let Err(why) = self.check(&spec) {
                    refused.push((key, why));
                    continue;
                }
                let restricted = spec.memory_limit.is_some()
                    || !spec.placement.resources.is_empty()
                    || (!spec.placement.workers.is_empty() && !spec.placement.allow_other_workers);
                self.insert(spec, &holder, out);
                if restricted
                    && let Some(why) = self.tasks.get(&key).and_then(|t| self.why_no_worker(t))
                    && !unplaceable.iter().any(|(_, w)| *w == why)
                {
                    unplaceable.push((key, why));
                }
            } else {
                self.hold(&holder, &key);
                self.resubmitted(&key, &spec);
            }
        }
        (refused, unplaceable)
    }

    /// A memory limit some connected worker allows (any, with none
    /// connected: the task waits for one).
    fn memory_fits(&self, limit: u64) -> Result<(), String> {
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

    /// A key submitted again that erred or was cancelled runs again when
    /// the submission asks for other limits (timeout, memory, retries):
    /// the same call under new limits is a new attempt, not the old one.
    fn resubmitted(&mut self, key: &str, spec: &TaskSpec) {
        let limits = (spec.timeout_ms, spec.memory_limit, spec.retries);
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        if !matches!(t.state, State::Error(_) | State::Cancelled) || t.recipe.limits() == limits {
            return;
        }
        let cancelled = matches!(t.state, State::Cancelled);
        t.recipe.set_limits(limits);
        t.journaled = 0;
        if !cancelled {
            self.retry(vec![key.to_string()], None);
            return;
        }
        // A cancelled task runs again if its inputs can still be had.
        let deps = t.deps.clone();
        let blocked = deps.iter().any(|d| {
            matches!(
                self.tasks.get(d).map(|t| &t.state),
                None | Some(State::Error(_) | State::Cancelled)
            )
        });
        if blocked {
            return;
        }
        let t = self.tasks.get_mut(key).expect("present");
        self.activity.set(key, t, State::Pending { waiting_on: 0 });
        t.retries_left = saturate(t.recipe.retries());
        for d in &deps {
            self.tasks.get_mut(d).expect("checked").needed_by += 1;
        }
        self.requeue(key);
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), String> {
        if let Some(why) = self.refused_modules.get(&spec.module) {
            return Err(format!("module {} was refused: {why}", spec.module));
        }
        if !self.modules.contains(&spec.module) {
            return Err(format!(
                "module {} was never uploaded to the scheduler",
                spec.module
            ));
        }
        for (i, arg) in spec.args.iter().enumerate() {
            if let Arg::Value(v) = arg {
                self.value_fits(&format!("argument {} of {}", i + 1, spec.function), v.len())?;
            }
            if let Arg::Future(dep) = arg
                && !self.tasks.contains_key(dep)
            {
                return Err(format!(
                    "argument @{dep} names no future the scheduler knows \
                     (never submitted, or released)"
                ));
            }
        }
        Ok(())
    }

    /// Adds a new task held by `holder`; it becomes ready, waits, or errs
    /// at once if an input already erred.
    fn insert(&mut self, mut spec: TaskSpec, holder: &str, out: &mut Vec<Command>) {
        let key: Key = Arc::from(std::mem::take(&mut spec.key));
        let name = self.note_hold(holder, key.clone());
        let mut deps: Vec<Key> = Vec::new();
        for arg in &spec.args {
            if let Arg::Future(d) = arg
                && !deps.iter().any(|k| **k == **d)
            {
                deps.push(self.tasks.key(d).expect("checked by submit"));
            }
        }
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
            deps: deps.into_boxed_slice(),
            dependents: Dependents::default(),
            needed_by: 0,
            holders: Holders::one(name),
            watchers: ThinVec::new(),
            retries_left: saturate(spec.retries),
            deaths: 0,
            stamps: activity::Stamps::at(self.activity.now_ms),
            journaled: 0,
            scatter: None,
            recipe: Recipe::new(spec, &mut self.names),
        };
        let ready = (task.recipe.priority(), Reverse(task.seq), key.clone());
        self.add_task(key.clone(), task);
        if let Some(e) = inherited {
            self.fail(&key, e, out);
        } else if cancelled {
            self.cancel_tree(&key, out);
        } else if waiting_on == 0 {
            self.ready.push(ready);
        }
    }

    /// Releases `holder`'s hold on `key` (the holdings index is the
    /// caller's business) and forgets the key if nothing needs it now.
    fn unhold(&mut self, holder: &str, key: &str, out: &mut Vec<Command>) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.holders.remove(holder);
        }
        self.maybe_forget(key, out);
    }

    /// Forgets `key` if nothing holds or needs it any more, and then its
    /// inputs likewise. A worklist, not recursion: releasing the end of a
    /// 100k-task chain must not overflow the scheduler's stack.
    fn maybe_forget(&mut self, key: &str, out: &mut Vec<Command>) {
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack = vec![key];
        while let Some(key) = stack.pop() {
            let forget = match self.tasks.get(&key) {
                Some(t) => t.holders.is_empty() && t.needed_by == 0 && t.is_terminal(),
                None => false,
            };
            if !forget {
                continue;
            }
            let task = self.tasks.get_mut(&key).expect("present");
            if let State::Finished { result } = &task.state {
                for w in &result.who_has {
                    if let Some(worker) = self.workers.get_mut(w) {
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
            self.activity
                .removed(&task.recipe.function, activity::Phase::of(&task.state));
            for d in task.deps {
                if let Some(dep) = self.tasks.get_mut(&d) {
                    dep.dependents.remove(&key);
                }
                stack.push(d);
            }
        }
    }

    /// Makes a released or lost result wanted again: it and whatever of its
    /// inputs is gone too go back to pending, inputs first (a worklist, for
    /// long chains).
    fn recompute(&mut self, key: &str) {
        let mut revived = Vec::new();
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(t) = self.tasks.get_mut(&k) else {
                continue;
            };
            if !matches!(t.state, State::Released | State::Lost) || t.scatter.is_some() {
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

    /// How many of `key`'s inputs are not finished.
    fn unfinished_inputs(&self, key: &str) -> usize {
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
    fn requeue(&mut self, key: &str) {
        for d in self.tasks[key].deps.clone() {
            if matches!(
                self.tasks.get(&d).map(|t| &t.state),
                Some(State::Released | State::Lost)
            ) {
                self.recompute(&d);
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
            self.ready.push((t.recipe.priority(), Reverse(t.seq), k));
        }
    }

    fn finished(
        &mut self,
        worker: WorkerId,
        key: String,
        located: Located,
        out: &mut Vec<Command>,
    ) {
        let Some(key) = self.tasks.key(&key) else {
            if let Some(w) = self.workers.get_mut(&worker) {
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
        let task = self.tasks.get_mut(&key).expect("present");
        if let Some(w) = self.workers.get_mut(&worker) {
            w.give_back(&key, &task.recipe.placement().resources);
        }
        if matches!(&task.state, State::Processing { worker: w, .. } if *w == worker) {
            self.owner_ended(&Owner::Task(key.to_string()), out);
        }
        let task = self.tasks.get_mut(&key).expect("present");
        match &mut task.state {
            State::Processing { worker: w, .. } if *w == worker || task.scatter.is_some() => {}
            // Another copy (broadcast scatter): remember where it is.
            State::Finished { result } if task.scatter.is_some() => {
                if !result.who_has.contains(&worker) {
                    result.who_has.push(worker);
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.has.insert(key);
                    }
                }
                let req = task.scatter.as_deref().copied();
                self.scatter_stored(req, worker, out);
                return;
            }
            // Not a run this worker was asked for (given up on and placed
            // again, cancelled, erred): the result is kept if it is still
            // wanted and freed on the worker otherwise, never left there.
            _ => return self.adopt_result(worker, &key, located, out),
        }
        let req = task.scatter.as_deref().copied();
        self.activity.set(
            &key,
            task,
            State::Finished {
                result: Stored {
                    inline: located.inline,
                    who_has: thin_vec::thin_vec![worker],
                    nbytes: located.nbytes,
                },
            },
        );
        if let Some(w) = self.workers.get_mut(&worker) {
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
                    self.ready
                        .push((dt.recipe.priority(), Reverse(dt.seq), d.clone()));
                }
            }
        }
        self.ended(&key, out);
    }

    /// A (re)joined worker holds `key`'s result: it is finished there,
    /// unless it already is; a result nobody can use (its task is being
    /// computed on another worker, erred or was cancelled) is freed there.
    fn adopt_result(&mut self, worker: WorkerId, key: &str, at: Located, out: &mut Vec<Command>) {
        let Some(key) = self.tasks.key(key) else {
            return out.push(Command::Free {
                worker,
                keys: vec![key.to_string()],
            });
        };
        let t = self.tasks.get_mut(&key).expect("present");
        let was_pending = match &t.state {
            State::Released | State::Lost => false,
            State::Pending { .. } => true,
            State::Finished { result } => {
                if !result.who_has.contains(&worker) {
                    if let State::Finished { result } = &mut t.state {
                        result.who_has.push(worker);
                    }
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.has.insert(key);
                    }
                }
                return;
            }
            // Run there again (a rejoining worker is sent the recomputation
            // before its report of what it holds arrives): the run's result
            // replaces this one, and freeing it could free that instead.
            State::Processing { worker: w, .. } if *w == worker => return,
            State::Processing { .. } | State::Error(_) | State::Cancelled => {
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
                    inline: at.inline,
                    who_has: thin_vec::thin_vec![worker],
                    nbytes: at.nbytes,
                },
            },
        );
        if let Some(w) = self.workers.get_mut(&worker) {
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
                    self.ready
                        .push((dt.recipe.priority(), Reverse(dt.seq), d.clone()));
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
    fn reconcile(
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
            match self.tasks.get(key).map(|t| (&t.state, t.scatter.is_some())) {
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
            if let Some(w) = self.workers.get_mut(&worker) {
                w.give_back(&key, &need);
            }
            self.stats.resent += 1;
            self.requeue(&key);
        }
    }

    /// One copy of scattered data is stored on `worker`; answers the
    /// scatter request once every copy of every value is.
    fn scatter_stored(
        &mut self,
        req: Option<(ClientId, u64)>,
        worker: WorkerId,
        out: &mut Vec<Command>,
    ) {
        let Some(req) = req else { return };
        let Some(left) = self.scatters.get_mut(&req) else {
            return;
        };
        if let Some(n) = left.get_mut(&worker) {
            *n -= 1;
            if *n == 0 {
                left.remove(&worker);
            }
        }
        if left.is_empty() {
            self.scatters.remove(&req);
            out.push(Command::Scattered {
                client: req.0,
                id: req.1,
            });
        }
    }

    /// A scatter request waiting on `worker`, which left, fails: its client
    /// is told to scatter again rather than left waiting.
    fn scatters_worker_gone(&mut self, worker: WorkerId, name: &str, out: &mut Vec<Command>) {
        let failed: Vec<(ClientId, u64)> = self
            .scatters
            .iter()
            .filter(|(_, left)| left.contains_key(&worker))
            .map(|(req, _)| *req)
            .collect();
        for (client, id) in failed {
            self.scatters.remove(&(client, id));
            out.push(Command::Failed {
                client,
                id,
                message: format!(
                    "worker {name} left before it stored the scattered values; scatter them again"
                ),
            });
        }
    }

    /// The window for workers to rejoin after a restart has closed:
    /// restored scattered data that no worker reported is lost (it has no
    /// recipe to compute it again), and whoever waits for it is told.
    fn rejoin_window_closed(&mut self, out: &mut Vec<Command>) {
        let mut lost = Vec::new();
        for key in std::mem::take(&mut self.unreported_scatters) {
            if let Some(t) = self.tasks.get_mut(&key)
                && t.scatter.is_some()
                && matches!(t.state, State::Released)
            {
                self.activity.set(&key, t, State::Lost);
                lost.push(self.tasks.key(&key).expect("present"));
            }
        }
        self.report_lost(lost, out);
    }

    /// `key` reached a terminal state: it no longer needs its inputs.
    fn ended(&mut self, key: &str, out: &mut Vec<Command>) {
        let deps = match self.tasks.get_mut(key) {
            Some(t) => {
                t.holders.remove(FIRE_AND_FORGET);
                t.deps.clone()
            }
            None => return,
        };
        for d in deps {
            if let Some(dep) = self.tasks.get_mut(&d) {
                dep.needed_by = dep.needed_by.saturating_sub(1);
            }
            self.maybe_forget(&d, out);
        }
        self.maybe_forget(key, out);
    }

    /// Fails `key` and, transitively, every dependent that has not ended.
    fn fail(&mut self, key: &str, error: TaskError, out: &mut Vec<Command>) {
        self.end_tree(key, || State::Error(Box::new(error.clone())), out);
    }

    /// Cancels `key` and every dependent that has not ended.
    fn cancel_tree(&mut self, key: &str, out: &mut Vec<Command>) {
        self.end_tree(key, || State::Cancelled, out);
    }

    /// Ends `key` and, transitively, every dependent that has not ended, in
    /// the state `end` makes; those running are interrupted.
    fn end_tree(&mut self, key: &str, end: impl Fn() -> State, out: &mut Vec<Command>) {
        let Some(key) = self.tasks.key(key) else {
            return;
        };
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(t) = self.tasks.get_mut(&k) else {
                continue;
            };
            if t.is_terminal() {
                continue;
            }
            if let State::Processing { worker, .. } = t.state
                && let Some(w) = self.workers.get_mut(&worker)
                && w.processing.contains(&k)
            {
                w.give_back(&k, &t.recipe.placement().resources);
                out.push(Command::CancelRun {
                    worker,
                    keys: vec![k.to_string()],
                });
            }
            let was_running = matches!(t.state, State::Processing { .. });
            self.activity.set(&k, t, end());
            self.no_worker.remove(&k);
            stack.extend(t.dependents.iter().cloned());
            if was_running {
                self.owner_ended(&Owner::Task(k.to_string()), out);
            }
            self.notify(&k, out);
            self.ended(&k, out);
        }
    }

    fn notify(&mut self, key: &str, out: &mut Vec<Command>) {
        let watchers = match self.tasks.get_mut(key) {
            Some(t) => std::mem::take(&mut t.watchers),
            None => return,
        };
        if watchers.is_empty() {
            return;
        }
        let outcome = self.outcome(key);
        for client in watchers {
            out.push(Command::Done {
                client,
                key: key.to_string(),
                outcome: outcome.clone(),
            });
        }
    }

    fn outcome(&self, key: &str) -> Outcome {
        match self.tasks.get(key).map(|t| &t.state) {
            Some(State::Finished { result }) => Outcome::Finished(self.locate(result)),
            Some(State::Error(e)) => Outcome::Error((**e).clone()),
            Some(State::Lost) => Outcome::Error(lost_error(key)),
            Some(State::Cancelled) => Outcome::Cancelled,
            _ => Outcome::Unknown,
        }
    }

    fn locate(&self, s: &Stored) -> Located {
        Located {
            inline: s.inline.clone(),
            who_has: s
                .who_has
                .iter()
                .filter_map(|w| self.workers.get(w).map(|w| w.data_addr.clone()))
                .collect(),
            nbytes: s.nbytes,
        }
    }

    fn worker_gone(&mut self, worker: WorkerId, out: &mut Vec<Command>) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        self.stealing_worker_gone(&w);
        self.activity.worker_gone(worker);
        self.actors_worker_gone(worker, out);
        // Results that lived only there (no inline copy, no replica) are
        // computed again from their lineage if anything still needs them;
        // scattered data has no lineage and is lost.
        let mut lost = Vec::new();
        let mut gone = Vec::new();
        for key in &w.has {
            if let Some(t) = self.tasks.get_mut(key)
                && let State::Finished { result } = &mut t.state
            {
                result.who_has.retain(|x| *x != worker);
                if result.who_has.is_empty() && result.inline.is_none() {
                    if t.scatter.is_some() {
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
        // Its running and queued tasks go back to the ready queue; their
        // leases end with the instances that held them.
        let mut killers = Vec::new();
        for key in w.processing {
            self.owner_ended(&Owner::Task(key.to_string()), out);
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
                if t.scatter.is_some() {
                    self.activity.set(&key, t, State::Lost);
                    lost.push(key);
                } else if u32::from(t.deaths) >= MAX_WORKER_DEATHS {
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
                kind: ErrorKind::Internal,
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

    /// Tells the watchers of `lost` keys and fails their dependents.
    fn report_lost(&mut self, lost: Vec<Key>, out: &mut Vec<Command>) {
        for key in lost {
            self.notify(&key, out);
            let dependents = self.tasks[&key].dependents.to_vec();
            for d in dependents {
                self.fail(&d, lost_error(&key), out);
            }
        }
    }

    /// Sends ready tasks to workers with room, best placement first.
    fn schedule(&mut self, out: &mut Vec<Command>) {
        let mut batches: HashMap<WorkerId, Vec<RunTask>> = HashMap::default();
        let mut waiting = Vec::new();
        // Whether some worker has room: checked (a walk over the workers)
        // only when a task finds no place, not for every task placed.
        let mut room = true;
        while room && !self.ready.is_empty() {
            let entry = self.ready.pop().expect("not empty");
            let key = &entry.2;
            let Some(task) = self.tasks.get(key) else {
                continue;
            };
            if !matches!(task.state, State::Pending { waiting_on: 0 }) {
                continue;
            }
            let Some(worker) = self.place(task) else {
                if self.why_no_worker(task).is_some() {
                    // No worker could ever run it: aside until one joins.
                    self.no_worker.insert(entry.2, (entry.0, entry.1));
                    continue;
                }
                // No worker can take it now (restrictions, resources, or
                // all full: then the rest wait too).
                waiting.push(entry);
                room = self.workers.values().any(Worker::has_room);
                continue;
            };
            let run = self.assign(&entry.2, worker);
            batches.entry(worker).or_default().push(run);
        }
        self.ready.extend(waiting);
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_by_key(|(w, _)| *w);
        for (worker, tasks) in batches {
            self.send_run(worker, tasks, out);
        }
    }

    /// Makes ready task `key` processing on `worker`, which has room: the
    /// task to put in its next `Run`.
    fn assign(&mut self, key: &Key, worker: WorkerId) -> RunTask {
        let task = &self.tasks[key];
        let run = self.run_task(key, task);
        let need = task.recipe.placement().resources.clone();
        let w = self
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
    fn send_run(&mut self, worker: WorkerId, tasks: Vec<RunTask>, out: &mut Vec<Command>) {
        let w = self
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

    /// The worker holding the most input bytes, else the least busy, among
    /// those the task may use and that have room; `None` if there is none.
    fn place(&self, task: &Task) -> Option<WorkerId> {
        let p = task.recipe.placement();
        let memory = task.recipe.memory_limit();
        let fits = |_: WorkerId, w: &Worker| {
            w.has_room() && w.offers(&p.resources) && memory.is_none_or(|m| m <= w.memory_limit)
        };
        let named = |id: WorkerId, w: &Worker| {
            p.workers.is_empty() || p.workers.iter().any(|n| w.is(id, n))
        };
        self.best(task, |id, w| fits(id, w) && named(id, w))
            .or_else(|| {
                if p.allow_other_workers {
                    self.best(task, fits)
                } else {
                    None
                }
            })
    }

    /// Why no connected worker could ever run `task`, even idle: its
    /// `--workers`, `--resources` or memory limit rule them all out.
    /// `None` if one could.
    fn why_no_worker(&self, task: &Task) -> Option<String> {
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

    fn best(&self, task: &Task, eligible: impl Fn(WorkerId, &Worker) -> bool) -> Option<WorkerId> {
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
        self.workers
            .iter()
            .filter(|(id, w)| eligible(**id, w))
            .max_by(|(ia, a), (ib, b)| {
                let ha = held.get(ia).copied().unwrap_or(0);
                let hb = held.get(ib).copied().unwrap_or(0);
                // Less load is better: compare b's load against a's.
                let la = a.load() as u64 * b.nthreads as u64;
                let lb = b.load() as u64 * a.nthreads as u64;
                ha.cmp(&hb).then(lb.cmp(&la)).then(ib.cmp(ia))
            })
            .map(|(id, _)| *id)
    }

    fn run_task(&self, key: &str, task: &Task) -> RunTask {
        let args = task
            .recipe
            .args
            .iter()
            .map(|a| match a {
                Arg::Value(v) => RunArg::Value(v.clone()),
                Arg::Future(k) => {
                    let at = match self.tasks.get(k).map(|t| &t.state) {
                        Some(State::Finished { result }) => self.locate(result),
                        _ => unreachable!("a ready task's dependencies are finished"),
                    };
                    RunArg::Dep { key: k.clone(), at }
                }
            })
            .collect();
        RunTask {
            key: key.to_string(),
            module: task.recipe.module.to_string(),
            function: task.recipe.function.to_string(),
            args,
            timeout_ms: task.recipe.timeout_ms(),
            memory_limit: task.recipe.memory_limit(),
            grants: task.recipe.grants().clone(),
            priority: task.recipe.priority(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> crate::protocol::Stats {
        crate::protocol::Stats {
            tasks: self.tasks.len() as u64,
            ..self.stats.clone()
        }
    }

    /// The state of a key, if the scheduler knows it.
    pub fn state(&self, key: &str) -> Option<TaskState> {
        let t = self.tasks.get(key)?;
        if matches!(t.state, State::Released) {
            // Kept only as lineage: to users it is gone.
            return None;
        }
        Some(t).map(|t| match t.state {
            State::Pending { waiting_on: 0 } if self.no_worker.contains_key(key) => {
                TaskState::NoWorker
            }
            State::Pending { .. } => TaskState::Pending,
            State::Processing { .. } => TaskState::Processing,
            State::Finished { .. } => TaskState::Finished,
            State::Error(_) => TaskState::Error,
            State::Cancelled => TaskState::Cancelled,
            State::Lost => TaskState::Lost,
            State::Released => unreachable!("handled above"),
        })
    }

    /// Whether a module has been stored.
    pub fn has_module(&self, hash: &str) -> bool {
        self.modules.contains(hash)
    }

    /// Every connected worker, by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut v: Vec<_> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: *id,
                name: w.name.clone(),
                address: w.data_addr.clone(),
                nthreads: w.nthreads,
                resources: w.resources.clone(),
                processing: w.processing.len(),
                executing: w
                    .processing
                    .iter()
                    .filter(|k| {
                        matches!(
                            self.tasks.get(k).map(|t| &t.state),
                            Some(State::Processing { started: true, .. })
                        )
                    })
                    .count(),
                holding: w.has.len(),
                // As the worker last reported: summing its results here
                // would walk every one of them per request.
                nbytes: w.held,
                spilled_bytes: w.spilled,
                memory_limit: w.memory_limit,
                restarts: w.restarts,
                rss_bytes: w.rss,
                heartbeat_age_ms: self.activity.now_ms.saturating_sub(w.heartbeat_ms),
                fetched: w.fetched.0,
                fetched_bytes: w.fetched.1,
                compute_seconds: self.worker_seconds(*id),
            })
            .collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The keys each worker holds, by data address (sorted).
    pub fn has_what(&self) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = self
            .workers
            .values()
            .map(|w| {
                let mut keys: Vec<String> = w.has.iter().map(|k| k.to_string()).collect();
                keys.sort();
                (w.data_addr.clone(), keys)
            })
            .collect();
        v.sort();
        v
    }

    /// Data addresses of the workers holding each key (empty if none or
    /// unknown).
    pub fn who_has(&self, keys: Vec<String>) -> Vec<(String, Vec<String>)> {
        keys.into_iter()
            .map(|k| {
                let addrs = match self.tasks.get(&k).map(|t| &t.state) {
                    Some(State::Finished { result }) => self.locate(result).who_has,
                    _ => Vec::new(),
                };
                (k, addrs)
            })
            .collect()
    }

    fn cancel(&mut self, client: ClientId, keys: Vec<String>, force: bool, out: &mut Vec<Command>) {
        let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) else {
            return;
        };
        for key in keys {
            let Some(t) = self.tasks.get(&key) else {
                continue;
            };
            let sole = t
                .holders
                .iter()
                .all(|h| h == &*holder || h == FIRE_AND_FORGET);
            if force || sole {
                self.cancel_tree(&key, out);
            } else {
                // Others still want it: this client just lets go.
                if let Some(h) = self.holdings.get_mut(&holder) {
                    h.remove(key.as_str());
                }
                self.unhold(&holder, &key, out);
            }
        }
    }

    /// Resets erred keys (and the erred tasks their errors came from, and
    /// everything between) to run again, under new `limits` if given.
    /// Returns the keys refused.
    fn retry(&mut self, keys: Vec<String>, limits: Option<&TaskLimits>) -> Vec<(String, String)> {
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
                Some(_) => {
                    refused.push((key, "it has not erred".into()));
                    continue;
                }
                None => {
                    refused.push((key.clone(), format!("unknown key {key}")));
                    continue;
                }
            };
            // Everything downstream of the origin that erred with its error.
            let mut reset: Vec<Key> = Vec::new();
            let mut seen: HashSet<Key> = HashSet::default();
            let mut stack: Vec<Key> = self.tasks.key(&origin).into_iter().collect();
            while let Some(k) = stack.pop() {
                if let Some(t) = self.tasks.get(&k)
                    && matches!(&t.state, State::Error(e) if e.origin == origin)
                    && seen.insert(k.clone())
                {
                    stack.extend(t.dependents.iter().cloned());
                    reset.push(k);
                }
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
                if let Some(l) = limits {
                    let (timeout, memory, retries) = t.recipe.limits();
                    let new = (
                        l.timeout_ms.or(timeout),
                        l.memory_limit.or(memory),
                        l.retries.unwrap_or(retries),
                    );
                    if t.recipe.set_limits(new) {
                        // The journal records the task anew.
                        t.journaled = 0;
                    }
                }
                self.activity.set(k, t, State::Pending { waiting_on: 0 });
                t.retries_left = saturate(t.recipe.retries());
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

    fn scatter(
        &mut self,
        client: ClientId,
        id: u64,
        values: Vec<(String, Bytes)>,
        broadcast: bool,
        names: &[String],
        out: &mut Vec<Command>,
    ) {
        let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) else {
            return;
        };
        for (key, v) in &values {
            if let Err(message) = self.value_fits(&format!("scattered value {key}"), v.len()) {
                return out.push(Command::Failed {
                    client,
                    id,
                    message,
                });
            }
        }
        let mut targets: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(wid, w)| names.is_empty() || names.iter().any(|n| w.is(**wid, n)))
            .map(|(wid, _)| *wid)
            .collect();
        targets.sort();
        if targets.is_empty() {
            out.push(Command::Failed {
                client,
                id,
                message: if names.is_empty() {
                    "no workers are connected to scatter to".into()
                } else {
                    format!("no connected worker matches {}", names.join(", "))
                },
            });
            return;
        }
        let mut stores: HashMap<WorkerId, Vec<(String, Bytes)>> = HashMap::default();
        let mut pending: HashMap<WorkerId, usize> = HashMap::default();
        for (key, bytes) in values {
            if let Some(k) = self.tasks.key(&key) {
                // Same key, same bytes (keys hash the value): just hold it.
                let name = self.note_hold(&holder, k);
                let t = self.tasks.get_mut(&key).expect("present");
                t.holders.insert(&name);
                continue;
            }
            let chosen: Vec<WorkerId> = if broadcast {
                targets.clone()
            } else {
                self.scatter_rr = (self.scatter_rr + 1) % targets.len();
                vec![targets[self.scatter_rr]]
            };
            for w in &chosen {
                stores
                    .entry(*w)
                    .or_default()
                    .push((key.clone(), bytes.clone()));
            }
            self.seq += 1;
            let key: Key = Arc::from(key);
            let name = self.note_hold(&holder, key.clone());
            let task = Task {
                recipe: Recipe::scattered(&mut self.names),
                seq: self.seq,
                state: State::Processing {
                    worker: chosen[0],
                    started: false,
                    run: 0,
                },
                deps: Box::new([]),
                dependents: Dependents::default(),
                needed_by: 0,
                holders: Holders::one(name),
                watchers: ThinVec::new(),
                retries_left: 0,
                deaths: 0,
                stamps: activity::Stamps::at(self.activity.now_ms),
                journaled: 0,
                scatter: Some(Box::new((client, id))),
            };
            if let Some(w) = self.workers.get_mut(&chosen[0]) {
                w.take(&key, &[]);
            }
            self.add_task(key, task);
            for w in chosen {
                *pending.entry(w).or_default() += 1;
            }
        }
        if pending.is_empty() {
            out.push(Command::Scattered { client, id });
        } else {
            self.scatters.insert((client, id), pending);
        }
        let mut stores: Vec<_> = stores.into_iter().collect();
        stores.sort_by_key(|(w, _)| *w);
        for (worker, values) in stores {
            out.push(Command::Store { worker, values });
        }
    }

    /// Keys that named clients hold.
    pub fn held_keys(&self) -> u64 {
        self.holdings
            .iter()
            .filter(|(h, _)| {
                !self.ephemeral_holders.contains(&***h)
                    && !h.starts_with(primitives::STORED)
                    && &***h != FIRE_AND_FORGET
            })
            .map(|(_, keys)| keys.len() as u64)
            .sum()
    }

    /// Number of keys the scheduler tracks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

/// A count as a task keeps it (16 bits: more retries than that never end
/// anyway).
fn saturate(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn lost_error(key: &str) -> TaskError {
    TaskError {
        kind: ErrorKind::Lost,
        message: format!("the result of {key} was lost with the worker that held it"),
        stderr: String::new(),
        backtrace: String::new(),
        origin: key.to_string(),
    }
}
