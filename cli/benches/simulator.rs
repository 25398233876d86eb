//! `just bench` (and `cargo bench -p dtask --bench simulator`): the pure
//! scheduler core driven with no sockets and no wasm, at the scale users
//! bring: 1,000 simulated workers, a 1M-task map and a tree reduction of
//! its 1M results (another ~1M tasks), with a worker killed (and a new one
//! joining) every 20,000 events. Prints events handled per second (in all,
//! and counting only the time inside `Scheduler::handle`) and the
//! process's peak memory. It runs on mimalloc, as the `dtask` binary does.
//! `SIM_TASKS` and `SIM_WORKERS` change the sizes.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use dtask_runtime::client::{SubmitOptions, task_spec};
use dtask_runtime::protocol::{Arg, Located, RunTask, TaskSpec};
use dtask_runtime::scheduler::state::{Command, Input, Scheduler};
use std::collections::VecDeque;
use std::time::Instant;

const MODULE: &str = "module-hash";

/// The allocator the `dtask` binary runs the scheduler with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn spec(key: String, function: &str, args: Vec<Arg>) -> TaskSpec {
    let options = SubmitOptions {
        key: Some(key),
        ..SubmitOptions::default()
    };
    task_spec(MODULE, function, args, &options)
}

fn joined(worker: u64) -> Input {
    Input::WorkerConnected {
        worker,
        nthreads: 1 + (worker % 4) as u32,
        data_addr: format!("10.0.{}.{}:7000", worker / 250, worker % 250),
        name: format!("sim-{worker}"),
        resources: vec![],
        memory_limit: 256 << 20,
        restarts: 0,
    }
}

/// A small result, inline as real small results are.
fn result() -> Located {
    Located {
        inline: Some(Bytes::from_static(&[0x2a])),
        who_has: vec![],
        nbytes: 1,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("SIM_TASKS", 1_000_000);
    let workers = env("SIM_WORKERS", 1_000);
    let mut s = Scheduler::new();
    let mut events: u64 = 0;
    // Runs the workers have been sent and not yet answered, in order.
    let mut inflight: VecDeque<(u64, Vec<RunTask>)> = VecDeque::new();
    let mut in_core = std::time::Duration::ZERO;
    let mut handle = |s: &mut Scheduler, e: Input, inflight: &mut VecDeque<(u64, Vec<RunTask>)>| {
        let t = Instant::now();
        let out = s.handle(e);
        in_core += t.elapsed();
        for c in out {
            if let Command::Run { worker, tasks, .. } = c {
                inflight.push_back((worker, tasks));
            }
        }
    };
    let began = Instant::now();
    handle(
        &mut s,
        Input::ModuleStored {
            hash: MODULE.into(),
        },
        &mut inflight,
    );
    handle(
        &mut s,
        Input::ClientConnected {
            client: 1,
            name: Some("sim".into()),
            session: 0,
        },
        &mut inflight,
    );
    for w in 1..=workers {
        handle(&mut s, joined(w), &mut inflight);
    }
    events += 2 + workers;

    // The map, then the reduction tree over its results, level by level,
    // made as they are submitted (the graph is not held here as well).
    let map_key = |i: u64| format!("inc-{i:016x}");
    let add_key = |depth: u32, i: u64| format!("add-{depth}-{i:016x}");
    let mut levels = vec![n];
    while *levels.last().expect("one level") > 1 {
        let last = *levels.last().expect("one level");
        levels.push(last.div_ceil(2));
    }
    let total: u64 = levels.iter().sum();
    let root = add_key(levels.len() as u32 - 1, 0);
    let mut chunks = (0..levels.len() as u32).flat_map(|depth| {
        let width = levels[depth as usize];
        let below = if depth == 0 {
            0
        } else {
            levels[depth as usize - 1]
        };
        (0..width).map(move |i| {
            if depth == 0 {
                let arg = Arg::Value(Bytes::from(i.to_le_bytes().to_vec()));
                spec(map_key(i), "inc", vec![arg])
            } else {
                let child = |j: u64| {
                    if depth == 1 {
                        map_key(j)
                    } else {
                        add_key(depth - 1, j)
                    }
                };
                let args = (2 * i..(2 * i + 2).min(below))
                    .map(|j| Arg::Future(child(j)))
                    .collect();
                spec(add_key(depth, i), "add", args)
            }
        })
    });
    println!(
        "simulator: {workers} workers, {n}-task map + {}-task tree reduction = {total} tasks",
        total - n
    );
    println!("{:-<78}", "");
    let mut submitted = 0u64;
    let mut live: VecDeque<u64> = (1..=workers).collect();
    let mut dead = std::collections::HashSet::new();
    let mut next_worker = workers + 1;
    let mut deaths = 0u64;
    let mut finished = 0u64;
    loop {
        // Submit in chunks of 10,000, as a client would.
        let chunk: Vec<TaskSpec> = chunks.by_ref().take(10_000).collect();
        submitted += chunk.len() as u64;
        if !chunk.is_empty() {
            handle(
                &mut s,
                Input::Submit {
                    counted: true,
                    session: 0,
                    client: 1,
                    id: events,
                    tasks: chunk,
                },
                &mut inflight,
            );
            events += 1;
        }
        // Workers answer what they were sent.
        let mut answered = 0;
        while let Some((worker, tasks)) = inflight.pop_front() {
            if dead.contains(&worker) {
                // Its messages went with it; the scheduler placed its work
                // again.
                continue;
            }
            for t in tasks {
                handle(
                    &mut s,
                    Input::Finished {
                        worker,
                        results: vec![(t.key, result())],
                    },
                    &mut inflight,
                );
                events += 1;
                finished += 1;
                answered += 1;
                if events.is_multiple_of(20_000) {
                    // A worker dies (its work goes elsewhere), a new one joins.
                    let victim = live.pop_front().expect("workers are live");
                    dead.insert(victim);
                    live.push_back(next_worker);
                    handle(
                        &mut s,
                        Input::WorkerDisconnected { worker: victim },
                        &mut inflight,
                    );
                    handle(&mut s, joined(next_worker), &mut inflight);
                    next_worker += 1;
                    deaths += 1;
                    events += 2;
                }
            }
            if answered >= 10_000 {
                break;
            }
        }
        if inflight.is_empty() && submitted == total {
            break;
        }
    }
    let took = began.elapsed();
    let done = matches!(
        s.state(&root),
        Some(dtask_runtime::protocol::TaskState::Finished)
    );
    println!(
        "{events} events in {:.2} s: {:.0} events/s   target >= 500,000",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    println!(
        "  of which {:.2} s in Scheduler::handle: {:.0} events/s there (the rest is this \
         bench making specs and playing workers)",
        in_core.as_secs_f64(),
        events as f64 / in_core.as_secs_f64()
    );
    println!(
        "{finished} task runs answered ({} reruns after {deaths} worker deaths); root finished: {done}",
        s.stats().reruns
    );
    println!(
        "peak memory {} MiB with {} keys held   target <= 1 GB",
        common::mib(std::process::id(), "VmHWM"),
        s.stats().tasks
    );
    println!("{:-<78}", "");
    assert!(done, "the reduction's root did not finish");
}
