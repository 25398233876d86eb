//! The worker process: registers with the scheduler, runs the tasks it is
//! sent in its [`sandbox`], keeps their results in memory, and serves them to
//! peers on its data port.
//!
//! Each task is a tokio task that takes one of the worker's execution slots
//! (a semaphore permit) only while it computes: fetching inputs and, later,
//! waiting in blocking host calls hold no slot and no OS thread.

mod bulk;
pub mod host;
mod inbound;
pub mod logs;
mod run;
pub mod sandbox;
pub mod slots;
pub mod store;

use run::*;

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
use sandbox::{Limits, Output, Ready, RunLimits, Sandbox, TaskArg};
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

/// A module's linked code: quickly compiled first where Winch is used, and
/// swapped for Cranelift's once that is ready (see [`run::load_module`]).
type ModuleSlot = Arc<OnceCell<Result<Arc<Mutex<Arc<Ready>>>, String>>>;

struct Shared {
    sandbox: Arc<Sandbox>,
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
    /// Inputs being fetched from other workers for tasks here, and the
    /// room for them.
    inbound: inbound::Inbound,
    /// Inputs fetched from other workers, and their bytes, ever.
    fetched: std::sync::atomic::AtomicU64,
    fetched_bytes: std::sync::atomic::AtomicU64,
    /// Tasks waiting for a pooled instance (see [`run::Starving`]).
    starving: Mutex<usize>,
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
    /// The `seq` of the `Run` that last sent it, which its error names.
    run: u64,
}

impl Running {
    /// Task `key`'s entry if the current tokio task runs it: taken back
    /// meanwhile (stolen or cancelled) and perhaps sent here again, the
    /// key is another copy's.
    fn own(&mut self, key: &str) -> Option<&mut InHand> {
        self.tasks
            .get_mut(key)
            .filter(|t| t.abort.id() == tokio::task::id())
    }
}

impl Shared {
    /// Notes that the current tokio task, running task `key`, took its
    /// slot and begins; false if the task was taken back (stolen or
    /// cancelled) meanwhile, when it must not run.
    fn begin(&self, key: &str) -> bool {
        let mut running = self.running.lock().expect("running lock");
        running.own(key).map(|t| t.started = true).is_some()
    }

    /// The `seq` of the `Run` that last sent task `key`, run by the
    /// current tokio task; `None` once it was taken back (cancelled or
    /// stolen), when the scheduler wants no report of it.
    fn run_of(&self, key: &str) -> Option<u64> {
        let mut running = self.running.lock().expect("running lock");
        running.own(key).map(|t| t.run)
    }
}

/// Runs a worker until the scheduler tells it to stop or goes away.
pub async fn run(options: WorkerOptions) -> anyhow::Result<()> {
    // Kept until the worker stops, which removes its socket's file.
    let (listener, data_addr, _socket_file) = data_port(&options).await?;
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
    let stale = store::remove_stale(&options.spill_dir);
    if stale > 0 {
        tracing::info!(
            "removed {stale} spill director{} left in {} by workers that died",
            if stale == 1 { "y" } else { "ies" },
            options.spill_dir.display()
        );
    }
    let results: peer::Store = Arc::new(store::ResultStore::new(
        options.memory_budget,
        store::spill_dir_for(&options.spill_dir, id),
    ));
    results.report_drops_to(to_scheduler.clone());
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
        to_scheduler.clone(),
    ));
    let slots = slots::Slots::new(options.nthreads.max(1) as usize);
    let link = Arc::new(Link::new(
        options.scheduler.clone(),
        options.token.clone(),
        slots.clone(),
        to_scheduler.clone(),
        &format!("worker-{id}"),
    ));
    let inbound = inbound::Inbound::new(options.memory_budget as u64);
    let shared = Arc::new(Shared {
        sandbox: Arc::new(sandbox),
        slots,
        link,
        options,
        inbound,
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
        starving: Default::default(),
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
                    // already in hand, and its outcome answers this `Run`.
                    if let Some(t) = running.tasks.get_mut(&task.key) {
                        t.run = seq;
                        continue;
                    }
                    let key = task.key.clone();
                    // Boxed first: the task's future is kilobytes, and
                    // spawning moved it by value through each layer of the
                    // runtime's spawn (a copy of it per layer, per task).
                    let handle = tokio::spawn(Box::pin(execute(shared.clone(), task)));
                    let abort = handle.abort_handle();
                    running.tasks.insert(
                        key,
                        InHand {
                            abort,
                            started: false,
                            run: seq,
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
                                // Stored data comes in no `Run`: run 0.
                                Err(e) => refused.push((key, 0, e)),
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
            Ok(Some(FromScheduler::NewActor { spec, made })) => {
                tokio::spawn(start_actor(shared.clone(), spec, made));
            }
            Ok(Some(FromScheduler::DropActor { key, made })) => {
                // Its loop ends, and the instance goes, with the queue; a
                // newer making of the same key stays.
                let mut actors = shared.actors.lock().expect("actor table lock");
                if actors.get(&key).is_some_and(|(m, _)| *m == made) {
                    actors.remove(&key);
                }
            }
            Ok(Some(FromScheduler::Shutdown)) => {
                tracing::info!("scheduler asked this worker to stop");
                return Ok(());
            }
            Ok(Some(other)) => tracing::warn!("unexpected message for a worker: {other:?}"),
            Ok(None) | Err(_) => {
                let (tx, rx) = rejoin(&shared, &hello).await?;
                // Errors of tasks the old connection sent name its `Run`
                // numbers, which the new one counts afresh: one could pass
                // for the error of a run sent anew. Those tasks are run
                // again; the rest goes out in order.
                while let Ok(m) = outbox.try_recv() {
                    if !matches!(m, ToScheduler::Erred { .. }) {
                        let _ = tx.send(m);
                    }
                }
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
    let actors: Vec<(String, u64)> = shared
        .actors
        .lock()
        .expect("actor table lock")
        .iter()
        .map(|(key, (made, _))| (key.clone(), *made))
        .collect();
    tracing::info!(
        "rejoined the scheduler as worker {id}, holding {} results and {} actors",
        results.len(),
        actors.len()
    );
    let _ = tx.send(ToScheduler::Holding { results, actors });
    // Modules asked for on the broken connection may never be answered:
    // asked again, for whatever still waits on them (an actor starting).
    let asked: Vec<String> = shared
        .module_waiters
        .lock()
        .expect("module waiters lock")
        .keys()
        .cloned()
        .collect();
    for hash in asked {
        let _ = tx.send(ToScheduler::FetchModule { hash });
    }
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

/// Binds the data port: a Unix socket beside the scheduler's when the
/// scheduler is on one (then this whole cluster is on this machine, and a
/// Unix socket costs both ends less than loopback TCP) and neither a port
/// nor an address to advertise was asked for; else a TCP port. Returns the
/// listener, the address peers reach it at, and the socket's file (removed
/// when dropped).
async fn data_port(
    options: &WorkerOptions,
) -> anyhow::Result<(connection::Listener, String, Option<connection::SocketFile>)> {
    use connection::{Listener, SocketFile};
    let beside = connection::unix_path(&options.scheduler)
        .filter(|_| options.data_port == 0 && options.advertise.is_none())
        .and_then(|s| s.parent());
    if let Some(dir) = beside {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("worker-{}-{n}.sock", std::process::id()));
        remove_stale_sockets(dir);
        let bound = if path.as_os_str().len() < connection::UNIX_PATH_MAX {
            connection::bind_unix(&path).and_then(|l| {
                let file = SocketFile(path.clone());
                Ok((tokio::net::UnixListener::from_std(l)?, file))
            })
        } else {
            Err(std::io::Error::other("its path is too long"))
        };
        match bound {
            Ok((l, file)) => {
                return Ok((
                    Listener::Unix(l),
                    connection::unix_address(&path),
                    Some(file),
                ));
            }
            Err(e) => tracing::debug!("no data port at {}, a TCP one instead: {e}", path.display()),
        }
    }
    let listener = TcpListener::bind((options.listen_host.as_str(), options.data_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}:{} for the data port: {e}",
                options.listen_host,
                options.data_port
            )
        })?;
    let addr = advertised(
        listener.local_addr()?,
        options.advertise.as_deref(),
        &options.scheduler,
    )?;
    Ok((Listener::Tcp(listener), addr, None))
}

/// Removes the data port sockets in `dir` whose processes are gone (their
/// workers were killed), so that a day of restarts does not leave one file
/// behind per worker.
fn remove_stale_sockets(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("worker-"))
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0);
        let Some(pid) = pid else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

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
        // A scheduler on a Unix socket is on this machine: so are its
        // other workers.
        if crate::connection::unix_path(scheduler).is_some() {
            return Ok(match bound {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
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
            instances: shared.sandbox.instances_in_use(),
        };
        if shared.to_scheduler.send(alive).is_err() {
            return;
        }
    }
}
