//! The task table: every task the scheduler knows, found by key.
//!
//! Tasks live in fixed-size chunks of slots, so the table grows a chunk at a
//! time and never moves or doubles what it stores; an index of slot numbers,
//! found by the key's hash, costs a few bytes per task where a map from key
//! to a boxed task cost a key, a pointer and an allocation each. The slots
//! stay dense: a removed task's slot takes the last task, so chunks emptied
//! by releases are given back, and the index shrinks with the table.

use super::{Key, Task};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::cell::Cell;
use std::hash::BuildHasher as _;

/// Slots per chunk.
const CHUNK: usize = 4096;

/// Entries in the table's cache of recently found keys.
const RECENT: usize = 1 << 16;

/// Where a key's text lives: the table's copies of keys are shared, and
/// handing one out and looking it up again by that same copy is the
/// commonest lookup there is.
fn address(key: &str) -> usize {
    key.as_ptr() as usize
}

/// The cache entry for a key's text at `addr`.
fn recent_index(addr: usize) -> usize {
    // Keys are allocated at least 8 bytes apart.
    ((addr >> 3) ^ (addr >> 12)) % RECENT
}

/// A task and its key (the table's one copy of it).
#[derive(Debug)]
struct Slot {
    key: Key,
    /// The key's [`hash`]: moving a slot finds its index entry by this,
    /// without reading the key's text (a cache miss of its own).
    hash: u32,
    task: Task,
}

/// A key's hash, 32 bits of it: the index keeps it beside the slot
/// number, so growing the index rehashes from it (not from every key's
/// text, a cache miss or two each at a million tasks), and a probe
/// compares it before it reads a slot's key.
fn hash(key: &str) -> u32 {
    let h = FxBuildHasher.hash_one(key);
    (h ^ (h >> 32)) as u32
}

/// The index's hash of an entry with 32-bit hash `h`: spread over both
/// halves, since the table takes the slot's place from the low bits and a
/// tag from the top ones.
fn spread(h: u32) -> u64 {
    u64::from(h) | (u64::from(h) << 32)
}

/// An index entry: a slot number and its key's [`hash`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u32,
    hash: u32,
}

/// The slot numbered `id` of `chunks`, which the index says is taken.
fn slot(chunks: &[Vec<Slot>], id: u32) -> &Slot {
    &chunks[id as usize / CHUNK][id as usize % CHUNK]
}

fn slot_mut(chunks: &mut [Vec<Slot>], id: u32) -> &mut Slot {
    &mut chunks[id as usize / CHUNK][id as usize % CHUNK]
}

/// Whether an index entry is `key`'s, whose [`hash`] is `h`: the key's text
/// is read only when the hashes agree.
fn is_key<'a>(chunks: &'a [Vec<Slot>], h: u32, key: &'a str) -> impl Fn(&Entry) -> bool + 'a {
    move |e| e.hash == h && &*slot(chunks, e.id).key == key
}

/// Tasks changed since the journal last looked, by slot number: a bit per
/// slot, and the numbers noted in the order they were first changed. A
/// number may stay in the list after its task moved or went (its bit then
/// says whether the slot's task now is noted), so draining checks the bit.
#[derive(Debug, Default)]
pub(super) struct Noted {
    ids: Vec<u32>,
    bits: Vec<u64>,
}

/// The word of [`Noted::bits`] that holds slot `id`'s bit, and the bit.
fn bit_of(id: u32) -> (usize, u64) {
    (id as usize / 64, 1u64 << (id % 64))
}

impl Noted {
    fn note(&mut self, id: u32) {
        let (word, bit) = bit_of(id);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.ids.push(id);
        }
    }

    /// Clears the bit of `id`; whether it was set.
    fn take(&mut self, id: u32) -> bool {
        let (word, bit) = bit_of(id);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }
}

/// Notes slot `id` as changed, for the journal (when there is one).
fn note(noted: &mut Option<Noted>, id: u32) {
    if let Some(n) = noted {
        n.note(id);
    }
}

/// The task table. With a journal, it notes every key it hands out for
/// change, so the journal records what changed (and only that) after each
/// event: see [`Scheduler::journal_records`](super::Scheduler::journal_records).
#[derive(Debug)]
pub(super) struct Tasks {
    /// Slot numbers by their key's hash.
    index: HashTable<Entry>,
    /// The slots, `CHUNK` to a chunk: slot `i` is in chunk `i / CHUNK`,
    /// and only the last chunk is not full.
    chunks: Vec<Vec<Slot>>,
    /// Tasks touched since the journal last drained them; `None` without
    /// a journal.
    pub(super) noted: Option<Noted>,
    /// Submission numbers of recorded tasks removed since the journal last
    /// drained them (with a journal only).
    pub(super) forgotten: Vec<u64>,
    /// Slot numbers of keys recently found by the table's own copy of the
    /// key, by the address of its text: found again without hashing and
    /// probing (one event looks up the same few keys many times). An entry
    /// is only a hint: it counts when the slot's key is that very text, so
    /// one left behind by a slot that moved or emptied is never wrong.
    recent: Box<[Cell<(usize, u32)>]>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            index: HashTable::default(),
            chunks: Vec::new(),
            noted: None,
            forgotten: Vec::new(),
            recent: vec![Cell::new((0, 0)); RECENT].into_boxed_slice(),
        }
    }
}

impl Tasks {
    fn find(&self, key: &str) -> Option<u32> {
        let addr = address(key);
        let recent = &self.recent[recent_index(addr)];
        let (at, id) = recent.get();
        if at == addr && (id as usize) < self.index.len() {
            let k = &slot(&self.chunks, id).key;
            if address(k) == addr && k.len() == key.len() {
                return Some(id);
            }
        }
        let chunks = &self.chunks;
        let h = hash(key);
        let id = self.index.find(spread(h), is_key(chunks, h, key))?.id;
        // Cached under the table's copy of the key, by which the next
        // lookups of it come.
        let at = address(&slot(chunks, id).key);
        self.recent[recent_index(at)].set((at, id));
        Some(id)
    }

    /// The shared copy of a known key.
    pub(super) fn key(&self, key: &str) -> Option<Key> {
        self.find(key).map(|id| slot(&self.chunks, id).key.clone())
    }

    pub(super) fn get(&self, key: &str) -> Option<&Task> {
        self.find(key).map(|id| &slot(&self.chunks, id).task)
    }

    /// The task of `key`, noted as changed.
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Task> {
        let id = self.find(key)?;
        note(&mut self.noted, id);
        Some(&mut slot_mut(&mut self.chunks, id).task)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Adds a task, replacing any of the same key: that one is returned.
    pub(super) fn insert(&mut self, key: Key, task: Task) -> Option<Task> {
        let h = hash(&key);
        let chunks = &self.chunks;
        if let Some(&Entry { id, .. }) = self.index.find(spread(h), is_key(chunks, h, &key)) {
            note(&mut self.noted, id);
            return Some(std::mem::replace(
                &mut slot_mut(&mut self.chunks, id).task,
                task,
            ));
        }
        // Slots are dense: the new one is numbered by the count.
        let id = self.index.len();
        if id / CHUNK == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        // Placement and the task's end look it up by this copy of its key:
        // cached now, the first of them need not hash and probe.
        let at = address(&key);
        self.chunks[id / CHUNK].push(Slot { key, hash: h, task });
        let id = u32::try_from(id).expect("fewer than 4 billion tasks");
        self.recent[recent_index(at)].set((at, id));
        note(&mut self.noted, id);
        self.index
            .insert_unique(spread(h), Entry { id, hash: h }, |e| spread(e.hash));
        None
    }

    /// Removes the task of `key`, noted as changed.
    pub(super) fn remove(&mut self, key: &str) -> Option<Task> {
        let chunks = &self.chunks;
        let h = hash(key);
        let id = match self.index.find_entry(spread(h), is_key(chunks, h, key)) {
            Ok(entry) => entry.remove().0.id,
            Err(_) => return None,
        };
        // The last slot moves into the freed one, and its note with it.
        if let Some(n) = &mut self.noted {
            n.take(id);
        }
        let last = u32::try_from(self.index.len()).expect("fewer than 4 billion tasks");
        let moved = self.chunks[last as usize / CHUNK]
            .pop()
            .expect("the last slot is taken");
        let Slot { task, .. } = if id == last {
            moved
        } else {
            self.index
                .find_mut(spread(moved.hash), |e| e.id == last)
                .expect("the last slot is indexed")
                .id = id;
            if let Some(n) = &mut self.noted
                && n.take(last)
            {
                n.note(id);
            }
            std::mem::replace(slot_mut(&mut self.chunks, id), moved)
        };
        // An empty last chunk is given back once the one before it is half
        // empty too, so a table that grows and shrinks by a few tasks at a
        // chunk's edge does not allocate a chunk each time.
        let n = self.chunks.len();
        if n >= 2 && self.chunks[n - 1].is_empty() && self.chunks[n - 2].len() <= CHUNK / 2 {
            self.chunks.pop();
        }
        if self.index.is_empty() {
            self.chunks.clear();
        }
        if self.index.capacity() > 1024 && self.index.len() * 4 < self.index.capacity() {
            self.index
                .shrink_to(self.index.len() * 2, |e| spread(e.hash));
        }
        if self.noted.is_some() && task.journaled != 0 {
            self.forgotten.push(task.seq);
        }
        Some(task)
    }

    /// Makes room for `n` more tasks in the index.
    pub(super) fn reserve(&mut self, n: usize) {
        self.index.reserve(n, |e| spread(e.hash));
    }

    /// How many tasks it holds.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every task with its key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Task)> {
        self.chunks.iter().flatten().map(|s| (&s.key, &s.task))
    }

    /// Every task, to change without noting it for the journal.
    pub(super) fn values_mut_untracked(&mut self) -> impl Iterator<Item = &mut Task> {
        self.chunks.iter_mut().flatten().map(|s| &mut s.task)
    }

    /// The tasks noted as changed since the last call (each once), with
    /// their slot numbers, for [`Tasks::slot`] and
    /// [`Tasks::slot_mut_untracked`]; their notes are
    /// cleared.
    pub(super) fn take_noted(&mut self) -> Vec<u32> {
        let Some(n) = &mut self.noted else {
            return Vec::new();
        };
        let len = self.index.len();
        let mut ids = std::mem::take(&mut n.ids);
        ids.retain(|&id| (id as usize) < len && n.take(id));
        ids
    }

    /// The key and task in slot `id` (of [`Tasks::take_noted`]).
    pub(super) fn slot(&self, id: u32) -> (&Key, &Task) {
        let s = slot(&self.chunks, id);
        (&s.key, &s.task)
    }

    /// The task in slot `id` (of [`Tasks::take_noted`]), to change
    /// without noting it.
    pub(super) fn slot_mut_untracked(&mut self, id: u32) -> &mut Task {
        &mut slot_mut(&mut self.chunks, id).task
    }

    /// The task of `key`, to change without noting it for the journal.
    pub(super) fn get_mut_untracked(&mut self, key: &str) -> Option<&mut Task> {
        let id = self.find(key)?;
        Some(&mut slot_mut(&mut self.chunks, id).task)
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;
    fn index(&self, key: &str) -> &Task {
        self.get(key).expect("a known key")
    }
}

#[cfg(test)]
mod tests {
    use super::super::compact::{Dependents, Holders, Interner, Recipe};
    use super::super::{State, activity};
    use super::*;
    use thin_vec::ThinVec;

    fn task(seq: u64, names: &mut Interner) -> Task {
        Task {
            recipe: Recipe::scattered(names),
            seq,
            state: State::Pending { waiting_on: 0 },
            deps: ThinVec::new(),
            dependents: Dependents::default(),
            needed_by: 0,
            holders: Holders::one("h".into()),
            watchers: ThinVec::new(),
            retries_left: 0,
            deaths: 0,
            fetch_misses: 0,
            stamps: activity::Stamps::at(0),
            journaled: 0,
            group: 0,
        }
    }

    /// A table of `n` tasks keyed `k-0`, `k-1`, …, each numbered (`seq`)
    /// by its key's number.
    fn keyed(n: u64, names: &mut Interner) -> Tasks {
        let mut t = Tasks::default();
        for i in 0..n {
            t.insert(format!("k-{i}").into(), task(i, names));
        }
        t
    }

    /// The keys of the tasks `take_noted` gives, sorted.
    fn noted_keys(t: &mut Tasks) -> Vec<String> {
        let mut keys: Vec<String> = t
            .take_noted()
            .into_iter()
            .map(|id| t.slot(id).0.to_string())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn changes_are_noted_once_each_and_follow_a_task_that_moves() {
        let mut names = Interner::default();
        let mut t = Tasks {
            noted: Some(Noted::default()),
            ..Tasks::default()
        };
        for i in 0..5 {
            t.insert(format!("k-{i}").into(), task(i, &mut names));
        }
        t.get_mut("k-1").unwrap();
        assert_eq!(noted_keys(&mut t), ["k-0", "k-1", "k-2", "k-3", "k-4"]);
        assert!(t.take_noted().is_empty(), "drained");

        // Untouched tasks stay unnoted when the last one moves into a freed
        // slot; a noted one moving keeps its note, once.
        t.get_mut("k-4").unwrap();
        t.get_mut("k-4").unwrap();
        t.remove("k-1");
        assert_eq!(noted_keys(&mut t), ["k-4"]);
        // A noted task removed takes its note with it: the task moved into
        // its slot is not reported for it.
        t.get_mut("k-0").unwrap();
        t.remove("k-0");
        assert_eq!(noted_keys(&mut t), Vec::<String>::new());
        // Reads and untracked changes note nothing.
        t.get("k-2").unwrap();
        t.get_mut_untracked("k-3").unwrap().seq = 9;
        assert!(t.take_noted().is_empty());
        // Removing a journaled task lists it as forgotten.
        t.get_mut_untracked("k-2").unwrap().journaled = 3;
        t.remove("k-2");
        assert_eq!(t.forgotten, [2]);
    }

    #[test]
    fn tasks_removed_in_any_order_leave_the_rest_found_and_chunks_given_back() {
        let mut names = Interner::default();
        let n = 3 * CHUNK as u64 + 17;
        let mut t = keyed(n, &mut names);
        assert_eq!((t.len(), t.chunks.len()), (n as usize, 4));
        // Remove every third key, then the rest from the middle out, checking
        // that every key left still finds its own task.
        let mut order: Vec<u64> = (0..n).filter(|i| i % 3 == 0).collect();
        let mut rest: Vec<u64> = (0..n).filter(|i| i % 3 != 0).collect();
        rest.sort_by_key(|i| i.abs_diff(n / 2));
        order.extend(rest);
        let mut left: std::collections::BTreeSet<u64> = (0..n).collect();
        for (done, i) in order.iter().enumerate() {
            let gone = t.remove(&format!("k-{i}")).expect("present");
            assert_eq!(gone.seq, *i);
            assert!(t.remove(&format!("k-{i}")).is_none(), "removed once");
            left.remove(i);
            if done % 997 == 0 {
                for j in &left {
                    assert_eq!(t.get(&format!("k-{j}")).expect("kept").seq, *j);
                }
                assert_eq!(t.iter().count(), left.len());
            }
            // Never more than one chunk beyond what the tasks need.
            assert!(t.chunks.len() <= t.len().div_ceil(CHUNK) + 1);
        }
        assert_eq!((t.len(), t.chunks.len()), (0, 0));
        assert!(t.index.capacity() <= 1024 * 2, "the index shrank");
        // And it fills again.
        t.insert("again".into(), task(7, &mut names));
        assert_eq!(t["again"].seq, 7);
    }

    /// Lookups by the table's own copies of keys (which its cache of recent
    /// finds serves) stay right while tasks move between slots and keys go
    /// and come again: a stale cache entry never finds a wrong task.
    #[test]
    fn keys_found_by_the_tables_own_copies_stay_right_as_tasks_move() {
        let mut names = Interner::default();
        let n = 2 * CHUNK as u64 + 5;
        let mut t = keyed(n, &mut names);
        // The shared copies, each found (and so cached) once.
        let shared: Vec<Key> = (0..n)
            .map(|i| t.key(&format!("k-{i}")).expect("present"))
            .collect();
        for (i, k) in shared.iter().enumerate() {
            assert_eq!(t[k].seq, i as u64);
        }
        // Removing the even keys moves later tasks into their slots.
        for i in (0..n).step_by(2) {
            assert_eq!(t.remove(&shared[i as usize]).expect("present").seq, i);
        }
        for (i, k) in shared.iter().enumerate() {
            match t.get(k) {
                Some(task) => assert_eq!((i % 2, task.seq), (1, i as u64)),
                None => assert_eq!(i % 2, 0, "k-{i} was kept"),
            }
        }
        // Keys made again are new copies: found, and the old copies find
        // the new tasks by their text.
        for i in (0..n).step_by(2) {
            t.insert(format!("k-{i}").into(), task(n + i, &mut names));
        }
        for (i, k) in shared.iter().enumerate() {
            let want = if i % 2 == 0 { n + i as u64 } else { i as u64 };
            assert_eq!(t.get(k).expect("present").seq, want);
            assert_eq!(t.get(&format!("k-{i}")).expect("present").seq, want);
        }
    }
}
