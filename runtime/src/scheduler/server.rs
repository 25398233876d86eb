//! The scheduler daemon: accepts connections, feeds their messages to the
//! [`state::Scheduler`](super::state::Scheduler) core one at a time, and
//! sends out the commands it returns. It also stores uploaded modules.

use super::journal::Journal;
use super::state::{self, ClientId, Command, Input};
use crate::connection::{self, Receiver, Sender};
use crate::protocol::{FromScheduler, HEARTBEAT, Hello, Role, TaskState, ToScheduler};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod inbound;
mod messages;
mod once;

/// Batches of inbound messages (one frame's worth each) that may wait for
/// the core loop before connection readers pause.
const INBOUND_BATCHES: usize = 256;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The client and worker tokens peers must present.
    pub credentials: crate::secret::Credentials,
    /// Largest frame accepted from a peer.
    pub max_frame: usize,
    /// A worker silent (no heartbeat, no message) this long is treated as
    /// dead: its connection is dropped and its work goes elsewhere.
    pub worker_timeout: Duration,
    /// Largest module accepted, in bytes.
    pub max_module: usize,
    /// Largest value accepted as an argument, scattered or stored, in bytes.
    pub max_value: usize,
    /// Bytes that may wait to be sent to one client before it is
    /// disconnected as too slow (0: no bound).
    pub client_buffer: usize,
    /// After resuming from the journal, how long workers have to report
    /// what they hold before scattered data none reported is lost.
    pub rejoin_grace: Duration,
    /// Directory of the journal to keep (and resume from), if any.
    pub journal: Option<std::path::PathBuf>,
    /// How the journal writes.
    pub journal_options: super::journal::JournalOptions,
    /// Workers this process starts itself (a `dtask cluster`): until that
    /// many have joined, a submit finding none is not told there is none.
    pub own_workers: u32,
    /// Called once, after the journal (if any) was read back and before
    /// the first message is handled. The CLI makes its allocator give
    /// freed memory back at once from here on: doing so during the restore
    /// would hand back memory the restore is about to use again.
    pub on_resumed: Option<fn()>,
}

/// A running scheduler, bound to its address.
pub struct SchedulerServer {
    listener: TcpListener,
    options: SchedulerOptions,
    /// The dashboard's listener, if it serves one.
    dashboard: Option<std::net::TcpListener>,
    /// A Unix socket it also listens on, if any (see [`UnixSocket`]).
    unix: Option<UnixSocket>,
}

/// A Unix socket the scheduler listens on besides its TCP port, for clients
/// and workers on its own machine (`unix:PATH`). Its file is readable and
/// writable by the owner alone, and removed when the scheduler stops.
struct UnixSocket {
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

/// Binds a Unix socket at `path` for [`SchedulerServer::with_unix_socket`],
/// replacing the file of one that nothing listens on any more (a scheduler
/// that was killed leaves it behind). Its file is made the owner's alone.
pub use connection::bind_unix;

pub(super) enum Inbound {
    /// A dashboard request.
    Dashboard(super::dashboard::Question),
    Connected {
        id: u64,
        role: Role,
        tx: Sender<FromScheduler>,
        /// Stops the connection's reader.
        hangup: Arc<tokio::sync::Notify>,
        /// Pauses the connection's reader while it is true.
        pause: tokio::sync::watch::Sender<bool>,
    },
    Msgs {
        id: u64,
        msgs: Vec<ToScheduler>,
    },
    Closed {
        id: u64,
    },
    /// A waiting primitive request's timeout passed.
    Timeout {
        client: u64,
        id: u64,
    },
    /// Time to look for workers that went silent.
    CheckWorkers,
    /// The window for workers to rejoin after a restore has closed.
    RejoinWindowClosed,
    /// An unnamed client's session, or a placement's client, did not come
    /// back in its grace ([`Input::HolderGraceOver`],
    /// [`Input::PlacementGraceOver`]).
    GraceOver(Input),
}

struct Conn {
    tx: Sender<FromScheduler>,
    hangup: Arc<tokio::sync::Notify>,
    /// Pauses its reader (while what it sent is held back), so that a
    /// client whose messages wait cannot pile up more of them.
    pause: tokio::sync::watch::Sender<bool>,
    is_worker: bool,
    /// Admitted with the worker token (a worker, or a worker's tasks
    /// acting as a client, [`Role::Tasks`]): it may not shut the cluster
    /// down, force-cancel others' keys or log in to the dashboard, which
    /// take the client credential.
    worker_credential: bool,
    /// The session an unnamed client said in its hello (0: none). Its
    /// requests are its session's whatever session they name, so no other
    /// client is answered as this one.
    session: u64,
    /// When it last sent anything.
    last_seen: tokio::time::Instant,
    /// Timeouts of its primitive requests still waiting, by request id:
    /// each ends when its request is answered, and all of them when the
    /// connection is forgotten.
    timers: Timers,
}

/// Sleeping timeouts of waiting requests, aborted when dropped.
#[derive(Default)]
struct Timers(rustc_hash::FxHashMap<u64, tokio::task::AbortHandle>);

impl Timers {
    /// Ends the timeout of request `id`, if it has one.
    fn end(&mut self, id: u64) {
        if let Some(t) = self.0.remove(&id) {
            t.abort();
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        for t in self.0.values() {
            t.abort();
        }
    }
}

impl SchedulerServer {
    /// Binds the scheduler to `addr` (`127.0.0.1:0` picks a free port).
    pub async fn bind(addr: &str, options: SchedulerOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            options,
            dashboard: None,
            unix: None,
        })
    }

    /// Wraps an already bound listener.
    pub fn from_listener(
        listener: std::net::TcpListener,
        options: SchedulerOptions,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: TcpListener::from_std(listener)?,
            options,
            dashboard: None,
            unix: None,
        })
    }

    /// Serves the web dashboard and `/metrics` on `listener` too.
    pub fn with_dashboard(mut self, listener: std::net::TcpListener) -> Self {
        self.dashboard = Some(listener);
        self
    }

    /// Serves `listener`, a Unix socket bound at `path` by [`bind_unix`], as
    /// well (`unix:PATH` reaches it); its file is removed when the server
    /// stops.
    pub fn with_unix_socket(
        mut self,
        listener: std::os::unix::net::UnixListener,
        path: std::path::PathBuf,
    ) -> Self {
        self.unix = Some(UnixSocket { listener, path });
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until a client asks for shutdown.
    pub async fn run(self) {
        // Bounded: when the core falls behind, readers stop reading and TCP
        // pushes back on whoever sends too fast.
        let (in_tx, in_rx) = mpsc::channel(INBOUND_BATCHES);
        let next_id = Arc::new(AtomicU64::new(1));
        let opts = self.options.clone();
        let timers = in_tx.clone();
        let ticks = in_tx.clone();
        let checker = tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT);
            loop {
                every.tick().await;
                if ticks.send(Inbound::CheckWorkers).await.is_err() {
                    return;
                }
            }
        });
        let dashboard = match self.dashboard {
            Some(l) => {
                let addr = l.local_addr();
                let l = l
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(l));
                match (addr, l) {
                    (Ok(addr), Ok(l)) => {
                        let access = Arc::new(super::dashboard::Access::new(
                            opts.credentials.client.clone(),
                        ));
                        tokio::spawn(super::dashboard::serve(l, access.clone(), in_tx.clone()));
                        let scheme = match crate::tls::current() {
                            Ok(Some(t)) if t.acceptor().is_some() => "https",
                            _ => "http",
                        };
                        tracing::info!("dashboard at {scheme}://{addr}/");
                        Some((addr, access))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!("cannot serve the dashboard: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let accept = tokio::spawn(accept_loop(
            connection::Listener::Tcp(self.listener),
            opts.clone(),
            next_id.clone(),
            in_tx.clone(),
        ));
        // Kept here so that its file goes when the server stops.
        let mut unix_file = None;
        let accept_unix = self.unix.and_then(|UnixSocket { listener, path }| {
            unix_file = Some(connection::SocketFile(path.clone()));
            match tokio::net::UnixListener::from_std(listener) {
                Ok(l) => Some(tokio::spawn(accept_loop(
                    connection::Listener::Unix(l),
                    opts,
                    next_id,
                    in_tx,
                ))),
                Err(e) => {
                    tracing::warn!("cannot serve the Unix socket {}: {e}", path.display());
                    None
                }
            }
        });
        let mut state = state::Scheduler::new()
            .with_max_value(self.options.max_value)
            .with_own_workers(self.options.own_workers);
        let mut modules = HashMap::new();
        let journal = match &self.options.journal {
            None => None,
            Some(dir) => {
                let options = self.options.journal_options.clone();
                match resume(dir, options, state) {
                    Ok(Resumed {
                        journal,
                        state: resumed,
                        modules: found,
                    }) => {
                        state = resumed;
                        journal
                            .health()
                            .live_tasks
                            .store(state.task_count() as u64, Ordering::Relaxed);
                        if let Some(found) = found {
                            modules = found;
                            let closer = timers.clone();
                            let grace = self.options.rejoin_grace;
                            tokio::spawn(async move {
                                tokio::time::sleep(grace).await;
                                let _ = closer.send(Inbound::RejoinWindowClosed).await;
                            });
                        }
                        Some(journal)
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        return;
                    }
                }
            }
        };
        if let Some(resumed) = self.options.on_resumed {
            resumed();
        }
        // On the runtime's worker threads, beside the connections' readers
        // and writers: handing messages between them is then a queue push
        // on the same thread far more often than a wake-up of another.
        let core = core_loop(
            in_rx,
            timers,
            self.options.clone(),
            state,
            modules,
            journal,
            dashboard,
        );
        if let Err(e) = tokio::spawn(core).await {
            tracing::error!("the scheduler's core stopped: {e}");
        }
        accept.abort();
        if let Some(a) = accept_unix {
            a.abort();
        }
        drop(unix_file);
        checker.abort();
    }
}

async fn accept_loop(
    listener: connection::Listener,
    opts: SchedulerOptions,
    next_id: Arc<AtomicU64>,
    in_tx: mpsc::Sender<Inbound>,
) {
    let gate = connection::Gate::new("scheduler's port");
    loop {
        // Unauthenticated peers get a bounded share: past the cap, new
        // connections wait in the kernel's backlog.
        let room = gate.room().await;
        let (stream, peer_ip, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let opts = opts.clone();
        let next_id = next_id.clone();
        let in_tx = in_tx.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let Some(permit) = gate.admit(room, peer_ip).await else {
                return;
            };
            let admitted = connection::accept::<ToScheduler, FromScheduler>(
                stream,
                opts.max_frame,
                |hello: &Hello| {
                    let creds = &opts.credentials;
                    let is_client = matches!(hello.role, Role::Client { .. } | Role::Tasks);
                    let client_digest = match hello.role {
                        Role::Peer => {
                            return Err("this is a scheduler, not a worker data port".into());
                        }
                        Role::Client { ref name, .. } => {
                            creds.admit_client(&hello.token)?;
                            if let Some(prefix) = name.as_deref().and_then(state::reserved_prefix) {
                                return Err(format!(
                                    "client names beginning with `{prefix}` are the \
                                     scheduler's own; choose another DTASK_CLIENT"
                                ));
                            }
                            None
                        }
                        Role::Worker { .. } => {
                            creds.admit_worker(&hello.token)?;
                            Some(creds.client.digest())
                        }
                        Role::Tasks => {
                            creds.admit_worker(&hello.token)?;
                            None
                        }
                    };
                    Ok(connection::Admission {
                        id: next_id.fetch_add(1, Ordering::Relaxed),
                        client_digest,
                        max_value: is_client.then_some(opts.max_value as u64),
                    })
                },
            )
            .await;
            drop(permit);
            match admitted {
                Ok((hello, admission, tx, rx)) => {
                    let id = admission.id;
                    if matches!(hello.role, Role::Client { .. } | Role::Tasks) {
                        tx.set_limit(opts.client_buffer);
                    }
                    // Faults injected (tests only): a worker's messages
                    // are held back on their way in.
                    let delay = match hello.role {
                        Role::Worker { .. } => super::faults::Delay::from_env(),
                        _ => super::faults::Delay::default(),
                    };
                    let hangup = Arc::new(tokio::sync::Notify::new());
                    let (pause, paused) = tokio::sync::watch::channel(false);
                    let _ = in_tx
                        .send(Inbound::Connected {
                            id,
                            role: hello.role,
                            tx,
                            hangup: hangup.clone(),
                            pause,
                        })
                        .await;
                    tokio::select! {
                        () = read_loop(id, rx, &in_tx, paused, delay) => {}
                        () = hangup.notified() => {}
                    }
                    let _ = in_tx.send(Inbound::Closed { id }).await;
                }
                // A connection that closes before saying hello is how the
                // CLI checks that a scheduler is there: nothing to warn of.
                Err(connection::WireError::Closed) => {
                    tracing::debug!("connection from {peer} closed before its handshake")
                }
                Err(e) => tracing::warn!("refused connection from {peer}: {e}"),
            }
        });
    }
}

async fn read_loop(
    id: u64,
    mut rx: Receiver<ToScheduler>,
    in_tx: &mpsc::Sender<Inbound>,
    mut paused: tokio::sync::watch::Receiver<bool>,
    delay: super::faults::Delay,
) {
    let mut rng = delay.is_on().then(super::faults::Rng::seeded);
    loop {
        // The core gone, the pause can no longer end; nor is there anyone
        // to read for.
        if paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        match rx.recv().await {
            Ok(Some(first)) => {
                let mut msgs = vec![first];
                msgs.extend(rx.drain_ready());
                if let Some(rng) = rng.as_mut() {
                    tokio::time::sleep(delay.sample(rng)).await;
                }
                if in_tx.send(Inbound::Msgs { id, msgs }).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            // A client killed mid-way (a `| head -1` ending its gather) is
            // no news.
            Err(connection::WireError::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                tracing::debug!("dropping connection {id}: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!("dropping connection {id}: {e}");
                return;
            }
        }
    }
}

struct Core {
    state: state::Scheduler,
    /// Where armed timers report back.
    timers: mpsc::Sender<Inbound>,
    worker_timeout: Duration,
    max_module: usize,
    /// The largest value accepted (a published message included).
    max_value: usize,
    /// Where the durable state goes, if anywhere.
    journal: Option<Journal>,
    /// Its directory, for `dtask info`.
    journal_dir: String,
    modules: HashMap<String, Bytes>,
    /// By connection id (numbers this scheduler hands out, so a fast hash
    /// is safe: it is looked up for every message in and out).
    conns: rustc_hash::FxHashMap<u64, Conn>,
    /// Clients whose outgoing queue overflowed, to disconnect.
    overflowed: Vec<u64>,
    /// What clients sent while their holders' big releases went on (the
    /// state machine's `waits`), in the order it came: handled once those
    /// are done.
    parked: std::collections::VecDeque<Inbound>,
    /// The connections with something in `parked`.
    parked_from: std::collections::HashSet<u64>,
    /// The state machine's `releases_done` when `parked` was last looked
    /// at: until it changes, everything parked still waits.
    parked_at: u64,
    shutting_down: bool,
    /// Faults to inject (tests and chaos runs only).
    faults: super::faults::Faults,
    /// Retries and new actors, answered once per session and request id.
    once: once::Once,
    /// This turn's messages to clients, waiting for the turn's journal
    /// records (see [`Core::send`]).
    held: Vec<(ClientId, FromScheduler)>,
    /// Earlier turns' messages to clients, in order, each batch with the
    /// count of journal writes ([`Journal::sent`]) it waits for.
    journaling: std::collections::VecDeque<(u64, Vec<(ClientId, FromScheduler)>)>,
    /// The dashboard's address and who may see it, if it serves one.
    dashboard: Option<(std::net::SocketAddr, Arc<super::dashboard::Access>)>,
}

/// Most inbound messages the core handles in one turn before handing the
/// journal what they changed.
const TURN: usize = 256;

/// Most journal records a turn gathers before handing them over.
const TURN_RECORDS: usize = 20_000;

async fn core_loop(
    mut in_rx: mpsc::Receiver<Inbound>,
    timers: mpsc::Sender<Inbound>,
    options: SchedulerOptions,
    state: state::Scheduler,
    modules: HashMap<String, Bytes>,
    journal: Option<Journal>,
    dashboard: Option<(std::net::SocketAddr, Arc<super::dashboard::Access>)>,
) {
    let mut core = Core {
        state,
        timers,
        worker_timeout: options.worker_timeout,
        max_module: options.max_module,
        max_value: options.max_value,
        journal_dir: options
            .journal
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        journal,
        modules,
        conns: Default::default(),
        overflowed: Vec::new(),
        parked: std::collections::VecDeque::new(),
        parked_from: Default::default(),
        parked_at: 0,
        shutting_down: false,
        faults: super::faults::Faults::from_env(),
        once: Default::default(),
        held: Vec::new(),
        journaling: Default::default(),
        dashboard,
    };
    let journal_health = core.journal.as_ref().map(|j| j.health().clone());
    // Busy polling, where this process does it, pauses while the workers
    // hold a task per CPU or more: looked at once a millisecond at most
    // while it spins.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut spin_checked_ms = 0;
    let mut spin_paused = false;
    'serve: loop {
        // Keys a big release set aside are let go of a step per turn,
        // alongside whatever else came (a busy scheduler may have no quiet
        // moment); meanwhile the loop does not wait for input.
        let stepped = core.state.releasing() > 0;
        let first = if !stepped {
            let waits = !core.journaling.is_empty();
            let journaled = async {
                match &journal_health {
                    Some(health) if waits => health.reached_moved().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                inbound = in_rx.recv() => match inbound {
                    Some(inbound) => Some(inbound),
                    None => break,
                },
                () = journaled => {
                    core.release_journaled();
                    continue 'serve;
                }
            }
        } else {
            match in_rx.try_recv() {
                Ok(inbound) => Some(inbound),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        };
        // What else has arrived is handled in the same turn, so the journal
        // gets one batch of records, not a wake-up per event.
        let mut next = first;
        let mut turn = 0;
        let now = now_ms();
        core.state.set_clock(now);
        if stepped {
            core.release_step();
            core.let_parked_through();
            core.drop_overflowed();
            if core.shutting_down {
                break 'serve;
            }
        }
        while let Some(inbound) = next.take() {
            core.inbound(inbound);
            // (A worker's leaving finishes releases at once.)
            core.let_parked_through();
            core.drop_overflowed();
            if core.shutting_down {
                break 'serve;
            }
            turn += 1;
            // A turn also ends once its records would make a big batch: a
            // turn of big submissions must not pile up a million records
            // before the writer sees the first.
            if turn < TURN
                && core
                    .journal
                    .as_ref()
                    .is_none_or(|j| j.pending() < TURN_RECORDS)
            {
                next = in_rx.try_recv().ok();
            }
        }
        // Decided on what this turn left (the workers' tasks just ended
        // included), before the loop waits again.
        // Looked at every turn while paused, so that the turn the workers
        // run out of tasks ends the pause.
        if (now != spin_checked_ms || spin_paused) && crate::busy_poll::installed() {
            spin_checked_ms = now;
            spin_paused = core.state.tasks_on_workers() >= cpus;
            crate::busy_poll::pause(spin_paused);
        }
        if let Some(j) = &core.journal {
            j.record(|pending| core.state.journal_stats_into(pending));
            j.hand_over();
            j.health()
                .live_tasks
                .store(core.state.task_count() as u64, Ordering::Relaxed);
            j.caught_up().await;
        }
        core.release_journaled();
        if stepped {
            // Readers and writers share this thread: let them run, so that
            // what arrives meanwhile comes before the next step.
            tokio::task::yield_now().await;
        }
    }
    if let Some(j) = &core.journal {
        j.record(|pending| core.state.journal_stats_into(pending));
        j.hand_over();
    }
    core.release_all_held();
    // Give workers a moment to receive their shutdown and hang up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while core.conns.values().any(|c| c.is_worker) {
        match tokio::time::timeout_at(deadline, in_rx.recv()).await {
            Ok(Some(Inbound::Closed { id })) => {
                core.conns.remove(&id);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

/// A journal opened, and the state it restored.
struct Resumed {
    journal: Journal,
    state: state::Scheduler,
    /// The modules it recorded, if there was anything to resume.
    modules: Option<HashMap<String, Bytes>>,
}

/// Opens the journal in `dir` and restores what it recorded into `state`.
fn resume(
    dir: &std::path::Path,
    options: super::journal::JournalOptions,
    mut state: state::Scheduler,
) -> Result<Resumed, String> {
    // Opened on a thread of its own: what folding the logs allocates and
    // frees (a log's window of changes can be tens of megabytes) goes back
    // to the system as that thread ends, instead of staying with a thread
    // of the runtime.
    let (journal, recovered) = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("dtask-resume".into())
            .spawn_scoped(s, || Journal::open(dir, options))
            .map_err(|e| format!("cannot start reading the journal: {e}"))?
            .join()
            .map_err(|_| "reading the journal failed unexpectedly".to_string())?
    })?;
    let mut modules = None;
    if let Some(mut r) = recovered {
        let began = std::time::Instant::now();
        let rest = std::mem::replace(&mut r.snapshot, state::Snapshot::empty());
        let found = std::mem::take(&mut r.modules);
        state.reserve_tasks(r.expected_tasks() as usize);
        let tasks = r.tasks(|t| state.restore_task(t))?;
        state = state.finish_restore(rest)?;
        tracing::info!(
            "resumed {tasks} tasks and {} modules from the journal in {} in {:?}",
            found.len(),
            dir.display(),
            began.elapsed()
        );
        modules = Some(found);
    }
    state.enable_journal();
    Ok(Resumed {
        journal,
        state,
        modules,
    })
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::value::Value;

    fn options(token: &str) -> SchedulerOptions {
        SchedulerOptions {
            credentials: crate::secret::Credentials {
                client: token.into(),
                worker: crate::secret::Secret::new("worker-token".to_string()),
            },
            max_frame: 64 << 20,
            worker_timeout: Duration::from_secs(10),
            max_module: 1 << 20,
            max_value: 1 << 20,
            client_buffer: 16 << 20,
            rejoin_grace: Duration::from_secs(30),
            journal: None,
            journal_options: Default::default(),
            own_workers: 0,
            on_resumed: None,
        }
    }

    /// Polls `f` once, so that what it sends first is sent.
    async fn start<F: std::future::Future + Unpin>(f: &mut F) {
        std::future::poll_fn(|cx| {
            let _ = std::pin::Pin::new(&mut *f).poll(cx);
            std::task::Poll::Ready(())
        })
        .await
    }

    /// A waiting request's timeout ends with its answer, and a gone
    /// connection's with it: answered or abandoned waits with long
    /// timeouts leave no sleeping task behind each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timeouts_of_answered_and_abandoned_requests_do_not_linger() {
        let token = "client-token";
        let server = SchedulerServer::bind("127.0.0.1:0", options(token))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(server.run());
        let client = Client::connect(&addr, token, None).await.unwrap();
        let q = client.queue("q");
        let hour = Some(Duration::from_secs(3600));
        let one = Value::from(1i64);
        // Warm up: the connection's tasks are all running.
        q.put_value(&one, None).await.unwrap();
        q.get(hour).await.unwrap();
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        for _ in 0..200 {
            // Sent first, so it waits on the empty queue; the put, sent
            // after it on the same connection, answers it.
            let mut get = Box::pin(q.get(hour));
            start(&mut get).await;
            q.put_value(&one, None).await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), get)
                .await
                .expect("answered")
                .unwrap();
        }
        // Abandoned: a second client leaves with 200 requests waiting.
        let other = Client::connect(&addr, token, None).await.unwrap();
        let empty = other.queue("empty");
        let mut gets: Vec<_> = (0..200).map(|_| Box::pin(empty.get(hour))).collect();
        for g in &mut gets {
            start(g).await;
        }
        // Answered after all of them were handled.
        assert_eq!(empty.len().await.unwrap(), 0);
        drop(gets);
        drop(empty);
        drop(other);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = metrics.num_alive_tasks();
            if now <= before + 5 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{now} tasks alive, against {before} before 400 waits with timeouts"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
