//! Running what the scheduler sends: a task (its module loaded, its
//! inputs fetched, its result kept or reported), or an actor.

use super::*;
use crate::value::FileBytes;
use crate::worker::store::SpillFile;

/// Keeps a result (it may spill to disk: blocking), returning how it is
/// reported, or the memory error that refuses it.
pub(super) fn keep(
    store: &store::ResultStore,
    key: &str,
    bytes: Bytes,
) -> Result<Located, TaskError> {
    let at = store::located(&bytes);
    store
        .insert(key.to_string(), bytes)
        .map(|()| at)
        .map_err(|message| TaskError::new(ErrorKind::Memory, message, key))
}

pub(super) async fn execute(shared: Arc<Shared>, task: RunTask) {
    use futures::FutureExt;
    let key = task.key.clone();
    // A bug that panics here must still answer for the task: an error
    // reported is better than a task the scheduler waits on for ever.
    let outcome = std::panic::AssertUnwindSafe(compute(&shared, task))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(TaskError::new(
                ErrorKind::Internal,
                format!("the worker failed running task {key}: {what}"),
                &key,
            ))
        });
    let ended = match outcome.map(Output::encode) {
        Ok(Err(spilled)) => {
            // Written to a spill file as it was made: kept there.
            let nbytes = spilled.len();
            shared.results.adopt(&key, spilled);
            let at = Located {
                inline: None,
                who_has: Vec::new(),
                nbytes,
            };
            Ok(at)
        }
        Ok(Ok(bytes)) => {
            let at = store::located(&bytes);
            // A small result travels inline and lives at the scheduler
            // alone (which hands it to dependents and clients itself): a
            // worker keeping a copy too would spend memory on every one of a
            // million held results. Most others fit in memory at once; one
            // that makes the store spill is kept off the async threads.
            let kept = match at.inline {
                Some(_) => Some(Ok(at)),
                None => match shared.results.insert_in_memory(&key, bytes) {
                    Ok(()) => Some(Ok(at)),
                    Err(bytes) => {
                        // Kept and reported from the blocking thread: a
                        // cancel landing on the await below (the task is
                        // dropped there, the thread goes on) must not
                        // leave a result stored here that the scheduler
                        // never hears of. It frees one nobody wants.
                        let store = shared.results.clone();
                        let to_scheduler = shared.to_scheduler.clone();
                        let k = key.clone();
                        // 0 once taken back: the scheduler then takes an
                        // error as no run's it is waiting on.
                        let run = shared.run_of(&key).unwrap_or(0);
                        let stored = tokio::task::spawn_blocking(move || {
                            let _ = to_scheduler.send(report(&k, run, keep(&store, &k, bytes)));
                        })
                        .await;
                        match stored {
                            Ok(()) => None,
                            Err(e) => {
                                let message = format!("storing the result failed: {e}");
                                Some(Err(TaskError::new(ErrorKind::Memory, message, &key)))
                            }
                        }
                    }
                },
            };
            match kept {
                Some(kept) => kept,
                None => return forget_in_hand(&shared, &key),
            }
        }
        Err(error) => Err(error),
    };
    let msg = match ended {
        Ok(at) => ToScheduler::Finished {
            results: vec![(key.clone(), at)],
        },
        // An error names the run it answers; that of a run taken back
        // meanwhile (cancelled as it ended) is no longer wanted.
        Err(error) => match shared.run_of(&key) {
            Some(run) => ToScheduler::Erred {
                errors: vec![(key.clone(), run, error)],
            },
            None => return,
        },
    };
    // Reported before it leaves the tasks in hand, so no heartbeat in
    // between can say it is gone before its result arrives.
    let _ = shared.to_scheduler.send(msg);
    forget_in_hand(&shared, &key);
}

/// What to tell the scheduler of task `key`, sent by `Run` number `run`,
/// whose result was kept (where, `Ok`) or could not be (`Err`).
fn report(key: &str, run: u64, kept: Result<Located, TaskError>) -> ToScheduler {
    match kept {
        Ok(at) => ToScheduler::Finished {
            results: vec![(key.to_string(), at)],
        },
        Err(e) => ToScheduler::Erred {
            errors: vec![(key.to_string(), run, e)],
        },
    }
}

/// Task `key`, reported, leaves the tasks in hand.
fn forget_in_hand(shared: &Shared, key: &str) {
    let mut running = shared.running.lock().expect("running lock");
    // Only its own entry (see `Running::own`).
    if running.own(key).is_some() {
        running.tasks.remove(key);
    }
}

pub(super) async fn compute(shared: &Shared, task: RunTask) -> Result<Output, TaskError> {
    let err = |kind, message: String| TaskError {
        kind,
        message,
        stderr: String::new(),
        backtrace: String::new(),
        origin: task.key.clone(),
    };
    let ready = load_module(shared, &task.module)
        .await
        .map_err(|m| err(ErrorKind::Module, m))?;
    let mut args = Vec::with_capacity(task.args.len());
    let command = ready.module.kind().is_command();
    // Inputs to fetch into memory must fit the task's memory limit: known
    // from their sizes before any is fetched. (A command's first input, its
    // stdin, may be read from a file instead.)
    let incoming: u64 = task
        .args
        .iter()
        .enumerate()
        .filter(|(i, _)| !(command && *i == 0))
        .map(|(_, a)| match a {
            RunArg::Dep { at, .. } if at.inline.is_none() => at.nbytes,
            _ => 0,
        })
        .sum();
    let memory = task.memory_limit.map(|m| m.min(usize::MAX as u64) as usize);
    shared
        .sandbox
        .check_incoming(&task.key, &task.function, incoming, memory)?;
    // Room for what is fetched into memory, held until the task runs (see
    // `inbound`): a command's stdin over the budget goes to disk instead.
    let fetching: u64 = task
        .args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            RunArg::Dep { key, at }
                if at.inline.is_none()
                    && !(command && i == 0 && shared.results.over_budget(at.nbytes))
                    && !shared.results.holds(key) =>
            {
                Some(at.nbytes)
            }
            _ => None,
        })
        .sum();
    let mut room = Some(shared.inbound.room(fetching).await);
    // The inputs fetched, shared with other tasks needing them meanwhile.
    let mut shares = Vec::new();
    for (i, arg) in task.args.iter().enumerate() {
        let bytes = match arg {
            RunArg::Value(b) => b.clone(),
            RunArg::Dep { key, at } => match &at.inline {
                Some(b) => b.clone(),
                None if command && i == 0 => match command_stdin(shared, key, at).await {
                    Ok(StdinSource::File(file)) => {
                        args.push(TaskArg::File(file));
                        continue;
                    }
                    Ok(StdinSource::Encoded(b)) => b,
                    Err(m) => return Err(err(ErrorKind::Lost, m)),
                },
                None => {
                    let (bytes, share) = dependency(shared, key, at)
                        .await
                        .map_err(|m| err(ErrorKind::Lost, m))?;
                    shares.extend(share);
                    bytes
                }
            },
        };
        // A big byte string stays a slice of what arrived, for a bulk copy
        // into the guest.
        if let Some(payload) = value::binary_payload(&bytes)
            && payload.len() >= crate::blob::OUT_OF_BAND
        {
            args.push(TaskArg::Bytes(bytes.slice_ref(payload)));
            continue;
        }
        let v: Value = value::decode(&bytes).map_err(|e| {
            err(
                ErrorKind::Input,
                format!("an argument is not a valid value: {e}"),
            )
        })?;
        args.push(TaskArg::Value(v));
    }
    // The task's own limit, within the worker's.
    let timeout = match (
        task.timeout_ms.map(Duration::from_millis),
        shared.options.limits.timeout,
    ) {
        (Some(t), Some(w)) => Some(t.min(w)),
        (t, w) => t.or(w),
    };
    let mut slot = shared.slots.acquire(task.priority).await;
    // A slot, and a pooled instance to run in. Every instance may be held
    // by tasks waiting in host calls (a gather, a queue get) or by actors:
    // the task then waits for one with its slot given back, which those
    // tasks may need to go on (to rejoin).
    let instance = match shared.sandbox.try_instance() {
        Some(instance) => instance,
        None => {
            drop(slot);
            // Nor its room to fetch inputs, which the tasks holding
            // instances may wait on.
            drop(room.take());
            // Told, the scheduler sends tasks elsewhere meanwhile, and
            // takes back those waiting here for a worker that can begin
            // them.
            let instance = {
                let _starving = Starving::begin(shared);
                shared.sandbox.instance(&task.key, timeout).await?
            };
            slot = shared.slots.acquire(task.priority).await;
            instance
        }
    };
    // Room bounds only what tasks fetch ahead: one that runs gives it
    // back, so a running task waiting on another (a gather of a subtask, a
    // queue get) never holds room that task needs to fetch its inputs.
    drop(room);
    if !shared.begin(&task.key) {
        // Taken back while it waited, and aborted: this await is where
        // the abort lands.
        return std::future::pending().await;
    }
    // From here on it runs: if this worker dies now, the scheduler counts
    // it as a suspect (and not the tasks still queued behind it).
    let _ = shared.to_scheduler.send(ToScheduler::Started {
        keys: vec![task.key.clone()],
    });
    let link = TaskLink::new(
        shared.link.clone(),
        &task.key,
        ready.module.clone(),
        task.priority,
        timeout,
        slot,
    );
    for dir in &task.grants.dirs {
        allowed_dir(&shared.options.allow_dirs, dir).map_err(|m| err(ErrorKind::Input, m))?;
    }
    let limits = RunLimits {
        timeout,
        memory,
        grants: task.grants.clone(),
        output: Default::default(),
        spill: Some(shared.results.clone()),
        instance: Some(instance),
    };
    let output = limits.output.clone();
    let result = shared
        .sandbox
        .run_linked(&ready, &task.key, &task.function, args, limits, Some(link))
        .await;
    // Kept whatever the outcome, for `dtask logs`.
    if output.is_empty() {
        shared.logs.wrote_nothing(&task.key);
    } else {
        let log = logs::TaskLog {
            stdout: output.stdout(),
            stderr: output.stderr(),
        };
        shared.logs.insert(&task.key, log);
    }
    result
}

/// Constructs an actor and serves its calls, one at a time, until it is
/// dropped.
/// A task waiting for a pooled instance, every one being held, counted
/// while this lives: the first to wait and the last to stop tell the
/// scheduler ([`ToScheduler::Starved`]), under the count's lock so that
/// the two never arrive out of order.
pub(super) struct Starving<'a>(&'a Shared);

impl<'a> Starving<'a> {
    fn begin(shared: &'a Shared) -> Self {
        let mut n = shared.starving.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        if *n == 1 {
            let _ = shared
                .to_scheduler
                .send(ToScheduler::Starved { starved: true });
        }
        Self(shared)
    }
}

impl Drop for Starving<'_> {
    fn drop(&mut self) {
        let mut n = self.0.starving.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            let _ = self
                .0
                .to_scheduler
                .send(ToScheduler::Starved { starved: false });
        }
    }
}

pub(super) async fn start_actor(shared: Arc<Shared>, spec: ActorSpec, made: u64) {
    let key = spec.key.clone();
    let built = async {
        let ready = load_module(&shared, &spec.module)
            .await
            .map_err(|m| TaskError {
                kind: ErrorKind::Module,
                message: m,
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.clone(),
            })?;
        let mut args = Vec::with_capacity(spec.args.len());
        for a in &spec.args {
            args.push(value::decode(a).map_err(|e| TaskError {
                kind: ErrorKind::Input,
                message: format!("a constructor argument is not a valid value: {e}"),
                stderr: String::new(),
                backtrace: String::new(),
                origin: key.clone(),
            })?);
        }
        let memory = spec.memory_limit.map(|m| m.min(usize::MAX as u64) as usize);
        shared
            .sandbox
            .construct(
                ready,
                &key,
                &spec.resource,
                args,
                memory,
                spec.call_timeout_ms.map(Duration::from_millis),
            )
            .await
    }
    .await;
    let mut instance = match built {
        Ok(i) => i,
        Err(error) => {
            let _ = shared
                .to_scheduler
                .send(ToScheduler::ActorFailed { key, made, error });
            return;
        }
    };
    let (tx, mut calls) = tokio::sync::mpsc::channel::<peer::ActorCall>(peer::ACTOR_QUEUE);
    {
        let mut actors = shared.actors.lock().expect("actor table lock");
        // A later making of the same key built here first (this one was
        // slow, and the key was made again meanwhile) stays: this one is
        // stale, and goes with its instance.
        if actors.get(&key).is_some_and(|(m, _)| *m > made) {
            return;
        }
        actors.insert(key.clone(), (made, tx));
    }
    let _ = shared.to_scheduler.send(ToScheduler::ActorReady {
        key: key.clone(),
        made,
    });
    while let Some(call) = calls.recv().await {
        let was_broken = instance.is_broken();
        let result = instance
            .call(&call.method, call.args)
            .await
            .map(|v| Bytes::from(value::encode(&v)));
        if !was_broken && instance.is_broken() {
            let _ = shared.to_scheduler.send(ToScheduler::ActorBroken {
                key: key.clone(),
                made,
            });
        }
        let _ = call.reply.send(FromPeer::Called {
            id: call.id,
            result,
        });
    }
    tracing::debug!("actor {key} dropped");
}

/// Where a command's stdin comes from (what the sandbox's own `Stdin` is
/// made of once it is decoded).
enum StdinSource {
    /// A byte string's or string's bytes, read from a file as the program
    /// asks for them.
    File(FileBytes),
    /// An encoded value, whole in memory.
    Encoded(Bytes),
}

/// A command's stdin that is another task's result `key`. A byte string or
/// string spilled here is read from its spill file; one held elsewhere and
/// over this worker's memory budget is streamed from its holder into a
/// spill file first (removed when the task ends), so the worker never holds
/// it whole. Anything else arrives whole, as any argument does.
async fn command_stdin(shared: &Shared, key: &str, at: &Located) -> Result<StdinSource, String> {
    if let Some(spilled) = shared.results.spilled_bytes(key).await {
        return Ok(StdinSource::File(spilled));
    }
    if !shared.results.over_budget(at.nbytes) || shared.results.holds(key) {
        return dependency(shared, key, at)
            .await
            .map(|(bytes, _)| StdinSource::Encoded(bytes));
    }
    let spill = fetch_to_disk(shared, key, at).await?;
    let read = tokio::task::spawn_blocking(move || match spill.into_payload() {
        Ok(Ok(file)) => Ok(StdinSource::File(file)),
        Ok(Err(other)) => other.read().map(|b| StdinSource::Encoded(b.into())),
        Err(e) => Err(e),
    });
    read.await
        .map_err(|e| format!("reading {key} back from disk failed: {e}"))?
        .map_err(|e| format!("reading {key} back from disk failed: {e}"))
}

/// Streams `key` from the workers holding it into a new spill file, range
/// by range (written off the async threads), never whole in memory.
async fn fetch_to_disk(shared: &Shared, key: &str, at: &Located) -> Result<SpillFile, String> {
    let mut spill = shared.results.spill_file()?;
    let store = shared.results.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(range) = rx.blocking_recv() {
            spill.write(&store, &range)?;
        }
        Ok::<_, String>(spill)
    });
    let token = shared.options.token.expose();
    let streamed = peer::stream(&at.who_has, token, key, |_, range| {
        let tx = tx.clone();
        async move {
            let stopped = "the spill file's writer stopped".to_string();
            tx.send(range).await.map_err(|_| stopped)
        }
    })
    .await;
    drop(tx);
    // The writer's own error (a full disk) says more than the stream's.
    let spill = writer
        .await
        .map_err(|e| format!("writing {key} to disk failed: {e}"))??;
    streamed.map_err(|e| match e {
        peer::StreamError::Source(why) | peer::StreamError::Sink(why) => why,
    })?;
    use std::sync::atomic::Ordering::Relaxed;
    shared.fetched.fetch_add(1, Relaxed);
    shared.fetched_bytes.fetch_add(spill.len(), Relaxed);
    Ok(spill)
}

/// Input `key` of a task: held here, or fetched from its holders `at`
/// (once, however many tasks need it meanwhile: with the share to hold
/// while the task uses it).
pub(super) async fn dependency(
    shared: &Shared,
    key: &str,
    at: &Located,
) -> Result<(Bytes, Option<inbound::Input>), String> {
    if let Some(b) = shared.results.get(key).await {
        return Ok((b, None));
    }
    let share = shared
        .inbound
        .get(key, || async {
            let b = peer::fetch(&at.who_has, shared.options.token.expose(), key, at.nbytes).await?;
            use std::sync::atomic::Ordering::Relaxed;
            shared.fetched.fetch_add(1, Relaxed);
            shared.fetched_bytes.fetch_add(b.len() as u64, Relaxed);
            Ok(b)
        })
        .await?;
    Ok((share.bytes().clone(), Some(share)))
}

/// The linked code of module `hash`, fetched from the scheduler and
/// compiled on first use. Cranelift's artifact is loaded from the cache
/// when there is one; otherwise Winch compiles the module (about three
/// times faster: 50-69 ms against 157 ms for the example tasks component
/// on this project's 2-core VMs) for the tasks that arrive first, and
/// Cranelift compiles it in the background (writing the cache) and takes
/// over for the tasks after.
/// How a module's load failure begins when the scheduler did not give the
/// module (rather than it failing to compile).
const NOT_GIVEN: &str = "the module could not be fetched";

pub(super) async fn load_module(shared: &Shared, hash: &str) -> Result<Arc<Ready>, String> {
    let slot: ModuleSlot = shared
        .modules
        .lock()
        .expect("module table lock")
        .entry(hash.to_string())
        .or_default()
        .clone();
    let linked = slot
        .get_or_init(|| async {
            let (tx, rx) = oneshot::channel();
            shared
                .module_waiters
                .lock()
                .expect("module waiters lock")
                .entry(hash.to_string())
                .or_default()
                .push(tx);
            let _ = shared.to_scheduler.send(ToScheduler::FetchModule {
                hash: hash.to_string(),
            });
            let bytes = rx
                .await
                .map_err(|_| format!("{NOT_GIVEN}: the scheduler went away"))?
                .ok_or_else(|| format!("{NOT_GIVEN}: the scheduler does not have it"))?;
            let sandbox = shared.sandbox.clone();
            let cache = shared.options.cache_dir.clone();
            let name = format!("module {hash}");
            let (quick, optimised) = tokio::task::spawn_blocking(move || {
                let engine = sandbox.engine();
                let fast = sandbox
                    .fast_engine()
                    .filter(|_| !module::is_cached(engine, &bytes, cache.as_deref()));
                // A module Winch cannot compile waits for Cranelift.
                let quick = fast
                    .and_then(|fast| module::compile(fast, &bytes, &name, None).ok())
                    .and_then(|compiled| sandbox.prepare(compiled).ok());
                let optimise = move || {
                    module::compile(sandbox.engine(), &bytes, &name, cache.as_deref())
                        .and_then(|compiled| sandbox.prepare(compiled))
                };
                match quick {
                    Some(quick) => Ok((quick, Some(optimise))),
                    None => optimise().map(|ready| (ready, None)),
                }
            })
            .await
            .map_err(|e| format!("compiling module {hash} failed: {e}"))??;
            let linked = Arc::new(Mutex::new(Arc::new(quick)));
            if let Some(optimise) = optimised {
                let swap = linked.clone();
                let hash = hash.to_string();
                let started = std::time::Instant::now();
                tokio::task::spawn_blocking(move || match optimise() {
                    Ok(ready) => {
                        *swap.lock().expect("module lock") = Arc::new(ready);
                        tracing::debug!(
                            "module {hash}: Cranelift's code takes over from Winch's, {} ms on",
                            started.elapsed().as_millis()
                        );
                    }
                    // Winch's code stays: it is correct, only slower.
                    Err(e) => {
                        tracing::warn!("module {hash} stays on its quickly compiled code: {e}")
                    }
                });
            }
            Ok(linked)
        })
        .await;
    match linked {
        Ok(linked) => Ok(linked.lock().expect("module lock").clone()),
        Err(e) => {
            // A module the scheduler could not give is asked for again by
            // the next task (it may be uploaded again, or the scheduler
            // back); one that does not compile here stays refused.
            if e.starts_with(NOT_GIVEN) {
                let mut modules = shared.modules.lock().expect("module table lock");
                if modules.get(hash).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    modules.remove(hash);
                }
            }
            Err(e.clone())
        }
    }
}
