//! Which keys each holder (a named client, a primitive's store) holds, for
//! `release --all`, a departing unnamed client and `dtask info`.
//!
//! The truth is each task's own holders; this index only has to find a
//! holder's keys without a walk over every task. It is a log per holder:
//! a hold appends the key, a release only counts (the key stays listed
//! until the log is compacted), and whoever reads a log checks each key
//! against its task. A set of keys per holder did the same job with a hash
//! of the key and a probe into a set of millions per hold and release, and
//! a rehash of every key (a cache miss each) whenever the set doubled.
//! A log that lists more than twice the keys its holder holds is compacted
//! (amortised: each compaction follows at least as many releases as it
//! keeps keys), so it stays within a small factor of what is held.
//!
//! A holder's hold on a key can be counted: each counted submit of a key
//! the holder holds already adds one, and each release lets go of one, so
//! two shell pipelines under one client name that submit the same call
//! each keep it until they let go. Counts above one are kept apart, by
//! holder and key: nearly every key is held once.

use super::Key;
use super::compact::Holders;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

/// Releases a log may lag behind by before it is compacted, however few
/// keys are held.
const SLACK: usize = 1024;

#[derive(Debug, Default)]
struct Held {
    /// Every key held, and perhaps keys let go of since or listed twice.
    keys: Vec<Key>,
    /// How many keys are held.
    live: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    by_name: HashMap<Arc<str>, Held>,
    /// Holds beyond the first, by holder and key.
    extra: HashMap<Arc<str>, HashMap<Key, u32>>,
}

impl Holdings {
    /// The index's copy of `holder`'s name and its log (made if new).
    fn entry(&mut self, holder: &str) -> (Arc<str>, &mut Held) {
        let name = match self.by_name.get_key_value(holder) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(holder);
                self.by_name.insert(name.clone(), Held::default());
                name
            }
        };
        let held = self.by_name.get_mut(holder).expect("just found or made");
        (name, held)
    }

    /// Makes `holder` hold `key`, whose task's holders are `holders`;
    /// false if it held it already.
    pub(super) fn hold(&mut self, holder: &str, key: &Key, holders: &mut Holders) -> bool {
        if holders.contains(holder) {
            return false;
        }
        let (name, held) = self.entry(holder);
        holders.insert(&name);
        held.keys.push(key.clone());
        held.live += 1;
        true
    }

    /// Makes `holder` hold `key` once more, whose task's holders are
    /// `holders`: a submit or scatter, which a release each undoes. False
    /// if it held it already (the hold is then counted).
    pub(super) fn hold_counted(&mut self, holder: &str, key: &Key, holders: &mut Holders) -> bool {
        if self.hold(holder, key, holders) {
            return true;
        }
        let (name, _) = self.entry(holder);
        *self
            .extra
            .entry(name)
            .or_default()
            .entry(key.clone())
            .or_default() += 1;
        false
    }

    /// How many holds `holder` has on `key` beyond its first.
    pub(super) fn extra(&self, holder: &str, key: &str) -> u32 {
        if self.extra.is_empty() {
            return 0;
        }
        self.extra
            .get(holder)
            .and_then(|m| m.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// The holders of a new task `key`: `holder` alone.
    pub(super) fn hold_new(&mut self, holder: &str, key: &Key) -> Holders {
        let (name, held) = self.entry(holder);
        held.keys.push(key.clone());
        held.live += 1;
        Holders::one(name)
    }

    /// Lets go of one of `holder`'s holds on `key`, whose task's holders
    /// are `holders`; true if that was its last (it no longer holds the
    /// key), false if it holds it still or did not hold it.
    pub(super) fn let_go(&mut self, holder: &str, key: &str, holders: &mut Holders) -> bool {
        // Nearly always: no key is held more than once.
        if !self.extra.is_empty()
            && let Some(counts) = self.extra.get_mut(holder)
            && let Some(n) = counts.get_mut(key)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(key);
                if counts.is_empty() {
                    self.extra.remove(holder);
                }
            }
            return false;
        }
        self.end_hold(holder, holders)
    }

    /// Takes `holder` off `holders`, a task's holders, leaving any counts
    /// of its key alone (a damaged snapshot's second copy of a key, whose
    /// holds the copy kept stand for); false if it was not on them.
    pub(super) fn end_hold(&mut self, holder: &str, holders: &mut Holders) -> bool {
        if !holders.remove(holder) {
            return false;
        }
        if let Some(held) = self.by_name.get_mut(holder) {
            held.live = held.live.saturating_sub(1);
            if held.live == 0 {
                self.by_name.remove(holder);
            }
        }
        true
    }

    /// Whether `holder`'s log lists so many more keys than it holds that
    /// it should be compacted.
    pub(super) fn lags(&self, holder: &str) -> bool {
        self.by_name
            .get(holder)
            .is_some_and(|h| h.keys.len() > 2 * h.live + SLACK)
    }

    /// Keeps in `holder`'s log only the keys `holds` says it holds, each
    /// once.
    ///
    /// A key whose log copy is the last copy of its text left is dropped
    /// without asking `holds`: the task table keeps a copy of each key it
    /// has, the very one the log was given, so the key's task is gone. (In
    /// a pipeline that releases as it goes, that is most of the log, and
    /// reading the count costs one cache miss where a lookup in a table of
    /// a million keys costs three.)
    pub(super) fn compact(&mut self, holder: &str, holds: impl Fn(&str) -> bool) {
        let Some(held) = self.by_name.get_mut(holder) else {
            return;
        };
        let mut seen: HashSet<Key> = HashSet::default();
        seen.reserve(held.live);
        held.keys
            .retain(|k| Key::strong_count(k) != Some(1) && holds(k) && seen.insert(k.clone()));
        held.keys.shrink_to(2 * held.keys.len());
        held.live = held.keys.len();
    }

    /// Ends `holder`'s entry: the keys it held (and perhaps some it let go
    /// of or listed twice, which the caller's release finds not held).
    /// Also how many of them it holds.
    pub(super) fn take_all(&mut self, holder: &str) -> (Vec<Key>, usize) {
        self.extra.remove(holder);
        self.by_name
            .remove(holder)
            .map(|h| (h.keys, h.live))
            .unwrap_or_default()
    }

    /// Keys held, summed over the holders `counted` names.
    pub(super) fn count(&self, counted: impl Fn(&str) -> bool) -> u64 {
        self.by_name
            .iter()
            .filter(|(name, _)| counted(name))
            .map(|(_, h)| h.live as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_holds_and_lists_each_held_key_after_compaction() {
        let mut ix = Holdings::default();
        let keys: Vec<Key> = (0..3000).map(|i| Key::from(format!("k-{i}"))).collect();
        let mut holders: Vec<Holders> = keys.iter().map(|_| Holders::default()).collect();
        for (k, h) in keys.iter().zip(&mut holders) {
            assert!(ix.hold("a", k, h));
            assert!(!ix.hold("a", k, h), "a second hold is no new hold");
        }
        assert_eq!(ix.count(|_| true), 3000);
        // Let go of all but every tenth, then take one back.
        for (i, h) in holders.iter_mut().enumerate() {
            if i % 10 != 0 {
                assert!(ix.let_go("a", &keys[i], h));
                assert!(!ix.let_go("a", &keys[i], h));
            }
        }
        assert!(ix.hold("a", &keys[1], &mut holders[1]));
        assert_eq!(ix.count(|_| true), 301);
        assert!(ix.lags("a"));
        let held = |k: &str| {
            let i: usize = k[2..].parse().expect("a number");
            holders[i].contains("a")
        };
        ix.compact("a", held);
        assert!(!ix.lags("a"));
        let mut listed: Vec<String> = ix.take_all("a").0.iter().map(|k| k.to_string()).collect();
        listed.sort();
        let mut expected: Vec<String> = (0..3000)
            .filter(|i| i % 10 == 0 || *i == 1)
            .map(|i| format!("k-{i}"))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(ix.count(|_| true), 0);
    }

    #[test]
    fn compaction_drops_keys_whose_tasks_are_gone_without_asking() {
        let mut ix = Holdings::default();
        let kept = Key::from("kept");
        let mut holders = Holders::default();
        assert!(ix.hold("a", &kept, &mut holders));
        for i in 0..3 * SLACK {
            // Held, then its task forgotten: the table's copy goes.
            let gone = Key::from(format!("gone-{i}"));
            ix.hold("a", &gone, &mut Holders::default());
        }
        ix.by_name.get_mut("a").expect("held").live = 1;
        assert!(ix.lags("a"));
        ix.compact("a", |k| {
            assert_eq!(k, "kept", "only a key with a task is looked up");
            true
        });
        let (listed, live) = ix.take_all("a");
        assert_eq!((listed, live), (vec![kept], 1));
    }

    #[test]
    fn a_holder_that_lets_go_of_everything_leaves_no_entry() {
        let mut ix = Holdings::default();
        let k = Key::from("k");
        let mut h = ix.hold_new("a", &k);
        assert_eq!(ix.count(|n| n == "a"), 1);
        assert!(ix.let_go("a", &k, &mut h));
        assert!(ix.by_name.is_empty());
        assert!(ix.take_all("a").0.is_empty());
    }

    #[test]
    fn counted_holds_are_let_go_of_one_at_a_time_and_all_at_once() {
        let mut ix = Holdings::default();
        let k = Key::from("k");
        let mut h = ix.hold_new("a", &k);
        assert!(!ix.hold_counted("a", &k, &mut h), "held already: counted");
        assert!(!ix.hold_counted("a", &k, &mut h));
        assert!(!ix.hold("a", &k, &mut h), "an uncounted hold adds none");
        assert_eq!(ix.extra("a", "k"), 2);
        assert_eq!(ix.count(|_| true), 1, "one key held");
        assert!(!ix.let_go("a", &k, &mut h));
        assert!(!ix.let_go("a", &k, &mut h));
        assert!(h.contains("a"), "the first hold is left");
        assert!(ix.let_go("a", &k, &mut h));
        assert!(!h.contains("a"));
        assert!(ix.extra.is_empty() && ix.by_name.is_empty());
        // `release --all`: every count goes with the holder's entry.
        let mut h = ix.hold_new("a", &k);
        ix.hold_counted("a", &k, &mut h);
        ix.take_all("a");
        assert_eq!(ix.extra("a", "k"), 0);
        assert!(ix.extra.is_empty());
    }
}
