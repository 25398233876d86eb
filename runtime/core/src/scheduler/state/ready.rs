//! Ready tasks, in the order they are placed: the highest priority first;
//! within a priority, the clients that submitted them take turns; and each
//! client's tasks go oldest (the lowest submission number) first.
//!
//! Taking turns is what lets one shell's `dtask submit` run while another
//! shell's million-task pipeline is queued: with one line for everyone, it
//! waited behind every task submitted before it. Tasks are grouped by the
//! client that submitted them ([`group_of`] its session or connection:
//! every `dtask` command is a client of its own, though they share the
//! name that holds their keys); two clients whose groups collide share a
//! turn, nothing worse.
//!
//! Tasks mostly become ready in the order they were submitted (a map's
//! tasks at once, a graph's as their inputs finish, roughly in order), so
//! each group keeps those in a queue: pushing and popping them is
//! constant time and touches one cache line, where a heap of a million
//! ready tasks sifted through twenty levels of cold memory for every task
//! placed. A task older than the newest one queued (a task requeued after
//! its worker died, one that found no room and waits again) goes in front
//! of the queue when it is the oldest of its group, else in a heap beside
//! it; popping takes the older of the two heads.

use super::Key;
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hash::BuildHasher as _;

/// The group of the tasks a client submits, from what names it (its
/// session, or its connection): tasks of one priority take turns by group.
pub(super) fn group_of(client: u64) -> u32 {
    let h = FxBuildHasher.hash_one(client);
    (h ^ (h >> 32)) as u32
}

/// A ready task's place in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// Higher goes first.
    pub(super) priority: i32,
    /// Its submission number: within a group, lower goes first.
    pub(super) seq: u64,
    /// Whose it is ([`group_of`]).
    pub(super) group: u32,
    pub(super) key: Key,
}

/// The ready tasks of one group at one priority.
#[derive(Debug, Default)]
struct Lane {
    /// By submission number, oldest first.
    queue: VecDeque<(u64, Key)>,
    /// Those that came too late for the queue's order: oldest on top.
    late: BinaryHeap<(Reverse<u64>, Key)>,
}

impl Lane {
    fn push(&mut self, seq: u64, key: Key) {
        match (self.queue.front(), self.queue.back()) {
            (_, Some((newest, _))) if seq > *newest => self.queue.push_back((seq, key)),
            (Some((oldest, _)), _) if seq < *oldest => self.queue.push_front((seq, key)),
            (None, None) => self.queue.push_back((seq, key)),
            _ => self.late.push((Reverse(seq), key)),
        }
    }

    fn pop(&mut self) -> Option<(u64, Key)> {
        let late_first = match (self.queue.front(), self.late.peek()) {
            (Some((q, _)), Some((Reverse(l), _))) => l < q,
            (None, Some(_)) => true,
            _ => false,
        };
        if late_first {
            self.late.pop().map(|(Reverse(seq), key)| (seq, key))
        } else {
            self.queue.pop_front()
        }
    }

    /// The submission number `pop` would take next.
    fn peek(&self) -> Option<u64> {
        let queued = self.queue.front().map(|(seq, _)| *seq);
        let late = self.late.peek().map(|(Reverse(seq), _)| *seq);
        match (queued, late) {
            (Some(q), Some(l)) => Some(q.min(l)),
            (q, l) => q.or(l),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.late.is_empty()
    }

    fn capacity(&self) -> usize {
        self.queue.capacity() + self.late.capacity()
    }

    fn shrink_to(&mut self, at_least: usize) {
        self.queue.shrink_to(at_least.max(self.queue.len()));
        self.late.shrink_to(at_least.max(self.late.len()));
    }
}

/// The ready tasks of one priority: a lane per group, taking turns.
///
/// Every lane has tasks, but for a lone lane, which is kept emptied (with
/// its room: most graphs come from one client at one priority) and taken
/// over by the next group to push.
#[derive(Debug, Default)]
struct Level {
    lanes: HashMap<u32, Lane>,
    /// The lanes' groups in turn: the front one's turn is next. A lane
    /// that has had its turn goes to the back; one emptied leaves.
    turns: VecDeque<u32>,
    len: usize,
}

impl Level {
    fn push(&mut self, seq: u64, group: u32, key: Key) {
        if let Some(lane) = self.lanes.get_mut(&group) {
            lane.push(seq, key);
        } else {
            let mut lane = match self.turns.as_slices() {
                ([only], []) if self.lanes[only].is_empty() => {
                    let lane = self.lanes.remove(only).expect("turns name lanes");
                    self.turns.clear();
                    lane
                }
                _ => Lane::default(),
            };
            lane.push(seq, key);
            self.lanes.insert(group, lane);
            self.turns.push_back(group);
        }
        self.len += 1;
    }

    /// Takes the next task of the lane whose turn it is, and passes the
    /// turn on.
    fn pop(&mut self) -> Option<(u64, u32, Key)> {
        let group = *self.turns.front()?;
        let lane = self.lanes.get_mut(&group).expect("turns name lanes");
        let (seq, key) = lane.pop()?;
        self.len -= 1;
        if self.turns.len() > 1 {
            self.turns.pop_front();
            if lane.is_empty() {
                self.lanes.remove(&group);
                // A burst of clients leaves no table behind to walk.
                if self.lanes.capacity() > 4 * self.lanes.len() + 16 {
                    self.lanes.shrink_to_fit();
                    self.turns.shrink_to_fit();
                }
            } else {
                self.turns.push_back(group);
            }
        }
        Some((seq, group, key))
    }

    /// Puts back the task `pop` took last, and gives its group the turn
    /// again.
    fn put_back(&mut self, seq: u64, group: u32, key: Key) {
        self.push(seq, group, key);
        // `pop` sent the group to the back, or (emptied) `push` did.
        if self.turns.len() > 1 && self.turns.back() == Some(&group) {
            self.turns.pop_back();
            self.turns.push_front(group);
        }
    }

    /// The submission number `pop` would take next.
    fn peek(&self) -> Option<u64> {
        let group = self.turns.front()?;
        self.lanes.get(group).and_then(Lane::peek)
    }

    fn capacity(&self) -> usize {
        self.lanes.values().map(Lane::capacity).sum()
    }

    /// Gives back room beyond what `at_least` entries in all, shared by
    /// the lanes, need.
    fn shrink_to(&mut self, at_least: usize) {
        let each = at_least / self.lanes.len().max(1);
        for lane in self.lanes.values_mut() {
            lane.shrink_to(each);
        }
    }
}

/// The ready tasks, by priority (highest first); within one, by group in
/// turn; within a group, by age.
#[derive(Debug, Default)]
pub(super) struct Ready {
    levels: BTreeMap<Reverse<i32>, Level>,
    len: usize,
}

impl Ready {
    pub(super) fn push(&mut self, e: Entry) {
        self.levels
            .entry(Reverse(e.priority))
            .or_default()
            .push(e.seq, e.group, e.key);
        self.len += 1;
    }

    /// Puts back the task `pop` took last (it found no room), first in
    /// line again, as though it had not been taken.
    pub(super) fn put_back(&mut self, e: Entry) {
        self.levels
            .entry(Reverse(e.priority))
            .or_default()
            .put_back(e.seq, e.group, e.key);
        self.len += 1;
    }

    /// The highest priority's next task.
    pub(super) fn pop(&mut self) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        // An emptied level goes, unless it is the only one: most graphs
        // use one priority, whose queue keeps its room. One kept that way
        // may sit above tasks pushed at a lower priority since.
        while self
            .levels
            .first_key_value()
            .is_some_and(|(_, l)| l.len == 0)
        {
            self.levels.pop_first();
        }
        let only = self.levels.len() == 1;
        let mut level = self.levels.first_entry()?;
        let (seq, group, key) = level.get_mut().pop()?;
        let Reverse(priority) = *level.key();
        if level.get().len == 0 && !only {
            level.remove();
        }
        self.len -= 1;
        Some(Entry {
            priority,
            seq,
            group,
            key,
        })
    }

    /// The place in line of the task `pop` would take next: its priority
    /// and `Reverse(submission number)`, greater goes first.
    pub(super) fn peek(&self) -> Option<(i32, Reverse<u64>)> {
        self.levels
            .iter()
            .find_map(|(Reverse(p), level)| level.peek().map(|seq| (*p, Reverse(seq))))
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries there is room for without allocating.
    pub(super) fn capacity(&self) -> usize {
        self.levels.values().map(Level::capacity).sum()
    }

    /// Gives back room beyond what `at_least` entries per queue need.
    pub(super) fn shrink_to(&mut self, at_least: usize) {
        // Emptied levels go, but not the last one: most graphs use one
        // priority, and its queue keeps the room asked for (dropped, the
        // next burst grew it again from nothing, a copy per doubling and
        // fresh pages from the kernel each time).
        let mut left = self.levels.len();
        self.levels.retain(|_, level| {
            let drop = level.len == 0 && left > 1;
            left -= usize::from(drop);
            !drop
        });
        for level in self.levels.values_mut() {
            level.shrink_to(at_least);
        }
    }
}

impl Extend<Entry> for Ready {
    fn extend<I: IntoIterator<Item = Entry>>(&mut self, entries: I) {
        for entry in entries {
            self.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seq: u64) -> Key {
        Key::from(format!("k{seq}"))
    }

    fn entry(priority: i32, seq: u64, group: u32) -> Entry {
        Entry {
            priority,
            seq,
            group,
            key: key(seq),
        }
    }

    fn drain(r: &mut Ready) -> Vec<(i32, u64, u32)> {
        std::iter::from_fn(|| r.pop())
            .map(|e| {
                assert_eq!(e.key, key(e.seq));
                (e.priority, e.seq, e.group)
            })
            .collect()
    }

    #[test]
    fn tasks_come_out_by_priority_then_age_whatever_order_they_went_in() {
        let mut r = Ready::default();
        for (p, s) in [
            (0, 5),
            (0, 6),
            (2, 9),
            (0, 1),
            (0, 3),
            (-1, 0),
            (2, 4),
            (0, 8),
            (0, 2),
        ] {
            r.push(entry(p, s, 7));
        }
        assert_eq!(r.len(), 9);
        let order: Vec<(i32, u64)> = drain(&mut r).into_iter().map(|(p, s, _)| (p, s)).collect();
        assert_eq!(
            order,
            [
                (2, 4),
                (2, 9),
                (0, 1),
                (0, 2),
                (0, 3),
                (0, 5),
                (0, 6),
                (0, 8),
                (-1, 0)
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn groups_of_one_priority_take_turns_and_a_higher_priority_goes_first() {
        let mut r = Ready::default();
        // A pipeline of a thousand, then two small clients' tasks.
        r.extend((0..1000).map(|s| entry(0, s, 1)));
        r.push(entry(0, 1000, 2));
        r.push(entry(0, 1001, 2));
        r.push(entry(0, 1002, 3));
        let first: Vec<(u64, u32)> = (0..6)
            .map(|_| r.pop().map(|e| (e.seq, e.group)).expect("queued"))
            .collect();
        assert_eq!(
            first,
            [(0, 1), (1000, 2), (1002, 3), (1, 1), (1001, 2), (2, 1)]
        );
        // A task of higher priority goes before every group's.
        r.push(entry(5, 2000, 1));
        assert_eq!(r.peek(), Some((5, Reverse(2000))));
        assert_eq!(r.pop().map(|e| e.seq), Some(2000));
        // The lone group left goes in order.
        let rest = drain(&mut r);
        assert_eq!(rest.len(), 997);
        assert!(
            rest.iter()
                .zip(3..)
                .all(|(&(_, s, g), want)| s == want && g == 1)
        );
    }

    #[test]
    fn a_task_put_back_keeps_its_groups_turn() {
        let mut r = Ready::default();
        r.extend([
            entry(0, 1, 1),
            entry(0, 2, 1),
            entry(0, 3, 2),
            entry(0, 4, 2),
        ]);
        let taken = r.pop().expect("queued");
        assert_eq!((taken.seq, taken.group), (1, 1));
        r.put_back(taken);
        assert_eq!(r.peek(), Some((0, Reverse(1))));
        let order: Vec<u64> = drain(&mut r).into_iter().map(|(_, s, _)| s).collect();
        assert_eq!(order, [1, 3, 2, 4]);
    }

    #[test]
    fn a_burst_gives_its_room_back_when_shrunk() {
        let mut r = Ready::default();
        r.extend((0..100_000).map(|s| entry(0, s, 0)));
        assert!(r.capacity() >= 100_000);
        while r.len() > 10 {
            r.pop();
        }
        r.shrink_to(64);
        assert!(r.capacity() < 1_000, "kept room for {}", r.capacity());
        assert_eq!(r.pop().map(|e| e.seq), Some(99_990));
    }

    #[test]
    fn many_clients_bursts_give_their_room_back_too() {
        let mut r = Ready::default();
        // Five big lanes: the room kept is shared, not kept by each.
        r.extend((0..100_000).map(|s| entry(0, s, (s % 5) as u32)));
        while r.len() > 10 {
            r.pop();
        }
        r.shrink_to(64);
        assert!(r.capacity() < 1_000, "kept room for {}", r.capacity());
        // Ten thousand clients of a task each leave no table of lanes.
        r.extend((0..10_000).map(|s| entry(0, 200_000 + s, 100 + s as u32)));
        while r.pop().is_some() {}
        let level = r.levels.values().next().expect("the level stays");
        assert!(
            level.lanes.capacity() < 64,
            "{} lanes' room",
            level.lanes.capacity()
        );
    }

    proptest! {
        /// With one group, any interleaving of pushes and pops comes out
        /// as a max-heap of the same entries would.
        #[test]
        fn pops_as_a_heap_would(ops in proptest::collection::vec((any::<bool>(), -2i32..3, 0u64..64), 0..200)) {
            let mut r = Ready::default();
            let mut heap = BinaryHeap::new();
            for (n, (push, priority, seq)) in ops.into_iter().enumerate() {
                if push {
                    // Unique submission numbers, as tasks have.
                    let seq = seq * 1000 + n as u64;
                    r.push(entry(priority, seq, 9));
                    heap.push((priority, Reverse(seq), key(seq)));
                } else {
                    let next = heap.peek().map(|(p, s, _)| (*p, *s));
                    prop_assert_eq!(r.peek(), next);
                    prop_assert_eq!(r.pop().map(|e| (e.priority, Reverse(e.seq), e.key)), heap.pop());
                }
                prop_assert_eq!(r.len(), heap.len());
            }
            while let Some(expected) = heap.pop() {
                prop_assert_eq!(r.pop().map(|e| (e.priority, Reverse(e.seq), e.key)), Some(expected));
            }
            prop_assert!(r.pop().is_none());
        }

        /// With several groups, each pop takes the highest priority
        /// waiting, and its group's oldest at that priority; `peek` names
        /// it; and while groups wait at the top priority, none is taken
        /// twice before each other has had a turn.
        #[test]
        fn groups_take_turns_and_each_keeps_its_order(
            ops in proptest::collection::vec((any::<bool>(), -1i32..2, 0u64..64, 0u32..4), 0..300),
        ) {
            let mut r = Ready::default();
            let mut waiting: Vec<Entry> = Vec::new();
            // Pops since each group (at the top priority) was last taken,
            // and that priority.
            let mut since: HashMap<u32, usize> = HashMap::default();
            let mut since_top = None;
            // The groups that have waited at that priority.
            let mut seen = std::collections::BTreeSet::new();
            for (n, (push, priority, seq, group)) in ops.into_iter().enumerate() {
                if push {
                    let e = entry(priority, seq * 1000 + n as u64, group);
                    waiting.push(e.clone());
                    r.push(e);
                    continue;
                }
                let peeked = r.peek();
                let Some(e) = r.pop() else {
                    prop_assert!(waiting.is_empty());
                    prop_assert_eq!(peeked, None);
                    continue;
                };
                prop_assert_eq!(peeked, Some((e.priority, Reverse(e.seq))));
                let top = waiting.iter().map(|w| w.priority).max().expect("one waits");
                prop_assert_eq!(e.priority, top);
                let oldest = waiting
                    .iter()
                    .filter(|w| w.priority == top && w.group == e.group)
                    .map(|w| w.seq)
                    .min();
                prop_assert_eq!(Some(e.seq), oldest);
                let groups: std::collections::BTreeSet<u32> =
                    waiting.iter().filter(|w| w.priority == top).map(|w| w.group).collect();
                waiting.retain(|w| w.seq != e.seq);
                // Fair among groups waiting at one priority: none is passed
                // over by more than the other groups that waited there.
                if since_top.replace(top) != Some(top) {
                    since.clear();
                    seen.clear();
                }
                seen.extend(groups.iter().copied());
                for g in &groups {
                    *since.entry(*g).or_default() += 1;
                }
                since.insert(e.group, 0);
                since.retain(|g, _| groups.contains(g));
                for (g, n) in &since {
                    prop_assert!(*n < seen.len(), "group {} passed over {} times", g, n);
                }
                prop_assert_eq!(r.len(), waiting.len());
            }
        }
    }
}
