//! `dtask cluster`: a scheduler and N worker processes in one command.

use super::Failure;
use super::scheduler::{bind, serve};
use dtask_runtime::{config, local};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Run a scheduler and N worker processes in the foreground (a local
/// cluster). Prints the scheduler's address on stdout; Ctrl-C or
/// `dtask shutdown --scheduler ADDR` stops them all.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask cluster --n-workers 2 --nthreads 1 --port 0\n\nExit status: 0 stopped by `dtask shutdown` or a signal, 2 usage or bad input (or the port is taken)."
)]
pub struct Args {
    /// Worker processes (`--workers` is another spelling).
    #[arg(
        long = "n-workers",
        alias = "workers",
        default_value_t = 2,
        value_name = "N"
    )]
    workers: usize,
    /// Address to bind: the scheduler's port and the workers' data ports
    /// (`0.0.0.0` or `::` for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Scheduler port; 0 picks a free one.
    #[arg(long, default_value_t = 8786)]
    port: u16,
    /// Host or IP that clients and workers dial, printed as the
    /// scheduler's address [default: the bound address; with a wildcard
    /// `--host`, this machine's host name].
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    #[command(flatten)]
    worker: super::worker::WorkerFlags,
    #[command(flatten)]
    serve: super::scheduler::ServeOptions,
    /// Record this cluster as the local default in the state directory.
    #[arg(long, hide = true)]
    record_local: bool,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// How often the nanny looks at its worker processes.
const NANNY_TICK: std::time::Duration = std::time::Duration::from_millis(200);
/// The first wait before a dead worker is replaced; it doubles each time
/// a replacement dies within [`HEALTHY`], up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);
const HEALTHY: std::time::Duration = std::time::Duration::from_secs(60);

/// When each worker process slot is to be started again.
struct Nanny {
    started: Vec<std::time::Instant>,
    backoff: Vec<std::time::Duration>,
    /// Slots whose process died, and when to start another.
    waiting: Vec<(usize, std::time::Instant)>,
    /// Processes started again so far, in all.
    restarts: u64,
    /// Processes started again so far, per slot.
    slot_restarts: Vec<u32>,
}

impl Nanny {
    fn new(slots: usize) -> Self {
        Self {
            started: vec![std::time::Instant::now(); slots],
            backoff: vec![FIRST_BACKOFF; slots],
            waiting: Vec::new(),
            restarts: 0,
            slot_restarts: vec![0; slots],
        }
    }

    /// Slot `i`'s process exited: when another starts (`None` if one is
    /// already due).
    fn died(&mut self, i: usize) -> Option<std::time::Duration> {
        if self.waiting.iter().any(|(w, _)| *w == i) {
            return None;
        }
        if self.started[i].elapsed() >= HEALTHY {
            self.backoff[i] = FIRST_BACKOFF;
        }
        let after = self.backoff[i];
        self.backoff[i] = (after * 2).min(MAX_BACKOFF);
        self.waiting.push((i, std::time::Instant::now() + after));
        self.restarts += 1;
        self.slot_restarts[i] += 1;
        Some(after)
    }

    /// The slots whose new process is due now.
    fn due(&mut self) -> Vec<usize> {
        let now = std::time::Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|(_, t)| *t <= now);
        self.waiting = later;
        due.into_iter()
            .map(|(i, _)| {
                self.started[i] = now;
                i
            })
            .collect()
    }
}

/// Kills the workers when the cluster stops, however it stops.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.workers == 0 || a.worker.nthreads == Some(0) {
        return Err(Failure::usage(
            "--n-workers and --nthreads must be at least 1",
        ));
    }
    let credentials = config::server_credentials().map_err(|e| Failure::new(2, e))?;
    let listener = bind(&a.host, a.port)?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    let addr = super::scheduler::advertised(bound, a.advertise.as_deref());
    // The local default listens on a Unix socket in the state directory
    // too (unless its path is too long for one), and so does a cluster
    // given `--socket`; its own workers then use it.
    let socket = a.serve.socket.clone().or_else(|| {
        a.record_local
            .then(|| config::state_dir().join("scheduler.sock"))
            .filter(|p| p.as_os_str().len() < dtask_runtime::connection::UNIX_PATH_MAX)
    });
    let unix = super::scheduler::bind_socket(socket.as_deref())?;
    let workers_dial = match &socket {
        Some(p) => dtask_runtime::connection::unix_address(p),
        None => addr.clone(),
    };
    let host = a.host.clone();
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(2, format!("cannot find the dtask binary: {e}")))?;
    // Workers are spawned from this (main) thread, so PR_SET_PDEATHSIG
    // takes them down with the cluster even if it is killed outright.
    let configured = config::file_config()
        .ok()
        .flatten()
        .is_some_and(|(_, c)| c.worker.memory_budget.is_some());
    // Workers take what is not given here from dtask.toml themselves.
    let mut flags = a.worker.clone();
    if flags.memory_budget.is_none() && !configured {
        // The file's budget is each worker's own; else share the machine's.
        flags.memory_budget = Some(dtask_runtime::worker::default_memory_budget(a.workers));
    }
    let flags = flags.to_args();
    // Workers use the cluster's TLS files, however they were given.
    let tls = a.tls.files()?;
    let tls_env: Vec<(&str, std::path::PathBuf)> = [
        ("DTASK_TLS_CA", &tls.ca),
        ("DTASK_TLS_CERT", &tls.cert),
        ("DTASK_TLS_KEY", &tls.key),
    ]
    .into_iter()
    .filter_map(|(var, path)| path.clone().map(|p| (var, p)))
    .collect();
    let spawn = |restarts: u32| -> Result<Child, Failure> {
        let mut cmd = Command::new(&exe);
        // Data ports on the scheduler's host too: a cluster bound for other
        // machines serves them its workers' results as well.
        cmd.args(["worker", "--scheduler", &workers_dial, "--host", &host])
            .arg(format!("--restart-count={restarts}"))
            .args(&flags)
            .env("DTASK_WORKER_TOKEN", credentials.worker.expose())
            .envs(tls_env.iter().map(|(k, v)| (k, v)))
            .env_remove("DTASK_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| Failure::new(2, format!("cannot start a worker: {e}")))
    };
    let mut workers = Workers(Vec::new());
    for _ in 0..a.workers {
        workers.0.push(spawn(0)?);
    }
    println!("{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!("cluster: scheduler on {addr}, {} workers", a.workers);
    let pid = std::process::id();
    if a.record_local {
        local::write_record(&local::LocalRecord {
            address: addr.clone(),
            pid,
            protocol: dtask_runtime::protocol::PROTOCOL_VERSION,
            socket: socket.clone(),
        })
        .map_err(|e| Failure::new(2, format!("cannot record the local cluster: {e}")))?;
    }
    let mut serve_options = a.serve.clone();
    serve_options.own_workers = a.workers as u32;
    if a.record_local && serve_options.journal.is_none() {
        serve_options.journal = Some(config::state_dir().join("journal"));
    }
    // One thread, running a current-thread runtime: the scheduler shares
    // this machine with its own workers, which keep the other cores busy;
    // more threads would only wake each other (200,000-task map+gather:
    // 52-53k tasks/s with one, 42-44k with one per core; PERFORMANCE.md),
    // and with one runtime thread no message crosses threads between
    // reading, deciding and writing. `dtask scheduler`, which has its
    // machine to itself, keeps one per core.
    let server_credentials = credentials.clone();
    let server = std::thread::Builder::new()
        .name("dtask-scheduler".into())
        .spawn(move || {
            let rt = dtask_runtime::busy_poll::install(
                &mut tokio::runtime::Builder::new_current_thread(),
            )
            .enable_all()
            .build()
            .map_err(|e| Failure::new(2, e.to_string()))?;
            rt.block_on(serve(listener, unix, server_credentials, &serve_options))
        })
        .map_err(|e| Failure::new(2, format!("cannot start the scheduler thread: {e}")))?;
    // The nanny: a worker process that dies is started again (from this
    // thread, which its PR_SET_PDEATHSIG is tied to), after a back-off that
    // grows while replacements keep dying young.
    let mut nanny = Nanny::new(workers.0.len());
    while !server.is_finished() {
        for (i, child) in workers.0.iter_mut().enumerate() {
            // A clean exit is a worker the scheduler asked to stop.
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            if status.success() {
                continue;
            }
            let Some(after) = nanny.died(i) else {
                continue;
            };
            tracing::warn!(
                "worker process {} exited ({status}); starting another in {after:?} \
                 (restart {} of this cluster)",
                child.id(),
                nanny.restarts
            );
        }
        for i in nanny.due() {
            match spawn(nanny.slot_restarts[i]) {
                Ok(c) => workers.0[i] = c,
                Err(e) => tracing::error!("{}", e.message),
            }
        }
        std::thread::sleep(NANNY_TICK);
    }
    let result = server
        .join()
        .unwrap_or_else(|_| Err(Failure::new(2, "the scheduler stopped: it panicked")));
    if a.record_local {
        local::remove_record(pid);
    }
    drop(workers);
    result
}
