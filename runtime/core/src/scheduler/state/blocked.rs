//! Ready tasks some connected worker could run, but none of those their
//! restrictions allow has room now, while others may: pinned to a busy
//! worker, needing a resource or a memory limit only busy workers offer.
//!
//! Tasks alike in their restrictions fit the same workers at any moment,
//! so they wait here by kind, each kind in its own ready order, and a
//! round of placement tries only the first task of each kind: a million
//! tasks pinned to a busy worker cost one try per round, not a million.

use super::ready::{Entry, Ready};
use crate::protocol::Placement;
use rustc_hash::FxHashMap as HashMap;
use std::cmp::Reverse;

/// What restricts where a task may run: the workers it names (unless it
/// may run elsewhere too), the resources it needs and its memory limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Restriction {
    workers: Vec<String>,
    allow_other_workers: bool,
    /// Amounts by their bits: the same amount is the same restriction.
    resources: Vec<(String, u64)>,
    memory: Option<u64>,
}

impl Restriction {
    /// The restriction of a task placed by `p` with memory limit `memory`;
    /// `None` if any worker with room may run it (then finding none means
    /// every worker is full).
    pub(super) fn of(p: &Placement, memory: Option<u64>) -> Option<Self> {
        let anywhere = p.workers.is_empty() || p.allow_other_workers;
        if anywhere && p.resources.is_empty() && memory.is_none() {
            return None;
        }
        Some(Self {
            workers: p.workers.clone(),
            allow_other_workers: p.allow_other_workers,
            resources: p
                .resources
                .iter()
                .map(|(name, amount)| (name.clone(), amount.to_bits()))
                .collect(),
            memory,
        })
    }
}

/// Ready tasks set aside by kind until a worker their kind may use has
/// room. Entries are the ready queue's. A task that stopped being ready while here is skipped
/// when its turn comes, as in the ready queue.
#[derive(Debug, Default)]
pub(super) struct Blocked {
    kinds: HashMap<Restriction, Ready>,
    len: usize,
}

impl Blocked {
    pub(super) fn push(&mut self, kind: Restriction, entry: Entry) {
        self.kinds.entry(kind).or_default().push(entry);
        self.len += 1;
    }

    /// The first task of each kind's place in line, with its kind.
    pub(super) fn heads(&self) -> impl Iterator<Item = (i32, Reverse<u64>, Restriction)> + '_ {
        self.kinds.iter().filter_map(|(kind, ready)| {
            ready
                .peek()
                .map(|(priority, seq)| (priority, seq, kind.clone()))
        })
    }

    /// The place in line of `kind`'s first task.
    pub(super) fn peek(&self, kind: &Restriction) -> Option<(i32, Reverse<u64>)> {
        self.kinds.get(kind).and_then(Ready::peek)
    }

    /// Takes `kind`'s first task; a kind emptied goes.
    pub(super) fn pop(&mut self, kind: &Restriction) -> Option<Entry> {
        let ready = self.kinds.get_mut(kind)?;
        let entry = ready.pop();
        if ready.is_empty() {
            self.kinds.remove(kind);
        }
        self.len -= usize::from(entry.is_some());
        entry
    }

    /// Takes all of `kind`'s tasks.
    pub(super) fn take(&mut self, kind: &Restriction) -> Vec<Entry> {
        let Some(mut ready) = self.kinds.remove(kind) else {
            return Vec::new();
        };
        self.len -= ready.len();
        std::iter::from_fn(|| ready.pop()).collect()
    }

    /// Tasks set aside, counting those no longer ready not yet skipped.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::Key;
    use super::*;

    fn pinned(to: &str) -> Restriction {
        let p = Placement {
            workers: vec![to.into()],
            ..Placement::default()
        };
        Restriction::of(&p, None).expect("pinned is restricted")
    }

    #[test]
    fn tasks_any_worker_may_run_have_no_restriction() {
        assert_eq!(Restriction::of(&Placement::default(), None), None);
        let loose = Placement {
            workers: vec!["a".into()],
            allow_other_workers: true,
            ..Placement::default()
        };
        assert_eq!(Restriction::of(&loose, None), None);
        assert!(Restriction::of(&loose, Some(1 << 20)).is_some());
        let gpu = Placement {
            resources: vec![("GPU".into(), 1.0)],
            ..Placement::default()
        };
        assert!(Restriction::of(&gpu, None).is_some());
    }

    #[test]
    fn each_kind_keeps_its_own_order_and_goes_when_emptied() {
        let mut b = Blocked::default();
        let (a, z) = (pinned("a"), pinned("z"));
        let e = |priority, seq, key: &str| Entry {
            priority,
            seq,
            group: 0,
            key: Key::from(key),
        };
        b.push(a.clone(), e(0, 5, "a5"));
        b.push(a.clone(), e(0, 2, "a2"));
        b.push(z.clone(), e(3, 9, "z9"));
        assert_eq!(b.len(), 3);
        let mut heads: Vec<_> = b.heads().collect();
        heads.sort();
        assert_eq!(
            heads,
            [(0, Reverse(2), a.clone()), (3, Reverse(9), z.clone())]
        );
        assert_eq!(b.pop(&a).map(|e| e.key), Some(Key::from("a2")));
        assert_eq!(b.peek(&a), Some((0, Reverse(5))));
        assert_eq!(b.take(&z).len(), 1);
        assert_eq!(b.peek(&z), None);
        assert_eq!(b.pop(&a).map(|e| e.key), Some(Key::from("a5")));
        assert_eq!(b.pop(&a), None);
        assert_eq!(b.len(), 0);
        assert_eq!(b.heads().count(), 0);
    }
}
