//! `dtask worker`: run a worker process in the foreground.

use super::{Failure, Global};
use dtask_runtime::config;
use dtask_runtime::worker::sandbox::Limits;
use dtask_runtime::worker::{self, WorkerOptions};

/// Run a worker that joins a scheduler and runs tasks in N execution slots.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask worker --scheduler 127.0.0.1:8786 --nthreads 4\n\nExit status: 0 the scheduler asked it to stop, 2 usage or bad input, 3 cannot reach or authenticate to the scheduler (or it stayed away past --reconnect-grace)."
)]
pub struct Args {
    /// Address to bind the data port (results served to peers) on, e.g.
    /// `0.0.0.0` for every interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Host or IP other workers and clients reach this one at [default:
    /// the bound address; with a wildcard `--host`, the address this
    /// worker reaches the scheduler from].
    #[arg(long, env = "DTASK_ADVERTISE", value_name = "HOST")]
    pub advertise: Option<String>,
    /// Port of the data port; 0 picks a free one (a fixed one suits
    /// firewalls and Kubernetes Services).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub data_port: u16,
    #[command(flatten)]
    pub flags: WorkerFlags,
    /// When the scheduler goes away (a restart), keep the results held
    /// here and keep trying to rejoin it for this long before stopping.
    #[arg(long, value_parser = super::parse_duration, default_value = "60s", value_name = "DUR")]
    pub reconnect_grace: std::time::Duration,
    /// Workers started before this one in its place (set by `dtask
    /// cluster`'s nanny; `dtask workers` shows it).
    #[arg(long, hide = true, default_value_t = 0)]
    pub restart_count: u32,
}

/// What a worker offers and allows: the flags `dtask worker` and `dtask
/// cluster` share (a cluster passes those given on to its workers, which
/// take the rest from the `[worker]` section of dtask.toml).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WorkerFlags {
    /// Execution slots per worker (tasks computing at once) [default: 1,
    /// or `worker.nthreads` in dtask.toml].
    #[arg(long, alias = "threads", value_name = "N")]
    pub nthreads: Option<u32>,
    /// Largest memory one task may use, in MiB [default: 256, or
    /// `worker.memory-limit-mib` in dtask.toml].
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mib: Option<usize>,
    /// Abstract resources a worker offers, e.g. `GPU=2` (repeatable);
    /// tasks submitted with `--resources` run only where they fit
    /// [default: `worker.resources` in dtask.toml].
    #[arg(long = "resources", value_parser = super::task_options::parse_resource, value_name = "NAME=AMOUNT")]
    pub resources: Vec<(String, f64)>,
    /// A host directory tasks may be granted read access to, with what it
    /// contains (repeatable; `submit --dir`); none by default.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub allow_dirs: Vec<std::path::PathBuf>,
    /// Longest any task may run, whatever its submit asked for (past it
    /// the task errs with `timeout`) [default: no limit].
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    pub task_timeout: Option<std::time::Duration>,
    /// Results a worker keeps in memory, e.g. `2GiB`; beyond it the least
    /// recently used are spilled to disk and read back when needed
    /// [default: half this machine's memory (shared among a cluster's
    /// workers), or `worker.memory-budget` in dtask.toml].
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    pub memory_budget: Option<usize>,
    /// Where results beyond the memory budget are spilled (each worker uses
    /// its own subdirectory, removed when it stops) [default: `spill` in
    /// the state directory].
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
    /// How much of a finished task's memory stays mapped for the next task
    /// in its slot, e.g. `256MiB`: tasks that move big values (100 MB in
    /// and out) run about half again as fast, and an idle worker keeps
    /// about that much resident per slot used [default: 4MiB, or
    /// `worker.keep-task-memory` in dtask.toml].
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE")]
    pub keep_task_memory: Option<usize>,
    /// Steps of the clocks tasks read (wall and monotonic), e.g. `1ms`;
    /// `0` gives tasks the host's full precision. Coarse clocks blunt
    /// timing side channels between tasks sharing a worker [default:
    /// 100us, or `worker.clock-resolution` in dtask.toml].
    #[arg(long, value_parser = super::parse_duration, value_name = "DUR")]
    pub clock_resolution: Option<std::time::Duration>,
    /// Pooled sandboxed instances, the fastest to set up: for tasks
    /// running, tasks waiting in a gather of subtasks, a queue get or a
    /// lock, and actors; at least --nthreads. Past the pool, instances are
    /// set up on demand, up to `--max-instances` [default: 8 per slot +
    /// 256, at most 2000, or `worker.instances` in dtask.toml].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub instances: Option<u32>,
    /// Instances at once, pooled and set up on demand, never fewer than
    /// the pool (the same number as `--instances` turns those on demand
    /// off). Tasks past it wait for one, and the scheduler sends new work
    /// to other workers meanwhile [default: 4096, or
    /// `worker.max-instances` in dtask.toml].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_instances: Option<u32>,
}

impl WorkerFlags {
    /// The flags that were given, as `dtask worker` arguments.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        if let Some(n) = self.nthreads {
            v.push(format!("--nthreads={n}").into());
        }
        if let Some(m) = self.memory_limit_mib {
            v.push(format!("--memory-limit-mib={m}").into());
        }
        for (n, a) in &self.resources {
            v.push(format!("--resources={n}={a}").into());
        }
        for d in &self.allow_dirs {
            v.push("--allow-dir".into());
            v.push(d.into());
        }
        if let Some(t) = self.task_timeout {
            v.push(format!("--task-timeout={}ms", t.as_millis()).into());
        }
        if let Some(b) = self.memory_budget {
            v.push(format!("--memory-budget={b}").into());
        }
        if let Some(d) = &self.spill_dir {
            v.push("--spill-dir".into());
            v.push(d.into());
        }
        if let Some(k) = self.keep_task_memory {
            v.push(format!("--keep-task-memory={k}").into());
        }
        if let Some(c) = self.clock_resolution {
            v.push(format!("--clock-resolution={}ns", c.as_nanos()).into());
        }
        if let Some(n) = self.instances {
            v.push(format!("--instances={n}").into());
        }
        if let Some(n) = self.max_instances {
            v.push(format!("--max-instances={n}").into());
        }
        v
    }
}

/// A worker setting: its flag if given, else `worker.KEY` from dtask.toml
/// (parsed by `parse`, a bad one a usage error naming it), else `None`.
fn setting<T>(
    flag: Option<T>,
    file: &Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Failure> {
    match (flag, file) {
        (Some(v), _) => Ok(Some(v)),
        (None, Some(s)) => parse(s)
            .map(Some)
            .map_err(|e| Failure::usage(format!("worker.{key} in dtask.toml: {e}"))),
        (None, None) => Ok(None),
    }
}

/// How long a blocking thread of a worker lives without work.
const IDLE_THREAD: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a worker gives back the memory freed since: a worker gone
/// idle after a module's compilation held some 50 MB it no longer used
/// until its next task.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(global: &Global, a: Args) -> Result<(), Failure> {
    let defaults = config::file_config()
        .map_err(Failure::usage)?
        .map(|(_, c)| c.worker)
        .unwrap_or_default();
    let restarts = a.restart_count;
    let reconnect_grace = a.reconnect_grace;
    let host = a.host;
    let advertise = a.advertise;
    let data_port = a.data_port;
    let a = a.flags;
    // Under Slurm, the CPUs the job step was given.
    let slurm = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let nthreads = a.nthreads.or(defaults.nthreads).or(slurm).unwrap_or(1);
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
    // Flags first: a bad one is reported before the token is looked for.
    let Some((scheduler, _)) =
        config::resolve_address(global.scheduler.as_deref()).map_err(Failure::usage)?
    else {
        return Err(Failure::usage(
            "which scheduler? pass --scheduler ADDR (or set DTASK_SCHEDULER)",
        ));
    };
    let memory_budget = setting(
        a.memory_budget,
        &defaults.memory_budget,
        "memory-budget",
        super::parse_size,
    )?
    .unwrap_or_else(|| worker::default_memory_budget(1));
    let keep_resident = setting(
        a.keep_task_memory,
        &defaults.keep_task_memory,
        "keep-task-memory",
        super::parse_size,
    )?
    .unwrap_or(dtask_runtime::worker::sandbox::KEEP_RESIDENT);
    let clock_resolution = setting(
        a.clock_resolution,
        &defaults.clock_resolution,
        "clock-resolution",
        super::parse_duration,
    )?
    .unwrap_or(dtask_runtime::worker::sandbox::CLOCK_RESOLUTION);
    let token = config::worker_token().map_err(|e| Failure::new(3, e))?;
    let options = WorkerOptions {
        scheduler,
        token: token.into(),
        nthreads,
        listen_host: host,
        data_port,
        advertise,
        cache_dir: Some(config::cache_dir()),
        limits: Limits {
            memory: memory_limit_mib * 1024 * 1024,
            timeout: a.task_timeout,
            keep_resident,
            clock_resolution,
            instances: a.instances.or(defaults.instances),
            max_instances: a.max_instances.or(defaults.max_instances),
        },
        resources,
        reconnect_grace,
        allow_dirs: a.allow_dirs.clone(),
        memory_budget,
        spill_dir: a
            .spill_dir
            .unwrap_or_else(|| config::state_dir().join("spill")),
        restarts,
    };
    // One slot: everything (connection, task, results) on one thread, so
    // handing a message or a result along is a queue push, not a wake-up
    // of another thread (a third less CPU per task, PERFORMANCE.md). A
    // running guest yields at every epoch tick, so the connection is
    // served meanwhile; compiling and spilling run on blocking threads.
    // More slots need threads that compute at once.
    // Only the one-thread runtime busy-polls (see `dtask_runtime::busy_poll`).
    let mut builder = if nthreads == 1 {
        let mut b = tokio::runtime::Builder::new_current_thread();
        dtask_runtime::busy_poll::install(&mut b);
        b
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(nthreads as usize + 1);
        b
    };
    // A blocking thread (a module's compilation, a spill) ends a second
    // after its last job, giving back what its heap held, rather than ten.
    let rt = builder
        .enable_all()
        .thread_keep_alive(IDLE_THREAD)
        .build()
        .map_err(|e| Failure::new(2, e.to_string()))?;
    crate::purge_freed_memory_every(PURGE_EVERY);
    // Spawned rather than run as `block_on`'s own future: a current-thread
    // runtime polls that future only between rounds of its tasks, so
    // while a guest computes, the worker's messages (a task's `Started`,
    // say) would wait for the guest to finish.
    rt.block_on(async { tokio::spawn(worker::run(options)).await })
        .map_err(|e| Failure::new(3, format!("the worker stopped: {e}")))?
        .map_err(|e| Failure::new(3, format!("{e:#}")))
}
