//! The async Rust client: the API the `dtask` CLI is written on.
//!
//! A [`Client`] holds one connection to the scheduler. Requests carry ids and
//! are answered out of order; a background task routes answers and key
//! completions to whoever awaits them, so many requests can be in flight at
//! once (a `map` streams its submits without waiting for each answer).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dtask_runtime::client::ClientError> {
//! use dtask_runtime::client::{Client, SubmitOptions};
//! use dtask_runtime::module::LocalModule;
//! use dtask_runtime::protocol::Arg;
//! use dtask_runtime::value::{Value, encode};
//!
//! let client = Client::connect("127.0.0.1:8786", "TOKEN", None).await?;
//! let module = LocalModule::load("tasks.wasm".as_ref()).unwrap();
//! let args = vec![Arg::Value(encode(&Value::from(10)).into())];
//! let future = client.submit(&module, "inc", args, &SubmitOptions::default()).await?;
//! assert_eq!(future.result(None).await?, Value::from(11));
//! // A future is an argument to other tasks; dropping it releases the key.
//! let next = client.submit(&module, "inc", vec![future.arg()], &SubmitOptions::default()).await?;
//! assert_eq!(next.result(None).await?, Value::from(12));
//! # Ok(()) }
//! ```

mod actors;
mod as_completed;
mod checks;
mod future;
mod primitives;
mod queries;
mod reconnect;
mod results;

pub use as_completed::AsCompleted;
pub use checks::{arity_message, check_args, check_call};
pub use future::{Errors, Future};
use reconnect::*;

pub use actors::{Actor, ActorOptions};
pub use primitives::{Event, Item, Lock, Queue, Semaphore, Subscription, Variable};
pub use results::{Payload, Piece, Streamed, decoded};

use crate::connection::{self, Sender};
use crate::key;
use crate::module::{LocalModule, ModuleTypes};
use crate::peer;
use crate::protocol::{
    Arg, FromScheduler, Hello, Located, Op, Outcome, PROTOCOL_VERSION, Placement, QUIET, Role,
    TaskError, TaskLimits, TaskSpec, TaskState, ToScheduler, WorkerInfo,
};
use crate::value::{self, Encoded, Value};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What can go wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler cannot be reached or refused us.
    #[error("cannot reach the scheduler at {addr}: {reason}")]
    Connect {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The connection to the scheduler closed.
    #[error(
        "lost the connection to the scheduler (it was shut down, or did not come back \
         within the reconnect grace, DTASK_RECONNECT_GRACE)"
    )]
    Disconnected,
    /// The scheduler was shut down (`dtask shutdown`) while this waited on
    /// it.
    #[error(
        "the scheduler was shut down (dtask shutdown) while this waited on it; what it had \
         not finished is gone: start a scheduler again and submit it again"
    )]
    ShutDown,
    /// The scheduler refused some submitted tasks.
    #[error("the scheduler refused {}: {}", .0[0].0, .0[0].1)]
    Refused(Vec<(String, String)>),
    /// A task failed.
    #[error("{}", .0.message)]
    Task(Box<TaskError>),
    /// The future was cancelled.
    #[error("{0} was cancelled")]
    Cancelled(String),
    /// The key is not known to the scheduler.
    #[error("unknown key {0}: never submitted, or released")]
    UnknownKey(String),
    /// A result could not be fetched or decoded.
    #[error("cannot get the result of {key}: {reason}")]
    Data {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The call itself was malformed.
    #[error("{0}")]
    Invalid(String),
    /// The actor called is gone (its worker died, or it was deleted).
    #[error("{0}")]
    ActorLost(String),
    /// The scheduler does not offer what was asked for (its dashboard is
    /// off, say); the message says why.
    #[error("{0}")]
    Unavailable(String),
}

impl ClientError {
    /// An answer other than the one asked for: the scheduler's own words
    /// if it could not serve the request ([`FromScheduler::Failed`]).
    pub(crate) fn unexpected(answer: FromScheduler) -> Self {
        match answer {
            FromScheduler::Failed { message, .. } => ClientError::Invalid(message),
            other => ClientError::Invalid(format!("unexpected answer {other:?}")),
        }
    }
}

/// Options of one submit.
#[derive(Clone, Debug)]
pub struct SubmitOptions {
    /// Use this key instead of a computed one.
    pub key: Option<String>,
    /// Same inputs, same key (default); `false` gives a random key.
    pub pure: bool,
    /// Higher runs earlier.
    pub priority: i32,
    /// Wall-clock limit per run.
    pub timeout: Option<Duration>,
    /// Memory limit per run, in bytes (at most the worker's).
    pub memory_limit: Option<u64>,
    /// Access beyond the sandbox (environment, readable directories).
    pub grants: crate::protocol::Grants,
    /// Where it may run: worker restrictions and resources.
    pub placement: Placement,
    /// Runs again up to this many times after an error.
    pub retries: u32,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        Self {
            key: None,
            pure: true,
            priority: 0,
            timeout: None,
            memory_limit: None,
            grants: Default::default(),
            placement: Placement::default(),
            retries: 0,
        }
    }
}

/// Builds the spec of a task; the key follows `options`.
pub fn task_spec(
    module: &str,
    function: &str,
    args: Vec<Arg>,
    options: &SubmitOptions,
) -> TaskSpec {
    let key = match (&options.key, options.pure) {
        (Some(k), _) => k.clone(),
        // What a task is granted can change its result: it is part of
        // the key.
        (None, true) if !options.grants.is_empty() => {
            let mut keyed = args.clone();
            keyed.push(Arg::Value(crate::connection::encode(&options.grants)));
            key::pure_key(module, function, &keyed)
        }
        (None, true) => key::pure_key(module, function, &args),
        (None, false) => key::random_key(function),
    };
    TaskSpec {
        key,
        module: module.to_string(),
        function: function.to_string(),
        args,
        priority: options.priority,
        timeout_ms: options.timeout.map(limit_ms),
        memory_limit: options.memory_limit,
        grants: options.grants.clone(),
        placement: options.placement.clone(),
        retries: options.retries,
    }
}

/// The key [`task_spec`] gives the call of `function` whose argument `at`
/// is the value `big` (read range by range from its file, never held
/// whole) and whose other arguments are `args` (`args[at]` is not read):
/// the key of the same call with the value in hand, so scattering a big
/// argument first leaves the call's key as it is. `None` where the key is
/// not the call's hash (given with the options, or not pure).
pub fn key_with_value(
    module: &str,
    function: &str,
    args: &[Arg],
    (at, big): (usize, &crate::value::Encoded),
    options: &SubmitOptions,
) -> std::io::Result<Option<String>> {
    if options.key.is_some() || !options.pure {
        return Ok(None);
    }
    let mut key = key::PureKey::new(module, function);
    for (i, arg) in args.iter().enumerate() {
        if i != at {
            key.arg(arg);
            continue;
        }
        key.value(big.len());
        let mut offset = 0;
        while offset < big.len() {
            let range = big.range(offset, crate::peer::CHUNK)?;
            if range.is_empty() {
                return Err(std::io::Error::other("the value ended before its length"));
            }
            key.update(&range);
            offset += range.len() as u64;
        }
    }
    // As `task_spec` keys what is granted.
    if !options.grants.is_empty() {
        key.arg(&Arg::Value(crate::connection::encode(&options.grants)));
    }
    Ok(Some(key.finish()))
}

/// A status answer: each key's state (`None`: unknown), why no worker can
/// run the no-worker ones, and the known keys' timings (when asked for).
pub type StatusDetail = (
    Vec<(String, Option<TaskState>)>,
    HashMap<String, String>,
    HashMap<String, crate::protocol::TaskTimings>,
);

/// Who waits for which keys. Keys are this client's own (and hashing them
/// is a visible share of a big gather's time), hence the fast hasher.
/// Each waiter says whether it reads the result (see
/// [`Client::watch_reading_into`]).
type Watchers = rustc_hash::FxHashMap<String, Vec<Waiter>>;

/// A key's reading waiters that are not done with it.
#[derive(Default)]
struct Reading {
    /// How many.
    waiters: u32,
    /// Whether one was told of a result the scheduler holds for readers
    /// (else there is nothing to let go of when they are done).
    held: bool,
}

/// Where a watched key's outcome goes, and whether its receiver reads the
/// result.
type Waiter = (mpsc::UnboundedSender<(String, Outcome)>, bool);

struct Inner {
    /// The scheduler's address, as given.
    address: String,
    /// Where messages to the scheduler go: the current connection, or,
    /// while it is being made again, a queue sent first on the new one.
    tx: Mutex<Outbox>,
    /// The current connection's sender, kept to ask its writer, once the
    /// connection breaks, what it never wrote.
    conn: Mutex<Option<Sender<ToScheduler>>>,
    /// How long to keep trying to reconnect after the connection breaks.
    grace_ms: AtomicU64,
    /// The largest value the scheduler takes, as it said when this client
    /// last connected (`u64::MAX`: it did not say).
    max_value: AtomicU64,
    /// Starts the scheduler again, for one this client may start itself
    /// (see [`Client::restart_when_lost`]); taken when used, so once.
    restart: Mutex<Option<Restart>>,
    /// What this client presents to workers' data ports: a proof of the
    /// client token (never the token), or a worker's tasks' worker token.
    peer_token: String,
    next_id: AtomicU64,
    /// This client's session: with a request id, it names a primitive
    /// operation across reconnects (see `ToScheduler::Primitive`).
    session: u64,
    /// Whether this client holds under its session (unnamed): it says it
    /// is leaving when its last handle goes, so what it held ends at once
    /// rather than after the session's grace.
    leaves: bool,
    replies: Mutex<Option<HashMap<u64, oneshot::Sender<FromScheduler>>>>,
    watchers: Mutex<Option<Watchers>>,
    /// Keys with reading waiters (see [`Client::watch_reading_into`]) that
    /// are not done with them, and how many: waiting, or told of a result
    /// they have not read yet. The scheduler holds each such result for
    /// this connection until the last is done ([`Client::read_over`]).
    reading: Mutex<rustc_hash::FxHashMap<String, Reading>>,
    uploaded: Mutex<HashSet<String>>,
    /// Live [`Future`] handles per key; the last one dropped releases it.
    refs: Mutex<rustc_hash::FxHashMap<String, usize>>,
    /// Whether each submit of a key holds it once more (see
    /// [`Client::count_submits`]).
    counted: std::sync::atomic::AtomicBool,
    /// Open subscriptions by id, with their topics: subscribed again on
    /// each new connection.
    subscriptions: Mutex<HashMap<u64, (String, mpsc::UnboundedSender<Bytes>)>>,
    /// Requests in flight that are safe to ask again ([`repeatable`]), by
    /// id: sent again after a reconnect, so a wait (queue get, lock
    /// acquire…) keeps waiting and a query is answered.
    resend: Mutex<HashMap<u64, Asked>>,
    /// Where known actors live.
    actors: Mutex<HashMap<String, crate::protocol::ActorInfo>>,
    /// Connections to workers' data ports for actor calls, by address.
    peers: tokio::sync::Mutex<HashMap<String, Arc<actors::PeerLink>>>,
    /// Set once the scheduler is gone for good (reconnecting failed).
    lost: tokio::sync::watch::Sender<bool>,
    /// Set when the scheduler says it is shutting down.
    shut_down: std::sync::atomic::AtomicBool,
    /// The cluster [`Client::from_env`] started inside this program, if
    /// it did: it stops when the last handle goes.
    embedded: std::sync::OnceLock<crate::embedded::EmbeddedCluster>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: written as the connection's writer drains, if the
        // program lives that long; else the session's grace applies.
        // Said again even after `close` said it (saying it twice does no
        // harm): a connection made again since would not know.
        if self.leaves
            && let Ok(outbox) = self.tx.get_mut()
        {
            let _ = outbox.send(ToScheduler::Leave);
        }
    }
}

/// Where a client's messages go.
enum Outbox {
    /// The connection.
    Up(Sender<ToScheduler>),
    /// Being made again: messages wait, in order, with their weight, to go
    /// first on the new connection.
    Down(Vec<ToScheduler>, usize),
    /// Gone for good.
    Lost,
}

/// Most broken connections a scatter sent straight to workers asks its
/// placement again through: past them it fails as disconnected.
const PLACE_BREAKS: u32 = 8;

/// Most bytes of messages that wait for a connection being made again;
/// past them a send fails as disconnected.
const DOWN_QUEUE_BYTES: usize = 64 << 20;

impl Outbox {
    fn send(&mut self, msg: ToScheduler) -> Result<(), ClientError> {
        match self {
            Outbox::Up(tx) => match tx.offer(msg) {
                Ok(()) => Ok(()),
                // The connection broke (its writer stopped) and the reader
                // has not seen it yet: the message waits for the next one.
                Err((_, msg)) => {
                    self.go_down();
                    self.send(msg)
                }
            },
            Outbox::Down(queue, bytes) => {
                let weight = crate::protocol::Weigh::weight(&msg);
                if *bytes + weight > DOWN_QUEUE_BYTES {
                    return Err(ClientError::Disconnected);
                }
                *bytes += weight;
                queue.push(msg);
                Ok(())
            }
            Outbox::Lost => Err(ClientError::Disconnected),
        }
    }

    /// The ids of the requests waiting for the next connection.
    fn queued_requests(&self) -> HashSet<u64> {
        match self {
            Outbox::Down(queue, _) => queue.iter().filter_map(ToScheduler::request_id).collect(),
            _ => HashSet::new(),
        }
    }

    /// The connection broke: messages wait from now on.
    fn go_down(&mut self) {
        if let Outbox::Up(_) = self {
            *self = Outbox::Down(Vec::new(), 0);
        }
    }

    /// The new connection, after `first` and then the messages that
    /// waited for it. If it breaks at once, what it refused waits, in
    /// order, for the one after.
    fn come_up(&mut self, first: Vec<ToScheduler>, tx: Sender<ToScheduler>) {
        let queued = match std::mem::replace(self, Outbox::Lost) {
            Outbox::Down(queue, _) => queue,
            _ => Vec::new(),
        };
        let mut left = first.into_iter().chain(queued);
        for msg in left.by_ref() {
            if let Err((_, msg)) = tx.offer(msg) {
                let rest: Vec<ToScheduler> = std::iter::once(msg).chain(left).collect();
                let bytes = rest.iter().map(crate::protocol::Weigh::weight).sum();
                *self = Outbox::Down(rest, bytes);
                return;
            }
        }
        *self = Outbox::Up(tx);
    }
}

/// Fault injection for tests: with `DTASK_FAULT_CUT_AFTER_RELEASE=N`, the
/// connection is cut right after every Nth release is queued, before its
/// writer can send it (the instant a connection breaks with a release
/// still waiting to go). Whether this release is due for it.
fn fault_cut_after_release() -> bool {
    static EVERY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let every = *EVERY.get_or_init(|| {
        std::env::var("DTASK_FAULT_CUT_AFTER_RELEASE")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
    });
    every.is_some_and(|n| (COUNT.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(n))
}

/// How many calls [`Client::map`] sends per submit message.
pub const MAP_BATCH: usize = 4096;

/// Whether the client's connection has frames queued or being written:
/// a peer still reading them may answer nothing until it has them.
fn writing(inner: &std::sync::Weak<Inner>) -> bool {
    inner.upgrade().is_some_and(|inner| {
        inner
            .conn
            .lock()
            .expect("conn lock")
            .as_ref()
            .is_some_and(|c| c.queued_bytes() > 0)
    })
}

/// Of what a broken connection's writer did not write, what goes first on
/// the next connection, in order: everything it never began to write (but
/// watches, which are asked again whole), and of the batch it was
/// writing as the connection broke, what the scheduler may see twice with
/// the effect of once (requests kept in `resend`, releases, cancels). A
/// `Release` queued in the instant before the break is not lost.
fn carry_over(
    unwritten: crate::connection::Unwritten<ToScheduler>,
    resend: &HashMap<u64, Asked>,
) -> Vec<ToScheduler> {
    let again = |m: &ToScheduler| match m.request_id() {
        Some(id) => resend.contains_key(&id),
        None => matches!(
            m,
            ToScheduler::Release { .. }
                | ToScheduler::ReleaseAll
                | ToScheduler::Cancel { .. }
                | ToScheduler::FireAndForget { .. }
                | ToScheduler::ActorDelete { .. }
                // Content-addressed: storing it twice stores it once.
                | ToScheduler::UploadModule { .. }
        ),
    };
    // A submit the scheduler may have read goes again as it was: the
    // scheduler counts it only if it did not take the first copy.
    let maybe = unwritten.maybe.into_iter().filter(|m| again(m));
    // Watches are asked again whole; a placement is asked again by the
    // scatter that waits for it (see `Client::scatter_direct`).
    let never = unwritten
        .never
        .into_iter()
        .filter(|m| !matches!(m, ToScheduler::Watch { .. } | ToScheduler::Place { .. }));
    maybe.chain(never).collect()
}

/// Starts a scheduler again (see [`Client::restart_when_lost`]).
pub(crate) type Restart = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// A request kept to be asked again after a reconnect (see
/// [`Inner::resend`]).
struct Asked {
    msg: ToScheduler,
    /// When a primitive operation's wait gives up, if it has a timeout.
    deadline: Option<std::time::Instant>,
}

impl Asked {
    /// `msg`, kept as it is sent now: a primitive operation's wait gives up
    /// its timeout from now.
    fn new(msg: &ToScheduler) -> Self {
        let mut msg = msg.clone();
        let deadline = match &mut msg {
            ToScheduler::Primitive { op, .. } => op
                .wait_ms_mut()
                .and_then(|w| *w)
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
            _ => None,
        };
        Self { msg, deadline }
    }

    /// The request to ask again: a primitive operation then waits only
    /// for what is left of its timeout (none left: it does not wait), not
    /// the whole timeout again.
    fn again(&self) -> ToScheduler {
        let mut msg = self.msg.clone();
        if let ToScheduler::Primitive { op, .. } = &mut msg
            && let Some(deadline) = self.deadline
            && let Some(wait) = op.wait_ms_mut()
        {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            *wait = Some(left.as_millis() as u64);
        }
        msg
    }
}

/// A random, nonzero session number.
fn new_session() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b).max(1)
}

/// Whether the scheduler may see request `msg` twice with the same effect
/// as once (submitting keys it has, a query; a primitive operation, a
/// retry, a new actor or a scatter, which the scheduler answers once per
/// session and request id: a scatter asked again once its first copy's
/// values are stored), so that one whose answer a broken connection lost
/// can be sent again. A placement of values sent straight to workers
/// ([`ToScheduler::Place`]) is asked again by the scatter waiting for it.
fn repeatable(msg: &ToScheduler) -> bool {
    matches!(
        msg,
        ToScheduler::Primitive { .. }
            | ToScheduler::Scatter { .. }
            | ToScheduler::Retry { .. }
            | ToScheduler::ActorNew { .. }
            | ToScheduler::Submit { .. }
            | ToScheduler::Status { .. }
            | ToScheduler::HasModules { .. }
            | ToScheduler::WhoHas { .. }
            | ToScheduler::HasWhat { .. }
            | ToScheduler::Workers { .. }
            | ToScheduler::ListTasks { .. }
            | ToScheduler::Stats { .. }
            | ToScheduler::Actors { .. }
            | ToScheduler::ActorLocate { .. }
    )
}

/// A connection to a dtask scheduler. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A task's time limit in whole milliseconds, as the scheduler and
/// workers keep it: rounded up, so a limit under a millisecond is one, not
/// none at all.
pub fn limit_ms(limit: Duration) -> u64 {
    limit
        .as_nanos()
        .div_ceil(1_000_000)
        .min(u128::from(u64::MAX)) as u64
}

impl Client {
    /// Connects to the scheduler at `addr` with the cluster `token`. A
    /// `name` makes the keys this client submits and the locks and
    /// semaphore leases it takes outlive its connection (held until
    /// released under that name, as the CLI does). Without one they are
    /// held under a random session this client keeps across reconnects:
    /// when the connection breaks, the scheduler keeps them for
    /// [`HOLDER_GRACE_MS`](crate::scheduler::state::HOLDER_GRACE_MS) (60 s)
    /// for it to come back, and lets go of them after that. Dropping the
    /// last handle lets go of them at once.
    pub async fn connect(
        addr: &str,
        token: &str,
        name: Option<String>,
    ) -> Result<Self, ClientError> {
        // A named client's holds outlive its connections anyway.
        let session = if name.is_some() { 0 } else { new_session() };
        Self::connect_as(addr, token, Role::Client { name, session }).await
    }

    /// Connects as a worker's tasks do (`get_client` inside a task): with
    /// the worker token, as an unnamed client that cannot shut the cluster
    /// down or force-cancel others' keys.
    pub async fn connect_for_tasks(addr: &str, worker_token: &str) -> Result<Self, ClientError> {
        Self::connect_as(addr, worker_token, Role::Tasks).await
    }

    async fn connect_as(addr: &str, token: &str, role: Role) -> Result<Self, ClientError> {
        // Not worth waiting out a reconnect grace for (nor is an address
        // that is not one: see `first_connect`).
        if let Role::Client {
            name: Some(name), ..
        } = &role
            && let Some(prefix) = crate::scheduler::state::reserved_prefix(name)
        {
            return Err(ClientError::Invalid(format!(
                "client name {name:?}: names beginning with `{prefix}` are the scheduler's own \
                 (unnamed clients' sessions, and results being read); choose another \
                 DTASK_CLIENT"
            )));
        }
        let peer_token = match &role {
            // A worker's data port never sees the client token itself: it
            // checks a digest of it (`crate::secret`).
            Role::Client { .. } => crate::secret::peer_proof(token),
            _ => token.to_string(),
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: token.to_string(),
            role,
        };
        let grace = default_grace();
        let (tx, mut rx, max_value) = first_connect(addr, &hello, grace).await?;
        let inner = Arc::new(Inner {
            address: addr.to_string(),
            tx: Mutex::new(Outbox::Up(tx.clone())),
            conn: Mutex::new(Some(tx)),
            grace_ms: AtomicU64::new(grace.as_millis() as u64),
            max_value: AtomicU64::new(max_value.unwrap_or(u64::MAX)),
            restart: Mutex::new(None),
            peer_token,
            next_id: AtomicU64::new(1),
            // One number for the holds and the primitive operations.
            session: match hello.role {
                Role::Client { session, .. } if session != 0 => session,
                _ => new_session(),
            },
            leaves: matches!(hello.role, Role::Client { session, .. } if session != 0),
            replies: Mutex::new(Some(HashMap::new())),
            watchers: Mutex::new(Some(Watchers::default())),
            reading: Mutex::new(Default::default()),
            uploaded: Mutex::new(HashSet::new()),
            refs: Mutex::new(Default::default()),
            counted: Default::default(),
            subscriptions: Mutex::new(HashMap::new()),
            resend: Mutex::new(HashMap::new()),
            actors: Mutex::new(HashMap::new()),
            peers: tokio::sync::Mutex::new(HashMap::new()),
            lost: tokio::sync::watch::channel(false).0,
            shut_down: std::sync::atomic::AtomicBool::new(false),
            embedded: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&inner);
        let addr = addr.to_string();
        tokio::spawn(async move {
            loop {
                // Quiet for `QUIET`: asked whether it is there; quiet for as
                // long again: taken as lost, like a broken connection (a
                // stopped process or a stuck loop, which TCP cannot tell).
                let mut asked = false;
                loop {
                    let msg = match tokio::time::timeout(QUIET, rx.recv()).await {
                        Ok(Ok(Some(msg))) => msg,
                        Ok(_) => break,
                        // Still writing to it (a big upload on a slow
                        // link): the answer may wait behind that.
                        Err(_) if writing(&weak) => {
                            asked = false;
                            continue;
                        }
                        Err(_) if asked => {
                            tracing::warn!(
                                "the scheduler at {addr} has not answered for {:?}: taking \
                                 the connection as lost",
                                QUIET * 2
                            );
                            break;
                        }
                        Err(_) => {
                            let Some(inner) = weak.upgrade() else { return };
                            let _ = inner
                                .tx
                                .lock()
                                .expect("sender lock")
                                .send(ToScheduler::Ping);
                            asked = true;
                            continue;
                        }
                    };
                    asked = false;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.dispatch(msg);
                }
                let Some(inner) = weak.upgrade() else { return };
                // Requests in flight are lost with the connection: their
                // waiters fail now, but for primitive operations, which are
                // sent again. Subscriptions end (the scheduler forgets
                // them). Watches survive a reconnect. What is sent from
                // now on waits for the new connection.
                inner.tx.lock().expect("sender lock").go_down();
                // What the broken connection's writer never wrote, or was
                // writing as it broke.
                let old = inner.conn.lock().expect("conn lock").take();
                drop(inner);
                let unwritten = match old {
                    Some(old) => old.unsent().await,
                    None => Default::default(),
                };
                let Some(inner) = weak.upgrade() else { return };
                let (kept, carried) = {
                    let mut resend = inner.resend.lock().expect("resend lock");
                    let mut replies = inner.replies.lock().expect("replies lock");
                    let mut carried = carry_over(unwritten, &resend);
                    // A question for the connection that broke.
                    carried.retain(|m| !matches!(m, ToScheduler::Ping));
                    let carried_ids: HashSet<u64> =
                        carried.iter().filter_map(ToScheduler::request_id).collect();
                    // Requests sent since the connection broke wait in the
                    // outbox for the next one: their waiters stay too.
                    let queued_ids = inner.tx.lock().expect("sender lock").queued_requests();
                    if let Some(r) = replies.as_mut() {
                        r.retain(|id, _| {
                            resend.contains_key(id)
                                || carried_ids.contains(id)
                                || queued_ids.contains(id)
                        });
                        // A request no one waits for any more is not asked
                        // again.
                        let waited = |id: &u64| r.get(id).is_some_and(|tx| !tx.is_closed());
                        resend.retain(|id, _| waited(id));
                        carried.retain(|m| m.request_id().is_none_or(|id| waited(&id)));
                    } else {
                        carried.retain(|m| m.request_id().is_none());
                    }
                    // Asked again in the order first asked; those carried
                    // over go after, in their order, as they were sent
                    // after every request the scheduler had whole.
                    // Those queued since the break go out as they are, once.
                    let mut kept: Vec<u64> = resend
                        .keys()
                        .copied()
                        .filter(|id| !carried_ids.contains(id) && !queued_ids.contains(id))
                        .collect();
                    kept.sort_unstable();
                    (kept, carried)
                };
                let grace = Duration::from_millis(inner.grace_ms.load(Ordering::Relaxed));
                let restart = inner.restart.lock().expect("restart lock").take();
                drop(inner);
                if !grace.is_zero() {
                    tracing::warn!(
                        "lost the connection to the scheduler at {addr}; reconnecting for up \
                         to {grace:?} (DTASK_RECONNECT_GRACE), and what is sent meanwhile waits"
                    );
                }
                let (again, unused) = reconnect(&addr, &hello, grace, restart).await;
                let Some(inner) = weak.upgrade() else { return };
                *inner.restart.lock().expect("restart lock") = unused;
                let Some((tx, new_rx, max_value)) = again else {
                    *inner.tx.lock().expect("sender lock") = Outbox::Lost;
                    // Dropping the senders wakes every waiter with an error.
                    inner.replies.lock().expect("replies lock").take();
                    inner
                        .subscriptions
                        .lock()
                        .expect("subscriptions lock")
                        .clear();
                    inner.watchers.lock().expect("watchers lock").take();
                    inner.resend.lock().expect("resend lock").clear();
                    inner.lost.send_replace(true);
                    return;
                };
                tracing::info!("reconnected to the scheduler at {addr}");
                inner
                    .max_value
                    .store(max_value.unwrap_or(u64::MAX), Ordering::Relaxed);
                inner.uploaded.lock().expect("uploaded lock").clear();
                // In order, with sends held off meanwhile: the watches, the
                // waits sent again, then what was sent while down.
                let mut outbox = inner.tx.lock().expect("sender lock");
                // Those some waiter reads, and the others.
                let (mut read, mut keys) = (Vec::new(), Vec::new());
                if let Some(w) = inner.watchers.lock().expect("watchers lock").as_mut() {
                    // Keys no one waits for any more are not watched again.
                    w.retain(|_, waiting| {
                        waiting.retain(|(t, _)| !t.is_closed());
                        !waiting.is_empty()
                    });
                    for (k, waiting) in w.iter() {
                        let to = if waiting.iter().any(|(_, reads)| *reads) {
                            &mut read
                        } else {
                            &mut keys
                        };
                        to.push(k.clone());
                    }
                    // Results told and still being read: held again for
                    // this connection (the last one's holds ended with it).
                    let reading = inner.reading.lock().expect("reading lock");
                    read.extend(
                        reading
                            .iter()
                            .filter(|(k, r)| r.held && !w.contains_key(*k))
                            .map(|(k, _)| k.clone()),
                    );
                }
                for (keys, reads) in [(read, true), (keys, false)] {
                    if !keys.is_empty() {
                        let _ = tx.send(ToScheduler::Watch { keys, reads });
                    }
                }
                // Subscriptions go on, under the same ids (their answers
                // have no waiter); what was published in between is missed.
                // One not answered yet goes out with the requests (asked
                // again, or still queued to be sent once).
                {
                    let mut subs = inner.subscriptions.lock().expect("subscriptions lock");
                    subs.retain(|_, (_, sink)| !sink.is_closed());
                    let replies = inner.replies.lock().expect("replies lock");
                    let awaited = |id: &u64| replies.as_ref().is_some_and(|r| r.contains_key(id));
                    for (&id, (topic, _)) in subs.iter().filter(|(id, _)| !awaited(id)) {
                        tracing::warn!(
                            "subscribed to {topic:?} again; messages published on it while \
                             the connection was down were missed"
                        );
                        let _ = tx.send(ToScheduler::Primitive {
                            id,
                            session: 0,
                            task: None,
                            op: Op::Subscribe {
                                topic: topic.clone(),
                            },
                        });
                    }
                }
                let mut carried = carried;
                {
                    let resend = inner.resend.lock().expect("resend lock");
                    for asked in kept.iter().filter_map(|id| resend.get(id)) {
                        let _ = tx.send(asked.again());
                    }
                    // Those carried over that are kept are the same
                    // requests: asked again the same way (a submit is as
                    // `carry_over` left it).
                    for msg in &mut carried {
                        if let Some(asked) = msg.request_id().and_then(|id| resend.get(&id))
                            && !matches!(msg, ToScheduler::Submit { .. })
                        {
                            *msg = asked.again();
                        }
                    }
                }
                *inner.conn.lock().expect("conn lock") = Some(tx.clone());
                outbox.come_up(carried, tx);
                drop(outbox);
                rx = new_rx;
            }
        });
        Ok(Self { inner })
    }

    /// Resolves once this client has lost its scheduler for good: the
    /// connection broke and reconnecting failed for the whole grace. A
    /// loop that waits on a channel it also feeds (with
    /// [`Client::watch_into`]) selects on this to stop waiting.
    pub async fn lost(&self) {
        let mut rx = self.inner.lost.subscribe();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    /// How long this client keeps trying to reconnect when its connection
    /// breaks (a scheduler restart) before failing what waits on it.
    /// Default: `DTASK_RECONNECT_GRACE` (e.g. `30s`), else 30 seconds.
    pub fn set_reconnect_grace(&self, grace: Duration) {
        self.inner
            .grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// Connects to the configured scheduler (`DTASK_SCHEDULER`, then
    /// `dtask.toml`), as the CLI does; with none configured, starts a
    /// cluster inside this program (like Dask's `Client()` with no
    /// address): a scheduler and one single-slot worker per CPU on threads
    /// of their own, on a loopback port, stopped when the last handle to
    /// this client (clones and [`Future`]s included) is dropped. Works on
    /// any tokio runtime flavour. (The CLI instead shares one background
    /// local cluster among shell commands.)
    pub async fn from_env(name: Option<String>) -> Result<Self, ClientError> {
        match crate::config::resolve(None).map_err(ClientError::Invalid)? {
            crate::config::Resolved::Configured(e) => {
                Self::connect(&e.address, &e.token, name).await
            }
            crate::config::Resolved::LocalDefault => {
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                let started = tokio::task::spawn_blocking(move || {
                    crate::embedded::EmbeddedCluster::start(workers)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|reason| ClientError::Connect {
                    addr: "a cluster inside this program".into(),
                    reason,
                })?;
                let client = Self::connect(started.address(), started.token(), name).await?;
                let _ = client.inner.embedded.set(started);
                Ok(client)
            }
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(u64) -> ToScheduler,
    ) -> Result<FromScheduler, ClientError> {
        let rx = self.send_request(make)?;
        rx.await.map_err(|_| self.lost_error())
    }

    /// The error for a call the lost connection ended:
    /// [`ClientError::ShutDown`] if the scheduler said it was shutting
    /// down, else [`ClientError::Disconnected`].
    pub fn lost_error(&self) -> ClientError {
        if self.inner.shut_down.load(Ordering::Relaxed) {
            ClientError::ShutDown
        } else {
            ClientError::Disconnected
        }
    }

    /// Sends the request `make` builds with a fresh id, returning where
    /// its answer will arrive. A request that is safe to repeat (see
    /// [`repeatable`]) is kept until answered: if the connection breaks
    /// first, whether or not the scheduler saw it, it is sent again on the
    /// next one, so a restart costs it a wait, not an error.
    fn send_request(
        &self,
        make: impl FnOnce(u64) -> ToScheduler,
    ) -> Result<oneshot::Receiver<FromScheduler>, ClientError> {
        let (id, rx) = self.expect_reply()?;
        let msg = make(id);
        if repeatable(&msg) {
            self.inner
                .resend
                .lock()
                .expect("resend lock")
                .insert(id, Asked::new(&msg));
        }
        if let Err(e) = self.send(msg) {
            self.forget_reply(id);
            return Err(e);
        }
        Ok(rx)
    }

    /// A fresh request id and where its answer will arrive.
    fn expect_reply(&self) -> Result<(u64, oneshot::Receiver<FromScheduler>), ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Ok((id, self.expect_reply_as(id)?))
    }

    /// Where the answer to request `id` will arrive: an id of this
    /// client's, asked again after the waiter it had went with a broken
    /// connection.
    fn expect_reply_as(&self, id: u64) -> Result<oneshot::Receiver<FromScheduler>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .replies
            .lock()
            .expect("replies lock")
            .as_mut()
            .ok_or_else(|| self.lost_error())?
            .insert(id, tx);
        Ok(rx)
    }

    /// Asks request `msg`, whose id is `id` (asked before, or fresh from
    /// `next_id`), for its answer.
    async fn ask_as(&self, id: u64, msg: ToScheduler) -> Result<FromScheduler, ClientError> {
        let rx = self.expect_reply_as(id)?;
        if let Err(e) = self.send(msg) {
            self.forget_reply(id);
            return Err(e);
        }
        rx.await.map_err(|_| self.lost_error())
    }

    /// Stops waiting for the answer to request `id`.
    fn forget_reply(&self, id: u64) {
        if let Some(replies) = self.inner.replies.lock().expect("replies lock").as_mut() {
            replies.remove(&id);
        }
        self.inner.resend.lock().expect("resend lock").remove(&id);
    }

    fn send(&self, msg: ToScheduler) -> Result<(), ClientError> {
        let sent = self.inner.tx.lock().expect("sender lock").send(msg);
        sent.map_err(|_| self.lost_error())
    }

    /// Whether the connection to the scheduler is up (not broken, nor
    /// being made again).
    pub fn is_connected(&self) -> bool {
        matches!(*self.inner.tx.lock().expect("sender lock"), Outbox::Up(_))
    }

    /// Makes sure the scheduler has `module`, uploading it if it lacks it.
    pub async fn upload(&self, module: &LocalModule) -> Result<(), ClientError> {
        let hash = module.hash().to_string();
        if self
            .inner
            .uploaded
            .lock()
            .expect("uploaded lock")
            .contains(&hash)
        {
            return Ok(());
        }
        let reply = self
            .request(|id| ToScheduler::HasModules {
                id,
                hashes: vec![hash.clone()],
            })
            .await?;
        if let FromScheduler::MissingModules { hashes, .. } = reply
            && !hashes.is_empty()
        {
            self.send(ToScheduler::UploadModule {
                hash: hash.clone(),
                bytes: module.bytes.clone(),
            })?;
        }
        self.inner
            .uploaded
            .lock()
            .expect("uploaded lock")
            .insert(hash);
        Ok(())
    }

    /// Submits one call of `function` in `module` and returns its future.
    /// Arguments are checked against the export's types when they are
    /// values; futures are checked when they arrive.
    pub async fn submit(
        &self,
        module: &LocalModule,
        function: &str,
        args: Vec<Arg>,
        options: &SubmitOptions,
    ) -> Result<Future, ClientError> {
        check_call(module, function, &args).map_err(ClientError::Invalid)?;
        self.upload(module).await?;
        let spec = task_spec(module.hash(), function, args, options);
        // Held before the submit goes out, so that dropping another future
        // of the same key meanwhile cannot release it behind this submit.
        let future = self.future(spec.key.clone());
        self.submit_specs(vec![spec]).await?.await?;
        Ok(future)
    }

    /// Submits one call per argument list; returns their futures in order.
    ///
    /// Calls go out in batches of [`MAP_BATCH`] as they are prepared, so
    /// the scheduler places (and workers run) the first while the rest are
    /// still being hashed and encoded; all are acknowledged before this
    /// returns. A refused call fails the map (the error lists the refused
    /// calls of the first batch with any), and the futures of the calls
    /// taken with it are dropped, releasing them.
    pub async fn map(
        &self,
        module: &LocalModule,
        function: &str,
        calls: Vec<Vec<Arg>>,
        options: &SubmitOptions,
    ) -> Result<Vec<Future>, ClientError> {
        for args in &calls {
            check_call(module, function, args).map_err(ClientError::Invalid)?;
        }
        self.upload(module).await?;
        let mut futures: Vec<Future> = Vec::with_capacity(calls.len());
        let mut acks = Vec::new();
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let specs: Vec<TaskSpec> = calls
                .by_ref()
                .take(MAP_BATCH)
                .map(|args| task_spec(module.hash(), function, args, options))
                .collect();
            // Held before the submit goes out (see `submit`).
            futures.extend(specs.iter().map(|s| self.future(s.key.clone())));
            acks.push(self.submit_specs(specs).await?);
            // Let the connection's writer send this batch now, on a
            // one-thread runtime too, rather than after the last one.
            tokio::task::yield_now().await;
        }
        for ack in acks {
            ack.await?;
        }
        Ok(futures)
    }

    /// A handle on `key` that holds it while it lives (the scheduler must
    /// hold it for this client, e.g. by a submit, before this client sends
    /// anything after the handle's release).
    pub fn future(&self, key: String) -> Future {
        *self
            .inner
            .refs
            .lock()
            .expect("refs lock")
            .entry(key.clone())
            .or_insert(0) += 1;
        Future {
            key,
            client: self.clone(),
        }
    }

    /// Makes a connection lost to a scheduler that went away (not one shut
    /// down on purpose) start it again with `start` while reconnecting,
    /// once an attempt to reach it has failed: for a scheduler this client
    /// may start itself, as the shell's local default, which resumes from
    /// its journal. Without it a client only waits for the scheduler to
    /// come back (for the reconnect grace). It starts it at most once, so
    /// that a scheduler that fails again and again is not started for as
    /// long as a client waits. Set once; later calls do nothing.
    pub fn restart_when_lost(
        &self,
        start: impl Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), String>> + Send>,
        > + Send
        + Sync
        + 'static,
    ) {
        let mut restart = self.inner.restart.lock().expect("restart lock");
        if restart.is_none() {
            *restart = Some(Arc::new(start));
        }
    }

    /// Makes each submit of a key by this client hold it once more, and
    /// each [`Client::release`] of it let go of one: for a client that
    /// keeps no [`Future`]s and releases what it submitted itself, as the
    /// CLI does, whose commands share a client name. Without it (and for
    /// futures, which count their handles here) a client name holds a
    /// key once, however often it submits it.
    pub fn count_submits(&self) {
        self.inner.counted.store(true, Ordering::Relaxed);
    }

    /// Stores values on workers (round-robin, or on every worker with
    /// `broadcast`) as finished futures.
    pub async fn scatter(
        &self,
        values: Vec<Value>,
        broadcast: bool,
        workers: Vec<String>,
    ) -> Result<Vec<Future>, ClientError> {
        let encoded = values.iter().map(|v| value::encode(v).into()).collect();
        self.scatter_encoded(encoded, broadcast, workers).await
    }

    /// [`Client::scatter`] of values already encoded as MessagePack (see
    /// [`value::read_binary`], which reads a file straight into the
    /// encoding of its bytes).
    pub async fn scatter_encoded(
        &self,
        values: Vec<Bytes>,
        broadcast: bool,
        workers: Vec<String>,
    ) -> Result<Vec<Future>, ClientError> {
        let values = values.into_iter().map(Encoded::Memory).collect();
        self.scatter_from(values, broadcast, workers).await
    }

    /// [`Client::scatter_encoded`] of encodings in memory or read from
    /// files ([`value::EncodedFile`]): a file is hashed, then sent, a range
    /// at a time, never held whole.
    pub async fn scatter_from(
        &self,
        values: Vec<Encoded>,
        broadcast: bool,
        workers: Vec<String>,
    ) -> Result<Vec<Future>, ClientError> {
        self.scatter_holding(values, (broadcast, false), workers)
            .await
    }

    /// [`Client::scatter_from`] to any worker, but the hold it takes is its
    /// own: a key this client's name holds already (an earlier scatter of
    /// the same bytes) is held once more, so that releasing what this
    /// returns lets go of this hold only. For values scattered for one
    /// call and released once the call holds them.
    pub async fn scatter_counted(&self, values: Vec<Encoded>) -> Result<Vec<Future>, ClientError> {
        self.scatter_holding(values, (false, true), Vec::new())
            .await
    }

    /// Scatters `values`, `(broadcast, counted)`.
    async fn scatter_holding(
        &self,
        values: Vec<Encoded>,
        (broadcast, counted): (bool, bool),
        workers: Vec<String>,
    ) -> Result<Vec<Future>, ClientError> {
        let unreadable = |e: std::io::Error| ClientError::Invalid(e.to_string());
        let total: u64 = values.iter().map(Encoded::len).sum();
        let mut keyed = Vec::with_capacity(values.len());
        for value in values {
            let key = value.off_thread(Encoded::data_key).await;
            keyed.push((key.map_err(unreadable)?, value));
        }
        let keys: Vec<String> = keyed.iter().map(|(k, _)| k.clone()).collect();
        let reply = if total <= peer::CHUNK {
            let mut values = Vec::with_capacity(keyed.len());
            for (k, v) in keyed {
                values.push((k, v.off_thread(Encoded::bytes).await.map_err(unreadable)?));
            }
            self.request(|id| ToScheduler::Scatter {
                id,
                values,
                broadcast,
                workers,
                counted,
                session: self.inner.session,
            })
            .await?
        } else {
            self.scatter_direct(keyed, (broadcast, counted), workers)
                .await?
        };
        match reply {
            FromScheduler::Scattered { .. } => {
                Ok(keys.into_iter().map(|k| self.future(k)).collect())
            }
            FromScheduler::Failed { message, .. } => Err(ClientError::Invalid(message)),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Scatters big values straight to the workers' data ports, in ranges,
    /// so they never pass through the scheduler (nor its frame limit): the
    /// scheduler places them, this client sends each where it was placed,
    /// and the scheduler confirms once the workers have kept them. Returns
    /// the confirmation.
    ///
    /// A connection that breaks meanwhile costs a wait, not an error: the
    /// placement is asked for again (the same request ids, under this
    /// client's session) once the connection is back, answered with the
    /// same workers, and only values not sent yet are sent (all that it
    /// lists, if it was placed afresh).
    async fn scatter_direct(
        &self,
        values: Vec<(String, Encoded)>,
        (broadcast, counted): (bool, bool),
        workers: Vec<String>,
    ) -> Result<FromScheduler, ClientError> {
        let (confirm, mut confirmed) = self.expect_reply()?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sizes: Vec<(String, u64)> = values.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        let bytes: HashMap<String, Encoded> = values.into_iter().collect();
        // Copies sent, by (key, worker address): not sent again.
        let mut sent: HashSet<(String, String)> = HashSet::new();
        let mut breaks = 0;
        loop {
            let place = ToScheduler::Place {
                id,
                confirm,
                values: sizes.clone(),
                broadcast,
                workers: workers.clone(),
                counted,
                session: self.inner.session,
            };
            let placed = match self.ask_as(id, place).await {
                Err(ClientError::Disconnected) if breaks < PLACE_BREAKS => {
                    breaks += 1;
                    confirmed = self.expect_reply_as(confirm)?;
                    continue;
                }
                placed => placed,
            };
            let puts = match placed {
                Ok(FromScheduler::Placed { puts, again, .. }) => {
                    // Placed afresh (the first copy's placement ended, or
                    // never was): every copy listed goes.
                    if !again {
                        sent.clear();
                    }
                    puts
                }
                other => {
                    self.forget_reply(confirm);
                    return match other? {
                        FromScheduler::Failed { message, .. } => Err(ClientError::Invalid(message)),
                        other => Err(ClientError::unexpected(other)),
                    };
                }
            };
            for (key, addrs) in puts {
                let Some(value) = bytes.get(&key) else {
                    continue;
                };
                for addr in addrs {
                    let copy = (key.clone(), addr);
                    if sent.contains(&copy) {
                        continue;
                    }
                    if let Err(why) = peer::put(&copy.1, &self.inner.peer_token, &key, value).await
                    {
                        let reason = format!("cannot send {key} to worker {}: {why}", copy.1);
                        // The scheduler fails what was not sent, so the
                        // confirmation (or this error) is the answer.
                        self.send(ToScheduler::Unplace {
                            confirm,
                            reason: reason.clone(),
                            session: self.inner.session,
                        })?;
                        return match confirmed.await {
                            Ok(FromScheduler::Failed { message, .. }) => {
                                Err(ClientError::Invalid(message))
                            }
                            _ => Err(ClientError::Invalid(reason)),
                        };
                    }
                    sent.insert(copy);
                }
            }
            match (&mut confirmed).await {
                Ok(answer) => return Ok(answer),
                Err(_) if breaks < PLACE_BREAKS => {
                    breaks += 1;
                    confirmed = self.expect_reply_as(confirm)?;
                }
                Err(_) => return Err(self.lost_error()),
            }
        }
    }

    /// Cancels keys: they and their pending dependents become `cancelled`;
    /// running ones are interrupted. Without `force`, keys other clients
    /// also hold are only released for this one.
    pub fn cancel(&self, keys: Vec<String>, force: bool) -> Result<(), ClientError> {
        self.send(ToScheduler::Cancel { keys, force })
    }

    /// Runs erred keys again from where their errors started.
    pub async fn retry(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.retry_with(keys, TaskLimits::default()).await
    }

    /// Like [`Client::retry`], with new limits for the runs (those unset
    /// stay as submitted); a memory limit no connected worker allows is
    /// refused.
    pub async fn retry_with(
        &self,
        keys: Vec<String>,
        limits: TaskLimits,
    ) -> Result<(), ClientError> {
        match self
            .request(|id| ToScheduler::Retry {
                id,
                session: self.inner.session,
                keys,
                limits,
            })
            .await?
        {
            FromScheduler::Retried { refused, .. } if refused.is_empty() => Ok(()),
            FromScheduler::Retried { refused, .. } => Err(ClientError::Refused(refused)),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Computes keys even when nobody holds them any more; their results
    /// are dropped once done.
    pub fn fire_and_forget(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.send(ToScheduler::FireAndForget { keys })
    }

    /// Stops holding every key this client's name holds (every key the
    /// CLI submitted under `DTASK_CLIENT`, say); what nothing else needs
    /// is freed.
    pub fn release_all(&self) -> Result<(), ClientError> {
        self.send(ToScheduler::ReleaseAll)
    }

    /// Stops holding `keys` for this client.
    pub fn release(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.send(ToScheduler::Release { keys })?;
        if fault_cut_after_release()
            && let Some(conn) = self.inner.conn.lock().expect("conn lock").as_ref()
        {
            conn.cut();
        }
        Ok(())
    }

    /// Finishes with this client: waits until the scheduler has taken
    /// everything sent before (releases, cancels and fire-and-forgets are
    /// otherwise sent in the background, and a program that ends right
    /// after may never write them) and, for an unnamed client, has been
    /// told the client is leaving, so its holds and leases end as soon as
    /// its connection closes instead of after the 60 s a session that
    /// broke off is waited for.
    ///
    /// Call it last, before the program (or its runtime) ends. Other
    /// handles of the same client still work afterwards, but once it has
    /// said it is leaving a broken connection ends what it holds at once.
    /// Fails as [`ClientError::Disconnected`] if the scheduler could not be
    /// reached to confirm it; what the client held then ends after the
    /// session's grace.
    pub async fn close(self) -> Result<(), ClientError> {
        if self.inner.leaves {
            self.send(ToScheduler::Leave)?;
        }
        // Messages on a connection are taken in order: an answer to a
        // request sent after them means the scheduler has them all.
        self.status(Vec::new()).await?;
        Ok(())
    }

    /// Asks the scheduler (and its workers) to stop, and waits until it
    /// has closed the connection.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.set_reconnect_grace(Duration::ZERO);
        self.send(ToScheduler::Shutdown)?;
        // A request after it is answered once the scheduler has taken the
        // shutdown, or fails when it has already closed the connection:
        // either way the shutdown is under way.
        if let Ok(rx) = self.send_request(|id| ToScheduler::Status {
            id,
            keys: vec![],
            timings: false,
        }) {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn a_pure_key_still_depends_on_granted_values() {
        let key = |value: &str| {
            let options = super::SubmitOptions {
                grants: crate::protocol::Grants {
                    env: vec![("MODE".into(), value.into())],
                    dirs: vec![],
                },
                ..Default::default()
            };
            super::task_spec("m", "f", vec![], &options).key
        };
        assert_eq!(key("fast"), key("fast"));
        assert_ne!(key("fast"), key("slow"));
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::{Outbox, ToScheduler};

    /// A connection whose writer stopped on its own (here: its queue's
    /// reader is gone) does not lose what is sent before the client's
    /// reader notices: the message waits, in order, for the next
    /// connection.
    #[test]
    fn a_send_the_stopped_writer_refuses_waits_for_the_next_connection() {
        let (tx, rx) = crate::connection::relay::<ToScheduler>();
        let mut outbox = Outbox::Up(tx);
        outbox
            .send(ToScheduler::Release {
                keys: vec!["a".into()],
            })
            .unwrap();
        drop(rx);
        for key in ["b", "c"] {
            outbox
                .send(ToScheduler::Release {
                    keys: vec![key.into()],
                })
                .expect("kept for the next connection, not failed");
        }
        let Outbox::Down(queue, bytes) = &outbox else {
            panic!("the outbox should wait for the next connection");
        };
        assert!(*bytes > 0);
        let keys: Vec<_> = queue
            .iter()
            .map(|m| match m {
                ToScheduler::Release { keys } => keys[0].as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(keys, ["b", "c"]);
        // The next connection breaks at once: what was carried over and
        // what waited stay, in order, for the one after.
        let (broken, gone) = crate::connection::relay::<ToScheduler>();
        drop(gone);
        let carried = ToScheduler::Release {
            keys: vec!["a".into()],
        };
        outbox.come_up(vec![carried], broken);
        let Outbox::Down(queue, _) = &outbox else {
            panic!("the outbox should still wait");
        };
        assert_eq!(queue.len(), 3);
        let (next, mut rx) = crate::connection::relay::<ToScheduler>();
        outbox.come_up(Vec::new(), next);
        match rx.try_recv().unwrap() {
            ToScheduler::Release { keys } => assert_eq!(keys, ["a"]),
            other => panic!("unexpected {other:?}"),
        }
        for key in ["b", "c"] {
            match rx.try_recv().unwrap() {
                ToScheduler::Release { keys } => assert_eq!(keys, [key]),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
