//! How the scheduler keeps a task small: a million held tasks must fit in
//! a few hundred megabytes.
//!
//! - A [`Recipe`] is a [`TaskSpec`] without its key (the task table's key
//!   is the one copy), with its module hash and function name shared as
//!   one [`Func`] through an [`Interner`], and its rarely set options
//!   (priority, limits, grants, placement, retries) boxed only when one is
//!   set.
//! - [`Holders`] is a short list of shared names: nearly every task has one
//!   holder, and a hash set per task would cost far more than the key.

use crate::protocol::{Arg, Grants, Placement, TaskSpec};
use rustc_hash::FxHashSet as HashSet;
use std::sync::Arc;

/// A module's export, shared by every task that runs it.
#[derive(Debug)]
pub(super) struct Func {
    /// The module's hash.
    pub(super) module: Arc<str>,
    /// The export's name.
    pub(super) function: Arc<str>,
    /// How long its runs take (see [`Func::ran`]).
    runs: RunTimes,
}

/// How long one export's runs on workers take: a mean over the first
/// [`RunTimes::SPAN`] runs, then one that follows the latest runs by
/// weighing each as one of that many, so an export whose runs change
/// (a warm-up, a new input size) is followed within a few dozen runs.
/// Atomics only because [`Func`] is shared by reference counts: the
/// scheduler's core is one thread.
#[derive(Debug, Default)]
struct RunTimes {
    /// Runs timed, up to [`RunTimes::SPAN`].
    count: std::sync::atomic::AtomicU32,
    /// The mean, in seconds, as `f64` bits.
    mean_bits: std::sync::atomic::AtomicU64,
}

impl RunTimes {
    /// Runs the mean is taken over before it weighs each new run at this
    /// fraction.
    const SPAN: u32 = 16;
}

impl Func {
    /// Notes a run of this export on a worker that took `seconds`.
    pub(super) fn ran(&self, seconds: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = (self.runs.count.load(Relaxed) + 1).min(RunTimes::SPAN);
        let mean = f64::from_bits(self.runs.mean_bits.load(Relaxed));
        let mean = mean + (seconds - mean) / f64::from(n);
        self.runs.mean_bits.store(mean.to_bits(), Relaxed);
        self.runs.count.store(n, Relaxed);
    }

    /// How long its runs take, in seconds, lately; `None` before one
    /// ended.
    pub(super) fn mean_seconds(&self) -> Option<f64> {
        use std::sync::atomic::Ordering::Relaxed;
        (self.runs.count.load(Relaxed) > 0)
            .then(|| f64::from_bits(self.runs.mean_bits.load(Relaxed)))
    }
}

fn func_hash(module: &str, function: &str) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one((module, function))
}

/// Shares equal strings (module hashes, function names) and pairs of them
/// among tasks.
#[derive(Debug, Default)]
pub(super) struct Interner {
    names: HashSet<Arc<str>>,
    funcs: hashbrown::HashTable<Arc<Func>>,
    /// Size at which names and pairs no task uses are forgotten (then
    /// doubled), so a client inventing function names cannot grow it for
    /// good.
    prune_at: usize,
}

impl Interner {
    /// The shared copy of `s`.
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.names.insert(n.clone());
        n
    }

    /// The shared export `function` of `module`.
    pub(super) fn func(&mut self, module: &str, function: &str) -> Arc<Func> {
        let h = func_hash(module, function);
        let same = |f: &Arc<Func>| *f.module == *module && *f.function == *function;
        if let Some(f) = self.funcs.find(h, same) {
            return f.clone();
        }
        if self.funcs.len() >= self.prune_at {
            self.prune();
            self.prune_at = (2 * self.funcs.len()).max(1024);
        }
        let f = Arc::new(Func {
            module: self.name(module),
            function: self.name(function),
            runs: RunTimes::default(),
        });
        self.funcs
            .insert_unique(h, f.clone(), |f| func_hash(&f.module, &f.function));
        f
    }

    /// Forgets pairs and names no task uses any more (only the interner's
    /// own copy is left), so names seen once do not stay for good.
    pub(super) fn prune(&mut self) {
        self.funcs.retain(|f| Arc::strong_count(f) > 1);
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }

    /// How many distinct names it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }
}

/// A task's options when any differs from the default.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    priority: i32,
    timeout_ms: Option<u64>,
    memory_limit: Option<u64>,
    grants: Grants,
    placement: Placement,
    retries: u32,
}

/// What a task runs, as the scheduler keeps it.
#[derive(Debug)]
pub(super) struct Recipe {
    /// The export that runs.
    pub(super) func: Arc<Func>,
    /// Arguments, in parameter order.
    pub(super) args: Box<[Arg]>,
    options: Option<Box<Options>>,
}

/// The placement of a task that sets none.
static ANYWHERE: Placement = Placement {
    workers: Vec::new(),
    allow_other_workers: false,
    resources: Vec::new(),
};

/// The grants of a task that has none.
static NOTHING: Grants = Grants {
    env: Vec::new(),
    dirs: Vec::new(),
};

impl Recipe {
    /// The recipe of `spec` (whose key the caller keeps).
    pub(super) fn new(spec: TaskSpec, interner: &mut Interner) -> Self {
        let options = Options {
            priority: spec.priority,
            timeout_ms: spec.timeout_ms,
            memory_limit: spec.memory_limit,
            grants: spec.grants,
            placement: spec.placement,
            retries: spec.retries,
        };
        let plain = options.priority == 0
            && options.timeout_ms.is_none()
            && options.memory_limit.is_none()
            && options.grants.is_empty()
            && options.placement == ANYWHERE
            && options.retries == 0;
        Self {
            func: interner.func(&spec.module, &spec.function),
            // A small value is kept as a copy of its bytes alone: however
            // it was built (a `Vec` with spare room, a slice of a frame),
            // what a task keeps for long is exactly its bytes.
            args: spec
                .args
                .into_iter()
                .map(|a| match a {
                    Arg::Value(v) => Arg::Value(detached(&v)),
                    a => a,
                })
                .collect(),
            options: (!plain).then(|| Box::new(options)),
        }
    }

    /// The recipe of scattered data: it runs nothing.
    pub(super) fn scattered(interner: &mut Interner) -> Self {
        Self {
            func: interner.func("", "scatter"),
            args: Box::new([]),
            options: None,
        }
    }

    /// The whole spec again, for the journal.
    pub(super) fn spec(&self, key: &str) -> TaskSpec {
        TaskSpec {
            key: key.to_string(),
            module: self.func.module.to_string(),
            function: self.func.function.to_string(),
            args: self.args.iter().map(detached_arg).collect(),
            priority: self.priority(),
            timeout_ms: self.timeout_ms(),
            memory_limit: self.memory_limit(),
            grants: self.grants().clone(),
            placement: self.placement().clone(),
            retries: self.retries(),
        }
    }

    /// Larger runs earlier.
    pub(super) fn priority(&self) -> i32 {
        self.options.as_ref().map_or(0, |o| o.priority)
    }

    /// Wall-clock limit of one run.
    pub(super) fn timeout_ms(&self) -> Option<u64> {
        self.options.as_ref().and_then(|o| o.timeout_ms)
    }

    /// Memory limit of one run.
    pub(super) fn memory_limit(&self) -> Option<u64> {
        self.options.as_ref().and_then(|o| o.memory_limit)
    }

    /// Access granted beyond the sandbox.
    pub(super) fn grants(&self) -> &Grants {
        self.options.as_ref().map_or(&NOTHING, |o| &o.grants)
    }

    /// Where it may run.
    pub(super) fn placement(&self) -> &Placement {
        self.options.as_ref().map_or(&ANYWHERE, |o| &o.placement)
    }

    /// Runs again up to this many times after an error.
    pub(super) fn retries(&self) -> u32 {
        self.options.as_ref().map_or(0, |o| o.retries)
    }

    /// The limits of its runs: timeout, memory limit, retries.
    pub(super) fn limits(&self) -> (Option<u64>, Option<u64>, u32) {
        (self.timeout_ms(), self.memory_limit(), self.retries())
    }

    /// Sets the limits of its runs (a resubmission or retry that asks for
    /// others); false if they were those already.
    pub(super) fn set_limits(&mut self, limits: (Option<u64>, Option<u64>, u32)) -> bool {
        if self.limits() == limits {
            return false;
        }
        let o = self.options.get_or_insert_with(|| {
            Box::new(Options {
                priority: 0,
                timeout_ms: None,
                memory_limit: None,
                grants: NOTHING.clone(),
                placement: ANYWHERE.clone(),
                retries: 0,
            })
        });
        (o.timeout_ms, o.memory_limit, o.retries) = limits;
        true
    }
}

/// The tasks that take a task's result. Most tasks have none or a few: a
/// thin list (a pointer when empty). A key that many take (a model
/// scattered once, used by a million tasks) becomes an indexed set, so
/// forgetting each of those tasks stays O(1) rather than a walk of them
/// all.
#[derive(Debug)]
pub(super) enum Dependents {
    Few(thin_vec::ThinVec<super::Key>),
    Many(Box<indexmap::IndexSet<super::Key, rustc_hash::FxBuildHasher>>),
}

/// A few keys copied to walk while the task table changes: as many as
/// most tasks' inputs or dependents, without an allocation.
pub(super) type Keys = smallvec::SmallVec<[super::Key; 4]>;

/// Past this many, [`Dependents`] are indexed.
const FEW: usize = 32;

impl Default for Dependents {
    fn default() -> Self {
        Self::Few(thin_vec::ThinVec::new())
    }
}

impl Dependents {
    /// Adds `key` (not already there).
    pub(super) fn push(&mut self, key: super::Key) {
        match self {
            Self::Few(list) => {
                list.push(key);
                if list.len() > FEW {
                    *self = Self::Many(Box::new(list.drain(..).collect()));
                }
            }
            Self::Many(set) => {
                set.insert(key);
            }
        }
    }

    /// Removes `key`, if there.
    pub(super) fn remove(&mut self, key: &str) {
        match self {
            Self::Few(list) => list.retain(|k| &**k != key),
            Self::Many(set) => {
                set.swap_remove(key);
            }
        }
    }

    /// Every dependent, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &super::Key> {
        let (few, many) = match self {
            Self::Few(list) => (Some(list.iter()), None),
            Self::Many(set) => (None, Some(set.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// How many there are.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(set) => set.len(),
        }
    }

    /// A copy of them, to walk while the task table changes (a few need
    /// no allocation).
    pub(super) fn to_vec(&self) -> Keys {
        self.iter().cloned().collect()
    }
}

/// The names holding a key: a short list, nearly always of one.
#[derive(Debug, Default)]
/// One holder is kept inline: no allocation for the common case.
pub(super) struct Holders(smallvec::SmallVec<[Arc<str>; 1]>);

impl Holders {
    /// Held by `name` alone.
    pub(super) fn one(name: Arc<str>) -> Self {
        Self(smallvec::smallvec![name])
    }

    /// Adds `name`; false if it already held the key.
    pub(super) fn insert(&mut self, name: &Arc<str>) -> bool {
        if self.contains(name) {
            return false;
        }
        self.0.push(name.clone());
        true
    }

    /// Removes `name`; false if it did not hold the key.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        match self.0.iter().position(|h| &**h == name) {
            Some(i) => {
                self.0.swap_remove(i);
                if self.0.is_empty() {
                    self.0 = smallvec::SmallVec::new();
                }
                true
            }
            None => false,
        }
    }

    /// Whether `name` holds the key.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|h| &**h == name)
    }

    /// Whether nothing holds the key.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The holders' names.
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|h| &**h)
    }

    /// The names, shared.
    pub(super) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter()
    }
}

/// Values this long or shorter are copied rather than shared by
/// [`detached`].
const DETACH_AT: usize = 256;

/// `b` to send or record, leaving `b` as it is. Sharing a `Bytes` made from
/// a `Vec` (as decoded values are) gives it a shared header for good: 24
/// bytes that outlive the message, on every small argument and result a
/// million held tasks keep. A small value is copied instead, which costs
/// nothing that lasts; a larger one is shared.
pub(super) fn detached(b: &bytes::Bytes) -> bytes::Bytes {
    if b.len() <= DETACH_AT {
        bytes::Bytes::copy_from_slice(b)
    } else {
        b.clone()
    }
}

/// `a` to send or record, its value [`detached`].
pub(super) fn detached_arg(a: &Arg) -> Arg {
    match a {
        Arg::Value(v) => Arg::Value(detached(v)),
        Arg::Future(k) => Arg::Future(k.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_are_a_list_until_many_then_an_indexed_set() {
        let key = |i: usize| -> super::super::Key { format!("t{i}").into() };
        let mut d = Dependents::default();
        for i in 0..FEW {
            d.push(key(i));
        }
        assert!(matches!(d, Dependents::Few(_)));
        for i in FEW..1000 {
            d.push(key(i));
        }
        assert!(matches!(d, Dependents::Many(_)));
        for i in (0..1000).step_by(2) {
            d.remove(&format!("t{i}"));
        }
        d.remove("never-there");
        let mut left: Vec<String> = d.iter().map(|k| k.to_string()).collect();
        left.sort();
        let mut want: Vec<String> = (1..1000).step_by(2).map(|i| format!("t{i}")).collect();
        want.sort();
        assert_eq!(left, want);
        assert_eq!(d.to_vec().len(), 500);
    }

    #[test]
    fn a_plain_spec_boxes_no_options_and_comes_back_whole() {
        let mut names = Interner::default();
        let spec = TaskSpec {
            key: "inc-1".into(),
            module: "m".into(),
            function: "inc".into(),
            args: vec![],
            priority: 0,
            timeout_ms: None,
            memory_limit: None,
            grants: Default::default(),
            placement: Default::default(),
            retries: 0,
        };
        let r = Recipe::new(spec.clone(), &mut names);
        assert!(r.options.is_none());
        assert_eq!(r.spec("inc-1"), spec);
        let tuned = TaskSpec {
            retries: 2,
            priority: -1,
            ..spec
        };
        let r2 = Recipe::new(tuned.clone(), &mut names);
        assert_eq!(r2.spec("inc-1"), tuned);
        assert!(Arc::ptr_eq(&r.func, &r2.func), "module and function shared");
        assert_eq!(names.len(), 2);
        drop((r, r2));
        names.prune();
        assert_eq!(names.len(), 0);
    }

    #[test]
    fn holders_add_and_remove_each_name_once() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let mut h = Holders::one(a.clone());
        assert!(!h.insert(&a));
        assert!(h.insert(&b));
        assert!(h.contains("b"));
        assert!(h.remove("a"));
        assert!(!h.remove("a"));
        assert!(h.remove("b"));
        assert!(h.is_empty());
    }
}
