//! Coordination primitives held by the scheduler: queues, variables, locks,
//! semaphores, events and pub/sub topics, part of the same pure state
//! machine as the task graph (so a stored future holds its key, and a lease
//! ends the moment its task does).
//!
//! Rules, briefly:
//! - Names are global; a primitive exists from its first use.
//! - A request that cannot be served at once waits in arrival order, for at
//!   most its timeout (the server arms a timer; [`Input::PrimitiveTimeout`]
//!   removes the waiter and answers [`OpReply::Timeout`]). A timeout of 0
//!   never waits.
//! - A lease (lock or semaphore) belongs to an [`Owner`]: a running task, or
//!   a client by holder name. A task's leases end when it ends, errs, is
//!   cancelled or its worker dies; an unnamed client's when it disconnects
//!   without a session, or when its session has not come back for
//!   [`HOLDER_GRACE_MS`](super::HOLDER_GRACE_MS) (at once if it said it
//!   was leaving); a named client's (the CLI's) only when released.
//! - A future stored in a queue or variable is held by the primitive while
//!   stored, and by whoever gets it afterwards.
//! - A published message goes to every subscription open at that moment, in
//!   the order the scheduler receives them.
//!
//! [`Input::PrimitiveTimeout`]: super::Input::PrimitiveTimeout

use super::{ClientId, Command, Scheduler, State};
use crate::protocol::{Arg, Op, OpReply};
use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::VecDeque;

mod ops;

/// Who holds a lease or waits for one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Owner {
    /// A running task (by key).
    Task(String),
    /// A client, by holder name.
    Holder(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Task(k) => write!(f, "task {k}"),
            Owner::Holder(h) => write!(f, "client {h}"),
        }
    }
}

/// A request, by the connection that sent it and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Request {
    client: ClientId,
    id: u64,
}

/// Where a request waits or a lease is held.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Place {
    QueueGet(String),
    QueuePut(String),
    Variable(String),
    Lock(String),
    Semaphore(String),
    Event(String),
}

#[derive(Debug)]
struct Waiter {
    req: Request,
    owner: Owner,
}

/// An item as a primitive keeps it: a future is held under `hold`.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) item: Arg,
    hold: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) items: VecDeque<Kept>,
    /// 0: unbounded.
    pub(super) maxsize: u64,
    /// Whether a put has set `maxsize`: a queue a get made has no bound
    /// yet, and the first put gives it its own.
    sized: bool,
    getters: VecDeque<Waiter>,
    putters: VecDeque<(Waiter, Kept)>,
}

impl Queue {
    fn has_room(&self) -> bool {
        self.maxsize == 0 || (self.items.len() as u64) < self.maxsize
    }
}

#[derive(Debug, Default)]
pub(super) struct Variable {
    pub(super) item: Option<Kept>,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
pub(super) struct Leases {
    pub(super) max: u32,
    pub(super) holders: Vec<Owner>,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug, Default)]
pub(super) struct Flag {
    pub(super) set: bool,
    waiters: Vec<Waiter>,
}

/// Every primitive's state.
#[derive(Debug, Default)]
pub(super) struct Primitives {
    pub(super) queues: HashMap<String, Queue>,
    pub(super) variables: HashMap<String, Variable>,
    pub(super) locks: HashMap<String, Leases>,
    pub(super) semaphores: HashMap<String, Leases>,
    pub(super) events: HashMap<String, Flag>,
    topics: HashMap<String, Vec<Request>>,
    subscriptions: HashMap<Request, String>,
    /// Where and for whom each waiting request waits, to time it out.
    blocked: HashMap<Request, (Place, Owner)>,
    /// Where each owner holds leases or waits, to clean up when it ends.
    owned: HashMap<Owner, HashSet<Place>>,
    /// Numbers the holds of stored futures.
    seq: u64,
    /// The session of each request of a session not yet answered, by
    /// (client, id), and the client of each, by (session, id).
    sessions: HashMap<(ClientId, u64), u64>,
    in_flight: HashMap<(u64, u64), ClientId>,
    /// Recent answers by (session, id), for requests sent again.
    pub(super) answered: Answered,
    /// What changed since the journal last drained it; `None` without a
    /// journal.
    pub(super) dirty: Option<PrimDirty>,
}

/// Primitive changes waiting to be journaled: queue operations in order,
/// and the names of variables, events and leases whose state to record.
#[derive(Debug, Default)]
pub(super) struct PrimDirty {
    pub(super) queue_ops: Vec<super::journal::Record>,
    pub(super) variables: HashSet<String>,
    pub(super) events: HashSet<String>,
    /// (is a lock, name).
    pub(super) leases: HashSet<(bool, String)>,
    /// Answers kept for sessions: (session, id, answer).
    pub(super) answers: Vec<(u64, u64, OpReply)>,
}

/// Answers kept for requests sent again after a connection broke: the
/// latest ones, within [`Answered::MAX`] answers and [`Answered::BYTES`];
/// and, apart, the latest [`Answered::MARKS`] plain "done"s (counted
/// submits taken, puts, releases…), which weigh nothing: a burst of big
/// answers does not push out the mark of a submit whose client is still
/// reconnecting, which would then count twice.
#[derive(Debug, Default)]
pub(in crate::scheduler::state) struct Answered {
    by: HashMap<(u64, u64), OpReply>,
    order: VecDeque<(u64, u64)>,
    marks: VecDeque<(u64, u64)>,
    bytes: usize,
}

impl Answered {
    /// Most answers kept, "done"s aside.
    const MAX: usize = 1 << 16;
    /// Most bytes of items in the answers kept.
    const BYTES: usize = 64 << 20;
    /// Most "done"s kept.
    const MARKS: usize = 1 << 18;

    fn weight(reply: &OpReply) -> usize {
        match reply {
            OpReply::Item(Arg::Value(b)) => b.len(),
            OpReply::Item(Arg::Future(k)) => k.len(),
            OpReply::Failed(why) => why.len(),
            _ => 0,
        }
    }

    /// Whether request `at`, (session, id), was answered (and is still
    /// kept).
    fn contains(&self, at: &(u64, u64)) -> bool {
        self.by.contains_key(at)
    }

    /// The answers kept, "done"s first, each oldest first.
    pub(in crate::scheduler::state) fn in_order(
        &self,
    ) -> impl Iterator<Item = (u64, u64, &OpReply)> + '_ {
        self.marks
            .iter()
            .chain(&self.order)
            .filter_map(|at| self.by.get(at).map(|r| (at.0, at.1, r)))
    }

    pub(in crate::scheduler::state) fn insert(&mut self, at: (u64, u64), reply: OpReply) {
        let mark = matches!(reply, OpReply::Done);
        self.bytes += Self::weight(&reply);
        if let Some(old) = self.by.insert(at, reply) {
            self.bytes -= Self::weight(&old);
            return;
        }
        let (queue, most) = match mark {
            true => (&mut self.marks, Self::MARKS),
            false => (&mut self.order, Self::MAX),
        };
        queue.push_back(at);
        while queue.len() > most || (!mark && self.bytes > Self::BYTES) {
            let Some(oldest) = queue.pop_front() else {
                break;
            };
            if let Some(old) = self.by.remove(&oldest) {
                self.bytes -= Self::weight(&old);
            }
        }
    }
}

impl Primitives {
    fn note(&mut self, f: impl FnOnce(&mut PrimDirty)) {
        if let Some(d) = &mut self.dirty {
            f(d);
        }
    }
}

/// The holder-name prefix of futures stored in primitives; client names
/// cannot clash with it in practice.
pub(super) const STORED: &str = "primitive:";

impl Scheduler {
    /// Serves one primitive operation from `client`, on behalf of `task` if
    /// given.
    pub(super) fn primitive(
        &mut self,
        client: ClientId,
        (id, session): (u64, u64),
        task: Option<String>,
        op: Op,
        out: &mut Vec<Command>,
    ) {
        let req = Request { client, id };
        // Client 0 is a restore's own: a journal written before names
        // were checked may hold any, restored as they were.
        if let Some(Err(why)) = op
            .named()
            .filter(|_| client != 0)
            .map(|(kind, name)| crate::protocol::check_name(kind, name))
        {
            return self.reply(req, OpReply::Failed(why), out);
        }
        if session != 0 {
            // Sent again: its answer was lost with a connection. But a
            // lease it granted that has ended since (the session was away
            // past its grace) is not granted again by the record: the
            // acquire is served afresh.
            if let Some(answer) = self.prims.answered.by.get(&(session, id))
                && !(*answer == OpReply::Done && self.lease_ended(client, task.as_ref(), &op))
            {
                let answer = answer.clone();
                return self.reply(req, answer, out);
            }
            // Sent again before its first connection was seen to close:
            // the first wait goes, so that it is done once.
            if let Some(first) = self.prims.in_flight.insert((session, id), client)
                && first != client
            {
                self.prims.sessions.remove(&(first, id));
                self.unblock(Request { client: first, id }, out);
            }
            self.prims.sessions.insert((client, id), session);
        }
        let owner = match self.owner(client, task) {
            Ok(o) => o,
            Err(why) => return self.reply(req, OpReply::Failed(why), out),
        };
        let answer = match op {
            Op::QueuePut {
                name,
                item,
                maxsize,
                timeout_ms,
            } => self.queue_put(req, owner, name, item, maxsize, timeout_ms, out),
            Op::QueueGet { name, timeout_ms } => self.queue_get(req, owner, name, timeout_ms, out),
            Op::QueueLen { name } => Some(OpReply::Len(
                self.prims
                    .queues
                    .get(&name)
                    .map_or(0, |q| q.items.len() as u64),
            )),
            Op::VarSet { name, item } => self.var_set(name, item, out),
            Op::VarGet { name, timeout_ms } => {
                let client_holder = self.holder_of(client);
                let var = self.prims.variables.entry(name.clone()).or_default();
                match &var.item {
                    Some(kept) => {
                        let item = kept.item.clone();
                        if let (Arg::Future(k), Some(h)) = (&item, client_holder) {
                            self.hold(&h, k);
                        }
                        Some(OpReply::Item(item))
                    }
                    None => {
                        let place = Place::Variable(name);
                        self.wait(req, owner, place, timeout_ms, out)
                    }
                }
            }
            Op::VarDel { name } => {
                self.prims.note(|d| {
                    d.variables.insert(name.clone());
                });
                if let Some(var) = self.prims.variables.get_mut(&name) {
                    let old = var.item.take();
                    if var.waiters.is_empty() {
                        self.prims.variables.remove(&name);
                    }
                    if let Some(old) = old {
                        self.discard(old, out);
                    }
                }
                Some(OpReply::Done)
            }
            Op::LockAcquire { name, timeout_ms } => {
                self.prims.locks.entry(name.clone()).or_insert(Leases {
                    max: 1,
                    holders: Vec::new(),
                    waiters: VecDeque::new(),
                });
                self.acquire(req, owner, Place::Lock(name), timeout_ms, out)
            }
            Op::LockRelease { name } => self.release_lease(&owner, Place::Lock(name), out),
            Op::SemAcquire {
                name,
                max_leases,
                timeout_ms,
            } => {
                if max_leases == 0 {
                    // 0: whatever the existing semaphore has.
                    if !self.prims.semaphores.contains_key(&name) {
                        let why = format!(
                            "semaphore {name} does not exist yet: the first acquire creates it, \
                             and must say how many leases it has (--max-leases N)"
                        );
                        return self.reply(req, OpReply::Failed(why), out);
                    }
                } else {
                    let leases = self.prims.semaphores.entry(name.clone()).or_insert(Leases {
                        max: max_leases,
                        holders: Vec::new(),
                        waiters: VecDeque::new(),
                    });
                    if leases.max != max_leases {
                        let why = format!(
                            "semaphore {name} exists with {} leases, not {max_leases}; \
                         use the same number everywhere",
                            leases.max
                        );
                        return self.reply(req, OpReply::Failed(why), out);
                    }
                }
                self.acquire(req, owner, Place::Semaphore(name), timeout_ms, out)
            }
            Op::SemRelease { name } => self.release_lease(&owner, Place::Semaphore(name), out),
            Op::EventSet { name } => {
                self.prims.note(|d| {
                    d.events.insert(name.clone());
                });
                let flag = self.prims.events.entry(name).or_default();
                flag.set = true;
                let woken = std::mem::take(&mut flag.waiters);
                for w in woken {
                    self.prims.blocked.remove(&w.req);
                    self.reply(w.req, OpReply::Done, out);
                }
                Some(OpReply::Done)
            }
            Op::EventClear { name } => {
                self.prims.note(|d| {
                    d.events.insert(name.clone());
                });
                self.prims.events.entry(name).or_default().set = false;
                Some(OpReply::Done)
            }
            Op::EventWait { name, timeout_ms } => {
                if self.prims.events.get(&name).is_some_and(|f| f.set) {
                    Some(OpReply::Done)
                } else {
                    self.prims.events.entry(name.clone()).or_default();
                    self.wait(req, owner, Place::Event(name), timeout_ms, out)
                }
            }
            Op::EventIsSet { name } => Some(OpReply::Flag(
                self.prims.events.get(&name).is_some_and(|f| f.set),
            )),
            Op::Subscribe { topic } => {
                self.prims
                    .topics
                    .entry(topic.clone())
                    .or_default()
                    .push(req);
                self.prims.subscriptions.insert(req, topic);
                Some(OpReply::Done)
            }
            Op::Unsubscribe { subscription } => {
                self.unsubscribe(Request {
                    client,
                    id: subscription,
                });
                Some(OpReply::Done)
            }
        };
        if let Some(answer) = answer {
            self.reply(req, answer, out);
        }
    }

    /// Sends `message` to every subscription of `topic`.
    pub(super) fn publish(&mut self, topic: &str, message: Bytes, out: &mut Vec<Command>) {
        if let Some(subs) = self.prims.topics.get(topic) {
            for s in subs {
                out.push(Command::Message {
                    client: s.client,
                    subscription: s.id,
                    message: message.clone(),
                });
            }
        }
    }

    /// A waiting request's timeout passed: it stops waiting, if it still is.
    pub(super) fn primitive_timed_out(
        &mut self,
        client: ClientId,
        id: u64,
        out: &mut Vec<Command>,
    ) {
        let req = Request { client, id };
        if self.unblock(req, out) {
            self.reply(req, OpReply::Timeout, out);
        }
    }

    /// The running task `key` ended (finished, erred, was cancelled or
    /// lost its worker): [`Scheduler::owner_ended`] for it, at no cost
    /// (not even its owner's name) while nothing at all is owned.
    pub(super) fn task_ended(&mut self, key: &str, out: &mut Vec<Command>) {
        if !self.prims.owned.is_empty() {
            self.owner_ended(&Owner::Task(key.to_string()), out);
        }
    }

    /// `owner` ended (a task finished, erred, was cancelled or lost its
    /// worker; an unnamed client left): its leases end and its waits stop.
    pub(super) fn owner_ended(&mut self, owner: &Owner, out: &mut Vec<Command>) {
        let Some(places) = self.prims.owned.remove(owner) else {
            return;
        };
        for place in places {
            match &place {
                Place::Lock(_) | Place::Semaphore(_) => {
                    let Some(leases) = self.leases(&place) else {
                        continue;
                    };
                    leases.holders.retain(|o| o != owner);
                    let gone: Vec<Request> = leases
                        .waiters
                        .iter()
                        .filter(|w| w.owner == *owner)
                        .map(|w| w.req)
                        .collect();
                    for req in gone {
                        self.unblock(req, out);
                    }
                    self.grant(&place, out);
                }
                _ => {
                    let gone: Vec<Request> = self
                        .prims
                        .blocked
                        .iter()
                        .filter(|(_, (p, o))| *p == place && o == owner)
                        .map(|(r, _)| *r)
                        .collect();
                    for req in gone {
                        self.unblock(req, out);
                    }
                }
            }
        }
    }

    /// A client connection closed: its waits and subscriptions end.
    pub(super) fn primitives_client_gone(&mut self, client: ClientId, out: &mut Vec<Command>) {
        // Its waits end unanswered: sent again, they are done then.
        let in_flight = &mut self.prims.in_flight;
        self.prims.sessions.retain(|(c, id), session| {
            let gone = *c == client;
            if gone {
                in_flight.remove(&(*session, *id));
            }
            !gone
        });
        let waiting: Vec<Request> = self
            .prims
            .blocked
            .keys()
            .filter(|r| r.client == client)
            .copied()
            .collect();
        for req in waiting {
            self.unblock(req, out);
        }
        let subs: Vec<Request> = self
            .prims
            .subscriptions
            .keys()
            .filter(|r| r.client == client)
            .copied()
            .collect();
        for s in subs {
            self.unsubscribe(s);
        }
    }
}

impl Scheduler {
    /// Whether `op`, from `client` (for `task`), takes a lease that the
    /// one it asks for does not hold now.
    fn lease_ended(&self, client: ClientId, task: Option<&String>, op: &Op) -> bool {
        let (leases, name) = match op {
            Op::LockAcquire { name, .. } => (&self.prims.locks, name),
            Op::SemAcquire { name, .. } => (&self.prims.semaphores, name),
            _ => return false,
        };
        let Ok(owner) = self.owner(client, task.cloned()) else {
            return false;
        };
        !leases.get(name).is_some_and(|l| l.holders.contains(&owner))
    }

    /// Whether counted submit or scatter `id` of `session` is to count:
    /// not if it was taken before (a copy sent again after a broken
    /// connection); taken now, it is kept (and journaled) as answered,
    /// with the primitive operations' answers, so that even a scheduler
    /// restarted meanwhile counts it once.
    pub(super) fn first_counted(&mut self, session: u64, id: u64) -> bool {
        if session == 0 {
            return true;
        }
        if self.prims.answered.contains(&(session, id)) {
            return false;
        }
        self.prims.answered.insert((session, id), OpReply::Done);
        self.prims
            .note(|d| d.answers.push((session, id, OpReply::Done)));
        true
    }

    /// Whether counted submit or scatter `id` of `session` was taken
    /// before (see [`Scheduler::first_counted`]), without marking it.
    pub(super) fn counted_before(&self, session: u64, id: u64) -> bool {
        session != 0 && self.prims.answered.contains(&(session, id))
    }

    /// Answers `req`, keeping the answer for its session if it has one.
    fn reply(&mut self, req: Request, reply: OpReply, out: &mut Vec<Command>) {
        if let Some(session) = self.prims.sessions.remove(&(req.client, req.id)) {
            self.prims.in_flight.remove(&(session, req.id));
            self.prims.answered.insert((session, req.id), reply.clone());
            self.prims
                .note(|d| d.answers.push((session, req.id, reply.clone())));
        }
        out.push(Command::Reply {
            client: req.client,
            id: req.id,
            reply,
        });
    }
}

/// At most `limit` of `map`'s entries, as `f` shows them, by name.
fn some_of<V, T: Ord>(
    map: &HashMap<String, V>,
    limit: usize,
    f: impl Fn(&String, &V) -> T,
) -> Vec<T> {
    let mut v: Vec<T> = map.iter().take(limit).map(|(k, x)| f(k, x)).collect();
    v.sort();
    v
}

impl Scheduler {
    /// Queues, variables, locks, semaphores, events, topics and actors as
    /// the dashboard lists them: at most `limit` of each (which ones, when
    /// there are more, is unspecified; the totals say how many there are).
    pub fn primitives_summary(&self, limit: usize) -> super::activity::PrimitivesSummary {
        let p = &self.prims;
        let names = |l: &Leases| l.holders.iter().map(|o| o.to_string()).collect::<Vec<_>>();
        let mut actors = self.actor_list();
        actors.truncate(limit);
        super::activity::PrimitivesSummary {
            queues: some_of(&p.queues, limit, |k, q| {
                (k.clone(), q.items.len(), q.getters.len())
            }),
            variables: some_of(&p.variables, limit, |k, v| {
                (k.clone(), v.item.is_some(), v.waiters.len())
            }),
            locks: some_of(&p.locks, limit, |k, l| {
                (k.clone(), names(l), l.waiters.len())
            }),
            semaphores: some_of(&p.semaphores, limit, |k, l| {
                (k.clone(), l.max, names(l), l.waiters.len())
            }),
            events: some_of(&p.events, limit, |k, e| (k.clone(), e.set, e.waiters.len())),
            topics: some_of(&p.topics, limit, |k, s| (k.clone(), s.len())),
            totals: [
                p.queues.len(),
                p.variables.len(),
                p.locks.len(),
                p.semaphores.len(),
                p.events.len(),
                p.topics.len(),
                self.actors.len(),
            ],
            actors,
        }
    }
}

#[cfg(test)]
mod answered_tests {
    use super::*;

    /// A "done" (a counted submit's mark) outlives more big answers than
    /// the answers keep, and the "done"s are bounded too.
    #[test]
    fn a_done_outlives_a_burst_of_big_answers_and_dones_are_bounded() {
        let mut a = Answered::default();
        a.insert((1, 1), OpReply::Done);
        let big = OpReply::Item(Arg::Value(bytes::Bytes::from(vec![0u8; 4096])));
        for id in 0..(Answered::MAX as u64 + 20_000) {
            a.insert((2, id), big.clone());
        }
        assert!(a.contains(&(1, 1)));
        assert!(!a.contains(&(2, 0)), "the oldest big answer went");
        assert!(a.bytes <= Answered::BYTES);
        for id in 0..Answered::MARKS as u64 {
            a.insert((3, id), OpReply::Done);
        }
        assert!(!a.contains(&(1, 1)), "the oldest done went");
        assert_eq!(a.marks.len(), Answered::MARKS);
        assert_eq!(a.in_order().count(), a.by.len());
    }
}
