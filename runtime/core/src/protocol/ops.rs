//! Actors, and operations on the coordination primitives (queues, variables, locks, semaphores, events, pub/sub).

use super::*;

/// An actor to construct: an instance of a resource a component exports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActorSpec {
    /// The actor's key.
    pub key: String,
    /// The module exporting the resource.
    pub module: ModuleHash,
    /// The resource's name.
    pub resource: String,
    /// Constructor arguments, MessagePack values.
    #[serde(with = "crate::blob::list")]
    pub args: Vec<Bytes>,
    /// Memory limit of this actor's instance, in bytes (at most the
    /// worker's).
    pub memory_limit: Option<u64>,
    /// How long one method call may run, in ms (within the worker's
    /// `--timeout`, if it has one): a call past it traps, and the actor
    /// takes no more calls. None: no limit but the worker's.
    pub call_timeout_ms: Option<u64>,
}

/// Where an actor lives and how it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActorInfo {
    /// The actor's key.
    pub key: String,
    /// Its resource's name.
    pub resource: String,
    /// Its module.
    pub module: ModuleHash,
    /// Data address of the worker holding it (where calls go).
    pub address: String,
    /// Whether it is up.
    pub state: ActorState,
}

/// The life of an actor.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ActorState {
    /// Its constructor is running.
    Starting,
    /// Taking calls.
    Ready,
    /// Its worker died; every call fails.
    Lost,
    /// A call trapped; its instance takes no more calls.
    Broken,
}

impl ActorState {
    /// Lower-case name, as `dtask actor list` prints it.
    pub fn name(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Ready => "ready",
            ActorState::Lost => "lost",
            ActorState::Broken => "broken",
        }
    }
}

/// An argument of an actor method call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CallArg {
    /// A MessagePack value.
    Value(#[serde(with = "crate::blob")] Bytes),
    /// A word from the command line, read by the parameter's WIT type on
    /// the worker (which knows the method's types), like task arguments.
    Word(String),
    /// The caller's stdin (`-`), read by the parameter's WIT type on the
    /// worker as the command line reads it: bytes for `list<u8>`, text
    /// for `string`, JSON otherwise.
    Stdin(#[serde(with = "crate::blob")] Bytes),
}

/// An operation on a coordination primitive. Names are global; a primitive
/// springs into existence on first use. Every operation that can wait takes
/// `timeout_ms` (`None`: for ever; `Some(0)`: do not wait at all).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Op {
    /// Appends an item, waiting while the queue is full.
    QueuePut {
        /// Queue name.
        name: String,
        /// A value or a future (which stays alive while queued).
        item: Arg,
        /// Bound on the queue's length (0: none), when this creates it.
        maxsize: Option<u64>,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Takes the oldest item, waiting while the queue is empty.
    QueueGet {
        /// Queue name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// How many items the queue holds.
    QueueLen {
        /// Queue name.
        name: String,
    },
    /// Sets a variable.
    VarSet {
        /// Variable name.
        name: String,
        /// A value or a future (which stays alive while stored).
        item: Arg,
    },
    /// A variable's item, waiting until it is set.
    VarGet {
        /// Variable name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Deletes a variable.
    VarDel {
        /// Variable name.
        name: String,
    },
    /// Takes a lock, waiting while another holds it.
    LockAcquire {
        /// Lock name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Gives a lock back.
    LockRelease {
        /// Lock name.
        name: String,
    },
    /// Takes one lease of a semaphore, waiting while all are taken.
    SemAcquire {
        /// Semaphore name.
        name: String,
        /// Its number of leases, when this creates it.
        max_leases: u32,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Gives one lease back.
    SemRelease {
        /// Semaphore name.
        name: String,
    },
    /// Sets an event, waking its waiters.
    EventSet {
        /// Event name.
        name: String,
    },
    /// Clears an event.
    EventClear {
        /// Event name.
        name: String,
    },
    /// Waits until an event is set.
    EventWait {
        /// Event name.
        name: String,
        /// Longest wait.
        timeout_ms: Option<u64>,
    },
    /// Whether an event is set.
    EventIsSet {
        /// Event name.
        name: String,
    },
    /// Starts receiving a topic's messages as [`FromScheduler::Message`]s
    /// tagged with this request's id; answered once subscribed.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Stops a subscription (by the id of its subscribe request).
    Unsubscribe {
        /// The subscription.
        subscription: u64,
    },
}

/// The answer to an [`Op`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum OpReply {
    /// Done (put, set, acquired, released, subscribed…).
    Done,
    /// The item got.
    Item(Arg),
    /// A queue's length.
    Len(u64),
    /// Whether an event is set.
    Flag(bool),
    /// The timeout passed first; nothing changed.
    Timeout,
    /// Refused, with a sentence for the user.
    Failed(String),
}

/// The longest name a queue, variable, lock, semaphore, event or topic
/// may have, in bytes.
pub const MAX_NAME: usize = 1024;

/// Whether `name` may name a primitive of `kind` ("queue", "topic"…): not
/// empty, at most [`MAX_NAME`] bytes; else why not, for the user.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {kind} name cannot be empty: give it one"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "a {kind} name may be at most {MAX_NAME} bytes, and this one is {}: choose a \
             shorter one",
            name.len()
        ));
    }
    Ok(())
}

impl Op {
    /// The primitive it names, and what kind of one (none for an
    /// unsubscribe, which names a subscription).
    pub fn named(&self) -> Option<(&'static str, &str)> {
        Some(match self {
            Op::QueuePut { name, .. } | Op::QueueGet { name, .. } | Op::QueueLen { name } => {
                ("queue", name)
            }
            Op::VarSet { name, .. } | Op::VarGet { name, .. } | Op::VarDel { name } => {
                ("variable", name)
            }
            Op::LockAcquire { name, .. } | Op::LockRelease { name } => ("lock", name),
            Op::SemAcquire { name, .. } | Op::SemRelease { name } => ("semaphore", name),
            Op::EventSet { name }
            | Op::EventClear { name }
            | Op::EventWait { name, .. }
            | Op::EventIsSet { name } => ("event", name),
            Op::Subscribe { topic } => ("topic", topic),
            Op::Unsubscribe { .. } => return None,
        })
    }

    /// The longest wait of an operation that can wait (`None` for one
    /// that cannot): a client asking again after a reconnect sets it to
    /// what is left, so a wait never lasts longer than first asked.
    pub fn wait_ms_mut(&mut self) -> Option<&mut Option<u64>> {
        match self {
            Op::QueuePut { timeout_ms, .. }
            | Op::QueueGet { timeout_ms, .. }
            | Op::VarGet { timeout_ms, .. }
            | Op::LockAcquire { timeout_ms, .. }
            | Op::SemAcquire { timeout_ms, .. }
            | Op::EventWait { timeout_ms, .. } => Some(timeout_ms),
            _ => None,
        }
    }
}
