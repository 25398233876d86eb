//! Actors from the Rust client: stateful instances of a resource that a
//! component exports, each living on one worker, called directly.
//!
//! ```no_run
//! # async fn demo(client: dtask_runtime::client::Client, module: dtask_runtime::module::LocalModule) -> Result<(), dtask_runtime::client::ClientError> {
//! use dtask_runtime::client::ActorOptions;
//! use dtask_runtime::protocol::{Arg, CallArg};
//! use dtask_runtime::value::{Value, encode};
//! let start = Arg::Value(encode(&Value::from(0)).into());
//! let counter = client.actor_new(&module, "counter", vec![start], &ActorOptions::default()).await?;
//! let one = CallArg::Value(encode(&Value::from(1)).into());
//! assert_eq!(counter.call("increment", vec![one]).await?, Value::from(1));
//! # Ok(()) }
//! ```
//!
//! The scheduler only places and registers actors: a method call goes over
//! one connection per worker (shared by every actor there) straight to the
//! worker's data port, where calls on one actor run one at a time in
//! arrival order. When that connection breaks (the worker died) every
//! pending and later call fails with [`ClientError::ActorLost`].
//!
//! A client has at most [`CALLS_IN_FLIGHT`] calls on its way to one actor
//! at a time; more wait here, each actor's in its own line. An actor
//! that is slow to take calls thus holds up only the calls to it, not the
//! shared connection that carries calls to the other actors of its worker
//! (the worker stops reading a connection that brings more calls than an
//! actor's queue holds).

use super::{Client, ClientError};
use crate::connection::Sender;
use crate::key;
use crate::module::{LocalModule, ModuleTypes, constructor};
use crate::peer;
use crate::protocol::{
    ActorInfo, ActorSpec, Arg, CallArg, ErrorKind, FromPeer, FromScheduler, TaskError, ToPeer,
    ToScheduler,
};
use crate::value::{self, Value};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How an actor is created.
#[derive(Clone, Debug, Default)]
pub struct ActorOptions {
    /// Use this key instead of a fresh one.
    pub key: Option<String>,
    /// Memory limit of the actor's instance, in bytes (at most its
    /// worker's).
    pub memory_limit: Option<u64>,
    /// How long one method call may run (within its worker's `--timeout`,
    /// if it has one): a call past it fails with [`ErrorKind::Timeout`],
    /// and the actor takes no more calls (it is `broken`). None: no limit
    /// but the worker's.
    pub call_timeout: Option<std::time::Duration>,
}

type Pending = Mutex<Option<HashMap<u64, oneshot::Sender<Result<Bytes, TaskError>>>>>;

/// Most calls one client has on their way to one actor: a quarter of an
/// actor's queue on its worker ([`peer::ACTOR_QUEUE`]), so that a few
/// clients flooding one actor at once still do not fill it.
pub const CALLS_IN_FLIGHT: usize = peer::ACTOR_QUEUE / 4;

/// Actors' lines past which their lanes are pruned of idle ones.
const LANES_KEPT: usize = 1024;

/// One multiplexed connection to a worker's data port, for actor calls.
pub(super) struct PeerLink {
    tx: Sender<ToPeer>,
    next_id: AtomicU64,
    pending: Arc<Pending>,
    /// Each actor's calls on their way, at most [`CALLS_IN_FLIGHT`].
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl PeerLink {
    async fn connect(addr: &str, token: &str) -> Result<Self, String> {
        let (tx, mut rx) = peer::connect(addr, token).await?;
        let pending: Arc<Pending> = Arc::new(Mutex::new(Some(HashMap::new())));
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = rx.recv().await {
                if let FromPeer::Called { id, result } = msg {
                    let waiter = routes
                        .lock()
                        .expect("pending calls lock")
                        .as_mut()
                        .and_then(|p| p.remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(result);
                    }
                }
            }
            // Closed: every waiter learns at once.
            routes.lock().expect("pending calls lock").take();
        });
        Ok(Self {
            tx,
            next_id: AtomicU64::new(1),
            pending,
            lanes: Mutex::new(HashMap::new()),
        })
    }

    /// A place among `actor`'s calls on their way, once one is free.
    async fn lane(&self, actor: &str) -> tokio::sync::OwnedSemaphorePermit {
        let lane = {
            let mut lanes = self.lanes.lock().expect("actor lanes lock");
            if lanes.len() >= LANES_KEPT && !lanes.contains_key(actor) {
                // Lanes of actors with no call on its way (each holds
                // its lane), nor a caller about to take a place in one.
                lanes.retain(|_, l| Arc::strong_count(l) > 1);
            }
            lanes
                .entry(actor.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT)))
                .clone()
        };
        lane.acquire_owned().await.expect("lanes are never closed")
    }

    /// Sends a call now; the receiver resolves with its answer, or errs if
    /// the connection closes first.
    fn send(
        &self,
        actor: &str,
        method: &str,
        args: Vec<CallArg>,
    ) -> Option<oneshot::Receiver<Result<Bytes, TaskError>>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending calls lock")
            .as_mut()?
            .insert(id, reply);
        let call = ToPeer::Call {
            id,
            actor: actor.to_string(),
            method: method.to_string(),
            args,
        };
        self.tx.send(call).ok()?;
        Some(rx)
    }

    fn is_open(&self) -> bool {
        self.pending.lock().expect("pending calls lock").is_some()
    }
}

/// A handle on an actor. Cheap to clone; calls through clones share the
/// connection and keep their order.
#[derive(Clone, Debug)]
pub struct Actor {
    client: Client,
    info: ActorInfo,
}

impl Client {
    /// Creates an actor: an instance of `resource` (exported by `module`)
    /// constructed with `args` on a worker. Arguments are checked against
    /// the constructor's types first; future arguments are resolved to
    /// their values.
    pub async fn actor_new(
        &self,
        module: &LocalModule,
        resource: &str,
        args: Vec<Arg>,
        options: &ActorOptions,
    ) -> Result<Actor, ClientError> {
        check_constructor(&module.types, &module.name, resource, &args)?;
        self.upload(module).await?;
        self.actor_new_in(module.hash(), resource, args, options)
            .await
    }

    /// [`Client::actor_new`] for a module the scheduler already has, by
    /// hash (unchecked: the worker checks the arguments).
    pub async fn actor_new_in(
        &self,
        module: &str,
        resource: &str,
        args: Vec<Arg>,
        options: &ActorOptions,
    ) -> Result<Actor, ClientError> {
        if options.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ClientError::Invalid(
                "a call timeout of 0 would fail every call: give one above 0, or none".into(),
            ));
        }
        let args = self.resolve_args(args).await?;
        let spec = ActorSpec {
            key: options
                .key
                .clone()
                .unwrap_or_else(|| key::random_key(resource)),
            module: module.to_string(),
            resource: resource.to_string(),
            args,
            memory_limit: options.memory_limit,
            call_timeout_ms: options.call_timeout.map(super::limit_ms),
        };
        match self
            .request(|id| ToScheduler::ActorNew {
                id,
                session: self.inner.session,
                spec,
            })
            .await?
        {
            FromScheduler::ActorCreated { result, .. } => {
                let info = result.map_err(actor_error)?;
                self.remember(&info);
                Ok(Actor {
                    client: self.clone(),
                    info,
                })
            }
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// A handle on the existing actor `key`.
    pub async fn actor(&self, key: &str) -> Result<Actor, ClientError> {
        let known = self
            .inner
            .actors
            .lock()
            .expect("actor table lock")
            .get(key)
            .cloned();
        let info = match known {
            Some(info) => info,
            None => self.locate(key).await?,
        };
        Ok(Actor {
            client: self.clone(),
            info,
        })
    }

    /// Every actor the scheduler knows.
    pub async fn actors(&self) -> Result<Vec<ActorInfo>, ClientError> {
        match self.request(|id| ToScheduler::Actors { id }).await? {
            FromScheduler::Actors { actors, .. } => Ok(actors),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Deletes the actor `key`; its state is dropped.
    pub fn actor_delete(&self, key: &str) -> Result<(), ClientError> {
        self.inner
            .actors
            .lock()
            .expect("actor table lock")
            .remove(key);
        self.send(ToScheduler::ActorDelete {
            key: key.to_string(),
        })
    }

    async fn locate(&self, key: &str) -> Result<ActorInfo, ClientError> {
        let k = key.to_string();
        match self
            .request(|id| ToScheduler::ActorLocate { id, key: k })
            .await?
        {
            FromScheduler::ActorLocated { result, .. } => {
                let info = result.map_err(|e| match e.kind {
                    ErrorKind::ActorLost => ClientError::ActorLost(e.message),
                    _ => ClientError::Invalid(e.message),
                })?;
                self.remember(&info);
                Ok(info)
            }
            other => Err(ClientError::unexpected(other)),
        }
    }

    fn remember(&self, info: &ActorInfo) {
        self.inner
            .actors
            .lock()
            .expect("actor table lock")
            .insert(info.key.clone(), info.clone());
    }

    /// Values of `args`, futures resolved.
    async fn resolve_args(&self, args: Vec<Arg>) -> Result<Vec<Bytes>, ClientError> {
        let mut out = Vec::with_capacity(args.len());
        for a in args {
            out.push(match a {
                Arg::Value(b) => b,
                Arg::Future(k) => value::encode(&self.result(&k).await?).into(),
            });
        }
        Ok(out)
    }

    /// The connection to the worker at `addr`, made on first use and again
    /// after one breaks.
    async fn peer(&self, addr: &str) -> Result<Arc<PeerLink>, String> {
        let mut peers = self.inner.peers.lock().await;
        if let Some(p) = peers.get(addr)
            && p.is_open()
        {
            return Ok(p.clone());
        }
        let link = Arc::new(PeerLink::connect(addr, &self.inner.peer_token).await?);
        peers.insert(addr.to_string(), link.clone());
        Ok(link)
    }
}

impl Actor {
    /// The actor's key.
    pub fn key(&self) -> &str {
        &self.info.key
    }

    /// Where it lives and its resource.
    pub fn info(&self) -> &ActorInfo {
        &self.info
    }

    /// Calls `method` with `args`; returns its result. Calls one task
    /// makes in order (each awaited in turn, or polled together as
    /// `join_all` does) run in order: past [`CALLS_IN_FLIGHT`] on their
    /// way to this actor, a call waits its turn in the actor's line, first
    /// come first served.
    pub async fn call(&self, method: &str, args: Vec<CallArg>) -> Result<Value, ClientError> {
        let bytes = self.call_bytes(method, args).await?;
        value::decode(&bytes).map_err(|e| ClientError::Data {
            key: self.info.key.clone(),
            reason: format!("the result of {method} does not decode: {e}"),
        })
    }

    /// [`Actor::call`] returning the encoded result.
    pub async fn call_bytes(&self, method: &str, args: Vec<CallArg>) -> Result<Bytes, ClientError> {
        let key = &self.info.key;
        let unreachable = |why: String| {
            ClientError::ActorLost(format!(
                "actor lost: {key} (its worker at {} cannot be reached: {why})",
                self.info.address
            ))
        };
        let link = self
            .client
            .peer(&self.info.address)
            .await
            .map_err(unreachable)?;
        // Held until the answer comes (or the call is given up).
        let _on_its_way = link.lane(key).await;
        let reply = link
            .send(key, method, args)
            .ok_or_else(|| unreachable("the connection closed".into()))?;
        match reply.await {
            Ok(result) => result.map_err(actor_error),
            Err(_) => Err(ClientError::ActorLost(
                crate::scheduler::state::lost_message(key),
            )),
        }
    }

    /// Deletes the actor; its state is dropped.
    pub fn delete(self) -> Result<(), ClientError> {
        self.client.actor_delete(&self.info.key)
    }
}

/// Checks constructor arguments against the module's types.
fn check_constructor(
    module: &ModuleTypes,
    name: &str,
    resource: &str,
    args: &[Arg],
) -> Result<(), ClientError> {
    module
        .constructor(resource, name)
        .map_err(ClientError::Invalid)?;
    super::check_args(module, name, &constructor(resource), args).map_err(ClientError::Invalid)
}

fn actor_error(e: TaskError) -> ClientError {
    match e.kind {
        ErrorKind::ActorLost => ClientError::ActorLost(e.message),
        ErrorKind::Input | ErrorKind::Module => ClientError::Invalid(e.message),
        _ => ClientError::Task(Box::new(e)),
    }
}
