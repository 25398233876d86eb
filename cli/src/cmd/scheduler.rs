//! `dtask scheduler`: run the scheduler daemon in the foreground.

use super::Failure;
use dtask_runtime::config;
use dtask_runtime::scheduler::{SchedulerOptions, SchedulerServer};
use std::io::Write;

/// Run the scheduler in the foreground. Prints its address on stdout once
/// it listens; workers join with `dtask worker --scheduler ADDR`.
///
/// Clients present the client token (DTASK_TOKEN, else the state
/// directory's `token` file), workers the worker token
/// (DTASK_WORKER_TOKEN, else `worker-token`); missing files are created.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask scheduler --port 0      # prints 127.0.0.1:PORT\n\nExit status: 0 stopped by `dtask shutdown` or a signal, 2 usage or bad input (the port is taken, the journal cannot be used)."
)]
pub struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 8786)]
    pub port: u16,
    /// Host or IP that clients and workers dial, printed as the
    /// scheduler's address [default: the bound address; with a wildcard
    /// `--host`, this machine's host name].
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub serve: ServeOptions,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// How the scheduler treats its peers.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeOptions {
    /// Workers the process serving starts itself (`dtask cluster`'s).
    #[arg(skip)]
    pub own_workers: u32,
    /// A worker that sends nothing (not even its heartbeat, every second)
    /// for this long is treated as dead, hung or not: its tasks run
    /// elsewhere and its actors are lost.
    #[arg(long, value_parser = super::parse_duration, default_value = "10s", value_name = "DUR")]
    pub worker_timeout: std::time::Duration,
    /// Largest message frame accepted from a peer, e.g. `512MiB`; a larger
    /// one closes that connection (values and modules travel in frames).
    #[arg(long, value_parser = super::parse_size, default_value = "512MiB", value_name = "SIZE")]
    pub max_frame_size: usize,
    /// Largest module accepted; tasks of a larger one are refused, saying so.
    #[arg(long, value_parser = super::parse_size, default_value = "256MiB", value_name = "SIZE")]
    pub max_module_size: usize,
    /// Largest value accepted as a task argument, scattered, or stored in a
    /// queue or variable; larger ones are refused, saying so.
    #[arg(long, value_parser = super::parse_size, default_value = "128MiB", value_name = "SIZE")]
    pub max_value_size: usize,
    /// How much may wait to be sent to one client (published messages,
    /// results, answers) before the scheduler gives up on it: a client
    /// that stops reading (a stopped `dtask sub`, say) is disconnected past
    /// this, and the scheduler logs why; everyone else is served as usual.
    #[arg(long, value_parser = super::parse_size, default_value = "64MiB", value_name = "SIZE")]
    pub client_buffer: usize,
    /// Keep a journal in DIR (modules, tasks, holders, finished results,
    /// queues, variables, events) and resume from it on start, so a
    /// restarted scheduler loses at most about a second of work. `dtask
    /// shutdown` clears it. The local default cluster always keeps one in
    /// the state directory.
    #[arg(long, value_name = "DIR")]
    pub journal: Option<std::path::PathBuf>,
    /// Longest a change waits in the journal before it is synced to disk:
    /// what a crash of the machine can lose (a crash of the scheduler
    /// alone loses nothing it told a client of: answers wait until their
    /// changes are written).
    #[arg(long, value_parser = super::parse_duration, default_value = "200ms", value_name = "DUR")]
    pub journal_sync: std::time::Duration,
    /// Log written since the last snapshot that starts a compaction (in
    /// the background) into a new snapshot, once it is also twice the
    /// snapshot's size (a big state is not rewritten every few seconds),
    /// when records pause for half a second or the log is four times that.
    #[arg(long, value_parser = super::parse_size, default_value = "64MiB", value_name = "SIZE")]
    pub journal_compact: usize,
    /// After resuming from the journal, how long workers have to rejoin
    /// and report the results they hold. Tasks are computed again on
    /// demand whenever their data is missing, but scattered data has no
    /// recipe: what no worker reported by then is lost (`gather` says so).
    #[arg(long, value_parser = super::parse_duration, default_value = "30s", value_name = "DUR")]
    pub rejoin_grace: std::time::Duration,
    /// Port of the web dashboard and `/metrics`, on the scheduler's host;
    /// 0 picks a free one, and so does a taken port (the log and `dtask
    /// info` say which). `dtask dashboard` prints a login link.
    #[arg(
        long,
        env = "DTASK_DASHBOARD_PORT",
        default_value_t = 8787,
        value_name = "PORT"
    )]
    pub dashboard_port: u16,
    /// Serve no dashboard and no `/metrics`.
    #[arg(long)]
    pub no_dashboard: bool,
    /// Listen on a Unix socket at FILE as well, for clients and workers on
    /// this machine (`--scheduler unix:FILE`): the same protocol and token,
    /// without TLS, and far less kernel time per message than loopback
    /// TCP. A socket file left by a scheduler that stopped is replaced.
    /// The local default cluster listens on `scheduler.sock` in the state
    /// directory.
    #[arg(long, value_name = "FILE")]
    pub socket: Option<std::path::PathBuf>,
}

/// Binds the Unix socket of `--socket`, if given.
pub fn bind_socket(
    path: Option<&std::path::Path>,
) -> Result<Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let listener = dtask_runtime::scheduler::server::bind_unix(path)
        .map_err(|e| Failure::new(2, format!("cannot serve: {e}")))?;
    Ok(Some((listener, path.to_path_buf())))
}

/// The address to print for a scheduler bound at `bound`: `advertise`
/// with the bound port, else the bound address unless it is a wildcard
/// (never advertised: others cannot dial `0.0.0.0`), else this machine's
/// host name.
pub fn advertised(bound: std::net::SocketAddr, advertise: Option<&str>) -> String {
    let host = match advertise {
        Some(h) => h.to_string(),
        None if !bound.ip().is_unspecified() => return bound.to_string(),
        None => {
            let name = dtask_runtime::worker::host_name();
            tracing::info!(
                "listening on every interface; advertising {name}:{} (choose with --advertise)",
                bound.port()
            );
            name
        }
    };
    dtask_runtime::worker::address(&host, bound.port())
}

/// Binds a listener, reporting a taken port as a usage error.
pub fn bind(host: &str, port: u16) -> Result<std::net::TcpListener, Failure> {
    std::net::TcpListener::bind((host, port)).map_err(|e| {
        Failure::usage(format!(
            "cannot listen on {host}:{port}: {e}; choose another with --port (0 picks a free one)"
        ))
    })
}

/// Binds the dashboard on the scheduler's host: at `port`, else (taken)
/// at a free port, saying so; `None` (with a warning) if neither works.
fn bind_dashboard(scheduler: &std::net::TcpListener, port: u16) -> Option<std::net::TcpListener> {
    let host = match scheduler.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => {
            tracing::warn!("serving no dashboard: {e}");
            return None;
        }
    };
    match std::net::TcpListener::bind((host, port)) {
        Ok(l) => Some(l),
        Err(e) => {
            let fallback = std::net::TcpListener::bind((host, 0));
            match &fallback {
                Ok(l) => tracing::warn!(
                    "the dashboard port {port} cannot be used ({e}); serving it on {} instead",
                    l.local_addr().map_or(0, |a| a.port())
                ),
                Err(e2) => tracing::warn!("serving no dashboard: {e}; {e2}"),
            }
            fallback.ok()
        }
    }
}

/// Serves a bound listener until shutdown or a signal.
pub async fn serve(
    listener: std::net::TcpListener,
    unix: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    credentials: dtask_runtime::secret::Credentials,
    options: &ServeOptions,
) -> Result<(), Failure> {
    let dashboard = match options.no_dashboard {
        true => None,
        false => bind_dashboard(&listener, options.dashboard_port),
    };
    let server = SchedulerServer::from_listener(
        listener,
        SchedulerOptions {
            credentials,
            max_frame: options.max_frame_size,
            worker_timeout: options.worker_timeout,
            max_module: options.max_module_size,
            max_value: options.max_value_size,
            client_buffer: options.client_buffer,
            rejoin_grace: options.rejoin_grace,
            journal: options.journal.clone(),
            journal_options: dtask_runtime::scheduler::journal::JournalOptions {
                sync_every: options.journal_sync,
                compact_bytes: options.journal_compact as u64,
                ..Default::default()
            },
            own_workers: options.own_workers,
            on_resumed: Some(crate::purge_freed_memory_at_once),
        },
    )
    .map_err(|e| Failure::new(2, format!("cannot serve: {e}")))?;
    let server = match dashboard {
        Some(d) => server.with_dashboard(d),
        None => server,
    };
    let server = match unix {
        Some((listener, path)) => server.with_unix_socket(listener, path),
        None => server,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(2, format!("cannot watch signals: {e}")))?;
    tokio::select! {
        () = server.run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("terminated; stopping"),
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    let credentials = config::server_credentials().map_err(|e| Failure::new(2, e))?;
    let listener = bind(&a.host, a.port)?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    let addr = advertised(bound, a.advertise.as_deref());
    let unix = bind_socket(a.serve.socket.as_deref())?;
    println!("{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!("scheduler listening on {addr}");
    if let Some((_, path)) = &unix {
        tracing::info!("and on the Unix socket {}", path.display());
    }
    // Multi-threaded, so no busy polling (see `dtask_runtime::busy_poll`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    rt.block_on(serve(listener, unix, credentials, &a.serve))
}
