//! `dtask worker`: run a worker process in the foreground.

use super::{Failure, Global};
use dtask_runtime::config::{self, Resolved};
use dtask_runtime::worker::sandbox::Limits;
use dtask_runtime::worker::{self, WorkerOptions};

/// Run a worker that joins a scheduler and runs tasks in N execution slots.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  dtask worker --scheduler 127.0.0.1:8786 --nthreads 4")]
pub struct Args {
    /// Execution slots (tasks computing at once) [default: 1, or
    /// `worker.nthreads` in dtask.toml].
    #[arg(long)]
    pub nthreads: Option<u32>,
    /// Address to serve results to peers on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Largest memory one task may use, in MiB [default: 256, or
    /// `worker.memory-limit-mib` in dtask.toml].
    #[arg(long)]
    pub memory_limit_mib: Option<usize>,
    /// Abstract resources this worker offers, e.g. `GPU=2` (repeatable);
    /// tasks submitted with `--resources` run only where they fit.
    #[arg(long = "resources", value_parser = super::task_options::parse_resource, value_name = "NAME=AMOUNT")]
    pub resources: Vec<(String, f64)>,
    /// A host directory tasks may be granted read access to, with what it
    /// contains (repeatable; `submit --dir`); none by default.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub allow_dirs: Vec<std::path::PathBuf>,
    /// Longest any task may run here, whatever its submit asked for
    /// (past it the task errs with `timeout`) [default: no limit].
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    pub task_timeout: Option<std::time::Duration>,
    /// Results kept in memory, e.g. `2GiB`; beyond it the least recently
    /// used are spilled to disk and read back when needed [default: half
    /// this machine's memory, or `worker.memory-budget` in dtask.toml].
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    pub memory_budget: Option<usize>,
    /// Where results beyond the memory budget are spilled (each worker uses
    /// its own subdirectory, removed when it stops) [default: `spill` in
    /// the state directory].
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
    /// When the scheduler goes away (a restart), keep the results held
    /// here and keep trying to rejoin it for this long before stopping.
    #[arg(long, value_parser = super::parse_duration, default_value = "60s", value_name = "DUR")]
    pub reconnect_grace: std::time::Duration,
}

pub fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let endpoint = match config::resolve(global.scheduler.as_deref()).map_err(Failure::usage)? {
        Resolved::Configured(e) => e,
        Resolved::LocalDefault => {
            return Err(Failure::usage(
                "which scheduler? pass --scheduler ADDR (or set DTASK_SCHEDULER)",
            ));
        }
    };
    let defaults = config::file_config()
        .map_err(Failure::usage)?
        .map(|(_, c)| c.worker)
        .unwrap_or_default();
    let nthreads = a.nthreads.or(defaults.nthreads).unwrap_or(1);
    let memory_limit_mib = a
        .memory_limit_mib
        .or(defaults.memory_limit_mib)
        .unwrap_or(256);
    let resources = if a.resources.is_empty() {
        defaults.resources.unwrap_or_default().into_iter().collect()
    } else {
        a.resources
    };
    if nthreads == 0 {
        return Err(Failure::usage("--nthreads must be at least 1"));
    }
    let memory_budget = match (a.memory_budget, &defaults.memory_budget) {
        (Some(b), _) => b,
        (None, Some(s)) => super::parse_size(s)
            .map_err(|e| Failure::usage(format!("worker.memory-budget in dtask.toml: {e}")))?,
        (None, None) => worker::default_memory_budget(1),
    };
    let options = WorkerOptions {
        scheduler: endpoint.address,
        token: endpoint.token,
        nthreads,
        listen_host: a.host,
        cache_dir: Some(config::cache_dir()),
        limits: Limits {
            memory: memory_limit_mib * 1024 * 1024,
            timeout: a.task_timeout,
        },
        resources,
        reconnect_grace: a.reconnect_grace,
        allow_dirs: a.allow_dirs.clone(),
        memory_budget,
        spill_dir: a
            .spill_dir
            .unwrap_or_else(|| config::state_dir().join("spill")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(nthreads as usize + 1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    rt.block_on(worker::run(options))
        .map_err(|e| Failure::new(3, format!("{e:#}")))
}
