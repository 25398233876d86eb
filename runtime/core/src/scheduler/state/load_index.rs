//! The workers by load, for placement: the least loaded for its slots (the
//! lowest id among equals) in constant time, and a load change kept in
//! `log2(workers)` comparisons.
//!
//! A tournament tree over a slot per worker: each inner node keeps the
//! rank of the worker that wins its two halves, so the root is the least
//! loaded worker and a change replays only the matches on its leaf's way
//! up, stopping where a winner stays. A sorted
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

/// A worker's place as two integers compared in order: its load per slot
/// in 32.32 fixed point, then its id. For up to 65,536 slots this orders
/// workers exactly as [`LoadKey`] does (two different loads per slot
/// differ by at least 2^-32, so their fixed-point values differ, and equal
/// ones are equal), and a match is two integer comparisons, not two
/// multiplications and an indirection per side.
type Rank = (u64, WorkerId);

/// A free slot's rank: after every worker's.
const FREE: Rank = (u64::MAX, WorkerId::MAX);

/// Slots the fixed point orders exactly; a worker claiming more ranks as
/// if it had this many.
const MAX_SLOTS: u64 = 1 << 16;

fn rank(l: &LoadKey) -> Rank {
    let load = l.load.min(u64::from(u32::MAX));
    ((load << 32) / l.nthreads.clamp(1, MAX_SLOTS), l.id)
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct LoadIndex {
    /// A heap-shaped tree over `tree.len() / 2` slots: slot `s` is leaf
    /// `tree.len() / 2 + s`, holding its worker's rank ([`FREE`] while
    /// free), and node `i` holds the least rank of its children `2i` and
    /// `2i + 1`, so node 1 holds the least of all (with one slot, node 1 is
    /// that slot's leaf).
    tree: Vec<Rank>,
    /// Each worker's slot.
    slot_of: HashMap<WorkerId, u32>,
    free: Vec<u32>,
}

impl LoadIndex {
    /// The least loaded worker for its slots, the lowest id among equals.
    pub(super) fn first(&self) -> Option<WorkerId> {
        match self.tree.get(1) {
            Some(&r) if r != FREE => Some(r.1),
            _ => None,
        }
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
        self.replay(slot, rank(&load));
    }

    /// Takes worker `id` out of the index.
    pub(super) fn remove(&mut self, id: WorkerId) {
        if let Some(slot) = self.slot_of.remove(&id) {
            self.free.push(slot);
            self.replay(slot, FREE);
        }
    }

    /// Puts `rank` in slot `slot`'s leaf and replays the matches above it,
    /// stopping at the first node whose least rank stays what it was:
    /// nothing above it can change.
    fn replay(&mut self, slot: u32, rank: Rank) {
        let mut node = self.tree.len() / 2 + slot as usize;
        self.tree[node] = rank;
        node /= 2;
        while node >= 1 {
            let least = self.tree[2 * node].min(self.tree[2 * node + 1]);
            if self.tree[node] == least {
                return;
            }
            self.tree[node] = least;
            node /= 2;
        }
    }

    /// Doubles the slots (at least one), rebuilding the tree; the first new
    /// slot, free for the caller, the others on the free list.
    fn grow(&mut self) -> u32 {
        let old = self.tree.len() / 2;
        let n = (old * 2).max(1);
        let mut tree = vec![FREE; 2 * n];
        if old > 0 {
            tree[n..n + old].copy_from_slice(&self.tree[old..2 * old]);
        }
        for node in (1..n).rev() {
            tree[node] = tree[2 * node].min(tree[2 * node + 1]);
        }
        self.tree = tree;
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
        assert_eq!(ix.tree.len() / 2, 4);
    }

    proptest! {
        /// The fixed-point rank orders two workers as their loads for
        /// their slots do, for any loads and up to 65,536 slots.
        #[test]
        fn ranks_order_as_loads_per_slot(
            a in (0u64..1 << 32, 1u64..=1 << 16, 0u64..8),
            b in (0u64..1 << 32, 1u64..=1 << 16, 0u64..8),
        ) {
            let (x, y) = (load(a.2, a.0, a.1), load(b.2, b.0, b.1));
            prop_assert_eq!(rank(&x).cmp(&rank(&y)), x.cmp(&y));
        }

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
