//! Tasks as the wire carries them: specs, arguments, placement, errors and states.

use super::*;

/// An argument of a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Arg {
    /// A MessagePack-encoded value.
    Value(#[serde(with = "crate::blob")] Bytes),
    /// The result of another task, once it has finished.
    Future(String),
}

impl Arg {
    /// Bytes it carries: a value's encoding, or a future's key.
    pub fn size(&self) -> usize {
        match self {
            Arg::Value(b) => b.len(),
            Arg::Future(k) => k.len(),
        }
    }
}

/// Everything the scheduler needs to run a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    /// The name of the task's future.
    pub key: String,
    /// The module whose export runs.
    pub module: ModuleHash,
    /// The export to call.
    pub function: String,
    /// Arguments, in parameter order.
    pub args: Vec<Arg>,
    /// Larger runs earlier; ties run in submission order.
    pub priority: i32,
    /// Wall-clock limit for one run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one run, in bytes (at most the worker's).
    pub memory_limit: Option<u64>,
    /// Access beyond the sandbox it is granted.
    pub grants: Grants,
    /// Where and with what it may run.
    pub placement: Placement,
    /// Runs again up to this many times after it errs (not after a worker
    /// dies).
    pub retries: u32,
}

/// Access a task is granted beyond its sandbox, which otherwise has no
/// filesystem, network or environment. Its `Debug` shows the variables'
/// names, not their values (often secrets).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Grants {
    /// Environment variables it sees.
    pub env: Vec<(String, String)>,
    /// Host directories it may read (at the same path), each within one a
    /// worker allows (`dtask worker --allow-dir`).
    pub dirs: Vec<String>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(n, _)| format!("{n}=…")).collect();
        f.debug_struct("Grants")
            .field("env", &env)
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.dirs.is_empty()
    }
}

/// Constraints on where a task runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Placement {
    /// Only on these workers (by name, data address or id); empty: any.
    pub workers: Vec<String>,
    /// With `workers`: prefer them, but run elsewhere when none of them
    /// can take it.
    pub allow_other_workers: bool,
    /// Abstract resources one run holds, e.g. `("GPU", 1.0)`; only workers
    /// declaring enough of each can run it.
    pub resources: Vec<(String, f64)>,
}

/// How a task failed: the error every dependent inherits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskError {
    /// Broad class of the failure.
    pub kind: ErrorKind,
    /// One line for `dtask: error: …`.
    pub message: String,
    /// What the guest wrote to stderr before failing, if anything.
    pub stderr: String,
    /// The wasm backtrace, one frame per line, if there is one.
    pub backtrace: String,
    /// The key of the task where the error first happened.
    pub origin: String,
}

impl TaskError {
    /// An error of `kind` with `message`, raised by `origin` itself (no
    /// guest stderr or backtrace).
    pub fn new(kind: ErrorKind, message: String, origin: &str) -> Self {
        Self {
            kind,
            message,
            stderr: String::new(),
            backtrace: String::new(),
            origin: origin.to_string(),
        }
    }
}

/// Broad classes of task failure.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    /// The guest panicked (it wrote a panic message, then trapped).
    Panic,
    /// The guest trapped (unreachable, out-of-bounds access, …).
    Trap,
    /// The task ran past its time limit or was interrupted.
    Timeout,
    /// Arguments did not fit the export's parameters.
    Input,
    /// The module or export could not be loaded.
    Module,
    /// The result could not be computed again after the data was lost.
    Lost,
    /// Anything else the worker could not do.
    Internal,
    /// A WASI command exited with a non-zero status (in the message).
    Exit,
    /// The task tried to grow its memory past its limit.
    Memory,
    /// The task overflowed its stack (unbounded recursion).
    Stack,
    /// The actor called is gone (its worker died, or it was deleted).
    ActorLost,
    /// The task was running on every worker it was given to when that
    /// worker died, three times over: it is taken to kill its workers, and
    /// not given to another (Dask's `KilledWorker`).
    KilledWorker,
}

impl ErrorKind {
    /// Lower-case name, as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Panic => "panic",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Input => "input",
            ErrorKind::Module => "module",
            ErrorKind::Lost => "lost",
            ErrorKind::Internal => "internal",
            ErrorKind::Exit => "exit",
            ErrorKind::Memory => "memory",
            ErrorKind::Stack => "stack",
            ErrorKind::ActorLost => "actor lost",
            ErrorKind::KilledWorker => "killed worker",
        }
    }
}

/// The state of a future, as `dtask status` prints it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for dependencies or an execution slot.
    Pending,
    /// Ready, but no connected worker can ever run it (its `--workers`,
    /// `--resources` or memory limit rule them all out); it runs as soon
    /// as a worker that can joins.
    NoWorker,
    /// Running (or queued) on a worker.
    Processing,
    /// Done; the result is held somewhere.
    Finished,
    /// Failed; see its [`TaskError`].
    Error,
    /// Cancelled before it finished.
    Cancelled,
    /// Its result was lost and cannot be recomputed.
    Lost,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::NoWorker,
        TaskState::Processing,
        TaskState::Finished,
        TaskState::Error,
        TaskState::Cancelled,
        TaskState::Lost,
    ];

    /// The state [`TaskState::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Lower-case name, as `dtask status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::NoWorker => "no-worker",
            TaskState::Processing => "processing",
            TaskState::Finished => "finished",
            TaskState::Error => "error",
            TaskState::Cancelled => "cancelled",
            TaskState::Lost => "lost",
        }
    }
}

/// Where a finished result can be had.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Located {
    /// The value itself when it is small ([`INLINE_RESULT_LIMIT`]).
    pub inline: Option<Bytes>,
    /// Data addresses of the workers holding it.
    pub who_has: Vec<String>,
    /// Size of the encoded value.
    pub nbytes: u64,
}

/// How a watched key ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Outcome {
    /// Finished; its result is here or there.
    Finished(Located),
    /// Failed.
    Error(TaskError),
    /// Cancelled.
    Cancelled,
    /// The scheduler does not know the key (never submitted, or released).
    Unknown,
}

impl Outcome {
    /// Whether the scheduler holds this outcome's result for a watch that
    /// reads it until it is read (`ToScheduler::Watch`'s `reads`): a
    /// finished one that does not come inline, to be fetched from workers.
    pub fn held_for_readers(&self) -> bool {
        matches!(self, Outcome::Finished(at) if at.inline.is_none())
    }
}
