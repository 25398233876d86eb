//! Ready tasks, in the order they are placed: the highest priority first,
//! then the oldest (the lowest submission number).
//!
//! Tasks mostly become ready in the order they were submitted (a map's
//! tasks at once, a graph's as their inputs finish, roughly in order), so
//! each priority keeps those in a queue: pushing and popping them is
//! constant time and touches one cache line, where a heap of a million
//! ready tasks sifted through twenty levels of cold memory for every task
//! placed. A task older than the newest one queued (a task requeued after
//! its worker died, one that found no room and waits again) goes in front
//! of the queue when it is the oldest of all, else in a heap beside it;
//! popping takes the older of the two heads.

use super::Key;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// The ready tasks of one priority.
#[derive(Debug, Default)]
struct Level {
    /// By submission number, oldest first.
    queue: VecDeque<(u64, Key)>,
    /// Those that came too late for the queue's order: oldest on top.
    late: BinaryHeap<(Reverse<u64>, Key)>,
}

impl Level {
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

    fn len(&self) -> usize {
        self.queue.len() + self.late.len()
    }

    fn capacity(&self) -> usize {
        self.queue.capacity() + self.late.capacity()
    }

    fn shrink_to(&mut self, at_least: usize) {
        self.queue.shrink_to(at_least.max(self.queue.len()));
        self.late.shrink_to(at_least.max(self.late.len()));
    }
}

/// The ready tasks, by priority (highest first), each priority by age.
/// Entries are `(priority, Reverse(submission number), key)`, in the
/// order a max-heap of them would pop.
#[derive(Debug, Default)]
pub(super) struct Ready {
    levels: BTreeMap<Reverse<i32>, Level>,
    len: usize,
}

impl Ready {
    pub(super) fn push(&mut self, (priority, Reverse(seq), key): (i32, Reverse<u64>, Key)) {
        self.levels
            .entry(Reverse(priority))
            .or_default()
            .push(seq, key);
        self.len += 1;
    }

    /// The highest priority's oldest task.
    pub(super) fn pop(&mut self) -> Option<(i32, Reverse<u64>, Key)> {
        if self.len == 0 {
            return None;
        }
        // An emptied level goes, unless it is the only one: most graphs
        // use one priority, whose queue keeps its room. One kept that way
        // may sit above tasks pushed at a lower priority since.
        while self
            .levels
            .first_key_value()
            .is_some_and(|(_, l)| l.len() == 0)
        {
            self.levels.pop_first();
        }
        let only = self.levels.len() == 1;
        let mut level = self.levels.first_entry()?;
        let (seq, key) = level.get_mut().pop()?;
        let Reverse(priority) = *level.key();
        if level.get().len() == 0 && !only {
            level.remove();
        }
        self.len -= 1;
        Some((priority, Reverse(seq), key))
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
            let drop = level.len() == 0 && left > 1;
            left -= usize::from(drop);
            !drop
        });
        for level in self.levels.values_mut() {
            level.shrink_to(at_least);
        }
    }
}

impl Extend<(i32, Reverse<u64>, Key)> for Ready {
    fn extend<I: IntoIterator<Item = (i32, Reverse<u64>, Key)>>(&mut self, entries: I) {
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
            r.push((p, Reverse(s), key(s)));
        }
        assert_eq!(r.len(), 9);
        let order: Vec<(i32, u64)> = std::iter::from_fn(|| r.pop())
            .map(|(p, Reverse(s), k)| {
                assert_eq!(k, key(s));
                (p, s)
            })
            .collect();
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
    fn a_burst_gives_its_room_back_when_shrunk() {
        let mut r = Ready::default();
        r.extend((0..100_000).map(|s| (0, Reverse(s), key(s))));
        assert!(r.capacity() >= 100_000);
        while r.len() > 10 {
            r.pop();
        }
        r.shrink_to(64);
        assert!(r.capacity() < 1_000, "kept room for {}", r.capacity());
        assert_eq!(r.pop().map(|(_, Reverse(s), _)| s), Some(99_990));
    }

    proptest! {
        /// Any interleaving of pushes and pops comes out as a max-heap of
        /// the same entries would.
        #[test]
        fn pops_as_a_heap_would(ops in proptest::collection::vec((any::<bool>(), -2i32..3, 0u64..64), 0..200)) {
            let mut r = Ready::default();
            let mut heap = BinaryHeap::new();
            for (n, (push, priority, seq)) in ops.into_iter().enumerate() {
                if push {
                    // Unique submission numbers, as tasks have.
                    let seq = seq * 1000 + n as u64;
                    r.push((priority, Reverse(seq), key(seq)));
                    heap.push((priority, Reverse(seq), key(seq)));
                } else {
                    let next = heap.peek().map(|(p, s, _)| (*p, *s));
                    prop_assert_eq!(r.peek(), next);
                    prop_assert_eq!(r.pop(), heap.pop());
                }
                prop_assert_eq!(r.len(), heap.len());
            }
            while let Some(expected) = heap.pop() {
                prop_assert_eq!(r.pop(), Some(expected));
            }
            prop_assert!(r.pop().is_none());
        }
    }
}
