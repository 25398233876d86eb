//! Messages to the scheduler, from clients and workers.

use super::*;

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
        /// Whether a task whose key this client's name holds already
        /// holds it once more (one release each), or stays held once.
        counted: bool,
        /// The asking client's session (0: none), as for
        /// [`ToScheduler::Retry`]: a counted submit asked again after a
        /// broken connection counts only if its first copy was not taken
        /// (the scheduler keeps, and journals, which it took).
        session: u64,
    },
    /// Report each key's outcome once it ends ([`FromScheduler::Done`]).
    Watch {
        /// Keys to watch.
        keys: Vec<String>,
        /// Whether this client is to read the results that end finished and
        /// not inline from their workers: each is then held for this
        /// connection from the moment it is reported until
        /// [`ToScheduler::DoneReading`] (or the connection closes), so that
        /// its holders releasing it meanwhile cannot take it from a reader
        /// that has not begun.
        reads: bool,
    },
    /// This connection has read these keys (or given up reading them): the
    /// holds its reading watches took on them end.
    DoneReading {
        /// Keys read.
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
    /// other clients also hold, or that work other clients hold depends
    /// on, are only released for this client.
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
        /// The asking client's session (0: none): with the id, it names
        /// the request across reconnects, so a retry asked again after its
        /// answer was lost is answered again, not done twice.
        session: u64,
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
        /// Whether a key this client's name holds already is held once
        /// more (one release each, as [`ToScheduler::Submit`]'s `counted`),
        /// or stays held once: a scatter made for one call, released after
        /// it, counts so as not to take the hold of a scatter of the same
        /// bytes made before it.
        #[serde(default)]
        counted: bool,
        /// The asking client's session (0: none), as for
        /// [`ToScheduler::Retry`]: a scatter asked again after a broken
        /// connection is answered once its first copy is stored (or at
        /// once, if it was), and a counted one holds its keys once.
        #[serde(default)]
        session: u64,
    },
    /// Place values the client then sends straight to workers' data ports
    /// ([`ToPeer::Put`]), so big data never passes through the scheduler.
    /// Answered at once by [`FromScheduler::Placed`] (`id`), and by
    /// [`FromScheduler::Scattered`] or [`FromScheduler::Failed`] (`confirm`)
    /// once every copy is stored or one cannot be.
    Place {
        /// Request id of the placement.
        id: u64,
        /// Request id of the confirmation.
        confirm: u64,
        /// (key, length of the MessagePack value) pairs.
        values: Vec<(String, u64)>,
        /// Put a copy on every worker.
        broadcast: bool,
        /// Only on these workers (by name, address or id); empty: any.
        workers: Vec<String>,
        /// Whether a key this client's name holds already is held once
        /// more (one release each, as [`ToScheduler::Submit`]'s `counted`),
        /// or stays held once: a scatter made for one call, released after
        /// it, counts so as not to take the hold of a scatter of the same
        /// bytes made before it.
        #[serde(default)]
        counted: bool,
        /// The asking client's session (0: none): a placement asked again
        /// (same `id` and `confirm`) after a broken connection, while its
        /// first copy still waits for its values, is answered with the
        /// workers that copy was given (`again`), and its confirmation
        /// goes to the connection that asked last; one that no longer
        /// waits (its values stored, or failed) is placed afresh.
        #[serde(default)]
        session: u64,
    },
    /// The client could not send the values of placement `confirm` (why):
    /// those not stored fail with that reason, so scattering them again
    /// stores them afresh.
    Unplace {
        /// The placement's confirmation id.
        confirm: u64,
        /// Why.
        reason: String,
        /// The asking client's session (0: none), which finds a placement
        /// asked for on an earlier connection.
        session: u64,
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
    /// Whether the scheduler is there: answered by [`FromScheduler::Pong`]
    /// from its loop. A client sends it when the scheduler has said nothing
    /// for a while ([`QUIET`](super::QUIET)): a scheduler whose process is
    /// stopped or whose loop is stuck leaves it unanswered, which TCP's
    /// keepalive cannot tell (the host's kernel answers for the process).
    Ping,

    // ---- from workers ----
    /// Tasks that finished on the sending worker.
    Finished {
        /// (key, where and how big).
        results: Vec<(String, Located)>,
    },
    /// Tasks that failed on the sending worker.
    Erred {
        /// (key, run, error): `run` is the `seq` of the
        /// [`FromScheduler::Run`] that brought
        /// the task (0 for data the worker was asked to store), so an error
        /// of a run the scheduler has since cancelled is not taken for the
        /// outcome of one it sent later.
        errors: Vec<(String, u64, TaskError)>,
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
        /// The actors it holds, by key, with the making of each (as
        /// [`FromScheduler::NewActor`] numbered it): they take calls again.
        actors: Vec<(String, u64)>,
    },
    /// The sending worker no longer holds these results: their spill
    /// files could not be read back (removed behind its back). The
    /// scheduler computes them again if they are still wanted.
    Dropped {
        /// The results' keys.
        keys: Vec<String>,
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
        /// Instances in use now: (pooled, set up on demand past the pool).
        #[serde(default)]
        instances: (u32, u32),
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
        /// The sending client's session: a random number for the life of
        /// its `Client` (0: none). With `id` it names the request across
        /// reconnects, so one sent again because its answer was lost with
        /// a connection is answered again, not done again.
        session: u64,
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
        /// The asking client's session (0: none), as for
        /// [`ToScheduler::Retry`]: asked again, the same actor is answered.
        session: u64,
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
        /// Which making (as [`FromScheduler::NewActor`] numbered it).
        made: u64,
    },
    /// From a worker: an actor's constructor failed.
    ActorFailed {
        /// The actor's key.
        key: String,
        /// Which making (as [`FromScheduler::NewActor`] numbered it).
        made: u64,
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
    /// From a worker: tasks here wait for a pooled instance, every one
    /// being held (by tasks waiting in a gather, a queue get, a lock…, and
    /// by actors), so the tasks sent here cannot begin (`true`); or none
    /// waits any more (`false`). Sent as that changes.
    Starved {
        /// Whether tasks wait for an instance.
        starved: bool,
    },
    /// From a worker: a call trapped in an actor, whose instance takes no
    /// more calls.
    ActorBroken {
        /// The actor's key.
        key: String,
        /// Which making (as [`FromScheduler::NewActor`] numbered it).
        made: u64,
    },
    /// From an unnamed client that is done (its last handle dropped):
    /// when its session's last connection closes, its holds and leases end
    /// at once instead of waiting for the session to come back.
    Leave,
}

impl ToScheduler {
    /// The id of this request, for one that is answered
    /// ([`FromScheduler::request_id`] of its answer); `None` for a message
    /// that has no answer.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ToScheduler::HasModules { id, .. }
            | ToScheduler::Submit { id, .. }
            | ToScheduler::Status { id, .. }
            | ToScheduler::Retry { id, .. }
            | ToScheduler::Scatter { id, .. }
            | ToScheduler::Place { id, .. }
            | ToScheduler::WhoHas { id, .. }
            | ToScheduler::HasWhat { id, .. }
            | ToScheduler::Workers { id, .. }
            | ToScheduler::ListTasks { id, .. }
            | ToScheduler::DashboardLogin { id, .. }
            | ToScheduler::Stats { id, .. }
            | ToScheduler::Primitive { id, .. }
            | ToScheduler::ActorNew { id, .. }
            | ToScheduler::ActorLocate { id, .. }
            | ToScheduler::Actors { id } => Some(*id),
            _ => None,
        }
    }
}
