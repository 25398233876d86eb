//! The worker process: registers with the scheduler, runs the tasks it is
//! sent in its [`sandbox`], keeps their results in memory, and serves them to
//! peers on its data port.
//!
//! Each task is a tokio task that takes one of the worker's execution slots
//! (a semaphore permit) only while it computes: fetching inputs and, later,
//! waiting in blocking host calls hold no slot and no OS thread.

mod bulk;
pub mod host;
pub mod logs;
pub mod sandbox;
pub mod slots;
pub mod store;

use crate::connection::{self, Sender};
use crate::module;
use crate::peer;
use crate::protocol::{
    ActorSpec, ErrorKind, FromPeer, FromScheduler, HEARTBEAT, Hello, Located, PROTOCOL_VERSION,
    Role, RunArg, RunTask, TaskError, ToScheduler,
};
use crate::value::{self, Value};
use bytes::Bytes;
use host::{Link, TaskLink};
use sandbox::{Limits, Ready, RunLimits, Sandbox, TaskArg};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, oneshot};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The scheduler's address.
    pub scheduler: String,
    /// The worker token ([`crate::secret`]): it joins the scheduler, fetches
    /// from peers and admits peers to this worker's data port.
    pub token: crate::secret::Secret,
    /// Execution slots.
    pub nthreads: u32,
    /// Host to bind the data port on.
    pub listen_host: String,
    /// Port of the data port (0: any free one).
    pub data_port: u16,
    /// The host others reach the data port at, when not the bound one;
    /// `None` with a wildcard bind (`0.0.0.0`, `::`): the address this
    /// worker reaches the scheduler from.
    pub advertise: Option<String>,
    /// Where compiled modules are cached, if anywhere.
    pub cache_dir: Option<PathBuf>,
    /// Per-task limits.
    pub limits: Limits,
    /// Abstract resources this worker offers, e.g. `("GPU", 1.0)`.
    pub resources: Vec<(String, f64)>,
    /// How long to keep trying to rejoin a scheduler that went away (a
    /// restart) before stopping.
    pub reconnect_grace: Duration,
    /// Host directories tasks may be granted read access to (and those
    /// inside them); none by default.
    pub allow_dirs: Vec<PathBuf>,
    /// Bytes of results kept in memory; the least recently used beyond it
    /// are spilled to disk.
    pub memory_budget: usize,
    /// Where results are spilled (in a subdirectory of this worker's own,
    /// removed when it stops).
    pub spill_dir: PathBuf,
    /// How many workers its supervisor started before this one in its
    /// place, after each died (`dtask workers` shows it).
    pub restarts: u32,
}

/// The default memory budget: half of this machine's memory (or 1 GiB
/// where that cannot be read), shared by `workers` workers.
pub fn default_memory_budget(workers: usize) -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(2 << 30, |kib| kib * 1024);
    total / 2 / workers.max(1)
}

/// Whether a task may be granted `dir`: it must resolve to a directory
/// within one of `allowed`.
fn allowed_dir(allowed: &[PathBuf], dir: &str) -> Result<(), String> {
    let real = std::fs::canonicalize(dir)
        .map_err(|e| format!("the granted directory {dir} cannot be opened here: {e}"))?;
    let inside = allowed
        .iter()
        .any(|a| std::fs::canonicalize(a).is_ok_and(|a| real.starts_with(a)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "this worker does not let tasks read {dir}; start it with --allow-dir (a directory containing it)"
        ))
    }
}

type ModuleSlot = Arc<OnceCell<Result<Arc<Ready>, String>>>;

struct Shared {
    sandbox: Sandbox,
    options: WorkerOptions,
    results: peer::Store,
    /// Live actors' call queues.
    actors: peer::Actors,
    modules: Mutex<HashMap<String, ModuleSlot>>,
    module_waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Option<Bytes>>>>>,
    slots: Arc<slots::Slots>,
    /// What tasks use to act as clients and give their slots back.
    link: Arc<Link>,
    /// The outbox: messages for whichever scheduler connection is current.
    to_scheduler: tokio::sync::mpsc::UnboundedSender<ToScheduler>,
    /// Tasks in flight (running or waiting for a slot), to interrupt on
    /// cancel and to report in heartbeats.
    running: Mutex<Running>,
    /// The id the current scheduler connection gave this worker.
    id: std::sync::atomic::AtomicU64,
    /// What the latest tasks wrote, for `dtask logs`.
    logs: Arc<logs::Logs>,
    /// Inputs fetched from other workers, and their bytes, ever.
    fetched: std::sync::atomic::AtomicU64,
    fetched_bytes: std::sync::atomic::AtomicU64,
}

/// A worker's tasks in hand and the `seq` of the last `Run` that brought
/// some: kept under one lock, so a heartbeat reports them consistently.
#[derive(Default)]
struct Running {
    tasks: HashMap<String, InHand>,
    run_seq: u64,
}

/// A task in hand.
struct InHand {
    /// Its tokio task.
    abort: tokio::task::AbortHandle,
    /// Whether it took a slot and began: until then the scheduler may take
    /// it back to run elsewhere (stealing).
    started: bool,
}

impl Shared {
    /// Notes that the current tokio task, running task `key`, took its
    /// slot and begins; false if the task was taken back (stolen or
    /// cancelled) meanwhile, when it must not run.
    fn begin(&self, key: &str) -> bool {
        let mut running = self.running.lock().expect("running lock");
        match running.tasks.get_mut(key) {
            Some(t) if t.abort.id() == tokio::task::id() => {
                t.started = true;
                true
            }
            _ => false,
        }
    }
}

/// Runs a worker until the scheduler tells it to stop or goes away.
pub async fn run(options: WorkerOptions) -> anyhow::Result<()> {
    let listener = TcpListener::bind((options.listen_host.as_str(), options.data_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}:{} for the data port: {e}",
                options.listen_host,
                options.data_port
            )
        })?;
    let data_addr = advertised(
        listener.local_addr()?,
        options.advertise.as_deref(),
        &options.scheduler,
    )?;
    let name = format!("{}:{}", host_name(), std::process::id());
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token: options.token.expose().to_string(),
        role: Role::Worker {
            nthreads: options.nthreads,
            data_addr: data_addr.clone(),
            name: name.clone(),
            resources: options.resources.clone(),
            memory_limit: options.limits.memory as u64,
            restarts: options.restarts,
        },
    };
    // A scheduler starting at the same time (or restarting) gets the
    // reconnect grace to come up.
    let (admission, mut connected, mut from_scheduler) =
        join(&options.scheduler, &hello, options.reconnect_grace).await?;
    let id = admission.id;
    // Everything for the scheduler goes through this outbox, which outlives
    // any one connection: after a reconnect it feeds the new one.
    let (to_scheduler, mut outbox) = tokio::sync::mpsc::unbounded_channel::<ToScheduler>();
    tracing::info!(
        "worker {id} ({name}) joined {} with data port {data_addr}",
        options.scheduler
    );
    let sandbox = Sandbox::new(
        &format!("worker-{id}"),
        options.limits.clone(),
        options.nthreads,
    )?;
    let results: peer::Store = Arc::new(store::ResultStore::new(
        options.memory_budget,
        options
            .spill_dir
            .join(format!("worker-{}-{id}", std::process::id())),
    ));
    let actors: peer::Actors = Default::default();
    let logs: Arc<logs::Logs> = Default::default();
    tokio::spawn(peer::serve(
        listener,
        peer::Admits {
            worker: options.token.clone(),
            client_digest: admission.client_digest,
        },
        results.clone(),
        actors.clone(),
        logs.clone(),
    ));
    let slots = slots::Slots::new(options.nthreads.max(1) as usize);
    let link = Arc::new(Link::new(
        options.scheduler.clone(),
        options.token.clone(),
        slots.clone(),
        to_scheduler.clone(),
        &format!("worker-{id}"),
    ));
    let shared = Arc::new(Shared {
        sandbox,
        slots,
        link,
        options,
        results,
        actors,
        modules: Default::default(),
        module_waiters: Default::default(),
        to_scheduler,
        running: Default::default(),
        id: id.into(),
        logs,
        fetched: Default::default(),
        fetched_bytes: Default::default(),
    });
    tokio::spawn(heartbeats(Arc::downgrade(&shared)));
    loop {
        let incoming = tokio::select! {
            out = outbox.recv() => {
                if let Some(m) = out {
                    // A failed send shows up as a closed connection below.
                    let _ = connected.send(m);
                }
                continue;
            }
            incoming = from_scheduler.recv() => incoming,
        };
        match incoming {
            Ok(Some(FromScheduler::Run { seq, tasks })) => {
                // Holding the lock while spawning means a task that ends at
                // once still finds its entry to remove.
                let mut running = shared.running.lock().expect("running lock");
                running.run_seq = seq;
                for task in tasks {
                    // Sent again while the first was slow to arrive: it is
                    // already in hand.
                    if running.tasks.contains_key(&task.key) {
                        continue;
                    }
                    let key = task.key.clone();
                    let handle = tokio::spawn(execute(shared.clone(), task));
                    let abort = handle.abort_handle();
                    running.tasks.insert(
                        key,
                        InHand {
                            abort,
                            started: false,
                        },
                    );
                }
            }
            Ok(Some(FromScheduler::Cancel { keys })) => {
                let mut running = shared.running.lock().expect("running lock");
                for k in keys {
                    // Aborting drops the task at its next await: a guest
                    // yields at every epoch tick, so within one tick.
                    if let Some(t) = running.tasks.remove(&k) {
                        t.abort.abort();
                    }
                }
            }
            Ok(Some(FromScheduler::Steal { keys })) => {
                // Gives back the tasks that have not begun: dropped here,
                // they run on the worker that asked for them.
                let mut running = shared.running.lock().expect("running lock");
                let given: Vec<String> = keys
                    .into_iter()
                    .filter(|k| running.tasks.get(k).is_some_and(|t| !t.started))
                    .collect();
                for k in &given {
                    if let Some(t) = running.tasks.remove(k) {
                        t.abort.abort();
                    }
                }
                // Sent under the lock: no heartbeat can report them gone
                // before this answer.
                let _ = shared
                    .to_scheduler
                    .send(ToScheduler::Stolen { keys: given });
            }
            Ok(Some(FromScheduler::Store { values })) => {
                // Storing may spill to disk: off the async threads, in order.
                let shared = shared.clone();
                tokio::spawn(async move {
                    let store = shared.results.clone();
                    let kept = tokio::task::spawn_blocking(move || {
                        let mut kept = Vec::with_capacity(values.len());
                        let mut refused = Vec::new();
                        for (key, bytes) in values {
                            match keep(&store, &key, bytes) {
                                Ok(at) => kept.push((key, at)),
                                Err(e) => refused.push((key, e)),
                            }
                        }
                        (kept, refused)
                    })
                    .await;
                    if let Ok((kept, refused)) = kept {
                        if !kept.is_empty() {
                            let _ = shared
                                .to_scheduler
                                .send(ToScheduler::Finished { results: kept });
                        }
                        if !refused.is_empty() {
                            let _ = shared
                                .to_scheduler
                                .send(ToScheduler::Erred { errors: refused });
                        }
                    }
                });
            }
            Ok(Some(FromScheduler::Sync { seq })) => {
                // Every `Run` up to `seq` came before this, or never will.
                let mut running = shared.running.lock().expect("running lock");
                running.run_seq = running.run_seq.max(seq);
            }
            Ok(Some(FromScheduler::Free { keys })) => {
                for k in keys {
                    shared.results.remove(&k);
                }
            }
            Ok(Some(FromScheduler::Module { hash, bytes })) => {
                let waiters = shared
                    .module_waiters
                    .lock()
                    .expect("module waiters lock")
                    .remove(&hash)
                    .unwrap_or_default();
                for w in waiters {
                    let _ = w.send(bytes.clone());
                }
            }
            Ok(Some(FromScheduler::NewActor { spec })) => {
                tokio::spawn(start_actor(shared.clone(), spec));
            }
            Ok(Some(FromScheduler::DropActor { key })) => {
                // Its loop ends, and the instance goes, with the queue.
                shared.actors.lock().expect("actor table lock").remove(&key);
            }
            Ok(Some(FromScheduler::Shutdown)) => {
                tracing::info!("scheduler asked this worker to stop");
                return Ok(());
            }
            Ok(Some(other)) => tracing::warn!("unexpected message for a worker: {other:?}"),
            Ok(None) | Err(_) => {
                let (tx, rx) = rejoin(&shared, &hello).await?;
                connected = tx;
                from_scheduler = rx;
            }
        }
    }
}

/// After the scheduler connection broke: stops the running tasks (the
/// scheduler will run them again), then joins the scheduler again at the
/// same address, retrying for the reconnect grace, and reports the results
/// held here so finished work is not lost.
async fn rejoin(
    shared: &Shared,
    hello: &Hello,
) -> anyhow::Result<(Sender<ToScheduler>, connection::Receiver<FromScheduler>)> {
    {
        let mut running = shared.running.lock().expect("running lock");
        for (_, task) in running.tasks.drain() {
            task.abort.abort();
        }
        // A new connection numbers its `Run` messages afresh.
        running.run_seq = 0;
    }
    let grace = shared.options.reconnect_grace;
    tracing::warn!(
        "lost the scheduler at {}; trying to rejoin for {grace:?}",
        shared.options.scheduler
    );
    let (connection::Admission { id, .. }, tx, rx) =
        join(&shared.options.scheduler, hello, grace).await?;
    shared.id.store(id, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<(String, Located)> = shared.results.located();
    tracing::info!(
        "rejoined the scheduler as worker {id}, holding {} results",
        results.len()
    );
    let _ = tx.send(ToScheduler::Holding { results });
    Ok((tx, rx))
}

/// Connects to the scheduler at `addr`, retrying for `grace`; a refusal
/// (wrong token, other version) is final.
async fn join(
    addr: &str,
    hello: &Hello,
    grace: Duration,
) -> anyhow::Result<(
    connection::Admission,
    Sender<ToScheduler>,
    connection::Receiver<FromScheduler>,
)> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match connection::connect::<FromScheduler, ToScheduler>(addr, hello.clone()).await {
            Ok(joined) => return Ok(joined),
            Err(why) if why.is_final() => {
                anyhow::bail!("the scheduler at {addr} refused this worker: {why}")
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("cannot join the scheduler at {addr} (tried for {grace:?}): {e}")
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// How long a worker waits between attempts to rejoin.
const RETRY: Duration = Duration::from_millis(100);

/// The address peers reach the data port at: `advertise` with the bound
/// port if given; the bound address unless it is a wildcard; else the
/// local address of the route to the scheduler (found without sending
/// anything), which is what other hosts reach this one at.
fn advertised(
    bound: std::net::SocketAddr,
    advertise: Option<&str>,
    scheduler: &str,
) -> anyhow::Result<String> {
    use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
    if let Some(host) = advertise {
        return Ok(address(host, bound.port()));
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let route = || -> std::io::Result<std::net::IpAddr> {
        let to = scheduler
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("it resolves to nothing"))?;
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        let probe = UdpSocket::bind(any)?;
        probe.connect(to)?;
        Ok(probe.local_addr()?.ip())
    };
    match route() {
        Ok(ip) => Ok(SocketAddr::new(ip, bound.port()).to_string()),
        Err(e) => anyhow::bail!(
            "the data port is bound to {bound}, which peers cannot use, and the address \
             that reaches the scheduler at {scheduler} cannot be found ({e}); pass \
             --advertise HOST"
        ),
    }
}

/// `host:port` for a host name or an IP address (an IPv6 one bracketed,
/// with or without brackets given): what others dial.
pub fn address(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// This machine's host name (`localhost` if it has none).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

/// Tells the scheduler every [`HEARTBEAT`] that this worker is alive, what
/// it has in hand, and what it holds, until the worker stops.
async fn heartbeats(shared: std::sync::Weak<Shared>) {
    let mut every = tokio::time::interval(HEARTBEAT);
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (run_seq, running) = {
            let r = shared.running.lock().expect("running lock");
            (r.run_seq, r.tasks.keys().cloned().collect())
        };
        let u = shared.results.usage();
        let alive = ToScheduler::Heartbeat {
            worker: shared.id.load(std::sync::atomic::Ordering::Relaxed),
            run_seq,
            running,
            spilled_bytes: u.spilled,
            held_bytes: u.in_memory + u.spilled,
            rss_bytes: crate::resident_bytes(),
            fetched: shared.fetched.load(std::sync::atomic::Ordering::Relaxed),
            fetched_bytes: shared
                .fetched_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        if shared.to_scheduler.send(alive).is_err() {
            return;
        }
    }
}

/// Keeps a result (it may spill to disk: blocking), returning how it is
/// reported, or the memory error that refuses it.
fn keep(store: &store::ResultStore, key: &str, bytes: Bytes) -> Result<Located, TaskError> {
    let at = store::located(&bytes);
    store
        .insert(key.to_string(), bytes)
        .map(|()| at)
        .map_err(|message| TaskError::new(ErrorKind::Memory, message, key))
}

async fn execute(shared: Arc<Shared>, task: RunTask) {
    use futures::FutureExt;
    let key = task.key.clone();
    // A bug that panics here must still answer for the task: an error
    // reported is better than a task the scheduler waits on for ever.
    let outcome = std::panic::AssertUnwindSafe(compute(&shared, task))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(TaskError::new(
                ErrorKind::Internal,
                format!("the worker failed running task {key}: {what}"),
                &key,
            ))
        });
    let msg = match outcome {
        Ok(bytes) => {
            let at = store::located(&bytes);
            // Most results fit in memory at once; one that makes the store
            // spill is kept off the async threads.
            let kept = match shared.results.insert_in_memory(&key, bytes) {
                Ok(()) => Ok(at),
                Err(bytes) => {
                    let store = shared.results.clone();
                    let k = key.clone();
                    tokio::task::spawn_blocking(move || keep(&store, &k, bytes))
                        .await
                        .unwrap_or_else(|e| {
                            let message = format!("storing the result failed: {e}");
                            Err(TaskError::new(ErrorKind::Memory, message, &key))
                        })
                }
            };
            match kept {
                Ok(at) => ToScheduler::Finished {
                    results: vec![(key.clone(), at)],
                },
                Err(e) => ToScheduler::Erred {
                    errors: vec![(key.clone(), e)],
                },
            }
        }
        Err(error) => ToScheduler::Erred {
            errors: vec![(key.clone(), error)],
        },
    };
    // Reported before it leaves the tasks in hand, so no heartbeat in
    // between can say it is gone before its result arrives.
    let _ = shared.to_scheduler.send(msg);
    let mut running = shared.running.lock().expect("running lock");
    // Only its own entry: taken back meanwhile and sent here again, the key
    // is another copy's.
    if running
        .tasks
        .get(&key)
        .is_some_and(|t| t.abort.id() == tokio::task::id())
    {
        running.tasks.remove(&key);
    }
}

async fn compute(shared: &Shared, task: RunTask) -> Result<Bytes, TaskError> {
    let err = |kind, message: String| TaskError {
        kind,
        message,
        stderr: String::new(),
        backtrace: String::new(),
        origin: task.key.clone(),
    };
    let ready = load_module(shared, &task.module)
        .await
        .map_err(|m| err(ErrorKind::Module, m))?;
    let mut args = Vec::with_capacity(task.args.len());
    for arg in &task.args {
        let bytes = match arg {
            RunArg::Value(b) => b.clone(),
            RunArg::Dep { key, at } => match &at.inline {
                Some(b) => b.clone(),
                None => dependency(shared, key, &at.who_has)
                    .await
                    .map_err(|m| err(ErrorKind::Lost, m))?,
            },
        };
        // A big byte string stays a slice of what arrived, for a bulk copy
        // into the guest.
        if let Some(payload) = value::binary_payload(&bytes)
            && payload.len() >= crate::blob::OUT_OF_BAND
        {
            args.push(TaskArg::Bytes(bytes.slice_ref(payload)));
            continue;
        }
        let v: Value = value::decode(&bytes).map_err(|e| {
            err(
                ErrorKind::Input,
                format!("an argument is not a valid value: {e}"),
            )
        })?;
        args.push(TaskArg::Value(v));
    }
    let slot = shared.slots.acquire(task.priority).await;
    if !shared.begin(&task.key) {
        // Taken back while it waited, and aborted: this await is where
        // the abort lands.
        return std::future::pending().await;
    }
    // From here on it runs: if this worker dies now, the scheduler counts
    // it as a suspect (and not the tasks still queued behind it).
    let _ = shared.to_scheduler.send(ToScheduler::Started {
        keys: vec![task.key.clone()],
    });
    // The task's own limit, within the worker's.
    let timeout = match (
        task.timeout_ms.map(Duration::from_millis),
        shared.options.limits.timeout,
    ) {
        (Some(t), Some(w)) => Some(t.min(w)),
        (t, w) => t.or(w),
    };
    let link = TaskLink::new(
        shared.link.clone(),
        &task.key,
        ready.module.clone(),
        task.priority,
        timeout,
        slot,
    );
    for dir in &task.grants.dirs {
        allowed_dir(&shared.options.allow_dirs, dir).map_err(|m| err(ErrorKind::Input, m))?;
    }
    let limits = RunLimits {
        timeout,
        memory: task.memory_limit.map(|m| m.min(usize::MAX as u64) as usize),
        grants: task.grants.clone(),
        output: Default::default(),
    };
    let output = limits.output.clone();
    let result = shared
        .sandbox
        .run_linked(&ready, &task.key, &task.function, args, limits, Some(link))
        .await;
    // Kept whatever the outcome, for `dtask logs`.
    if !output.is_empty() {
        let log = logs::TaskLog {
            stdout: output.stdout(),
            stderr: output.stderr(),
        };
        shared.logs.insert(&task.key, log);
    }
    Ok(result?.encode())
}

/// Constructs an actor and serves its calls, one at a time, until it is
/// dropped.
async fn start_actor(shared: Arc<Shared>, spec: ActorSpec) {
    let key = spec.key.clone();
    let built = async {
        let ready = load_module(&shared, &spec.module)
            .await
            .map_err(|m| TaskError {
                kind: ErrorKind::Module,
                message: m,
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.clone(),
            })?;
        let mut args = Vec::with_capacity(spec.args.len());
        for a in &spec.args {
            args.push(value::decode(a).map_err(|e| TaskError {
                kind: ErrorKind::Input,
                message: format!("a constructor argument is not a valid value: {e}"),
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.clone(),
            })?);
        }
        let memory = spec.memory_limit.map(|m| m.min(usize::MAX as u64) as usize);
        shared
            .sandbox
            .construct(ready, &key, &spec.resource, args, memory)
            .await
    }
    .await;
    let mut instance = match built {
        Ok(i) => i,
        Err(error) => {
            let _ = shared
                .to_scheduler
                .send(ToScheduler::ActorFailed { key, error });
            return;
        }
    };
    let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel::<peer::ActorCall>();
    shared
        .actors
        .lock()
        .expect("actor table lock")
        .insert(key.clone(), tx);
    let _ = shared
        .to_scheduler
        .send(ToScheduler::ActorReady { key: key.clone() });
    while let Some(call) = calls.recv().await {
        let was_broken = instance.is_broken();
        let result = instance
            .call(&call.method, call.args)
            .await
            .map(|v| Bytes::from(value::encode(&v)));
        if !was_broken && instance.is_broken() {
            let _ = shared
                .to_scheduler
                .send(ToScheduler::ActorBroken { key: key.clone() });
        }
        let _ = call.reply.send(FromPeer::Called {
            id: call.id,
            result,
        });
    }
    tracing::debug!("actor {key} dropped");
}

async fn dependency(shared: &Shared, key: &str, who_has: &[String]) -> Result<Bytes, String> {
    if let Some(b) = shared.results.get(key).await {
        return Ok(b);
    }
    let b = peer::fetch(who_has, shared.options.token.expose(), key).await?;
    use std::sync::atomic::Ordering::Relaxed;
    shared.fetched.fetch_add(1, Relaxed);
    shared.fetched_bytes.fetch_add(b.len() as u64, Relaxed);
    Ok(b)
}

async fn load_module(shared: &Shared, hash: &str) -> Result<Arc<Ready>, String> {
    let slot: ModuleSlot = shared
        .modules
        .lock()
        .expect("module table lock")
        .entry(hash.to_string())
        .or_default()
        .clone();
    slot.get_or_init(|| async {
        let (tx, rx) = oneshot::channel();
        shared
            .module_waiters
            .lock()
            .expect("module waiters lock")
            .entry(hash.to_string())
            .or_default()
            .push(tx);
        let _ = shared.to_scheduler.send(ToScheduler::FetchModule {
            hash: hash.to_string(),
        });
        let bytes = rx
            .await
            .map_err(|_| "the scheduler went away".to_string())?
            .ok_or_else(|| format!("the scheduler does not have module {hash}"))?;
        let engine = shared.sandbox.engine().clone();
        let cache = shared.options.cache_dir.clone();
        let name = format!("module {hash}");
        let compiled = tokio::task::spawn_blocking(move || {
            module::compile(&engine, &bytes, &name, cache.as_deref())
        })
        .await
        .map_err(|e| format!("compiling module {hash} failed: {e}"))??;
        shared.sandbox.prepare(compiled).map(Arc::new)
    })
    .await
    .clone()
}
