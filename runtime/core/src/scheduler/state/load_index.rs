//! The workers by load, for placement: the least loaded for its slots (the
//! lowest id among equals) in constant time, and a load change kept in
//! `log2(workers)` comparisons.
//!
//! A tournament tree over a slot per worker: each inner node keeps the
//! slot that wins its two halves, so the root is the least loaded worker
//! and a change replays only the matches on its leaf's way up. A sorted
//! set did the same job with a removal and an insertion per change, each
//! a search and a rebalance: with 1,000 workers that was a twelfth of the
//! scheduler's instructions per task in the simulator. Slots of workers
//! that left are reused; the tree doubles when all are taken.

use super::WorkerId;
use rustc_hash::FxHashMap as HashMap;
use std::cmp::Ordering;

/// A worker's place in the order placement prefers: least loaded for its
/// slots first, then the lowest id.
#[derive(Clone, Copy, Debug)]
pub(super) struct LoadKey {
    /// Tasks it holds against its slots.
    pub(super) load: u64,
    /// Its slots (at least 1).
    pub(super) nthreads: u64,
    pub(super) id: WorkerId,
}

impl Ord for LoadKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // load / nthreads, compared without division.
        (self.load * other.nthreads)
            .cmp(&(other.load * self.nthreads))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for LoadKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for LoadKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for LoadKey {}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct LoadIndex {
    /// Each slot's worker, `None` while the slot is free.
    slots: Vec<Option<LoadKey>>,
    /// `tree[i]` for `1 <= i < slots.len()`: the winning slot below node
    /// `i`, whose children are nodes `2i` and `2i + 1`; node
    /// `slots.len() + s` is slot `s` itself (not stored).
    tree: Vec<u32>,
    /// Each worker's slot.
    slot_of: HashMap<WorkerId, u32>,
    free: Vec<u32>,
}

impl LoadIndex {
    /// The least loaded worker for its slots, the lowest id among equals.
    pub(super) fn first(&self) -> Option<WorkerId> {
        let winner = match self.slots.len() {
            0 => return None,
            1 => 0,
            _ => self.tree[1],
        };
        self.slots[winner as usize].map(|l| l.id)
    }

    /// Puts worker `load.id` in the index, or moves it to its new load.
    pub(super) fn set(&mut self, load: LoadKey) {
        let slot = match self.slot_of.get(&load.id) {
            Some(&s) => s,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None => self.grow(),
                };
                self.slot_of.insert(load.id, s);
                s
            }
        };
        self.slots[slot as usize] = Some(load);
        self.replay(slot);
    }

    /// Takes worker `id` out of the index.
    pub(super) fn remove(&mut self, id: WorkerId) {
        if let Some(slot) = self.slot_of.remove(&id) {
            self.slots[slot as usize] = None;
            self.free.push(slot);
            self.replay(slot);
        }
    }

    /// The winner of slots `a` and `b` (a free slot loses).
    fn winner(&self, a: u32, b: u32) -> u32 {
        match (&self.slots[a as usize], &self.slots[b as usize]) {
            (Some(x), Some(y)) if y < x => b,
            (None, Some(_)) => b,
            _ => a,
        }
    }

    /// The winning slot below node `node`.
    fn at(&self, node: usize) -> u32 {
        let n = self.slots.len();
        if node >= n {
            (node - n) as u32
        } else {
            self.tree[node]
        }
    }

    /// Replays the matches from slot `slot`'s leaf to the root.
    ///
    /// A node's match depends only on its two winners and their loads, and
    /// only `slot`'s load changed: once a node's winner is the one it was
    /// and is not `slot`, nothing above it changes, and the replay stops.
    fn replay(&mut self, slot: u32) {
        let mut node = (self.slots.len() + slot as usize) / 2;
        while node >= 1 {
            let won = self.winner(self.at(2 * node), self.at(2 * node + 1));
            let was = std::mem::replace(&mut self.tree[node], won);
            if was == won && won != slot {
                return;
            }
            node /= 2;
        }
    }

    /// Doubles the slots (at least one), rebuilding the tree; the first new
    /// slot, free for the caller, the others on the free list.
    fn grow(&mut self) -> u32 {
        let old = self.slots.len();
        let n = (old * 2).max(1);
        self.slots.resize(n, None);
        self.tree = vec![0; n];
        for node in (1..n).rev() {
            self.tree[node] = self.winner(self.at(2 * node), self.at(2 * node + 1));
        }
        self.free.extend((old as u32 + 1..n as u32).rev());
        old as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn load(id: WorkerId, load: u64, nthreads: u64) -> LoadKey {
        LoadKey { load, nthreads, id }
    }

    #[test]
    fn the_least_loaded_for_its_slots_comes_first_then_the_lowest_id() {
        let mut ix = LoadIndex::default();
        assert_eq!(ix.first(), None);
        ix.set(load(7, 3, 1));
        assert_eq!(ix.first(), Some(7));
        // 4 tasks on 4 slots is less loaded than 3 on 1.
        ix.set(load(9, 4, 4));
        assert_eq!(ix.first(), Some(9));
        // Equal for their slots: the lower id.
        ix.set(load(2, 2, 2));
        assert_eq!(ix.first(), Some(2));
        ix.remove(2);
        assert_eq!(ix.first(), Some(9));
        ix.set(load(9, 40, 4));
        assert_eq!(ix.first(), Some(7));
        ix.remove(7);
        ix.remove(9);
        assert_eq!(ix.first(), None);
        // Freed slots are reused.
        ix.set(load(11, 0, 1));
        assert_eq!(ix.first(), Some(11));
        assert_eq!(ix.slots.len(), 4);
    }

    proptest! {
        /// Any sequence of joins, load changes and leaves: the index names
        /// the same worker a sort of them all would.
        #[test]
        fn agrees_with_a_sort_of_all_workers(
            ops in proptest::collection::vec((0u64..40, 0u64..50, 1u64..5, any::<bool>()), 0..300)
        ) {
            let mut ix = LoadIndex::default();
            let mut all: BTreeMap<WorkerId, LoadKey> = BTreeMap::new();
            for (id, l, nthreads, leave) in ops {
                if leave {
                    ix.remove(id);
                    all.remove(&id);
                } else {
                    let w = load(id, l, nthreads);
                    ix.set(w);
                    all.insert(id, w);
                }
                let expected = all.values().min().map(|l| l.id);
                prop_assert_eq!(ix.first(), expected);
            }
        }
    }
}
