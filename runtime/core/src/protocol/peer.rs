//! A worker's data port: logs and values fetched directly from the worker that holds them.

use super::*;

/// Requests on a worker's data port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToPeer {
    /// What a task wrote to stdout and stderr, if this worker ran it and
    /// still keeps it; answered by [`FromPeer::Logs`].
    Logs {
        /// Request id.
        id: u64,
        /// The task.
        key: String,
    },
    /// Send these results, whole. A worker answers for at most 1,024 keys
    /// and 16 MiB of values per request (a bigger value reads as not held;
    /// ask for it by [`ToPeer::Read`] ranges instead).
    Fetch {
        /// Request id.
        id: u64,
        /// Keys.
        keys: Vec<String>,
    },
    /// Call a method of an actor this worker holds; answered by
    /// [`FromPeer::Called`]. Calls on one actor run in arrival order.
    Call {
        /// Request id.
        id: u64,
        /// The actor's key.
        actor: String,
        /// The method's name.
        method: String,
        /// Its arguments.
        args: Vec<CallArg>,
    },
    /// A range of a scattered value sent straight to this worker, after the
    /// scheduler placed it here ([`ToScheduler::Place`]). Ranges of one
    /// value come in order on one connection; once `total` bytes are in,
    /// the worker checks that they hash to `key`, keeps the value and
    /// reports it to the scheduler. Answered by [`FromPeer::Put`] for each
    /// range.
    Put {
        /// Request id.
        id: u64,
        /// The value's key (`data-…`, a hash of its bytes).
        key: String,
        /// The encoded value's whole length.
        total: u64,
        /// Where this range starts.
        offset: u64,
        /// The range (at most [`MAX_RANGE`] bytes).
        #[serde(with = "crate::blob")]
        bytes: Bytes,
    },
    /// Send up to `len` bytes of one encoded result from `offset`;
    /// answered by [`FromPeer::Range`]. Big values move as a few of these
    /// in flight, so neither side holds more than a few ranges of it in
    /// buffers, a reader can write each range out as it comes, and a
    /// spilled value is read from disk one range at a time.
    Read {
        /// Request id.
        id: u64,
        /// The result.
        key: String,
        /// Where the range starts in its encoded bytes.
        offset: u64,
        /// Most bytes wanted (a worker sends at most [`MAX_RANGE`]).
        len: u64,
    },
}

/// Most bytes a worker sends in one [`FromPeer::Range`].
pub const MAX_RANGE: u64 = 16 << 20;

/// What one task run wrote, kept on its worker for `dtask logs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskLog {
    /// What it wrote to stdout (components; a command's stdout is its
    /// result), its last 64 KiB.
    pub stdout: String,
    /// What it wrote to stderr, its last 64 KiB.
    pub stderr: String,
}

/// Answers on a worker's data port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromPeer {
    /// Results of a [`ToPeer::Fetch`]; `None` for keys this worker lacks.
    Data {
        /// Request id.
        id: u64,
        /// (key, encoded value).
        #[serde(with = "crate::blob::opt_pairs")]
        values: Vec<(String, Option<Bytes>)>,
    },
    /// Answer to [`ToPeer::Call`]: the encoded result, or the error.
    Called {
        /// Request id.
        id: u64,
        /// The result.
        result: Result<Bytes, TaskError>,
    },
    /// Answer to [`ToPeer::Logs`]: `None` when this worker keeps no
    /// output of that task.
    Logs {
        /// Request id.
        id: u64,
        /// The output.
        log: Option<TaskLog>,
    },
    /// Answer to [`ToPeer::Put`]: the range was taken (and, for the last
    /// one, the value kept), or why not; after an error the rest of that
    /// value is refused.
    Put {
        /// Request id.
        id: u64,
        /// Why the range or value was refused.
        error: Option<String>,
    },
    /// Answer to [`ToPeer::Read`]: the encoded result's whole length and
    /// the bytes asked for (fewer at its end), or `None` when this worker
    /// does not hold it.
    Range {
        /// Request id.
        id: u64,
        /// The encoded result's length.
        total: Option<u64>,
        /// The range.
        #[serde(with = "crate::blob")]
        bytes: Bytes,
    },
}
