//! The host side of the guest contract (`wasm-tasks/wit/task.wit`): a task
//! acting as a client of the cluster (submit, gather, wait…) and taking part
//! in coordination (queues, variables, locks, semaphores, events, pub/sub).
//!
//! Each worker keeps one unnamed [`Client`] connection for its tasks, made
//! on first use. Futures a task submits or receives are held through it in
//! the task's own table, so they are released when the task ends; leases
//! and waits are made on the task's behalf (by key), so the scheduler ends
//! them when the task ends.
//!
//! No deadlock by design: every call that can wait runs through
//! [`TaskLink::blocking`], which gives the task's execution slot back (and
//! tells the scheduler, so the worker's queue refills) for the duration of
//! the wait, then takes a slot again before the guest continues. The guest
//! is a suspended fiber meanwhile; no OS thread is held. A task's wall-clock
//! limit bounds these waits too.

use crate::client::{self, Client, ClientError, Future, SubmitOptions};
use crate::module::CompiledModule;
use crate::protocol::{Arg, CallArg, Op, OpReply, Placement, ToScheduler};
use crate::value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Trap;
use wasmtime::component::{Resource, ResourceTable};

/// Generated from `wasm-tasks/wit`; documented there.
mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../wasm-tasks/wit",
        world: "dtask:task/task",
        imports: { default: async | trappable },
        with: {
            "dtask:task/pubsub.subscription": super::GuestSubscription,
        },
    });
}

use bindings::Task;
use bindings::dtask::task::types::{Error as GuestError, Item, TaskFailure};
use bindings::dtask::task::{
    actor, client as wit_client, event, lock, pubsub, queue, semaphore, variable, worker,
};

mod actors;
mod primitives;

/// A guest's subscription: the client's, in the task's resource table
/// (shared, so a wait on it does not borrow the table).
pub struct GuestSubscription(Arc<tokio::sync::Mutex<client::Subscription>>);

/// What a worker shares with all its tasks for these calls.
pub struct Link {
    scheduler: String,
    token: crate::secret::Secret,
    /// Made on first use, and again after its connection broke (a
    /// scheduler restart).
    client: tokio::sync::Mutex<Option<Client>>,
    slots: Arc<super::slots::Slots>,
    to_scheduler: tokio::sync::mpsc::UnboundedSender<ToScheduler>,
    worker_id: Arc<str>,
}

impl Link {
    /// The link of a worker joined to `scheduler` with `token`, whose tasks
    /// share `slots`.
    pub fn new(
        scheduler: String,
        token: crate::secret::Secret,
        slots: Arc<super::slots::Slots>,
        to_scheduler: tokio::sync::mpsc::UnboundedSender<ToScheduler>,
        worker_id: &str,
    ) -> Self {
        Self {
            scheduler,
            token,
            client: tokio::sync::Mutex::new(None),
            slots,
            to_scheduler,
            worker_id: worker_id.into(),
        }
    }

    /// The worker's identifier.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
}

/// One running task's side of the link.
pub struct TaskLink {
    link: Arc<Link>,
    key: String,
    module: Arc<CompiledModule>,
    priority: i32,
    deadline: Option<Instant>,
    /// The execution slot, while the task holds one.
    slot: Option<super::slots::Slot>,
    /// Whether the guest called `secede` (and not yet `rejoin`).
    seceded: bool,
    /// Futures the task holds, by key.
    futures: HashMap<String, Future>,
    /// The task's resources (subscriptions).
    pub(super) table: ResourceTable,
}

impl TaskLink {
    /// The link of task `key`, running `module` while holding `slot`.
    pub fn new(
        link: Arc<Link>,
        key: &str,
        module: Arc<CompiledModule>,
        priority: i32,
        timeout: Option<Duration>,
        slot: super::slots::Slot,
    ) -> Self {
        Self {
            link,
            key: key.to_string(),
            module,
            priority,
            deadline: timeout.map(|t| Instant::now() + t),
            slot: Some(slot),
            seceded: false,
            futures: HashMap::new(),
            table: ResourceTable::new(),
        }
    }

    /// The worker's client for its tasks, connected on first use. (A
    /// future that does not borrow the task, whose table is not `Sync`.)
    fn client(
        &self,
    ) -> impl std::future::Future<Output = Result<Client, GuestError>> + Send + 'static {
        let link = self.link.clone();
        async move {
            let mut held = link.client.lock().await;
            if let Some(c) = held.as_ref()
                && c.is_connected()
            {
                return Ok(c.clone());
            }
            let c = Client::connect_for_tasks(&link.scheduler, link.token.expose())
                .await
                .map_err(|e| GuestError::Other(format!("cannot reach the scheduler: {e}")))?;
            // The worker rejoins on its own; its tasks' client need not.
            c.set_reconnect_grace(Duration::ZERO);
            *held = Some(c.clone());
            Ok(c)
        }
    }

    /// Gives the execution slot back.
    fn free_slot(&mut self) {
        if self.slot.take().is_some() {
            let _ = self.link.to_scheduler.send(ToScheduler::Seceded {
                key: self.key.clone(),
            });
        }
    }

    /// Takes an execution slot again, waiting for one.
    async fn take_slot(&mut self) -> wasmtime::Result<()> {
        if self.slot.is_none() {
            self.slot = Some(self.link.slots.acquire(self.priority).await);
            let _ = self.link.to_scheduler.send(ToScheduler::Rejoined {
                key: self.key.clone(),
            });
        }
        Ok(())
    }

    /// Waits for `wait` without holding an execution slot, and at most
    /// until the task's own deadline (past which the task traps, as a
    /// timeout).
    async fn blocking<T>(
        &mut self,
        wait: impl std::future::Future<Output = T>,
    ) -> wasmtime::Result<T> {
        self.free_slot();
        let out = match self.deadline {
            Some(d) => tokio::time::timeout_at(d.into(), wait)
                .await
                .map_err(|_| wasmtime::Error::from(Trap::Interrupt))?,
            None => wait.await,
        };
        if !self.seceded {
            self.take_slot().await?;
        }
        Ok(out)
    }

    /// A primitive operation on the task's behalf, waiting without a slot.
    async fn primitive(&mut self, op: Op) -> wasmtime::Result<Result<OpReply, GuestError>> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let key = self.key.clone();
        let waits = matches!(
            op,
            Op::QueuePut { .. }
                | Op::QueueGet { .. }
                | Op::VarGet { .. }
                | Op::LockAcquire { .. }
                | Op::SemAcquire { .. }
                | Op::EventWait { .. }
        );
        let call = async move { client.primitive(Some(&key), op).await };
        let reply = if waits {
            self.blocking(call).await?
        } else {
            call.await
        };
        Ok(match reply {
            Ok(OpReply::Timeout) => Err(GuestError::Timeout),
            Ok(OpReply::Failed(why)) => Err(GuestError::Other(why)),
            Ok(other) => Ok(other),
            Err(e) => Err(guest_error(e)),
        })
    }

    /// An operation whose answer is just "done".
    async fn done(&mut self, op: Op) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(self.primitive(op).await?.map(drop))
    }

    /// An operation that answers with an item.
    async fn item(&mut self, op: Op) -> wasmtime::Result<Result<Item, GuestError>> {
        Ok(match self.primitive(op).await? {
            Ok(OpReply::Item(arg)) => Ok(self.adopt(arg).await),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        })
    }

    /// A received item for the guest; a future is held for the task.
    async fn adopt(&mut self, arg: Arg) -> Item {
        match arg {
            Arg::Value(bytes) => Item::Value(bytes.to_vec()),
            Arg::Future(key) => {
                if let Ok(client) = self.client().await {
                    self.futures
                        .entry(key.clone())
                        .or_insert_with(|| client.future(key.clone()));
                }
                Item::Future(key)
            }
        }
    }

    fn submit_options(&self, o: &wit_client::SubmitOptions) -> SubmitOptions {
        SubmitOptions {
            key: o.key.clone(),
            pure: o.pure,
            priority: o.priority.unwrap_or(self.priority.saturating_add(1)),
            timeout: o.timeout_ms.map(Duration::from_millis),
            memory_limit: None,
            grants: Default::default(),
            placement: Placement::default(),
            retries: o.retries,
        }
    }

    /// Submits calls of `function`; returns their keys, held for the task.
    async fn submit_calls(
        &mut self,
        function: &str,
        calls: Vec<Vec<Item>>,
        options: &wit_client::SubmitOptions,
    ) -> Result<Vec<String>, GuestError> {
        let client = self.client().await?;
        let module = options
            .module
            .clone()
            .unwrap_or_else(|| self.module.hash.clone());
        let opts = self.submit_options(options);
        let mut specs = Vec::with_capacity(calls.len());
        for items in calls {
            let args = items
                .into_iter()
                .map(guest_arg)
                .collect::<Result<Vec<Arg>, _>>()?;
            if module == self.module.hash {
                client::check_args(&self.module, "this module", function, &args)
                    .map_err(GuestError::Other)?;
            }
            specs.push(client::task_spec(&module, function, args, &opts));
        }
        let keys: Vec<String> = specs.iter().map(|s| s.key.clone()).collect();
        if keys.contains(&self.key) {
            return Err(GuestError::Other(format!(
                "task {} cannot submit itself (same key); pass a `key` or `pure: false`",
                self.key
            )));
        }
        // Held before the submit goes out: this worker's tasks share one
        // client, and another of them letting go of the same key must not
        // have its release pass this submit in flight and forget the key
        // before this task holds it.
        let mut added = Vec::new();
        for k in &keys {
            if !self.futures.contains_key(k) {
                self.futures.insert(k.clone(), client.future(k.clone()));
                added.push(k);
            }
        }
        let submitted = match client.submit_specs(specs).await {
            Ok(acked) => acked.await,
            Err(e) => Err(e),
        };
        if let Err(e) = submitted {
            for k in added {
                self.futures.remove(k);
            }
            return Err(guest_error(e));
        }
        Ok(keys)
    }

    fn refuse_self_wait(&self, keys: &[String]) -> Result<(), GuestError> {
        if keys.contains(&self.key) {
            return Err(GuestError::Other(format!(
                "task {} cannot wait for its own result",
                self.key
            )));
        }
        Ok(())
    }
}

/// A guest item as a task argument or stored item; a value must be valid
/// MessagePack.
fn guest_arg(item: Item) -> Result<Arg, GuestError> {
    match item {
        Item::Value(bytes) => {
            value::decode(&bytes)
                .map_err(|e| GuestError::Other(format!("a value is not valid MessagePack: {e}")))?;
            Ok(Arg::Value(bytes.into()))
        }
        Item::Future(key) => Ok(Arg::Future(key)),
    }
}

fn guest_error(e: ClientError) -> GuestError {
    match e {
        ClientError::Timeout(_) => GuestError::Timeout,
        ClientError::Task(t) => GuestError::TaskFailed(TaskFailure {
            key: t.origin.clone(),
            kind: t.kind.name().to_string(),
            message: t.message.clone(),
        }),
        ClientError::Cancelled(k) => GuestError::Cancelled(k),
        ClientError::ActorLost(why) => GuestError::ActorLost(why),
        other => GuestError::Other(other.to_string()),
    }
}

fn unexpected(reply: OpReply) -> GuestError {
    GuestError::Other(format!("unexpected answer from the scheduler: {reply:?}"))
}

fn millis(timeout: Option<u64>) -> Option<Duration> {
    timeout.map(Duration::from_millis)
}

/// Store data whose guests may import the dtask interfaces.
pub trait HasLink {
    /// The running task's link, when it runs on a worker.
    fn link(&mut self) -> Option<&mut TaskLink>;
    /// The running task's key.
    fn key(&self) -> &str;
    /// The worker's identifier.
    fn worker_id(&self) -> &str;
    /// The running task's memory limit in bytes, and how to raise it;
    /// `None` if it has none of its own.
    fn memory_limit(&self) -> Option<(usize, &'static str)> {
        None
    }
}

/// The bindings' view of a store's data.
pub struct Guest<'a, T: HasLink>(&'a mut T);

impl<T: HasLink> Guest<'_, T> {
    fn task(&mut self) -> wasmtime::Result<&mut TaskLink> {
        self.0.link().ok_or_else(|| {
            wasmtime::Error::msg(
                "this task runs outside a worker, where dtask's client calls do not exist",
            )
        })
    }
}

struct GuestData<T>(std::marker::PhantomData<T>);

impl<T: HasLink + Send + 'static> wasmtime::component::HasData for GuestData<T> {
    type Data<'a> = Guest<'a, T>;
}

/// Adds dtask's host interfaces to `linker`.
pub fn add_to_linker<T: HasLink + Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    Task::add_to_linker::<T, GuestData<T>>(linker, |t| Guest(t))
}

impl<T: HasLink + Send> bindings::dtask::task::types::Host for Guest<'_, T> {}

impl<T: HasLink + Send> wit_client::Host for Guest<'_, T> {
    async fn submit(
        &mut self,
        function: String,
        args: Vec<Item>,
        options: wit_client::SubmitOptions,
    ) -> wasmtime::Result<Result<String, GuestError>> {
        let task = self.task()?;
        Ok(task
            .submit_calls(&function, vec![args], &options)
            .await
            .map(|mut keys| keys.remove(0)))
    }

    async fn map(
        &mut self,
        function: String,
        calls: Vec<Vec<Item>>,
        options: wit_client::SubmitOptions,
    ) -> wasmtime::Result<Result<Vec<String>, GuestError>> {
        let task = self.task()?;
        Ok(task.submit_calls(&function, calls, &options).await)
    }

    async fn gather(
        &mut self,
        keys: Vec<String>,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<Vec<u8>>, GuestError>> {
        // The values go into the guest's memory: more than its limit is
        // refused before any is fetched, and they are handed over as they
        // came (never decoded and encoded again here).
        let memory = self.0.memory_limit();
        let task = self.task()?;
        if let Err(e) = task.refuse_self_wait(&keys) {
            return Ok(Err(e));
        }
        let client = match task.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let limit = millis(timeout);
        let budget = memory.map(|(bytes, _)| bytes as u64);
        let gathered = task
            .blocking(async move {
                let gather = client.gather_encoded(&keys, budget);
                match limit {
                    None => gather.await,
                    Some(t) => tokio::time::timeout(t, gather)
                        .await
                        .unwrap_or(Err(ClientError::Timeout(t))),
                }
            })
            .await?;
        Ok(gathered
            .map(|values| values.into_iter().map(Vec::from).collect())
            .map_err(|e| match (e, memory) {
                (ClientError::Invalid(m), Some((_, raise))) => {
                    GuestError::Other(format!("{m} by this task's memory limit; {raise}"))
                }
                (e, _) => guest_error(e),
            }))
    }

    async fn wait(
        &mut self,
        keys: Vec<String>,
        mode: wit_client::WaitMode,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<String>, GuestError>> {
        let task = self.task()?;
        if let Err(e) = task.refuse_self_wait(&keys) {
            return Ok(Err(e));
        }
        let client = match task.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let first = matches!(mode, wit_client::WaitMode::FirstCompleted);
        let futures: Vec<Future> = keys.iter().map(|k| client.future(k.clone())).collect();
        let waited = task
            .blocking(async move { client.wait(&futures, first, millis(timeout)).await })
            .await?;
        Ok(waited.map(|(done, _)| done).map_err(guest_error))
    }

    async fn scatter(
        &mut self,
        values: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<String>, GuestError>> {
        let task = self.task()?;
        let client = match task.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut decoded = Vec::with_capacity(values.len());
        for v in &values {
            match value::decode(v) {
                Ok(v) => decoded.push(v),
                Err(e) => {
                    return Ok(Err(GuestError::Other(format!(
                        "a scattered value is not valid MessagePack: {e}"
                    ))));
                }
            }
        }
        let scattered = client.scatter(decoded, false, Vec::new()).await;
        Ok(match scattered {
            Ok(futures) => Ok(futures
                .into_iter()
                .map(|f| {
                    let k = f.key().to_string();
                    task.futures.insert(k.clone(), f);
                    k
                })
                .collect()),
            Err(e) => Err(guest_error(e)),
        })
    }

    async fn cancel(&mut self, keys: Vec<String>, force: bool) -> wasmtime::Result<()> {
        let task = self.task()?;
        if let Ok(client) = task.client().await {
            let _ = client.cancel(keys, force);
        }
        Ok(())
    }

    async fn release(&mut self, keys: Vec<String>) -> wasmtime::Result<()> {
        let task = self.task()?;
        for k in keys {
            task.futures.remove(&k);
        }
        Ok(())
    }

    async fn fire_and_forget(&mut self, keys: Vec<String>) -> wasmtime::Result<()> {
        let task = self.task()?;
        if let Ok(client) = task.client().await {
            let _ = client.fire_and_forget(keys);
        }
        Ok(())
    }
}
