//! Coordination primitives from the Rust client: queues, variables, locks,
//! semaphores, events and pub/sub, held by the scheduler under global names.
//!
//! ```no_run
//! # async fn demo(client: dtask_runtime::client::Client) -> Result<(), dtask_runtime::client::ClientError> {
//! use dtask_runtime::value::Value;
//! let jobs = client.queue("jobs").with_maxsize(100);
//! jobs.put_value(&Value::from(42), None).await?;
//! let lock = client.lock("counter");
//! lock.acquire(None).await?;
//! lock.release().await?;
//! # Ok(()) }
//! ```
//!
//! Leases taken here belong to the client: an unnamed client's end when it
//! disconnects; a named client's (the CLI's `DTASK_CLIENT`) last until
//! released, so `dtask lock acquire` and `dtask lock release` can be two
//! commands.

use super::{Client, ClientError, Future};
use crate::protocol::{Arg, FromScheduler, Op, OpReply, ToScheduler};
use crate::value::{self, Value};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a queue or variable holds: a plain value or a future.
#[derive(Debug)]
pub enum Item {
    /// A plain value.
    Value(Value),
    /// A future; this client holds its key while the handle lives.
    Future(Future),
}

/// A timeout as the wire carries it.
fn millis(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64)
}

impl Client {
    /// Runs one primitive operation, on behalf of the running task `task`
    /// (whose leases then end with it) or of this client. The low-level
    /// call under the typed handles; workers use it for their guests.
    pub async fn primitive(&self, task: Option<&str>, op: Op) -> Result<OpReply, ClientError> {
        let task = task.map(str::to_string);
        let mut sent = 0;
        // Kept to ask again after a reconnect (see `repeatable`).
        let rx = self.send_request(|id| {
            sent = id;
            ToScheduler::Primitive {
                id,
                session: self.inner.session,
                task,
                op,
            }
        })?;
        // Answered, failed or abandoned: never sent again.
        struct Settled<'a>(&'a Client, u64);
        impl Drop for Settled<'_> {
            fn drop(&mut self) {
                let resend = &self.0.inner.resend;
                resend.lock().expect("resend lock").remove(&self.1);
            }
        }
        let _settled = Settled(self, sent);
        match rx.await.map_err(|_| self.lost_error())? {
            FromScheduler::Primitive { reply, .. } => Ok(reply),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Runs `op` for this client, turning timeouts and refusals into errors.
    async fn expect(&self, op: Op, timeout: Option<Duration>) -> Result<OpReply, ClientError> {
        match self.primitive(None, op).await? {
            OpReply::Timeout => Err(ClientError::Timeout(timeout.unwrap_or_default())),
            OpReply::Failed(why) => Err(ClientError::Invalid(why)),
            other => Ok(other),
        }
    }

    /// Turns a received item into a value or a held future.
    pub fn item(&self, arg: Arg) -> Result<Item, ClientError> {
        match arg {
            Arg::Value(bytes) => value::decode(&bytes)
                .map(Item::Value)
                .map_err(|e| ClientError::Invalid(format!("a stored value does not decode: {e}"))),
            // The scheduler made this client a holder when it handed it over.
            Arg::Future(key) => Ok(Item::Future(self.future(key))),
        }
    }

    /// The global queue `name` (unbounded unless [`Queue::with_maxsize`]).
    pub fn queue(&self, name: &str) -> Queue {
        Queue {
            client: self.clone(),
            name: name.to_string(),
            maxsize: None,
        }
    }

    /// The global variable `name`.
    pub fn variable(&self, name: &str) -> Variable {
        Variable {
            client: self.clone(),
            name: name.to_string(),
        }
    }

    /// The global lock `name`.
    pub fn lock(&self, name: &str) -> Lock {
        Lock {
            client: self.clone(),
            name: name.to_string(),
        }
    }

    /// The global semaphore `name` with `max_leases` leases (0: however
    /// many the existing semaphore has; acquiring fails if there is none).
    pub fn semaphore(&self, name: &str, max_leases: u32) -> Semaphore {
        Semaphore {
            client: self.clone(),
            name: name.to_string(),
            max_leases,
        }
    }

    /// The global event `name`.
    pub fn event(&self, name: &str) -> Event {
        Event {
            client: self.clone(),
            name: name.to_string(),
        }
    }

    /// Publishes `message` to the current subscribers of `topic`. Messages
    /// from one client arrive in the order published.
    pub fn publish(&self, topic: &str, message: &Value) -> Result<(), ClientError> {
        self.publish_bytes(topic, value::encode(message).into())
    }

    /// [`Client::publish`] of an already encoded value. A message bigger
    /// than the scheduler takes (`--max-value-size`) is refused here, as
    /// the scheduler would drop it without a word.
    pub fn publish_bytes(&self, topic: &str, message: Bytes) -> Result<(), ClientError> {
        crate::protocol::check_name("topic", topic).map_err(ClientError::Invalid)?;
        let max = self.inner.max_value.load(Ordering::Relaxed);
        if message.len() as u64 > max {
            return Err(ClientError::Invalid(format!(
                "the message to publish on {topic:?} is {} bytes, more than the scheduler's \
                 --max-value-size of {max} bytes: publish something smaller (a key of \
                 scattered data, say), or raise the limit",
                message.len()
            )));
        }
        self.send(ToScheduler::Publish {
            topic: topic.to_string(),
            message,
        })
    }

    /// Subscribes to `topic`: every message published after this returns
    /// arrives, in order per publisher.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let op = Op::Subscribe {
            topic: topic.to_string(),
        };
        let task = None;
        // Registered before the request goes out: messages may follow the
        // answer at once.
        let mut sub_id = 0;
        let reply = self.send_request(|id| {
            sub_id = id;
            self.inner
                .subscriptions
                .lock()
                .expect("subscriptions lock")
                .insert(id, (topic.to_string(), tx));
            // Not asked again as requests are (it is subscribed again on a
            // new connection, with the others): no session.
            ToScheduler::Primitive {
                id,
                session: 0,
                task,
                op,
            }
        })?;
        let sub = Subscription {
            client: self.clone(),
            id: sub_id,
            topic: topic.to_string(),
            rx,
        };
        match reply.await.map_err(|_| self.lost_error())? {
            FromScheduler::Primitive {
                reply: OpReply::Done,
                ..
            } => Ok(sub),
            other => Err(ClientError::Invalid(format!("cannot subscribe: {other:?}"))),
        }
    }
}

/// A global first-in first-out queue.
#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    name: String,
    maxsize: Option<u64>,
}

impl Queue {
    /// Bounds the queue to `maxsize` items (0: unbounded) when this handle
    /// creates it; using another bound on an existing queue is an error.
    pub fn with_maxsize(mut self, maxsize: u64) -> Self {
        self.maxsize = Some(maxsize);
        self
    }

    /// Appends `item` (a value, or a future's [`Future::arg`]), waiting at
    /// most `timeout` while the queue is full.
    pub async fn put(&self, item: Arg, timeout: Option<Duration>) -> Result<(), ClientError> {
        let op = Op::QueuePut {
            name: self.name.clone(),
            item,
            maxsize: self.maxsize,
            timeout_ms: millis(timeout),
        };
        self.client.expect(op, timeout).await.map(drop)
    }

    /// Appends a plain value.
    pub async fn put_value(
        &self,
        value: &Value,
        timeout: Option<Duration>,
    ) -> Result<(), ClientError> {
        self.put(Arg::Value(value::encode(value).into()), timeout)
            .await
    }

    /// Takes the oldest item, waiting at most `timeout` while the queue is
    /// empty.
    pub async fn get(&self, timeout: Option<Duration>) -> Result<Item, ClientError> {
        let op = Op::QueueGet {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        match self.client.expect(op, timeout).await? {
            OpReply::Item(arg) => self.client.item(arg),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// How many items the queue holds.
    pub async fn len(&self) -> Result<u64, ClientError> {
        let op = Op::QueueLen {
            name: self.name.clone(),
        };
        match self.client.expect(op, None).await? {
            OpReply::Len(n) => Ok(n),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Whether the queue holds no items.
    pub async fn is_empty(&self) -> Result<bool, ClientError> {
        Ok(self.len().await? == 0)
    }
}

/// A global variable holding one item.
#[derive(Clone, Debug)]
pub struct Variable {
    client: Client,
    name: String,
}

impl Variable {
    /// Sets it to `item` (a value, or a future's [`Future::arg`]).
    pub async fn set(&self, item: Arg) -> Result<(), ClientError> {
        let op = Op::VarSet {
            name: self.name.clone(),
            item,
        };
        self.client.expect(op, None).await.map(drop)
    }

    /// Sets it to a plain value.
    pub async fn set_value(&self, value: &Value) -> Result<(), ClientError> {
        self.set(Arg::Value(value::encode(value).into())).await
    }

    /// Its item, waiting at most `timeout` until it is set.
    pub async fn get(&self, timeout: Option<Duration>) -> Result<Item, ClientError> {
        let op = Op::VarGet {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        match self.client.expect(op, timeout).await? {
            OpReply::Item(arg) => self.client.item(arg),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Deletes it.
    pub async fn delete(&self) -> Result<(), ClientError> {
        let op = Op::VarDel {
            name: self.name.clone(),
        };
        self.client.expect(op, None).await.map(drop)
    }
}

/// A global mutual-exclusion lock.
#[derive(Clone, Debug)]
pub struct Lock {
    client: Client,
    name: String,
}

impl Lock {
    /// Takes the lock, waiting at most `timeout` while another holds it.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let op = Op::LockAcquire {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        self.client.expect(op, timeout).await.map(drop)
    }

    /// Gives the lock back; an error if this client does not hold it.
    pub async fn release(&self) -> Result<(), ClientError> {
        let op = Op::LockRelease {
            name: self.name.clone(),
        };
        self.client.expect(op, None).await.map(drop)
    }
}

/// A global counting semaphore.
#[derive(Clone, Debug)]
pub struct Semaphore {
    client: Client,
    name: String,
    max_leases: u32,
}

impl Semaphore {
    /// Takes one lease, waiting at most `timeout` while all are taken.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let op = Op::SemAcquire {
            name: self.name.clone(),
            max_leases: self.max_leases,
            timeout_ms: millis(timeout),
        };
        self.client.expect(op, timeout).await.map(drop)
    }

    /// Gives one lease back; an error if this client holds none.
    pub async fn release(&self) -> Result<(), ClientError> {
        let op = Op::SemRelease {
            name: self.name.clone(),
        };
        self.client.expect(op, None).await.map(drop)
    }
}

/// A global event: a flag to wait on.
#[derive(Clone, Debug)]
pub struct Event {
    client: Client,
    name: String,
}

impl Event {
    /// Sets it, waking every waiter.
    pub async fn set(&self) -> Result<(), ClientError> {
        let name = self.name.clone();
        self.client
            .expect(Op::EventSet { name }, None)
            .await
            .map(drop)
    }

    /// Clears it.
    pub async fn clear(&self) -> Result<(), ClientError> {
        let name = self.name.clone();
        self.client
            .expect(Op::EventClear { name }, None)
            .await
            .map(drop)
    }

    /// Waits at most `timeout` until it is set.
    pub async fn wait(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let op = Op::EventWait {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        self.client.expect(op, timeout).await.map(drop)
    }

    /// Whether it is set.
    pub async fn is_set(&self) -> Result<bool, ClientError> {
        let name = self.name.clone();
        match self.client.expect(Op::EventIsSet { name }, None).await? {
            OpReply::Flag(set) => Ok(set),
            other => Err(ClientError::Invalid(format!("unexpected answer {other:?}"))),
        }
    }
}

/// A subscription to a topic; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    id: u64,
    topic: String,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message's bytes, waiting at most `timeout`.
    pub async fn next_bytes(&mut self, timeout: Option<Duration>) -> Result<Bytes, ClientError> {
        let next = self.rx.recv();
        let got = match timeout {
            None => next.await,
            Some(t) => tokio::time::timeout(t, next)
                .await
                .map_err(|_| ClientError::Timeout(t))?,
        };
        got.ok_or_else(|| self.client.lost_error())
    }

    /// The next message, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Option<Duration>) -> Result<Value, ClientError> {
        let bytes = self.next_bytes(timeout).await?;
        value::decode(&bytes).map_err(|e| {
            ClientError::Invalid(format!(
                "a message on topic {} does not decode: {e}",
                self.topic
            ))
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.client
            .inner
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .remove(&self.id);
        let op = Op::Unsubscribe {
            subscription: self.id,
        };
        // Nobody waits for the answer; it is dropped on arrival.
        let _ = self.client.send_request(|id| ToScheduler::Primitive {
            id,
            session: 0,
            task: None,
            op,
        });
    }
}
