//! Worker data ports: how results move between workers, and from a worker
//! to a client, without passing through the scheduler; and how actor
//! method calls reach the worker holding the actor.

use crate::connection::{self, DEFAULT_MAX_FRAME, Sender};
use crate::protocol::{
    CallArg, ErrorKind, FromPeer, Hello, MAX_RANGE, PROTOCOL_VERSION, Role, TaskError, ToPeer,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
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

/// The actors a worker holds: each one's queue of calls, by key.
pub type Actors = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ActorCall>>>>;

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

/// Serves `Fetch` requests for the results in `store`, and method calls
/// for the `actors`, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    admits: Admits,
    store: Store,
    actors: Actors,
    logs: Arc<crate::worker::logs::Logs>,
) {
    let gate = connection::Gate::new("data port");
    loop {
        let room = gate.room().await;
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let admits = admits.clone();
        let store = store.clone();
        let actors = actors.clone();
        let logs = logs.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let Some(permit) = gate.admit(room, peer.ip()).await else {
                return;
            };
            let admitted =
                connection::accept::<ToPeer, FromPeer>(stream, DEFAULT_MAX_FRAME, |h: &Hello| {
                    match h.role {
                        Role::Peer => admits.check(&h.token).map(|()| connection::Admission {
                            id: 0,
                            client_digest: None,
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
            while let Ok(Some(request)) = rx.recv().await {
                let sent = match request {
                    ToPeer::Logs { id, key } => tx.send(FromPeer::Logs {
                        id,
                        log: logs.get(&key).map(|l| (*l).clone()),
                    }),
                    ToPeer::Fetch { id, keys } => {
                        let mut values = Vec::with_capacity(keys.len());
                        for k in keys {
                            let v = store.get(&k).await;
                            values.push((k, v));
                        }
                        tx.send(FromPeer::Data { id, values })
                    }
                    ToPeer::Read {
                        id,
                        key,
                        offset,
                        len,
                    } => {
                        let len = len.min(MAX_RANGE);
                        let (total, bytes) = match store.read(&key, offset, len).await {
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
                            .cloned();
                        let call = ActorCall {
                            id,
                            method,
                            args,
                            reply: tx.clone(),
                        };
                        match queue.map(|q| q.send(call)) {
                            Some(Ok(())) => Ok(()),
                            _ => tx.send(FromPeer::Called {
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
                            }),
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
            if buf.capacity() == 0 {
                // The holder's length, not the caller's, sizes the buffer.
                buf = crate::value::huge::buffer(total)?;
            }
            buf.extend_from_slice(chunk);
            Ok(())
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
/// `each` in order with the result's whole length. No more than a few
/// ranges are ever buffered, so a caller writing them out never holds the
/// value. A worker lost midway is left for the next of `addrs` from where
/// it stopped.
pub async fn stream(
    addrs: &[String],
    token: &str,
    key: &str,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<(), StreamError> {
    let mut read = Progress::default();
    let mut last = format!("no worker holds {key}");
    for addr in addrs {
        match stream_from(addr, token, key, &mut read, &mut each).await {
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
async fn stream_from(
    addr: &str,
    token: &str,
    key: &str,
    read: &mut Progress,
    each: &mut impl FnMut(u64, &[u8]) -> Result<(), String>,
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
        let Some(answer) = rx.recv().await.map_err(|e| source(e.to_string()))? else {
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
        if !bytes.is_empty() {
            each(total, &bytes).map_err(StreamError::Sink)?;
        }
        read.done += bytes.len() as u64;
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
    let (_, tx, rx) = connection::connect::<FromPeer, ToPeer>(addr, hello)
        .await
        .map_err(|e| e.to_string())?;
    Ok((tx, rx))
}

/// Asks the worker at `addr` one question and returns its answer.
async fn ask(addr: &str, token: &str, request: ToPeer) -> Result<FromPeer, String> {
    let (tx, mut rx) = connect(addr, token).await?;
    tx.send(request)
        .map_err(|_| "connection closed".to_string())?;
    rx.recv()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "connection closed".into())
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
/// it; `None` if none did. A worker that cannot be asked is skipped,
/// saying why in the error when no other has it.
pub async fn logs(
    addrs: &[String],
    token: &str,
    key: &str,
) -> Result<Option<crate::protocol::TaskLog>, String> {
    let mut failed = Vec::new();
    for addr in addrs {
        let request = ToPeer::Logs {
            id: 1,
            key: key.to_string(),
        };
        match ask(addr, token, request).await {
            Ok(FromPeer::Logs { log: Some(log), .. }) => return Ok(Some(log)),
            Ok(FromPeer::Logs { log: None, .. }) => {}
            Ok(other) => failed.push(format!("{addr}: unexpected answer {other:?}")),
            Err(e) => failed.push(format!("{addr}: {e}")),
        }
    }
    match failed.is_empty() {
        true => Ok(None),
        false => Err(format!("cannot ask every worker: {}", failed.join("; "))),
    }
}
