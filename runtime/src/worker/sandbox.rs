//! Running one task in wasmtime: a fresh store per task over a pre-linked
//! component, limits on memory and time, captured stderr, and errors turned
//! into [`TaskError`]s a user can act on.
//!
//! One [`Engine`] per worker uses the pooling allocator (instantiation costs
//! microseconds) and epoch interruption: a thread ticks the epoch every
//! [`TICK`], and at every tick a running guest yields to tokio, so a long
//! task never starves the worker's I/O, and a task past its deadline traps.

use crate::module::{CompiledModule, engine_config};
use crate::protocol::{ErrorKind, TaskError};
use crate::value::{self, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{InstancePre, Linker, ResourceTable, Val};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How often the epoch advances.
pub const TICK: Duration = Duration::from_millis(10);

/// Most bytes of a guest's stderr kept for its error report.
const STDERR_CAP: usize = 64 * 1024;

/// Per-task resource limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest linear memory a task may grow, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 256 * 1024 * 1024,
        }
    }
}

/// What a guest's store holds: WASI state and dtask's host-function state.
pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    key: String,
    worker_id: Arc<str>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A module linked and ready to instantiate.
pub struct Ready {
    /// The compiled module and its exports.
    pub module: Arc<CompiledModule>,
    pre: InstancePre<Host>,
}

/// The worker's wasmtime: engine, linker with dtask's host functions, limits.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<Host>,
    limits: Limits,
    worker_id: Arc<str>,
}

impl Sandbox {
    /// A sandbox for `concurrency` tasks at once.
    pub fn new(worker_id: &str, limits: Limits, concurrency: u32) -> anyhow::Result<Self> {
        let mut config = engine_config();
        let mut pool = PoolingAllocationConfig::default();
        let n = (concurrency.max(1) * 4 + 16).min(1000);
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
        pool.decommit_batch_size(32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        add_dtask_host(&mut linker)?;
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
        let pre = self
            .linker
            .instantiate_pre(&module.component)
            .map_err(|e| format!("module {} cannot be linked: {e:#}", module.hash))?;
        Ok(Ready {
            module: Arc::new(module),
            pre,
        })
    }

    /// Runs `function` of a ready module on `args` as the task `key`.
    pub async fn run(
        &self,
        ready: &Ready,
        key: &str,
        function: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, TaskError> {
        let err = |kind, message: String| TaskError {
            kind,
            message,
            stderr: String::new(),
            backtrace: String::new(),
            origin: key.to_string(),
        };
        let sig = match ready.module.funcs.get(function) {
            Some(sig) => sig,
            None => {
                let name = format!("module {}", ready.module.hash);
                let e = ready.module.func(function, &name).err().unwrap_or_default();
                return Err(err(ErrorKind::Module, e));
            }
        };
        if args.len() != sig.params.len() {
            return Err(err(
                ErrorKind::Input,
                format!(
                    "{function} takes {} arguments, {} were given",
                    sig.params.len(),
                    args.len()
                ),
            ));
        }
        let params = args
            .iter()
            .zip(&sig.params)
            .map(|(v, (name, ty))| {
                value::value_to_val(v, ty).map_err(|e| {
                    err(
                        ErrorKind::Input,
                        format!("{function}: parameter {name}: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<Val>, _>>()?;

        let stderr = MemoryOutputPipe::new(STDERR_CAP);
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let host = Host {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory)
                .trap_on_grow_failure(true)
                .build(),
            key: key.to_string(),
            worker_id: self.worker_id.clone(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        let deadline = timeout.map(|t| Instant::now() + t);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let mut results = vec![Val::Bool(false); sig.results.len()];
        let outcome = async {
            let instance = ready.pre.instantiate_async(&mut store).await?;
            let func = instance
                .get_func(&mut store, sig.index)
                .ok_or_else(|| wasmtime::Error::msg(format!("export {function} vanished")))?;
            func.call_async(&mut store, &params, &mut results).await?;
            wasmtime::Result::<()>::Ok(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(match results.as_slice() {
                [] => Value::Nil,
                [one] => value::val_to_value(one),
                many => Value::Array(many.iter().map(value::val_to_value).collect()),
            }),
            Err(e) => {
                let captured = String::from_utf8_lossy(&stderr.contents()).into_owned();
                Err(classify(e, captured, key, timeout))
            }
        }
    }
}

fn add_dtask_host(linker: &mut Linker<Host>) -> anyhow::Result<()> {
    let mut worker = linker.instance("dtask:task/worker@0.1.0")?;
    worker.func_wrap("current-key", |store, (): ()| {
        let host: &Host = store.data();
        Ok((host.key.clone(),))
    })?;
    worker.func_wrap("worker-id", |store, (): ()| {
        let host: &Host = store.data();
        Ok((host.worker_id.to_string(),))
    })?;
    Ok(())
}

/// Turns a wasmtime error into the task's error, keeping what the guest said.
fn classify(e: wasmtime::Error, stderr: String, key: &str, timeout: Option<Duration>) -> TaskError {
    let trap = e.downcast_ref::<Trap>().copied();
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let panic = panic_message(&stderr);
    let (kind, message) = match (trap, panic) {
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
        stderr,
        backtrace,
        origin: key.to_string(),
    }
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

    #[test]
    fn panic_message_is_extracted() {
        let s = "\nthread '<unnamed>' panicked at src/lib.rs:27:13:\ndivision by zero: 1 / 0\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(s).as_deref(), Some("division by zero: 1 / 0"));
        assert_eq!(panic_message("just output\n"), None);
    }
}
