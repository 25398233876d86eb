//! `dtask`: Dask-style futures for WebAssembly tasks, from the shell.
//!
//! This crate is argument parsing and printing only; the engine lives in
//! `dtask-runtime`. Each verb is one file under `cmd/`.

mod cmd;

/// mimalloc returns freed memory to the system and keeps per-thread heaps
/// from fragmenting: a scheduler that releases a million tasks, or a worker
/// that frees a big result, shrinks again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, as
/// `mimalloc.h` declares it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed memory back to the system at once, in the scheduler's
/// process, from when it has read its journal back (a restore frees and
/// reuses memory all the time: purging it at once made restoring a
/// million tasks 0.5–1.7 s slower). mimalloc otherwise purges it after a
/// delay, but only when it next allocates: an idle scheduler kept the
/// transient memory of a million-task submission (about 40 MB more with a
/// million tasks held), and after `dtask release --all` most of what it
/// had held. Clients and workers keep the delay: they reuse big buffers (a
/// streamed gather's ranges, say) that would otherwise come back from the
/// kernel freshly zeroed each time. `MIMALLOC_PURGE_DELAY` still overrides
/// this.
pub(crate) fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option mimalloc documents as settable at any
        // time; it only changes when freed pages are purged.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Gives the memory freed in the process back to the system every
/// `interval`, from a thread of its own, whatever mimalloc's purge delay:
/// memory freed by a thread that then ended (or went idle) is otherwise
/// only given back once something allocates again. Each round costs what
/// was freed since the last.
pub(crate) fn purge_freed_memory_every(interval: std::time::Duration) {
    let _ = std::thread::Builder::new()
        .name("dtask-purge".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                // SAFETY: mi_collect may be called from any thread at any
                // time; forcing it purges what is free, nothing in use.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        });
}

use clap::{Parser, Subcommand};
use cmd::{Failure, WithScheduler as S};
use std::process::ExitCode;

/// Dask-style futures for WebAssembly tasks.
///
/// Submit calls of WebAssembly component exports as tasks; each prints a key
/// naming its future. Pass a future to another task as `@KEY`; gather results
/// as JSON lines. With no scheduler configured, the first submit starts a
/// local cluster in the background; `dtask shutdown` stops it.
///
/// Exit status: 0 success, 1 a task erred or was cancelled, 2 usage or bad
/// input, 3 cannot reach or authenticate to the scheduler, 4 timeout.
#[derive(Parser)]
#[command(name = "dtask", version, max_term_width = 100)]
#[command(
    after_help = "Example:\n  k=$(dtask submit tasks.wasm inc 10)\n  dtask gather $k        # 11\n  seq 100 | dtask map tasks.wasm inc | dtask gather"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Submit(S<cmd::submit::Args>),
    Map(S<cmd::map::Args>),
    Gather(S<cmd::gather::Args>),
    Wait(S<cmd::wait::Args>),
    Status(S<cmd::status::Args>),
    Release(S<cmd::release::Args>),
    AsCompleted(S<cmd::as_completed::Args>),
    Cancel(S<cmd::cancel::Args>),
    Retry(S<cmd::retry::Args>),
    Scatter(S<cmd::scatter::Args>),
    WhoHas(S<cmd::who_has::Args>),
    Workers(S<cmd::workers::Args>),
    Info(S<cmd::info::Args>),
    Dashboard(S<cmd::dashboard::Args>),
    Logs(S<cmd::logs::Args>),
    Tasks(S<cmd::tasks::Args>),
    Queue(S<cmd::queue::Args>),
    Var(S<cmd::var::Args>),
    Lock(S<cmd::lock::Args>),
    Semaphore(S<cmd::semaphore::Args>),
    Event(S<cmd::event::Args>),
    Pub(S<cmd::pubsub::PubArgs>),
    Sub(S<cmd::pubsub::SubArgs>),
    Actor(S<cmd::actor::Args>),
    Config(S<cmd::show_config::Args>),
    Inspect(cmd::inspect::Args),
    Journal(cmd::journal::Args),
    Shutdown(S<cmd::shutdown::Args>),
    Scheduler(cmd::scheduler::Args),
    Worker(S<cmd::worker::Args>),
    Cluster(cmd::cluster::Args),
    Cert(cmd::cert::Args),
}

impl Command {
    /// The TLS flags of a verb that connects or listens.
    fn tls(&self) -> Option<&cmd::TlsArgs> {
        use Command::*;
        match self {
            Scheduler(a) => Some(&a.tls),
            Cluster(a) => Some(&a.tls),
            Inspect(_) | Journal(_) | Cert(_) => None,
            Submit(S { global, .. })
            | Map(S { global, .. })
            | Gather(S { global, .. })
            | Wait(S { global, .. })
            | Status(S { global, .. })
            | Release(S { global, .. })
            | AsCompleted(S { global, .. })
            | Cancel(S { global, .. })
            | Retry(S { global, .. })
            | Scatter(S { global, .. })
            | WhoHas(S { global, .. })
            | Workers(S { global, .. })
            | Info(S { global, .. })
            | Dashboard(S { global, .. })
            | Logs(S { global, .. })
            | Tasks(S { global, .. })
            | Queue(S { global, .. })
            | Var(S { global, .. })
            | Lock(S { global, .. })
            | Semaphore(S { global, .. })
            | Event(S { global, .. })
            | Pub(S { global, .. })
            | Sub(S { global, .. })
            | Actor(S { global, .. })
            | Config(S { global, .. })
            | Shutdown(S { global, .. })
            | Worker(S { global, .. }) => Some(&global.tls),
        }
    }
}

/// A usage error as every other error is said: `dtask: error: …` on one
/// line, clap's detail (the usage, the hint) indented under it.
fn usage_error(e: &clap::Error) {
    let text = e.render().to_string();
    let mut lines = text.trim_end().lines();
    let first = lines.next().unwrap_or_default();
    let mut out = format!("dtask: error: {}\n", first.trim_start_matches("error: "));
    for line in lines.filter(|l| !l.trim().is_empty()) {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    eprint!("{out}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            usage_error(&e);
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(0);
        }
    };
    let daemon = matches!(
        cli.command,
        Command::Scheduler(_) | Command::Worker(_) | Command::Cluster(_)
    );
    if !daemon {
        // A client dies quietly on a closed pipe (`dtask gather | head -1`)
        // like other Unix tools. Daemons keep ignoring SIGPIPE: a peer that
        // vanishes mid-write must cost them a connection, not their life.
        // SAFETY: setting a signal disposition at start-up, before any
        // thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        widen_stdout_pipe();
    }
    // Only a worker's guest memories gain from huge pages; a worker
    // started by `dtask cluster` would otherwise inherit its parent's "no".
    transparent_huge_pages(matches!(cli.command, Command::Worker(_)));
    init_logging(if daemon { "info" } else { "warn" });
    if let Some(Err(f)) = cli.command.tls().map(cmd::TlsArgs::install) {
        f.report();
        return ExitCode::from(f.code);
    }
    let result = match cli.command {
        Command::Cert(a) => cmd::cert::run(a),
        Command::Scheduler(a) => cmd::scheduler::run(a),
        Command::Worker(S { global, args: a }) => cmd::worker::run(&global, a),
        Command::Cluster(a) => cmd::cluster::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Journal(a) => cmd::journal::run(a),
        Command::Config(S { global, args: a }) => cmd::show_config::run(&global, a),
        other => client_runtime().and_then(|rt| {
            rt.block_on(dtask_runtime::busy_poll::noting_wakes(async move {
                match other {
                    Command::Submit(S { global, args: a }) => cmd::submit::run(&global, a).await,
                    Command::Map(S { global, args: a }) => cmd::map::run(&global, a).await,
                    Command::Gather(S { global, args: a }) => cmd::gather::run(&global, a).await,
                    Command::Wait(S { global, args: a }) => cmd::wait::run(&global, a).await,
                    Command::Status(S { global, args: a }) => cmd::status::run(&global, a).await,
                    Command::Release(S { global, args: a }) => cmd::release::run(&global, a).await,
                    Command::AsCompleted(S { global, args: a }) => {
                        cmd::as_completed::run(&global, a).await
                    }
                    Command::Cancel(S { global, args: a }) => cmd::cancel::run(&global, a).await,
                    Command::Retry(S { global, args: a }) => cmd::retry::run(&global, a).await,
                    Command::Scatter(S { global, args: a }) => cmd::scatter::run(&global, a).await,
                    Command::WhoHas(S { global, args: a }) => cmd::who_has::run(&global, a).await,
                    Command::Workers(S { global, args: a }) => cmd::workers::run(&global, a).await,
                    Command::Info(S { global, args: a }) => cmd::info::run(&global, a).await,
                    Command::Logs(S { global, args: a }) => cmd::logs::run(&global, a).await,
                    Command::Tasks(S { global, args: a }) => cmd::tasks::run(&global, a).await,
                    Command::Dashboard(S { global, args: a }) => {
                        cmd::dashboard::run(&global, a).await
                    }
                    Command::Queue(S { global, args: a }) => cmd::queue::run(&global, a).await,
                    Command::Var(S { global, args: a }) => cmd::var::run(&global, a).await,
                    Command::Lock(S { global, args: a }) => cmd::lock::run(&global, a).await,
                    Command::Semaphore(S { global, args: a }) => {
                        cmd::semaphore::run(&global, a).await
                    }
                    Command::Event(S { global, args: a }) => cmd::event::run(&global, a).await,
                    Command::Pub(S { global, args: a }) => cmd::pubsub::run_pub(&global, a).await,
                    Command::Sub(S { global, args: a }) => cmd::pubsub::run_sub(&global, a).await,
                    Command::Actor(S { global, args: a }) => cmd::actor::run(&global, a).await,
                    Command::Shutdown(S { global, args: a }) => {
                        cmd::shutdown::run(&global, a).await
                    }
                    _ => unreachable!("daemons are handled above"),
                }
            }))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            f.report();
            ExitCode::from(f.code)
        }
    }
}

/// Whether the kernel may back this process's memory with 2 MiB pages.
///
/// The scheduler and the client verbs say no. mimalloc advises huge pages
/// for the memory it takes from the system, and on this project's VMs a
/// fault on a huge page zeroes all 2 MiB of fresh memory at once: in a
/// `seq | map | gather --release` pipeline, which frees and allocates
/// memory all the time, that zeroing was a quarter of the scheduler's CPU
/// time. With 4 KiB pages the same pipeline ran 15–20% faster (see
/// PERFORMANCE.md). A worker says yes: its guest memories are advised huge
/// pages (see `dtask_runtime::worker::sandbox`), which makes moving big
/// values through a task twice as fast, and the setting is inherited from
/// the process that started it. Linux only; elsewhere, and where the
/// kernel refuses, nothing changes.
fn transparent_huge_pages(allow: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process that the
    // kernel reads when it next backs a page fault; it touches no memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            libc::c_ulong::from(!allow),
            0,
            0,
            0,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allow;
}

/// Gives a pipe on stdout a 1 MiB buffer (the most an unprivileged process
/// may ask for by default) instead of 64 KiB: `dtask gather -r KEY | prog`
/// of a big value then costs the two processes far fewer wake-ups (100 MB
/// through `| cat`: about 80 ms less on this project's 2-core machine). A
/// refusal changes nothing.
fn widen_stdout_pipe() {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: fstat and fcntl on this process's own stdout descriptor,
    // with a zeroed stat buffer the call fills in.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
}

/// The client verbs' runtime: one thread. The connection, the verb and its
/// output then take turns without waking one another across threads,
/// which in a pipeline (`map | gather`) costs more than it gives; blocking
/// work (reading files, stdin) has threads of its own.
fn client_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    dtask_runtime::busy_poll::install(&mut tokio::runtime::Builder::new_current_thread())
        .enable_all()
        .build()
        .map_err(|e| Failure::new(2, format!("cannot start the async runtime: {e}")))
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DTASK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: log files stay plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
