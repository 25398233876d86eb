//! The scheduler's decisions as a plain state machine: inputs in, commands
//! out, no sockets, clocks or wasm.
//!
//! [`Scheduler::handle`] takes one [`Input`] (a submit, a finished task, a
//! worker joining or leaving…) and returns the [`Command`]s that follow from
//! it (run these tasks there, tell this client that key is done, free that
//! data). The tokio server (`dtask-runtime`'s `scheduler::server`) only moves frames to and from
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
mod blocked;
mod compact;
mod holdings;
mod inputs;
mod journal;
mod lifecycle;
mod load_index;
mod placement;
mod primitives;
mod queries;
mod ready;
mod releasing;
mod scatter;
mod stealing;
mod submission;
mod table;
mod workers;

pub use inputs::{Command, Input};
use load_index::{LoadIndex, LoadKey};
pub use releasing::STEP as RELEASE_STEP;
use workers::{Worker, Workers};

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
use compact::{Dependents, Holders, Interner, Keys, Recipe};
use primitives::{Owner, Primitives};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cmp::Reverse;
use std::sync::Arc;
use table::Tasks;
use thin_vec::ThinVec;

/// A task's key as the scheduler keeps it: one allocation, shared by the
/// task table and every index that names the task.
type Key = arcstr::ArcStr;

/// Identifies a client connection.
pub type ClientId = u64;
/// Identifies a worker connection.
pub type WorkerId = u64;

/// Keys, each with a reason (refused, or no worker could run it).
type KeyReasons = Vec<(String, String)>;

/// Tasks queued on a worker beyond its slots keep it busy between the
/// scheduler's refills: this many per execution slot while their
/// export's runs have no known duration.
pub(super) const QUEUED_PER_SLOT: usize = 32;

/// Once an export's runs have a known duration, its tasks queue on a
/// worker up to about this much work per slot: enough tiny tasks to cover
/// the scheduler's refill when the machine's cores are all busy (on two
/// cores a refill can wait a scheduling slice), and few long ones, so that
/// a task of higher priority submitted later waits little and an idle
/// worker finds little pinned elsewhere.
const QUEUED_WORK_S: f64 = 0.005;

/// The fewest tasks queued per slot, however long their runs.
const QUEUED_MIN: usize = 2;

/// The most tasks queued per slot, however short their runs.
pub(super) const QUEUED_MAX: usize = 128;

/// A task that was running on this many workers when they died is failed
/// instead of being tried on yet another (it is probably what kills them).
const MAX_WORKER_DEATHS: u32 = 3;

/// Times a task is placed again after a worker could not fetch an input
/// the scheduler has as finished, before the error is final.
const MAX_FETCH_MISSES: u8 = 3;

/// The pseudo-holder that keeps fire-and-forget keys alive until they end.
const FIRE_AND_FORGET: &str = "fire-and-forget";

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
    /// A small result itself (a plain box: 16 bytes where `Bytes` takes
    /// 32, on every held task).
    inline: Option<Box<[u8]>>,
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
    deps: ThinVec<Key>,
    /// Tasks that take this one's result (thin: most tasks have none).
    dependents: Dependents,
    /// Unfinished dependents that still need this result.
    needed_by: u32,
    /// Names of the clients holding this key.
    holders: Holders,
    /// Clients to tell when it ends (thin: empty once it has).
    watchers: ThinVec<Watcher>,
    /// Runs left after an error.
    retries_left: u16,
    /// Workers that died while running it.
    deaths: u16,
    /// Runs that ended for want of an input the scheduler has as
    /// finished (see `MAX_FETCH_MISSES`).
    fetch_misses: u8,
    /// When it was submitted, began and ended.
    stamps: activity::Stamps,
    /// Fingerprint of what the journal last recorded of it (0: nothing
    /// yet, so the next record carries its spec).
    journaled: u64,
    /// Whose turn it takes among ready tasks (the group of the client
    /// that submitted it: [`Client::group`]; 0 for data and for tasks
    /// restored from a journal).
    group: u32,
}

impl Task {
    /// Run afresh (retried, or submitted again): its retries, and its
    /// counts of worker deaths and input fetches missed, start again.
    fn start_over(&mut self) {
        self.retries_left = saturate(self.recipe.retries());
        self.deaths = 0;
        self.fetch_misses = 0;
    }

    /// Whether it is scattered data (whose recipe runs nothing: a module
    /// with no hash).
    fn is_scattered(&self) -> bool {
        self.recipe.func.module.is_empty()
    }

    /// Its place in the ready queue, as `key`.
    fn ready_entry(&self, key: Key) -> ready::Entry {
        ready::Entry {
            priority: self.recipe.priority(),
            seq: self.seq,
            group: self.group,
            key,
        }
    }

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

/// A client to tell when a key ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watcher {
    client: ClientId,
    /// Whether it reads the result: a finished one that is not inline is
    /// then held for the connection until it says it has read it
    /// ([`Input::DoneReading`]).
    reads: bool,
}

#[derive(Debug)]
struct Client {
    holder: Arc<str>,
    /// The holder name its reading watches hold results under
    /// ([`READER_PREFIX`]), once one has: unnamed, and let go of with the
    /// connection.
    reader: Option<Arc<str>>,
    /// An unnamed client's holds and leases end with its connection…
    ephemeral: bool,
    /// …or, if it gave a session and has not said it is leaving
    /// ([`Input::ClientLeaving`]), once the session has not come back for
    /// [`HOLDER_GRACE_MS`].
    session: bool,
    /// The turn its tasks take among ready tasks ([`ready::group_of`]).
    group: u32,
}

/// How long the holds and leases (locks, semaphores) of an unnamed
/// client's session wait for it to come back (a new connection under the
/// same session: a client reconnecting after a network blip) before they
/// end, unless the client said it was leaving. They are journaled: after a
/// scheduler restart, the session has the grace again to come back.
/// Longer than a client's default reconnect grace (30 s), so a client that
/// reconnects at all finds its futures still held.
pub const HOLDER_GRACE_MS: u64 = 60_000;

/// How the holder names of unnamed clients' sessions begin (client names
/// may not).
pub const SESSION_PREFIX: &str = "session-";

/// How the holder names begin under which connections hold the results
/// they were told of and have not read yet (client names may not).
pub const READER_PREFIX: &str = "reading-";

/// The scheduler's own prefix of holder names that `name` begins with, if
/// any: client names may not begin with one.
pub fn reserved_prefix(name: &str) -> Option<&'static str> {
    [SESSION_PREFIX, READER_PREFIX]
        .into_iter()
        .find(|p| name.starts_with(p))
}

/// The holder name of session `session`: a digest of it, since holder
/// names are shown (the dashboard, `dtask tasks`) and the number itself
/// is what lets a connection take the session's holds over.
fn session_holder(session: u64) -> String {
    let digest = blake3::hash(&session.to_le_bytes());
    format!("{SESSION_PREFIX}{}", &digest.to_hex()[..16])
}

/// The scheduler's whole decision state. See the module docs.
#[derive(Debug, Default)]
pub struct Scheduler {
    tasks: Tasks,
    /// Counts, the task stream and failures, kept as tasks change.
    activity: activity::Activity,
    workers: Workers,
    clients: HashMap<ClientId, Client>,
    /// Each holder's keys (see [`holdings`]).
    holdings: holdings::Holdings,
    /// Module hashes and function names, shared by the tasks using them.
    names: Interner,
    modules: HashSet<String>,
    /// Ready tasks: highest priority, then oldest, first.
    ready: ready::Ready,
    /// Ready tasks no connected worker could run (`no-worker`), with their
    /// place in `ready`: set aside until a worker joins, so they cost
    /// nothing while others are placed.
    no_worker: HashMap<Key, ready::Entry>,
    /// Ready tasks whose restrictions allow only workers that are full
    /// now, by kind: tried one per kind at each round of placement.
    blocked: blocked::Blocked,
    /// Times a ready task was tried against the workers: what a round of
    /// placement costs, for tests and diagnostics.
    placements_tried: u64,
    seq: u64,
    /// Scattered keys with the (client, request) to answer as they are
    /// stored; dropped with the key.
    scatter_requests: HashMap<Key, (ClientId, u64)>,
    /// Scatter requests still waiting for values to be stored.
    /// per worker the copies it has still to confirm.
    scatters: HashMap<(ClientId, u64), HashMap<WorkerId, usize>>,
    /// Placements ([`Input::Place`]) whose values their clients are still
    /// sending, by request: failed if the client gives up, or leaves
    /// without coming back to ask again, before they are stored.
    placements: HashMap<(ClientId, u64), scatter::Placement>,
    /// The placements of clients with a session, by (session,
    /// confirmation id): found again when asked again on a new
    /// connection.
    placement_sessions: HashMap<(u64, u64), (ClientId, u64)>,
    /// Scattered keys restored from the journal whose data no worker has
    /// reported yet; lost if none has once the rejoin window closes.
    unreported_scatters: HashSet<String>,
    /// Results restored from the journal that lived on workers (neither
    /// inline nor scattered) and that no worker has reported yet: while
    /// the rejoin settles ([`REJOIN_SETTLE_MS`]), computing them again is
    /// held off, since the worker holding them is most likely about to
    /// rejoin and report them.
    unreported_results: HashSet<String>,
    /// Of those, the ones asked for meanwhile: computed again once it
    /// settles, if no worker reported them.
    deferred: Vec<Key>,
    /// When the first worker joined since the restore (scheduler clock).
    rejoin_began_ms: Option<u64>,
    /// Next worker for round-robin scatter.
    scatter_rr: usize,
    /// Queues, variables, locks, semaphores, events and topics.
    prims: Primitives,
    /// Actors by key.
    actors: actors::Actors,
    /// The number of the latest making of an actor (see
    /// [`FromScheduler::NewActor`]'s `made`).
    actors_made: u64,
    /// Actors restored from the journal, by key: lost once the rejoin
    /// settles unless a worker said it holds them by then.
    unreported_actors: Vec<String>,
    /// Modules refused at upload, with the reason.
    refused_modules: HashMap<String, String>,
    /// Largest value accepted as an argument, scattered or stored.
    max_value: Option<usize>,
    /// Workers this scheduler's own process starts (a `dtask cluster`).
    own_workers: u64,
    /// Workers that joined, ever.
    workers_joined: u64,
    /// Counters.
    stats: crate::protocol::Stats,
    /// The counters as last journaled.
    journal_stats: crate::protocol::Stats,
    /// Modules stored since the journal last drained them; `None` without
    /// a journal.
    journal_modules: Option<Vec<String>>,
    /// Actors made or gone since the journal last drained them; `None`
    /// without a journal.
    journal_actors: Option<Vec<Record>>,
    /// Holder names of unnamed clients (their holds are not journaled).
    ephemeral_holders: HashSet<String>,
    /// Unnamed clients' sessions whose last connection closed, waiting for
    /// them to come back: the number of the time each went away (see
    /// [`Input::HolderGraceOver`]).
    away: HashMap<String, u64>,
    /// Unnamed clients' sessions whose holds or leases a restore brought
    /// back: each gets the grace to come back, from the first event after
    /// the restore.
    restored_sessions: Vec<String>,
    /// Times sessions went away, ever.
    went_away: u64,
    /// The scheduler clock when work stealing last looked at the workers.
    balanced_ms: Option<u64>,
    /// Whether it should look again at once (a heartbeat, an answer).
    balance_now: bool,
    /// Big releases, let go of a step at a time (see [`releasing`]).
    releasing: releasing::Releasing,
    /// Tasks found needing scattered data that is gone (released or lost
    /// with its worker), which nothing can compute again: failed at the
    /// end of the event, with the input that is gone.
    doomed: Vec<(Key, Key)>,
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

    /// Notes that the scheduler's own process starts `n` workers (a
    /// `dtask cluster`): until that many have joined, a submit that finds
    /// no worker connected is not told so, since they are on their way.
    pub fn with_own_workers(mut self, n: u32) -> Self {
        self.own_workers = n.into();
        self
    }

    /// Whether `bytes` of value fit; the refusal names the value (by
    /// `what`, called only then) and says what to do.
    fn value_fits(&self, what: impl FnOnce() -> String, bytes: usize) -> Result<(), String> {
        match self.max_value {
            Some(max) if bytes > max => Err(format!(
                "{} is {bytes} bytes, more than this scheduler accepts ({max} bytes); \
                 pass it as a file the task reads, or raise the scheduler's --max-value-size",
                what()
            )),
            _ => Ok(()),
        }
    }

    /// Reacts to one event; returns what to do about it.
    pub fn handle(&mut self, input: Input) -> Vec<Command> {
        let mut out = Vec::new();
        for holder in std::mem::take(&mut self.restored_sessions) {
            self.grace_begins(holder, &mut out);
        }
        match input {
            Input::ClientConnected {
                client,
                name,
                session,
            } => {
                let ephemeral = name.is_none();
                let holder = match name {
                    Some(name) => name,
                    None if session != 0 => session_holder(session),
                    None => format!("client-{client}"),
                };
                if ephemeral {
                    self.ephemeral_holders.insert(holder.clone());
                    // Back within its grace: what it held is still held.
                    self.away.remove(holder.as_str());
                }
                let holder = holder.into();
                self.clients.insert(
                    client,
                    Client {
                        holder,
                        reader: None,
                        ephemeral,
                        session: session != 0,
                        // A session is one process across its reconnects;
                        // a named client's connections may be many
                        // processes (every `dtask` command of a shell).
                        group: ready::group_of(if session != 0 { session } else { client }),
                    },
                );
            }
            Input::ClientDisconnected { client } => {
                self.primitives_client_gone(client, &mut out);
                self.placements_client_gone(client, &mut out);
                let gone = self.clients.remove(&client);
                if let Some(reader) = gone.as_ref().and_then(|c| c.reader.clone()) {
                    self.release_all(reader, true, &mut out);
                }
                if let Some(c) = gone
                    && c.ephemeral
                    // A connection of the same session made before this one
                    // closed goes on with its holds and leases.
                    && !self.connected(&c.holder)
                {
                    self.client_left(c, &mut out);
                }
            }
            Input::ClientLeaving { client } => {
                // Every connection of its session: one half-open since a
                // blip, closing last, must not start a grace either.
                if let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) {
                    for c in self.clients.values_mut() {
                        if c.holder == holder {
                            c.session = false;
                        }
                    }
                }
            }
            Input::HolderGraceOver { holder, away } => {
                if self.away.get(holder.as_str()) == Some(&away) {
                    self.away.remove(holder.as_str());
                    self.holder_ended(holder.into(), &mut out);
                }
            }
            Input::ModuleStored { hash } => {
                self.refused_modules.remove(&hash);
                if let Some(m) = &mut self.journal_modules
                    && !self.modules.contains(&hash)
                {
                    m.push(hash.clone());
                }
                self.modules.insert(hash);
            }
            Input::ModuleRefused { hash, reason } => {
                self.refused_modules.insert(hash, reason);
            }
            Input::Submit {
                client,
                id,
                tasks,
                counted,
                session,
            } => {
                let counted = counted && self.first_counted(session, id);
                let (refused, unplaceable) = self.submit(client, tasks, counted, &mut out);
                out.push(Command::Submitted {
                    client,
                    id,
                    refused,
                    unplaceable,
                });
            }
            Input::Watch {
                client,
                keys,
                reads,
            } => {
                let watcher = Watcher { client, reads };
                for key in keys {
                    if self
                        .tasks
                        .get(&key)
                        .is_some_and(|t| self.released_scatter(&key, t))
                    {
                        // Scattered data released (kept only as the input
                        // its dependents were computed from): nothing can
                        // bring it back, so it is unknown, as it would be
                        // without dependents.
                        out.push(Command::Done {
                            client,
                            key,
                            outcome: Outcome::Unknown,
                        });
                        continue;
                    }
                    match self.tasks.get_mut(&key) {
                        None => out.push(Command::Done {
                            client,
                            key,
                            outcome: Outcome::Unknown,
                        }),
                        // Dropped or lost with its worker, but still known:
                        // computed again for whoever asks.
                        Some(t) if matches!(t.state, State::Released) => {
                            t.watchers.push(watcher);
                            self.recompute(&key);
                        }
                        Some(t) if t.is_terminal() => {
                            let outcome = self.outcome(&key);
                            self.tell(watcher, key, outcome, &mut out);
                        }
                        Some(t) => t.watchers.push(watcher),
                    }
                }
            }
            Input::DoneReading { client, keys } => {
                if let Some(reader) = self.clients.get(&client).and_then(|c| c.reader.clone()) {
                    for key in keys {
                        self.unhold(&reader, &key, &mut out);
                    }
                }
            }
            Input::Release { client, keys } => {
                if let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) {
                    let release = releasing::Release {
                        holder,
                        left: releasing::Left::Named(keys),
                        ephemeral: false,
                    };
                    self.release(release, &mut out);
                }
            }
            Input::ReleaseAll { client } => {
                if let Some(holder) = self.clients.get(&client).map(|c| c.holder.clone()) {
                    self.release_all(holder, false, &mut out);
                }
            }
            Input::WorkerConnected {
                worker,
                nthreads,
                data_addr,
                name,
                resources,
                memory_limit,
                restarts,
            } => {
                self.workers_joined += 1;
                let unreported =
                    !self.unreported_results.is_empty() || !self.unreported_actors.is_empty();
                if unreported && self.rejoin_began_ms.is_none() {
                    self.rejoin_began_ms = Some(self.activity.now_ms);
                }
                // Tasks no worker could run may fit this one.
                self.ready.extend(self.no_worker.drain().map(|(_, e)| e));
                self.workers.insert(
                    worker,
                    Worker {
                        nthreads: nthreads.max(1),
                        data_addr,
                        name,
                        // An amount that is not a number of 0 or more
                        // would overbook, or never be offered again.
                        resources: resources
                            .into_iter()
                            .filter(|(_, amount)| amount.is_finite() && *amount >= 0.0)
                            .collect(),
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
                        instances: (0, 0),
                        heartbeat_ms: self.activity.now_ms,
                        runs_sent: 0,
                        starved: false,
                    },
                );
                self.balance_now = true;
            }
            Input::FireAndForget { keys } => {
                for key in keys {
                    if let Some(t) = self.tasks.get_mut(&key)
                        && !t.is_terminal()
                    {
                        t.holders.insert(&Arc::from(FIRE_AND_FORGET));
                    }
                }
            }
            Input::Cancel {
                client,
                keys,
                force,
            } => self.cancel(client, keys, force, &mut out),
            Input::Retry {
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
            Input::Scatter {
                client,
                id,
                values,
                broadcast,
                workers,
                counted,
                session,
            } => self.scatter(
                (client, session),
                id,
                values,
                (broadcast, counted),
                &workers,
                &mut out,
            ),
            Input::Place {
                client,
                id,
                confirm,
                values,
                broadcast,
                workers,
                counted,
                session,
            } => self.place_scatter(
                (client, session),
                (id, confirm),
                values,
                (broadcast, counted),
                &workers,
                &mut out,
            ),
            Input::PlacementGraceOver { client, confirm } => self.unplace(
                (client, confirm),
                "the client that scattered it left before it had sent it, and did not come \
                 back to ask again; scatter it again",
                &mut out,
            ),
            Input::Unplace {
                client,
                session,
                confirm,
                reason,
            } => {
                let req = self.placement_of(client, session, confirm);
                self.unplace(req, &reason, &mut out)
            }
            Input::WorkerDisconnected { worker } => self.worker_gone(worker, &mut out),
            Input::Finished { worker, results } => {
                for (key, located) in results {
                    self.finished(worker, key, located, &mut out);
                }
            }
            Input::Erred { worker, errors } => {
                for (key, sent_by, error) in errors {
                    let on_it = match self.tasks.get(&key).map(|t| &t.state) {
                        Some(State::Processing { worker: w, run, .. }) if *w == worker => {
                            // Of a run cancelled (or taken back) since, and
                            // sent here again: that run's outcome is still
                            // to come.
                            if *run != sent_by {
                                continue;
                            }
                            true
                        }
                        _ => false,
                    };
                    if !on_it {
                        // Another copy of broadcast data that this worker
                        // could not keep: its request fails all the same.
                        self.scatter_copy_refused(worker, &key, &error.message, &mut out);
                        continue;
                    }
                    self.began(worker, &key);
                    let t = self.tasks.get_mut(&key).expect("on a worker");
                    if let Some(mut w) = self.workers.get_mut(&worker) {
                        w.give_back(&key, &t.recipe.placement().resources);
                    }
                    self.owner_ended(&Owner::Task(key.clone()), &mut out);
                    let input_gone =
                        error.kind == ErrorKind::Lost && self.unfinished_inputs(&key) > 0;
                    let t = self.tasks.get_mut(&key).expect("on a worker");
                    // An input it could not fetch though it is finished
                    // here: its holder died and the news is not here yet,
                    // or it moved since the task was sent. Placed again
                    // with the inputs' places as they are now, a few times.
                    let fetch_missed = error.kind == ErrorKind::Lost
                        && !input_gone
                        && !t.deps.is_empty()
                        && t.fetch_misses < MAX_FETCH_MISSES;
                    if input_gone {
                        // Its input died with a worker and is being computed
                        // again: run it once that is back.
                        self.activity.set(&key, t, State::Pending { waiting_on: 0 });
                        self.requeue(&key);
                    } else if fetch_missed {
                        t.fetch_misses += 1;
                        self.activity.set(&key, t, State::Pending { waiting_on: 0 });
                        self.stats.reruns += 1;
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
                        // request fails with the reason (after the key, which
                        // keeps its own error rather than the request's).
                        let req = self.scatter_requests.get(&*key).copied();
                        let why = error.message.clone();
                        self.fail(&key, error, &mut out);
                        if let Some(req) = req {
                            self.fail_scatter(req, why, &mut out);
                        }
                    }
                }
            }
            Input::Seceded { worker, key } => {
                if let Some(mut w) = self.workers.get_mut(&worker)
                    && let Some(k) = w.processing.get(key.as_str()).cloned()
                {
                    w.seceded.insert(k);
                }
            }
            Input::Stolen { worker, keys } => self.stolen(worker, keys, &mut out),
            Input::WorkerStarved { worker, starved } => {
                if let Some(mut w) = self.workers.get_mut(&worker) {
                    w.starved = starved;
                }
                // Its queued tasks may go to a worker that can begin them.
                self.balance_now = true;
            }
            Input::Started { worker, keys } => {
                if let Some(mut w) = self.workers.get_mut(&worker) {
                    for key in &keys {
                        w.queued.remove(key.as_str());
                    }
                    w.began_ms = self.activity.now_ms;
                }
                for key in keys {
                    self.began(worker, &key);
                }
            }
            Input::Rejoined { worker, key } => {
                if let Some(mut w) = self.workers.get_mut(&worker) {
                    w.seceded.remove(key.as_str());
                }
            }
            Input::Primitive {
                client,
                id,
                session,
                task,
                op,
            } => self.primitive(client, (id, session), task, op, &mut out),
            Input::Publish { topic, message } => self.publish(&topic, message, &mut out),
            Input::RejoinWindowClosed => {
                self.rejoin_settled(&mut out);
                self.rejoin_window_closed(&mut out)
            }
            Input::PrimitiveTimeout { client, id } => {
                self.primitive_timed_out(client, id, &mut out)
            }
            Input::ActorNew { client, id, spec } => self.actor_new(client, id, spec, &mut out),
            Input::ActorStarted {
                worker,
                key,
                made,
                outcome,
            } => self.actor_started(worker, &key, made, outcome, &mut out),
            Input::ActorLocate { client, id, key } => {
                self.actor_locate_for(client, id, &key, &mut out)
            }
            Input::ActorDelete { key } => self.actor_delete(&key, &mut out),
            Input::ActorBroken { worker, key, made } => self.actor_broken(worker, &key, made),
            Input::WorkerHeartbeat {
                worker,
                spilled,
                held,
                rss,
                fetched,
                instances,
                run_seq,
                running,
            } => {
                if let Some(mut w) = self.workers.get_mut(&worker) {
                    w.spilled = spilled;
                    w.held = held;
                    w.rss = rss;
                    w.fetched = fetched;
                    w.instances = instances;
                    w.heartbeat_ms = self.activity.now_ms;
                }
                self.reconcile(worker, run_seq, &running, &mut out);
                self.balance_now = true;
            }
            Input::WorkerHolds {
                worker,
                results,
                actors,
            } => {
                for (key, at) in results {
                    self.adopt_result(worker, &key, at, &mut out);
                }
                self.actors_held(worker, actors, &mut out);
            }
            Input::WorkerDropped { worker, keys } => self.copies_dropped(worker, keys, &mut out),
        }
        for (key, gone) in std::mem::take(&mut self.doomed) {
            if matches!(
                self.tasks.get(&key).map(|t| &t.state),
                Some(State::Pending { .. })
            ) {
                self.fail(&key, lost_error(&gone), &mut out);
            }
        }
        if self
            .rejoin_began_ms
            .is_some_and(|t| self.activity.now_ms >= t + REJOIN_SETTLE_MS)
        {
            self.rejoin_settled(&mut out);
        }
        self.schedule(&mut out);
        self.balance(&mut out);
        out
    }
}

/// How long after the first worker joins a restored scheduler the results
/// that lived on workers wait to be reported before they are computed
/// again: workers that outlived the scheduler rejoin within a few of their
/// 100 ms retries, each reporting what it holds as it joins.
pub const REJOIN_SETTLE_MS: u64 = 1_000;

/// A count as a task keeps it (16 bits: more retries than that never end
/// anyway).
fn saturate(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn lost_error(key: &str) -> TaskError {
    TaskError {
        kind: ErrorKind::Lost,
        message: format!(
            "the scattered data {key} is lost: no worker holds it any more (the one that held \
             it died, or could not read it back from its spill file); scatter it again"
        ),
        stderr: String::new(),
        backtrace: String::new(),
        origin: key.to_string(),
    }
}
