//! Folding a snapshot and records back into a snapshot: recovery and
//! compaction, and the window of records a live journal keeps.

use super::*;

/// The durable state as a map, to fold records into: recovery (snapshot,
/// then every record after it) and compaction (the same, written back as a
/// snapshot).
#[derive(Debug, Default)]
pub struct Model {
    modules: Vec<String>,
    module_set: HashSet<String>,
    /// By submission order.
    tasks: HashMap<u64, SavedTask>,
    queues: HashMap<String, (u64, VecDeque<Arg>)>,
    variables: HashMap<String, Arg>,
    events: HashSet<String>,
    leases: HashMap<(bool, String), (u32, Vec<String>)>,
    stats: Stats,
    answers: super::super::primitives::Answered,
    /// By key: (resource, module).
    actors: HashMap<String, (String, String, u64)>,
}

impl Model {
    /// The model of a snapshot.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut m = Model {
            stats: s.stats,
            ..Model::default()
        };
        for h in s.modules {
            m.add_module(h);
        }
        for t in s.tasks {
            m.tasks.insert(t.seq, t);
        }
        for (name, maxsize, items) in s.queues {
            m.queues.insert(name, (maxsize, items.into()));
        }
        m.variables.extend(s.variables);
        m.events.extend(s.events);
        for (lock, name, max, holders) in s.leases {
            m.leases.insert((lock, name), (max, holders));
        }
        for (session, id, reply) in s.answers {
            m.answers.insert((session, id), reply);
        }
        for (key, resource, module, made) in s.actors {
            m.actors.insert(key, (resource, module, made));
        }
        m
    }

    fn add_module(&mut self, hash: String) {
        if self.module_set.insert(hash.clone()) {
            self.modules.push(hash);
        }
    }

    /// Applies one item of a snapshot file.
    pub fn apply_item(&mut self, item: Item) {
        match item {
            Item::Task(t) => {
                self.tasks.insert(t.seq, t);
            }
            // A big queue comes as several items, in order.
            Item::Queue(name, maxsize, items) => {
                let queue = self
                    .queues
                    .entry(name)
                    .or_insert((maxsize, Default::default()));
                queue.1.extend(items);
            }
            Item::Stats(s) => self.stats = s,
            Item::End { .. } => {}
            other => {
                for r in other.into_records() {
                    self.apply(r);
                }
            }
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Module { hash } => self.add_module(hash),
            Record::Task {
                seq,
                spec,
                scattered,
                status,
            } => {
                self.tasks
                    .insert(seq, SavedTask::recorded(seq, *spec, scattered, status));
            }
            Record::Status { seq, status } => {
                if let Some(t) = self.tasks.get_mut(&seq) {
                    t.set(status);
                }
            }
            Record::Forget { seq } => {
                self.tasks.remove(&seq);
            }
            Record::QueuePush {
                name,
                maxsize,
                item,
            } => {
                let q = self.queues.entry(name).or_default();
                q.0 = maxsize;
                q.1.push_back(item);
            }
            Record::QueuePop { name } => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.1.pop_front();
                    if q.1.is_empty() {
                        self.queues.remove(&name);
                    }
                }
            }
            Record::Variable { name, item } => match item {
                Some(i) => {
                    self.variables.insert(name, i);
                }
                None => {
                    self.variables.remove(&name);
                }
            },
            Record::Event { name, set } => {
                if set {
                    self.events.insert(name);
                } else {
                    self.events.remove(&name);
                }
            }
            Record::Leases {
                lock,
                name,
                max,
                holders,
            } => {
                if holders.is_empty() {
                    self.leases.remove(&(lock, name));
                } else {
                    self.leases.insert((lock, name), (max, holders));
                }
            }
            Record::Stats(s) => self.stats = s,
            Record::Answer { session, id, reply } => self.answers.insert((session, id), reply),
            Record::Actor {
                key,
                resource,
                module,
            } => {
                self.actors.insert(key, (resource, module, 0));
            }
            Record::ActorMade {
                key,
                resource,
                module,
                made,
            } => {
                self.actors.insert(key, (resource, module, made));
            }
            Record::ActorGone { key } => {
                self.actors.remove(&key);
            }
        }
    }

    /// How many tasks it holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// This state as records that build it from nothing (for export).
    pub fn into_records(self) -> Vec<Record> {
        self.into_snapshot()
            .into_items()
            .flat_map(Item::into_records)
            .collect()
    }

    /// The snapshot of this state.
    pub fn into_snapshot(self) -> Snapshot {
        let mut tasks: Vec<SavedTask> = self.tasks.into_values().collect();
        tasks.sort_by_key(|t| t.seq);
        Snapshot {
            version: SNAPSHOT_VERSION,
            modules: self.modules,
            tasks,
            queues: self
                .queues
                .into_iter()
                .map(|(n, (m, items))| (n, m, items.into()))
                .collect(),
            variables: self.variables.into_iter().collect(),
            events: self.events.into_iter().collect(),
            leases: self
                .leases
                .into_iter()
                .map(|((lock, name), (max, holders))| (lock, name, max, holders))
                .collect(),
            stats: self.stats,
            answers: self
                .answers
                .in_order()
                .map(|(s, id, r)| (s, id, r.clone()))
                .collect(),
            actors: self
                .actors
                .into_iter()
                .map(|(k, (r, m, made))| (k, r, m, made))
                .collect(),
        }
    }
}

/// The task changes of the logs a compaction folds, by task: what it costs
/// grows with those logs, never with the tasks the snapshot already holds,
/// which stream past it ([`Window::merge`]).
#[derive(Default)]
pub struct Window {
    /// By submission order.
    changes: HashMap<u64, Change>,
}

impl Window {
    /// How many tasks it changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether it changes no task.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Makes room for changes to `more` tasks.
    pub fn reserve(&mut self, more: usize) {
        self.changes.reserve(more);
    }

    /// Folds one record: changes to tasks into the window, everything else
    /// into `rest` (which holds no tasks).
    pub fn apply(&mut self, record: Record, rest: &mut Model) {
        match record {
            Record::Task {
                seq,
                spec,
                scattered,
                status,
            } => {
                let task = SavedTask::recorded(seq, *spec, scattered, status);
                self.changes
                    .insert(seq, Change::Whole(encode_task(&task), None));
            }
            Record::Status { seq, status } => match self.changes.get_mut(&seq) {
                Some(Change::Whole(_, last)) => *last = Some(Box::new(status)),
                Some(Change::Forget) => {}
                Some(Change::Status(last)) => **last = status,
                None => {
                    self.changes.insert(seq, Change::Status(Box::new(status)));
                }
            },
            Record::Forget { seq } => {
                self.changes.insert(seq, Change::Forget);
            }
            other => rest.apply(other),
        }
    }

    /// Merges the window into `old`, a snapshot's tasks in submission
    /// order, handing each task of the result to `out`, in submission
    /// order. An `old` out of order is an error.
    pub fn merge<E: From<String>>(
        self,
        old: impl Iterator<Item = Result<SavedTask, E>>,
        mut out: impl FnMut(SavedTask) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut changes: Vec<(u64, Change)> = self.changes.into_iter().collect();
        changes.sort_unstable_by_key(|c| c.0);
        let mut changes = changes.into_iter().peekable();
        let mut last: Option<u64> = None;
        for task in old {
            let mut task = task?;
            if last.is_some_and(|l| l >= task.seq) {
                return Err(E::from(format!(
                    "its tasks are out of order at {} (submitted {})",
                    task.key(),
                    task.seq
                )));
            }
            // Tasks only the window has, before this one.
            while let Some((seq, _)) = changes.peek()
                && *seq < task.seq
            {
                let (_, change) = changes.next().expect("peeked");
                if let Change::Whole(bytes, status) = change {
                    out(whole_task(&bytes, status))?;
                }
            }
            last = Some(task.seq);
            let change = match changes.peek() {
                Some((seq, _)) if *seq == task.seq => changes.next().map(|(_, c)| c),
                _ => None,
            };
            match change {
                None => out(task)?,
                Some(Change::Whole(bytes, status)) => out(whole_task(&bytes, status))?,
                Some(Change::Status(status)) => {
                    task.set(*status);
                    out(task)?
                }
                Some(Change::Forget) => {}
            }
        }
        for (_, change) in changes {
            if let Change::Whole(bytes, status) = change {
                out(whole_task(&bytes, status))?;
            }
        }
        Ok(())
    }
}
