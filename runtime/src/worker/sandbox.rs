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
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime::component::{InstancePre, Linker, ResourceTable, Val};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How often the epoch advances.
pub const TICK: Duration = Duration::from_millis(10);

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
}

impl TaskArg {
    /// The argument as a value (copying a byte string).
    pub fn into_value(self) -> Value {
        match self {
            TaskArg::Value(v) => v,
            TaskArg::Bytes(b) => Value::Binary(b.to_vec()),
        }
    }

    fn payload_bytes(&self) -> usize {
        match self {
            TaskArg::Value(v) => value::payload_bytes(v),
            TaskArg::Bytes(b) => b.len(),
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
}

impl Output {
    /// The result's MessagePack encoding.
    pub fn encode(self) -> bytes::Bytes {
        match self {
            Output::Value(v) => value::encode(&v).into(),
            Output::Encoded(b) => b,
        }
    }

    /// The result as a value.
    pub fn into_value(self) -> Value {
        match self {
            Output::Value(v) => v,
            Output::Encoded(b) => value::decode(&b).unwrap_or(Value::Nil),
        }
    }
}

/// Per-task resource limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest linear memory a task may grow, in bytes.
    pub memory: usize,
    /// Longest a task may run, whatever its submit asked for.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 256 * 1024 * 1024,
            timeout: None,
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
}

/// What a task wrote to stdout and stderr, the last [`STDERR_CAP`] bytes of
/// each.
#[derive(Clone, Default)]
pub struct Captured {
    stdout: Capture,
    stderr: Capture,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured").finish_non_exhaustive()
    }
}

impl Captured {
    /// What it wrote to stdout (a component's; a command's stdout is its
    /// result), marked where earlier output was dropped.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// What it wrote to stderr, marked where earlier output was dropped.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Whether it wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
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
}

/// A pre-linked module of each kind.
enum Pre {
    Exports(InstancePre<Host>),
    Command(CommandPre<Host>),
    Core(wasmtime::InstancePre<CoreHost>),
}

/// The worker's wasmtime: engine, linkers with dtask's host functions (for
/// components) and WASI preview 1 (for core commands), limits.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<Host>,
    core_linker: wasmtime::Linker<CoreHost>,
    limits: Limits,
    worker_id: Arc<str>,
}

impl Sandbox {
    /// A sandbox for `concurrency` tasks at once.
    pub fn new(worker_id: &str, limits: Limits, concurrency: u32) -> anyhow::Result<Self> {
        let mut config = engine_config();
        let mut pool = PoolingAllocationConfig::default();
        // Tasks waiting in host calls (a gather of subtasks, a queue get)
        // keep their instances while their slots run others, so the pool
        // is far larger than the slot count; unused entries cost only
        // address space.
        let n = (concurrency.max(1) * 8 + 256).min(2000);
        pool.total_component_instances(n);
        pool.total_core_instances(n * 4);
        pool.total_memories(n * 2);
        pool.total_tables(n * 4);
        pool.max_memory_size(limits.memory);
        // Reset a finished task's memory by rewriting only the pages it
        // dirtied (found with PAGEMAP_SCAN where the kernel has it) instead
        // of unmapping it: no page faults and far fewer syscalls per task.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.linear_memory_keep_resident(4 << 20);
        pool.table_keep_resident(64 << 10);
        pool.async_stack_keep_resident(256 << 10);
        // Give memory back as each instance ends: batching decommits kept
        // up to a batch of finished tasks' memories resident at once.
        pool.decommit_batch_size(1);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        host::add_to_linker(&mut linker)?;
        let mut core_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core_linker, |h: &mut CoreHost| &mut h.wasi)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("dtask-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(Self {
            engine,
            linker,
            core_linker,
            limits,
            worker_id: worker_id.into(),
        })
    }

    /// The engine, for compiling modules.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links a compiled module against the host functions.
    pub fn prepare(&self, module: CompiledModule) -> Result<Ready, String> {
        let unlinked =
            |e: wasmtime::Error| format!("module {} cannot be linked: {e:#}", module.hash);
        let pre = match (&module.code, module.kind()) {
            (Code::Component(c), ModuleKind::CommandComponent) => Pre::Command(
                self.linker
                    .instantiate_pre(c)
                    .and_then(CommandPre::new)
                    .map_err(unlinked)?,
            ),
            (Code::Component(c), _) => {
                Pre::Exports(self.linker.instantiate_pre(c).map_err(unlinked)?)
            }
            (Code::Core(m), _) => Pre::Core(self.core_linker.instantiate_pre(m).map_err(unlinked)?),
        };
        Ok(Ready {
            module: Arc::new(module),
            pre,
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
        let pre = match &ready.pre {
            Pre::Exports(pre) => pre,
            Pre::Command(_) | Pre::Core(_) => {
                let args: Vec<Value> = args.into_iter().map(TaskArg::into_value).collect();
                let (stdin, argv) = command_input(ready, key, function, &args)?;
                return self
                    .command(ready, key, stdin, argv, limits, link)
                    .await
                    .map(|out| Output::Value(Value::Binary(out)));
            }
        };
        let err = |kind, message: String| task_error(key, kind, message);
        let sig = match ready.module.funcs.get(function) {
            Some(sig) => sig,
            None => {
                let name = format!("module {}", ready.module.hash);
                let e = ready.module.func(function, &name).err().unwrap_or_default();
                return Err(err(ErrorKind::Module, e));
            }
        };
        let (memory, raise) = self.memory_for(&limits);
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

        let stderr = limits.output.stderr.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone())
            .stdout(limits.output.stdout.clone());
        grant(&mut wasi, &limits.grants).map_err(|m| err(ErrorKind::Input, m))?;
        let mut host = self.host(wasi.build(), key, link);
        host.limits = self.store_limits_under(limits.memory);
        let mut store = self.store(host, timeout);
        // Results may be as large as the task's memory.
        store.set_hostcall_fuel(memory.max(MIN_HOSTCALL_FUEL));

        let outcome = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let Entry::Export(index) = sig.entry else {
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
        }
        .await;
        let bounds = Bounds {
            timeout,
            memory: Some((memory, raise)),
        };
        outcome.map_err(|e| classify(e, stderr.text(), key, bounds))
    }

    /// Runs a WASI command with `argv` and `stdin`, returning what it wrote
    /// to stdout. A non-zero exit status is an [`ErrorKind::Exit`] error
    /// carrying the command's stderr.
    pub async fn run_command(
        &self,
        ready: &Ready,
        key: &str,
        stdin: Vec<u8>,
        argv: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, TaskError> {
        let limits = RunLimits {
            timeout,
            ..RunLimits::default()
        };
        self.command(ready, key, stdin, argv, limits, None).await
    }

    async fn command(
        &self,
        ready: &Ready,
        key: &str,
        stdin: Vec<u8>,
        argv: Vec<String>,
        limits: RunLimits,
        link: Option<TaskLink>,
    ) -> Result<Vec<u8>, TaskError> {
        let timeout = limits.timeout;
        // A command's stdout (its result) may be as large as the task's
        // memory. One byte past the cap tells a full pipe from output of
        // exactly the cap.
        let (cap, raise) = self.memory_for(&limits);
        let stdout = MemoryOutputPipe::new(cap + 1);
        let stderr = limits.output.stderr.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv);
        grant(&mut wasi, &limits.grants).map_err(|m| task_error(key, ErrorKind::Input, m))?;
        // The exit status, or the error that ended the program otherwise.
        let status: wasmtime::Result<i32> = match &ready.pre {
            Pre::Command(pre) => {
                let mut host = self.host(wasi.build(), key, link);
                host.limits = self.store_limits_under(limits.memory);
                let mut store = self.store(host, timeout);
                async {
                    let command = pre.instantiate_async(&mut store).await?;
                    let run = command.wasi_cli_run().call_run(&mut store).await?;
                    Ok(if run.is_ok() { 0 } else { 1 })
                }
                .await
            }
            Pre::Core(pre) => {
                let host = CoreHost {
                    wasi: wasi.build_p1(),
                    limits: self.store_limits_under(limits.memory),
                };
                let mut store = self.store(host, timeout);
                async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, COMMAND_FUNCTION)?;
                    start.call_async(&mut store, ()).await?;
                    Ok(0)
                }
                .await
            }
            Pre::Exports(_) => {
                return Err(task_error(
                    key,
                    ErrorKind::Module,
                    format!("module {} is not a WASI command", ready.module.hash),
                ));
            }
        };
        let status = status.or_else(|e| match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(e),
        });
        let captured = || stderr.text();
        let out = stdout.contents();
        if out.len() > cap {
            return Err(TaskError {
                stderr: captured(),
                ..task_error(
                    key,
                    ErrorKind::Memory,
                    format!(
                        "task {key} wrote more than {} to stdout, its memory limit; {raise}",
                        value::human_bytes(cap as u64),
                    ),
                )
            });
        }
        match status {
            Ok(0) => Ok(Vec::from(out)),
            Ok(code) => Err(TaskError {
                stderr: captured(),
                ..task_error(
                    key,
                    ErrorKind::Exit,
                    format!("task {key} exited with status {code}"),
                )
            }),
            Err(e) => Err(classify(
                e,
                captured(),
                key,
                Bounds {
                    timeout,
                    memory: Some(self.memory_for(&limits)),
                },
            )),
        }
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
    ) -> Result<ActorInstance, TaskError> {
        let err = |kind, message: String| task_error(key, kind, message);
        let Pre::Exports(pre) = &ready.pre else {
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
        let Entry::Export(index) = sig.entry else {
            return Err(err(ErrorKind::Module, format!("{ctor} is not an export")));
        };
        let stderr = Capture::default();
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let mut host = self.host(wasi, key, None);
        host.limits = self.store_limits_under(memory);
        let mut store = self.store(host, None);
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
            memory: Some(self.memory_for(&RunLimits {
                memory,
                ..RunLimits::default()
            })),
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
        }
    }

    /// A task's memory limit (its own within the worker's), and how to
    /// raise it.
    fn memory_for(&self, limits: &RunLimits) -> (usize, &'static str) {
        let memory = self.memory_under(limits.memory);
        let raise = if memory < self.limits.memory {
            "raise it with `submit --memory-limit-mib`"
        } else {
            "raise it with `dtask worker --memory-limit-mib`"
        };
        (memory, raise)
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
            .trap_on_grow_failure(true)
            .build()
    }

    /// A fresh store with the memory limit and the epoch deadline: yield to
    /// tokio at every tick, trap once past `timeout`.
    fn store<T: Limited>(&self, data: T, timeout: Option<Duration>) -> Store<T> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(|h| h.limits());
        let deadline = timeout.map(|t| Instant::now() + t);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

/// A live actor: its store, instance and the resource its methods act on.
/// Calls run one at a time (`&mut self`).
pub struct ActorInstance {
    store: Store<Host>,
    instance: wasmtime::component::Instance,
    handle: wasmtime::component::ResourceAny,
    ready: Arc<Ready>,
    resource: String,
    key: String,
    stderr: Capture,
    /// Set once a call trapped: the instance may not be entered again.
    broken: Option<TaskError>,
}

impl ActorInstance {
    /// Whether a call trapped, so the instance takes no more calls.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Calls `method` with `args` (typed by the method's parameters).
    pub async fn call(
        &mut self,
        method: &str,
        args: Vec<crate::protocol::CallArg>,
    ) -> Result<Value, TaskError> {
        let key = self.key.clone();
        if let Some(e) = &self.broken {
            return Err(TaskError {
                message: format!(
                    "actor {key} failed in an earlier call and takes no more calls: {}",
                    e.message
                ),
                ..e.clone()
            });
        }
        let name = format!("[method]{}.{method}", self.resource);
        let Some(sig) = self.ready.module.funcs.get(&name) else {
            let prefix = format!("[method]{}.", self.resource);
            let methods: Vec<&str> = self
                .ready
                .module
                .funcs
                .keys()
                .filter_map(|f| f.strip_prefix(&prefix))
                .collect();
            return Err(task_error(
                &key,
                ErrorKind::Input,
                format!(
                    "{} has no method {method}; its methods: {}",
                    self.resource,
                    methods.join(", ")
                ),
            ));
        };
        // The first parameter is the resource itself.
        let wanted = sig.params.get(1..).unwrap_or_default();
        let mut values = Vec::with_capacity(args.len());
        for (arg, (pname, ty)) in args.iter().zip(wanted) {
            let v = match arg {
                crate::protocol::CallArg::Value(b) => value::decode(b),
                crate::protocol::CallArg::Word(w) => value::word_to_value(w, ty),
            }
            .map_err(|e| {
                task_error(
                    &key,
                    ErrorKind::Input,
                    format!("{method}: parameter {pname}: {e}"),
                )
            })?;
            values.push(v);
        }
        if args.len() != wanted.len() {
            return Err(task_error(
                &key,
                ErrorKind::Input,
                format!(
                    "{method} takes {} arguments, {} were given",
                    wanted.len(),
                    args.len()
                ),
            ));
        }
        let mut params = vec![Val::Resource(self.handle)];
        params.extend(typed_params(&key, method, wanted, values)?);
        let Entry::Export(index) = sig.entry else {
            return Err(task_error(
                &key,
                ErrorKind::Module,
                format!("{name} is not an export"),
            ));
        };
        let mut results = vec![Val::Bool(false); sig.results.len()];
        let outcome = async {
            let func = self
                .instance
                .get_func(&mut self.store, index)
                .ok_or_else(|| wasmtime::Error::msg(format!("export {name} vanished")))?;
            func.call_async(&mut self.store, &params, &mut results)
                .await
        }
        .await;
        match outcome {
            Ok(()) => Ok(match results.as_slice() {
                [] => Value::Nil,
                [one] => value::val_to_value(one),
                many => Value::Array(many.iter().map(value::val_to_value).collect()),
            }),
            Err(e) => {
                let e = classify(e, self.stderr.text(), &key, Bounds::default());
                self.broken = Some(e.clone());
                Err(e)
            }
        }
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
    params: &[(String, wasmtime::component::types::Type)],
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
    if bytes <= memory {
        return Ok(());
    }
    Err(task_error(
        key,
        ErrorKind::Memory,
        format!(
            "{function}: the arguments hold {} of data, more than the task's memory limit of {}; {raise}",
            value::human_bytes(bytes as u64),
            value::human_bytes(memory as u64),
        ),
    ))
}

/// Converts `args` to the WIT values of `params`, or an input error.
fn typed_params(
    key: &str,
    function: &str,
    params: &[(String, wasmtime::component::types::Type)],
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

/// A guest's output stream (stderr, or a component's stdout): keeps the
/// last [`STDERR_CAP`] bytes, for its error report (where a failing program
/// says why) and `dtask logs`, and drops what came before, so a chatty
/// program never sees a write fail.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

/// What starts a guest's stderr report when earlier output was dropped.
const STDERR_DROPPED: &str = "[… earlier output dropped]\n";

impl Capture {
    fn is_empty(&self) -> bool {
        self.0.lock().expect("capture lock").is_empty()
    }

    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().expect("stderr lock");
        kept.extend_from_slice(bytes);
        // Dropping only past twice the cap keeps the copying amortised.
        if kept.len() > 2 * STDERR_CAP {
            let excess = kept.len() - STDERR_CAP;
            kept.drain(..excess);
        }
    }

    fn text(&self) -> String {
        let kept = self.0.lock().expect("stderr lock");
        match kept.len().checked_sub(STDERR_CAP) {
            Some(excess) if excess > 0 => {
                let tail = String::from_utf8_lossy(&kept[excess..]);
                format!("{STDERR_DROPPED}{tail}")
            }
            _ => String::from_utf8_lossy(&kept).into_owned(),
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_CAP)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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

/// A task error without guest output.
fn task_error(key: &str, kind: ErrorKind, message: String) -> TaskError {
    TaskError {
        kind,
        message,
        stderr: String::new(),
        backtrace: String::new(),
        origin: key.to_string(),
    }
}

/// A command task's stdin bytes and argv from its arguments `[stdin, argv]`.
///
/// Stdin is nil (empty), bytes (as they are), a string (its UTF-8), or any
/// other value (its JSON text), so any future's result can be piped in.
fn command_input(
    ready: &Ready,
    key: &str,
    function: &str,
    args: &[Value],
) -> Result<(Vec<u8>, Vec<String>), TaskError> {
    let err = |kind, message: String| task_error(key, kind, message);
    let name = format!("module {}", ready.module.hash);
    ready
        .module
        .func(function, &name)
        .map_err(|e| err(ErrorKind::Module, e))?;
    let [stdin, argv] = args else {
        return Err(err(
            ErrorKind::Input,
            format!(
                "{function}: a command takes 2 arguments (stdin, argv), {} were given",
                args.len()
            ),
        ));
    };
    let stdin = match stdin {
        Value::Nil => Vec::new(),
        Value::Binary(b) => b.clone(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => value::value_to_json(other).to_string().into_bytes(),
    };
    let bad_argv = || {
        err(
            ErrorKind::Input,
            format!("{function}: parameter argv: expected a list of strings, got {argv}"),
        )
    };
    let Value::Array(words) = argv else {
        return Err(bad_argv());
    };
    let argv = words
        .iter()
        .map(|w| w.as_str().map(str::to_string).ok_or_else(bad_argv))
        .collect::<Result<Vec<String>, _>>()?;
    Ok((stdin, argv))
}

/// Turns a wasmtime error into the task's error, keeping what the guest said.
/// The limits a failed call ran under, named in its error.
#[derive(Clone, Copy, Default)]
struct Bounds {
    timeout: Option<Duration>,
    /// The memory limit, and how to raise it.
    memory: Option<(usize, &'static str)>,
}

fn classify(e: wasmtime::Error, stderr: String, key: &str, bounds: Bounds) -> TaskError {
    let timeout = bounds.timeout;
    let trap = e.downcast_ref::<Trap>().copied();
    // Its first line repeats the heading every report gives it.
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| {
            let text = b.to_string();
            match text.split_once('\n') {
                Some((first, rest)) if first.contains("wasm backtrace") => rest.to_string(),
                _ => text,
            }
        })
        .unwrap_or_default();
    let panic = panic_message(&stderr);
    // A limiter refusal surfaces as this error (trap_on_grow_failure), and
    // a Rust guest whose allocation failed says so before aborting.
    let out_of_memory = format!("{e:#}").contains("forcing trap when growing memory")
        || stderr.contains("memory allocation of");
    let (kind, message) = match (trap, panic) {
        (Some(Trap::StackOverflow), _) => (
            ErrorKind::Stack,
            format!("task {key} overflowed its stack (unbounded recursion?)"),
        ),
        _ if out_of_memory => (
            ErrorKind::Memory,
            match bounds.memory {
                Some((limit, raise)) => format!(
                    "task {key} ran out of memory: it tried to grow past its limit of {} ({raise})",
                    crate::value::human_bytes(limit as u64)
                ),
                None => format!("task {key} ran out of memory: it tried to grow past its limit"),
            },
        ),
        (Some(Trap::Interrupt), _) => (
            ErrorKind::Timeout,
            match timeout {
                Some(t) => format!("task {key} ran past its time limit of {t:?}"),
                None => format!("task {key} was interrupted"),
            },
        ),
        (_, Some(msg)) => (ErrorKind::Panic, format!("task {key} panicked: {msg}")),
        (Some(t), None) => (ErrorKind::Trap, format!("task {key} trapped: {t}")),
        (None, None) => (ErrorKind::Trap, format!("task {key} failed: {e:#}")),
    };
    TaskError {
        kind,
        message,
        stderr: tidy(&stderr),
        backtrace,
        origin: key.to_string(),
    }
}

/// A guest's stderr as a report shows it: without blank lines around it,
/// and without Rust's hint to set `RUST_BACKTRACE` (tasks have no
/// environment; the wasm backtrace is in the report).
fn tidy(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !(l.starts_with("note: run with `RUST_BACKTRACE=") && l.contains("backtrace")))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_matches(|c: char| c == '\n' || c == '\r')
        .to_string()
}

/// The message of a Rust panic as the standard library prints it:
/// `thread '…' panicked at FILE:LINE:COL:\nMESSAGE\nnote: …`.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    lines.by_ref().find(|l| l.contains("panicked at"))?;
    let msg: Vec<&str> = lines.take_while(|l| !l.starts_with("note:")).collect();
    Some(msg.join("\n").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::tests::{CAT_WASM, RUN_COMPONENT};
    use crate::module::{self, compile};
    use wasmtime::component::Component;

    fn ready(sandbox: &Sandbox, m: Result<CompiledModule, String>) -> Ready {
        sandbox.prepare(m.unwrap()).unwrap()
    }

    fn cat(sandbox: &Sandbox) -> Ready {
        let bytes = std::fs::read(CAT_WASM).unwrap();
        ready(sandbox, compile(sandbox.engine(), &bytes, "cat.wasm", None))
    }

    fn core(sandbox: &Sandbox, wat: &str) -> Ready {
        let m = wasmtime::Module::new(sandbox.engine(), wat).unwrap();
        ready(sandbox, module::core_command("h".into(), m, "test.wasm"))
    }

    fn argv(words: &[&str]) -> Value {
        Value::Array(words.iter().map(|w| Value::from(*w)).collect())
    }

    #[tokio::test]
    async fn unbounded_recursion_is_a_stack_error_and_the_sandbox_goes_on() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let deep = core(
            &sandbox,
            r#"(module
                (func $f (param i32) (result i32) (call $f (i32.add (local.get 0) (i32.const 1))))
                (func (export "_start") (drop (call $f (i32.const 0))))
                (memory (export "memory") 1))"#,
        );
        let e = sandbox
            .run(
                &deep,
                "k",
                "_start",
                vec![Value::Nil, argv(&["deep"])],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Stack, "{e:?}");
        let cat = cat(&sandbox);
        assert!(
            sandbox
                .run(&cat, "k", "_start", vec![Value::Nil, argv(&["cat"])], None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn growing_memory_past_the_limit_is_a_memory_error() {
        let sandbox = Sandbox::new(
            "t",
            Limits {
                memory: 2 << 20,
                timeout: None,
            },
            1,
        )
        .unwrap();
        let bomb = core(
            &sandbox,
            r#"(module
                (func (export "_start")
                  (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))
                (memory (export "memory") 1))"#,
        );
        let e = sandbox
            .run(
                &bomb,
                "k",
                "_start",
                vec![Value::Nil, argv(&["bomb"])],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Memory, "{e:?}");
    }

    #[tokio::test]
    async fn a_core_command_reads_stdin_and_its_stdout_is_the_result() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let cat = cat(&sandbox);
        let stdin = Value::Binary(b"one\ntwo\n".to_vec());
        let out = sandbox
            .run(&cat, "k", "_start", vec![stdin, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(b"one\ntwo\n".to_vec()));
        // `main` is the same function; nil is empty stdin.
        let out = sandbox
            .run(&cat, "k", "main", vec![Value::Nil, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(Vec::new()));
    }

    #[tokio::test]
    async fn stdin_from_any_value_is_its_bytes_text_or_json() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let cat = cat(&sandbox);
        for (value, text) in [
            (Value::from("Hello, world!"), "Hello, world!"),
            (Value::from(42), "42"),
            (
                Value::Map(vec![(Value::from("ok"), Value::from(1))]),
                r#"{"ok":1}"#,
            ),
        ] {
            let out = sandbox
                .run(&cat, "k", "_start", vec![value, argv(&["cat"])], None)
                .await
                .unwrap();
            assert_eq!(out, Value::Binary(text.as_bytes().to_vec()));
        }
    }

    #[tokio::test]
    async fn a_nonzero_exit_is_an_exit_error_with_stderr() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let cat = cat(&sandbox);
        let e = sandbox
            .run(
                &cat,
                "k",
                "_start",
                vec![Value::Nil, argv(&["cat", "a", "b"])],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Exit);
        assert_eq!(e.message, "task k exited with status 2");
        assert!(
            e.stderr.contains("cat.wat: exiting with the number"),
            "{e:?}"
        );
        assert_eq!(e.origin, "k");
    }

    #[tokio::test]
    async fn a_command_component_whose_run_fails_exits_with_status_1() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let c = Component::new(sandbox.engine(), RUN_COMPONENT).unwrap();
        let m = module::component_module(sandbox.engine(), "h".into(), c);
        let run = sandbox.prepare(m).unwrap();
        let e = sandbox
            .run(&run, "k", "_start", vec![Value::Nil, argv(&["run"])], None)
            .await
            .unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Exit, "task k exited with status 1")
        );
    }

    #[tokio::test]
    async fn bad_command_arguments_are_input_errors() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let cat = cat(&sandbox);
        let e = sandbox
            .run(
                &cat,
                "k",
                "_start",
                vec![Value::Nil, Value::from("cat")],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(
            e.message.contains("argv: expected a list of strings"),
            "{e:?}"
        );
        let e = sandbox
            .run(&cat, "k", "_start", vec![Value::Nil], None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        let e = sandbox
            .run(&cat, "k", "inc", vec![Value::Nil, argv(&["cat"])], None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Module);
    }

    #[tokio::test]
    async fn a_command_past_its_time_limit_times_out() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let spin = core(&sandbox, r#"(module (func (export "_start") (loop br 0)))"#);
        let e = sandbox
            .run(
                &spin,
                "k",
                "_start",
                vec![Value::Nil, argv(&["spin"])],
                Some(Duration::from_millis(100)),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
    }

    #[tokio::test]
    async fn a_command_trap_is_a_trap() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        let bad = core(&sandbox, r#"(module (func (export "_start") unreachable))"#);
        let e = sandbox
            .run(&bad, "k", "_start", vec![Value::Nil, argv(&["bad"])], None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Trap, "{e:?}");
        assert!(e.message.contains("unreachable"), "{e:?}");
    }

    #[tokio::test]
    async fn a_chatty_stderr_never_fails_a_write_and_its_end_is_kept() {
        let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
        // Writes 100 times 1 KiB of "x" to stderr, exits 9 if a write
        // fails and 1 otherwise.
        let chatty = core(
            &sandbox,
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write"
                  (func $fd_write (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (local $i i32)
                  (memory.fill (i32.const 1024) (i32.const 120) (i32.const 1024))
                  (loop $more
                    (i32.store (i32.const 0) (i32.const 1024))
                    (i32.store (i32.const 4) (i32.const 1024))
                    (if (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))
                      (then (call $proc_exit (i32.const 9))))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $more (i32.lt_u (local.get $i) (i32.const 100))))
                  (call $proc_exit (i32.const 1))))"#,
        );
        let e = sandbox
            .run(
                &chatty,
                "k",
                "_start",
                vec![Value::Nil, argv(&["chatty"])],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.message, "task k exited with status 1");
        assert_eq!(
            e.stderr,
            format!("{STDERR_DROPPED}{}", "x".repeat(STDERR_CAP))
        );
    }

    #[tokio::test]
    async fn stdout_past_the_cap_is_a_clear_error() {
        let limits = Limits {
            memory: 64 << 20,
            ..Limits::default()
        };
        let sandbox = Sandbox::new("t", limits, 1).unwrap();
        // Writes 1 MiB of zeros 70 times, ignoring write errors.
        let flood = core(
            &sandbox,
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write"
                  (func $fd_write (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 17)
                (func (export "_start") (local $i i32)
                  (i32.store (i32.const 0) (i32.const 65536))
                  (i32.store (i32.const 4) (i32.const 1048576))
                  (loop $more
                    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $more (i32.lt_u (local.get $i) (i32.const 70))))))"#,
        );
        let e = sandbox
            .run(
                &flood,
                "k",
                "_start",
                vec![Value::Nil, argv(&["flood"])],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Memory);
        assert!(
            e.message
                .contains("wrote more than 64.0 MiB to stdout, its memory limit"),
            "{e:?}"
        );
    }

    #[test]
    fn panic_message_is_extracted() {
        let s = "\nthread '<unnamed>' panicked at src/lib.rs:27:13:\ndivision by zero: 1 / 0\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(s).as_deref(), Some("division by zero: 1 / 0"));
        assert_eq!(panic_message("just output\n"), None);
    }
}
