//! Running one task in wasmtime: a fresh store per task over a pre-linked
//! component, limits on memory and time, captured stderr, and errors turned
//! into [`TaskError`]s a user can act on.
//!
//! A WASI command (a `wasi:cli/run` component or a core module with
//! `_start`) runs the same way, with its argv and standard input from the
//! task's arguments and its standard output, captured, as the result; a
//! non-zero exit status is an [`ErrorKind::Exit`] error.
//!
//! One [`Engine`] per worker uses the pooling allocator (instantiation costs
//! microseconds) and epoch interruption: a thread ticks the epoch every
//! [`TICK`], and at every tick a running guest yields to tokio, so a long
//! task never starves the worker's I/O, and a task past its deadline traps.

use super::bulk::{Arg, Shape};
use super::host::{self, HasLink, TaskLink};
use crate::module::{COMMAND_FUNCTION, Code, CompiledModule, Entry, ModuleKind, engine_config};
use crate::protocol::{ErrorKind, TaskError};
use crate::value::{self, Value};
use std::iter::once;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime::component::{InstancePre, Linker, ResourceTable, Val};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod actor;
mod capture;
mod clocks;
mod command;
mod epoch;
mod errors;
mod stdin;
mod stdout;

pub use actor::ActorInstance;
use actor::WORKER_LIMIT;
pub use capture::Captured;
use capture::{Capture, Out};
use command::command_input;
pub use epoch::TICK;
use errors::*;

/// A value this big in or out of a task makes its instance's memory worth
/// resetting off the task's path.
pub(crate) const BIG_MEMORY: usize = 1 << 20;

/// Most bytes of a guest's stderr kept for its error report (the last ones).
const STDERR_CAP: usize = 64 * 1024;

/// A task argument as the worker has it.
#[derive(Clone, Debug)]
pub enum TaskArg {
    /// A decoded value.
    Value(Value),
    /// A byte string left undecoded (a slice of what arrived), so that a
    /// `list<u8>` parameter takes it with one copy into the guest.
    Bytes(bytes::Bytes),
    /// A byte string held in a spill file, for a command's stdin to read
    /// as it goes.
    File(crate::value::FileBytes),
}

impl TaskArg {
    /// The argument as a value (copying a byte string; reading a spilled
    /// one whole, nil if its file cannot be read).
    pub fn into_value(self) -> Value {
        match self {
            TaskArg::Value(v) => v,
            TaskArg::Bytes(b) => Value::Binary(b.to_vec()),
            TaskArg::File(f) => f.read_all().map_or(Value::Nil, |b| Value::Binary(b.into())),
        }
    }

    fn payload_bytes(&self) -> usize {
        match self {
            TaskArg::Value(v) => value::payload_bytes(v),
            TaskArg::Bytes(b) => b.len(),
            TaskArg::File(f) => f.len() as usize,
        }
    }
}

/// What a task returned.
#[derive(Debug)]
pub enum Output {
    /// A value.
    Value(Value),
    /// A value already encoded (MessagePack), as a byte string result is,
    /// to skip a copy.
    Encoded(bytes::Bytes),
    /// An encoded value written to a spill file of the worker's results as
    /// it was made (a command's stdout over the memory budget), for
    /// [`ResultStore::adopt`](crate::worker::store::ResultStore::adopt).
    Spilled(crate::worker::store::SpillFile),
}

impl Output {
    /// The result's MessagePack encoding, or the spill file holding it.
    pub fn encode(self) -> Result<bytes::Bytes, crate::worker::store::SpillFile> {
        match self {
            Output::Value(v) => Ok(value::encode(&v).into()),
            Output::Encoded(b) => Ok(b),
            Output::Spilled(file) => Err(file),
        }
    }

    /// The result as a value (read back from its spill file, if there).
    pub fn into_value(self) -> Value {
        let encoded = match self {
            Output::Value(v) => return v,
            Output::Encoded(b) => b,
            Output::Spilled(file) => file.read().map(Into::into).unwrap_or_default(),
        };
        value::decode(&encoded).unwrap_or(Value::Nil)
    }
}

/// Per-task resource limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest linear memory a task may grow, in bytes.
    pub memory: usize,
    /// Longest a task may run, whatever its submit asked for.
    pub timeout: Option<Duration>,
    /// How much of each instance slot's memory stays mapped (zeroed) after
    /// its task, for the next task in that slot. More makes tasks that
    /// move big values faster (their memory is already backed: no page
    /// faults) and keeps that much resident per slot in use while idle.
    pub keep_resident: usize,
    /// Steps of the clocks guests read (wall and monotonic), rounded down
    /// to a multiple of this; zero for the host's own precision. Coarse
    /// clocks blunt timing side channels between tasks sharing a worker.
    pub clock_resolution: Duration,
    /// Pooled component instances: how many tasks may hold one at once,
    /// running or waiting in a host call (a gather of subtasks, a queue
    /// get, a lock), with the actors; never fewer than the slots. `None`: 8
    /// per slot and 256 more, at most 2,000 ([`pool_size`]).
    pub instances: Option<u32>,
    /// Instances at once, pooled and not: past the pool, each is set up on
    /// demand (slower to set up, with no memory kept between tasks), so
    /// that tasks waiting on others never keep those others from running.
    /// Never fewer than the pool. `None`: [`MAX_INSTANCES`].
    pub max_instances: Option<u32>,
}

/// What [`Limits::max_instances`] is unless set. Each instance may reserve
/// a few GiB of address space (never memory) for its linear memories, so
/// this many stay well within a 64-bit process's 128 TiB; what each costs
/// in memory is what its task touches.
pub const MAX_INSTANCES: u32 = 4096;

/// What [`Limits::keep_resident`] is unless set: enough for a small task
/// (so it never faults), and no more held while idle.
pub const KEEP_RESIDENT: usize = 4 << 20;

/// What [`Limits::clock_resolution`] is unless set: as fine as a browser
/// gives pages that are not cross-origin isolated.
pub const CLOCK_RESOLUTION: Duration = Duration::from_micros(100);

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 256 * 1024 * 1024,
            timeout: None,
            keep_resident: KEEP_RESIDENT,
            clock_resolution: CLOCK_RESOLUTION,
            instances: None,
            max_instances: None,
        }
    }
}

/// Limits of one run, within the worker's [`Limits`].
#[derive(Clone, Debug, Default)]
pub struct RunLimits {
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes, below the worker's.
    pub memory: Option<usize>,
    /// Access granted beyond the sandbox (checked against what the worker
    /// allows before this point).
    pub grants: crate::protocol::Grants,
    /// Where the guest's stderr (and a component's stdout) go: the caller
    /// keeps a clone to read them after the run, whatever its outcome.
    pub output: Captured,
    /// The worker's results, where a command's stdout goes on to a spill
    /// file once over their memory budget. Without it, a command's stdout
    /// is held in memory up to the task's memory limit.
    pub spill: Option<Arc<crate::worker::store::ResultStore>>,
    /// An instance taken for the run beforehand ([`Sandbox::instance`]);
    /// without one, the run waits for its own.
    pub instance: Option<Instance>,
}

/// Adds what `grants` allows to a WASI context: environment variables, and
/// host directories readable (only) at the same path.
fn grant(wasi: &mut WasiCtxBuilder, grants: &crate::protocol::Grants) -> Result<(), String> {
    use wasmtime_wasi::FsPerms;
    for (k, v) in &grants.env {
        wasi.env(k, v);
    }
    for dir in &grants.dirs {
        wasi.preopened_dir(dir, dir, FsPerms::ReadOnly)
            .map_err(|e| format!("cannot open the granted directory {dir}: {e}"))?;
    }
    Ok(())
}

/// What a guest's store holds: WASI state and dtask's host-function state.
pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    key: String,
    worker_id: Arc<str>,
    /// The task's link to the cluster, when it runs on a worker.
    link: Option<TaskLink>,
    /// The task's memory limit and how to raise it, for what its host
    /// calls bring into its memory.
    memory: Option<(usize, &'static str)>,
}

impl HasLink for Host {
    fn link(&mut self) -> Option<&mut TaskLink> {
        self.link.as_mut()
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn memory_limit(&self) -> Option<(usize, &'static str)> {
        self.memory
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What a core (WASI preview 1) command's store holds.
struct CoreHost {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// A module linked and ready to instantiate.
pub struct Ready {
    /// The compiled module and its exports.
    pub module: Arc<CompiledModule>,
    pre: Pre,
    /// The same code in the engine of instances past the pool, copied
    /// there the first time one runs it.
    on_demand: tokio::sync::OnceCell<Arc<Ready>>,
}

/// A pre-linked module of each kind.
enum Pre {
    Exports(InstancePre<Host>),
    Command(CommandPre<Host>),
    Core(wasmtime::InstancePre<CoreHost>),
}

/// Guest memories backed by 2 MiB pages where the kernel allows it.
///
/// A task moving 100 MB through a guest first-touches 25,600 pages of
/// 4 KiB, and on this project's VMs those faults cost more than copying the
/// bytes (100 MB in and out of a guest took 70 ms with them, 32 ms with
/// huge pages). wasmtime's pool has no setting for it, so once the pool
/// is reserved, its mapping (found in `/proc/self/maps` as the new
/// anonymous reservation at least as large as the pool) is advised
/// `MADV_HUGEPAGE`. The advice survives wasmtime's `mprotect` and
/// `madvise(MADV_DONTNEED)` of slots, so memory is still given back as
/// each task ends. Where the kernel says no (or this is not Linux),
/// nothing changes but speed.
mod huge_pages {
    /// A mapping's address range.
    pub type Range = (usize, usize);

    /// The anonymous mappings of this process.
    pub fn reservations() -> Vec<Range> {
        #[cfg(target_os = "linux")]
        if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
            return maps.lines().filter_map(anonymous).collect();
        }
        Vec::new()
    }

    /// `start-end perms offset dev inode [path]`: the range of an
    /// anonymous mapping (inode 0, no path).
    pub(super) fn anonymous(line: &str) -> Option<Range> {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let inode = fields.nth(3)?;
        if inode != "0" || fields.next().is_some() {
            return None;
        }
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end))
    }

    /// Advises huge pages for every anonymous mapping of at least
    /// `at_least` bytes that is not in `before`.
    pub fn advise_new(before: &[Range], at_least: usize) {
        #[cfg(target_os = "linux")]
        for (start, end) in reservations() {
            if end - start < at_least || before.contains(&(start, end)) {
                continue;
            }
            // SAFETY: advice only: MADV_HUGEPAGE changes how the kernel
            // backs later faults in this range, never its contents or
            // protection, and the range is a whole mapping of this process.
            let said = unsafe { libc::madvise(start as *mut _, end - start, libc::MADV_HUGEPAGE) };
            if said != 0 {
                tracing::debug!(
                    "guest memories stay on 4 KiB pages: madvise(MADV_HUGEPAGE): {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (before, at_least);
    }
}

/// The worker's wasmtime: engines, linkers with dtask's host functions
/// (for components) and WASI preview 1 (for core commands), limits.
///
/// Two compilers: Cranelift's optimised code is what tasks run on, and
/// Winch, a baseline compiler about three times faster to compile with, runs
/// a module's first tasks while Cranelift compiles it in the background
/// (see `worker::run::load_module`). Each has its own engine, with its own
/// pool of instances; a module's code runs in the engine that compiled it.
pub struct Sandbox {
    tier: Tier,
    fast: Option<Tier>,
    /// Advances the engines' epochs while stores exist.
    ticker: epoch::Ticker,
    limits: Limits,
    worker_id: Arc<str>,
    /// One permit per pooled instance, held by each live store: a task
    /// finding the pool taken runs in an instance set up on demand, or,
    /// with those taken too, waits for one to come free (tasks waiting in
    /// host calls keep theirs) instead of failing at instantiation.
    instances: Arc<tokio::sync::Semaphore>,
    /// How many there are.
    pool: u32,
    /// Instances past the pool, if [`Limits::max_instances`] allows any.
    on_demand: Option<OnDemand>,
}

/// Instances past the pool: engines of the same settings as the pooled
/// ones, which set each instance up when it begins and free it when it
/// ends. Slower per task than the pool (a few system calls more), they are
/// there so that a worker whose pool is held by tasks waiting (on
/// subtasks, a queue, an event) still runs the tasks they wait for.
struct OnDemand {
    tier: Tier,
    fast: Option<Tier>,
    /// One permit per instance that may exist past the pool.
    instances: Arc<tokio::sync::Semaphore>,
    /// How many there are.
    count: u32,
}

/// An instance a task or actor holds while its store lives: pooled, or
/// past the pool, set up on demand.
#[derive(Clone, Debug)]
pub struct Instance {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    on_demand: bool,
}

impl Instance {
    /// Whether it is past the pool, set up on demand.
    pub fn on_demand(&self) -> bool {
        self.on_demand
    }
}

/// Component instances each engine's pool holds for `concurrency` slots,
/// unless [`Limits::instances`] says.
/// Tasks waiting in host calls (a gather of subtasks, a queue get) keep
/// their instances while their slots run others, so the pool is far
/// larger than the slot count; unused entries cost only address space.
fn pool_size(concurrency: u32) -> u32 {
    (concurrency.max(1) * 8 + 256).min(2000)
}

/// Most elements of one table, in every instance: the pool's own bound,
/// and the same for instances set up on demand (tables live outside the
/// task's memory limit, so a guest growing one would cost the worker).
const TABLE_ELEMENTS: usize = 20_000;

/// Most linear memories, tables and core instances of one task's store
/// (a component is a few core modules: its own and the small ones
/// `wit-component` adds): a bound on what a guest can declare in an
/// instance set up on demand, as the pool has one on its slots.
const STORE_MEMORIES: usize = 8;
const STORE_TABLES: usize = 16;
const STORE_INSTANCES: usize = 16;

/// Longest a task waits for a pooled instance to come free (within its
/// own time limit) before it fails: past it, the instances are most
/// likely held by tasks waiting for tasks that wait for one.
const INSTANCE_WAIT: Duration = Duration::from_secs(30);

/// The tiers of a sandbox: pooled, then on demand.
fn tiers<'a>(
    tier: &'a Tier,
    fast: &'a Option<Tier>,
    on_demand: &'a Option<OnDemand>,
) -> impl Iterator<Item = &'a Tier> {
    let past_pool = on_demand.iter().flat_map(|o| once(&o.tier).chain(&o.fast));
    once(tier).chain(fast).chain(past_pool)
}

/// One compiler's engine and the linkers built on it.
struct Tier {
    engine: Engine,
    linker: Linker<Host>,
    core_linker: wasmtime::Linker<CoreHost>,
}

impl Tier {
    /// An engine whose pool holds `n` component instances
    /// ([`pool_size`]).
    fn pooled(limits: &Limits, n: u32, strategy: wasmtime::Strategy) -> anyhow::Result<Self> {
        let mut config = engine_config();
        config.strategy(strategy);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n);
        pool.total_core_instances(n * 4);
        pool.total_memories(n * 2);
        pool.total_tables(n * 4);
        pool.max_memory_size(limits.memory);
        pool.table_elements(TABLE_ELEMENTS);
        // Reset a finished task's memory by rewriting only the pages it
        // dirtied (found with PAGEMAP_SCAN where the kernel has it) instead
        // of unmapping it: no page faults and far fewer syscalls per task.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        // Pages stay mapped, zeroed, up to this much of each memory: with
        // enough, a task moving 100 MB finds its memory already backed
        // (first-touch page faults were half the cost of copying a big
        // value in and out). Slots are reused by the same module first, so
        // what stays resident is about that much per slot in use.
        pool.linear_memory_keep_resident(limits.memory.min(limits.keep_resident));
        pool.table_keep_resident(64 << 10);
        pool.async_stack_keep_resident(256 << 10);
        // Give memory back as each instance ends: batching decommits kept
        // up to a batch of finished tasks' memories resident at once.
        pool.decommit_batch_size(1);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let before = huge_pages::reservations();
        let engine = Engine::new(&config)?;
        // The pool's memories are reserved when the engine is built: at
        // least this many bytes of address space, in one mapping.
        huge_pages::advise_new(&before, (n as usize * 2).saturating_mul(limits.memory));
        Self::on(engine)
    }

    /// An engine that sets each instance up on demand, with the same
    /// compilation settings as the pooled one (so code compiled for that
    /// one loads in this one without compiling again).
    fn on_demand(strategy: wasmtime::Strategy) -> anyhow::Result<Self> {
        let mut config = engine_config();
        config.strategy(strategy);
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Self::on(Engine::new(&config)?)
    }

    /// `engine` with dtask's host functions linked.
    fn on(engine: Engine) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        host::add_to_linker(&mut linker)?;
        let mut core_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core_linker, |h: &mut CoreHost| &mut h.wasi)?;
        Ok(Self {
            engine,
            linker,
            core_linker,
        })
    }
}

impl Sandbox {
    /// A sandbox for `concurrency` tasks at once.
    pub fn new(worker_id: &str, limits: Limits, concurrency: u32) -> anyhow::Result<Self> {
        // Never fewer than the slots: a task in a slot always finds one,
        // unless tasks waiting in host calls hold them.
        let pool = limits
            .instances
            .unwrap_or_else(|| pool_size(concurrency))
            .max(concurrency.max(1));
        let tier = Tier::pooled(&limits, pool, wasmtime::Strategy::Cranelift)?;
        // Without Winch (a platform it does not support), every module
        // waits for Cranelift.
        let fast = Tier::pooled(&limits, pool, wasmtime::Strategy::Winch).ok();
        let past_pool = limits
            .max_instances
            .unwrap_or(MAX_INSTANCES)
            .saturating_sub(pool);
        let on_demand = match past_pool {
            0 => None,
            count => Some(OnDemand {
                tier: Tier::on_demand(wasmtime::Strategy::Cranelift)?,
                // Without it, Winch's code waits for a pooled instance.
                fast: fast
                    .as_ref()
                    .and_then(|_| Tier::on_demand(wasmtime::Strategy::Winch).ok()),
                instances: Arc::new(tokio::sync::Semaphore::new(count as usize)),
                count,
            }),
        };
        let engines: Vec<_> = tiers(&tier, &fast, &on_demand).map(|t| &t.engine).collect();
        let ticker = epoch::Ticker::start(&engines)?;
        Ok(Self {
            tier,
            fast,
            ticker,
            limits,
            worker_id: worker_id.into(),
            instances: Arc::new(tokio::sync::Semaphore::new(pool as usize)),
            pool,
            on_demand,
        })
    }

    /// Every engine's tier: pooled, then on demand.
    fn tiers(&self) -> impl Iterator<Item = &Tier> {
        tiers(&self.tier, &self.fast, &self.on_demand)
    }

    /// An instance if one is free now: pooled if one is, else one past the
    /// pool.
    pub fn try_instance(&self) -> Option<Instance> {
        let take = |s: &Arc<tokio::sync::Semaphore>, on_demand| {
            let permit = s.clone().try_acquire_owned().ok()?;
            Some(Instance {
                _permit: Arc::new(permit),
                on_demand,
            })
        };
        take(&self.instances, false).or_else(|| take(&self.on_demand.as_ref()?.instances, true))
    }

    /// Instances in use now: (pooled, set up on demand past the pool).
    pub fn instances_in_use(&self) -> (u32, u32) {
        let used = |s: &tokio::sync::Semaphore, n: u32| {
            n.saturating_sub(u32::try_from(s.available_permits()).unwrap_or(u32::MAX))
        };
        let past_pool = self
            .on_demand
            .as_ref()
            .map_or(0, |o| used(&o.instances, o.count));
        (used(&self.instances, self.pool), past_pool)
    }

    /// Every instance there may be at once, pooled and not.
    fn max_instances(&self) -> u32 {
        self.pool + self.on_demand.as_ref().map_or(0, |o| o.count)
    }

    /// An instance for task `key` ([`Sandbox::try_instance`]), waited for
    /// while every one is taken (by tasks waiting in host calls, or
    /// actors), for at most [`INSTANCE_WAIT`] or the task's `timeout`.
    ///
    /// A worker's task waits for one without its execution slot: the
    /// tasks holding instances may need the slot to go on (a seceded task
    /// rejoining).
    pub async fn instance(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Instance, TaskError> {
        match self.try_instance() {
            Some(free) => Ok(free),
            None => self.wait_for_instance(key, timeout, true).await,
        }
    }

    /// Waits for an instance to come free: a pooled one, or with
    /// `past_pool` one past the pool too (see [`Sandbox::instance`]).
    async fn wait_for_instance(
        &self,
        key: &str,
        timeout: Option<Duration>,
        past_pool: bool,
    ) -> Result<Instance, TaskError> {
        let on_demand = self.on_demand.as_ref().filter(|_| past_pool);
        let pooled = async { (self.instances.clone().acquire_owned().await, false) };
        let others = async {
            match on_demand {
                Some(o) => (o.instances.clone().acquire_owned().await, true),
                None => std::future::pending().await,
            }
        };
        let first = async {
            tokio::select! {
                p = pooled => p,
                o = others => o,
            }
        };
        let wait = timeout.map_or(INSTANCE_WAIT, |t| t.min(INSTANCE_WAIT));
        // What every instance was, for the error.
        let all = || match on_demand {
            None => format!("{} pooled instances", self.pool),
            Some(o) => format!(
                "{} instances ({} pooled, {} set up on demand)",
                self.max_instances(),
                self.pool,
                o.count
            ),
        };
        match tokio::time::timeout(wait, first).await {
            Ok((Ok(permit), on_demand)) => Ok(Instance {
                _permit: Arc::new(permit),
                on_demand,
            }),
            // The task's own limit passed first: that is its error.
            Err(_) if wait < INSTANCE_WAIT => Err(task_error(
                key,
                ErrorKind::Timeout,
                format!(
                    "the task's time limit ({wait:?}) passed while it waited for one of worker \
                     {}'s {} to come free (all held by waiting tasks and actors)",
                    self.worker_id,
                    all()
                ),
            )),
            _ => Err(task_error(
                key,
                ErrorKind::Internal,
                format!(
                    "no instance came free on worker {} in {wait:?}: all {} are held by \
                     tasks waiting (in a gather of subtasks, a queue get, a lock…) and by \
                     actors; run fewer such tasks at once per worker, start more workers, or \
                     give each more (`dtask worker --max-instances`)",
                    self.worker_id,
                    all()
                ),
            )),
        }
    }

    /// An instance to run `ready` in (`taken` if one was taken beforehand),
    /// and, for one past the pool, `ready`'s code in the engine of
    /// instances set up on demand. If that code cannot be had there, the
    /// run waits for a pooled instance instead.
    async fn instance_for<'a>(
        &self,
        ready: &'a Ready,
        key: &str,
        taken: Option<Instance>,
        timeout: Option<Duration>,
    ) -> Result<(Instance, Option<&'a Arc<Ready>>), TaskError> {
        let instance = match taken {
            Some(taken) => taken,
            None => self.instance(key, timeout).await?,
        };
        if !instance.on_demand {
            return Ok((instance, None));
        }
        match self.past_pool(ready).await {
            Ok(copy) => Ok((instance, Some(copy))),
            Err(why) => {
                tracing::warn!("{why}: task {key} waits for a pooled instance instead");
                drop(instance);
                let pooled = self.wait_for_instance(key, timeout, false).await?;
                Ok((pooled, None))
            }
        }
    }

    /// `ready`'s code in the engine of instances past the pool, copied
    /// there (off the async threads) the first time it is asked for; a
    /// copy that failed is tried again the next time.
    async fn past_pool<'a>(&self, ready: &'a Ready) -> Result<&'a Arc<Ready>, String> {
        ready
            .on_demand
            .get_or_try_init(|| async {
                let o = self
                    .on_demand
                    .as_ref()
                    .ok_or("this worker has no instances past the pool")?;
                let engine = ready.module.code.engine();
                let tier = match (&self.fast, &o.fast) {
                    (Some(fast), Some(on_demand)) if Engine::same(engine, &fast.engine) => {
                        on_demand
                    }
                    (Some(fast), None) if Engine::same(engine, &fast.engine) => {
                        return Err(format!(
                            "module {}'s quickly compiled code has no engine past the pool",
                            ready.module.hash
                        ));
                    }
                    _ => &o.tier,
                };
                let (module, engine) = (ready.module.clone(), tier.engine.clone());
                let module = tokio::task::spawn_blocking(move || module.copy_into(&engine))
                    .await
                    .map_err(|e| format!("copying module {}: {e}", ready.module.hash))??;
                self.prepare(module).map(Arc::new)
            })
            .await
    }

    /// The engine of optimised code (Cranelift), for compiling modules.
    pub fn engine(&self) -> &Engine {
        &self.tier.engine
    }

    /// The engine of quickly compiled code (Winch), where there is one.
    pub fn fast_engine(&self) -> Option<&Engine> {
        self.fast.as_ref().map(|t| &t.engine)
    }

    /// Links a compiled module against the host functions.
    pub fn prepare(&self, module: CompiledModule) -> Result<Ready, String> {
        let unlinked =
            |e: wasmtime::Error| format!("module {} cannot be linked: {e:#}", module.hash);
        let engine = module.code.engine();
        let tier = self
            .tiers()
            .find(|t| Engine::same(engine, &t.engine))
            .unwrap_or(&self.tier);
        let pre = match (&module.code, module.kind()) {
            (Code::Component(c), ModuleKind::CommandComponent) => Pre::Command(
                tier.linker
                    .instantiate_pre(c)
                    .and_then(CommandPre::new)
                    .map_err(unlinked)?,
            ),
            (Code::Component(c), _) => {
                Pre::Exports(tier.linker.instantiate_pre(c).map_err(unlinked)?)
            }
            (Code::Core(m), _) => Pre::Core(tier.core_linker.instantiate_pre(m).map_err(unlinked)?),
        };
        Ok(Ready {
            module: Arc::new(module),
            pre,
            on_demand: tokio::sync::OnceCell::new(),
        })
    }

    /// Runs `function` of a ready module on `args` as the task `key`. For a
    /// WASI command the arguments are `[stdin, argv]` and the result is its
    /// stdout bytes.
    pub async fn run(
        &self,
        ready: &Ready,
        key: &str,
        function: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, TaskError> {
        let limits = RunLimits {
            timeout,
            ..RunLimits::default()
        };
        let args = args.into_iter().map(TaskArg::Value).collect();
        self.run_linked(ready, key, function, args, limits, None)
            .await
            .map(Output::into_value)
    }

    /// [`Sandbox::run`] for a task on a worker, whose `link` lets it act as
    /// a client and coordinate with others (and holds its execution slot).
    pub async fn run_linked(
        &self,
        ready: &Ready,
        key: &str,
        function: &str,
        args: Vec<TaskArg>,
        limits: RunLimits,
        link: Option<TaskLink>,
    ) -> Result<Output, TaskError> {
        let timeout = limits.timeout;
        // Arguments are checked before an instance is waited for; then the
        // run takes the code of the engine its instance is in.
        if let Pre::Command(_) | Pre::Core(_) = &ready.pre {
            let input = command_input(ready, key, function, args)?;
            let (instance, copy) = self
                .instance_for(ready, key, limits.instance.clone(), timeout)
                .await?;
            let ready = copy.map_or(ready, |c| &**c);
            return self
                .command(ready, instance, key, input, limits, link)
                .await;
        }
        let err = |kind, message: String| task_error(key, kind, message);
        let sig = match ready.module.funcs.get(function) {
            Some(sig) => sig,
            None => {
                let name = format!("module {}", ready.module.hash);
                let e = ready.module.func(function, &name).err().unwrap_or_default();
                return Err(err(ErrorKind::Module, e));
            }
        };
        let (memory, raise) = self.memory_for(limits.memory);
        check_size(key, function, &args, memory, raise)?;
        let params = match Shape::of(&sig.params, &sig.results) {
            Some(shape) => {
                check_arity(key, function, &sig.params, &args)?;
                let args = shape.args(&sig.params, args).map_err(|(name, e)| {
                    err(
                        ErrorKind::Input,
                        format!("{function}: parameter {name}: {e}"),
                    )
                })?;
                Params::Bulk(shape, args)
            }
            None => {
                let args = args.into_iter().map(TaskArg::into_value).collect();
                Params::Vals(typed_params(key, function, &sig.params, args)?)
            }
        };

        let big_in = match &params {
            Params::Bulk(_, args) => args.iter().any(Arg::is_big),
            Params::Vals(_) => false,
        };
        let stderr = limits.output.stderr.clone();
        let mut wasi = clocks::builder(self.limits.clock_resolution);
        wasi.stderr(Out(stderr.clone()))
            .stdout(Out(limits.output.stdout.clone()));
        grant(&mut wasi, &limits.grants).map_err(|m| err(ErrorKind::Input, m))?;
        let (instance, copy) = self
            .instance_for(ready, key, limits.instance.clone(), timeout)
            .await?;
        // The export's index in the copy of the component its instance's
        // engine runs (a pooled one runs `ready`'s own, looked up above).
        let entry = match copy {
            None => Some(sig.entry),
            Some(c) => c.module.funcs.get(function).map(|s| s.entry),
        };
        let ready = copy.map_or(ready, |c| &**c);
        let (Pre::Exports(pre), Some(entry)) = (&ready.pre, entry) else {
            return Err(err(
                ErrorKind::Internal,
                format!("{function} vanished from module {}", ready.module.hash),
            ));
        };
        let mut host = self.host(wasi.build(), key, link);
        host.limits = self.store_limits_under(limits.memory);
        host.memory = Some((memory, raise));
        let mut store = self.store(ready, host, Deadline::after(timeout), instance);
        // Results may be as large as the task's memory.
        store.set_hostcall_fuel(memory.max(MIN_HOSTCALL_FUEL));

        let outcome = within(timeout, async {
            let instance = pre.instantiate_async(&mut store).await?;
            let Entry::Export(index) = entry else {
                return Err(wasmtime::Error::msg(format!("{function} is not an export")));
            };
            let func = instance
                .get_func(&mut store, index)
                .ok_or_else(|| wasmtime::Error::msg(format!("export {function} vanished")))?;
            match params {
                Params::Bulk(shape, args) => shape.call(&mut store, func, args).await,
                Params::Vals(params) => {
                    let mut results = vec![Val::Bool(false); sig.results.len()];
                    func.call_async(&mut store, &params, &mut results).await?;
                    Ok(Output::Value(match results.as_slice() {
                        [] => Value::Nil,
                        [one] => value::val_to_value(one),
                        many => Value::Array(many.iter().map(value::val_to_value).collect()),
                    }))
                }
            }
        })
        .await;
        let big_out = matches!(&outcome, Ok(Output::Encoded(b)) if b.len() >= BIG_MEMORY);
        if big_in || big_out {
            // Resetting the instance's memory (rewriting every page a big
            // value dirtied) is not the task's to wait for: its result is
            // out of the guest already.
            tokio::task::spawn_blocking(move || drop(store));
        }
        let bounds = Bounds {
            timeout,
            memory: Some((memory, raise)),
        };
        outcome.map_err(|e| classify(e, stderr.text(), key, bounds))
    }

    /// Constructs an actor: a fresh instance of `ready` that lives on, and
    /// in it the resource `resource` built by its constructor from `args`.
    /// `memory` caps the instance's memory below the worker's limit.
    pub async fn construct(
        &self,
        ready: Arc<Ready>,
        key: &str,
        resource: &str,
        args: Vec<Value>,
        memory: Option<usize>,
        call_limit: Option<Duration>,
    ) -> Result<ActorInstance, TaskError> {
        let err = |kind, message: String| task_error(key, kind, message);
        let Pre::Exports(_) = &ready.pre else {
            return Err(err(
                ErrorKind::Module,
                format!(
                    "module {} is a WASI command; an actor needs a component exporting a resource",
                    ready.module.hash
                ),
            ));
        };
        let ctor = crate::module::constructor(resource);
        let sig = ready
            .module
            .constructor(resource, &format!("module {}", ready.module.hash))
            .map_err(|m| err(ErrorKind::Module, m))?;
        let params = typed_params(key, &ctor, &sig.params, args)?;
        let entry = sig.entry;
        // Arguments checked, an instance, and the code of its engine (with
        // the constructor's index in that copy of the component).
        let (instance, copy) = self.instance_for(&ready, key, None, None).await?;
        let entry = match copy {
            None => Some(entry),
            Some(c) => c.module.funcs.get(&ctor).map(|s| s.entry),
        };
        let ready = copy.cloned().unwrap_or(ready);
        let (Pre::Exports(pre), Some(entry)) = (&ready.pre, entry) else {
            return Err(err(ErrorKind::Internal, format!("{ctor} vanished")));
        };
        let Entry::Export(index) = entry else {
            return Err(err(ErrorKind::Module, format!("{ctor} is not an export")));
        };
        let stderr = Capture::default();
        let wasi = clocks::builder(self.limits.clock_resolution)
            .stderr(Out(stderr.clone()))
            .build();
        let mut host = self.host(wasi, key, None);
        host.limits = self.store_limits_under(memory);
        let deadline = Deadline::shared();
        let mut store = self.store(&ready, host, deadline.clone(), instance);
        let mut results = [Val::Bool(false)];
        let built = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let func = instance
                .get_func(&mut store, index)
                .ok_or_else(|| wasmtime::Error::msg(format!("export {ctor} vanished")))?;
            func.call_async(&mut store, &params, &mut results).await?;
            wasmtime::Result::Ok(instance)
        }
        .await;
        let bounds = Bounds {
            timeout: None,
            memory: Some(self.memory_for(memory)),
        };
        let instance = built.map_err(|e| classify(e, stderr.text(), key, bounds))?;
        let [Val::Resource(handle)] = results else {
            return Err(err(
                ErrorKind::Module,
                format!("{ctor} did not return a resource"),
            ));
        };
        Ok(ActorInstance {
            store,
            instance,
            handle,
            ready,
            resource: resource.to_string(),
            key: key.to_string(),
            stderr,
            broken: None,
            deadline,
            // Its own, within the worker's.
            call_limit: match (call_limit, self.limits.timeout) {
                (Some(a), Some(w)) if w < a => Some((w, WORKER_LIMIT)),
                (Some(a), _) => Some((a, "`actor new --call-timeout`")),
                (None, w) => w.map(|w| (w, WORKER_LIMIT)),
            },
        })
    }

    /// A component task's store data, with the WASI context `wasi`.
    fn host(&self, wasi: WasiCtx, key: &str, link: Option<TaskLink>) -> Host {
        Host {
            wasi,
            table: ResourceTable::new(),
            limits: self.store_limits(),
            key: key.to_string(),
            worker_id: self.worker_id.clone(),
            link,
            memory: None,
        }
    }

    /// A task's memory limit (its own, `memory`, within the worker's), and
    /// how to raise it.
    fn memory_for(&self, memory: Option<usize>) -> (usize, &'static str) {
        let memory = self.memory_under(memory);
        let raise = if memory < self.limits.memory {
            "raise it with `submit --memory-limit-mib`"
        } else {
            "raise it with `dtask worker --memory-limit-mib` (`memory-limit-mib` under \
             `[worker]` in dtask.toml for the local default's workers)"
        };
        (memory, raise)
    }

    /// An error unless inputs of `bytes`, still to be fetched, fit the
    /// memory limit of a task (`memory`, within the worker's): checked
    /// before fetching them, so that a value far over the limit is not
    /// brought here only to be refused.
    pub fn check_incoming(
        &self,
        key: &str,
        function: &str,
        bytes: u64,
        memory: Option<usize>,
    ) -> Result<(), TaskError> {
        let (memory, raise) = self.memory_for(memory);
        check_bytes(key, function, bytes, memory, raise)
    }

    /// The worker's memory limit, lowered to `memory` if given.
    fn memory_under(&self, memory: Option<usize>) -> usize {
        memory.map_or(self.limits.memory, |m| m.min(self.limits.memory))
    }

    fn store_limits(&self) -> StoreLimits {
        self.store_limits_under(None)
    }

    /// The worker's limits, with memory lowered to `memory` if given.
    fn store_limits_under(&self, memory: Option<usize>) -> StoreLimits {
        let memory = self.memory_under(memory);
        StoreLimitsBuilder::new()
            .memory_size(memory)
            .table_elements(TABLE_ELEMENTS)
            .memories(STORE_MEMORIES)
            .tables(STORE_TABLES)
            .instances(STORE_INSTANCES)
            .trap_on_grow_failure(true)
            .build()
    }

    /// A fresh store with the memory limit and the epoch deadline: yield to
    /// tokio at every tick, trap once past `deadline`.
    /// `instance` (see [`Sandbox::instance`]) is held as long as the store
    /// lives.
    fn store<T: Limited>(
        &self,
        ready: &Ready,
        data: T,
        deadline: Deadline,
        instance: Instance,
    ) -> Store<T> {
        let mut store = Store::new(ready.module.code.engine(), data);
        store.limiter(|h| h.limits());
        // Owned by the callback, so the epoch ticks (and the instance
        // stays taken) as long as the store lives.
        let running = self.ticker.running();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let _ticking = &running;
            let _instance = &instance;
            if deadline.passed() {
                Err(Trap::Interrupt.into())
            } else {
                // Tokio's own yield: it lets the runtime poll for I/O and
                // timers before the guest goes on. A plain wake-up put the
                // guest straight back in the run queue, and a one-thread
                // worker then looked at its sockets once every 61 polls:
                // 0.6 s at a tick of 10 ms, so a computing worker served
                // its data port, fetched queued tasks' inputs and sent its
                // heartbeats at a trickle.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

/// When a store's guest must stop, checked at each epoch tick: a moment
/// fixed for a task's one call, or one an actor's store sets again for
/// each of its calls.
#[derive(Clone, Debug)]
pub(super) enum Deadline {
    /// A task's: this moment, or never.
    Fixed(Option<Instant>),
    /// An actor's: nanoseconds past the first `Instant` ([`u64::MAX`]:
    /// never), set for each call.
    Shared(Arc<(Instant, std::sync::atomic::AtomicU64)>),
}

impl Deadline {
    /// `timeout` from now (never, without one).
    fn after(timeout: Option<Duration>) -> Self {
        Self::Fixed(timeout.map(|t| Instant::now() + t))
    }

    /// Never, until [`Deadline::start`] sets it.
    fn shared() -> Self {
        Self::Shared(Arc::new((
            Instant::now(),
            std::sync::atomic::AtomicU64::new(u64::MAX),
        )))
    }

    /// (A shared one:) `timeout` from now, or never without one.
    pub(super) fn start(&self, timeout: Option<Duration>) {
        if let Self::Shared(at) = self {
            let nanos = timeout.map_or(u64::MAX, |t| {
                u64::try_from((at.0.elapsed() + t).as_nanos()).unwrap_or(u64::MAX - 1)
            });
            at.1.store(nanos, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn passed(&self) -> bool {
        match self {
            Self::Fixed(at) => at.is_some_and(|d| Instant::now() >= d),
            Self::Shared(at) => {
                let nanos = at.1.load(std::sync::atomic::Ordering::Relaxed);
                nanos != u64::MAX && at.0.elapsed().as_nanos() >= u128::from(nanos)
            }
        }
    }
}

/// Runs `work`, a task's instantiation and call, for at most `timeout`.
/// The epoch deadline stops a guest running wasm past it; this stops one
/// waiting in a host call (a WASI sleep or poll) too, as a timeout trap.
pub(super) async fn within<T>(
    timeout: Option<Duration>,
    work: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(Trap::Interrupt.into())),
        None => work.await,
    }
}

/// The hostcall allowance below which a task's is never set: what wasmtime
/// gives by default.
const MIN_HOSTCALL_FUEL: usize = 128 << 20;

/// How a task's arguments go into its call.
enum Params {
    /// Typed, with bytes copied in bulk.
    Bulk(Shape, Vec<Arg>),
    /// One dynamic value per WIT value.
    Vals(Vec<Val>),
}

/// An input error unless `args` has one value per parameter.
fn check_arity<A>(
    key: &str,
    function: &str,
    params: &[(String, crate::wit::Type)],
    args: &[A],
) -> Result<(), TaskError> {
    if args.len() == params.len() {
        return Ok(());
    }
    Err(task_error(
        key,
        ErrorKind::Input,
        format!(
            "{function} takes {} arguments, {} were given",
            params.len(),
            args.len()
        ),
    ))
}

/// A memory error, before the task starts, when its byte and string
/// arguments alone exceed the memory it may use: they could never be
/// copied in.
fn check_size(
    key: &str,
    function: &str,
    args: &[TaskArg],
    memory: usize,
    raise: &str,
) -> Result<(), TaskError> {
    let bytes: usize = args.iter().map(TaskArg::payload_bytes).sum();
    check_bytes(key, function, bytes as u64, memory, raise)
}

/// An error unless arguments of `bytes` fit a task's memory limit.
fn check_bytes(
    key: &str,
    function: &str,
    bytes: u64,
    memory: usize,
    raise: &str,
) -> Result<(), TaskError> {
    if bytes <= memory as u64 {
        return Ok(());
    }
    Err(task_error(
        key,
        ErrorKind::Memory,
        format!(
            "{function}: the arguments hold {} of data, more than the task's memory limit of {}; {raise}",
            value::human_bytes(bytes),
            value::human_bytes(memory as u64),
        ),
    ))
}

/// Converts `args` to the WIT values of `params`, or an input error.
fn typed_params(
    key: &str,
    function: &str,
    params: &[(String, crate::wit::Type)],
    args: Vec<Value>,
) -> Result<Vec<Val>, TaskError> {
    check_arity(key, function, params, &args)?;
    args.iter()
        .zip(params)
        .map(|(v, (name, ty))| {
            value::value_to_val(v, ty).map_err(|e| {
                task_error(
                    key,
                    ErrorKind::Input,
                    format!("{function}: parameter {name}: {e}"),
                )
            })
        })
        .collect()
}

/// Store data with memory limits.
trait Limited: Send + 'static {
    fn limits(&mut self) -> &mut StoreLimits;
}

impl Limited for Host {
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

impl Limited for CoreHost {
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

#[cfg(test)]
mod tests;
