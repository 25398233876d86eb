//! What the scheduler answers about its state without changing it: a
//! key's state, the workers, who holds what, counters.

use super::*;

impl Scheduler {
    /// The counters.
    pub fn stats(&self) -> crate::protocol::Stats {
        crate::protocol::Stats {
            tasks: self.tasks.len() as u64,
            ..self.stats.clone()
        }
    }

    /// The state of a key, if the scheduler knows it.
    pub fn state(&self, key: &str) -> Option<TaskState> {
        let t = self.tasks.get(key)?;
        if matches!(t.state, State::Released) {
            // Still held (resumed from the journal, its data on a worker
            // that has not rejoined yet): it comes back, from that worker
            // or computed again, when it is wanted. Else kept only as
            // lineage: to users it is gone.
            return (!t.holders.is_empty()).then_some(TaskState::Pending);
        }
        Some(t).map(|t| match t.state {
            State::Pending { waiting_on: 0 } if self.no_worker.contains_key(key) => {
                TaskState::NoWorker
            }
            State::Pending { .. } => TaskState::Pending,
            State::Processing { .. } => TaskState::Processing,
            State::Finished { .. } => TaskState::Finished,
            State::Error(_) => TaskState::Error,
            State::Cancelled => TaskState::Cancelled,
            State::Lost => TaskState::Lost,
            State::Released => unreachable!("handled above"),
        })
    }

    /// The `seq` of the `Run` that sent `key` to its worker, while it is
    /// processing there (0 for data being stored): what the worker's
    /// report of it names.
    #[cfg(any(test, feature = "testing"))]
    pub fn run_of(&self, key: &str) -> Option<u64> {
        match self.tasks.get(key)?.state {
            State::Processing { run, .. } => Some(run),
            _ => None,
        }
    }

    /// Whether a module has been stored.
    pub fn has_module(&self, hash: &str) -> bool {
        self.modules.contains(hash)
    }

    /// Tasks placed on workers and not yet finished, summed over the
    /// workers (a walk over the workers, not the tasks).
    pub fn tasks_on_workers(&self) -> usize {
        self.workers.values().map(|w| w.processing.len()).sum()
    }

    /// Every connected worker, by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut v: Vec<_> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: *id,
                name: w.name.clone(),
                address: w.data_addr.clone(),
                nthreads: w.nthreads,
                resources: w.resources.clone(),
                processing: w.processing.len(),
                executing: w
                    .processing
                    .iter()
                    .filter(|k| {
                        matches!(
                            self.tasks.get(k).map(|t| &t.state),
                            Some(State::Processing { started: true, .. })
                        )
                    })
                    .count(),
                holding: w.has.len(),
                // As the worker last reported: summing its results here
                // would walk every one of them per request.
                nbytes: w.held,
                spilled_bytes: w.spilled,
                memory_limit: w.memory_limit,
                restarts: w.restarts,
                rss_bytes: w.rss,
                heartbeat_age_ms: self.activity.now_ms.saturating_sub(w.heartbeat_ms),
                fetched: w.fetched.0,
                fetched_bytes: w.fetched.1,
                instances_pooled: w.instances.0,
                instances_on_demand: w.instances.1,
                compute_seconds: self.worker_seconds(*id),
                instances_full: w.starved,
            })
            .collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The keys each worker holds, by data address (sorted).
    pub fn has_what(&self) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = self
            .workers
            .values()
            .map(|w| {
                let mut keys: Vec<String> = w.has.iter().map(|k| k.to_string()).collect();
                keys.sort();
                (w.data_addr.clone(), keys)
            })
            .collect();
        v.sort();
        v
    }

    /// Data addresses of the workers holding each key (empty if none or
    /// unknown).
    pub fn who_has(&self, keys: Vec<String>) -> Vec<(String, Vec<String>)> {
        keys.into_iter()
            .map(|k| {
                let addrs = match self.tasks.get(&k).map(|t| &t.state) {
                    Some(State::Finished { result }) => self.locate(result).who_has,
                    _ => Vec::new(),
                };
                (k, addrs)
            })
            .collect()
    }

    /// Keys that named clients hold.
    pub fn held_keys(&self) -> u64 {
        let named = |h: &str| {
            !self.ephemeral_holders.contains(h)
                && !h.starts_with(primitives::STORED)
                && h != FIRE_AND_FORGET
        };
        // Keys of a big release not yet let go of are still held.
        self.holdings.count(named) + self.releasing.held_aside(named)
    }

    /// Number of keys the scheduler tracks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}
