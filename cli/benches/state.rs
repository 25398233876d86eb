//! `just bench` (and `cargo bench -p dtask --bench state`): what a finished
//! task held by a client costs the scheduler. The pure core, journal on,
//! takes `STATE_TASKS` (default 1M) small `inc` tasks from a named client
//! on 8 workers, each finishing with a one-byte result; the bench counts
//! the heap bytes still allocated once they are all finished and held, and
//! prints them per task beside the target, then releases them all and
//! checks that nothing is left. It also counts what a worker's result
//! store spends on each result beyond its bytes (for the smallest results a
//! worker keeps: smaller ones live at the scheduler alone), and times what
//! one dashboard update (status page, metrics) costs the core with them all
//! known.

use bytes::Bytes;
use dtask_runtime::client::{SubmitOptions, task_spec};
use dtask_runtime::protocol::{Arg, Located, TaskSpec};
use dtask_runtime::scheduler::state::{Command, Input, Scheduler};
use dtask_runtime::worker::store::ResultStore;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A module hash as the scheduler sees them (64 hex digits).
const MODULE: &str = "5c1e0d7a9b3f4e2c8a6d1b0f9e7c5a3d2b1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d";
const WORKERS: u64 = 8;

fn main() {
    let n: usize = std::env::var("STATE_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut s = Scheduler::new();
    s.enable_journal();
    let handle = |s: &mut Scheduler, e: Input| {
        let out = s.handle(e);
        // The server drains the journal's records after every event.
        drop(s.journal_records());
        out
    };
    handle(
        &mut s,
        Input::ModuleStored {
            hash: MODULE.into(),
        },
    );
    handle(
        &mut s,
        Input::ClientConnected {
            client: 1,
            name: Some("shell".into()),
            session: 0,
        },
    );
    for worker in 1..=WORKERS {
        handle(
            &mut s,
            Input::WorkerConnected {
                worker,
                nthreads: 1,
                data_addr: format!("127.0.0.1:{}", 40000 + worker),
                name: format!("127.0.0.1:{}", 40000 + worker),
                resources: vec![],
                memory_limit: 256 << 20,
                restarts: 0,
            },
        );
    }
    let before = LIVE.load(Ordering::Relaxed);
    let began = Instant::now();
    let mut keys = Vec::with_capacity(n);
    let mut id = 0;
    let mut submitted = 0;
    while keys.len() < n || submitted < n {
        // Submit in chunks as `dtask map` does, answering each Run as the
        // workers would.
        let chunk: Vec<TaskSpec> = (submitted..n.min(submitted + 10_000))
            .map(|i| {
                let arg = Arg::Value(Bytes::from(dtask_runtime::value::encode(
                    &dtask_runtime::value::Value::from(i as u64),
                )));
                // As `dtask map` builds it: a pure key, default options.
                task_spec(MODULE, "inc", vec![arg], &SubmitOptions::default())
            })
            .collect();
        submitted += chunk.len();
        id += 1;
        let mut pending = handle(
            &mut s,
            Input::Submit {
                counted: true,
                session: 0,
                client: 1,
                id,
                tasks: chunk,
            },
        );
        while let Some(cmd) = pending.pop() {
            if let Command::Run { worker, tasks, .. } = cmd {
                for t in tasks {
                    keys.push(t.key.clone());
                    let results = vec![(
                        t.key,
                        Located {
                            inline: Some(Bytes::from_static(&[0x2a])),
                            who_has: vec![],
                            nbytes: 1,
                        },
                    )];
                    pending.extend(handle(&mut s, Input::Finished { worker, results }));
                }
            }
        }
    }
    let took = began.elapsed();
    // The bench's own list of keys is not the scheduler's.
    let ours = keys.capacity() * std::mem::size_of::<String>()
        + keys.iter().map(String::capacity).sum::<usize>();
    let held = LIVE.load(Ordering::Relaxed) - before - ours;
    println!("scheduler state: {n} small finished tasks held by one client, journal on");
    println!("{:-<78}", "");
    println!(
        "{:.0} bytes per held task (heap, counted)   target <= 300   ({} held, {:.0} tasks/s through the core)",
        held as f64 / n as f64,
        s.held_keys(),
        n as f64 / took.as_secs_f64()
    );
    // What results cost a worker holding them. A result small enough to
    // travel inline lives at the scheduler alone, so a worker holds only
    // larger ones: the smallest of those, counted beyond their own bytes.
    let spill = std::env::temp_dir().join(format!("dtask-state-bench-{}", std::process::id()));
    let store = ResultStore::new(usize::MAX / 2, spill);
    let size = dtask_runtime::protocol::INLINE_RESULT_LIMIT + 1;
    let count = (n / 10).max(1);
    let before = LIVE.load(Ordering::Relaxed);
    for k in keys.iter().take(count) {
        let kept = store.insert_in_memory(k, Bytes::from(vec![0x2a; size]));
        assert!(kept.is_ok(), "within the budget");
    }
    let per_result = (LIVE.load(Ordering::Relaxed) - before) as f64 / count as f64 - size as f64;
    println!(
        "{per_result:.0} bytes per result a worker holds beyond its {size} bytes (heap, counted)   \
         target <= 100   ({} results; results of {} bytes or less live at the scheduler, 0 bytes here)",
        store.usage().count,
        dtask_runtime::protocol::INLINE_RESULT_LIMIT,
    );
    drop(store);
    // What one dashboard update costs the core with all of them known:
    // the status page's view and the metrics' (serialising it happens on
    // the dashboard's own task, off the core).
    s.set_clock(1);
    let rounds = 200;
    let began = Instant::now();
    for i in 0..rounds {
        let totals = s.totals();
        let functions = s.functions(50);
        let workers = s.workers();
        let spans = s.spans(i, 2000);
        std::hint::black_box((totals, functions, workers, spans));
    }
    let status = began.elapsed() / rounds as u32;
    let began = Instant::now();
    for _ in 0..rounds {
        let view = (
            s.totals(),
            s.functions(500),
            s.workers(),
            s.stats(),
            s.primitives_summary(200),
        );
        std::hint::black_box(view);
    }
    let metrics = began.elapsed() / rounds as u32;
    println!(
        "one dashboard update with {} tasks known: status {:.1} us, metrics {:.1} us   target <= 1000 us",
        s.task_count(),
        status.as_secs_f64() * 1e6,
        metrics.as_secs_f64() * 1e6
    );
    handle(&mut s, Input::Release { client: 1, keys });
    // A big release goes a step at a time, between other events.
    while s.releasing() > 0 {
        s.release_step();
    }
    let left = s.task_count();
    println!("after releasing them all: {left} tasks left");
    println!("{:-<78}", "");
    assert_eq!(left, 0, "released tasks were kept");
}
