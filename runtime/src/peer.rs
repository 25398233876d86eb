//! Worker data ports: how results move between workers, and from a worker
//! to a client, without passing through the scheduler; and how actor
//! method calls reach the worker holding the actor.

use crate::connection::{self, DEFAULT_MAX_FRAME, Sender};
use crate::protocol::{
    CallArg, ErrorKind, FromPeer, Hello, Located, MAX_RANGE, PROTOCOL_VERSION, Role, TaskError,
    ToPeer, ToScheduler,
};
use crate::value::Encoded;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Results a worker holds, by key.
pub type Store = Arc<crate::worker::store::ResultStore>;

/// One method call for an actor, queued in arrival order.
pub struct ActorCall {
    /// The caller's request id.
    pub id: u64,
    /// The method.
    pub method: String,
    /// Its arguments.
    pub args: Vec<CallArg>,
    /// Where the answer goes.
    pub reply: Sender<FromPeer>,
}

/// The actors a worker holds: each one's making (as the scheduler numbered
/// it) and queue of calls, by key.
pub type Actors = Arc<Mutex<HashMap<String, (u64, mpsc::Sender<ActorCall>)>>>;

/// Most calls that wait in one actor's queue. Past them the data
/// connection bringing more waits too (it reads nothing more until the
/// actor takes one), so a caller that outruns an actor is slowed down by
/// its socket rather than growing the worker's memory.
pub const ACTOR_QUEUE: usize = 256;

/// Who a worker's data port lets in: peers presenting the worker token,
/// and clients whose token has the digest the scheduler gave this worker.
#[derive(Clone, Debug)]
pub struct Admits {
    /// The worker token.
    pub worker: crate::secret::Secret,
    /// The digest of the client token, if the scheduler gave one.
    pub client_digest: Option<[u8; 32]>,
}

impl Admits {
    fn check(&self, presented: &str) -> Result<(), String> {
        // Clients present a proof (a digest of their token), never the
        // token itself.
        let client = match (self.client_digest, crate::secret::proof_digest(presented)) {
            (Some(d), Some(p)) => crate::secret::digests_match(&d, &p),
            _ => false,
        };
        if self.worker.matches(presented) || client {
            Ok(())
        } else {
            Err(crate::secret::wrong_token())
        }
    }
}

/// Serves `Fetch` requests for the results in `store`, method calls for
/// the `actors`, and scattered values sent here (kept in `store` and
/// reported to the scheduler through `reports`), until the task is
/// dropped.
pub async fn serve(
    listener: connection::Listener,
    admits: Admits,
    store: Store,
    actors: Actors,
    logs: Arc<crate::worker::logs::Logs>,
    reports: mpsc::UnboundedSender<ToScheduler>,
) {
    let gate = connection::Gate::new("data port");
    loop {
        let room = gate.room().await;
        let Ok((stream, peer_ip, peer)) = listener.accept().await else {
            continue;
        };
        let admits = admits.clone();
        let store = store.clone();
        let actors = actors.clone();
        let logs = logs.clone();
        let reports = reports.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let Some(permit) = gate.admit(room, peer_ip).await else {
                return;
            };
            let admitted =
                connection::accept::<ToPeer, FromPeer>(stream, DEFAULT_MAX_FRAME, |h: &Hello| {
                    match h.role {
                        Role::Peer => admits.check(&h.token).map(|()| connection::Admission {
                            id: 0,
                            client_digest: None,
                            max_value: None,
                        }),
                        _ => Err(
                            "this is a worker's data port; connect to the scheduler instead".into(),
                        ),
                    }
                })
                .await;
            drop(permit);
            let (_, _, tx, mut rx) = match admitted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("refused data connection from {peer}: {e}");
                    return;
                }
            };
            // A peer that asks and does not read is cut off, rather than
            // have its answers pile up here.
            tx.set_limit(DATA_PORT_BACKLOG);
            let mut uploads = Uploads::new(store.clone(), reports);
            let mut reading = Reading::new(store.clone());
            while let Ok(Some(request)) = rx.recv().await {
                let sent = match request {
                    ToPeer::Put {
                        id,
                        key,
                        total,
                        offset,
                        bytes,
                    } => {
                        let error = uploads.put(key, total, offset, bytes).await.err();
                        tx.send(FromPeer::Put { id, error })
                    }
                    ToPeer::Logs { id, key } => tx.send(FromPeer::Logs {
                        id,
                        log: logs.get(&key).map(|l| (*l).clone()),
                    }),
                    ToPeer::Fetch { id, keys } => {
                        let values = fetch_within(&store, keys, &peer).await;
                        tx.send(FromPeer::Data { id, values })
                    }
                    ToPeer::Read {
                        id,
                        key,
                        offset,
                        len,
                    } => {
                        let len = len.min(MAX_RANGE);
                        let (total, bytes) = match reading.read(key, offset, len).await {
                            Some((total, bytes)) => (Some(total), bytes),
                            None => (None, Bytes::new()),
                        };
                        tx.send(FromPeer::Range { id, total, bytes })
                    }
                    ToPeer::Call {
                        id,
                        actor,
                        method,
                        args,
                    } => {
                        let queue = actors
                            .lock()
                            .expect("actor table lock")
                            .get(&actor)
                            .map(|(_, q)| q.clone());
                        let call = ActorCall {
                            id,
                            method,
                            args,
                            reply: tx.clone(),
                        };
                        // A full queue holds this connection's reading
                        // until the actor takes a call (see ACTOR_QUEUE).
                        let queued = match queue {
                            Some(q) => q.send(call).await.is_ok(),
                            None => false,
                        };
                        if queued {
                            Ok(())
                        } else {
                            tx.send(FromPeer::Called {
                                id,
                                result: Err(TaskError {
                                    kind: ErrorKind::ActorLost,
                                    message: format!(
                                        "actor lost: {actor} is not on this worker (deleted?)"
                                    ),
                                    stderr: String::new(),
                                    backtrace: String::new(),
                                    origin: actor,
                                }),
                            })
                        }
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
        });
    }
}

/// The results one data connection is reading range by range
/// ([`ToPeer::Read`]), held open ([`ResultStore::open`]) from its first
/// range until its last is read or the connection ends: a result its
/// holders release meanwhile is still read to its end, as the reader began
/// it.
///
/// [`ResultStore::open`]: crate::worker::store::ResultStore::open
struct Reading {
    store: Store,
    /// Oldest first, at most [`OPEN_READS`].
    open: std::collections::VecDeque<crate::worker::store::Opened>,
}

/// Most results one data connection holds open to read (dtask's readers
/// read one at a time on a connection); past it, the oldest is let go.
const OPEN_READS: usize = 8;

impl Reading {
    fn new(store: Store) -> Self {
        Self {
            store,
            open: Default::default(),
        }
    }

    /// Up to `len` bytes of `key` from `offset`, and its whole length;
    /// `None` if it is not held here (or cannot be read).
    async fn read(&mut self, key: String, offset: u64, len: u64) -> Option<(u64, Bytes)> {
        let i = match self.open.iter().position(|o| o.key() == key) {
            Some(i) => i,
            None => {
                let opened = self.store.open(&key).await?;
                if self.open.len() >= OPEN_READS {
                    self.open.pop_front();
                }
                self.open.push_back(opened);
                self.open.len() - 1
            }
        };
        let opened = &self.open[i];
        let total = opened.len();
        let bytes = self.store.read_opened(opened, offset, len).await;
        // Let go once read to its end (or unreadable).
        if bytes.is_none() || offset.saturating_add(len) >= total {
            self.open.remove(i);
        }
        Some((total, bytes?))
    }
}

/// Most values arriving at once on one data connection.
const MAX_OPEN_UPLOADS: usize = 16;

/// Most keys one [`ToPeer::Fetch`] may ask for.
const FETCH_KEYS: usize = 1024;

/// Most bytes of values one [`ToPeer::Fetch`] answers with, together (and
/// so each): bigger values move as [`ToPeer::Read`] ranges.
const FETCH_BYTES: u64 = MAX_RANGE;

/// Most bytes of answers waiting for a data connection's peer to read them.
const DATA_PORT_BACKLOG: usize = 8 * MAX_RANGE as usize;

/// The values of `keys` for a [`ToPeer::Fetch`], within [`FETCH_KEYS`] and
/// [`FETCH_BYTES`]: keys past the first [`FETCH_KEYS`] are left out of
/// the answer, and a value over what is left is answered as not held here
/// (a fetcher asking as dtask's do meets neither); both are logged.
async fn fetch_within(
    store: &Store,
    mut keys: Vec<String>,
    peer: &impl std::fmt::Display,
) -> Vec<(String, Option<Bytes>)> {
    let mut refused = keys.len().saturating_sub(FETCH_KEYS);
    keys.truncate(FETCH_KEYS);
    let mut left = FETCH_BYTES;
    let mut values = Vec::with_capacity(keys.len());
    for k in keys {
        let v = store.get_within(&k, left).await.unwrap_or_else(|_| {
            refused += 1;
            None
        });
        left -= v.as_ref().map_or(0, |b| b.len() as u64);
        values.push((k, v));
    }
    if refused > 0 {
        tracing::warn!(
            "{peer} fetched {refused} value(s) past the {FETCH_KEYS} keys or {} one fetch \
             answers with; left them out (big values move as ranges)",
            crate::value::human_bytes(FETCH_BYTES)
        );
    }
    values
}

/// Scattered values arriving on one data connection ([`ToPeer::Put`]),
/// each taken range by range into a buffer of its size while its key is
/// computed from the bytes. A value is kept, and reported to the
/// scheduler, only once all of it is in and it matches its key; one whose
/// sender stops midway is reported as not stored.
struct Uploads {
    store: Store,
    reports: mpsc::UnboundedSender<ToScheduler>,
    open: HashMap<String, Upload>,
}

struct Upload {
    into: Sink,
    received: u64,
    total: u64,
    key: crate::key::DataKey,
}

/// Where an arriving value goes: a buffer of its size, or, for one over
/// the worker's memory budget on its own, straight to a spill file, so
/// the worker never holds it in memory.
enum Sink {
    /// With its room in the budget, held until the value is kept.
    Memory(Vec<u8>, crate::worker::store::Reserved),
    /// `None` only while a range is being written.
    Disk(Option<crate::worker::store::SpillFile>),
}

impl Uploads {
    fn new(store: Store, reports: mpsc::UnboundedSender<ToScheduler>) -> Self {
        Self {
            store,
            reports,
            open: HashMap::new(),
        }
    }

    /// Takes one range of `key`; after an error the value is dropped (and
    /// reported not stored), and its later ranges are refused.
    async fn put(
        &mut self,
        key: String,
        total: u64,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), String> {
        let taken = self.take(&key, total, offset, &bytes).await;
        let done = match taken {
            Ok(done) => done,
            Err(why) => {
                self.open.remove(&key);
                // Only scattered data's uploads are the scheduler's to hear
                // of: a key of another kind (a task running here, say) is
                // refused to the sender alone, not failed for its owner.
                if !key.starts_with("data-") {
                    return Err(why);
                }
                return self.refuse(&key, ErrorKind::Input, why);
            }
        };
        if !done {
            return Ok(());
        }
        let upload = self.open.remove(&key).expect("an open upload");
        let made = upload.key.finish();
        if made != key {
            let why = format!(
                "the bytes sent as {key} are not that value (they hash to {made}); nothing was stored"
            );
            return self.refuse(&key, ErrorKind::Input, why);
        }
        let store = self.store.clone();
        let (at, kept) = match upload.into {
            Sink::Memory(buf, reserved) => {
                // Keeping it may spill others to disk: off the async threads.
                let value = Bytes::from(buf);
                let at = crate::worker::store::located(&value);
                let key = key.clone();
                let kept = tokio::task::spawn_blocking(move || {
                    let kept = store.insert(key, value);
                    drop(reserved);
                    kept
                })
                .await;
                (at, kept)
            }
            Sink::Disk(None) => {
                let why = format!("an earlier write of {key} failed; nothing was stored");
                return self.refuse(&key, ErrorKind::Memory, why);
            }
            Sink::Disk(Some(file)) => {
                let at = Located {
                    inline: None,
                    who_has: Vec::new(),
                    nbytes: upload.total,
                };
                store.adopt(&key, file);
                (at, Ok(Ok(())))
            }
        };
        match kept {
            Ok(Ok(())) => {
                let _ = self.reports.send(ToScheduler::Finished {
                    results: vec![(key, at)],
                });
                Ok(())
            }
            Ok(Err(why)) => self.refuse(&key, ErrorKind::Memory, why),
            Err(e) => {
                let why = format!("storing {key} failed: {e}");
                self.refuse(&key, ErrorKind::Memory, why)
            }
        }
    }

    /// Adds a range to its upload; true once the value is complete.
    async fn take(
        &mut self,
        key: &str,
        total: u64,
        offset: u64,
        bytes: &Bytes,
    ) -> Result<bool, String> {
        if bytes.len() as u64 > MAX_RANGE {
            return Err(format!(
                "a range of {} is over the most one may carry ({}); send smaller ranges",
                crate::value::human_bytes(bytes.len() as u64),
                crate::value::human_bytes(MAX_RANGE)
            ));
        }
        if !self.open.contains_key(key) {
            if !key.starts_with("data-") {
                return Err(format!(
                    "{key} is not scattered data; only `data-…` keys may be sent to a worker"
                ));
            }
            if offset != 0 {
                return Err(format!(
                    "the first range of {key} starts at {offset}, not 0"
                ));
            }
            if self.open.len() >= MAX_OPEN_UPLOADS {
                return Err(format!(
                    "{MAX_OPEN_UPLOADS} values are already arriving on this connection; \
                     finish one before starting {key}"
                ));
            }
            // Values arriving together hold at most the memory budget;
            // the rest are written to disk as they come.
            let into = match self.store.reserve(total) {
                Some(room) => Sink::Memory(crate::value::huge::buffer(total)?, room),
                None => Sink::Disk(Some(self.store.spill_file()?)),
            };
            let upload = Upload {
                into,
                received: 0,
                total,
                key: crate::key::DataKey::new(total),
            };
            self.open.insert(key.to_string(), upload);
        }
        let upload = self.open.get_mut(key).expect("open");
        let at = upload.received;
        if total != upload.total || offset != at || at + bytes.len() as u64 > total {
            return Err(format!(
                "a range of {} at offset {offset} of {total} bytes does not follow the {at} of {} bytes received for {key}",
                bytes.len(),
                upload.total
            ));
        }
        upload.key.update(bytes);
        match &mut upload.into {
            Sink::Memory(buf, _) => buf.extend_from_slice(bytes),
            Sink::Disk(slot) => {
                // Written off the async threads; on an error the file is
                // dropped there, and so removed.
                let mut file = slot
                    .take()
                    .ok_or_else(|| format!("an earlier write of {key} failed"))?;
                let (store, range) = (self.store.clone(), bytes.clone());
                let written =
                    tokio::task::spawn_blocking(move || file.write(&store, &range).map(|()| file))
                        .await
                        .map_err(|e| format!("writing {key} to disk failed: {e}"))??;
                *slot = Some(written);
            }
        }
        upload.received += bytes.len() as u64;
        Ok(upload.received == total)
    }

    /// Tells the scheduler `key` could not be stored here, and gives back
    /// why for the sender.
    fn refuse(&self, key: &str, kind: ErrorKind, why: String) -> Result<(), String> {
        let _ = self.reports.send(ToScheduler::Erred {
            // Data stored at a client's request comes in no `Run`: run 0.
            errors: vec![(key.to_string(), 0, TaskError::new(kind, why.clone(), key))],
        });
        Err(why)
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        for (key, upload) in std::mem::take(&mut self.open) {
            let why = format!(
                "the sender of {key} stopped after {} of its {} bytes; scatter it again",
                upload.received, upload.total
            );
            // Its buffer or spill file goes before the report does.
            drop(upload);
            let _ = self.refuse(&key, ErrorKind::Lost, why);
        }
    }
}

/// Sends the encoded value `value`, whose key is `key`, to the worker at
/// `addr` in ranges of [`CHUNK`] bytes, a few in flight (a file's read as
/// they go); returns once the worker has kept it (and reported it to the
/// scheduler), or why not.
pub async fn put(addr: &str, token: &str, key: &str, value: &Encoded) -> Result<(), String> {
    let (tx, mut rx) = connect(addr, token).await?;
    let closed = || format!("worker {addr} closed the connection");
    let total = value.len();
    let mut sent = 0u64;
    let mut asked = 0u64;
    let mut answered = 0u64;
    loop {
        while sent < total && asked - answered <= IN_FLIGHT || (total == 0 && asked == 0) {
            let end = (sent + CHUNK).min(total);
            let bytes = value
                .off_thread(move |v| v.range(sent, end - sent))
                .await
                .map_err(|e| e.to_string())?;
            asked += 1;
            tx.send(ToPeer::Put {
                id: asked,
                key: key.to_string(),
                total,
                offset: sent,
                bytes,
            })
            .map_err(|_| closed())?;
            sent = end;
        }
        let answer = rx
            .recv()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(closed)?;
        match answer {
            FromPeer::Put {
                error: Some(why), ..
            } => return Err(why),
            FromPeer::Put { id, error: None } if id == answered + 1 => answered += 1,
            other => {
                return Err(format!(
                    "worker {addr} answered {other:?} to a range of {key}"
                ));
            }
        }
        if answered == asked && sent >= total {
            return Ok(());
        }
    }
}

/// Values bigger than this move as [`ToPeer::Read`] ranges of this size;
/// smaller ones in one [`ToPeer::Fetch`].
pub const CHUNK: u64 = 4 << 20;

/// Ranges asked for ahead of the one being read.
const IN_FLIGHT: u64 = 3;

/// Fetches one result of `nbytes` encoded bytes from the first of `addrs`
/// that has it. A big one arrives in ranges, straight into one buffer of
/// its size (see [`stream`]).
pub async fn fetch(addrs: &[String], token: &str, key: &str, nbytes: u64) -> Result<Bytes, String> {
    if nbytes > CHUNK {
        let mut buf: Vec<u8> = Vec::new();
        return match stream(addrs, token, key, |total, chunk| {
            let mut take = || {
                if buf.capacity() == 0 {
                    // The holder's length, not the caller's, sizes the buffer.
                    buf = crate::value::huge::buffer(total)?;
                }
                buf.extend_from_slice(&chunk);
                Ok(())
            };
            std::future::ready(take())
        })
        .await
        {
            Ok(()) => Ok(Bytes::from(buf)),
            Err(StreamError::Source(why) | StreamError::Sink(why)) => Err(why),
        };
    }
    let mut last = format!("no worker holds {key}");
    for addr in addrs {
        match fetch_from(addr, token, key).await {
            Ok(Some(b)) => return Ok(b),
            Ok(None) => last = format!("worker {addr} no longer holds {key}"),
            Err(e) => last = format!("cannot fetch {key} from worker {addr}: {e}"),
        }
    }
    Err(last)
}

/// Why [`stream`] stopped.
#[derive(Debug)]
pub enum StreamError {
    /// No worker could send the rest (why).
    Source(String),
    /// The sink refused a range (its message).
    Sink(String),
}

/// Reads the encoded result `key` from the first of `addrs` that holds it,
/// in ranges of [`CHUNK`] bytes with a few asked for ahead, handing each to
/// `each` in order with the result's whole length, and waiting for each
/// before the next. No more than a few ranges are ever buffered, so a
/// caller writing them out never holds the value. A worker lost midway is
/// left for the next of `addrs` from where it stopped.
pub async fn stream<F>(
    addrs: &[String],
    token: &str,
    key: &str,
    mut each: impl FnMut(u64, Bytes) -> F,
) -> Result<(), StreamError>
where
    F: Future<Output = Result<(), String>>,
{
    let mut read = Progress::default();
    let mut last = format!("no worker holds {key}");
    for addr in addrs {
        match stream_from(addr, token, key, &mut read, &mut each, ANSWER_WITHIN).await {
            Ok(true) => return Ok(()),
            Ok(false) => last = format!("worker {addr} no longer holds {key}"),
            Err(StreamError::Source(e)) => {
                last = format!("cannot fetch {key} from worker {addr}: {e}")
            }
            Err(sink) => return Err(sink),
        }
    }
    Err(StreamError::Source(last))
}

/// How far a [`stream`] has got: bytes handed out, of how many.
#[derive(Default)]
struct Progress {
    done: u64,
    total: Option<u64>,
}

/// Streams from one worker, from `read.done` on; `Ok(false)` if it does not
/// hold the result.
async fn stream_from<F: Future<Output = Result<(), String>>>(
    addr: &str,
    token: &str,
    key: &str,
    read: &mut Progress,
    each: &mut impl FnMut(u64, Bytes) -> F,
    limit: Duration,
) -> Result<bool, StreamError> {
    let source = StreamError::Source;
    let (tx, mut rx) = connect(addr, token).await.map_err(source)?;
    let closed = || source("connection closed".into());
    // Ranges asked for: the next one's offset and id. Until the first answer
    // tells the length, one range is asked for alone.
    let mut asked = read.done;
    let mut id = 0u64;
    let ask = |asked: &mut u64, id: &mut u64| {
        *id += 1;
        let request = ToPeer::Read {
            id: *id,
            key: key.to_string(),
            offset: *asked,
            len: CHUNK,
        };
        *asked += CHUNK;
        tx.send(request).map_err(|_| closed())
    };
    ask(&mut asked, &mut id)?;
    let mut answered = 0u64;
    loop {
        let next = async { rx.recv().await.map_err(|e| e.to_string()) };
        let Some(answer) = within(limit, "reading a range", next)
            .await
            .map_err(source)?
        else {
            return Err(closed());
        };
        let FromPeer::Range {
            id: got,
            total,
            bytes,
        } = answer
        else {
            return Err(source(format!("unexpected answer {answer:?}")));
        };
        answered += 1;
        let Some(total) = total else {
            return Ok(false);
        };
        let expected = CHUNK.min(total.saturating_sub(read.done));
        if got != answered || read.total.is_some_and(|t| t != total) {
            return Err(source(format!(
                "answered range {got} of {total} bytes where range {answered} of {:?} was due",
                read.total
            )));
        }
        if bytes.len() as u64 != expected {
            return Err(source(format!(
                "sent {} bytes at offset {} of {total} where {expected} were due",
                bytes.len(),
                read.done
            )));
        }
        read.total = Some(total);
        read.done += bytes.len() as u64;
        if !bytes.is_empty() {
            each(total, bytes).await.map_err(StreamError::Sink)?;
        }
        if read.done >= total {
            return Ok(true);
        }
        while asked < total && asked < read.done + (IN_FLIGHT + 1) * CHUNK {
            ask(&mut asked, &mut id)?;
        }
    }
}

/// Connects to the data port at `addr` as a peer presenting `token`.
pub(crate) async fn connect(
    addr: &str,
    token: &str,
) -> Result<(Sender<ToPeer>, connection::Receiver<FromPeer>), String> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token: token.to_string(),
        role: Role::Peer,
    };
    let connecting = async {
        connection::connect::<FromPeer, ToPeer>(addr, hello)
            .await
            .map_err(|e| e.to_string())
    };
    let (_, tx, rx) = within(CONNECT_WITHIN, "connecting", connecting).await?;
    Ok((tx, rx))
}

/// How long connecting to a worker's data port may take, handshake
/// included, before that worker counts as unreachable.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How long a data port may take to answer one request (a range of
/// [`CHUNK`] bytes, a fetch, a log) before its worker counts as gone: a
/// frozen or vanished holder fails the fetch, which goes on to the next
/// holder, rather than hanging it.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// `work`, or an error saying what took longer than `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no answer within {limit:?}")))
}

/// Asks the worker at `addr` one question and returns its answer.
async fn ask(addr: &str, token: &str, request: ToPeer) -> Result<FromPeer, String> {
    ask_within(addr, token, request, ANSWER_WITHIN).await
}

async fn ask_within(
    addr: &str,
    token: &str,
    request: ToPeer,
    limit: Duration,
) -> Result<FromPeer, String> {
    let (tx, mut rx) = connect(addr, token).await?;
    tx.send(request)
        .map_err(|_| "connection closed".to_string())?;
    let answer = async {
        rx.recv()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "connection closed".to_string())
    };
    within(limit, "asking", answer).await
}

async fn fetch_from(addr: &str, token: &str, key: &str) -> Result<Option<Bytes>, String> {
    let request = ToPeer::Fetch {
        id: 1,
        keys: vec![key.to_string()],
    };
    match ask(addr, token, request).await? {
        FromPeer::Data { mut values, .. } => Ok(values.pop().and_then(|(_, v)| v)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// What `key` wrote, from the first of the workers at `addrs` that kept
/// some output of it; else empty if one says a run there wrote nothing
/// (another run elsewhere, a retry, may have written something); `None`
/// if none knows it. A worker that cannot be asked is skipped, saying why
/// in the error when no other has it.
pub async fn logs(
    addrs: &[String],
    token: &str,
    key: &str,
) -> Result<Option<crate::protocol::TaskLog>, String> {
    let mut failed = Vec::new();
    let mut silent = None;
    for addr in addrs {
        let request = ToPeer::Logs {
            id: 1,
            key: key.to_string(),
        };
        match ask(addr, token, request).await {
            Ok(FromPeer::Logs { log: Some(log), .. })
                if log.stdout.is_empty() && log.stderr.is_empty() =>
            {
                silent = Some(log)
            }
            Ok(FromPeer::Logs { log: Some(log), .. }) => return Ok(Some(log)),
            Ok(FromPeer::Logs { log: None, .. }) => {}
            Ok(other) => failed.push(format!("{addr}: unexpected answer {other:?}")),
            Err(e) => failed.push(format!("{addr}: {e}")),
        }
    }
    match (silent, failed.is_empty()) {
        (Some(log), _) => Ok(Some(log)),
        (None, true) => Ok(None),
        (None, false) => Err(format!("cannot ask every worker: {}", failed.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data port over a fresh store of `budget` bytes in memory, and
    /// what it reports to the scheduler.
    async fn port(
        budget: usize,
    ) -> (
        String,
        Store,
        mpsc::UnboundedReceiver<ToScheduler>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = Arc::new(crate::worker::store::ResultStore::new(
            budget,
            dir.path().join("spill"),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let listener = connection::Listener::Tcp(listener);
        let (reports, rx) = mpsc::unbounded_channel();
        let admits = Admits {
            worker: "sesame".into(),
            client_digest: None,
        };
        tokio::spawn(serve(
            listener,
            admits,
            store.clone(),
            Actors::default(),
            Default::default(),
            reports,
        ));
        (addr, store, rx, dir)
    }

    fn encoded(n: usize) -> (String, Bytes) {
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 253) as u8).collect();
        let bytes = Bytes::from(crate::value::encode(&crate::value::Value::Binary(data)));
        let key = crate::key::pure_key("", "data", &[crate::protocol::Arg::Value(bytes.clone())]);
        (key, bytes)
    }

    /// Sends the first range of `bytes` as `key`, sees it taken, and
    /// hangs up.
    async fn send_first_range_and_leave(addr: &str, key: &str, bytes: &Bytes) {
        let (tx, mut rx) = connect(addr, "sesame").await.unwrap();
        tx.send(ToPeer::Put {
            id: 1,
            key: key.to_string(),
            total: bytes.len() as u64,
            offset: 0,
            bytes: bytes.slice(..CHUNK as usize),
        })
        .unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            Some(FromPeer::Put { error: None, .. })
        ));
    }

    #[tokio::test]
    async fn a_value_put_in_ranges_is_kept_whole_and_reported() {
        let (addr, store, mut reports, _dir) = port(64 << 20).await;
        let (key, bytes) = encoded(3 * CHUNK as usize + 12_345);
        put(&addr, "sesame", &key, &Encoded::Memory(bytes.clone()))
            .await
            .unwrap();
        let Some(ToScheduler::Finished { results }) = reports.recv().await else {
            panic!("no report")
        };
        assert_eq!(results[0].0, key);
        assert_eq!(results[0].1.nbytes, bytes.len() as u64);
        let (total, all) = store.read(&key, 0, bytes.len() as u64).await.unwrap();
        assert_eq!(total, bytes.len() as u64);
        assert!(all == bytes, "the kept value differs from what was sent");
        // The same from a file, read as it is sent, to the same key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value.bin");
        std::fs::write(&path, crate::value::binary_payload(&bytes).unwrap()).unwrap();
        let file = Encoded::File(crate::value::EncodedFile::open(&path).unwrap());
        assert_eq!(file.data_key().unwrap(), key);
        store.remove(&key);
        put(&addr, "sesame", &key, &file).await.unwrap();
        assert!(matches!(
            reports.recv().await,
            Some(ToScheduler::Finished { .. })
        ));
        let (_, all) = store.read(&key, 0, bytes.len() as u64).await.unwrap();
        assert!(all == bytes, "the value sent from a file differs");
    }

    #[tokio::test]
    async fn a_value_over_the_memory_budget_goes_straight_to_a_spill_file() {
        let (addr, store, mut reports, dir) = port(1 << 20).await;
        let (key, bytes) = encoded(2 * CHUNK as usize + 5);
        put(&addr, "sesame", &key, &Encoded::Memory(bytes.clone()))
            .await
            .unwrap();
        assert!(matches!(
            reports.recv().await,
            Some(ToScheduler::Finished { .. })
        ));
        let usage = store.usage();
        assert_eq!(usage.in_memory, 0);
        assert_eq!(usage.spilled, bytes.len() as u64);
        let (_, back) = store.read(&key, 0, bytes.len() as u64).await.unwrap();
        assert!(
            back == bytes,
            "the spilled value differs from what was sent"
        );
        // One that stops midway leaves no file behind.
        let (other, more) = encoded(2 * CHUNK as usize + 6);
        send_first_range_and_leave(&addr, &other, &more).await;
        assert!(matches!(
            reports.recv().await,
            Some(ToScheduler::Erred { .. })
        ));
        let files = std::fs::read_dir(dir.path().join("spill")).unwrap().count();
        assert_eq!(files, 1, "only the kept value's file");
    }

    #[tokio::test]
    async fn bytes_that_are_not_their_keys_value_are_refused_and_not_kept() {
        let (addr, store, mut reports, _dir) = port(64 << 20).await;
        let (key, _) = encoded(CHUNK as usize + 1);
        let (_, other) = encoded(CHUNK as usize + 2);
        let err = put(&addr, "sesame", &key, &Encoded::Memory(other.clone()))
            .await
            .unwrap_err();
        assert!(err.contains("not that value"), "{err}");
        assert!(store.read(&key, 0, 1).await.is_none());
        let Some(ToScheduler::Erred { errors }) = reports.recv().await else {
            panic!("no report")
        };
        assert_eq!(errors[0].0, key);
        // A key that is not scattered data is refused outright.
        let (_, bytes) = encoded(10);
        let err = put(&addr, "sesame", "inc-0123", &Encoded::Memory(bytes.clone()))
            .await
            .unwrap_err();
        assert!(err.contains("not scattered data"), "{err}");
        // ...and not reported: the scheduler would fail that task, which
        // runs for someone else.
        assert!(
            reports.try_recv().is_err(),
            "a refused non-data key was reported to the scheduler"
        );
        // And a wrong token never gets in.
        assert!(
            put(&addr, "wrong", &key, &Encoded::Memory(bytes.clone()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_sender_that_stops_midway_is_reported_so_its_scatter_fails() {
        let (addr, store, mut reports, _dir) = port(64 << 20).await;
        let (key, bytes) = encoded(2 * CHUNK as usize);
        send_first_range_and_leave(&addr, &key, &bytes).await;
        let Some(ToScheduler::Erred { errors }) = reports.recv().await else {
            panic!("no report")
        };
        assert_eq!(errors[0].2.kind, ErrorKind::Lost);
        assert!(errors[0].2.message.contains("scatter it again"));
        assert!(store.read(&key, 0, 1).await.is_none());
    }

    /// Starts an upload of `bytes` as `key` on an open data connection:
    /// its first range of `first` bytes; the answer's error, if any.
    async fn start_upload(
        conn: &mut (Sender<ToPeer>, connection::Receiver<FromPeer>),
        key: &str,
        bytes: &Bytes,
        first: usize,
    ) -> Option<String> {
        conn.0
            .send(ToPeer::Put {
                id: 1,
                key: key.to_string(),
                total: bytes.len() as u64,
                offset: 0,
                bytes: bytes.slice(..first),
            })
            .unwrap();
        match conn.1.recv().await.unwrap() {
            Some(FromPeer::Put { error, .. }) => error,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Spill files in a port's spill directory.
    fn spill_files(dir: &tempfile::TempDir) -> usize {
        std::fs::read_dir(dir.path().join("spill")).map_or(0, |d| d.count())
    }

    #[tokio::test]
    async fn values_arriving_together_hold_at_most_the_memory_budget() {
        let (addr, _store, _reports, dir) = port(10 << 20).await;
        let mut conn = connect(&addr, "sesame").await.unwrap();
        // Two of 4.5 MiB fit the 10 MiB budget together; the third is
        // written to disk as it comes.
        for n in 0..3 {
            let (key, bytes) = encoded((9 << 19) + n);
            assert_eq!(start_upload(&mut conn, &key, &bytes, 1 << 20).await, None);
        }
        assert_eq!(spill_files(&dir), 1, "the third went to disk");
        // However many a peer starts, at most 16 are open at once.
        let mut refused = None;
        for n in 3..40 {
            let (key, bytes) = encoded(100 + n);
            if let Some(e) = start_upload(&mut conn, &key, &bytes, 10).await {
                refused = Some((n, e));
                break;
            }
        }
        let (n, e) = refused.expect("some start was refused");
        assert_eq!(n, 16, "{e}");
        assert!(e.contains("already arriving"), "{e}");
        // Room comes back when the peer leaves.
        drop(conn);
        let mut conn = connect(&addr, "sesame").await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (key, bytes) = encoded(9 << 20);
            assert_eq!(start_upload(&mut conn, &key, &bytes, 10).await, None);
            if spill_files(&dir) == 0 {
                break;
            }
            // The first connection's uploads are still being dropped.
            assert!(std::time::Instant::now() < deadline, "room never came back");
            drop(conn);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            conn = connect(&addr, "sesame").await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_fetch_is_answered_within_its_bounds() {
        let (addr, store, _reports, _dir) = port(64 << 20).await;
        let (small, small_bytes) = encoded(1000);
        let (big, big_bytes) = encoded(MAX_RANGE as usize + 1);
        let six: Vec<(String, Bytes)> = (0..3).map(|n| encoded((6 << 20) + n)).collect();
        for (k, v) in [(&small, &small_bytes), (&big, &big_bytes)]
            .into_iter()
            .chain(six.iter().map(|(k, v)| (k, v)))
        {
            store.insert(k.clone(), v.clone()).unwrap();
        }
        let fetch = |keys: Vec<String>| {
            let addr = addr.clone();
            async move {
                match ask(&addr, "sesame", ToPeer::Fetch { id: 1, keys })
                    .await
                    .unwrap()
                {
                    FromPeer::Data { values, .. } => values,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        };
        // A value over what one fetch answers with reads as not held.
        let values = fetch(vec![small.clone(), big.clone()]).await;
        assert!(values[0].1.as_ref() == Some(&small_bytes));
        assert_eq!(values[1], (big.clone(), None));
        // So does one over what is left once others are answered.
        let values = fetch(six.iter().map(|(k, _)| k.clone()).collect()).await;
        let held: Vec<bool> = values.iter().map(|(_, v)| v.is_some()).collect();
        assert_eq!(held, [true, true, false]);
        // Keys past the first 1,024 are left out.
        let values = fetch(vec![small.clone(); 5000]).await;
        assert_eq!(values.len(), FETCH_KEYS);
        // A big value still moves, as ranges.
        let back = fetch_big(&addr, &big, big_bytes.len() as u64).await;
        assert!(back == big_bytes, "the ranges differ from the value");
    }

    async fn fetch_big(addr: &str, key: &str, nbytes: u64) -> Bytes {
        fetch(&[addr.to_string()], "sesame", key, nbytes)
            .await
            .unwrap()
    }

    /// A result its holder lets go after a reader's first range (released,
    /// and its spill file removed) is still read to its end on that
    /// connection; a new reader finds it gone.
    #[tokio::test]
    async fn a_result_released_while_it_is_read_is_read_to_its_end() {
        // In memory, and spilled (a budget smaller than the value).
        for budget in [64 << 20, 1 << 20] {
            let (addr, store, _reports, dir) = port(budget).await;
            let (key, bytes) = encoded(3 * CHUNK as usize + 12_345);
            store.insert(key.clone(), bytes.clone()).unwrap();
            let spill = dir.path().join("spill");
            let files = || std::fs::read_dir(&spill).map_or(0, |d| d.count());
            assert_eq!(files(), usize::from(budget < bytes.len()));
            let (tx, mut rx) = connect(&addr, "sesame").await.unwrap();
            let mut got = Vec::new();
            let mut offset = 0;
            while offset < bytes.len() as u64 {
                tx.send(ToPeer::Read {
                    id: offset,
                    key: key.clone(),
                    offset,
                    len: CHUNK,
                })
                .unwrap();
                let Some(FromPeer::Range {
                    total, bytes: b, ..
                }) = rx.recv().await.unwrap()
                else {
                    panic!("no range answered at {offset}");
                };
                assert_eq!(total, Some(bytes.len() as u64), "at offset {offset}");
                got.extend_from_slice(&b);
                offset += b.len() as u64;
                if offset == CHUNK {
                    store.remove(&key);
                    assert!(!store.holds(&key));
                    assert_eq!(files(), 0, "the spill file should be removed");
                }
            }
            assert!(got == bytes, "the value read differs from the one held");
            // Another reader finds it gone.
            let (tx, mut rx) = connect(&addr, "sesame").await.unwrap();
            tx.send(ToPeer::Read {
                id: 1,
                key: key.clone(),
                offset: 0,
                len: CHUNK,
            })
            .unwrap();
            assert!(matches!(
                rx.recv().await.unwrap(),
                Some(FromPeer::Range { total: None, .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_peer_that_asks_and_does_not_read_is_cut_off() {
        let (addr, store, _reports, _dir) = port(64 << 20).await;
        let (key, bytes) = encoded(MAX_RANGE as usize);
        store.insert(key.clone(), bytes).unwrap();
        let (tx, mut rx) = connect(&addr, "sesame").await.unwrap();
        // 32 ranges of 16 MiB asked for at once, 512 MiB, and none read
        // until all are asked.
        for id in 0..32 {
            tx.send(ToPeer::Read {
                id,
                key: key.clone(),
                offset: 0,
                len: MAX_RANGE,
            })
            .unwrap();
        }
        // Read until the port hangs up, or all are answered.
        let mut answered = 0;
        while answered < 32 {
            match tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv()).await {
                Ok(Ok(Some(FromPeer::Range { .. }))) => answered += 1,
                Ok(_) => break,
                Err(_) => panic!("neither answered nor cut off after {answered} ranges"),
            }
        }
        assert!(
            answered < 16,
            "{answered} of 32 ranges were answered; the rest should not have waited"
        );
    }

    /// A caller that outruns an actor: the calls past its queue wait in the
    /// connection (the port reads nothing more), none is lost or refused,
    /// and they reach the actor in order.
    #[tokio::test]
    async fn calls_past_a_full_actor_queue_wait_in_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let store: Store = Arc::new(crate::worker::store::ResultStore::new(
            1 << 20,
            dir.path().join("spill"),
        ));
        let actors = Actors::default();
        let (queue, mut calls) = mpsc::channel(ACTOR_QUEUE);
        actors
            .lock()
            .unwrap()
            .insert("slow".to_string(), (1, queue));
        let admits = Admits {
            worker: "sesame".into(),
            client_digest: None,
        };
        let (reports, _reports) = mpsc::unbounded_channel();
        tokio::spawn(serve(
            connection::Listener::Tcp(listener),
            admits,
            store,
            actors,
            Default::default(),
            reports,
        ));
        let (tx, mut rx) = connect(&addr, "sesame").await.unwrap();
        let n = 3 * ACTOR_QUEUE;
        for id in 0..n as u64 {
            tx.send(ToPeer::Call {
                id,
                actor: "slow".into(),
                method: "m".into(),
                args: vec![],
            })
            .unwrap();
        }
        // Sent behind the calls: read by the port only once the last call
        // is in the actor's queue.
        tx.send(ToPeer::Logs {
            id: u64::MAX,
            key: "k".into(),
        })
        .unwrap();
        let mut taken = 0;
        let mut logs_at = None;
        let deadline = std::time::Duration::from_secs(30);
        while taken < n || logs_at.is_none() {
            tokio::select! {
                biased;
                answer = rx.recv(), if logs_at.is_none() => match answer {
                    Ok(Some(FromPeer::Logs { .. })) => logs_at = Some(taken),
                    other => panic!("unexpected {other:?}"),
                },
                call = tokio::time::timeout(deadline, calls.recv()), if taken < n => {
                    let call = call.expect("a call was lost").unwrap();
                    assert_eq!(call.id, taken as u64, "in order");
                    taken += 1;
                    assert!(calls.len() <= ACTOR_QUEUE);
                }
            }
        }
        let logs_at = logs_at.unwrap();
        assert!(
            logs_at >= n - ACTOR_QUEUE - 1,
            "the port read past a full queue: answered after {logs_at} of {n} calls were taken"
        );
    }

    /// A data port that lets peers in and then never answers.
    async fn stalled_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                let admitted = connection::accept::<ToPeer, FromPeer>(
                    connection::Incoming::Tcp(stream),
                    DEFAULT_MAX_FRAME,
                    |_| {
                        Ok(connection::Admission {
                            id: 0,
                            client_digest: None,
                            max_value: None,
                        })
                    },
                )
                .await;
                if let Ok(c) = admitted {
                    held.push(c);
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_holder_that_stops_answering_fails_the_fetch_instead_of_hanging_it() {
        let addr = stalled_port().await;
        let limit = Duration::from_millis(300);
        let fetched = ask_within(
            &addr,
            "sesame",
            ToPeer::Fetch {
                id: 1,
                keys: vec!["data-x".into()],
            },
            limit,
        );
        let e = tokio::time::timeout(Duration::from_secs(30), fetched)
            .await
            .expect("a fetch from a stalled holder hung")
            .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        let mut read = Progress::default();
        let mut each = |_: u64, _: Bytes| std::future::ready(Ok(()));
        let streamed = stream_from(&addr, "sesame", "data-x", &mut read, &mut each, limit);
        match tokio::time::timeout(Duration::from_secs(30), streamed)
            .await
            .expect("a range read from a stalled holder hung")
        {
            Err(StreamError::Source(e)) => assert!(e.contains("no answer within"), "{e}"),
            Err(StreamError::Sink(e)) => panic!("{e}"),
            Ok(done) => panic!("read from a port that never answers: {done}"),
        }
    }
}
