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
#[command(after_help = "Example:\n  dtask cluster --workers 2 --threads 1 --port 0")]
pub struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Execution slots per worker.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Scheduler port; 0 picks a free one.
    #[arg(long, default_value_t = 8786)]
    port: u16,
    /// A host directory its workers let tasks read (`dtask worker
    /// --allow-dir`; repeatable).
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dirs: Vec<std::path::PathBuf>,
    /// Results each worker keeps in memory before spilling to disk (`dtask
    /// worker --memory-budget`) [default: half this machine's memory shared
    /// among the workers, or `worker.memory-budget` in dtask.toml].
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    memory_budget: Option<usize>,
    #[command(flatten)]
    serve: super::scheduler::ServeOptions,
    /// Record this cluster as the local default in the state directory.
    #[arg(long, hide = true)]
    record_local: bool,
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
    if a.workers == 0 || a.threads == 0 {
        return Err(Failure::usage("--workers and --threads must be at least 1"));
    }
    let token = config::server_token().map_err(|e| Failure::new(2, e))?;
    let listener = bind(&a.host, a.port)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(2, e.to_string()))?
        .to_string();
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(2, format!("cannot find the dtask binary: {e}")))?;
    // Workers are spawned from this (main) thread, so PR_SET_PDEATHSIG
    // takes them down with the cluster even if it is killed outright.
    let configured = config::file_config()
        .ok()
        .flatten()
        .is_some_and(|(_, c)| c.worker.memory_budget.is_some());
    let budget = match a.memory_budget {
        Some(b) => Some(b),
        // The file's budget is each worker's own; else share the machine's.
        None if configured => None,
        None => Some(dtask_runtime::worker::default_memory_budget(a.workers)),
    };
    let mut workers = Workers(Vec::new());
    for _ in 0..a.workers {
        let mut cmd = Command::new(&exe);
        cmd.args(["worker", "--scheduler", &addr, "--nthreads"])
            .arg(a.threads.to_string())
            .args(budget.map(|b| format!("--memory-budget={b}")))
            .args(
                a.allow_dirs
                    .iter()
                    .flat_map(|d| [std::ffi::OsStr::new("--allow-dir"), d.as_os_str()]),
            )
            .env("DTASK_TOKEN", &token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Failure::new(2, format!("cannot start a worker: {e}")))?;
        workers.0.push(child);
    }
    println!("{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(
        "cluster: scheduler on {addr}, {} workers x {} slots",
        a.workers,
        a.threads
    );
    let pid = std::process::id();
    if a.record_local {
        local::write_record(&local::LocalRecord {
            address: addr.clone(),
            pid,
        })
        .map_err(|e| Failure::new(2, format!("cannot record the local cluster: {e}")))?;
    }
    let mut serve_options = a.serve.clone();
    if a.record_local && serve_options.journal.is_none() {
        serve_options.journal = Some(config::state_dir().join("journal"));
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failure::new(2, e.to_string()))?;
    let result = rt.block_on(serve(listener, token, &serve_options));
    if a.record_local {
        local::remove_record(pid);
    }
    drop(workers);
    result
}
