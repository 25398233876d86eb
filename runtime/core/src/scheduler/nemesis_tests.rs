//! A nemesis for the scheduler's core. Simulated workers run a small graph
//! while proptest chooses, step by step, which message is delivered next:
//! messages are delayed and reordered across connections (never within
//! one, as TCP keeps them), `Run` messages are dropped, workers die with
//! work in hand and new ones join, and the scheduler restarts from its
//! durable state (its workers and client reconnect). A failing schedule is shrunk to a short
//! one. After the faults, the cluster heals (messages flow, workers work
//! and beat) and every key must be answered.
//!
//! Invariants checked throughout:
//! - every key a client is told finished has the value its inputs give,
//!   and keeps it;
//! - no task runs on two live workers at once;
//! - no task errs for workers' deaths unless it was executing on three
//!   workers that died;
//! - nothing waits for ever once the cluster is healthy.

use super::state::{Command, Input, Scheduler};
use super::testing::{M, fut, joined, small, spec, val};
use crate::protocol::{ErrorKind, Located, Outcome, RunArg, RunTask, TaskError, TaskSpec};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

const CLIENT: u64 = 1;
/// Worker ids are this plus their index.
const FIRST_WORKER: u64 = 10;

/// What the scheduler sends a worker, as the worker sees it.
enum ToWorker {
    Run { seq: u64, tasks: Vec<RunTask> },
    Sync { seq: u64 },
    Cancel(Vec<String>),
    Free(Vec<String>),
}

#[derive(Default)]
struct SimWorker {
    dead: bool,
    /// Sent by the scheduler, not yet received.
    inbox: VecDeque<ToWorker>,
    /// Sent to the scheduler, not yet received (a dead worker's last
    /// messages, then its disconnection, still arrive in order).
    outbox: VecDeque<Input>,
    /// In hand, not started.
    /// Each with the `seq` of the `Run` that brought it.
    queue: VecDeque<(u64, RunTask)>,
    running: Option<(u64, RunTask)>,
    run_seq: u64,
    /// Drop the next `Run` sent to it.
    drop_next_run: bool,
    /// Results too big to travel inline, which it holds.
    held: HashMap<String, u8>,
}

/// One step of the nemesis's schedule, on the worker `index % workers`.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The worker receives its next message.
    Receive(usize),
    /// The worker starts its next task, if it has a free slot.
    Start(usize),
    /// The worker finishes its running task.
    Finish(usize),
    /// The worker sends a heartbeat.
    Beat(usize),
    /// The scheduler receives the worker's next message.
    Deliver(usize),
    /// The next `Run` to the worker is lost.
    DropRun(usize),
    /// The worker dies, with whatever it has in hand.
    Kill(usize),
    /// A new worker joins.
    Join,
    /// The scheduler restarts from its durable state: every connection
    /// breaks, workers drop what they have in hand and rejoin, and the
    /// client asks again for every key.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let w = 0usize..8;
    prop_oneof![
        6 => w.clone().prop_map(Step::Receive),
        6 => w.clone().prop_map(Step::Start),
        6 => w.clone().prop_map(Step::Finish),
        3 => w.clone().prop_map(Step::Beat),
        10 => w.clone().prop_map(Step::Deliver),
        1 => w.clone().prop_map(Step::DropRun),
        1 => w.prop_map(Step::Kill),
        1 => Just(Step::Join),
        1 => Just(Step::Restart),
    ]
}

/// Whether a task's result is too big to travel inline: it stays on its
/// worker, and others fetch it from there.
fn is_big(key: &str) -> bool {
    key.ends_with("-2") || key.starts_with("loose")
}

/// What a task computes: one more than the sum of its inputs, mod 251.
fn compute(inputs: impl Iterator<Item = u8>) -> u8 {
    ((inputs.map(u32::from).sum::<u32>() + 1) % 251) as u8
}

/// Three chains of five, a task joining their ends, and loose tasks.
fn graph() -> (Vec<TaskSpec>, HashMap<String, u8>) {
    let mut tasks = Vec::new();
    let mut expected = HashMap::new();
    let mut ends = Vec::new();
    for c in 0..3u8 {
        let mut prev: Option<String> = None;
        for i in 0..5u8 {
            let key = format!("c{c}-{i}");
            let (args, value) = match &prev {
                None => (vec![val(c * 10)], compute([c * 10].into_iter())),
                Some(p) => (vec![fut(p), val(i)], compute([expected[p], i].into_iter())),
            };
            expected.insert(key.clone(), value);
            tasks.push(spec(&key, args));
            prev = Some(key);
        }
        ends.push(prev.expect("five links"));
    }
    let join = compute(ends.iter().map(|k| expected[k]));
    tasks.push(spec("join", ends.iter().map(|k| fut(k)).collect()));
    expected.insert("join".into(), join);
    for i in 0..6u8 {
        let key = format!("loose-{i}");
        tasks.push(spec(&key, vec![val(i)]));
        expected.insert(key, compute([i].into_iter()));
    }
    (tasks, expected)
}

struct Sim {
    s: Scheduler,
    workers: Vec<SimWorker>,
    expected: HashMap<String, u8>,
    /// What the client was told finished, and the value.
    told: HashMap<String, u8>,
    /// Keys the client was told erred.
    erred: Vec<String>,
    /// For each key, the dead workers it was executing on.
    died_running: HashMap<String, u32>,
    /// Keys whose only holder died before the client fetched them: it
    /// asks for them again.
    ask_again: Vec<String>,
}

impl Sim {
    fn new(workers: usize) -> Self {
        let (tasks, expected) = graph();
        let keys: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
        let mut sim = Sim {
            s: Scheduler::new(),
            workers: Vec::new(),
            expected,
            told: HashMap::new(),
            erred: Vec::new(),
            died_running: HashMap::new(),
            ask_again: Vec::new(),
        };
        sim.handle(Input::ModuleStored { hash: M.into() });
        sim.handle(Input::ClientConnected {
            client: CLIENT,
            name: Some("nemesis".into()),
            session: 0,
        });
        for _ in 0..workers {
            sim.join();
        }
        sim.handle(Input::Submit {
            counted: true,
            session: 0,
            client: CLIENT,
            id: 1,
            tasks,
        });
        sim.handle(Input::Watch {
            reads: false,
            client: CLIENT,
            keys,
        });
        sim
    }

    fn join(&mut self) {
        let id = FIRST_WORKER + self.workers.len() as u64;
        self.workers.push(SimWorker::default());
        self.handle(joined(id, 1));
        // As a worker (re)joining does: it reports what it holds (small
        // results live with the scheduler, so nothing here).
        self.handle(Input::WorkerHolds {
            worker: id,
            results: Vec::new(),
            actors: vec![],
        });
    }

    /// A worker process joins again, reporting what it holds.
    fn rejoin(&mut self, held: HashMap<String, u8>) {
        let id = FIRST_WORKER + self.workers.len() as u64;
        let results = held
            .keys()
            .map(|k| {
                let at = Located {
                    inline: None,
                    who_has: Vec::new(),
                    nbytes: 6000,
                };
                (k.clone(), at)
            })
            .collect();
        // Its report follows its join on its connection, so work may be
        // sent to it before the report arrives.
        self.workers.push(SimWorker {
            held,
            outbox: VecDeque::from([Input::WorkerHolds {
                worker: id,
                results,
                actors: vec![],
            }]),
            ..SimWorker::default()
        });
        self.handle(joined(id, 1));
    }

    fn restart(&mut self) {
        let snapshot = self.s.snapshot();
        self.s = Scheduler::new()
            .restore(snapshot)
            .expect("a snapshot restores");
        // The old connections are gone, with whatever was in flight; a
        // worker stops what it had in hand (no death: it did not crash)
        // and joins again under a new id, with the results it holds.
        let mut rejoining = Vec::new();
        for w in &mut self.workers {
            if !w.dead {
                rejoining.push(std::mem::take(&mut w.held));
            }
            *w = SimWorker {
                dead: true,
                ..SimWorker::default()
            };
        }
        self.handle(Input::ClientConnected {
            client: CLIENT,
            name: Some("nemesis".into()),
            session: 0,
        });
        for held in rejoining {
            self.rejoin(held);
        }
        let keys = self.expected.keys().cloned().collect();
        self.handle(Input::Watch {
            reads: false,
            client: CLIENT,
            keys,
        });
    }

    fn handle(&mut self, event: Input) {
        let commands = self.s.handle(event);
        for c in commands {
            self.command(c);
        }
    }

    fn worker(&mut self, id: u64) -> Option<&mut SimWorker> {
        let w = self.workers.get_mut((id - FIRST_WORKER) as usize)?;
        (!w.dead).then_some(w)
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Run { worker, seq, tasks } => {
                if let Some(w) = self.worker(worker) {
                    if std::mem::take(&mut w.drop_next_run) {
                        return;
                    }
                    w.inbox.push_back(ToWorker::Run { seq, tasks });
                }
            }
            Command::Sync { worker, seq } => {
                if let Some(w) = self.worker(worker) {
                    w.inbox.push_back(ToWorker::Sync { seq });
                }
            }
            Command::CancelRun { worker, keys } => {
                if let Some(w) = self.worker(worker) {
                    w.inbox.push_back(ToWorker::Cancel(keys));
                }
            }
            Command::Free { worker, keys } => {
                if let Some(w) = self.worker(worker) {
                    w.inbox.push_back(ToWorker::Free(keys));
                }
            }
            Command::Done {
                client: CLIENT,
                key,
                outcome,
            } => self.told(key, outcome),
            _ => {}
        }
    }

    fn told(&mut self, key: String, outcome: Outcome) {
        match outcome {
            Outcome::Finished(at) => {
                let got = match &at.inline {
                    Some(inline) => inline[0],
                    None => {
                        // A live worker it names must hold it, as a client
                        // fetches it from there.
                        let holders: Vec<&SimWorker> = at
                            .who_has
                            .iter()
                            .filter_map(|a| a.strip_prefix('w')?.parse::<u64>().ok())
                            .filter_map(|id| self.workers.get((id - FIRST_WORKER) as usize))
                            .collect();
                        assert!(!holders.is_empty(), "{key} finished on no worker");
                        let live: Vec<&&SimWorker> = holders.iter().filter(|w| !w.dead).collect();
                        if live.is_empty() {
                            // Its worker died meanwhile: the client asks again.
                            self.ask_again.push(key);
                            return;
                        }
                        live.iter()
                            .find_map(|w| w.held.get(&key).copied())
                            .unwrap_or_else(|| {
                                panic!("{key}: told finished on workers that no longer hold it")
                            })
                    }
                };
                assert_eq!(
                    got, self.expected[&key],
                    "{key} finished with a wrong value"
                );
                let before = self.told.insert(key.clone(), got);
                assert!(before.is_none_or(|b| b == got), "{key} changed its value");
            }
            Outcome::Error(e) => {
                let deaths = self.died_running.get(&e.origin).copied().unwrap_or(0);
                assert!(
                    deaths >= 3,
                    "{key} erred ({}) though {} was executing on only {deaths} dead workers",
                    e.message,
                    e.origin
                );
                self.erred.push(key);
            }
            other => panic!("{key}: told {other:?}, though nothing was cancelled or released"),
        }
    }

    fn index(&self, i: usize) -> usize {
        i % self.workers.len()
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Receive(i) => {
                let i = self.index(i);
                let w = &mut self.workers[i];
                match w.inbox.pop_front() {
                    Some(ToWorker::Run { seq, tasks }) => {
                        w.run_seq = seq;
                        w.queue.extend(tasks.into_iter().map(|t| (seq, t)));
                    }
                    Some(ToWorker::Sync { seq }) => w.run_seq = w.run_seq.max(seq),
                    Some(ToWorker::Cancel(keys)) => w.queue.retain(|(_, t)| !keys.contains(&t.key)),
                    Some(ToWorker::Free(keys)) => {
                        for k in keys {
                            w.held.remove(&k);
                        }
                    }
                    None => {}
                }
            }
            Step::Start(i) => {
                let i = self.index(i);
                if self.workers[i].running.is_some() {
                    return;
                }
                let Some((run, task)) = self.workers[i].queue.pop_front() else {
                    return;
                };
                for (j, other) in self.workers.iter().enumerate() {
                    let twice = other
                        .running
                        .as_ref()
                        .is_some_and(|(_, r)| r.key == task.key);
                    assert!(
                        j == i || other.dead || !twice,
                        "{} runs on two live workers at once",
                        task.key
                    );
                }
                let w = &mut self.workers[i];
                w.outbox.push_back(Input::Started {
                    worker: FIRST_WORKER + i as u64,
                    keys: vec![task.key.clone()],
                });
                w.running = Some((run, task));
            }
            Step::Finish(i) => {
                let i = self.index(i);
                let w = &mut self.workers[i];
                let Some((run, task)) = w.running.take() else {
                    return;
                };
                let mut inputs = Vec::new();
                for a in &task.args {
                    match a {
                        RunArg::Value(b) => inputs.push(b[0]),
                        RunArg::Dep { at, .. } if at.inline.is_some() => {
                            inputs.push(at.inline.as_ref().expect("inline")[0])
                        }
                        RunArg::Dep { key, at } => {
                            // Fetched from a live worker that holds it.
                            let found = at.who_has.iter().find_map(|addr| {
                                let id: u64 = addr.strip_prefix('w')?.parse().ok()?;
                                let h = self.workers.get((id - FIRST_WORKER) as usize)?;
                                if h.dead {
                                    None
                                } else {
                                    h.held.get(key).copied()
                                }
                            });
                            match found {
                                Some(v) => inputs.push(v),
                                None => {
                                    let error = TaskError {
                                        kind: ErrorKind::Lost,
                                        message: format!("cannot fetch {key}"),
                                        stderr: String::new(),
                                        backtrace: String::new(),
                                        origin: task.key.clone(),
                                    };
                                    let w = &mut self.workers[i];
                                    w.outbox.push_back(Input::Erred {
                                        worker: FIRST_WORKER + i as u64,
                                        errors: vec![(task.key, run, error)],
                                    });
                                    return;
                                }
                            }
                        }
                    }
                }
                let value = compute(inputs.into_iter());
                let w = &mut self.workers[i];
                let at = if is_big(&task.key) {
                    w.held.insert(task.key.clone(), value);
                    Located {
                        inline: None,
                        who_has: Vec::new(),
                        nbytes: 6000,
                    }
                } else {
                    small(value)
                };
                w.outbox.push_back(Input::Finished {
                    worker: FIRST_WORKER + i as u64,
                    results: vec![(task.key, at)],
                });
            }
            Step::Beat(i) => {
                let i = self.index(i);
                let w = &mut self.workers[i];
                if w.dead {
                    return;
                }
                let running = w.running.iter().chain(&w.queue);
                let beat = Input::WorkerHeartbeat {
                    worker: FIRST_WORKER + i as u64,
                    spilled: 0,
                    held: 0,
                    rss: 0,
                    fetched: (0, 0),
                    instances: (0, 0),
                    run_seq: w.run_seq,
                    running: running.map(|(_, t)| t.key.clone()).collect(),
                };
                w.outbox.push_back(beat);
            }
            Step::Deliver(i) => {
                let i = self.index(i);
                if let Some(event) = self.workers[i].outbox.pop_front() {
                    self.handle(event);
                }
            }
            Step::DropRun(i) => {
                let i = self.index(i);
                self.workers[i].drop_next_run = true;
            }
            Step::Kill(i) => {
                let i = self.index(i);
                let w = &mut self.workers[i];
                if w.dead {
                    return;
                }
                w.dead = true;
                w.inbox.clear();
                w.queue.clear();
                if let Some((_, t)) = w.running.take() {
                    *self.died_running.entry(t.key).or_default() += 1;
                }
                w.outbox.push_back(Input::WorkerDisconnected {
                    worker: FIRST_WORKER + i as u64,
                });
            }
            Step::Join => {
                if self.workers.len() < 16 {
                    self.join();
                }
            }
            Step::Restart => {
                if self.workers.len() < 16 {
                    self.restart();
                }
            }
        }
    }

    fn answered(&self) -> bool {
        self.expected
            .keys()
            .all(|k| self.told.contains_key(k) || self.erred.contains(k))
    }

    /// Everything flows and every live worker works and beats, with no
    /// more faults, until every key is answered.
    fn heal(&mut self) {
        if self.workers.iter().all(|w| w.dead) {
            self.join();
        }
        // Data nobody reported by now is lost (nothing here: small results
        // live with the scheduler).
        self.handle(Input::RejoinWindowClosed);
        for round in 0..2_000 {
            for i in 0..self.workers.len() {
                while !self.workers[i].inbox.is_empty() {
                    self.apply(Step::Receive(i));
                }
                if !self.workers[i].dead {
                    self.apply(Step::Finish(i));
                    self.apply(Step::Start(i));
                    if round % 4 == 0 {
                        self.apply(Step::Beat(i));
                    }
                }
                while !self.workers[i].outbox.is_empty() {
                    self.apply(Step::Deliver(i));
                }
            }
            for key in std::mem::take(&mut self.ask_again) {
                self.handle(Input::Watch {
                    reads: false,
                    client: CLIENT,
                    keys: vec![key],
                });
            }
            if self.answered() {
                return;
            }
        }
        let missing: Vec<&String> = self
            .expected
            .keys()
            .filter(|k| !self.told.contains_key(*k) && !self.erred.contains(*k))
            .collect();
        panic!("once healthy, these keys still wait: {missing:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_schedule_of_delays_losses_and_deaths_breaks_the_invariants(
        workers in 1usize..4,
        steps in prop::collection::vec(step(), 0..600),
    ) {
        let mut sim = Sim::new(workers);
        for s in steps {
            sim.apply(s);
        }
        sim.heal();
    }
}

#[test]
fn a_healthy_cluster_with_no_faults_answers_every_key_right() {
    let mut sim = Sim::new(2);
    sim.heal();
    assert_eq!(sim.told.len(), sim.expected.len());
}
