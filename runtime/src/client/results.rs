//! Waiting for futures and fetching their results.

use super::*;
use crate::value::Head;
use std::borrow::Cow;

impl Client {
    /// Waits until all `futures` (or, with `first`, one of them) are done or
    /// `timeout` passes; returns (done, not done) keys. Errors and cancels
    /// count as done.
    pub async fn wait(
        &self,
        futures: &[Future],
        first: bool,
        timeout: Option<Duration>,
    ) -> Result<(Vec<String>, Vec<String>), ClientError> {
        let keys: Vec<String> = futures.iter().map(|f| f.key.clone()).collect();
        let mut rx = self.watch(keys.clone())?;
        let mut done = HashSet::new();
        let unique: HashSet<&String> = keys.iter().collect();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        // Until all are done, or with `first` until one is.
        while done.len() < unique.len() && (!first || done.is_empty()) {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => rx.recv().await,
            };
            let (k, _) = next.ok_or_else(|| self.lost_error())?;
            done.insert(k);
        }
        if done.is_empty() && deadline.is_some() && !unique.is_empty() {
            return Err(ClientError::Timeout(timeout.unwrap_or_default()));
        }
        let (d, n): (Vec<String>, Vec<String>) = keys.into_iter().partition(|k| done.contains(k));
        Ok((d, n))
    }

    /// Yields futures as they finish; more can be added while iterating.
    pub fn as_completed(&self, futures: Vec<Future>) -> AsCompleted {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let mut ac = AsCompleted {
            client: self.clone(),
            tx,
            rx,
            waiting: HashMap::new(),
            lost: Box::pin(async move { client.lost().await }),
        };
        for f in futures {
            ac.add(f);
        }
        ac
    }

    /// Sends task specs now and returns a future of the scheduler's answer,
    /// so that many batches can be in flight at once. Modules must have
    /// been uploaded. The answer lists accepted tasks that no connected
    /// worker could run (their `--workers`, `--resources` or memory limit
    /// rule every one out), with why, one per distinct reason.
    #[allow(clippy::type_complexity)]
    pub async fn submit_specs(
        &self,
        tasks: Vec<TaskSpec>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<(String, String)>, ClientError>> + use<>,
        ClientError,
    > {
        let mut tasks = tasks;
        let sent = self.send_big_args(&mut tasks).await?;
        let counted = self.inner.counted.load(Ordering::Relaxed);
        let session = self.inner.session;
        let rx = self.send_request(|id| ToScheduler::Submit {
            id,
            tasks,
            counted,
            session,
        })?;
        let client = self.clone();
        Ok(async move {
            let answer = rx.await.map_err(|_| client.lost_error())?;
            // The tasks now hold their big arguments as inputs; this
            // client need not.
            drop(sent);
            match answer {
                FromScheduler::Submitted {
                    refused,
                    unplaceable,
                    ..
                } if refused.is_empty() => Ok(unplaceable),
                FromScheduler::Submitted { refused, .. } => Err(ClientError::Refused(refused)),
                other => Err(ClientError::unexpected(other)),
            }
        })
    }

    /// Sends each argument over [`peer::CHUNK`] bytes straight to a worker
    /// (see [`Client::scatter_encoded`]) and passes it to its task as that
    /// scattered value instead, so big arguments never pass through the
    /// scheduler or its frame and value limits. Keys stay as they were,
    /// computed from the values. Returns the scattered values' futures, to
    /// hold until the tasks are submitted.
    async fn send_big_args(&self, tasks: &mut [TaskSpec]) -> Result<Vec<Future>, ClientError> {
        let big = |a: &Arg| matches!(a, Arg::Value(b) if b.len() as u64 > peer::CHUNK);
        if !tasks.iter().any(|t| t.args.iter().any(big)) {
            return Ok(Vec::new());
        }
        let values: Vec<Bytes> = tasks
            .iter()
            .flat_map(|t| t.args.iter())
            .filter_map(|a| match a {
                Arg::Value(b) if big(a) => Some(b.clone()),
                _ => None,
            })
            .collect();
        let futures = self.scatter_encoded(values, false, Vec::new()).await?;
        let mut keys = futures.iter().map(|f| f.key().to_string());
        for t in tasks.iter_mut() {
            for a in t.args.iter_mut() {
                if big(a) {
                    *a = Arg::Future(keys.next().expect("one key per big argument"));
                }
            }
        }
        Ok(futures)
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
        self.watch_with(keys, tx, false)
    }

    /// [`Client::watch_into`] for a receiver that reads the results: each
    /// that ends finished and not inline is then held for this connection
    /// from the moment it is reported, whoever else holds or releases it,
    /// until the receiver says it has read it ([`Client::read_over`], once
    /// per such outcome received) or the connection closes. A reader that
    /// does not hold what it reads (a gather under another client name, a
    /// task handed a key) cannot lose it before its first range.
    pub fn watch_reading_into(
        &self,
        keys: Vec<String>,
        tx: &mpsc::UnboundedSender<(String, Outcome)>,
    ) -> Result<(), ClientError> {
        self.watch_with(keys, tx, true)
    }

    fn watch_with(
        &self,
        keys: Vec<String>,
        tx: &mpsc::UnboundedSender<(String, Outcome)>,
        reads: bool,
    ) -> Result<(), ClientError> {
        // Reading waiters that stopped waiting, each done with its key.
        let mut gone = Vec::new();
        {
            let mut w = self.inner.watchers.lock().expect("watchers lock");
            let w = w.as_mut().ok_or_else(|| self.lost_error())?;
            for k in &keys {
                let waiting = w.entry(k.clone()).or_default();
                // Those who stopped waiting (a result awaited with a
                // timeout, polled again) go as the next one comes.
                waiting.retain(|(t, r)| {
                    let closed = t.is_closed();
                    if closed && *r {
                        gone.push(k.clone());
                    }
                    !closed
                });
                waiting.push((tx.clone(), reads));
            }
            // Counted from now, before any read of the same key can end:
            // its hold is let go of only once no reading waiter is left.
            if reads {
                let mut reading = self.inner.reading.lock().expect("reading lock");
                for k in &keys {
                    reading.entry(k.clone()).or_default().waiters += 1;
                }
            }
        }
        let sent = self.send(ToScheduler::Watch { keys, reads });
        self.reads_over(gone.iter().map(String::as_str));
        sent
    }

    /// A receiver of [`Client::watch_reading_into`] has read `key`, a
    /// finished result it was told of that was not inline (or gave up
    /// reading it): once every such receiver has, the scheduler lets go of
    /// the hold it kept for them.
    pub fn read_over(&self, key: &str) {
        self.reads_over(std::iter::once(key));
    }

    /// [`Client::read_over`] for each of `keys`, in one message.
    pub fn reads_over<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        self.inner.reads_over(keys);
    }

    /// The value of a finished result, from wherever it is. A big byte
    /// string or string is read range by range straight into the value's
    /// own buffer, never held encoded beside it.
    ///
    /// A holder lost midway (it died, or dropped the result) is left for
    /// the result's next copy: where the scheduler says it is now, once it
    /// has been computed again if it must be (see [`REFETCHES`]).
    pub async fn fetch(&self, key: &str, at: &Located) -> Result<Value, ClientError> {
        if let Some(b) = &at.inline {
            return decoded(key, b.clone());
        }
        // A copy lost partway is gone on from by the stream itself.
        let mut payload: Vec<u8> = Vec::new();
        let kind = self
            .stream_value(key, at, |range| {
                if payload.capacity() == 0 {
                    payload = value::huge::buffer(range.len)?;
                }
                payload.extend_from_slice(range.bytes);
                Ok(())
            })
            .await?;
        Ok(match kind {
            Streamed::Bytes => Value::Binary(payload),
            Streamed::Text => {
                Value::from(String::from_utf8(payload).map_err(|_| ClientError::Data {
                    key: key.to_string(),
                    reason: "a string result that is not UTF-8".into(),
                })?)
            }
            Streamed::Other(v) => v,
            // Not asked for (stream_value gathers arrays whole).
            Streamed::Items | Streamed::Encoded => {
                return Err(ClientError::Data {
                    key: key.to_string(),
                    reason: "an array streamed where it was to be gathered whole".into(),
                });
            }
        })
    }

    /// Streams a finished result's payload to `each` as it arrives, range
    /// by range ([`Payload`]: with the payload's whole length and whether
    /// it is text): a byte string's bytes or a string's UTF-8, never
    /// holding the value. Any other value is
    /// gathered whole and comes back decoded. An error `each` returns stops
    /// the stream and comes back as [`ClientError::Invalid`].
    pub async fn stream_value(
        &self,
        key: &str,
        at: &Located,
        mut each: impl FnMut(Payload<'_>) -> Result<(), String>,
    ) -> Result<Streamed, ClientError> {
        self.stream_pieces(key, at, false, |piece| match piece {
            Piece::Payload(p) => each(p),
            Piece::Item(_) | Piece::Encoded { .. } => {
                Err("MessagePack, which was not asked for".into())
            }
        })
        .await
    }

    /// [`Client::stream_value`], but with `items` nothing is decoded: an
    /// array's elements go to `each` one at a time as they arrive, each as
    /// its MessagePack ([`Piece::Item`], in order: an element is held
    /// whole, alone, never the whole array), and any other value's
    /// MessagePack goes to `each` range by range ([`Piece::Encoded`]), for
    /// the caller to keep where it likes. A value lost before any of it
    /// went to `each` is read again from its next copy.
    pub async fn stream_pieces(
        &self,
        key: &str,
        at: &Located,
        items: bool,
        mut each: impl FnMut(Piece<'_>) -> Result<(), String>,
    ) -> Result<Streamed, ClientError> {
        enum State {
            Start,
            Payload {
                len: u64,
                text: bool,
            },
            /// Elements still to come, and the bytes of the next ones.
            Items {
                left: u64,
                next: Vec<u8>,
                /// Bytes of `next` to wait for before looking for the end
                /// of an element that was not whole: twice what was there
                /// when it was last looked for, so that an element of
                /// many small values is scanned in linear time in all.
                wait: usize,
            },
            Other(Vec<u8>),
            /// Handed on as it arrives.
            Encoded,
        }
        let bad = |why: String| ClientError::Data {
            key: key.to_string(),
            reason: format!("its result is not valid MessagePack: {why}"),
        };
        // A copy lost partway is gone on from by `stream_encoded`, which
        // hands out only what follows what went out before.
        let mut state = State::Start;
        let mut invalid = None;
        let mut received = 0u64;
        let streamed = self
            .stream_encoded(key, at, |total, chunk| {
                received += chunk.len() as u64;
                let all_in = received >= total;
                let mut chunk = chunk;
                if let State::Start = state {
                    // The first range holds the whole header: it is the whole
                    // value or megabytes of it.
                    match value::head(chunk) {
                        Head::Payload { at, len, text } if at as u64 + len == total => {
                            state = State::Payload { len, text };
                            return each(Piece::Payload(Payload {
                                len,
                                text,
                                bytes: &chunk[at..],
                            }));
                        }
                        _ => match value::array_head(chunk) {
                            Some((left, at)) if items => {
                                chunk = &chunk[at..];
                                state = State::Items {
                                    left,
                                    next: Vec::new(),
                                    wait: 0,
                                };
                            }
                            _ if items => state = State::Encoded,
                            _ => {
                                state =
                                    State::Other(Vec::with_capacity(total.min(1 << 30) as usize))
                            }
                        },
                    }
                }
                match &mut state {
                    State::Payload { len, text } => each(Piece::Payload(Payload {
                        len: *len,
                        text: *text,
                        bytes: chunk,
                    })),
                    State::Items { left, next, wait } => {
                        next.extend_from_slice(chunk);
                        let mut used = 0;
                        while *left > 0 {
                            let rest = &next[used..];
                            if rest.len() < *wait && !all_in {
                                break;
                            }
                            let (n, item) = match first_item(rest) {
                                Ok(Some(n)) => (n, &rest[..n]),
                                Ok(None) => {
                                    *wait = rest.len().saturating_mul(2);
                                    break;
                                }
                                Err(why) => {
                                    invalid = Some(why.clone());
                                    return Err(why);
                                }
                            };
                            *wait = 0;
                            *left -= 1;
                            each(Piece::Item(item))?;
                            used += n;
                        }
                        next.drain(..used);
                        Ok(())
                    }
                    State::Other(buf) => {
                        buf.extend_from_slice(chunk);
                        Ok(())
                    }
                    State::Encoded => each(Piece::Encoded {
                        total,
                        bytes: chunk,
                    }),
                    State::Start => unreachable!("left above"),
                }
            })
            .await;
        if let Some(why) = invalid {
            return Err(bad(why));
        }
        streamed?;
        match state {
            State::Payload { text: false, .. } | State::Start => Ok(Streamed::Bytes),
            State::Payload { text: true, .. } => Ok(Streamed::Text),
            State::Items { left: 0, next, .. } if next.is_empty() => Ok(Streamed::Items),
            State::Items { left, next, .. } => Err(bad(format!(
                "it ended {} short of its last {left} elements",
                value::human_bytes(next.len() as u64)
            ))),
            State::Other(buf) => decoded(key, buf.into()).map(Streamed::Other),
            State::Encoded => Ok(Streamed::Encoded),
        }
    }

    /// [`Client::fetch`] without decoding: the result's MessagePack bytes,
    /// as they arrived (a big one is a slice of what was read, not a copy).
    pub async fn fetch_encoded(&self, key: &str, at: &Located) -> Result<Bytes, ClientError> {
        let mut at = Cow::Borrowed(at);
        let mut again = Refetch::default();
        loop {
            if let Some(b) = &at.inline {
                return Ok(b.clone());
            }
            match peer::fetch(&at.who_has, &self.inner.peer_token, key, at.nbytes).await {
                Ok(b) => return Ok(b),
                Err(reason) => at = Cow::Owned(self.relocate(key, &mut again, reason).await?),
            }
        }
    }

    /// Where `key` is now, after fetching it failed (`why`): its holder
    /// died, or dropped it (an unreadable spill file). The scheduler is
    /// asked again, which answers once the result is computed again if it
    /// must be. The first time at once, then after a pause that doubles
    /// from 200 ms (the scheduler may not have heard of the loss yet);
    /// after [`REFETCHES`] tries, the failure itself. The copy it is told
    /// of is held for this connection until `again` is dropped (see
    /// [`Client::watch_reading_into`]).
    async fn relocate(
        &self,
        key: &str,
        again: &mut Refetch,
        why: String,
    ) -> Result<Located, ClientError> {
        if again.tries >= REFETCHES {
            return Err(ClientError::Data {
                key: key.to_string(),
                reason: why,
            });
        }
        if again.tries > 0 {
            tokio::time::sleep(Duration::from_millis(100 << again.tries)).await;
        }
        again.tries += 1;
        tracing::debug!("fetching {key} failed ({why}); asking the scheduler where it is now");
        // The copy it was told of before, if any, is done with.
        let told = again.told.insert(Told::watch(self, vec![key.to_string()])?);
        let (_, outcome) = told.next().await.ok_or_else(|| self.lost_error())?;
        match outcome {
            Outcome::Finished(at) => Ok(at),
            other => Err(unfinished(key, other)),
        }
    }

    /// Streams a finished result's MessagePack bytes to `each`, range by
    /// range with the whole length (one call for a small result), without
    /// ever holding the whole value: what `dtask gather -r` writes out as
    /// it arrives. An error `each` returns stops the stream and comes back
    /// as [`ClientError::Invalid`].
    ///
    /// If every holder of the result is lost partway, the stream goes on
    /// from its next copy (computed again, for a task): that copy's first
    /// bytes are read again and checked against the ones already handed
    /// out (by hash), and only what follows them goes to `each`. A copy
    /// that differs there (a task giving other bytes each run) ends the
    /// stream with [`ClientError::Data`].
    pub async fn stream_encoded(
        &self,
        key: &str,
        at: &Located,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(), ClientError> {
        let mut at = Cow::Borrowed(at);
        let mut again = Refetch::default();
        let mut resume = Resume::default();
        let mut differs = None;
        loop {
            resume.restart();
            let mut hand = |total: u64, b: &[u8]| match resume.fresh(total, b) {
                Ok([]) if resume.given > 0 => Ok(()),
                Ok(fresh) => each(total, fresh),
                Err(why) => {
                    differs = Some(why.clone());
                    Err(why)
                }
            };
            let streamed = match &at.inline {
                Some(b) => hand(b.len() as u64, b).map_err(peer::StreamError::Sink),
                None => {
                    peer::stream(&at.who_has, &self.inner.peer_token, key, |total, b| {
                        std::future::ready(hand(total, &b))
                    })
                    .await
                }
            };
            match streamed {
                Ok(()) => return Ok(()),
                Err(peer::StreamError::Sink(_)) if differs.is_some() => {
                    return Err(ClientError::Data {
                        key: key.to_string(),
                        reason: differs.unwrap_or_default(),
                    });
                }
                Err(peer::StreamError::Sink(why)) => return Err(ClientError::Invalid(why)),
                // Lost partway, or before any of it went out: from its
                // next copy, unless it was let go of meanwhile.
                Err(peer::StreamError::Source(reason)) => {
                    if resume.given > 0
                        && matches!(
                            self.status(vec![key.to_string()]).await.as_deref(),
                            Ok([(_, None)])
                        )
                    {
                        return Err(ClientError::Data {
                            key: key.to_string(),
                            reason: format!("{reason} (it was released while it was being read)"),
                        });
                    }
                    at = Cow::Owned(self.relocate(key, &mut again, reason).await?)
                }
            }
        }
    }

    /// Turns an outcome into the result value or the task's error.
    pub async fn resolve(&self, key: &str, outcome: Outcome) -> Result<Value, ClientError> {
        match outcome {
            // Big byte strings and strings are read straight into the value's
            // own buffer, with no encoded copy beside it.
            Outcome::Finished(at) => self.fetch(key, &at).await,
            other => decoded(key, self.resolve_encoded(key, other).await?),
        }
    }

    /// [`Client::resolve`] without decoding: the result's MessagePack bytes.
    pub async fn resolve_encoded(&self, key: &str, outcome: Outcome) -> Result<Bytes, ClientError> {
        match outcome {
            Outcome::Finished(at) => self.fetch_encoded(key, &at).await,
            other => Err(unfinished(key, other)),
        }
    }

    /// Waits for `key` and returns its result (held for this connection
    /// until it is read, see [`Client::watch_reading_into`]).
    pub async fn result(&self, key: &str) -> Result<Value, ClientError> {
        let mut told = Told::watch(self, vec![key.to_string()])?;
        let (_, outcome) = told.next().await.ok_or_else(|| self.lost_error())?;
        self.resolve(key, outcome).await
    }

    /// Results of `keys`, in order; the first failure is returned as the
    /// error.
    pub async fn gather(&self, keys: &[String]) -> Result<Vec<Value>, ClientError> {
        self.gather_with(keys, Errors::Raise).await
    }

    /// Results of `keys`, in order; with [`Errors::Skip`] failed ones are
    /// left out instead of failing the whole gather.
    ///
    /// Results small enough to come with their outcome are decoded as they
    /// arrive, while later ones are still running; the others are fetched,
    /// in order, once every key has ended. A key asked for twice is
    /// watched once and given twice.
    pub async fn gather_with(
        &self,
        keys: &[String],
        errors: Errors,
    ) -> Result<Vec<Value>, ClientError> {
        let Outcomes {
            order,
            mut uses,
            mut got,
            _told,
        } = self.outcomes(keys, decoded).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, id) in keys.iter().zip(order) {
            uses[id] -= 1;
            let last = uses[id] == 0;
            let slot = got[id].as_mut().expect("every key reported");
            if let Gathered::Outcome(o) = slot {
                let o = std::mem::replace(o, Outcome::Unknown);
                *slot = Gathered::Value(self.resolve(k, o).await);
            }
            let Gathered::Value(result) = slot else {
                unreachable!("resolved above")
            };
            match result {
                Ok(v) if last => out.push(std::mem::replace(v, Value::Nil)),
                Ok(v) => out.push(v.clone()),
                Err(ClientError::Task(_) | ClientError::Cancelled(_)) if errors == Errors::Skip => {
                }
                Err(_) => {
                    let Some(Gathered::Value(Err(e))) = got[id].take() else {
                        unreachable!("an error above")
                    };
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

/// A gathered key's result (`V`), or its outcome until it is resolved.
enum Gathered<V> {
    Value(V),
    Outcome(Outcome),
}

/// The outcomes of the keys of a gather, each distinct key watched once.
struct Outcomes<V> {
    /// The number of each position's key.
    order: Vec<usize>,
    /// How many positions each number has.
    uses: Vec<u32>,
    /// Each number's result or outcome.
    got: Vec<Option<Gathered<V>>>,
    /// The results to read, held until the gather is over.
    _told: Told,
}

/// A fetch's tries at finding its result again after losing its holder
/// (see `Client::relocate`), and the holds on the copies it was told of,
/// let go of once it is over.
#[derive(Default)]
struct Refetch {
    tries: u32,
    told: Option<Told>,
}

/// How far a stream of a result's bytes has got, to go on from another copy
/// of it: the bytes handed out, their hash, and while a new copy's first
/// bytes are read again, how many of those have come and their hash.
#[derive(Default)]
struct Resume {
    given: u64,
    total: Option<u64>,
    hash: blake3::Hasher,
    check: Option<(u64, blake3::Hasher)>,
}

impl Resume {
    /// A new copy begins: its first [`Resume::given`] bytes are checked,
    /// not handed out.
    fn restart(&mut self) {
        self.check = (self.given > 0).then(|| (0, blake3::Hasher::new()));
    }

    /// What of `chunk`, the next bytes of a copy `total` bytes long, is
    /// still to be handed out; an error if the copy differs from what
    /// went out before.
    fn fresh<'a>(&mut self, total: u64, chunk: &'a [u8]) -> Result<&'a [u8], String> {
        let differs = |what: String| {
            format!(
                "its holder was lost after {} of it went out, and its next copy (computed \
                 again) {what}: the task gives other bytes each run; gather it again for all \
                 of the new copy",
                crate::value::human_bytes(self.given)
            )
        };
        if let Some(before) = self.total.filter(|&t| t != total) {
            return Err(differs(format!(
                "is {} long, not {}",
                crate::value::human_bytes(total),
                crate::value::human_bytes(before)
            )));
        }
        self.total = Some(total);
        let chunk = match &mut self.check {
            None => chunk,
            Some((seen, hash)) => {
                let n = (self.given - *seen).min(chunk.len() as u64) as usize;
                hash.update(&chunk[..n]);
                *seen += n as u64;
                if *seen == self.given {
                    if hash.finalize() != self.hash.finalize() {
                        return Err(differs("begins with other bytes".into()));
                    }
                    self.check = None;
                }
                &chunk[n..]
            }
        };
        self.hash.update(chunk);
        self.given += chunk.len() as u64;
        Ok(chunk)
    }
}

/// A reading watch (see [`Client::watch_reading_into`]) and the finished
/// results it was told of that the scheduler holds for this connection:
/// each is done with (read or given up on, [`Client::read_over`]) when this
/// is dropped, and so is whatever it was told of and never received.
struct Told {
    client: Client,
    rx: mpsc::UnboundedReceiver<(String, Outcome)>,
    held: Vec<String>,
}

impl Told {
    /// Watches `keys`, to read their results.
    fn watch(client: &Client, keys: Vec<String>) -> Result<Self, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        client.watch_reading_into(keys, &tx)?;
        Ok(Self {
            client: client.clone(),
            rx,
            held: Vec::new(),
        })
    }

    /// The next key to end, and how.
    async fn next(&mut self) -> Option<(String, Outcome)> {
        let (key, outcome) = self.rx.recv().await?;
        if outcome.held_for_readers() {
            self.held.push(key.clone());
        }
        Some((key, outcome))
    }
}

impl Drop for Told {
    fn drop(&mut self) {
        // Nothing more comes in (a waiter that stopped listening is done
        // with its key as its outcome comes); what came is done with.
        self.rx.close();
        while let Ok((key, outcome)) = self.rx.try_recv() {
            if outcome.held_for_readers() {
                self.held.push(key);
            }
        }
        if !self.held.is_empty() {
            self.client.reads_over(self.held.iter().map(String::as_str));
        }
    }
}

impl Client {
    /// Waits for every key of `keys` to end; a result small enough to come
    /// with its outcome is made a `V` by `inline` as it arrives (while
    /// later keys still run), and the others are left as outcomes. A key
    /// asked for twice is watched once.
    async fn outcomes<V>(
        &self,
        keys: &[String],
        inline: impl Fn(&str, Bytes) -> V,
    ) -> Result<Outcomes<V>, ClientError> {
        // Each distinct key's number, each position's, and how many
        // positions each number still has to fill.
        let mut ids: rustc_hash::FxHashMap<&str, usize> =
            rustc_hash::FxHashMap::with_capacity_and_hasher(keys.len(), Default::default());
        let mut uses: Vec<u32> = Vec::with_capacity(keys.len());
        let order: Vec<usize> = keys
            .iter()
            .map(|k| {
                let next = uses.len();
                let id = *ids.entry(k.as_str()).or_insert(next);
                if id == next {
                    uses.push(0);
                }
                uses[id] += 1;
                id
            })
            .collect();
        let unique: Vec<String> = if uses.len() == keys.len() {
            keys.to_vec()
        } else {
            let mut seen = vec![false; uses.len()];
            keys.iter()
                .zip(&order)
                .filter(|(_, id)| !std::mem::replace(&mut seen[**id], true))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut told = Told::watch(self, unique)?;
        let mut got: Vec<Option<Gathered<V>>> = (0..uses.len()).map(|_| None).collect();
        let mut pending = uses.len();
        while pending > 0 {
            let (k, o) = told.next().await.ok_or_else(|| self.lost_error())?;
            let Some(&id) = ids.get(k.as_str()) else {
                continue;
            };
            if got[id].is_some() {
                continue;
            }
            pending -= 1;
            got[id] = Some(match o {
                Outcome::Finished(at) if at.inline.is_some() => {
                    Gathered::Value(inline(&k, at.inline.expect("checked inline")))
                }
                o => Gathered::Outcome(o),
            });
        }
        Ok(Outcomes {
            order,
            uses,
            got,
            _told: told,
        })
    }

    /// The results of `keys`, in order, as their MessagePack bytes (never
    /// decoded here), or the first failure. With a `budget`, the results'
    /// bytes (each as often as it is asked for) are added up from their
    /// outcomes before any is fetched, and more than the budget fails the
    /// gather with [`ClientError::Invalid`]: a task's gather into its own
    /// memory is refused before the values are brought to its worker.
    pub async fn gather_encoded(
        &self,
        keys: &[String],
        budget: Option<u64>,
    ) -> Result<Vec<Bytes>, ClientError> {
        let Outcomes {
            order,
            mut got,
            _told,
            ..
        } = self.outcomes(keys, |_, b| b).await?;
        if let Some(budget) = budget {
            let total: u64 = order
                .iter()
                .map(|id| match &got[*id] {
                    Some(Gathered::Value(b)) => b.len() as u64,
                    Some(Gathered::Outcome(Outcome::Finished(at))) => at.nbytes,
                    _ => 0,
                })
                .fold(0, u64::saturating_add);
            if total > budget {
                // A failure among them is the better news.
                for (k, id) in keys.iter().zip(&order) {
                    if let Some(Gathered::Outcome(o)) = &got[*id]
                        && !matches!(o, Outcome::Finished(_))
                    {
                        return Err(self.resolve_encoded(k, o.clone()).await.unwrap_err());
                    }
                }
                return Err(ClientError::Invalid(format!(
                    "the {} results gathered take {total} bytes, more than the {budget} bytes \
                     allowed",
                    keys.len()
                )));
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (k, id) in keys.iter().zip(order) {
            let slot = got[id].as_mut().expect("every key reported");
            if let Gathered::Outcome(o) = slot {
                let o = std::mem::replace(o, Outcome::Unknown);
                *slot = Gathered::Value(self.resolve_encoded(k, o).await?);
            }
            let Gathered::Value(bytes) = slot else {
                unreachable!("resolved above")
            };
            out.push(bytes.clone());
        }
        Ok(out)
    }
}

/// A range of a byte string's or string's payload, as
/// [`Client::stream_value`] streams it.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    /// The whole payload's length.
    pub len: u64,
    /// Whether it is a string's (UTF-8) rather than a byte string's.
    pub text: bool,
    /// This range.
    pub bytes: &'a [u8],
}

/// How many bytes the first of an array's elements in `bytes` takes;
/// `None` if not all of it is there. An error for bytes that are not one
/// value, or one nested deeper than a value may be inside an array.
fn first_item(bytes: &[u8]) -> Result<Option<usize>, String> {
    let Some((n, deepest)) = value::measure(bytes).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    // One level deeper inside the array.
    if deepest >= value::MAX_DECODE_DEPTH {
        return Err("nested too deeply".into());
    }
    Ok(Some(n))
}

/// What [`Client::stream_pieces`] hands its sink.
#[derive(Debug)]
pub enum Piece<'a> {
    /// A range of a byte string's or string's payload.
    Payload(Payload<'a>),
    /// The next element of an array: its MessagePack, one whole value.
    Item(&'a [u8]),
    /// A range of the MessagePack of a value that is neither a byte
    /// string, a string nor an array, in order.
    Encoded {
        /// The whole encoding's length.
        total: u64,
        /// This range.
        bytes: &'a [u8],
    },
}

/// What [`Client::stream_value`] found a result to be.
#[derive(Debug)]
pub enum Streamed {
    /// A byte string: its bytes went to the sink.
    Bytes,
    /// A string: its UTF-8 went to the sink.
    Text,
    /// An array: its elements went to the sink, in order
    /// ([`Client::stream_pieces`] with `items`).
    Items,
    /// Any other value, decoded whole (nothing went to the sink).
    Other(Value),
    /// Any other value: its MessagePack went to the sink
    /// ([`Client::stream_pieces`] with `items`).
    Encoded,
}

/// Times fetching a result is tried again after its holder is lost (see
/// `Client::relocate`): about 3 s of pauses in all, past the time a
/// scheduler takes to hear that a worker died (at once, when its process
/// is killed) and to start computing its results again.
pub const REFETCHES: u32 = 5;

/// The error of `key`, which ended other than finished.
fn unfinished(key: &str, outcome: Outcome) -> ClientError {
    match outcome {
        Outcome::Error(e) => ClientError::Task(Box::new(e)),
        Outcome::Cancelled => ClientError::Cancelled(key.to_string()),
        Outcome::Finished(_) | Outcome::Unknown => ClientError::UnknownKey(key.to_string()),
    }
}

/// The value a result's MessagePack `bytes` hold (as
/// [`Client::resolve_encoded`] gives them), or a data error naming `key`.
pub fn decoded(key: &str, bytes: Bytes) -> Result<Value, ClientError> {
    value::decode(&bytes).map_err(|e| ClientError::Data {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::Resume;

    /// The first bytes of a copy `total` bytes long, `read`, handed to `r`
    /// in ranges of `step` bytes: what goes out, or the error.
    fn feed(r: &mut Resume, read: &[u8], total: usize, step: usize) -> Result<Vec<u8>, String> {
        r.restart();
        let mut out = Vec::new();
        for range in read.chunks(step) {
            out.extend_from_slice(r.fresh(total as u64, range)?);
        }
        Ok(out)
    }

    #[test]
    fn a_stream_goes_on_from_a_copy_whose_first_bytes_match_what_went_out() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for (cut, step) in [(1, 7), (4096, 4096), (5000, 3), (9999, 1000)] {
            let mut r = Resume::default();
            let mut out = feed(&mut r, &value[..cut], value.len(), 1000).unwrap();
            // The copy lost after `cut` bytes; the next one, read in other
            // ranges, gives only what follows them.
            let rest = feed(&mut r, &value, value.len(), step).unwrap();
            assert_eq!(rest.len(), value.len() - cut);
            out.extend(rest);
            assert_eq!(out, value, "cut at {cut}, ranges of {step}");
        }
    }

    #[test]
    fn a_next_copy_that_differs_from_what_went_out_is_refused() {
        let value = vec![7u8; 1000];
        let mut r = Resume::default();
        r.restart();
        r.fresh(1000, &value[..600]).unwrap();
        // Other bytes within what went out: refused, and nothing of it
        // handed out.
        let mut other = value.clone();
        other[599] = 8;
        let e = feed(&mut r, &other, 1000, 100).unwrap_err();
        assert!(e.contains("begins with other bytes"), "{e}");
        // Another length.
        let mut r = Resume::default();
        r.restart();
        r.fresh(1000, &value[..10]).unwrap();
        let e = feed(&mut r, &value[..999], 999, 100).unwrap_err();
        assert!(e.contains("is 999 B long, not 1000 B"), "{e}");
        // Other bytes only past what went out are the copy's own.
        let mut r = Resume::default();
        r.restart();
        r.fresh(1000, &value[..600]).unwrap();
        let mut later = value.clone();
        later[600] = 9;
        assert_eq!(feed(&mut r, &later, 1000, 100).unwrap(), &later[600..]);
    }
}
