//! Messages from the scheduler, to clients and workers.

use super::*;
use std::sync::Arc;

/// One dependency value as the scheduler tells a worker where to find it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum RunArg {
    /// A literal argument.
    Value(#[serde(with = "crate::blob")] Bytes),
    /// The result of another task.
    Dep {
        /// Its key.
        key: String,
        /// Where it is.
        at: Located,
    },
}

/// A task as a worker receives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunTask {
    /// The key to store the result under.
    pub key: String,
    /// The module whose export runs (shared: the scheduler hands out its
    /// one copy to every task it sends).
    pub module: Arc<str>,
    /// The export to call (shared likewise).
    pub function: Arc<str>,
    /// Arguments with their dependency locations.
    pub args: Vec<RunArg>,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit in bytes (at most the worker's).
    pub memory_limit: Option<u64>,
    /// Access beyond the sandbox it is granted.
    pub grants: Grants,
    /// Its priority; subtasks it submits default to one more.
    pub priority: i32,
}

/// Messages from the scheduler to clients and workers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromScheduler {
    // ---- to clients ----
    /// Answer to [`ToScheduler::HasModules`]: the ones to upload.
    MissingModules {
        /// Request id.
        id: u64,
        /// Hashes the scheduler does not have.
        hashes: Vec<ModuleHash>,
    },
    /// Answer to [`ToScheduler::Submit`].
    Submitted {
        /// Request id.
        id: u64,
        /// Tasks refused, with the reason (unknown dependency, unknown
        /// module, …). Accepted tasks are not listed.
        refused: Vec<(String, String)>,
        /// Accepted tasks with `--workers`, `--resources` or a memory limit
        /// that no connected worker could run, with why: one task per
        /// distinct reason. They wait, `no-worker`, until one joins.
        unplaceable: Vec<(String, String)>,
    },
    /// A watched key ended.
    Done {
        /// The key.
        key: String,
        /// How.
        outcome: Outcome,
    },
    /// Answer to [`ToScheduler::Status`].
    Status {
        /// Request id.
        id: u64,
        /// State of each key, `None` when unknown.
        states: Vec<(String, Option<TaskState>)>,
        /// For keys in [`TaskState::NoWorker`], why no worker can run them.
        reasons: Vec<(String, String)>,
        /// Timings of the known keys, when asked for.
        timings: Vec<(String, TaskTimings)>,
    },
    /// Answer to [`ToScheduler::Retry`].
    Retried {
        /// Request id.
        id: u64,
        /// Keys that could not be retried, with the reason.
        refused: Vec<(String, String)>,
    },
    /// Answer to [`ToScheduler::Scatter`]: every value is stored.
    Scattered {
        /// Request id.
        id: u64,
    },
    /// Answer to [`ToScheduler::Place`]: where to send each value (data
    /// addresses of the workers to put it on). Keys already held appear
    /// with no address: nothing to send.
    Placed {
        /// Request id.
        id: u64,
        /// (key, data addresses).
        puts: Vec<(String, Vec<String>)>,
        /// The placement a first copy of this request was given, still
        /// waiting for its values (asked again after a broken
        /// connection): a copy already sent need not be sent again. Else a
        /// placement made afresh, where every copy listed is to be sent.
        again: bool,
    },
    /// Answer to [`ToScheduler::WhoHas`].
    WhoHas {
        /// Request id.
        id: u64,
        /// (key, data addresses of the workers holding it).
        holders: Vec<(String, Vec<String>)>,
    },
    /// Answer to [`ToScheduler::HasWhat`].
    HasWhat {
        /// Request id.
        id: u64,
        /// (worker data address, keys it holds).
        holdings: Vec<(String, Vec<String>)>,
    },
    /// Answer to [`ToScheduler::Stats`].
    Stats {
        /// Request id.
        id: u64,
        /// The counters.
        stats: Stats,
        /// Memory, held keys and the journal.
        health: Health,
    },
    /// Answer to [`ToScheduler::ListTasks`].
    TaskList {
        /// Request id.
        id: u64,
        /// (key, state, function), in submission order.
        tasks: Vec<(String, TaskState, String)>,
        /// How many tasks matched, listed or not.
        matched: u64,
    },
    /// Answer to [`ToScheduler::DashboardLogin`].
    DashboardLogin {
        /// Request id.
        id: u64,
        /// The dashboard's address (`HOST:PORT`) and a one-time code, or
        /// why there is none (the dashboard is off).
        login: Result<(String, String), String>,
    },
    /// Answer to [`ToScheduler::Workers`].
    Workers {
        /// Request id.
        id: u64,
        /// Every connected worker.
        workers: Vec<WorkerInfo>,
    },
    /// Answer to [`ToScheduler::Primitive`].
    Primitive {
        /// Request id.
        id: u64,
        /// The outcome.
        reply: OpReply,
    },
    /// Answer to [`ToScheduler::ActorNew`].
    ActorCreated {
        /// Request id.
        id: u64,
        /// Where it lives, or why it could not be constructed.
        result: Result<ActorInfo, TaskError>,
    },
    /// Answer to [`ToScheduler::ActorLocate`].
    ActorLocated {
        /// Request id.
        id: u64,
        /// Where it lives, or why it cannot be called: kind
        /// [`ErrorKind::ActorLost`] when its worker died, [`ErrorKind::Input`]
        /// when there is no such actor.
        result: Result<ActorInfo, TaskError>,
    },
    /// Answer to [`ToScheduler::Actors`].
    Actors {
        /// Request id.
        id: u64,
        /// Every actor the scheduler knows.
        actors: Vec<ActorInfo>,
    },
    /// To a worker: construct this actor, then report
    /// [`ToScheduler::ActorReady`] or [`ToScheduler::ActorFailed`].
    NewActor {
        /// What to construct.
        spec: ActorSpec,
        /// Which making of the actor this is: a number no other making of
        /// any actor had, reported back with it ([`ToScheduler::ActorReady`],
        /// [`ToScheduler::Holding`]), so an older copy of the same key is
        /// told apart.
        made: u64,
    },
    /// To a worker: drop this actor (the copy of that making: a newer one
    /// made there since stays).
    DropActor {
        /// Its key.
        key: String,
        /// Which making (as [`FromScheduler::NewActor`] numbered it).
        made: u64,
    },
    /// A message published on a subscribed topic.
    Message {
        /// The subscription (its subscribe request's id).
        subscription: u64,
        /// MessagePack value.
        #[serde(with = "crate::blob")]
        message: Bytes,
    },
    /// A request could not be served at all.
    Failed {
        /// Request id.
        id: u64,
        /// Why.
        message: String,
    },
    /// Answer to [`ToScheduler::Ping`]: the scheduler is there, and its
    /// loop turns.
    Pong,

    // ---- to workers ----
    /// Run these tasks.
    Run {
        /// This connection's count of `Run` messages so far (1, 2, …): a
        /// worker reports the last it got in its heartbeats.
        seq: u64,
        /// Tasks, highest priority first.
        tasks: Vec<RunTask>,
    },
    /// Every `Run` up to `seq` has been sent on this connection: one the
    /// worker has not got by now never will be. The worker counts them as
    /// received (its next heartbeat reports `run_seq` at least `seq`), so
    /// the scheduler knows exactly which tasks were lost, with no timing
    /// rule.
    Sync {
        /// The scheduler's count of `Run` messages to this worker.
        seq: u64,
    },
    /// Drop these results.
    Free {
        /// Keys.
        keys: Vec<String>,
    },
    /// The bytes of a module a worker asked for.
    Module {
        /// Its hash.
        hash: ModuleHash,
        /// Its bytes, or `None` if the scheduler does not have it.
        #[serde(with = "crate::blob::opt")]
        bytes: Option<Bytes>,
    },
    /// Hold these values as finished results (scattered data), then
    /// report them as [`ToScheduler::Finished`].
    Store {
        /// (key, encoded value).
        #[serde(with = "crate::blob::pairs")]
        values: Vec<(String, Bytes)>,
    },
    /// Stop running these tasks (cancelled); report nothing for them.
    Cancel {
        /// Keys.
        keys: Vec<String>,
    },
    /// Give back those of these tasks that have not begun (another worker
    /// idles); answered by [`ToScheduler::Stolen`].
    Steal {
        /// Keys.
        keys: Vec<String>,
    },
    /// Exit now.
    Shutdown,
}

impl FromScheduler {
    /// The id of the request this answers, for an answer to one.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            FromScheduler::MissingModules { id, .. }
            | FromScheduler::Submitted { id, .. }
            | FromScheduler::Status { id, .. }
            | FromScheduler::Retried { id, .. }
            | FromScheduler::Scattered { id }
            | FromScheduler::Placed { id, .. }
            | FromScheduler::WhoHas { id, .. }
            | FromScheduler::Workers { id, .. }
            | FromScheduler::Stats { id, .. }
            | FromScheduler::DashboardLogin { id, .. }
            | FromScheduler::TaskList { id, .. }
            | FromScheduler::HasWhat { id, .. }
            | FromScheduler::Primitive { id, .. }
            | FromScheduler::ActorCreated { id, .. }
            | FromScheduler::ActorLocated { id, .. }
            | FromScheduler::Actors { id, .. }
            | FromScheduler::Failed { id, .. } => Some(*id),
            _ => None,
        }
    }
}
