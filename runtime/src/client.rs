//! The async Rust client: the API the `dtask` CLI is written on.
//!
//! A [`Client`] holds one connection to the scheduler. Requests carry ids and
//! are answered out of order; a background task routes answers and key
//! completions to whoever awaits them, so many requests can be in flight at
//! once (a `map` streams its submits without waiting for each answer).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dtask_runtime::client::ClientError> {
//! use dtask_runtime::client::{Client, SubmitOptions};
//! use dtask_runtime::module::LocalModule;
//! use dtask_runtime::protocol::Arg;
//! use dtask_runtime::value::{Value, encode};
//!
//! let client = Client::connect("127.0.0.1:8786", "TOKEN", None).await?;
//! let module = LocalModule::load("tasks.wasm".as_ref(), None).unwrap();
//! let args = vec![Arg::Value(encode(&Value::from(10)).into())];
//! let key = client.submit(&module, "inc", args, &SubmitOptions::default()).await?;
//! assert_eq!(client.result(&key).await?, Value::from(11));
//! # Ok(()) }
//! ```

use crate::connection::{self, Sender};
use crate::key;
use crate::module::LocalModule;
use crate::peer;
use crate::protocol::{
    Arg, FromScheduler, Hello, Located, Outcome, PROTOCOL_VERSION, Role, TaskError, TaskSpec,
    TaskState, ToScheduler,
};
use crate::value::{self, Value};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What can go wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler cannot be reached or refused us.
    #[error("cannot reach the scheduler at {addr}: {reason}")]
    Connect {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The connection to the scheduler closed.
    #[error("lost the connection to the scheduler")]
    Disconnected,
    /// The scheduler refused some submitted tasks.
    #[error("the scheduler refused {}: {}", .0[0].0, .0[0].1)]
    Refused(Vec<(String, String)>),
    /// A task failed.
    #[error("{}", .0.message)]
    Task(Box<TaskError>),
    /// The key is not known to the scheduler.
    #[error("unknown key {0}: never submitted, or released")]
    UnknownKey(String),
    /// A result could not be fetched or decoded.
    #[error("cannot get the result of {key}: {reason}")]
    Data {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The call itself was malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Options of one submit.
#[derive(Clone, Debug)]
pub struct SubmitOptions {
    /// Use this key instead of a computed one.
    pub key: Option<String>,
    /// Same inputs, same key (default); `false` gives a random key.
    pub pure: bool,
    /// Higher runs earlier.
    pub priority: i32,
    /// Wall-clock limit per run.
    pub timeout: Option<Duration>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        Self {
            key: None,
            pure: true,
            priority: 0,
            timeout: None,
        }
    }
}

/// Builds the spec of a task; the key follows `options`.
pub fn task_spec(
    module: &str,
    function: &str,
    args: Vec<Arg>,
    options: &SubmitOptions,
) -> TaskSpec {
    let key = match (&options.key, options.pure) {
        (Some(k), _) => k.clone(),
        (None, true) => key::pure_key(module, function, &args),
        (None, false) => key::random_key(function),
    };
    TaskSpec {
        key,
        module: module.to_string(),
        function: function.to_string(),
        args,
        priority: options.priority,
        timeout_ms: options.timeout.map(|t| t.as_millis() as u64),
    }
}

type Watchers = HashMap<String, Vec<mpsc::UnboundedSender<(String, Outcome)>>>;

struct Inner {
    tx: Sender<ToScheduler>,
    token: String,
    next_id: AtomicU64,
    replies: Mutex<Option<HashMap<u64, oneshot::Sender<FromScheduler>>>>,
    watchers: Mutex<Option<Watchers>>,
    uploaded: Mutex<HashSet<String>>,
}

/// A connection to a dtask scheduler. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the scheduler at `addr` with the cluster `token`. A
    /// `name` makes the keys this client submits outlive its connection
    /// (held until released under that name, as the CLI does).
    pub async fn connect(
        addr: &str,
        token: &str,
        name: Option<String>,
    ) -> Result<Self, ClientError> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: token.to_string(),
            role: Role::Client { name },
        };
        let (_, tx, mut rx) = connection::connect::<FromScheduler, ToScheduler>(addr, hello)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let inner = Arc::new(Inner {
            tx,
            token: token.to_string(),
            next_id: AtomicU64::new(1),
            replies: Mutex::new(Some(HashMap::new())),
            watchers: Mutex::new(Some(HashMap::new())),
            uploaded: Mutex::new(HashSet::new()),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                inner.dispatch(msg);
            }
            if let Some(inner) = weak.upgrade() {
                // Dropping the senders wakes every waiter with an error.
                inner.replies.lock().expect("replies lock").take();
                inner.watchers.lock().expect("watchers lock").take();
            }
        });
        Ok(Self { inner })
    }

    async fn request(
        &self,
        make: impl FnOnce(u64) -> ToScheduler,
    ) -> Result<FromScheduler, ClientError> {
        let rx = self.send_request(make)?;
        rx.await.map_err(|_| ClientError::Disconnected)
    }

    fn send_request(
        &self,
        make: impl FnOnce(u64) -> ToScheduler,
    ) -> Result<oneshot::Receiver<FromScheduler>, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .replies
            .lock()
            .expect("replies lock")
            .as_mut()
            .ok_or(ClientError::Disconnected)?
            .insert(id, tx);
        self.send(make(id))?;
        Ok(rx)
    }

    fn send(&self, msg: ToScheduler) -> Result<(), ClientError> {
        self.inner
            .tx
            .send(msg)
            .map_err(|_| ClientError::Disconnected)
    }

    /// Makes sure the scheduler has `module`, uploading it if it lacks it.
    pub async fn upload(&self, module: &LocalModule) -> Result<(), ClientError> {
        let hash = module.hash().to_string();
        if self
            .inner
            .uploaded
            .lock()
            .expect("uploaded lock")
            .contains(&hash)
        {
            return Ok(());
        }
        let reply = self
            .request(|id| ToScheduler::HasModules {
                id,
                hashes: vec![hash.clone()],
            })
            .await?;
        if let FromScheduler::MissingModules { hashes, .. } = reply
            && !hashes.is_empty()
        {
            self.send(ToScheduler::UploadModule {
                hash: hash.clone(),
                bytes: module.bytes.clone(),
            })?;
        }
        self.inner
            .uploaded
            .lock()
            .expect("uploaded lock")
            .insert(hash);
        Ok(())
    }

    /// Submits one call of `function` in `module` and returns its key.
    /// Arguments are checked against the export's types when they are
    /// values; futures are checked when they arrive.
    pub async fn submit(
        &self,
        module: &LocalModule,
        function: &str,
        args: Vec<Arg>,
        options: &SubmitOptions,
    ) -> Result<String, ClientError> {
        check_call(module, function, &args).map_err(ClientError::Invalid)?;
        self.upload(module).await?;
        let spec = task_spec(module.hash(), function, args, options);
        let key = spec.key.clone();
        self.submit_specs(vec![spec]).await?.await?;
        Ok(key)
    }

    /// Sends task specs now and returns a future of the scheduler's answer,
    /// so that many batches can be in flight at once. Modules must have
    /// been uploaded.
    pub async fn submit_specs(
        &self,
        tasks: Vec<TaskSpec>,
    ) -> Result<impl Future<Output = Result<(), ClientError>> + use<>, ClientError> {
        let rx = self.send_request(|id| ToScheduler::Submit { id, tasks })?;
        Ok(async move {
            match rx.await.map_err(|_| ClientError::Disconnected)? {
                FromScheduler::Submitted { refused, .. } if refused.is_empty() => Ok(()),
                FromScheduler::Submitted { refused, .. } => Err(ClientError::Refused(refused)),
                other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
            }
        })
    }

    /// Reports `(key, outcome)` for each of `keys` as it ends, in the order
    /// they end.
    pub fn watch(
        &self,
        keys: Vec<String>,
    ) -> Result<mpsc::UnboundedReceiver<(String, Outcome)>, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watch_into(keys, &tx)?;
        Ok(rx)
    }

    /// Like [`Client::watch`], into an existing channel (for streams of
    /// keys).
    pub fn watch_into(
        &self,
        keys: Vec<String>,
        tx: &mpsc::UnboundedSender<(String, Outcome)>,
    ) -> Result<(), ClientError> {
        {
            let mut w = self.inner.watchers.lock().expect("watchers lock");
            let w = w.as_mut().ok_or(ClientError::Disconnected)?;
            for k in &keys {
                w.entry(k.clone()).or_default().push(tx.clone());
            }
        }
        self.send(ToScheduler::Watch { keys })
    }

    /// The value of a finished result, from wherever it is.
    pub async fn fetch(&self, key: &str, at: &Located) -> Result<Value, ClientError> {
        let bytes: Bytes = match &at.inline {
            Some(b) => b.clone(),
            None => peer::fetch(&at.who_has, &self.inner.token, key)
                .await
                .map_err(|reason| ClientError::Data {
                    key: key.to_string(),
                    reason,
                })?,
        };
        value::decode(&bytes).map_err(|e| ClientError::Data {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Turns an outcome into the result value or the task's error.
    pub async fn resolve(&self, key: &str, outcome: Outcome) -> Result<Value, ClientError> {
        match outcome {
            Outcome::Finished(at) => self.fetch(key, &at).await,
            Outcome::Error(e) => Err(ClientError::Task(Box::new(e))),
            Outcome::Cancelled => Err(ClientError::Invalid(format!("{key} was cancelled"))),
            Outcome::Unknown => Err(ClientError::UnknownKey(key.to_string())),
        }
    }

    /// Waits for `key` and returns its result.
    pub async fn result(&self, key: &str) -> Result<Value, ClientError> {
        let mut rx = self.watch(vec![key.to_string()])?;
        let (_, outcome) = rx.recv().await.ok_or(ClientError::Disconnected)?;
        self.resolve(key, outcome).await
    }

    /// Results of `keys`, in order; the first failure is returned as the
    /// error.
    pub async fn gather(&self, keys: &[String]) -> Result<Vec<Value>, ClientError> {
        let mut rx = self.watch(keys.to_vec())?;
        let mut outcomes: HashMap<String, Outcome> = HashMap::with_capacity(keys.len());
        let wanted: HashSet<&String> = keys.iter().collect();
        while outcomes.len() < wanted.len() {
            let (k, o) = rx.recv().await.ok_or(ClientError::Disconnected)?;
            outcomes.insert(k, o);
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let o = outcomes.get(k).cloned().expect("every key reported");
            out.push(self.resolve(k, o).await?);
        }
        Ok(out)
    }

    /// Current state of each key (`None` for keys the scheduler does not
    /// know).
    pub async fn status(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<TaskState>)>, ClientError> {
        match self.request(|id| ToScheduler::Status { id, keys }).await? {
            FromScheduler::Status { states, .. } => Ok(states),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Stops holding `keys` for this client.
    pub fn release(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.send(ToScheduler::Release { keys })
    }

    /// Asks the scheduler (and its workers) to stop, and waits until it
    /// has closed the connection.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.send(ToScheduler::Shutdown)?;
        // An unanswerable request resolves when the connection closes.
        let rx = self.send_request(|id| ToScheduler::Status { id, keys: vec![] })?;
        let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        Ok(())
    }
}

impl Inner {
    fn dispatch(&self, msg: FromScheduler) {
        let id = match &msg {
            FromScheduler::Done { key, outcome } => {
                let senders = self
                    .watchers
                    .lock()
                    .expect("watchers lock")
                    .as_mut()
                    .and_then(|w| w.remove(key));
                for tx in senders.into_iter().flatten() {
                    let _ = tx.send((key.clone(), outcome.clone()));
                }
                return;
            }
            FromScheduler::MissingModules { id, .. }
            | FromScheduler::Submitted { id, .. }
            | FromScheduler::Status { id, .. }
            | FromScheduler::Failed { id, .. } => *id,
            other => {
                tracing::warn!("unexpected message for a client: {other:?}");
                return;
            }
        };
        let tx = self
            .replies
            .lock()
            .expect("replies lock")
            .as_mut()
            .and_then(|r| r.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
}

/// Checks a call against the export's signature: the export exists, the
/// number of arguments matches, and every literal argument fits its type.
pub fn check_call(module: &LocalModule, function: &str, args: &[Arg]) -> Result<(), String> {
    let sig = module.compiled.func(function, &module.name)?;
    if args.len() != sig.params.len() {
        return Err(arity_message(&sig.to_wit(), sig.params.len(), args.len()));
    }
    for (arg, (name, ty)) in args.iter().zip(&sig.params) {
        if let Arg::Value(bytes) = arg {
            let v =
                value::decode(bytes).map_err(|e| format!("{function}: parameter {name}: {e}"))?;
            value::value_to_val(&v, ty)
                .map_err(|e| format!("{function}: parameter {name}: {e}"))?;
        }
    }
    Ok(())
}

/// The message for a call with the wrong number of arguments.
pub fn arity_message(signature: &str, expected: usize, given: usize) -> String {
    format!(
        "{signature} takes {expected} argument{}, {given} {} given",
        if expected == 1 { "" } else { "s" },
        if given == 1 { "was" } else { "were" }
    )
}
