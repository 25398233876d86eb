//! Fault injection for tests and chaos runs: the scheduler misbehaving on
//! purpose, as a lossy network or a buggy peer would, so that recovery is
//! exercised through the real processes.
//!
//! Off unless its environment variable is set:
//!
//! - `DTASK_FAULT_DROP_RUNS=N`: every Nth `Run` message to a worker is
//!   silently dropped (the worker never sees those tasks); the scheduler
//!   must notice from the worker's heartbeats (after a `Sync` for a last `Run`) and send them again.
//! - `DTASK_FAULT_DELAY_MS=N`: every message between the scheduler and a
//!   worker, either way, is held back for a random 0..=N ms. Each
//!   connection keeps its order (as TCP does), but messages on different
//!   connections overtake each other: a worker's report can arrive after
//!   another worker's, a `Free` after a later `Run` to someone else, a
//!   heartbeat late enough to look like silence.
//! - `DTASK_FAULT_LOSE_SUBMITTED=N`: every Nth answer to a client's
//!   `Submit` is lost with its connection: the scheduler took the tasks,
//!   then cuts the client off instead of answering, as a connection that
//!   broke at that moment would. The client must reconnect and ask again.
//! - `DTASK_FAULT_CUT_BEFORE_SUBMIT=N`: every Nth client `Submit` is not
//!   taken: its client is cut off as it arrives, as a connection that
//!   broke while the submit was on its way would be. The client must send
//!   it again, and it must count as if it were the first.
//! - `DTASK_FAULT_CUT_AFTER_SCATTER=N`: every Nth client `Scatter` or
//!   `Place` is taken, and its client cut off at once, before its values
//!   are stored, as a connection that broke just after sending it would
//!   be. The client must ask again, and be answered once the first copy's
//!   values are stored, holding them once.
//! - `DTASK_FAULT_LOSE_REPLY=N`: the same for every Nth answer to a
//!   primitive operation (a queue put or get, a lock acquire…): done, and
//!   its answer lost. Asked again, it must be answered, not done twice.
//! - `DTASK_FAULT_LOSE_ANSWER=N`: the same for every Nth answer to a retry
//!   or a new actor.
//! - `DTASK_FAULT_SLOW_JOURNAL_MS=N`: the journal's writer waits N ms
//!   before writing each batch of records, as a slow disk would; what
//!   clients are told of those changes must wait for it too.

use crate::connection::{self, Sender};
use crate::protocol::Weigh;
use std::time::Duration;

/// The faults this scheduler injects.
#[derive(Debug, Default)]
pub struct Faults {
    drop_runs_every: Option<u64>,
    runs: u64,
    lose_submitted_every: Option<u64>,
    submitted: u64,
    cut_before_submit_every: Option<u64>,
    submits: u64,
    cut_after_scatter_every: Option<u64>,
    scatters: u64,
    lose_reply_every: Option<u64>,
    replies: u64,
    lose_answer_every: Option<u64>,
    answers: u64,
    /// Messages to and from workers are held back up to this long.
    pub delay: Delay,
}

/// Holding messages back: up to `max` each, at random.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delay {
    max: Option<Duration>,
}

impl Delay {
    /// As `DTASK_FAULT_DELAY_MS` asks (none by default).
    pub fn from_env() -> Self {
        let max = std::env::var("DTASK_FAULT_DELAY_MS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n: &u64| n > 0)
            .map(Duration::from_millis);
        Self { max }
    }

    /// Whether messages are held back at all.
    pub fn is_on(&self) -> bool {
        self.max.is_some()
    }

    /// A random hold, 0..=max (zero when off).
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        match self.max {
            Some(max) => {
                let ms = max.as_millis() as u64;
                Duration::from_millis(rng.next_u64() % (ms + 1))
            }
            None => Duration::ZERO,
        }
    }

    /// A sender that hands each message on to `to` after a random hold,
    /// in the order they were sent (each waits for the one before it).
    pub fn in_front_of<M: Weigh + Send + 'static>(self, to: Sender<M>) -> Sender<M> {
        if !self.is_on() {
            return to;
        }
        let (tx, mut rx) = connection::relay::<M>();
        tokio::spawn(async move {
            let mut rng = Rng::seeded();
            let mut last = tokio::time::Instant::now();
            while let Some(m) = rx.recv().await {
                let due = (tokio::time::Instant::now() + self.sample(&mut rng)).max(last);
                tokio::time::sleep_until(due).await;
                last = due;
                if to.send(m).is_err() {
                    break;
                }
            }
        });
        tx
    }
}

/// How long the journal's writer waits before each batch, as
/// `DTASK_FAULT_SLOW_JOURNAL_MS` asks (not at all by default).
pub fn slow_journal() -> Option<Duration> {
    std::env::var("DTASK_FAULT_SLOW_JOURNAL_MS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &u64| n > 0)
        .map(Duration::from_millis)
        .inspect(|d| tracing::warn!("fault injection on: the journal writes each batch {d:?} late"))
}

/// Counts one more with `count`: whether it is an `every`th one.
fn nth(every: Option<u64>, count: &mut u64) -> bool {
    let Some(n) = every else {
        return false;
    };
    *count += 1;
    count.is_multiple_of(n)
}

/// A small xorshift generator: fault timing needs no more.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the operating system.
    pub fn seeded() -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Self(u64::from_le_bytes(b) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
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
        let every = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|&n: &u64| n > 0)
        };
        let lose_submitted_every = every("DTASK_FAULT_LOSE_SUBMITTED");
        let cut_before_submit_every = every("DTASK_FAULT_CUT_BEFORE_SUBMIT");
        if let Some(n) = cut_before_submit_every {
            tracing::warn!(
                "fault injection on: cutting off the client of every {n}th submit before taking it"
            );
        }
        let cut_after_scatter_every = every("DTASK_FAULT_CUT_AFTER_SCATTER");
        if let Some(n) = cut_after_scatter_every {
            tracing::warn!(
                "fault injection on: cutting off the client of every {n}th scatter just after taking it"
            );
        }
        let lose_reply_every = every("DTASK_FAULT_LOSE_REPLY");
        if let Some(n) = lose_reply_every {
            tracing::warn!(
                "fault injection on: losing every {n}th answer to a primitive operation with its connection"
            );
        }
        let lose_answer_every = every("DTASK_FAULT_LOSE_ANSWER");
        if let Some(n) = lose_answer_every {
            tracing::warn!(
                "fault injection on: losing every {n}th answer to a retry or a new actor with its connection"
            );
        }
        if let Some(n) = lose_submitted_every {
            tracing::warn!(
                "fault injection on: losing every {n}th answer to a submit with its connection"
            );
        }
        let delay = Delay::from_env();
        if let Some(max) = delay.max {
            tracing::warn!(
                "fault injection on: holding messages to and from workers back up to {max:?}"
            );
        }
        Self {
            drop_runs_every,
            runs: 0,
            lose_submitted_every,
            submitted: 0,
            cut_before_submit_every,
            submits: 0,
            cut_after_scatter_every,
            scatters: 0,
            lose_reply_every,
            replies: 0,
            lose_answer_every,
            answers: 0,
            delay,
        }
    }

    /// Whether to lose the answer to a submit about to be sent, cutting
    /// its client off.
    pub fn lose_submitted(&mut self) -> bool {
        nth(self.lose_submitted_every, &mut self.submitted)
    }

    /// Whether to leave a client's submit that just arrived untaken,
    /// cutting its client off.
    pub fn cut_before_submit(&mut self) -> bool {
        nth(self.cut_before_submit_every, &mut self.submits)
    }

    /// Whether to cut off the client of a scatter just taken, before its
    /// values are stored.
    pub fn cut_after_scatter(&mut self) -> bool {
        nth(self.cut_after_scatter_every, &mut self.scatters)
    }

    /// Whether to lose the answer to a primitive operation about to be
    /// sent, cutting its client off.
    pub fn lose_reply(&mut self) -> bool {
        nth(self.lose_reply_every, &mut self.replies)
    }

    /// Whether to lose the answer to a retry or a new actor about to be
    /// sent, cutting its client off.
    pub fn lose_answer(&mut self) -> bool {
        nth(self.lose_answer_every, &mut self.answers)
    }

    /// Whether to drop the `Run` message about to be sent.
    pub fn drop_run(&mut self) -> bool {
        nth(self.drop_runs_every, &mut self.runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FromScheduler;

    #[test]
    fn every_nth_run_is_dropped() {
        let mut f = Faults {
            drop_runs_every: Some(3),
            ..Faults::default()
        };
        let dropped: Vec<bool> = (0..6).map(|_| f.drop_run()).collect();
        assert_eq!(dropped, [false, false, true, false, false, true]);
        assert!(!Faults::default().drop_run());
    }

    #[tokio::test]
    async fn held_back_messages_keep_their_order_on_a_connection() {
        let delay = Delay {
            max: Some(Duration::from_millis(5)),
        };
        let (to, mut out) = connection::relay::<FromScheduler>();
        let tx = delay.in_front_of(to);
        for id in 0..200 {
            tx.send(FromScheduler::Scattered { id }).unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(m) = out.recv().await {
            match m {
                FromScheduler::Scattered { id } => got.push(id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        let mut rng = Rng::seeded();
        assert!((0..1000).all(|_| delay.sample(&mut rng) <= Duration::from_millis(5)));
        assert!((0..1000).any(|_| delay.sample(&mut rng) > Duration::ZERO));
    }
}
