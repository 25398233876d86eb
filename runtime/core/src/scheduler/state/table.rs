//! The task table: every task the scheduler knows, found by key.
//!
//! Tasks live in fixed-size chunks of slots, so the table grows a chunk at a
//! time and never moves or doubles what it stores; an index of slot numbers,
//! found by the key's hash, costs a few bytes per task where a map from key
//! to a boxed task cost a key, a pointer and an allocation each.

use super::{Key, Task};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashSet as HashSet};
use std::hash::BuildHasher as _;

/// Slots per chunk.
const CHUNK: usize = 4096;

/// A task and its key (the table's one copy of it).
#[derive(Debug)]
struct Slot {
    key: Key,
    task: Task,
}

fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The slot numbered `id` of `chunks`, which the index says is taken.
fn slot(chunks: &[Vec<Option<Slot>>], id: u32) -> &Slot {
    chunks[id as usize / CHUNK][id as usize % CHUNK]
        .as_ref()
        .expect("the index names taken slots only")
}

/// The task table. With a journal, it notes every key it hands out for
/// change, so the journal records what changed (and only that) after each
/// event: see [`Scheduler::journal_records`](super::Scheduler::journal_records).
#[derive(Debug, Default)]
pub(super) struct Tasks {
    /// Slot numbers by their key's hash.
    index: HashTable<u32>,
    /// The slots, `CHUNK` to a chunk.
    chunks: Vec<Vec<Option<Slot>>>,
    /// Slots freed by removed tasks, taken again first.
    free: Vec<u32>,
    /// Keys touched since the journal last drained them; `None` without a
    /// journal.
    pub(super) dirty: Option<HashSet<Key>>,
    /// Submission numbers of recorded tasks removed since the journal last
    /// drained them (with a journal only).
    pub(super) forgotten: Vec<u64>,
}

impl Tasks {
    fn find(&self, key: &str) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(hash(key), |&id| &*slot(chunks, id).key == key)
            .copied()
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        self.chunks[id as usize / CHUNK][id as usize % CHUNK]
            .as_mut()
            .expect("the index names taken slots only")
    }

    /// Notes `key` as changed, for the journal.
    pub(super) fn touch(&mut self, key: &str) {
        if let Some(d) = &self.dirty
            && !d.contains(key)
            && let Some(k) = self.key(key)
        {
            self.dirty.as_mut().expect("checked").insert(k);
        }
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
        let Self { chunks, dirty, .. } = self;
        let s = chunks[id as usize / CHUNK][id as usize % CHUNK]
            .as_mut()
            .expect("the index names taken slots only");
        if let Some(d) = dirty
            && !d.contains(&*s.key)
        {
            d.insert(s.key.clone());
        }
        Some(&mut s.task)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Adds a task (replacing any of the same key).
    pub(super) fn insert(&mut self, key: Key, task: Task) {
        if let Some(d) = &mut self.dirty {
            d.insert(key.clone());
        }
        if let Some(id) = self.find(&key) {
            self.slot_mut(id).task = task;
            return;
        }
        let h = hash(&key);
        let filled = Some(Slot { key, task });
        let id = match self.free.pop() {
            Some(id) => {
                self.chunks[id as usize / CHUNK][id as usize % CHUNK] = filled;
                id
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let id =
                    (self.chunks.len() - 1) * CHUNK + self.chunks.last().expect("pushed").len();
                self.chunks.last_mut().expect("pushed").push(filled);
                u32::try_from(id).expect("fewer than 4 billion tasks")
            }
        };
        let chunks = &self.chunks;
        self.index
            .insert_unique(h, id, |&id| hash(&slot(chunks, id).key));
    }

    /// Removes the task of `key`.
    pub(super) fn remove(&mut self, key: &str) -> Option<Task> {
        self.touch(key);
        let chunks = &self.chunks;
        let id = match self
            .index
            .find_entry(hash(key), |&id| &*slot(chunks, id).key == key)
        {
            Ok(entry) => entry.remove().0,
            Err(_) => return None,
        };
        let Slot { task, .. } = self.chunks[id as usize / CHUNK][id as usize % CHUNK]
            .take()
            .expect("indexed");
        self.free.push(id);
        if self.dirty.is_some() && task.journaled != 0 {
            self.forgotten.push(task.seq);
        }
        Some(task)
    }

    /// Makes room for `n` more tasks in the index.
    pub(super) fn reserve(&mut self, n: usize) {
        let chunks = &self.chunks;
        self.index.reserve(n, |&id| hash(&slot(chunks, id).key));
    }

    /// How many tasks it holds.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every task with its key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Task)> {
        self.chunks
            .iter()
            .flatten()
            .flatten()
            .map(|s| (&s.key, &s.task))
    }

    /// Every task, to change without noting it for the journal.
    pub(super) fn values_mut_untracked(&mut self) -> impl Iterator<Item = &mut Task> {
        self.chunks
            .iter_mut()
            .flatten()
            .flatten()
            .map(|s| &mut s.task)
    }

    /// The task of `key`, to change without noting it for the journal.
    pub(super) fn get_mut_untracked(&mut self, key: &str) -> Option<&mut Task> {
        let id = self.find(key)?;
        Some(&mut self.slot_mut(id).task)
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;
    fn index(&self, key: &str) -> &Task {
        self.get(key).expect("a known key")
    }
}
