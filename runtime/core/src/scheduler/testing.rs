//! Constructors for driving the scheduler's state machine in tests (here
//! and in crates built on this one, with the `testing` feature).
#![allow(missing_docs)]

use super::state::{Command, Input, Scheduler};
use crate::protocol::{Arg, ErrorKind, Located, Placement, TaskError, TaskSpec};
use bytes::Bytes;

pub const M: &str = "module-hash";

pub fn spec(key: &str, args: Vec<Arg>) -> TaskSpec {
    TaskSpec {
        key: key.into(),
        module: M.into(),
        function: "f".into(),
        args,
        priority: 0,
        timeout_ms: None,
        memory_limit: None,
        grants: Default::default(),
        placement: Placement::default(),
        retries: 0,
    }
}

pub fn joined(id: u64, nthreads: u32) -> Input {
    worker_joining(id, nthreads, &format!("w{id}"), 256 << 20)
}

/// Worker `id` of one slot joining with data address `data_addr` (another
/// id's, for the same process rejoining) and a memory limit of
/// `memory_limit` bytes per task.
pub fn joined_at(id: u64, data_addr: &str, memory_limit: u64) -> Input {
    worker_joining(id, 1, data_addr, memory_limit)
}

fn worker_joining(id: u64, nthreads: u32, data_addr: &str, memory_limit: u64) -> Input {
    Input::WorkerConnected {
        worker: id,
        nthreads,
        data_addr: data_addr.to_string(),
        name: format!("worker-{id}"),
        resources: vec![],
        memory_limit,
        restarts: 0,
    }
}

pub fn val(b: u8) -> Arg {
    Arg::Value(Bytes::from(vec![b]))
}

pub fn fut(k: &str) -> Arg {
    Arg::Future(k.into())
}

pub fn small(v: u8) -> Located {
    Located {
        inline: Some(Bytes::from(vec![v])),
        who_has: vec![],
        nbytes: 1,
    }
}

pub fn big(n: u64) -> Located {
    Located {
        inline: None,
        who_has: vec![],
        nbytes: n,
    }
}

pub fn error(origin: &str) -> TaskError {
    TaskError {
        kind: ErrorKind::Panic,
        message: "boom".into(),
        stderr: String::new(),
        backtrace: String::new(),
        origin: origin.into(),
    }
}

/// A scheduler with client 1 (named "cli") and the given workers
/// (id, nthreads).
pub fn setup(workers: &[(u64, u32)]) -> Scheduler {
    let mut s = Scheduler::new();
    s.handle(Input::ModuleStored { hash: M.into() });
    s.handle(Input::ClientConnected {
        client: 1,
        name: Some("cli".into()),
        session: 0,
    });
    for &(id, n) in workers {
        s.handle(joined(id, n));
    }
    s
}

/// A scheduler restored from `s`'s snapshot, with its module and client 1
/// ("cli") back, and no worker yet.
pub fn restored(s: &Scheduler) -> Scheduler {
    restored_from(s.snapshot())
}

/// A scheduler restored from the records `s`'s journal took since it was
/// last drained (with [`Scheduler::enable_journal`]), as [`restored`].
pub fn restarted(s: &mut Scheduler) -> Scheduler {
    let mut model = super::state::Model::default();
    for r in s.journal_records() {
        model.apply(r);
    }
    restored_from(model.into_snapshot())
}

/// A scheduler restored from `snapshot`, as [`restored`].
fn restored_from(snapshot: super::state::Snapshot) -> Scheduler {
    let mut r = Scheduler::new().restore(snapshot).unwrap();
    r.handle(Input::ModuleStored { hash: M.into() });
    r.handle(Input::ClientConnected {
        client: 1,
        name: Some("cli".into()),
        session: 0,
    });
    r
}

pub fn submit(s: &mut Scheduler, tasks: Vec<TaskSpec>) -> Vec<Command> {
    s.handle(Input::Submit {
        counted: true,
        session: 0,
        client: 1,
        id: 7,
        tasks,
    })
}

/// (worker, key) of every task sent to run.
pub fn runs(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .flat_map(|c| match c {
            Command::Run { worker, tasks, .. } => {
                tasks.iter().map(|t| (*worker, t.key.clone())).collect()
            }
            _ => vec![],
        })
        .collect()
}

pub fn finish(s: &mut Scheduler, worker: u64, key: &str, at: Located) -> Vec<Command> {
    s.handle(Input::Finished {
        worker,
        results: vec![(key.into(), at)],
    })
}

/// What `worker` says when task `key`, processing there, fails with
/// `error`: the error names the `Run` that sent it, as a worker's does.
pub fn erred(s: &Scheduler, worker: u64, key: &str, error: TaskError) -> Input {
    let run = s.run_of(key).unwrap_or(0);
    Input::Erred {
        worker,
        errors: vec![(key.into(), run, error)],
    }
}

/// A heartbeat from `worker`, which got `Run` `run_seq` and has
/// `running` in hand.
pub fn heartbeat(worker: u64, run_seq: u64, running: &[&str]) -> Input {
    Input::WorkerHeartbeat {
        worker,
        spilled: 0,
        held: 0,
        rss: 0,
        fetched: (0, 0),
        instances: (0, 0),
        run_seq,
        running: running.iter().map(|k| k.to_string()).collect(),
    }
}

/// A heartbeat from `worker`, which has nothing in hand.
pub fn beat(worker: u64) -> Input {
    heartbeat(worker, 0, &[])
}

pub fn started(worker: u64, key: &str) -> Input {
    Input::Started {
        worker,
        keys: vec![key.into()],
    }
}

/// The grace timer in `cmds`, if any: (holder, when it went away, after
/// how long).
pub fn grace(cmds: &[Command]) -> Option<(String, u64, u64)> {
    cmds.iter().find_map(|c| match c {
        Command::HolderGrace {
            holder,
            away,
            after_ms,
        } => Some((holder.clone(), *away, *after_ms)),
        _ => None,
    })
}
