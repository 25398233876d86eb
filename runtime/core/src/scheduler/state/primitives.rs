//! Coordination primitives held by the scheduler: queues, variables, locks,
//! semaphores, events and pub/sub topics, part of the same pure state
//! machine as the task graph (so a stored future holds its key, and a lease
//! ends the moment its task does).
//!
//! Rules, briefly:
//! - Names are global; a primitive exists from its first use.
//! - A request that cannot be served at once waits in arrival order, for at
//!   most its timeout (the server arms a timer; [`Event::PrimitiveTimeout`]
//!   removes the waiter and answers [`OpReply::Timeout`]). A timeout of 0
//!   never waits.
//! - A lease (lock or semaphore) belongs to an [`Owner`]: a running task, or
//!   a client by holder name. A task's leases end when it ends, errs, is
//!   cancelled or its worker dies; an unnamed client's when it disconnects;
//!   a named client's (the CLI's) only when released.
//! - A future stored in a queue or variable is held by the primitive while
//!   stored, and by whoever gets it afterwards.
//! - A published message goes to every subscription open at that moment, in
//!   the order the scheduler receives them.
//!
//! [`Event::PrimitiveTimeout`]: super::Event::PrimitiveTimeout

use super::{ClientId, Command, Scheduler, State};
use crate::protocol::{Arg, Op, OpReply};
use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::VecDeque;

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
        id: u64,
        task: Option<String>,
        op: Op,
        out: &mut Vec<Command>,
    ) {
        let req = Request { client, id };
        let owner = match self.owner(client, task) {
            Ok(o) => o,
            Err(why) => return reply(req, OpReply::Failed(why), out),
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
                        return reply(req, OpReply::Failed(why), out);
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
                        return reply(req, OpReply::Failed(why), out);
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
                    reply(w.req, OpReply::Done, out);
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
            reply(req, answer, out);
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
            reply(req, OpReply::Timeout, out);
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

    fn owner(&self, client: ClientId, task: Option<String>) -> Result<Owner, String> {
        match task {
            Some(key) => match self.tasks.get(&key).map(|t| &t.state) {
                Some(State::Processing { .. }) => Ok(Owner::Task(key)),
                _ => Err(format!(
                    "task {key} is not running, so it cannot take part in coordination"
                )),
            },
            None => self
                .holder_of(client)
                .map(Owner::Holder)
                .ok_or_else(|| "this connection is not a client".to_string()),
        }
    }

    fn holder_of(&self, client: ClientId) -> Option<String> {
        self.clients.get(&client).map(|c| c.holder.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_put(
        &mut self,
        req: Request,
        owner: Owner,
        name: String,
        item: Arg,
        maxsize: Option<u64>,
        timeout_ms: Option<u64>,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
        let q = self
            .prims
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue {
                maxsize: maxsize.unwrap_or(0),
                ..Queue::default()
            });
        if let Some(m) = maxsize
            && m != q.maxsize
        {
            return Some(OpReply::Failed(format!(
                "queue {name} exists with maxsize {}, not {m}; use the same size everywhere",
                q.maxsize
            )));
        }
        let kept = match self.keep(item) {
            Ok(k) => k,
            Err(why) => return Some(OpReply::Failed(why)),
        };
        let q = self.prims.queues.get_mut(&name).expect("just made");
        if let Some(getter) = q.getters.pop_front() {
            self.prims.blocked.remove(&getter.req);
            let item = self.hand_over(kept, getter.req.client, out);
            reply(getter.req, OpReply::Item(item), out);
            return Some(OpReply::Done);
        }
        if q.has_room() {
            let (item, maxsize) = (kept.item.clone(), q.maxsize);
            q.items.push_back(kept);
            self.prims.note(|d| {
                d.queue_ops.push(super::journal::Record::QueuePush {
                    name,
                    maxsize,
                    item,
                })
            });
            return Some(OpReply::Done);
        }
        if timeout_ms == Some(0) {
            self.discard(kept, out);
            return Some(OpReply::Timeout);
        }
        q.putters.push_back((
            Waiter {
                req,
                owner: owner.clone(),
            },
            kept,
        ));
        self.blocked(req, owner, Place::QueuePut(name), timeout_ms, out);
        None
    }

    fn queue_get(
        &mut self,
        req: Request,
        owner: Owner,
        name: String,
        timeout_ms: Option<u64>,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
        let q = self.prims.queues.entry(name.clone()).or_default();
        let Some(kept) = q.items.pop_front() else {
            return self.wait(req, owner, Place::QueueGet(name), timeout_ms, out);
        };
        let maxsize = q.maxsize;
        // Room for the first waiting put.
        let moved = q.putters.pop_front().map(|(putter, waiting)| {
            let item = waiting.item.clone();
            q.items.push_back(waiting);
            (putter, item)
        });
        self.prims.note(|d| {
            d.queue_ops
                .push(super::journal::Record::QueuePop { name: name.clone() })
        });
        if let Some((putter, item)) = moved {
            self.prims.note(|d| {
                d.queue_ops.push(super::journal::Record::QueuePush {
                    name,
                    maxsize,
                    item,
                })
            });
            self.prims.blocked.remove(&putter.req);
            reply(putter.req, OpReply::Done, out);
        }
        Some(OpReply::Item(self.hand_over(kept, req.client, out)))
    }

    fn var_set(&mut self, name: String, item: Arg, out: &mut Vec<Command>) -> Option<OpReply> {
        let kept = match self.keep(item) {
            Ok(k) => k,
            Err(why) => return Some(OpReply::Failed(why)),
        };
        let value = kept.item.clone();
        self.prims.note(|d| {
            d.variables.insert(name.clone());
        });
        let var = self.prims.variables.entry(name).or_default();
        let old = var.item.replace(kept);
        let woken = std::mem::take(&mut var.waiters);
        for w in woken {
            self.prims.blocked.remove(&w.req);
            if let (Arg::Future(k), Some(h)) = (&value, self.holder_of(w.req.client)) {
                self.hold(&h, k);
            }
            reply(w.req, OpReply::Item(value.clone()), out);
        }
        if let Some(old) = old {
            self.discard(old, out);
        }
        Some(OpReply::Done)
    }

    fn acquire(
        &mut self,
        req: Request,
        owner: Owner,
        place: Place,
        timeout_ms: Option<u64>,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
        let leases = self.leases(&place).expect("made by the caller");
        if (leases.holders.len() as u32) < leases.max && leases.waiters.is_empty() {
            leases.holders.push(owner.clone());
            self.prims.owned.entry(owner).or_default().insert(place);
            return Some(OpReply::Done);
        }
        self.wait(req, owner, place, timeout_ms, out)
    }

    fn release_lease(
        &mut self,
        owner: &Owner,
        place: Place,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
        let (what, name) = match &place {
            Place::Lock(n) => ("lock", n),
            Place::Semaphore(n) => ("semaphore", n),
            _ => unreachable!("only leases are released"),
        };
        let not_held = || {
            Some(OpReply::Failed(format!(
                "{what} {name} is not held by {owner}; nothing to release"
            )))
        };
        let Some(leases) = self.leases(&place) else {
            return not_held();
        };
        let Some(i) = leases.holders.iter().position(|o| o == owner) else {
            return not_held();
        };
        leases.holders.swap_remove(i);
        if !leases.holders.contains(owner)
            && let Some(places) = self.prims.owned.get_mut(owner)
        {
            places.remove(&place);
            if places.is_empty() {
                self.prims.owned.remove(owner);
            }
        }
        self.grant(&place, out);
        Some(OpReply::Done)
    }

    /// Hands free leases to waiters, first come first served.
    fn grant(&mut self, place: &Place, out: &mut Vec<Command>) {
        loop {
            let Some(leases) = self.leases(place) else {
                return;
            };
            if leases.holders.len() as u32 >= leases.max {
                return;
            }
            let Some(w) = leases.waiters.pop_front() else {
                return;
            };
            leases.holders.push(w.owner.clone());
            self.prims.blocked.remove(&w.req);
            self.prims
                .owned
                .entry(w.owner)
                .or_default()
                .insert(place.clone());
            reply(w.req, OpReply::Done, out);
        }
    }

    fn leases(&mut self, place: &Place) -> Option<&mut Leases> {
        let name = match place {
            Place::Lock(n) => Some((true, n)),
            Place::Semaphore(n) => Some((false, n)),
            _ => None,
        };
        if let (Some(d), Some((lock, n))) = (&mut self.prims.dirty, name)
            && !d.leases.contains(&(lock, n.clone()))
        {
            d.leases.insert((lock, n.clone()));
        }
        match place {
            Place::Lock(n) => self.prims.locks.get_mut(n),
            Place::Semaphore(n) => self.prims.semaphores.get_mut(n),
            _ => None,
        }
    }

    /// Queues `req` to wait at `place` (or answers a timeout at once when
    /// it may not wait).
    fn wait(
        &mut self,
        req: Request,
        owner: Owner,
        place: Place,
        timeout_ms: Option<u64>,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
        if timeout_ms == Some(0) {
            return Some(OpReply::Timeout);
        }
        let waiter = Waiter {
            req,
            owner: owner.clone(),
        };
        match &place {
            Place::QueueGet(n) => self
                .prims
                .queues
                .get_mut(n)
                .expect("made by the caller")
                .getters
                .push_back(waiter),
            Place::Variable(n) => self
                .prims
                .variables
                .get_mut(n)
                .expect("made by the caller")
                .waiters
                .push_back(waiter),
            Place::Event(n) => self
                .prims
                .events
                .get_mut(n)
                .expect("made by the caller")
                .waiters
                .push(waiter),
            Place::Lock(_) | Place::Semaphore(_) => self
                .leases(&place)
                .expect("made by the caller")
                .waiters
                .push_back(waiter),
            Place::QueuePut(_) => unreachable!("queue_put queues its own waiters"),
        }
        self.blocked(req, owner, place, timeout_ms, out);
        None
    }

    fn blocked(
        &mut self,
        req: Request,
        owner: Owner,
        place: Place,
        timeout_ms: Option<u64>,
        out: &mut Vec<Command>,
    ) {
        self.prims
            .blocked
            .insert(req, (place.clone(), owner.clone()));
        self.prims.owned.entry(owner).or_default().insert(place);
        if let Some(after_ms) = timeout_ms {
            out.push(Command::Timer {
                client: req.client,
                id: req.id,
                after_ms,
            });
        }
    }

    /// Removes a waiting request; whether it was waiting.
    fn unblock(&mut self, req: Request, out: &mut Vec<Command>) -> bool {
        let Some((place, _)) = self.prims.blocked.remove(&req) else {
            return false;
        };
        let mine = |w: &Waiter| w.req == req;
        match &place {
            Place::QueueGet(n) => {
                if let Some(q) = self.prims.queues.get_mut(n) {
                    q.getters.retain(|w| !mine(w));
                }
            }
            Place::QueuePut(n) => {
                let dropped = self.prims.queues.get_mut(n).and_then(|q| {
                    let i = q.putters.iter().position(|(w, _)| mine(w))?;
                    q.putters.remove(i)
                });
                if let Some((_, kept)) = dropped {
                    self.discard(kept, out);
                }
            }
            Place::Variable(n) => {
                if let Some(v) = self.prims.variables.get_mut(n) {
                    v.waiters.retain(|w| !mine(w));
                }
            }
            Place::Event(n) => {
                if let Some(f) = self.prims.events.get_mut(n) {
                    f.waiters.retain(|w| !mine(w));
                }
            }
            Place::Lock(_) | Place::Semaphore(_) => {
                if let Some(l) = self.leases(&place) {
                    l.waiters.retain(|w| !mine(w));
                }
                // Those behind it may fit now.
                self.grant(&place, out);
            }
        }
        true
    }

    fn unsubscribe(&mut self, sub: Request) {
        if let Some(topic) = self.prims.subscriptions.remove(&sub)
            && let Some(subs) = self.prims.topics.get_mut(&topic)
        {
            subs.retain(|s| *s != sub);
            if subs.is_empty() {
                self.prims.topics.remove(&topic);
            }
        }
    }

    /// Takes an item into a primitive: a future is held while it is kept.
    fn keep(&mut self, item: Arg) -> Result<Kept, String> {
        let hold = match &item {
            Arg::Value(v) => {
                self.value_fits("the value to store", v.len())?;
                None
            }
            Arg::Future(key) => {
                self.prims.seq += 1;
                let holder = format!("{STORED}{}", self.prims.seq);
                if !self.hold(&holder, key) {
                    return Err(format!(
                        "@{key} names no future the scheduler knows (never submitted, or released)"
                    ));
                }
                Some(holder)
            }
        };
        Ok(Kept { item, hold })
    }

    /// Gives a kept item to `client`: a future becomes held by it instead.
    fn hand_over(&mut self, kept: Kept, client: ClientId, out: &mut Vec<Command>) -> Arg {
        if let (Arg::Future(key), Some(stored)) = (&kept.item, &kept.hold) {
            if let Some(h) = self.holder_of(client) {
                self.hold(&h, key);
            }
            self.drop_hold(stored, key, out);
        }
        kept.item
    }

    /// Drops a kept item, and the hold on its future.
    fn discard(&mut self, kept: Kept, out: &mut Vec<Command>) {
        if let (Arg::Future(key), Some(stored)) = (&kept.item, &kept.hold) {
            self.drop_hold(stored, key, out);
        }
    }
}

fn reply(req: Request, reply: OpReply, out: &mut Vec<Command>) {
    out.push(Command::Reply {
        client: req.client,
        id: req.id,
        reply,
    });
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
