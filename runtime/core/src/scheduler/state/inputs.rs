//! What the scheduler's state machine takes in ([`Input`]) and gives out
//! ([`Command`]).

use super::*;

/// Something that happened, for the scheduler to react to.
#[derive(Debug)]
pub enum Input {
    /// A client connected; `name` makes its holds outlive the connection.
    ClientConnected {
        /// Its id.
        client: ClientId,
        /// Its holder name, if it has one.
        name: Option<String>,
        /// An unnamed client's session (0: none): its holds wait
        /// [`HOLDER_GRACE_MS`](super::HOLDER_GRACE_MS) for the session to
        /// come back after the connection closes.
        session: u64,
    },
    /// A client's connection closed.
    ClientDisconnected {
        /// Its id.
        client: ClientId,
    },
    /// An unnamed client is done ([`ToScheduler::Leave`]): once the last
    /// connection of its session closes, its holds and leases end at once
    /// rather than after [`HOLDER_GRACE_MS`](super::HOLDER_GRACE_MS).
    ///
    /// [`ToScheduler::Leave`]: crate::protocol::ToScheduler::Leave
    ClientLeaving {
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
        /// Whether a key the client's name holds already is held once
        /// more (see
        /// [`ToScheduler::Submit`](crate::protocol::ToScheduler::Submit)).
        counted: bool,
        /// The client's session (0: none): a counted submit of a session
        /// and request id taken before (a copy sent again after a broken
        /// connection) does not count again.
        session: u64,
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
        /// Whether it reads the results that end finished and not inline:
        /// each is held for the connection until it has read it
        /// ([`Input::DoneReading`]).
        reads: bool,
    },
    /// A client read keys its reading watches were told of: the holds they
    /// took end.
    DoneReading {
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
        /// Whether a key the client's name holds already is held once
        /// more (one release each), as counted submits are.
        counted: bool,
        /// The asking client's session (0: none): a counted scatter asked
        /// again, even of a scheduler restarted since, counts once.
        session: u64,
    },
    /// A client places values it will send to workers itself.
    Place {
        /// Who.
        client: ClientId,
        /// Request id to answer with the placement.
        id: u64,
        /// Request id to answer once stored.
        confirm: u64,
        /// (key, encoded length) pairs.
        values: Vec<(String, u64)>,
        /// A copy on every (allowed) worker.
        broadcast: bool,
        /// Allowed workers; empty: all.
        workers: Vec<String>,
        /// Whether a key the client's name holds already is held once
        /// more (one release each), as counted submits are.
        counted: bool,
        /// The asking client's session (0: none): a placement asked again
        /// by it is answered as the first, and waits for its values.
        session: u64,
    },
    /// A client could not send the values it placed.
    Unplace {
        /// Who.
        client: ClientId,
        /// The asking client's session (0: none).
        session: u64,
        /// The placement's confirmation id.
        confirm: u64,
        /// Why.
        reason: String,
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
        /// (key, run, error) of each: `run` is the `seq` of the `Run` that
        /// sent the task (0 for stored data).
        errors: Vec<(String, u64, TaskError)>,
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
    /// A worker's tasks wait for a pooled instance, every one being held
    /// (`starved`), or none waits any more: see [`ToScheduler::Starved`].
    ///
    /// [`ToScheduler::Starved`]: crate::protocol::ToScheduler::Starved
    WorkerStarved {
        /// Its worker.
        worker: WorkerId,
        /// Whether tasks there wait for an instance.
        starved: bool,
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
        /// The client's session (0: none): a request of the same session
        /// and id answered before is answered the same, not done again.
        session: u64,
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
        /// Instances in use: (pooled, set up on demand).
        instances: (u32, u32),
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
    /// The grace a placement's client had to come back and ask for it
    /// again (asked for by [`Command::PlacementGrace`]) is over.
    PlacementGraceOver {
        /// The connection that asked for it.
        client: ClientId,
        /// Its confirmation id.
        confirm: u64,
    },
    /// The grace an unnamed client's session had to come back (asked for
    /// by [`Command::HolderGrace`]) is over.
    HolderGraceOver {
        /// The session's holder.
        holder: String,
        /// Which time it went away.
        away: u64,
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
        /// Which making of it.
        made: u64,
        /// How its constructor went.
        outcome: Result<(), TaskError>,
    },
    /// A call trapped in an actor: it takes no more calls.
    ActorBroken {
        /// The worker holding it.
        worker: WorkerId,
        /// The actor.
        key: String,
        /// Which making of it.
        made: u64,
    },
    /// A client asks where an actor lives: answered at once, or, for an
    /// actor restored from the journal whose worker has not rejoined yet,
    /// once it does or the rejoin settles.
    ActorLocate {
        /// Who.
        client: ClientId,
        /// Request id to answer.
        id: u64,
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
        /// The actors it holds, by key, with the making of each.
        actors: Vec<(String, u64)>,
    },
    /// A worker no longer holds these results (their spill files could
    /// not be read back): computed again if still wanted.
    WorkerDropped {
        /// The worker.
        worker: WorkerId,
        /// The results' keys.
        keys: Vec<String>,
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
    /// one; answered by [`Input::Stolen`].
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
    /// Call back with [`Input::HolderGraceOver`] after `after_ms`.
    HolderGrace {
        /// The session's holder.
        holder: String,
        /// Which time it went away.
        away: u64,
        /// Milliseconds from now.
        after_ms: u64,
    },
    /// Call back with [`Input::PlacementGraceOver`] after `after_ms`.
    PlacementGrace {
        /// The connection that asked for the placement, now gone.
        client: ClientId,
        /// Its confirmation id.
        confirm: u64,
        /// Milliseconds from now.
        after_ms: u64,
    },
    /// Call back with [`Input::PrimitiveTimeout`] after `after_ms`.
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
