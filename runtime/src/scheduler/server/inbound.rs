//! The core loop's handling of what arrives: connections, frames,
//! timers and dashboard questions, applied to the state machine, and the
//! commands it answers with sent out.

use super::*;

impl Core {
    pub(super) fn inbound(&mut self, mut inbound: Inbound) {
        // Asked whether the scheduler is there: answered at once, ahead of
        // what is held back (a release going on, the journal catching up),
        // since a ping changes nothing.
        if let Inbound::Msgs { id, msgs } = &mut inbound
            && msgs.iter().any(|m| matches!(m, ToScheduler::Ping))
        {
            msgs.retain(|m| !matches!(m, ToScheduler::Ping));
            self.deliver(*id, FromScheduler::Pong);
            if msgs.is_empty() {
                return;
            }
        }
        // A client whose holder's big release goes on waits for it: what
        // it sends, and its leaving, are held back in order.
        if let Inbound::Msgs { id, .. } | Inbound::Closed { id } = &inbound
            && self.held_back(*id)
        {
            self.park(inbound);
            return;
        }
        match inbound {
            Inbound::Dashboard(q) => {
                let _ = q.reply.send(self.view(q.ask));
            }
            Inbound::Connected {
                id,
                role,
                tx,
                hangup,
                pause,
            } => {
                let worker_credential = !matches!(role, Role::Client { .. });
                let input = match role {
                    Role::Client { name, session } => Input::ClientConnected {
                        client: id,
                        name,
                        session,
                    },
                    // A task's client does not reconnect (a new one is made):
                    // nothing would come back for its holds.
                    Role::Tasks => Input::ClientConnected {
                        client: id,
                        name: None,
                        session: 0,
                    },
                    Role::Worker {
                        nthreads,
                        data_addr,
                        name,
                        resources,
                        memory_limit,
                        restarts,
                    } => {
                        tracing::info!(
                            "worker {id} ({name}) joined with {nthreads} slots, data at {data_addr}"
                        );
                        Input::WorkerConnected {
                            worker: id,
                            nthreads,
                            data_addr,
                            name,
                            resources,
                            memory_limit,
                            restarts,
                        }
                    }
                    Role::Peer => return,
                };
                let is_worker = matches!(input, Input::WorkerConnected { .. });
                let session = match &input {
                    Input::ClientConnected { session, .. } => *session,
                    _ => 0,
                };
                let tx = if is_worker {
                    self.faults.delay.in_front_of(tx)
                } else {
                    tx
                };
                self.conns.insert(
                    id,
                    Conn {
                        tx,
                        hangup,
                        pause,
                        is_worker,
                        worker_credential,
                        session,
                        last_seen: tokio::time::Instant::now(),
                        timers: Timers::default(),
                    },
                );
                self.apply(input);
            }
            Inbound::Closed { id } => {
                if let Some(conn) = self.conns.remove(&id) {
                    self.apply(if conn.is_worker {
                        tracing::info!("worker {id} left");
                        Input::WorkerDisconnected { worker: id }
                    } else {
                        Input::ClientDisconnected { client: id }
                    });
                }
            }
            Inbound::Msgs { id, msgs } => {
                // A connection given up on (too slow, silent) may still
                // have messages in flight: they are dropped.
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                c.last_seen = tokio::time::Instant::now();
                let mut msgs = msgs.into_iter();
                while let Some(msg) = msgs.next() {
                    self.message(id, msg);
                    // A big release sent: what follows it waits.
                    if self.state.waits(id) {
                        let msgs: Vec<_> = msgs.collect();
                        if !msgs.is_empty() {
                            self.park(Inbound::Msgs { id, msgs });
                        }
                        break;
                    }
                }
            }
            Inbound::Timeout { client, id } => {
                if let Some(c) = self.conns.get_mut(&client) {
                    c.timers.0.remove(&id);
                }
                self.apply(Input::PrimitiveTimeout { client, id })
            }
            Inbound::RejoinWindowClosed => self.apply(Input::RejoinWindowClosed),
            Inbound::GraceOver(input) => self.apply(input),
            Inbound::CheckWorkers => {
                // Only after writing failed (records were dropped) does the
                // journal need the whole state, at most once a tick.
                if let Some(j) = &self.journal
                    && j.needs_snapshot()
                {
                    j.snapshot(self.state.snapshot());
                }
                let now = tokio::time::Instant::now();
                let silent: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.is_worker && now - c.last_seen > self.worker_timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for id in silent {
                    tracing::warn!(
                        "worker {id} sent nothing for {:?} (hung?); treating it as dead \
                         and running its tasks elsewhere",
                        self.worker_timeout
                    );
                    // Dropping its sender stops the writing; the hangup
                    // stops the reading, which closes the socket, so that a
                    // worker that was only cut off learns it and rejoins.
                    if let Some(c) = self.conns.remove(&id) {
                        c.hangup.notify_one();
                    }
                    self.apply(Input::WorkerDisconnected { worker: id });
                }
            }
        }
    }

    /// Answers a dashboard request from what the scheduler keeps up to
    /// date anyway (no walk over all tasks).
    pub(super) fn view(
        &self,
        ask: crate::scheduler::dashboard::Ask,
    ) -> crate::scheduler::dashboard::View {
        use crate::scheduler::dashboard::{self as d, Ask, View};
        let clients = self.conns.values().filter(|c| !c.is_worker).count();
        match ask {
            Ask::Counts => View::Counts(d::Counts {
                tasks: self.state.totals().tasks,
                workers: self.conns.values().filter(|c| c.is_worker).count(),
                clients,
            }),
            Ask::Status { after } => View::Status(Box::new(d::StatusView {
                now_ms: now_ms(),
                totals: self.state.totals(),
                clients,
                functions: self.state.functions(d::STATUS_FUNCTIONS),
                workers: self.state.workers(),
                spans: self.state.spans(after, d::STATUS_SPANS),
            })),
            Ask::Task(key) => View::Task(self.state.describe(&key).map(Box::new)),
            Ask::Errors => View::Errors(self.state.failures(usize::MAX)),
            Ask::Primitives => {
                View::Primitives(Box::new(self.state.primitives_summary(d::PRIMITIVES)))
            }
            Ask::Metrics => View::Metrics(Box::new(d::MetricsView {
                totals: self.state.totals(),
                clients,
                functions: self.state.functions(d::METRICS_FUNCTIONS),
                workers: self.state.workers(),
                stats: self.state.stats(),
                primitives: self.state.primitives_summary(d::PRIMITIVES),
                rss_bytes: crate::resident_bytes(),
                journal: self.journal.as_ref().map(|j| {
                    let h = j.health();
                    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    (
                        load(&h.bytes),
                        load(&h.records),
                        load(&h.syncs),
                        load(&h.sync_micros) as f64 / 1e6,
                    )
                }),
            })),
        }
    }

    /// Applies `over`, a grace running out, after `after_ms`.
    fn grace_over_after(&self, after_ms: u64, over: Input) {
        let timers = self.timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let _ = timers.send(Inbound::GraceOver(over)).await;
        });
    }

    /// Sends `msg`, the answer to a request asked once per session (see
    /// [`once`]), to the connection that asked it last, keeping it for a
    /// copy asked again. `may_lose`: one `DTASK_FAULT_LOSE_ANSWER` loses
    /// (a retry's, a new actor's).
    fn answer_once(&mut self, to: ClientId, msg: FromScheduler, may_lose: bool) {
        let id = msg.request_id().expect("an answer to a request");
        let to = self.once.answered(to, id, &msg);
        if may_lose && self.faults.lose_answer() {
            tracing::warn!("fault injection: lost request {id}'s answer, cutting client {to} off");
            self.overflowed.push(to);
            return;
        }
        self.send(to, msg);
    }

    /// Sends `msg` to connection `id`.
    ///
    /// With a journal, what goes to clients (never to workers) waits until
    /// the records of the turn that made it are in the journal's file
    /// ([`Core::release_journaled`]): a client is never told of a change
    /// (a submit taken, a queue item put) that a scheduler killed right
    /// after would not have on its restart.
    pub(super) fn send(&mut self, id: u64, msg: FromScheduler) {
        match self.conns.get(&id) {
            Some(c) if self.journal.is_some() && !c.is_worker => self.held.push((id, msg)),
            Some(_) => self.deliver(id, msg),
            None => {}
        }
    }

    /// Hands `msg` to connection `id`'s writer.
    fn deliver(&mut self, id: u64, msg: FromScheduler) {
        let msg = within_one_frame(msg, MOST_IN_ONE_ANSWER);
        if let Some(c) = self.conns.get(&id)
            && let Err(e @ connection::SendError::Overflow { .. }) = c.tx.send(msg)
        {
            tracing::warn!("disconnecting client {id}: it stopped reading ({e})");
            self.overflowed.push(id);
        }
    }

    /// Ends a turn's messages to clients: they wait for every write handed
    /// to the journal so far, behind those of earlier turns, and whatever
    /// the journal's file has reached goes out.
    pub(super) fn release_journaled(&mut self) {
        // Cutting off a client that overflowed as its messages went out
        // can make more (a lease it held granted to the next in line):
        // those go the same way, after their records.
        loop {
            let Some(j) = &self.journal else {
                return;
            };
            if !self.held.is_empty() {
                j.hand_over();
                let sent = j.sent();
                let held = std::mem::take(&mut self.held);
                match self.journaling.back_mut() {
                    Some((after, waiting)) if *after >= sent => waiting.extend(held),
                    _ => self.journaling.push_back((sent, held)),
                }
            }
            let reached = j.reached();
            while self
                .journaling
                .front()
                .is_some_and(|(after, _)| *after <= reached)
            {
                let (_, ready) = self.journaling.pop_front().expect("looked at");
                for (id, msg) in ready {
                    self.deliver(id, msg);
                }
            }
            self.drop_overflowed();
            if self.held.is_empty() {
                return;
            }
        }
    }

    /// Sends every message waiting for the journal (the scheduler is
    /// stopping).
    pub(super) fn release_all_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        let waiting = std::mem::take(&mut self.journaling);
        for (id, msg) in waiting.into_iter().flat_map(|(_, m)| m).chain(held) {
            self.deliver(id, msg);
        }
    }

    /// Forgets the clients cut off for falling behind, as if they had
    /// disconnected: their unnamed holds, waits and subscriptions end.
    pub(super) fn drop_overflowed(&mut self) {
        while let Some(id) = self.overflowed.pop() {
            if let Some(conn) = self.conns.remove(&id) {
                conn.hangup.notify_one();
                self.apply(Input::ClientDisconnected { client: id });
            }
        }
    }

    pub(super) fn apply(&mut self, input: Input) {
        let commands = self.state.handle(input);
        self.carry_out(commands);
    }

    /// Lets go of the next keys of a big release (the state machine's
    /// `release_step`).
    pub(super) fn release_step(&mut self) {
        let commands = self.state.release_step();
        self.carry_out(commands);
    }

    /// Whether what connection `id` sends waits: its holder's release
    /// goes on, or something it sent before still waits.
    fn held_back(&self, id: u64) -> bool {
        self.parked_from.contains(&id) || self.state.waits(id)
    }

    /// Holds back `inbound` (a connection's messages or its leaving), and
    /// pauses the connection's reader until it is let through.
    fn park(&mut self, inbound: Inbound) {
        if let Inbound::Msgs { id, .. } | Inbound::Closed { id } = &inbound
            && self.parked_from.insert(*id)
            && let Some(c) = self.conns.get(id)
        {
            c.pause.send_replace(true);
        }
        self.parked.push_back(inbound);
    }

    /// Once some holder's big releases are all done: handles, in the order
    /// they came, what was held back (what must still wait is held back
    /// again), and lets the readers of connections with nothing held back
    /// go on. Nothing after a shutdown is handled.
    pub(super) fn let_parked_through(&mut self) {
        let done = self.state.releases_done();
        if self.parked_at == done {
            return;
        }
        self.parked_at = done;
        if self.parked.is_empty() {
            return;
        }
        let were_parked = std::mem::take(&mut self.parked_from);
        for inbound in std::mem::take(&mut self.parked) {
            if self.shutting_down {
                return;
            }
            self.inbound(inbound);
        }
        for id in were_parked {
            if !self.parked_from.contains(&id)
                && let Some(c) = self.conns.get(&id)
            {
                c.pause.send_replace(false);
            }
        }
    }

    /// Journals what the state machine changed, and does what it said.
    fn carry_out(&mut self, commands: Vec<Command>) {
        if let Some(j) = &self.journal {
            j.record(|pending| self.state.journal_records_into(pending));
        }
        // A worker's frees go out as one message (a big release frees
        // thousands of keys at a time), sent before whatever comes next, so
        // that nothing is freed out of its order with that.
        let mut frees: rustc_hash::FxHashMap<u64, Vec<String>> = Default::default();
        for cmd in commands {
            if let Command::Free { worker, keys } = cmd {
                frees.entry(worker).or_default().extend(keys);
                continue;
            }
            self.send_frees(&mut frees);
            match cmd {
                Command::Run { worker, seq, tasks } => {
                    if self.faults.drop_run() {
                        tracing::warn!("fault injection: dropped Run {seq} to worker {worker}");
                    } else {
                        self.send(worker, FromScheduler::Run { seq, tasks });
                    }
                }
                Command::Sync { worker, seq } => self.send(worker, FromScheduler::Sync { seq }),
                Command::Free { .. } => unreachable!("gathered above"),
                Command::Done {
                    client,
                    key,
                    outcome,
                } => self.send(client, FromScheduler::Done { key, outcome }),
                Command::Submitted { client, .. } if self.faults.lose_submitted() => {
                    tracing::warn!(
                        "fault injection: lost a submit's answer, cutting client {client} off"
                    );
                    self.overflowed.push(client);
                }
                Command::Submitted {
                    client,
                    id,
                    refused,
                    unplaceable,
                } => self.send(
                    client,
                    FromScheduler::Submitted {
                        id,
                        refused,
                        unplaceable,
                    },
                ),
                Command::Store { worker, values } => {
                    self.send(worker, FromScheduler::Store { values })
                }
                Command::CancelRun { worker, keys } => {
                    self.send(worker, FromScheduler::Cancel { keys })
                }
                Command::Steal { worker, keys } => self.send(worker, FromScheduler::Steal { keys }),
                Command::Retried {
                    client,
                    id,
                    refused,
                } => self.answer_once(client, FromScheduler::Retried { id, refused }, true),
                // A scatter's answer goes where its session asked last.
                Command::Scattered { client, id } => {
                    self.answer_once(client, FromScheduler::Scattered { id }, false)
                }
                Command::Failed {
                    client,
                    id,
                    message,
                } => self.answer_once(client, FromScheduler::Failed { id, message }, false),
                Command::Send {
                    to,
                    msg: msg @ FromScheduler::ActorCreated { .. },
                } => self.answer_once(to, msg, true),
                Command::Send { to, msg } => self.send(to, msg),
                Command::Reply { client, .. } if self.faults.lose_reply() => {
                    tracing::warn!(
                        "fault injection: lost a primitive's answer, cutting client {client} off"
                    );
                    self.overflowed.push(client);
                }
                Command::Reply { client, id, reply } => {
                    if let Some(c) = self.conns.get_mut(&client) {
                        c.timers.end(id);
                    }
                    self.send(client, FromScheduler::Primitive { id, reply })
                }
                Command::HolderGrace {
                    holder,
                    away,
                    after_ms,
                } => self.grace_over_after(after_ms, Input::HolderGraceOver { holder, away }),
                Command::PlacementGrace {
                    client,
                    confirm,
                    after_ms,
                } => self.grace_over_after(after_ms, Input::PlacementGraceOver { client, confirm }),
                Command::Timer {
                    client,
                    id,
                    after_ms,
                } => {
                    // A request of a connection already gone needs none.
                    if let Some(c) = self.conns.get_mut(&client) {
                        let timers = self.timers.clone();
                        let timer = tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(after_ms)).await;
                            let _ = timers.send(Inbound::Timeout { client, id }).await;
                        });
                        // A request id used again replaces its timeout.
                        if let Some(old) = c.timers.0.insert(id, timer.abort_handle()) {
                            old.abort();
                        }
                    }
                }
                Command::Message {
                    client,
                    subscription,
                    message,
                } => self.send(
                    client,
                    FromScheduler::Message {
                        subscription,
                        message,
                    },
                ),
            }
        }
        self.send_frees(&mut frees);
    }

    /// Sends each worker its gathered frees, in one message.
    fn send_frees(&mut self, frees: &mut rustc_hash::FxHashMap<u64, Vec<String>>) {
        for (worker, keys) in frees.drain() {
            self.send(worker, FromScheduler::Free { keys });
        }
    }
}

/// The most an answer may weigh: well within the 512 MiB frame a client
/// reads ([`connection::DEFAULT_MAX_FRAME`]), since weights are estimates.
const MOST_IN_ONE_ANSWER: usize = connection::DEFAULT_MAX_FRAME / 2;

/// `msg`, or, for an answer weighing more than `most` (a status or
/// has-what of tens of millions of keys, say), a failure saying so: sent
/// whole, its frame would be refused and the connection dropped.
fn within_one_frame(msg: FromScheduler, most: usize) -> FromScheduler {
    let Some(id) = msg.request_id() else {
        return msg;
    };
    let weight = crate::protocol::Weigh::weight(&msg);
    if weight <= most {
        return msg;
    }
    FromScheduler::Failed {
        id,
        message: format!(
            "the answer would be about {}, more than the {} one answer may carry; \
             ask about fewer keys at a time",
            crate::value::human_bytes(weight as u64),
            crate::value::human_bytes(most as u64)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_too_big_for_one_frame_is_a_failure_saying_so() {
        let status = |n: usize| FromScheduler::Status {
            id: 7,
            states: (0..n).map(|i| (format!("inc-{i:032x}"), None)).collect(),
            reasons: Vec::new(),
            timings: Vec::new(),
        };
        let small = status(10);
        assert_eq!(within_one_frame(small.clone(), 1 << 20), small);
        match within_one_frame(status(100_000), 1 << 20) {
            FromScheduler::Failed { id, message } => {
                assert_eq!(id, 7);
                assert!(message.contains("ask about fewer keys"), "{message}");
            }
            other => panic!("sent whole: {other:?}"),
        }
        // What answers no request goes as it is.
        let done = FromScheduler::Free {
            keys: vec!["x".repeat(2 << 20)],
        };
        assert_eq!(within_one_frame(done.clone(), 1 << 20), done);
    }
}
