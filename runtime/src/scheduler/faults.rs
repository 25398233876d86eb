//! Fault injection for tests and chaos runs: the scheduler misbehaving on
//! purpose, as a lossy network or a buggy peer would, so that recovery is
//! exercised through the real processes.
//!
//! Off unless its environment variable is set:
//!
//! - `DTASK_FAULT_DROP_RUNS=N`: every Nth `Run` message to a worker is
//!   silently dropped (the worker never sees those tasks); the scheduler
//!   must notice from the worker's heartbeats (after a `Sync` for a last `Run`) and send them again.

/// The faults this scheduler injects.
#[derive(Debug, Default)]
pub struct Faults {
    drop_runs_every: Option<u64>,
    runs: u64,
}

impl Faults {
    /// Faults as the environment asks for (none by default).
    pub fn from_env() -> Self {
        let drop_runs_every = std::env::var("DTASK_FAULT_DROP_RUNS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n: &u64| n > 0);
        if let Some(n) = drop_runs_every {
            tracing::warn!("fault injection on: dropping every {n}th Run message to workers");
        }
        Self {
            drop_runs_every,
            runs: 0,
        }
    }

    /// Whether to drop the `Run` message about to be sent.
    pub fn drop_run(&mut self) -> bool {
        let Some(n) = self.drop_runs_every else {
            return false;
        };
        self.runs += 1;
        self.runs.is_multiple_of(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_run_is_dropped() {
        let mut f = Faults {
            drop_runs_every: Some(3),
            runs: 0,
        };
        let dropped: Vec<bool> = (0..6).map(|_| f.drop_run()).collect();
        assert_eq!(dropped, [false, false, true, false, false, true]);
        assert!(!Faults::default().drop_run());
    }
}
