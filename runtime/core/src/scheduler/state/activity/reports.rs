//! What the dashboard and `dtask tasks` read about activity: totals, per
//! function tallies, spans, failures, a task's timings and description,
//! and listings.

use super::*;

impl Scheduler {
    /// Sets the scheduler's clock (ms since the Unix epoch), by which it
    /// stamps tasks' timings; the server sets it once per turn.
    pub fn set_clock(&mut self, now_ms: u64) {
        self.activity.now_ms = now_ms;
    }

    /// Seconds the runs of `worker` took, in all (as the scheduler saw
    /// them begin and end: instantiate and call).
    pub(in super::super) fn worker_seconds(&self, worker: WorkerId) -> f64 {
        self.activity
            .worker_seconds
            .get(&worker)
            .copied()
            .unwrap_or(0.0)
    }

    /// Tasks by phase now, and totals since the scheduler started.
    pub fn totals(&self) -> Totals {
        self.activity.totals()
    }

    /// The busiest functions (at most `limit`), with their counts.
    pub fn functions(&self, limit: usize) -> Vec<(Arc<str>, FunctionTally)> {
        self.activity.functions(limit)
    }

    /// Runs that ended after span `after` (the newest `limit`).
    pub fn spans(&self, after: u64, limit: usize) -> Vec<Span> {
        self.activity.spans(after, limit)
    }

    /// Recent failures, newest first (at most `limit`).
    pub fn failures(&self, limit: usize) -> Vec<Failure> {
        self.activity.failures(limit)
    }

    /// When `key` was submitted, began and ended, where it ran and how
    /// many times it was retried; `None` for an unknown key.
    pub fn timings(&self, key: &str) -> Option<TaskTimings> {
        let t = self.tasks.get(key)?;
        let times = t.stamps.times();
        let worker = match &t.state {
            State::Processing { worker, .. } => Some(*worker),
            State::Finished { result } => result.who_has.first().copied(),
            _ => None,
        }
        .or_else(|| {
            // Where it ran, if the task stream still remembers (a small
            // result lives at the scheduler, on no worker). The task's own
            // clock keeps its end to within milliseconds: spans that ended
            // a second before it are too old to be its.
            let ended = times.ended_ms?;
            self.activity
                .spans
                .iter()
                .rev()
                .take_while(|s| s.ended_ms.saturating_add(1_000) >= ended)
                .find(|s| &*s.key == key)
                .map(|s| s.worker)
        });
        let worker = worker.and_then(|w| self.workers.get(&w).map(|w| w.name.clone()));
        Some(TaskTimings {
            submitted_ms: times.submitted_ms,
            started_ms: times.began_ms,
            finished_ms: times.ended_ms,
            worker,
            retries: t.recipe.retries().saturating_sub(t.retries_left.into()),
        })
    }

    /// Known tasks in `state` (any if `None`) of `function` (any if
    /// `None`): the newest `limit` of them in submission order, and how
    /// many matched. This walks every task: it answers `dtask tasks`, a
    /// command a person runs, never the dashboard.
    pub fn list_tasks(
        &self,
        state: Option<crate::protocol::TaskState>,
        function: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, crate::protocol::TaskState, String)>, u64) {
        use std::cmp::Reverse;
        let mut newest = std::collections::BinaryHeap::new();
        let mut matched = 0;
        for (key, t) in self.tasks.iter() {
            if function.is_some_and(|f| *t.recipe.func.function != *f) {
                continue;
            }
            let Some(s) = self.state(key) else { continue };
            if state.is_some_and(|want| want != s) {
                continue;
            }
            matched += 1;
            newest.push(Reverse((t.seq, key.clone())));
            if newest.len() > limit {
                newest.pop();
            }
        }
        let mut list: Vec<_> = newest.into_iter().map(|Reverse(x)| x).collect();
        list.sort_unstable_by_key(|(seq, ..)| *seq);
        let tasks = list
            .into_iter()
            .filter_map(|(_, k)| {
                let f = self.tasks.get(&k)?.recipe.func.function.to_string();
                Some((k.to_string(), self.state(&k)?, f))
            })
            .collect();
        (tasks, matched)
    }

    /// Everything the task page shows of `key`; `None` when unknown.
    pub fn describe(&self, key: &str) -> Option<TaskDetail> {
        let t = self.tasks.get(key)?;
        let timings = self.timings(key)?;
        Some(TaskDetail {
            key: key.to_string(),
            function: t.recipe.func.function.to_string(),
            module: t.recipe.func.module.to_string(),
            phase: Phase::of(&t.state),
            timings,
            inputs: t
                .deps
                .iter()
                .take(DETAIL_KEYS)
                .map(|k| k.to_string())
                .collect(),
            inputs_total: t.deps.len(),
            dependents: t
                .dependents
                .iter()
                .take(DETAIL_KEYS)
                .map(|k| k.to_string())
                .collect(),
            dependents_total: t.dependents.len(),
            holders: t.holders.iter().map(|h| h.to_string()).collect(),
            nbytes: match &t.state {
                State::Finished { result } => Some(result.nbytes),
                _ => None,
            },
            error: match &t.state {
                State::Error(e) => Some((**e).clone()),
                _ => None,
            },
        })
    }
}
