//! `just chaos`: a 20,000-task graph with dependencies, run while a random
//! worker is killed (`kill -9`) every second and replaced, and the
//! scheduler is killed once mid-run and restarted on its journal. Every
//! result is checked against its expected value; the run prints how many
//! task runs were repeated and how long recovery took.
//!
//! The graph: 100 chains of 100 links. Link i of chain c is
//! `add(@link(i-1), @spin(2))`, where `spin 2` takes 2 ms and gives 2, so
//! link i holds `c + 2(i+1)`: 10,000 independent spins and 10,000 adds
//! that each wait for the one before.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{DTASK, first_line, tasks_wasm, wait_until};
use dtask_runtime::client::{Client, SubmitOptions, task_spec};
use dtask_runtime::module::LocalModule;
use dtask_runtime::protocol::{Arg, Outcome, TaskSpec};
use dtask_runtime::value::{Value, encode};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHAINS: i64 = 100;
const LINKS: i64 = 100;
const WORKERS: usize = 4;

fn int(i: i64) -> Arg {
    Arg::Value(encode(&Value::from(i)).into())
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

fn main() {
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
    let module = LocalModule::load(tasks_wasm().as_ref(), None).unwrap();

    // The graph, and what each link must hold.
    let impure = SubmitOptions {
        pure: false,
        ..SubmitOptions::default()
    };
    let mut specs: Vec<TaskSpec> = Vec::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for c in 0..CHAINS {
        let mut prev = int(c);
        for i in 0..LINKS {
            let spin = task_spec(module.hash(), "spin", vec![int(2)], &impure);
            let link = task_spec(
                module.hash(),
                "add",
                vec![prev, Arg::Future(spin.key.clone())],
                &impure,
            );
            prev = Arg::Future(link.key.clone());
            expected.insert(link.key.clone(), c + 2 * (i + 1));
            specs.push(spin);
            specs.push(link);
        }
    }
    let total = specs.len();
    println!(
        "chaos: {total} tasks ({CHAINS} chains of {LINKS} links), {WORKERS} single-slot workers"
    );

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

    // Chaos on a thread of its own: a worker killed every second (and
    // replaced), the scheduler killed and restarted once.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let chaos = std::thread::spawn(move || {
        let mut kills = 0;
        let mut restart = None;
        let mut seed = std::process::id() as usize;
        let mut tick = 0;
        while stop_rx.recv_timeout(Duration::from_secs(1)).is_err() {
            tick += 1;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let victim = (seed >> 33) % cluster.workers.len();
            let _ = cluster.workers[victim].kill();
            let _ = cluster.workers[victim].wait();
            kills += 1;
            cluster.workers[victim] = cluster.worker();
            if tick == 4 {
                let port = cluster.addr.rsplit(':').next().unwrap().to_string();
                let began = Instant::now();
                let _ = cluster.scheduler.kill();
                let _ = cluster.scheduler.wait();
                cluster.scheduler(&port);
                restart = Some(began.elapsed());
            }
        }
        (kills, restart, cluster)
    });

    // Every outcome, across the restart (the client reconnects and
    // watches again).
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    let mut restart_gap = Duration::ZERO;
    let mut last = Instant::now();
    rt.block_on(async {
        while outcomes.len() < keys.len() {
            let (k, o) = tokio::time::timeout(Duration::from_secs(120), done.recv())
                .await
                .expect("progress within two minutes")
                .expect("the client keeps watching");
            restart_gap = restart_gap.max(last.elapsed());
            last = Instant::now();
            outcomes.insert(k, o);
        }
    });
    let elapsed = start.elapsed();
    let _ = stop_tx.send(());
    let (kills, restart, cluster) = chaos.join().unwrap();

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
    println!("{:-<78}", "");
    println!(
        "finished {} of {} links (each checked; each depends on its spin) in {:.1} s; {wrong} wrong, {failed} failed",
        by_key.len(),
        keys.len(),
        elapsed.as_secs_f64()
    );
    println!("workers killed (kill -9) and replaced   {kills}");
    println!(
        "scheduler killed and restarted once    back up in {:.0} ms; longest gap between results {:.0} ms",
        restart.unwrap_or_default().as_secs_f64() * 1e3,
        restart_gap.as_secs_f64() * 1e3
    );
    println!(
        "task runs sent {}, rerun after worker deaths {} ({:.1}% of {total}); \
         counters are journaled too, so the second before the restart is not counted",
        stats.dispatched,
        stats.reruns,
        stats.reruns as f64 * 100.0 / total as f64
    );
    drop(cluster);
    assert_eq!((wrong, failed), (0, 0), "chaos broke results");
    assert_eq!(by_key.len(), keys.len());
    println!("every result correct");
}
