//! The wire protocol: every message that crosses a socket between clients,
//! the scheduler and workers, with its meaning.
//!
//! A connection carries length-delimited frames (see `dtask_runtime::connection`);
//! each frame is a postcard-encoded `Vec` of one direction's message enum, so a
//! burst of messages (a `map` of 100k tasks, a worker's finished batch) costs a
//! handful of writes. Every connection opens with [`Hello`] and an answer of
//! [`Welcome`] before any other frame. Values and arguments travel as
//! MessagePack bytes (`dtask_runtime::value`) that the scheduler never decodes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of this protocol. A peer with another version is refused at the
/// handshake with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 10;

/// Results at most this large travel with the worker's completion report and
/// are kept by the scheduler too, so gathering them needs no worker round
/// trip. Larger ones stay on the worker that made them and move directly
/// between workers (or to the client) when needed.
pub const INLINE_RESULT_LIMIT: usize = 1024;

/// How often a worker tells the scheduler it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Hex BLAKE3 of a module's bytes.
pub type ModuleHash = String;

/// The first message on every connection, from the side that connected.
/// Its `Debug` leaves the token out, so no log can show it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the connecting side.
    pub version: u32,
    /// The credential: the client token for [`Role::Client`], the worker
    /// token for [`Role::Worker`] and [`Role::Tasks`], either for
    /// [`Role::Peer`] (see [`crate::secret`]).
    pub token: String,
    /// Who is connecting.
    pub role: Role,
}

/// What a connecting peer is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Role {
    /// A client: the CLI, a Rust program, or later a task acting as one.
    Client {
        /// Name under which the client's keys are held. A named client keeps
        /// its keys after it disconnects (the CLI's `DTASK_CLIENT`); an
        /// unnamed one (`None`) releases them when its connection closes.
        name: Option<String>,
    },
    /// A worker process registering with the scheduler.
    Worker {
        /// Execution slots.
        nthreads: u32,
        /// Address at which the worker serves its results to peers.
        data_addr: String,
        /// Human-readable name (host and pid).
        name: String,
        /// Abstract resources it offers, e.g. `("GPU", 2.0)`.
        resources: Vec<(String, f64)>,
        /// The largest memory one task may use there, in bytes: tasks
        /// asking for more are placed elsewhere.
        memory_limit: u64,
        /// How many times the process supervising it (`dtask cluster`'s
        /// nanny) has started a worker in its place after one died.
        restarts: u32,
    },
    /// A worker or client fetching results from a worker's data port.
    Peer,
    /// A worker's connection for the tasks it runs acting as a client
    /// (`get_client` inside a task): an unnamed client that presents the
    /// worker token and may not shut the cluster down.
    Tasks,
}

/// The answer to [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted; the rest of the connection follows.
    Accepted {
        /// Identifier the scheduler gave this connection (a worker's id).
        id: u64,
        /// For a worker: the digest of the client token
        /// ([`crate::secret::digest`]), so that its data port can admit
        /// clients without knowing their token.
        client_digest: Option<[u8; 32]>,
    },
    /// Refused, with the reason to show the user.
    Refused(String),
}

/// An argument of a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Arg {
    /// A MessagePack-encoded value.
    Value(#[serde(with = "crate::blob")] Bytes),
    /// The result of another task, once it has finished.
    Future(String),
}

/// Everything the scheduler needs to run a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    /// The name of the task's future.
    pub key: String,
    /// The module whose export runs.
    pub module: ModuleHash,
    /// The export to call.
    pub function: String,
    /// Arguments, in parameter order.
    pub args: Vec<Arg>,
    /// Larger runs earlier; ties run in submission order.
    pub priority: i32,
    /// Wall-clock limit for one run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one run, in bytes (at most the worker's).
    pub memory_limit: Option<u64>,
    /// Access beyond the sandbox it is granted.
    pub grants: Grants,
    /// Where and with what it may run.
    pub placement: Placement,
    /// Runs again up to this many times after it errs (not after a worker
    /// dies).
    pub retries: u32,
}

/// Access a task is granted beyond its sandbox, which otherwise has no
/// filesystem, network or environment. Its `Debug` shows the variables'
/// names, not their values (often secrets).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Grants {
    /// Environment variables it sees.
    pub env: Vec<(String, String)>,
    /// Host directories it may read (at the same path), each within one a
    /// worker allows (`dtask worker --allow-dir`).
    pub dirs: Vec<String>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(n, _)| format!("{n}=…")).collect();
        f.debug_struct("Grants")
            .field("env", &env)
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("token", &"…")
            .field("role", &self.role)
            .finish()
    }
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.dirs.is_empty()
    }
}

/// Constraints on where a task runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Placement {
    /// Only on these workers (by name, data address or id); empty: any.
    pub workers: Vec<String>,
    /// With `workers`: prefer them, but run elsewhere when none of them
    /// can take it.
    pub allow_other_workers: bool,
    /// Abstract resources one run holds, e.g. `("GPU", 1.0)`; only workers
    /// declaring enough of each can run it.
    pub resources: Vec<(String, f64)>,
}

/// How a task failed: the error every dependent inherits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskError {
    /// Broad class of the failure.
    pub kind: ErrorKind,
    /// One line for `dtask: error: …`.
    pub message: String,
    /// What the guest wrote to stderr before failing, if anything.
    pub stderr: String,
    /// The wasm backtrace, one frame per line, if there is one.
    pub backtrace: String,
    /// The key of the task where the error first happened.
    pub origin: String,
}

impl TaskError {
    /// An error of `kind` with `message`, raised by `origin` itself (no
    /// guest stderr or backtrace).
    pub fn new(kind: ErrorKind, message: String, origin: &str) -> Self {
        Self {
            kind,
            message,
            stderr: String::new(),
            backtrace: String::new(),
            origin: origin.to_string(),
        }
    }
}

/// Broad classes of task failure.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    /// The guest panicked (it wrote a panic message, then trapped).
    Panic,
    /// The guest trapped (unreachable, out-of-bounds access, …).
    Trap,
    /// The task ran past its time limit or was interrupted.
    Timeout,
    /// Arguments did not fit the export's parameters.
    Input,
    /// The module or export could not be loaded.
    Module,
    /// The result could not be computed again after the data was lost.
    Lost,
    /// Anything else the worker could not do.
    Internal,
    /// A WASI command exited with a non-zero status (in the message).
    Exit,
    /// The task tried to grow its memory past its limit.
    Memory,
    /// The task overflowed its stack (unbounded recursion).
    Stack,
    /// The actor called is gone (its worker died, or it was deleted).
    ActorLost,
}

impl ErrorKind {
    /// Lower-case name, as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Panic => "panic",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Input => "input",
            ErrorKind::Module => "module",
            ErrorKind::Lost => "lost",
            ErrorKind::Internal => "internal",
            ErrorKind::Exit => "exit",
            ErrorKind::Memory => "memory",
            ErrorKind::Stack => "stack",
            ErrorKind::ActorLost => "actor lost",
        }
    }
}

/// The state of a future, as `dtask status` prints it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for dependencies or an execution slot.
    Pending,
    /// Ready, but no connected worker can ever run it (its `--workers`,
    /// `--resources` or memory limit rule them all out); it runs as soon
    /// as a worker that can joins.
    NoWorker,
    /// Running (or queued) on a worker.
    Processing,
    /// Done; the result is held somewhere.
    Finished,
    /// Failed; see its [`TaskError`].
    Error,
    /// Cancelled before it finished.
    Cancelled,
    /// Its result was lost and cannot be recomputed.
    Lost,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::NoWorker,
        TaskState::Processing,
        TaskState::Finished,
        TaskState::Error,
        TaskState::Cancelled,
        TaskState::Lost,
    ];

    /// The state [`TaskState::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Lower-case name, as `dtask status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::NoWorker => "no-worker",
            TaskState::Processing => "processing",
            TaskState::Finished => "finished",
            TaskState::Error => "error",
            TaskState::Cancelled => "cancelled",
            TaskState::Lost => "lost",
        }
    }
}

/// Where a finished result can be had.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Located {
    /// The value itself when it is small ([`INLINE_RESULT_LIMIT`]).
    pub inline: Option<Bytes>,
    /// Data addresses of the workers holding it.
    pub who_has: Vec<String>,
    /// Size of the encoded value.
    pub nbytes: u64,
}

/// How a watched key ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Outcome {
    /// Finished; its result is here or there.
    Finished(Located),
    /// Failed.
    Error(TaskError),
    /// Cancelled.
    Cancelled,
    /// The scheduler does not know the key (never submitted, or released).
    Unknown,
}

/// Messages to the scheduler from clients and workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToScheduler {
    // ---- from clients ----
    /// Which of these modules the scheduler lacks; answered by
    /// [`FromScheduler::MissingModules`].
    HasModules {
        /// Request id echoed in the answer.
        id: u64,
        /// Module hashes.
        hashes: Vec<ModuleHash>,
    },
    /// Store a module. The scheduler checks the hash.
    UploadModule {
        /// Hex BLAKE3 of `bytes`.
        hash: ModuleHash,
        /// The module.
        #[serde(with = "crate::blob")]
        bytes: Bytes,
    },
    /// Submit tasks, held for this client. Answered by
    /// [`FromScheduler::Submitted`].
    Submit {
        /// Request id echoed in the answer.
        id: u64,
        /// Tasks in submission order; dependencies first.
        tasks: Vec<TaskSpec>,
    },
    /// Report each key's outcome once it ends ([`FromScheduler::Done`]).
    Watch {
        /// Keys to watch.
        keys: Vec<String>,
    },
    /// Current states of keys; answered by [`FromScheduler::Status`].
    Status {
        /// Request id echoed in the answer.
        id: u64,
        /// Keys to look up.
        keys: Vec<String>,
        /// Whether to answer with their timings too.
        timings: bool,
    },
    /// Stop holding these keys for this client.
    Release {
        /// Keys to release.
        keys: Vec<String>,
    },
    /// Stop the scheduler and its workers.
    Shutdown,
    /// Compute these keys even though nobody holds them, then forget
    /// them.
    FireAndForget {
        /// Keys to keep until they end.
        keys: Vec<String>,
    },
    /// Cancel keys: pending and running ones (and their dependents) become
    /// `cancelled`, running ones are interrupted. Without `force`, keys that
    /// other clients also hold are only released for this client.
    Cancel {
        /// Keys to cancel.
        keys: Vec<String>,
        /// Cancel even if other clients hold them.
        force: bool,
    },
    /// Run erred keys again, from the tasks where their errors started.
    /// Answered by [`FromScheduler::Retried`].
    Retry {
        /// Request id.
        id: u64,
        /// Erred keys.
        keys: Vec<String>,
        /// New limits for the keys' runs; unset ones stay as submitted.
        limits: TaskLimits,
    },
    /// Store values on workers as finished futures held by this client.
    /// Answered by [`FromScheduler::Scattered`] once every value is stored.
    Scatter {
        /// Request id.
        id: u64,
        /// (key, MessagePack value) pairs, placed round-robin.
        #[serde(with = "crate::blob::pairs")]
        values: Vec<(String, Bytes)>,
        /// Put a copy on every worker.
        broadcast: bool,
        /// Only on these workers (by name, address or id); empty: any.
        workers: Vec<String>,
    },
    /// Where keys are held; answered by [`FromScheduler::WhoHas`].
    WhoHas {
        /// Request id.
        id: u64,
        /// Keys.
        keys: Vec<String>,
    },
    /// The keys each worker holds; answered by [`FromScheduler::HasWhat`].
    HasWhat {
        /// Request id.
        id: u64,
    },
    /// The connected workers; answered by [`FromScheduler::Workers`].
    Workers {
        /// Request id.
        id: u64,
    },
    /// Known tasks, newest first up to `limit`; answered by
    /// [`FromScheduler::TaskList`].
    ListTasks {
        /// Request id.
        id: u64,
        /// Only tasks in this state.
        state: Option<TaskState>,
        /// Only tasks of this function.
        function: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// A one-time login link to the dashboard; answered by
    /// [`FromScheduler::DashboardLogin`].
    DashboardLogin {
        /// Request id.
        id: u64,
    },
    /// Counters; answered by [`FromScheduler::Stats`].
    Stats {
        /// Request id.
        id: u64,
    },

    // ---- from workers ----
    /// Tasks that finished on the sending worker.
    Finished {
        /// (key, where and how big).
        results: Vec<(String, Located)>,
    },
    /// Tasks that failed on the sending worker.
    Erred {
        /// (key, error).
        errors: Vec<(String, TaskError)>,
    },
    /// A worker asks for a module's bytes.
    FetchModule {
        /// The module.
        hash: ModuleHash,
    },
    /// A task on the sending worker gave its execution slot back while it
    /// waits (in a blocking host call, or after `secede`): it no longer
    /// counts against the worker's capacity.
    Seceded {
        /// The task.
        key: String,
    },
    /// A worker that (re)joined holds these results (after a scheduler
    /// restart: finished work it can still serve).
    Holding {
        /// (key, where and how big).
        results: Vec<(String, Located)>,
    },
    /// A worker is alive (sent every [`HEARTBEAT`]); a worker silent for
    /// the scheduler's worker timeout is treated as dead.
    Heartbeat {
        /// The id the scheduler gave this worker: a heartbeat taken before a
        /// rejoin is ignored by the scheduler it reaches.
        worker: u64,
        /// The `seq` of the last `Run` it got, or of a later `Sync`.
        run_seq: u64,
        /// Every task it has in hand (running or queued for a slot), as of
        /// `run_seq`: the scheduler sends again what it assigned and the
        /// worker never got.
        running: Vec<String>,
        /// Bytes of results it has spilled to disk.
        spilled_bytes: u64,
        /// Bytes of results it holds, in memory and spilled.
        held_bytes: u64,
        /// The worker's resident memory, in bytes (0 where unknown).
        rss_bytes: u64,
        /// Inputs it fetched from other workers since it started.
        fetched: u64,
        /// Bytes of those.
        fetched_bytes: u64,
    },
    /// A seceded task took an execution slot again.
    Rejoined {
        /// The task.
        key: String,
    },

    // ---- coordination primitives, from clients (and tasks through them) ----
    /// An operation on a queue, variable, lock, semaphore, event or
    /// subscription. Answered by [`FromScheduler::Primitive`].
    Primitive {
        /// Request id echoed in the answer; for [`Op::Subscribe`], the
        /// subscription's id in [`FromScheduler::Message`]s too.
        id: u64,
        /// The running task this is on behalf of: leases it takes end when
        /// that task ends. `None`: the client itself (named clients keep
        /// their leases after they disconnect).
        task: Option<String>,
        /// The operation.
        op: Op,
    },
    /// Sends a message to every current subscriber of `topic`; no answer.
    Publish {
        /// The topic.
        topic: String,
        /// MessagePack value.
        #[serde(with = "crate::blob")]
        message: Bytes,
    },

    // ---- actors ----
    /// Construct an actor on a worker; answered by
    /// [`FromScheduler::ActorCreated`] once it is constructed (or failed).
    ActorNew {
        /// Request id.
        id: u64,
        /// What to construct.
        spec: ActorSpec,
    },
    /// Where an actor lives; answered by [`FromScheduler::ActorLocated`].
    ActorLocate {
        /// Request id.
        id: u64,
        /// The actor's key.
        key: String,
    },
    /// Delete an actor; no answer.
    ActorDelete {
        /// The actor's key.
        key: String,
    },
    /// Every actor; answered by [`FromScheduler::Actors`].
    Actors {
        /// Request id.
        id: u64,
    },
    /// From a worker: an actor it was asked to construct is ready.
    ActorReady {
        /// The actor's key.
        key: String,
    },
    /// From a worker: an actor's constructor failed.
    ActorFailed {
        /// The actor's key.
        key: String,
        /// Why.
        error: TaskError,
    },
    /// Stop holding every key this client's name holds (`dtask release
    /// --all`).
    ReleaseAll,
    /// From a worker: these tasks took an execution slot and began running.
    /// Only a task that had begun counts as a suspect when its worker dies;
    /// the ones still queued behind it are simply placed again.
    Started {
        /// The tasks.
        keys: Vec<String>,
    },
    /// From a worker, answering [`FromScheduler::Steal`]: the tasks it gave
    /// back (dropped, never begun); the others asked for had begun.
    Stolen {
        /// The tasks given back.
        keys: Vec<String>,
    },
    /// From a worker: a call trapped in an actor, whose instance takes no
    /// more calls.
    ActorBroken {
        /// The actor's key.
        key: String,
    },
}

/// An actor to construct: an instance of a resource a component exports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActorSpec {
    /// The actor's key.
    pub key: String,
    /// The module exporting the resource.
    pub module: ModuleHash,
    /// The resource's name.
    pub resource: String,
    /// Constructor arguments, MessagePack values.
    #[serde(with = "crate::blob::list")]
    pub args: Vec<Bytes>,
    /// Memory limit of this actor's instance, in bytes (at most the
    /// worker's).
    pub memory_limit: Option<u64>,
}

/// Where an actor lives and how it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActorInfo {
    /// The actor's key.
    pub key: String,
    /// Its resource's name.
    pub resource: String,
    /// Its module.
    pub module: ModuleHash,
    /// Data address of the worker holding it (where calls go).
    pub address: String,
    /// Whether it is up.
    pub state: ActorState,
}

/// The life of an actor.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ActorState {
    /// Its constructor is running.
    Starting,
    /// Taking calls.
    Ready,
    /// Its worker died; every call fails.
    Lost,
    /// A call trapped; its instance takes no more calls.
    Broken,
}

impl ActorState {
    /// Lower-case name, as `dtask actor list` prints it.
    pub fn name(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Ready => "ready",
            ActorState::Lost => "lost",
            ActorState::Broken => "broken",
        }
    }
}

/// An argument of an actor method call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CallArg {
    /// A MessagePack value.
    Value(#[serde(with = "crate::blob")] Bytes),
    /// A word from the command line, read by the parameter's WIT type on
    /// the worker (which knows the method's types), like task arguments.
    Word(String),
}

/// An operation on a coordination primitive. Names are global; a primitive
/// springs into existence on first use. Every operation that can wait takes
/// `timeout_ms` (`None`: for ever; `Some(0)`: do not wait at all).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Op {
    /// Appends an item, waiting while the queue is full.
    QueuePut {
        /// Queue name.
        name: String,
        /// A value or a future (which stays alive while queued).
        item: Arg,
        /// Bound on the queue's length (0: none), when this creates it.
        maxsize: Option<u64>,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Takes the oldest item, waiting while the queue is empty.
    QueueGet {
        /// Queue name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// How many items the queue holds.
    QueueLen {
        /// Queue name.
        name: String,
    },
    /// Sets a variable.
    VarSet {
        /// Variable name.
        name: String,
        /// A value or a future (which stays alive while stored).
        item: Arg,
    },
    /// A variable's item, waiting until it is set.
    VarGet {
        /// Variable name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Deletes a variable.
    VarDel {
        /// Variable name.
        name: String,
    },
    /// Takes a lock, waiting while another holds it.
    LockAcquire {
        /// Lock name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Gives a lock back.
    LockRelease {
        /// Lock name.
        name: String,
    },
    /// Takes one lease of a semaphore, waiting while all are taken.
    SemAcquire {
        /// Semaphore name.
        name: String,
        /// Its number of leases, when this creates it.
        max_leases: u32,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Gives one lease back.
    SemRelease {
        /// Semaphore name.
        name: String,
    },
    /// Sets an event, waking its waiters.
    EventSet {
        /// Event name.
        name: String,
    },
    /// Clears an event.
    EventClear {
        /// Event name.
        name: String,
    },
    /// Waits until an event is set.
    EventWait {
        /// Event name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Whether an event is set.
    EventIsSet {
        /// Event name.
        name: String,
    },
    /// Starts receiving a topic's messages as [`FromScheduler::Message`]s
    /// tagged with this request's id; answered once subscribed.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Stops a subscription (by the id of its subscribe request).
    Unsubscribe {
        /// The subscription.
        subscription: u64,
    },
}

/// The answer to an [`Op`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum OpReply {
    /// Done (put, set, acquired, released, subscribed…).
    Done,
    /// The item got.
    Item(Arg),
    /// A queue's length.
    Len(u64),
    /// Whether an event is set.
    Flag(bool),
    /// The timeout passed first; nothing changed.
    Timeout,
    /// Refused, with a sentence for the user.
    Failed(String),
}

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
    /// The module whose export runs.
    pub module: ModuleHash,
    /// The export to call.
    pub function: String,
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
    },
    /// To a worker: drop this actor.
    DropActor {
        /// Its key.
        key: String,
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

/// What the scheduler has done, counted since its journal began (or since
/// it started, without one).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Keys it knows now.
    pub tasks: u64,
    /// Task runs sent to workers.
    pub dispatched: u64,
    /// Runs again because a worker died or a result was lost with one
    /// (lineage recomputation).
    pub reruns: u64,
    /// Runs sent again because a worker never got them (its heartbeats
    /// did not have them).
    pub resent: u64,
}

/// How the scheduler is doing, for `dtask info`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// Keys that named clients hold (the CLI's until `dtask release`).
    pub held: u64,
    /// The scheduler's resident memory, in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// Its journal, if it keeps one.
    pub journal: Option<JournalHealth>,
    /// The dashboard's address (`HOST:PORT`, as bound), if it serves one.
    pub dashboard: Option<String>,
    /// Tasks an idle worker took from a busy one's queue since the
    /// scheduler started (work stealing).
    pub stolen: u64,
}

/// The scheduler's journal, for `dtask info`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JournalHealth {
    /// Its directory.
    pub dir: String,
    /// Bytes of records written since the scheduler started.
    pub bytes: u64,
    /// Records written since the scheduler started.
    pub records: u64,
    /// What is wrong with it, if anything (records are not being kept).
    pub problem: Option<String>,
}

/// A worker as `dtask workers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    /// Scheduler-assigned id.
    pub id: u64,
    /// Host and pid.
    pub name: String,
    /// Data address.
    pub address: String,
    /// Execution slots.
    pub nthreads: u32,
    /// Resources it offers.
    pub resources: Vec<(String, f64)>,
    /// Tasks assigned to it and not yet reported.
    pub processing: usize,
    /// Those of `processing` that have begun running (the rest wait in
    /// the worker's queue).
    pub executing: usize,
    /// Results it holds.
    pub holding: usize,
    /// Bytes of results it holds, in memory and spilled (as of its last
    /// heartbeat, each second).
    pub nbytes: u64,
    /// Of those, bytes it has spilled to disk (as of its last heartbeat).
    pub spilled_bytes: u64,
    /// The largest memory one task may use there, in bytes.
    pub memory_limit: u64,
    /// Times its supervisor started a worker in its place after one died.
    pub restarts: u32,
    /// Its resident memory, in bytes, as of its last heartbeat (0 where
    /// unknown).
    pub rss_bytes: u64,
    /// Milliseconds since its last heartbeat (by the scheduler's clock).
    pub heartbeat_age_ms: u64,
    /// Inputs it fetched from other workers since it started (as of its
    /// last heartbeat).
    pub fetched: u64,
    /// Bytes of those.
    pub fetched_bytes: u64,
    /// Seconds its task runs took, in all (instantiate and call, as the
    /// scheduler saw them begin and end).
    pub compute_seconds: f64,
}

/// When a task was submitted, began and ended (ms since the Unix epoch, by
/// the scheduler's clock; `None`: not yet, or before the scheduler last
/// started), where it ran and how often it was retried.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskTimings {
    /// When it was submitted.
    pub submitted_ms: Option<u64>,
    /// When its last run began on a worker.
    pub started_ms: Option<u64>,
    /// When it last ended.
    pub finished_ms: Option<u64>,
    /// The name of the worker it runs or ran on, while known.
    pub worker: Option<String>,
    /// Times it ran again after an error.
    pub retries: u32,
}

/// Limits of a task's runs that `retry` may change; `None` keeps what the
/// task was submitted with.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskLimits {
    /// Wall-clock limit of one run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one run, in bytes.
    pub memory_limit: Option<u64>,
    /// Runs again up to this many times after an error.
    pub retries: Option<u32>,
}

/// Requests on a worker's data port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToPeer {
    /// What a task wrote to stdout and stderr, if this worker ran it and
    /// still keeps it; answered by [`FromPeer::Logs`].
    Logs {
        /// Request id.
        id: u64,
        /// The task.
        key: String,
    },
    /// Send these results.
    Fetch {
        /// Request id.
        id: u64,
        /// Keys.
        keys: Vec<String>,
    },
    /// Call a method of an actor this worker holds; answered by
    /// [`FromPeer::Called`]. Calls on one actor run in arrival order.
    Call {
        /// Request id.
        id: u64,
        /// The actor's key.
        actor: String,
        /// The method's name.
        method: String,
        /// Its arguments.
        args: Vec<CallArg>,
    },
}

/// What one task run wrote, kept on its worker for `dtask logs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskLog {
    /// What it wrote to stdout (components; a command's stdout is its
    /// result), its last 64 KiB.
    pub stdout: String,
    /// What it wrote to stderr, its last 64 KiB.
    pub stderr: String,
}

/// Answers on a worker's data port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromPeer {
    /// Results of a [`ToPeer::Fetch`]; `None` for keys this worker lacks.
    Data {
        /// Request id.
        id: u64,
        /// (key, encoded value).
        #[serde(with = "crate::blob::opt_pairs")]
        values: Vec<(String, Option<Bytes>)>,
    },
    /// Answer to [`ToPeer::Call`]: the encoded result, or the error.
    Called {
        /// Request id.
        id: u64,
        /// The result.
        result: Result<Bytes, TaskError>,
    },
    /// Answer to [`ToPeer::Logs`]: `None` when this worker keeps no
    /// output of that task.
    Logs {
        /// Request id.
        id: u64,
        /// The output.
        log: Option<TaskLog>,
    },
}

/// Roughly how many bytes a message holds, for bounding what waits to be
/// sent on a connection (see `dtask_runtime::connection::Sender`). Payloads
/// count in full; the rest is a flat allowance per message.
pub trait Weigh {
    /// Approximate bytes.
    fn weight(&self) -> usize;
}

/// The flat allowance per message beyond its payloads.
const MESSAGE_OVERHEAD: usize = 64;

fn args_weight(args: &[Arg]) -> usize {
    args.iter()
        .map(|a| match a {
            Arg::Value(b) => b.len(),
            Arg::Future(k) => k.len(),
        })
        .sum()
}

impl Weigh for ToScheduler {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                ToScheduler::UploadModule { bytes, .. } => bytes.len(),
                ToScheduler::Submit { tasks, .. } => tasks
                    .iter()
                    .map(|t| MESSAGE_OVERHEAD + t.key.len() + args_weight(&t.args))
                    .sum::<usize>(),
                ToScheduler::Scatter { values, .. } => {
                    values.iter().map(|(_, v)| v.len()).sum::<usize>()
                }
                ToScheduler::Finished { results } | ToScheduler::Holding { results } => results
                    .iter()
                    .map(|(k, at)| k.len() + at.inline.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>(),
                ToScheduler::Publish { message, .. } => message.len(),
                ToScheduler::Watch { keys }
                | ToScheduler::Release { keys }
                | ToScheduler::Started { keys }
                | ToScheduler::Stolen { keys } => keys.iter().map(String::len).sum::<usize>(),
                _ => 0,
            }
    }
}

impl Weigh for FromScheduler {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                FromScheduler::Message { message, .. } => message.len(),
                FromScheduler::Done { key, outcome } => {
                    key.len()
                        + match outcome {
                            Outcome::Finished(at) => at.inline.as_ref().map_or(0, Bytes::len),
                            Outcome::Error(e) => e.message.len() + e.stderr.len(),
                            _ => 0,
                        }
                }
                FromScheduler::Run { tasks, .. } => tasks
                    .iter()
                    .map(|t| {
                        MESSAGE_OVERHEAD
                            + t.args
                                .iter()
                                .map(|a| match a {
                                    RunArg::Value(b) => b.len(),
                                    RunArg::Dep { at, .. } => {
                                        at.inline.as_ref().map_or(0, Bytes::len)
                                    }
                                })
                                .sum::<usize>()
                    })
                    .sum::<usize>(),
                FromScheduler::Store { values } => {
                    values.iter().map(|(_, v)| v.len()).sum::<usize>()
                }
                FromScheduler::Module { bytes, .. } => bytes.as_ref().map_or(0, Bytes::len),
                _ => 0,
            }
    }
}

impl Weigh for ToPeer {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                ToPeer::Fetch { keys, .. } => keys.iter().map(String::len).sum::<usize>(),
                ToPeer::Logs { key, .. } => key.len(),
                ToPeer::Call { args, .. } => args
                    .iter()
                    .map(|a| match a {
                        CallArg::Value(b) => b.len(),
                        CallArg::Word(w) => w.len(),
                    })
                    .sum::<usize>(),
            }
    }
}

impl Weigh for FromPeer {
    fn weight(&self) -> usize {
        MESSAGE_OVERHEAD
            + match self {
                FromPeer::Data { values, .. } => values
                    .iter()
                    .map(|(_, v)| v.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>(),
                FromPeer::Called { result, .. } => result.as_ref().map_or(0, Bytes::len),
                FromPeer::Logs { log, .. } => {
                    log.as_ref().map_or(0, |l| l.stdout.len() + l.stderr.len())
                }
            }
    }
}

impl Weigh for u8 {
    fn weight(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod secrets_tests {
    use super::*;

    #[test]
    fn tokens_and_granted_values_never_show_in_debug_output() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: "s3cret-token".into(),
            role: Role::Client { name: None },
        };
        assert!(!format!("{hello:?}").contains("s3cret"), "{hello:?}");
        let grants = Grants {
            env: vec![("API_KEY".into(), "hunter2".into())],
            dirs: vec!["/data".into()],
        };
        let shown = format!("{grants:?}");
        assert!(
            shown.contains("API_KEY") && shown.contains("/data"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let spec = TaskSpec {
            key: "k".into(),
            module: "m".into(),
            function: "f".into(),
            args: vec![],
            priority: 0,
            timeout_ms: None,
            memory_limit: None,
            grants,
            placement: Placement::default(),
            retries: 0,
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
