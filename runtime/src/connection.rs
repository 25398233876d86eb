//! Framing over TCP (or a Unix socket, for peers on the scheduler's own
//! machine): length-delimited frames, each a postcard `Vec` of messages,
//! behind a handshake that checks version and token.
//!
//! Writing goes through a channel drained by a writer task, which packs every
//! message that is waiting into one frame; so a burst of small messages costs
//! one system call, and senders never block on the socket.

use crate::protocol::{Hello, PROTOCOL_VERSION, Weigh, Welcome};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// The reading half of a connection, plaintext or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plaintext or TLS.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// How a scheduler address names a Unix socket: `unix:PATH`. Such a
/// connection never leaves the machine, so it goes without TLS (the token
/// still admits it); on this project's VMs a message over a Unix socket
/// costs both processes far less kernel time than one over loopback TCP.
pub const UNIX_PREFIX: &str = "unix:";

/// The socket path of a `unix:PATH` address; `None` for a TCP address.
pub fn unix_path(addr: &str) -> Option<&std::path::Path> {
    addr.strip_prefix(UNIX_PREFIX).map(std::path::Path::new)
}

/// The `unix:PATH` address of the socket at `path`.
pub fn unix_address(path: &std::path::Path) -> String {
    format!("{UNIX_PREFIX}{}", path.display())
}

/// Longest path a Unix socket is given (with room to spare under the 108
/// bytes Linux allows, terminator included); past it, TCP serves instead.
pub const UNIX_PATH_MAX: usize = 100;

/// A connection just accepted, before its handshake.
pub enum Incoming {
    /// From a TCP listener: TLS if this process has certificates.
    Tcp(TcpStream),
    /// From a Unix socket listener: always plaintext.
    Unix(tokio::net::UnixStream),
}

/// Largest frame accepted from a peer, unless configured otherwise.
pub const DEFAULT_MAX_FRAME: usize = 512 * 1024 * 1024;

/// Frames stop growing past this many bytes of messages; what is left goes
/// in the next frame. Far below any peer's frame limit, so a batch of small
/// messages never makes a frame the peer refuses.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long a peer may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to one of an address's IPs may take: one that
/// answers nothing at all (its host is down, a link is cut, a firewall
/// drops it) would otherwise hold the caller for the kernel's two minutes
/// of SYN retries before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Quiet on a TCP connection, after which the kernel starts probing the
/// peer (keepalive).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the connection is taken to be dead.
const KEEPALIVE_PROBES: u32 = 3;

/// Makes a TCP connection that is waiting with nothing to send notice a
/// peer that went silent without closing it (its host lost power, its
/// link was cut, the network partitioned) within about half a minute: the
/// keepalive probes go unanswered, and it fails as a broken connection
/// does (clients and workers reconnect within their grace). A busy,
/// stopped or slow-reading peer is not taken for dead: its kernel answers
/// the probes. (Data left unacknowledged is the kernel's retransmissions'
/// to give up on; a bound on it would also cut a reader that merely
/// paused, a `gather` into a stopped pager.)
fn keep_alive(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket.set_tcp_keepalive(&probes) {
        tracing::debug!("TCP keepalive not set: {e}");
    }
}

/// Connects to `addr`, trying each of its IPs in turn for at most
/// [`CONNECT_TIMEOUT`] each.
async fn tcp_connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for ip in tokio::net::lookup_host(addr).await? {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ip)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{ip} did not answer within {CONNECT_TIMEOUT:?}"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Largest handshake frame ([`Hello`] or [`Welcome`]). Until a peer has
/// authenticated it may make this side buffer no more than this, whatever
/// length it announces.
pub const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// Handshakes a listener runs at once; further connections wait to be
/// read until one ends (completes, fails or times out). Bounds what
/// unauthenticated peers can hold: this many × [`HANDSHAKE_MAX_FRAME`].
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Handshakes one peer address may run at once on a listener: past this,
/// its further connections wait (up to the handshake timeout, without
/// taking any of [`MAX_PENDING_HANDSHAKES`]) for one of its own to end,
/// so one host cannot keep others' connections queued behind its own.
pub const MAX_PENDING_PER_PEER: usize = 32;

/// Connections one address may have waiting for its turn; more are closed.
pub const MAX_WAITING_PER_PEER: usize = 256;

/// Connections all addresses together may have waiting; more are closed.
pub const MAX_WAITING: usize = 4096;

mod gate;
mod listen;

pub use gate::{Gate, Pass};
pub use listen::{Listener, SocketFile, bind_unix};

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// A frame did not decode as the expected messages.
    #[error("malformed frame from peer: {0}")]
    Malformed(String),
    /// The peer refused the handshake.
    #[error("{0}")]
    Refused(String),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The handshake did not complete in time.
    #[error("the peer did not complete the handshake in time")]
    Timeout,
    /// TLS failed, or one side speaks it and the other does not.
    #[error("{0}")]
    Tls(String),
    /// The address is not one (see [`check_address`]).
    #[error("{0}")]
    Address(String),
}

impl WireError {
    /// Whether trying again cannot help: the peer refused this side, or
    /// TLS failed (a certificate, a CA, one side without TLS).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Tls(_) | Self::Address(_))
    }
}

/// Whether `addr` is an address dtask can connect to: `unix:PATH`, or
/// `HOST:PORT` with a port number. (Whether the host resolves is left to
/// connecting: a name server may be slow to answer.)
pub fn check_address(addr: &str) -> Result<(), String> {
    let why = match unix_path(addr) {
        Some(path) if path.as_os_str().is_empty() => "no path after `unix:`".to_string(),
        Some(_) => return Ok(()),
        None => match addr.rsplit_once(':') {
            None => "no port".to_string(),
            Some(("", _)) => "no host before the port".to_string(),
            Some((_, port)) => match port.parse::<u16>() {
                Ok(_) => return Ok(()),
                Err(_) => format!("`{port}` is not a port number"),
            },
        },
    };
    Err(format!(
        "{addr:?} is not a scheduler address ({why}): give HOST:PORT or unix:PATH"
    ))
}

/// The length-delimited codec for reading, which asks for huge pages for
/// the buffer of a big frame before the frame is read into it (a 100 MB
/// value otherwise costs its reader 25,000 page faults; see
/// [`crate::value::huge`]).
pub(crate) struct Frames(LengthDelimitedCodec);

impl tokio_util::codec::Decoder for Frames {
    type Item = bytes::BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> io::Result<Option<bytes::BytesMut>> {
        if let Some(&[a, b, c, d]) = src.get(..4) {
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            let want = 4 + len;
            // Only frames within the limit: a hostile length allocates
            // nothing (the codec refuses it).
            if len <= self.0.max_frame_length() && src.capacity() < want {
                src.reserve(want - src.len());
                let spare = src.spare_capacity_mut();
                crate::value::huge::advise(spare.as_mut_ptr().cast(), spare.len());
            }
        }
        self.0.decode(src)
    }
}

fn frames(r: ReadHalf, max_frame: usize) -> FramedRead<ReadHalf, Frames> {
    FramedRead::new(r, Frames(codec(max_frame)))
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Encodes one message as frame bytes.
pub(crate) fn encode<M: Serialize + ?Sized>(msg: &M) -> bytes::Bytes {
    postcard::to_allocvec(msg)
        .expect("protocol messages always serialize")
        .into()
}

/// Decodes frame bytes, refusing anything that does not fit exactly. (A
/// hostile length prefix allocates nothing: byte strings are checked
/// against what is there, and sequences grow as their items arrive.)
pub(crate) fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, WireError> {
    match postcard::take_from_bytes(bytes) {
        Ok((m, [])) => Ok(m),
        Ok((_, rest)) => Err(WireError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(WireError::Malformed(e.to_string())),
    }
}

/// Receiving half of a connection: yields messages one at a time.
pub struct Receiver<M> {
    frames: FramedRead<ReadHalf, Frames>,
    pending: VecDeque<M>,
}

impl<M: DeserializeOwned> Receiver<M> {
    /// The next message, or `None` once the peer has closed the connection.
    pub async fn recv(&mut self) -> Result<Option<M>, WireError> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(Some(m));
            }
            match self.frames.next().await {
                None => return Ok(None),
                // A TLS peer that goes without a close_notify has closed all
                // the same: frames are whole or refused, so nothing is lost.
                Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Some(frame) => {
                    let batch: Vec<M> = decode_frame(frame?.freeze())?;
                    self.pending.extend(batch);
                }
            }
        }
    }

    /// Every message already received and decoded, without waiting.
    pub fn drain_ready(&mut self) -> impl Iterator<Item = M> + '_ {
        self.pending.drain(..)
    }
}

/// Sending half of a connection. Cloning it is cheap; clones share one
/// queue, drained by the connection's writer task, which packs what waits
/// into frames of at most [`BATCH_BYTES`] (or one message, if larger).
///
/// The queue may be bounded ([`Sender::set_limit`]): a peer that stops
/// reading cannot make this side buffer without end. Past the bound the
/// connection is cut (its writer stops and the socket is shut down), and
/// every later send fails.
pub struct Sender<M> {
    tx: mpsc::UnboundedSender<M>,
    backlog: Arc<Backlog>,
    /// What the writer had not written when it stopped.
    unsent: Arc<Unsent<M>>,
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
            unsent: self.unsent.clone(),
        }
    }
}

/// What a connection's writer hands back when it stops before its queue
/// is empty (see [`Sender::unsent`]).
struct Unsent<M> {
    /// Set once the writer has stopped, with what it had not written.
    left: std::sync::Mutex<Option<Unwritten<M>>>,
    /// Wakes those waiting for it to stop.
    stopped: Notify,
}

impl<M> Unsent<M> {
    /// `left`: what is known already not to have been written.
    fn new(left: Option<Unwritten<M>>) -> Arc<Self> {
        Arc::new(Self {
            left: std::sync::Mutex::new(left),
            stopped: Notify::new(),
        })
    }
}

/// Messages a connection's writer stopped without writing, in the order
/// they were sent.
#[derive(Debug)]
pub struct Unwritten<M> {
    /// The batch it was writing when the write failed or it was cut: the
    /// peer may have had some or all of it.
    pub maybe: Vec<M>,
    /// Those it had not begun to write: the peer never saw them.
    pub never: Vec<M>,
}

impl<M> Default for Unwritten<M> {
    fn default() -> Self {
        Self {
            maybe: Vec::new(),
            never: Vec::new(),
        }
    }
}

impl<M> std::fmt::Debug for Sender<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

/// What waits to be written on one connection.
#[derive(Default)]
struct Backlog {
    /// Approximate bytes queued and not yet written.
    bytes: AtomicUsize,
    /// Bound on `bytes`; 0: none.
    limit: AtomicUsize,
    /// Set once the connection is cut.
    cut: AtomicBool,
    /// Wakes the writer to stop.
    stop: Notify,
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed (or was cut before).
    #[error("the connection is closed")]
    Closed,
    /// This message would have taken the queue past its bound, so the
    /// connection was cut.
    #[error(
        "the peer fell behind: {queued} bytes waited to be sent, more than the {limit} allowed"
    )]
    Overflow {
        /// Bytes that were waiting.
        queued: usize,
        /// The bound.
        limit: usize,
    },
}

impl<M: Weigh> Sender<M> {
    /// Queues `msg` for the writer.
    pub fn send(&self, msg: M) -> Result<(), SendError> {
        self.offer(msg).map_err(|(e, _)| e)
    }

    /// Queues `msg` for the writer, or hands it back with why not: a
    /// message that must not be lost (a release) then waits for the next
    /// connection. Whether the connection is open is only known by
    /// trying: its writer can stop (a write error) at any instant.
    pub fn offer(&self, msg: M) -> Result<(), (SendError, M)> {
        if self.backlog.cut.load(Ordering::Acquire) {
            return Err((SendError::Closed, msg));
        }
        let weight = msg.weight();
        let queued = self.backlog.bytes.fetch_add(weight, Ordering::AcqRel) + weight;
        let limit = self.backlog.limit.load(Ordering::Relaxed);
        // One message over the bound alone (a big published value to a
        // subscriber that reads promptly) still goes: only a backlog is a
        // reader falling behind.
        if limit > 0 && queued > limit && queued > weight {
            self.backlog.bytes.fetch_sub(weight, Ordering::AcqRel);
            self.cut();
            return Err((SendError::Overflow { queued, limit }, msg));
        }
        self.tx.send(msg).map_err(|back| {
            self.backlog.bytes.fetch_sub(weight, Ordering::AcqRel);
            (SendError::Closed, back.0)
        })
    }
}

impl<M> Sender<M> {
    /// Bounds what may wait to be sent to `bytes` (0: no bound).
    pub fn set_limit(&self, bytes: usize) {
        self.backlog.limit.store(bytes, Ordering::Relaxed);
    }

    /// Approximate bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.backlog.bytes.load(Ordering::Relaxed)
    }

    /// Cuts the connection: the writer drops what waits and shuts the
    /// socket; later sends fail.
    pub fn cut(&self) {
        self.backlog.cut.store(true, Ordering::Release);
        self.backlog.stop.notify_one();
    }

    /// Whether the connection is closed or cut.
    pub fn is_closed(&self) -> bool {
        self.backlog.cut.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Cuts the connection (if it is not already closed) and waits for its
    /// writer to stop; returns what it had not written, once (later calls
    /// get nothing). A client sends some of it again on its next
    /// connection.
    pub async fn unsent(&self) -> Unwritten<M> {
        self.cut();
        loop {
            let stopped = self.unsent.stopped.notified();
            if let Some(left) = self.unsent.left.lock().expect("unsent lock").as_mut() {
                return std::mem::take(left);
            }
            stopped.await;
        }
    }
}

/// Starts the writer task for one connection.
fn spawn_writer<M: Serialize + Weigh + Send + 'static>(mut sink: WriteHalf) -> Sender<M> {
    let (tx, mut rx) = mpsc::unbounded_channel::<M>();
    let backlog = Arc::new(Backlog::default());
    let shared = backlog.clone();
    let unsent = Unsent::new(None);
    let handback = unsent.clone();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut left = Unwritten::default();
        loop {
            let first = tokio::select! {
                biased;
                () = shared.stop.notified() => break,
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let mut weight = first.weight();
            batch.push(first);
            // Take whatever else is already waiting, up to a frame's worth.
            while weight < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        weight += m.weight();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            M::coalesce(&mut batch);
            // Big byte strings are written from where they are, not
            // copied into the encoding (see `blob`).
            let parts = encode_frame(&batch);
            let sent = tokio::select! {
                biased;
                () = shared.stop.notified() => Err(io::ErrorKind::Interrupted.into()),
                r = write_parts(&mut sink, &parts) => r,
            };
            shared.bytes.fetch_sub(weight, Ordering::AcqRel);
            if sent.is_err() {
                // Kept (not dropped) for whoever asks what was not
                // written.
                left.maybe = std::mem::take(&mut batch);
                break;
            }
            batch.clear();
        }
        shared.cut.store(true, Ordering::Release);
        rx.close();
        while let Ok(m) = rx.try_recv() {
            left.never.push(m);
        }
        *handback.left.lock().expect("unsent lock") = Some(left);
        handback.stopped.notify_waiters();
        // Say so to the peer (a TLS close_notify, then the socket's FIN):
        // a dropped TLS half would not.
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.shutdown()).await;
    });
    Sender {
        tx,
        backlog,
        unsent,
    }
}

/// A sender feeding a plain queue rather than a socket, and that queue:
/// fault injection puts one in front of a connection's own sender to hold
/// messages back (`scheduler::faults`).
pub(crate) fn relay<M>() -> (Sender<M>, mpsc::UnboundedReceiver<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    // Nothing writes it to a socket: nothing is ever left unwritten.
    let unsent = Unsent::new(Some(Unwritten::default()));
    (
        Sender {
            tx,
            backlog,
            unsent,
        },
        rx,
    )
}

/// The connection after its handshake: the same framed halves (so nothing
/// the peer sent right behind its handshake is lost), now accepting frames
/// up to `max_frame`.
/// Encodes a batch as a frame on an established connection: its parts, to
/// be written in order (see [`crate::blob`] for the layout).
pub(crate) fn encode_frame<M: Serialize + ?Sized>(msg: &M) -> Vec<bytes::Bytes> {
    crate::blob::encode_frame(msg, |buf, msg| {
        // Unbounded: a bounded encoding measures the message first, which
        // would set its big byte strings aside twice.
        postcard::to_io(msg, buf).expect("protocol messages always serialize");
    })
}

/// Decodes a frame written by [`encode_frame`] (without its length
/// prefix).
pub(crate) fn decode_frame<M: DeserializeOwned>(frame: bytes::Bytes) -> Result<M, WireError> {
    crate::blob::decode_frame(frame, decode, |m| WireError::Malformed(m.to_string()))
}

/// Writes a frame's parts in order.
async fn write_parts(sink: &mut WriteHalf, parts: &[bytes::Bytes]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    for part in parts {
        sink.write_all(part).await?;
    }
    // TLS holds what was written until flushed; plain TCP has nothing to do.
    sink.flush().await
}

/// The first bytes of a TLS record (a handshake or an alert): what a peer
/// speaking TLS sends where this side expected a frame.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, ..])
}

/// Splits a plaintext stream.
fn plain_halves(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (r, w) = stream.into_split();
    (Box::new(r), Box::new(w))
}

/// Splits a TLS stream.
fn tls_halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (ReadHalf, WriteHalf) {
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

/// Waits up to the handshake timeout for the peer's first bytes and tells
/// whether they open a TLS record (without consuming them).
async fn peer_speaks_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 2];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await,
        Ok(Ok(2)) if looks_like_tls(&first)
    )
}

/// Opens a connection to `addr`: TLS if this process has a CA
/// ([`crate::tls`]), else plaintext.
async fn open(addr: &str) -> Result<(ReadHalf, WriteHalf, bool), WireError> {
    check_address(addr).map_err(WireError::Address)?;
    if let Some(path) = unix_path(addr) {
        let stream = tokio::net::UnixStream::connect(path).await?;
        crate::busy_poll::watch(&stream);
        let (r, w) = stream.into_split();
        return Ok((Box::new(r), Box::new(w), false));
    }
    let tls = crate::tls::current().map_err(WireError::Tls)?;
    let stream = tcp_connect(addr).await?;
    let _ = stream.set_nodelay(true);
    keep_alive(&stream);
    crate::busy_poll::watch(&stream);
    Ok(match tls {
        Some(tls) => {
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(addr, stream))
                .await
                .map_err(|_| WireError::Timeout)?
                .map_err(|e| match e {
                    crate::tls::TlsError::Refused(why) => WireError::Tls(why),
                    crate::tls::TlsError::Io(e) => WireError::Io(e),
                })?;
            let (r, w) = tls_halves(stream);
            (r, w, true)
        }
        None => {
            let (r, w) = plain_halves(stream);
            (r, w, false)
        }
    })
}

fn established<I: DeserializeOwned, O: Serialize + Weigh + Send + 'static>(
    mut frames: FramedRead<ReadHalf, Frames>,
    sink: FramedWrite<WriteHalf, LengthDelimitedCodec>,
    max_frame: usize,
) -> (Sender<O>, Receiver<I>) {
    frames.decoder_mut().0.set_max_frame_length(max_frame);
    (
        spawn_writer(sink.into_inner()),
        Receiver {
            frames,
            pending: VecDeque::new(),
        },
    )
}

async fn read_one<M: DeserializeOwned>(
    frames: &mut FramedRead<ReadHalf, Frames>,
) -> Result<M, WireError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()).await {
        Err(_) => Err(WireError::Timeout),
        Ok(None) => Err(WireError::Closed),
        Ok(Some(frame)) => decode(&frame?),
    }
}

/// What the accepting side said when it let this side in.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    /// The id it gave this connection (a worker's id).
    pub id: u64,
    /// For a worker: the digest of the client token, to check clients on
    /// its data port with ([`crate::secret`]).
    pub client_digest: Option<[u8; 32]>,
    /// For a client: the largest value the scheduler takes.
    pub max_value: Option<u64>,
}

/// Connects to `addr`, introduces itself with `hello`, and returns the
/// connection and what the peer said on admitting it, or its refusal.
pub async fn connect<I: DeserializeOwned, O: Serialize + Weigh + Send + 'static>(
    addr: &str,
    hello: Hello,
) -> Result<(Admission, Sender<O>, Receiver<I>), WireError> {
    let (r, w, tls) = open(addr).await?;
    let mut frames = frames(r, HANDSHAKE_MAX_FRAME);
    let mut sink = FramedWrite::new(w, codec(HANDSHAKE_MAX_FRAME));
    // A peer that accepts but never answers (its process stopped) does not
    // hold this side longer than a handshake may take.
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        sink.send(encode(&hello)).await?;
        read_one::<Welcome>(&mut frames).await
    })
    .await
    .map_err(|_| WireError::Timeout)?
    .map_err(|e| match e {
        // Under TLS 1.3 the server checks this side's certificate
        // after the client's handshake is done: its refusal arrives
        // here, and is as final as any other TLS refusal.
        WireError::Io(ref io) if tls && crate::tls::rustls_error(io).is_some() => {
            WireError::Tls(crate::tls::explain(io, addr, true))
        }
        // A TLS alert read as a frame's length is too long for a
        // Welcome. (A peer that just closes may be restarting: that
        // stays `Closed`, which callers retry.)
        WireError::Io(ref io) if !tls && io.kind() == io::ErrorKind::InvalidData => {
            WireError::Tls(format!(
                "{addr} answered with something other than dtask's handshake ({e}): it most \
                 likely speaks TLS; set DTASK_TLS_CA (the cluster's CA) on this side"
            ))
        }
        e => e,
    })?;
    let admission = match welcome {
        Welcome::Accepted {
            id,
            client_digest,
            max_value,
        } => Admission {
            id,
            client_digest,
            max_value,
        },
        Welcome::Refused(why) => return Err(WireError::Refused(why)),
    };
    let (tx, rx) = established(frames, sink, DEFAULT_MAX_FRAME);
    Ok((admission, tx, rx))
}

/// Reads a peer's [`Hello`] and checks its version; `admit` then checks
/// its credential and decides (returning what to tell the peer, or a
/// refusal).
pub async fn accept<I: DeserializeOwned, O: Serialize + Weigh + Send + 'static>(
    stream: Incoming,
    max_frame: usize,
    admit: impl FnOnce(&Hello) -> Result<Admission, String>,
) -> Result<(Hello, Admission, Sender<O>, Receiver<I>), WireError> {
    let stream = match stream {
        Incoming::Tcp(s) => s,
        Incoming::Unix(s) => {
            crate::busy_poll::watch(&s);
            let (r, w) = s.into_split();
            return handshake(Box::new(r), Box::new(w), max_frame, admit).await;
        }
    };
    let _ = stream.set_nodelay(true);
    keep_alive(&stream);
    crate::busy_poll::watch(&stream);
    let acceptor = crate::tls::current()
        .map_err(WireError::Tls)?
        .and_then(|t| t.acceptor().cloned());
    let (r, w) = match acceptor {
        Some(acceptor) => {
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| WireError::Timeout)?
                .map_err(|e| WireError::Tls(crate::tls::explain(&e, "the peer", false)))?;
            tls_halves(stream)
        }
        None => {
            if peer_speaks_tls(&stream).await {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    stream.write_all(&crate::tls::NO_TLS_HERE),
                )
                .await;
                return Err(WireError::Tls(
                    "the peer speaks TLS and this side has no certificate: set \
                     DTASK_TLS_CA, DTASK_TLS_CERT and DTASK_TLS_KEY here too"
                        .into(),
                ));
            }
            plain_halves(stream)
        }
    };
    handshake(r, w, max_frame, admit).await
}

/// The accepting side's handshake on an open stream: reads the peer's
/// [`Hello`], checks its version, and lets `admit` decide.
async fn handshake<I: DeserializeOwned, O: Serialize + Weigh + Send + 'static>(
    r: ReadHalf,
    w: WriteHalf,
    max_frame: usize,
    admit: impl FnOnce(&Hello) -> Result<Admission, String>,
) -> Result<(Hello, Admission, Sender<O>, Receiver<I>), WireError> {
    // Nothing larger than a Hello is read before the peer authenticates.
    let mut frames = frames(r, HANDSHAKE_MAX_FRAME);
    let mut sink = FramedWrite::new(w, codec(HANDSHAKE_MAX_FRAME));
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()).await {
        Err(_) => return Err(WireError::Timeout),
        Ok(None) => return Err(WireError::Closed),
        Ok(Some(frame)) => {
            let frame = frame?;
            match decode::<Hello>(&frame) {
                Ok(hello) => hello,
                // Another version may lay its Hello out otherwise; its
                // first field is still the version, a varint.
                Err(e) => match leading_version(&frame) {
                    Some(v) if v != PROTOCOL_VERSION => Hello {
                        version: v,
                        token: String::new(),
                        role: crate::protocol::Role::Peer,
                    },
                    _ => return Err(e),
                },
            }
        }
    };
    let verdict = if hello.version != PROTOCOL_VERSION {
        Err(format!(
            "protocol version mismatch: peer speaks {}, this side speaks {}; \
             run the same dtask version everywhere",
            hello.version, PROTOCOL_VERSION
        ))
    } else {
        admit(&hello)
    };
    match verdict {
        Ok(admission) => {
            let welcome = Welcome::Accepted {
                id: admission.id,
                client_digest: admission.client_digest,
                max_value: admission.max_value,
            };
            sink.send(encode(&welcome)).await?;
            let (tx, rx) = established(frames, sink, max_frame);
            Ok((hello, admission, tx, rx))
        }
        Err(why) => {
            let _ = sink.send(encode(&Welcome::Refused(why.clone()))).await;
            Err(WireError::Refused(why))
        }
    }
}

/// The version a Hello starts with, read as every dtask has written it:
/// a little-endian base-128 varint.
fn leading_version(frame: &[u8]) -> Option<u32> {
    let mut v: u64 = 0;
    for (i, b) in frame.iter().take(5).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(v).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;

    #[test]
    fn a_message_the_writer_cannot_take_is_handed_back() {
        let (tx, rx) = relay::<crate::protocol::ToScheduler>();
        drop(rx);
        let msg = crate::protocol::ToScheduler::ReleaseAll;
        let (e, back) = tx.offer(msg).unwrap_err();
        assert_eq!(e, SendError::Closed);
        assert!(matches!(back, crate::protocol::ToScheduler::ReleaseAll));
        assert_eq!(tx.queued_bytes(), 0);
        let (tx, _rx) = relay::<crate::protocol::ToScheduler>();
        tx.cut();
        assert!(tx.offer(crate::protocol::ToScheduler::ReleaseAll).is_err());
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\xff",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            &[0xfb; 40],
        ] {
            assert!(decode::<Vec<crate::protocol::ToScheduler>>(bytes).is_err());
        }
    }

    #[test]
    fn frames_carry_big_values_out_of_band_and_back() {
        use crate::protocol::ToScheduler;
        let big = bytes::Bytes::from(vec![5u8; 2 << 20]);
        let msgs = vec![
            ToScheduler::Scatter {
                counted: false,
                session: 0,
                id: 1,
                values: vec![("k".into(), big.clone()), ("s".into(), "x".into())],
                broadcast: false,
                workers: vec![],
            },
            ToScheduler::Publish {
                topic: "t".into(),
                message: big.clone(),
            },
        ];
        let parts = encode_frame(&msgs);
        assert_eq!(parts.len(), 3, "two big strings in the tail");
        let mut frame = Vec::new();
        for p in &parts {
            frame.extend_from_slice(p);
        }
        let back: Vec<ToScheduler> = decode_frame(bytes::Bytes::from(frame).slice(4..)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{msgs:?}"));
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate_wildly() {
        // A Vec claiming 2^60 elements in a tiny frame.
        let bytes = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }

    /// Accepts one connection on `listener`, admitting only `token`.
    async fn admit_one_with_token(
        listener: tokio::net::TcpListener,
        token: &'static str,
    ) -> Result<(), WireError> {
        let (s, _) = listener.accept().await.unwrap();
        let right = crate::secret::Secret::new(token);
        accept::<u8, u8>(Incoming::Tcp(s), DEFAULT_MAX_FRAME, |h| {
            if right.matches(&h.token) {
                Ok(Admission {
                    id: 1,
                    client_digest: None,
                    max_value: None,
                })
            } else {
                Err(crate::secret::wrong_token())
            }
        })
        .await
        .map(|_| ())
    }

    #[tokio::test]
    async fn wrong_token_is_refused_with_reason() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(admit_one_with_token(listener, "right"));
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: "wrong".into(),
            role: Role::Peer,
        };
        let err = connect::<u8, u8>(&addr, hello).await.err().unwrap();
        assert!(err.to_string().contains("authentication failed"), "{err}");
        assert!(server.await.unwrap().is_err());
    }

    /// Sends `frame` as a Hello and returns the refusal the accepting side
    /// answered with.
    async fn refusal_of(frame: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(admit_one_with_token(listener, "right"));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&(frame.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(frame).await.unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut answer).await.unwrap();
        assert!(server.await.unwrap().is_err());
        match decode::<Welcome>(&answer).unwrap() {
            Welcome::Refused(why) => why,
            Welcome::Accepted { .. } => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn a_hello_from_older_dtasks_is_refused_naming_both_versions() {
        // What dtask of protocol 9 sent (bincode's varint layout): version,
        // the token's length and bytes, Role::Client with a name.
        let why = refusal_of(b"\x09\x05right\x00\x01\x01x").await;
        assert!(why.contains("peer speaks 9"), "{why}");
        assert!(
            why.contains(&format!("this side speaks {PROTOCOL_VERSION}")),
            "{why}"
        );
        // A version whose Hello this side cannot read at all.
        let why = refusal_of(b"\x07\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").await;
        assert!(why.contains("peer speaks 7"), "{why}");
        assert!(
            why.contains(&format!("this side speaks {PROTOCOL_VERSION}")),
            "{why}"
        );
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_naming_both() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(admit_one_with_token(listener, "right"));
        let hello = Hello {
            version: PROTOCOL_VERSION + 7,
            token: "right".into(),
            role: Role::Peer,
        };
        let err = connect::<u8, u8>(&addr, hello).await.err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains(&(PROTOCOL_VERSION + 7).to_string()), "{msg}");
        assert!(msg.contains(&PROTOCOL_VERSION.to_string()), "{msg}");
        assert!(server.await.unwrap().is_err());
    }
}
