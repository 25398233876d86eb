//! Each primitive's operations: queue puts and gets, variables, leases
//! of locks and semaphores, waits on events and queues, and handing over
//! what a primitive keeps.

use super::*;

impl Scheduler {
    pub(super) fn owner(&self, client: ClientId, task: Option<String>) -> Result<Owner, String> {
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

    pub(super) fn holder_of(&self, client: ClientId) -> Option<String> {
        self.clients.get(&client).map(|c| c.holder.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_put(
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
                sized: true,
                ..Queue::default()
            });
        if !q.sized {
            // Made by a get: its first put gives it its bound.
            q.maxsize = maxsize.unwrap_or(0);
            q.sized = true;
        } else if let Some(m) = maxsize
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
            self.reply(getter.req, OpReply::Item(item), out);
            return Some(OpReply::Done);
        }
        if q.has_room() {
            let (item, maxsize) = (kept.item.clone(), q.maxsize);
            q.items.push_back(kept);
            self.prims.note(|d| {
                d.queue_ops.push(super::super::journal::Record::QueuePush {
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

    pub(super) fn queue_get(
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
                .push(super::super::journal::Record::QueuePop { name: name.clone() })
        });
        if let Some((putter, item)) = moved {
            self.prims.note(|d| {
                d.queue_ops.push(super::super::journal::Record::QueuePush {
                    name,
                    maxsize,
                    item,
                })
            });
            self.prims.blocked.remove(&putter.req);
            self.reply(putter.req, OpReply::Done, out);
        }
        Some(OpReply::Item(self.hand_over(kept, req.client, out)))
    }

    pub(super) fn var_set(
        &mut self,
        name: String,
        item: Arg,
        out: &mut Vec<Command>,
    ) -> Option<OpReply> {
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
            self.reply(w.req, OpReply::Item(value.clone()), out);
        }
        if let Some(old) = old {
            self.discard(old, out);
        }
        Some(OpReply::Done)
    }

    pub(super) fn acquire(
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

    pub(super) fn release_lease(
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
    pub(super) fn grant(&mut self, place: &Place, out: &mut Vec<Command>) {
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
            self.reply(w.req, OpReply::Done, out);
        }
    }

    pub(super) fn leases(&mut self, place: &Place) -> Option<&mut Leases> {
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
    pub(super) fn wait(
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

    pub(super) fn blocked(
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
    pub(super) fn unblock(&mut self, req: Request, out: &mut Vec<Command>) -> bool {
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

    pub(super) fn unsubscribe(&mut self, sub: Request) {
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
    pub(super) fn keep(&mut self, item: Arg) -> Result<Kept, String> {
        let hold = match &item {
            Arg::Value(v) => {
                self.value_fits(|| "the value to store".into(), v.len())?;
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
    pub(super) fn hand_over(
        &mut self,
        kept: Kept,
        client: ClientId,
        out: &mut Vec<Command>,
    ) -> Arg {
        if let (Arg::Future(key), Some(stored)) = (&kept.item, &kept.hold) {
            if let Some(h) = self.holder_of(client) {
                self.hold(&h, key);
            }
            self.unhold(stored, key, out);
        }
        kept.item
    }

    /// Drops a kept item, and the hold on its future.
    pub(super) fn discard(&mut self, kept: Kept, out: &mut Vec<Command>) {
        if let (Arg::Future(key), Some(stored)) = (&kept.item, &kept.hold) {
            self.unhold(stored, key, out);
        }
    }
}
