//! Big releases, applied a step at a time.
//!
//! Letting go of a key costs a few hundred nanoseconds (finding its task,
//! perhaps forgetting it and its inputs), so a release of a million keys,
//! a `release --all` or an unnamed client leaving with all it held, would
//! hold up every other client and worker for a good part of a second. A
//! release of more than [`STEP`] keys lets go of the first `STEP` at once
//! (newest first) and sets the rest aside: the server applies them a step
//! per turn of its loop, between other events ([`Scheduler::release_step`]).
//!
//! What the rest of the scheduler sees of a key set aside is what it would
//! see just before the release arrived: the key is still held. The only
//! one who could tell the difference is the holder itself, so whatever a
//! client sends while its holder has keys set aside waits until they are
//! let go of ([`Scheduler::waits`]; the server holds it back), and is then
//! handled in the order it came: the holder's own requests, queries
//! included, see its releases done, while other clients and the workers
//! go on.

use super::{ClientId, Command, Key, Scheduler};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Keys a release lets go of at once, and per step after that.
pub const STEP: usize = 4096;

/// The keys of one release not yet let go of: the newest last, so that
/// popping them goes newest first (the table's last slot is then most
/// often the one going, and nothing has to move into its place).
#[derive(Debug)]
pub(super) enum Left {
    /// Named by a client.
    Named(Vec<String>),
    /// The table's own copies (from the holder's log, so perhaps some it
    /// no longer held), and how many of them it still holds.
    Held { keys: Vec<Key>, live: usize },
}

impl Left {
    fn len(&self) -> usize {
        match self {
            Left::Named(keys) => keys.len(),
            Left::Held { keys, .. } => keys.len(),
        }
    }
}

/// One holder's release, part done.
#[derive(Debug)]
pub(super) struct Release {
    pub(super) holder: Arc<str>,
    pub(super) left: Left,
    /// An unnamed client's, which left: its holder's name stays known as
    /// unnamed (its holds are not journaled) until the release is done.
    pub(super) ephemeral: bool,
}

/// Releases set aside. Holders take turns, a step each, so that one huge
/// release (an unnamed client leaving with a million keys) does not hold
/// up another holder's; a holder's own releases go in the order they came.
#[derive(Debug, Default)]
pub(super) struct Releasing {
    /// Holders with releases set aside, next to step first.
    turns: VecDeque<Arc<str>>,
    /// Each such holder's releases, oldest first (never empty).
    by_holder: HashMap<Arc<str>, VecDeque<Release>>,
    /// Keys set aside, over all of them.
    keys: usize,
    /// How many times a holder's last release set aside was done.
    done: u64,
}

impl Releasing {
    /// Keys set aside that were taken from their holders' logs (so no
    /// longer counted there) and are still held, of the holders `counted`.
    pub(super) fn held_aside(&self, counted: impl Fn(&str) -> bool) -> u64 {
        self.by_holder
            .iter()
            .filter(|(holder, _)| counted(holder))
            .flat_map(|(_, releases)| releases)
            .map(|r| match &r.left {
                Left::Held { live, .. } => *live as u64,
                Left::Named(_) => 0,
            })
            .sum()
    }
}

impl Scheduler {
    /// Lets go of `holder`'s hold on `left`: the first [`STEP`] at once,
    /// the rest set aside for [`Scheduler::release_step`]. Releases of
    /// different holders commute (each ends only its own holds), so only a
    /// holder's own releases keep their order.
    pub(super) fn release(&mut self, mut r: Release, out: &mut Vec<Command>) {
        if let Some(queue) = self.releasing.by_holder.get_mut(&r.holder) {
            self.releasing.keys += r.left.len();
            queue.push_back(r);
            return;
        }
        let holder = r.holder.clone();
        self.release_from(&holder, &mut r.left, STEP, out);
        if r.left.len() > 0 {
            self.releasing.keys += r.left.len();
            self.releasing.turns.push_back(holder.clone());
            self.releasing.by_holder.insert(holder, VecDeque::from([r]));
        } else {
            self.released(r);
        }
    }

    /// Lets go of every key `holder` holds (see [`Scheduler::release`]);
    /// `ephemeral` for an unnamed client that left.
    pub(super) fn release_all(
        &mut self,
        holder: Arc<str>,
        ephemeral: bool,
        out: &mut Vec<Command>,
    ) {
        let (keys, live) = self.holdings.take_all(&holder);
        let release = Release {
            holder,
            left: Left::Held { keys, live },
            ephemeral,
        };
        self.release(release, out);
    }

    /// Whether a client connection holds under `holder` (a walk over the
    /// connections, not the tasks).
    pub(super) fn connected(&self, holder: &str) -> bool {
        self.clients.values().any(|c| *c.holder == *holder)
    }

    /// Unnamed client `c`'s last connection closed: its holds and leases
    /// end now (no session, or it said it was leaving), or once its session
    /// has not come back for [`HOLDER_GRACE_MS`](super::HOLDER_GRACE_MS).
    pub(super) fn client_left(&mut self, c: super::Client, out: &mut Vec<Command>) {
        if !c.session {
            return self.holder_ended(c.holder, out);
        }
        self.grace_begins(c.holder.to_string(), out);
    }

    /// Unnamed `holder` has no connection: its holds and leases end once
    /// its session has not come back for
    /// [`HOLDER_GRACE_MS`](super::HOLDER_GRACE_MS).
    pub(super) fn grace_begins(&mut self, holder: String, out: &mut Vec<Command>) {
        self.went_away += 1;
        self.away.insert(holder.clone(), self.went_away);
        out.push(Command::HolderGrace {
            holder,
            away: self.went_away,
            after_ms: super::HOLDER_GRACE_MS,
        });
    }

    /// Unnamed `holder` is gone for good: its leases end, its waits stop
    /// and it lets go of every key it holds.
    pub(super) fn holder_ended(&mut self, holder: Arc<str>, out: &mut Vec<Command>) {
        self.owner_ended(&super::Owner::Holder(holder.to_string()), out);
        self.release_all(holder, true, out);
    }

    /// After the last key of `r` is let go of.
    fn released(&mut self, r: Release) {
        // Unless the session came back meanwhile.
        if r.ephemeral && !self.connected(&r.holder) {
            self.ephemeral_holders.remove(&*r.holder);
        }
    }

    /// Lets go of `holder`'s hold on up to `n` keys of `left`, newest
    /// first.
    fn release_from(&mut self, holder: &str, left: &mut Left, n: usize, out: &mut Vec<Command>) {
        for _ in 0..n {
            match left {
                Left::Named(keys) => match keys.pop() {
                    Some(key) => {
                        self.unhold(holder, &key, out);
                    }
                    None => return,
                },
                Left::Held { keys, live } => match keys.pop() {
                    Some(key) => {
                        if self.unhold(holder, &key, out) {
                            *live = live.saturating_sub(1);
                        }
                    }
                    None => return,
                },
            }
        }
    }

    /// Lets go of up to `n` keys set aside, of the oldest release of the
    /// holder whose turn it is; that holder goes to the back of the turns
    /// if it has more set aside.
    fn release_some(&mut self, n: usize, out: &mut Vec<Command>) {
        let Some(holder) = self.releasing.turns.pop_front() else {
            return;
        };
        let Some(mut r) = self
            .releasing
            .by_holder
            .get_mut(&holder)
            .and_then(VecDeque::pop_front)
        else {
            self.releasing.by_holder.remove(&holder);
            return;
        };
        let before = r.left.len();
        self.release_from(&holder, &mut r.left, n, out);
        self.releasing.keys -= before - r.left.len();
        let queue = self
            .releasing
            .by_holder
            .get_mut(&holder)
            .expect("a holder in turn has a queue");
        let finished = if r.left.len() > 0 {
            queue.push_front(r);
            None
        } else {
            Some(r)
        };
        if queue.is_empty() {
            self.releasing.by_holder.remove(&holder);
            self.releasing.done += 1;
        } else {
            self.releasing.turns.push_back(holder);
        }
        if let Some(r) = finished {
            self.released(r);
        }
    }

    /// Whether what `client` sends must wait: its holder has releases
    /// set aside. The server holds back its messages (and its leaving)
    /// until this is false, then handles them in the order they came.
    pub fn waits(&self, client: ClientId) -> bool {
        if self.releasing.by_holder.is_empty() {
            return false;
        }
        self.clients
            .get(&client)
            .is_some_and(|c| self.releasing.by_holder.contains_key(&c.holder))
    }

    /// Keys set aside by big releases, still held until
    /// [`Scheduler::release_step`] lets go of them.
    pub fn releasing(&self) -> usize {
        self.releasing.keys
    }

    /// How many times a holder's big releases were all done: when this
    /// changes, some client that [`Scheduler::waits`] may wait no more.
    pub fn releases_done(&self) -> u64 {
        self.releasing.done
    }

    /// Lets go of the next few thousand keys set aside by big releases;
    /// the server calls it once per turn of its loop, until
    /// [`Scheduler::releasing`] is 0.
    pub fn release_step(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        self.release_some(STEP, &mut out);
        out
    }

    /// Lets go of every key set aside at once.
    pub fn finish_releases(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        self.finish_releases_into(&mut out);
        out
    }

    /// [`Scheduler::finish_releases`], into `out`.
    pub(super) fn finish_releases_into(&mut self, out: &mut Vec<Command>) {
        while !self.releasing.turns.is_empty() {
            self.release_some(usize::MAX, out);
        }
    }
}
