//! `just chaos`: a 20,000-task graph with dependencies, run while a random
//! worker is killed (`kill -9`) every second and replaced, and the
//! scheduler is killed and restarted on its journal every few seconds.
//! Every result is checked against its expected value. It runs
//! `CHAOS_RUNS` times (default 10) and prints how many runs were right,
//! the worst time to completion, and the peak RSS of the scheduler and of
//! the workers. On top of the kills, every `CHAOS_DROP_RUNS`th (default
//! 25th; 0 for none) `Run` message to a worker is dropped, as a lost
//! message would be: only reconciliation through heartbeats recovers it.
//! And every message between the scheduler and a worker is held back a
//! random 0 to `CHAOS_DELAY_MS` ms (default 5; 0 for none), so messages
//! on different connections overtake each other.
//!
//! The graph: 100 chains of 100 links. Link i of chain c is
//! `add(@link(i-1), @spin(2))`, where `spin 2` takes 2 ms and gives 2, so
//! link i holds `c + 2(i+1)`: 10,000 independent spins and 10,000 adds
//! that each wait for the one before; four single-slot workers keep up to
//! 32 tasks each queued behind the one they run.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{DTASK, chain_graph, first_line, tasks_wasm, wait_until};
use dtask_runtime::client::Client;
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::Outcome;
use dtask_runtime::value::Value;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHAINS: i64 = 100;
const LINKS: i64 = 100;
const WORKERS: usize = 4;
/// The scheduler is killed and restarted every this many seconds.
const SCHEDULER_EVERY: u32 = 4;

/// Peak RSS of a live process in MiB (0 if it is gone).
fn peak_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// What one run found.
struct Report {
    elapsed: Duration,
    wrong: usize,
    failed: usize,
    kills: u32,
    restarts: u32,
    reruns: u64,
    resent: u64,
    scheduler_peak: u64,
    worker_peak: u64,
}

struct Cluster {
    state: tempfile::TempDir,
    addr: String,
    scheduler: Child,
    workers: Vec<Child>,
}

impl Cluster {
    fn scheduler(&mut self, port: &str) {
        let mut child = Command::new(DTASK)
            .args([
                "scheduler",
                "--port",
                port,
                "--worker-timeout",
                "3s",
                "--journal",
            ])
            .arg(self.state.path().join("journal"))
            .env("DTASK_FAULT_DROP_RUNS", drop_runs().to_string())
            .env("DTASK_FAULT_DELAY_MS", delay_ms().to_string())
            .env("DTASK_STATE_DIR", self.state.path())
            .env("DTASK_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scheduler");
        self.addr = first_line(child.stdout.take().unwrap(), Duration::from_secs(30))
            .expect("the scheduler printed its address");
        self.scheduler = child;
    }

    fn worker(&self) -> Child {
        Command::new(DTASK)
            .args(["worker", "--nthreads", "1", "--scheduler", &self.addr])
            .env("DTASK_STATE_DIR", self.state.path())
            .env("DTASK_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain([&mut self.scheduler]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every how many `Run` messages one is dropped (0: none).
fn drop_runs() -> u64 {
    std::env::var("CHAOS_DROP_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(25)
}

fn delay_ms() -> u64 {
    std::env::var("CHAOS_DELAY_MS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
}

fn main() {
    let runs: usize = std::env::var("CHAOS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let total = (CHAINS * LINKS * 2) as usize;
    println!(
        "chaos: {total} tasks ({CHAINS} chains of {LINKS} links), {WORKERS} single-slot workers, \
         a worker killed every second, the scheduler every {SCHEDULER_EVERY} s, \
         every {}th Run message dropped (0: none), messages to and from workers held \
         back up to {} ms; {runs} runs",
        drop_runs(),
        delay_ms()
    );
    let mut passed = 0;
    let mut worst = Duration::ZERO;
    let (mut scheduler_peak, mut worker_peak) = (0, 0);
    for run in 1..=runs {
        let r = run_once();
        let ok = r.wrong == 0 && r.failed == 0;
        passed += usize::from(ok);
        worst = worst.max(r.elapsed);
        scheduler_peak = scheduler_peak.max(r.scheduler_peak);
        worker_peak = worker_peak.max(r.worker_peak);
        println!(
            "run {run:>2}: {} in {:.1} s; {} wrong, {} failed; {} worker kills, {} scheduler restarts, \
             {} reruns, {} resent; peak RSS scheduler {} MiB, worker {} MiB",
            if ok { "right" } else { "WRONG" },
            r.elapsed.as_secs_f64(),
            r.wrong,
            r.failed,
            r.kills,
            r.restarts,
            r.reruns,
            r.resent,
            r.scheduler_peak,
            r.worker_peak
        );
    }
    println!("{:-<78}", "");
    println!(
        "{passed}/{runs} runs right; worst time to completion {:.1} s; \
         peak RSS scheduler {scheduler_peak} MiB, worker {worker_peak} MiB",
        worst.as_secs_f64()
    );
    assert_eq!(passed, runs, "chaos broke results");
}

fn run_once() -> Report {
    let state = tempfile::tempdir().unwrap();
    let placeholder = Command::new("true").spawn().unwrap();
    let mut cluster = Cluster {
        state,
        addr: String::new(),
        scheduler: placeholder,
        workers: Vec::new(),
    };
    cluster.scheduler("0");
    for _ in 0..WORKERS {
        let w = cluster.worker();
        cluster.workers.push(w);
    }
    let token = std::fs::read_to_string(cluster.state.path().join("token"))
        .unwrap()
        .trim()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Named, so its keys are journaled with it and survive the restart.
    let client = rt
        .block_on(Client::connect(&cluster.addr, &token, Some("chaos".into())))
        .unwrap();
    wait_until(Duration::from_secs(30), "workers to join", || {
        rt.block_on(client.workers())
            .is_ok_and(|w| w.len() == WORKERS)
    });
    let module = LocalModule::load(tasks_wasm().as_ref()).unwrap();

    // The graph, and what each link must hold.
    let (specs, expected) = chain_graph(&module, CHAINS, LINKS, 2);
    let start = Instant::now();
    let keys: Vec<String> = expected.keys().cloned().collect();
    let mut done = rt.block_on(async {
        client.upload(&module).await.unwrap();
        for batch in specs.chunks(4096) {
            client
                .submit_specs(batch.to_vec())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        client.watch(keys.clone()).unwrap()
    });

    // The graph is durable once the journal has it.
    common::wait_journal(&cluster.state.path().join("journal"), &keys, false);

    // Chaos on a thread of its own: a worker killed every second (and
    // replaced), the scheduler killed and restarted every few seconds.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let chaos = std::thread::spawn(move || {
        let mut kills = 0;
        let mut restarts = 0;
        let (mut scheduler_peak, mut worker_peak) = (0, 0);
        let mut seed = std::process::id() as usize ^ start.elapsed().subsec_nanos() as usize;
        let mut tick = 0;
        while stop_rx.recv_timeout(Duration::from_secs(1)).is_err() {
            tick += 1;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let victim = (seed >> 33) % cluster.workers.len();
            for w in &cluster.workers {
                worker_peak = worker_peak.max(peak_mib(w.id()));
            }
            let _ = cluster.workers[victim].kill();
            let _ = cluster.workers[victim].wait();
            kills += 1;
            cluster.workers[victim] = cluster.worker();
            if tick % SCHEDULER_EVERY == 0 {
                let port = cluster.addr.rsplit(':').next().unwrap().to_string();
                scheduler_peak = scheduler_peak.max(peak_mib(cluster.scheduler.id()));
                let _ = cluster.scheduler.kill();
                let _ = cluster.scheduler.wait();
                cluster.scheduler(&port);
                restarts += 1;
            }
        }
        scheduler_peak = scheduler_peak.max(peak_mib(cluster.scheduler.id()));
        for w in &cluster.workers {
            worker_peak = worker_peak.max(peak_mib(w.id()));
        }
        (kills, restarts, scheduler_peak, worker_peak, cluster)
    });

    // Every outcome, across the restart (the client reconnects and
    // watches again).
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    rt.block_on(async {
        while outcomes.len() < keys.len() {
            let (k, o) = tokio::time::timeout(Duration::from_secs(120), done.recv())
                .await
                .expect("progress within two minutes")
                .expect("the client keeps watching");
            outcomes.insert(k, o);
        }
    });
    let elapsed = start.elapsed();
    let _ = stop_tx.send(());
    let (kills, restarts, scheduler_peak, worker_peak, cluster) = chaos.join().unwrap();

    let mut wrong = 0;
    let mut failed = 0;
    let values = rt.block_on(client.gather_with(&keys, dtask_runtime::client::Errors::Skip));
    let values = values.expect("gather");
    for (k, o) in &outcomes {
        if !matches!(o, Outcome::Finished(_)) {
            failed += 1;
            eprintln!("{k}: {o:?}");
        }
    }
    let by_key: HashMap<&String, &Value> = keys
        .iter()
        .filter(|k| matches!(outcomes.get(*k), Some(Outcome::Finished(_))))
        .zip(values.iter())
        .collect();
    for (k, v) in &by_key {
        if v.as_i64() != Some(expected[*k]) {
            wrong += 1;
        }
    }
    let stats = rt.block_on(client.stats()).unwrap();
    drop(cluster);
    Report {
        elapsed,
        wrong,
        failed,
        kills,
        restarts,
        reruns: stats.reruns,
        resent: stats.resent,
        scheduler_peak,
        worker_peak,
    }
}
